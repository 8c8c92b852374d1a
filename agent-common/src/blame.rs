//! Who caused a run-queue wait: each wait's nanoseconds split, in the kernel, over
//! what occupied the CPU while the task waited (the `runq` programs with blame on).
//!
//! Each CPU keeps a short timeline of who ran on it ([`Timeline`]: the last
//! [`SEGMENTS`] occupants and when each started) and of its finished throttle
//! intervals. When a waiting task is switched in (or migrated away while it waits),
//! the wait's span is walked backwards over that CPU's timeline and each piece is
//! added to `BLAME[(waiter's cgroup, occupant)]`; a piece during which the waiter's
//! own cgroup or an ancestor was throttled goes to [`culprit::OWN_QUOTA`] instead.

/// Occupants one wait can be split over: a wait that spans more switches on its
/// CPU than this has its oldest part counted as [`culprit::UNATTRIBUTED`] (its
/// throttled part, known apart from the occupants, still as own quota). Each
/// one more is a step of the unrolled walk that the kernel's verifier explores at
/// load: 16 cost it 1.7 s of CPU (15-20 s under TCG), 8 cost 0.35 s.
pub const SEGMENTS: usize = 8;

/// Finished throttle intervals each CPU remembers (throttles of any group on it).
pub const THROTTLES: usize = 8;

/// Throttles that can be open at once on one CPU (groups throttled, not yet
/// unthrottled); one more is not tracked (its interval is counted as the CPU's
/// occupants, and [`drop::THROTTLE_UNTRACKED`] counts it).
pub const OPEN_THROTTLES: usize = 8;

/// The waiter's ancestors checked for throttling, nearest first (deeper than a
/// kubepods container: root, kubepods, QoS, pod).
pub const MAX_ANCESTORS: usize = 8;

/// A CPU adds a piece of wait to the pair it added the last one to in its own
/// [`Timeline`] first (no map operation, no atomic on a line that other CPUs
/// write): the pending piece goes to `BLAME` when the pair changes, when it reaches
/// [`PENDING_MAX_NS`], when it is older than [`PENDING_AGE_NS`], or when the CPU
/// goes idle. What a CPU holds back at any time is less than `PENDING_MAX_NS`.
pub const PENDING_MAX_NS: u64 = 100_000;
/// See [`PENDING_MAX_NS`].
pub const PENDING_AGE_NS: u64 = 1_000_000;

/// Default capacity of `BLAME`: (waiter, culprit) pairs, preallocated (about 90
/// bytes each). The agent sizes it at four per cgroup of `--max-cgroups` and
/// deletes the pairs of removed cgroups.
pub const DEFAULT_MAX_PAIRS: u32 = 16_384;

/// Culprit values that are not a cgroup id (cgroup ids are inode numbers, neither
/// 0 nor near `u64::MAX`).
pub mod culprit {
    /// The CPU ran its idle task: the waiter was not yet placed (wakeup latency).
    pub const IDLE: u64 = 0;
    /// A kernel thread ran.
    pub const KERNEL: u64 = u64::MAX;
    /// The waiter's own cgroup (or an ancestor) was throttled by `cpu.max`.
    pub const OWN_QUOTA: u64 = u64::MAX - 1;
    /// Older than the CPU's timeline, or `BLAME` was full.
    pub const UNATTRIBUTED: u64 = u64::MAX - 2;
}

/// Counter slots of `BLAME_DROPS`.
pub mod drop {
    /// `BLAME` was full: the piece went to the waiter's `UNATTRIBUTED` pair.
    pub const MAP_FULL: u32 = 0;
    /// Neither the pair nor the waiter's `UNATTRIBUTED` pair could be written.
    pub const LOST: u32 = 1;
    /// A throttle began while [`super::OPEN_THROTTLES`] were open on its CPU.
    pub const THROTTLE_UNTRACKED: u32 = 2;
    /// A wait reached back past its CPU's timeline (more than `SEGMENTS` switches).
    pub const TIMELINE_SHORT: u32 = 3;
    pub const SLOTS: u32 = 4;
}

/// Key of `BLAME`: the waiting task's cgroup and what held its CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlameKey {
    /// cgroup v2 id of the task that waited.
    pub victim: u64,
    /// cgroup v2 id of the task that ran, or a [`culprit`] value.
    pub culprit: u64,
}

const _: () = assert!(core::mem::size_of::<BlameKey>() == 16);

/// One occupant of a CPU: from `since_ns` until the next segment's start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Segment {
    /// `bpf_ktime_get_ns()` at the switch that put it on the CPU; 0: empty slot.
    pub since_ns: u64,
    /// Its cgroup v2 id, or [`culprit::IDLE`] or [`culprit::KERNEL`].
    pub occupant: u64,
}

/// A finished throttle of one group on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Throttle {
    pub from_ns: u64,
    /// 0: empty slot (or, in `open`, a free one).
    pub to_ns: u64,
    /// cgroup v2 id of the throttled group.
    pub cgroup_id: u64,
}

/// One CPU's recent history, indexed by CPU in `CPU_TIMELINE`. Written only with
/// that CPU's run-queue lock held (`sched_switch` on it, the throttle functions for
/// its `cfs_rq`s), so writers never race.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Timeline {
    /// Ring of occupants; `head` is the newest.
    pub segments: [Segment; SEGMENTS],
    /// Ring of finished throttles; `throttle_head` is the newest.
    pub throttles: [Throttle; THROTTLES],
    /// Throttles begun and not yet ended (`to_ns` unused, `cgroup_id` 0 when free).
    pub open: [Throttle; OPEN_THROTTLES],
    pub head: u32,
    pub throttle_head: u32,
    /// The latest end of a finished throttle here: a wait that began after it
    /// overlaps none, and its split need not look at them.
    pub throttled_until: u64,
    /// The pair whose piece is pending (see [`PENDING_MAX_NS`]), its nanoseconds
    /// (0: none) and when it began to be held back.
    pub pending: BlameKey,
    pub pending_ns: u64,
    pub pending_since: u64,
    /// To a whole number of 64-byte cache lines: each CPU writes its own timeline
    /// on every switch, and must not share a line with its neighbour's.
    pub _pad: [u64; 2],
}

const _: () = assert!(core::mem::size_of::<Timeline>() == 9 * 64);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), Copy, no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::BlameKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Timeline {}
}
