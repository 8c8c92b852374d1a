//! Linux capabilities: what each part of cgscope needs, what the process holds, and
//! giving up, once the probes are attached, what only attaching needs.
//!
//! [`NEEDS`] is the whole set. The deployments grant exactly it (the DaemonSet's
//! `capabilities.add`, the systemd unit's `CapabilityBoundingSet`); a test keeps
//! them equal and runs cgscope with nothing more.

use std::collections::HashSet;

use caps::{CapSet, Capability};
use serde::Serialize;

/// One capability cgscope uses.
pub struct Need {
    pub capability: Capability,
    /// What cgscope does with it.
    pub purpose: &'static str,
    /// What does not work without it.
    pub without: &'static str,
    /// Still needed after the probes are attached (else dropped then).
    pub kept: bool,
    /// CAP_SYS_ADMIN grants it too (kernels before 5.8 have no CAP_BPF/PERFMON).
    pub admin_covers: bool,
    /// Needed only on kernels older than this (major, minor); None: on every kernel.
    pub before_kernel: Option<(u32, u32)>,
}

const PROBES: &str = "the probes runq, blockio, oom and tcp do not attach";

/// Every capability cgscope uses. CAP_SYS_ADMIN covers the first two (kernels before
/// 5.8, and container runtimes that do not know them): it is accepted, not asked for.
pub const NEEDS: [Need; 4] = [
    Need {
        capability: Capability::CAP_BPF,
        purpose: "create the maps, load the eBPF programs and their BTF",
        without: PROBES,
        kept: false,
        admin_covers: true,
        before_kernel: None,
    },
    Need {
        capability: Capability::CAP_PERFMON,
        purpose: "load tracing programs (tp_btf, fentry) that read kernel memory",
        without: PROBES,
        kept: false,
        admin_covers: true,
        before_kernel: None,
    },
    Need {
        capability: Capability::CAP_SYS_PTRACE,
        purpose: "read /proc/PID/ns/net of processes of other users: which network namespace a container owns",
        without: "no network counters for containers whose processes run as another user",
        kept: true,
        admin_covers: false,
        before_kernel: None,
    },
    Need {
        capability: Capability::CAP_SYS_RESOURCE,
        purpose: "raise RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF maps to",
        without: "on kernels before 5.11, the probes do not attach unless the container runtime's memlock limit covers the maps",
        kept: false,
        admin_covers: false,
        before_kernel: Some((5, 11)),
    },
];

/// The running kernel's (major, minor), from `uname -r`.
fn kernel_version() -> Option<(u32, u32)> {
    let uname = nix::sys::utsname::uname().ok()?;
    let release = uname.release().to_str()?;
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    Some((numbers.next()?.ok()?, numbers.next()?.ok()?))
}

/// A capability of [`NEEDS`] and whether this process can use it.
#[derive(Debug, Serialize)]
pub struct CapabilityStatus {
    /// As Linux spells it (`CAP_BPF`).
    pub name: String,
    pub held: bool,
    /// Held through CAP_SYS_ADMIN rather than itself.
    pub via_sys_admin: bool,
    pub purpose: &'static str,
    /// What does not work while it is missing.
    pub without: &'static str,
    /// Kept after the probes are attached (`cgscope run` drops the others).
    pub kept_after_attach: bool,
    /// Needed on the running kernel (CAP_SYS_RESOURCE only before 5.11).
    pub needed: bool,
}

/// The effective set of the calling thread; empty if it cannot be read.
fn effective() -> HashSet<Capability> {
    caps::read(None, CapSet::Effective).unwrap_or_default()
}

/// [`NEEDS`], each with whether this thread holds it.
pub fn status() -> Vec<CapabilityStatus> {
    let effective = effective();
    let sys_admin = effective.contains(&Capability::CAP_SYS_ADMIN);
    let kernel = kernel_version();
    NEEDS
        .iter()
        .map(|need| {
            let own = effective.contains(&need.capability);
            let covered = sys_admin && need.admin_covers;
            CapabilityStatus {
                name: need.capability.to_string(),
                held: own || covered,
                via_sys_admin: !own && covered,
                purpose: need.purpose,
                without: need.without,
                kept_after_attach: kept_after_attach(need),
                // An unreadable release counts as old: the need is then stated.
                needed: need
                    .before_kernel
                    .is_none_or(|before| kernel.is_none_or(|k| k < before)),
            }
        })
        .collect()
}

/// Logs a warning for each capability of [`NEEDS`] this thread lacks, with what
/// will not work: said at start-up, before the probes' own errors.
pub fn warn_missing() {
    for c in status().iter().filter(|c| c.needed && !c.held) {
        log::warn!(
            "{} missing: {} (it is needed to {})",
            c.name,
            c.without,
            c.purpose
        );
    }
}

/// Whether this kernel refuses every bpf() command, reading a map by its
/// descriptor too, to a thread without CAP_BPF: kernels before 5.19 with
/// `kernel.unprivileged_bpf_disabled` set (most distributions' default). Asked of
/// the kernel, not of its version: a short-lived thread without CAP_BPF (and
/// CAP_SYS_ADMIN) asks for the info of descriptor -1; EPERM, not EBADF, is the
/// refusal at the syscall's entry. Asked once.
pub fn map_reads_need_cap_bpf() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        std::thread::spawn(|| {
            for cap in [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN] {
                if caps::drop(None, CapSet::Effective, cap).is_err() {
                    return false;
                }
            }
            // union bpf_attr's info: bpf_fd (u32), info_len (u32), info (u64).
            // fd -1 is never valid.
            let mut attr = [u32::MAX, 0, 0, 0];
            const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
            let result = crate::probes::sys::bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr);
            result.is_err_and(|e| e.raw_os_error() == Some(libc::EPERM))
        })
        .join()
        .unwrap_or(false)
    })
}

/// Whether `need` is kept once the probes are attached: its own [`Need::kept`], and
/// CAP_BPF where reading the maps needs it ([`map_reads_need_cap_bpf`]).
fn kept_after_attach(need: &Need) -> bool {
    need.kept || (need.capability == Capability::CAP_BPF && map_reads_need_cap_bpf())
}

/// Gives up every capability but those [`kept_after_attach`]: from the effective,
/// permitted and inheritable sets, the ambient set, and (when CAP_SETPCAP allows)
/// the bounding set, so that they cannot come back. Returns what was dropped, by
/// name, sorted.
///
/// Capabilities belong to a thread: call this before starting any other thread;
/// threads started afterwards inherit the reduced sets.
pub fn drop_after_attach() -> Result<Vec<String>, caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let keep: HashSet<Capability> = NEEDS
        .iter()
        .filter(|n| kept_after_attach(n))
        .map(|n| n.capability)
        .filter(|c| permitted.contains(c))
        .collect();
    let mut dropped: Vec<String> = permitted
        .difference(&keep)
        .map(ToString::to_string)
        .collect();
    dropped.sort();
    if effective().contains(&Capability::CAP_SETPCAP) {
        for cap in caps::runtime::thread_all_supported().difference(&keep) {
            caps::drop(None, CapSet::Bounding, *cap)?;
        }
    }
    // Not every kernel has ambient capabilities; there is nothing to clear there.
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient)?;
    }
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        let now = caps::read(None, set)?;
        caps::set(None, set, &now.intersection(&keep).copied().collect())?;
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_are_distinct_and_only_ptrace_is_kept() {
        let names: HashSet<String> = NEEDS.iter().map(|n| n.capability.to_string()).collect();
        assert_eq!(names.len(), NEEDS.len());
        let kept: Vec<String> = NEEDS
            .iter()
            .filter(|n| n.kept)
            .map(|n| n.capability.to_string())
            .collect();
        assert_eq!(kept, ["CAP_SYS_PTRACE"]);
    }

    /// Bit numbers from linux/capability.h, independent of the `caps` crate.
    const BITS: [(&str, u32); 4] = [
        ("CAP_BPF", 39),
        ("CAP_PERFMON", 38),
        ("CAP_SYS_PTRACE", 19),
        ("CAP_SYS_RESOURCE", 24),
    ];
    const SYS_ADMIN_BIT: u32 = 21;

    /// `status()` against the kernel's own view of this thread (`CapEff` in
    /// /proc/thread-self/status): held if in the effective set, or for BPF and
    /// PERFMON if CAP_SYS_ADMIN is. CAP_SYS_RESOURCE is needed only before 5.11.
    fn assert_status_matches_the_kernel(when: &str) {
        let text = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let eff = text
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        let admin = eff & (1 << SYS_ADMIN_BIT) != 0;
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut numbers = release.split(['.', '-']).map(|p| p.trim().parse::<u32>());
        let (major, minor) = (numbers.next(), numbers.next());
        let before_5_11 = (major.unwrap().unwrap(), minor.unwrap().unwrap()) < (5, 11);
        let status = status();
        assert_eq!(status.len(), BITS.len());
        for (name, bit) in BITS {
            let s = status.iter().find(|s| s.name == name).unwrap();
            let own = eff & (1 << bit) != 0;
            let covered = admin && matches!(name, "CAP_BPF" | "CAP_PERFMON");
            assert_eq!(
                (s.held, s.via_sys_admin),
                (own || covered, !own && covered),
                "{name} {when}, CapEff {eff:x}"
            );
            let needed = name != "CAP_SYS_RESOURCE" || before_5_11;
            assert_eq!(s.needed, needed, "{name} on {release}");
        }
    }

    #[test]
    fn status_matches_the_kernels_view_of_the_thread() {
        assert_status_matches_the_kernel("as the tests run");
        // Capabilities belong to a thread: take some away in one of our own. As root
        // this covers held through CAP_SYS_ADMIN, and missing.
        std::thread::spawn(|| {
            let drop = |cap| caps::drop(None, CapSet::Effective, cap).unwrap();
            drop(Capability::CAP_BPF);
            drop(Capability::CAP_SYS_PTRACE);
            assert_status_matches_the_kernel("without BPF and SYS_PTRACE");
            drop(Capability::CAP_SYS_ADMIN);
            drop(Capability::CAP_PERFMON);
            drop(Capability::CAP_SYS_RESOURCE);
            assert_status_matches_the_kernel(
                "without SYS_ADMIN, PERFMON, BPF, SYS_PTRACE, SYS_RESOURCE",
            );
            assert!(status().iter().all(|s| !s.held));
        })
        .join()
        .unwrap();
    }
}
