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
}

const PROBES: &str = "the probes runq, blockio, oom and tcp do not attach";

/// Every capability cgscope uses. CAP_SYS_ADMIN covers the first two (kernels before
/// 5.8, and container runtimes that do not know them): it is accepted, not asked for.
pub const NEEDS: [Need; 3] = [
    Need {
        capability: Capability::CAP_BPF,
        purpose: "create the maps, load the eBPF programs and their BTF",
        without: PROBES,
        kept: false,
    },
    Need {
        capability: Capability::CAP_PERFMON,
        purpose: "load tracing programs (tp_btf, fentry) that read kernel memory",
        without: PROBES,
        kept: false,
    },
    Need {
        capability: Capability::CAP_SYS_PTRACE,
        purpose: "read /proc/PID/ns/net of processes of other users: which network namespace a container owns",
        without: "no network counters for containers whose processes run as another user",
        kept: true,
    },
];

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
}

/// The effective set of the calling thread; empty if it cannot be read.
fn effective() -> HashSet<Capability> {
    caps::read(None, CapSet::Effective).unwrap_or_default()
}

/// [`NEEDS`], each with whether this thread holds it.
pub fn status() -> Vec<CapabilityStatus> {
    let effective = effective();
    let sys_admin = effective.contains(&Capability::CAP_SYS_ADMIN);
    NEEDS
        .iter()
        .map(|need| {
            let own = effective.contains(&need.capability);
            let covered = sys_admin && need.capability != Capability::CAP_SYS_PTRACE;
            CapabilityStatus {
                name: need.capability.to_string(),
                held: own || covered,
                via_sys_admin: !own && covered,
                purpose: need.purpose,
                without: need.without,
                kept_after_attach: need.kept,
            }
        })
        .collect()
}

/// Logs a warning for each capability of [`NEEDS`] this thread lacks, with what
/// will not work: said at start-up, before the probes' own errors.
pub fn warn_missing() {
    for c in status().iter().filter(|c| !c.held) {
        log::warn!(
            "{} missing: {} (it is needed to {})",
            c.name,
            c.without,
            c.purpose
        );
    }
}

/// Gives up every capability but the [`Need::kept`] ones: from the effective,
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
        .filter(|n| n.kept)
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
    const BITS: [(&str, u32); 3] = [("CAP_BPF", 39), ("CAP_PERFMON", 38), ("CAP_SYS_PTRACE", 19)];
    const SYS_ADMIN_BIT: u32 = 21;

    /// `status()` against the kernel's own view of this thread (`CapEff` in
    /// /proc/thread-self/status): held if in the effective set, or for BPF and
    /// PERFMON if CAP_SYS_ADMIN is.
    fn assert_status_matches_the_kernel(when: &str) {
        let text = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let eff = text
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        let admin = eff & (1 << SYS_ADMIN_BIT) != 0;
        let status = status();
        assert_eq!(status.len(), BITS.len());
        for (name, bit) in BITS {
            let s = status.iter().find(|s| s.name == name).unwrap();
            let own = eff & (1 << bit) != 0;
            let covered = admin && name != "CAP_SYS_PTRACE";
            assert_eq!(
                (s.held, s.via_sys_admin),
                (own || covered, !own && covered),
                "{name} {when}, CapEff {eff:x}"
            );
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
            assert_status_matches_the_kernel("without SYS_ADMIN, PERFMON, BPF, SYS_PTRACE");
            assert!(status().iter().all(|s| !s.held));
        })
        .join()
        .unwrap();
    }
}
