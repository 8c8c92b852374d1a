//! OOM kills: what the `oom` program hands to the agent.

/// Capacity of `OOM_VICTIMS`: kills between two reads of the agent (one window).
pub const MAX_VICTIMS: u32 = 256;

/// Ancestors of the victim's cgroup noted with each kill, nearest first: a killed
/// container's cgroup is often gone before the agent next walks the tree (the
/// runtime removes it as the container exits), and the kill still counts for the
/// nearest ancestor that is there (its pod). Deeper than a kubepods container
/// (root, kubepods, QoS, pod).
pub const MAX_ANCESTORS: usize = 8;

/// Counter slots of `OOM_DROPS`.
pub mod drop {
    /// `OOM_VICTIMS` was full: a kill was not reported.
    pub const QUEUE_FULL: u32 = 0;
    /// The victim's cgroup could not be read; reported for the root cgroup.
    pub const CGROUP_UNREADABLE: u32 = 1;
    pub const SLOTS: u32 = 2;
}

/// One process killed by the OOM killer, as queued in `OOM_VICTIMS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomVictim {
    /// cgroup v2 id of the victim.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns()` at the kill.
    pub time_ns: u64,
    /// Process id (`tgid`) in the initial pid namespace.
    pub pid: u32,
    pub _pad: u32,
    /// `comm`, NUL-padded.
    pub comm: [u8; 16],
    /// Ids of the ancestors of the victim's cgroup, parent first, then 0s.
    pub ancestors: [u64; MAX_ANCESTORS],
}

const _: () = assert!(core::mem::size_of::<OomVictim>() == 104);

#[cfg(feature = "user")]
// SAFETY: plain-old-data: repr(C), Copy, explicit padding, every bit pattern valid.
unsafe impl aya::Pod for OomVictim {}
