//! What the probes cost in the kernel, from the kernel's own run-time statistics
//! of each program (`run_cnt`, `run_time_ns` of `BPF_OBJ_GET_INFO_BY_FD`), which it
//! keeps only while statistics are enabled: by a `BPF_ENABLE_STATS` descriptor
//! (5.8+, needs CAP_SYS_ADMIN, held by the agent for its life) or by the node's
//! `kernel.bpf_stats_enabled` sysctl. Enabled, every BPF program on the node pays
//! two clock reads per run (~20-40 ns); the agent asks only when it may.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya::Ebpf;

use crate::snapshot::ProgramRunStats;

/// Whether the kernel keeps run-time statistics for the agent's programs, and what
/// keeps them on.
#[derive(Debug)]
pub struct RunStats {
    /// The `BPF_ENABLE_STATS` descriptor: statistics stay on while it is open.
    _enabled: Option<OwnedFd>,
    /// `Err`: why the statistics are not available.
    pub available: Result<(), String>,
}

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Whether the node keeps run-time statistics on by itself.
fn sysctl_on() -> bool {
    std::fs::read_to_string(SYSCTL).is_ok_and(|s| s.trim() == "1")
}

impl RunStats {
    /// Turns statistics on for the agent's life where this process may and `turn_on`
    /// (call while it still holds its capabilities); else whether the node keeps
    /// them on.
    pub fn enable(turn_on: bool) -> Self {
        if !turn_on {
            let available = if sysctl_on() {
                Ok(())
            } else {
                Err(format!(
                    "run-time statistics off (--probe-run-stats false and {SYSCTL} is 0): \
                     the probes' cost per event is not measured"
                ))
            };
            return Self {
                _enabled: None,
                available,
            };
        }
        // union bpf_attr's enable_stats: type (u32), BPF_STATS_RUN_TIME = 0.
        const BPF_ENABLE_STATS: libc::c_long = 32;
        let refused = match super::sys::bpf(BPF_ENABLE_STATS, &mut [0; 4]) {
            Ok(fd) => {
                // SAFETY: a descriptor the kernel just returned, owned by nobody else.
                let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
                return Self {
                    _enabled: Some(fd),
                    available: Ok(()),
                };
            }
            Err(e) => e,
        };
        let available = if sysctl_on() {
            Ok(())
        } else {
            Err(match refused.raw_os_error() {
                Some(libc::EPERM) => format!(
                    "the kernel keeps no run-time statistics for BPF programs: \
                     {SYSCTL} is 0 and turning them on (BPF_ENABLE_STATS) needs \
                     CAP_SYS_ADMIN, which least privilege does not grant; set the \
                     sysctl to 1 to see what the probes cost (every BPF program on \
                     the node then pays ~20-40 ns per run)"
                ),
                Some(libc::EINVAL) => format!(
                    "this kernel has no BPF_ENABLE_STATS (before 5.8) and {SYSCTL} is 0: \
                     set the sysctl to 1 to see what the probes cost"
                ),
                _ => format!("BPF_ENABLE_STATS failed: {refused}; {SYSCTL} is 0"),
            })
        };
        Self {
            _enabled: None,
            available,
        }
    }

    /// The run statistics of `probe`'s loaded programs (those whose name starts
    /// with the probe's, as every program of the object is named), by program;
    /// `None` where the kernel keeps none, or where one program's could not be
    /// read (a probe's cost is given whole or not at all).
    pub fn of(&self, ebpf: &Ebpf, probe: &str) -> Option<Vec<ProgramRunStats>> {
        self.available.as_ref().ok()?;
        let mut stats = Vec::new();
        for (name, program) in ebpf.programs() {
            // Not loaded here: the other variant of a hook, or a disabled probe.
            if super::probe_of(name) != Some(probe) || program.fd().is_err() {
                continue;
            }
            let info = match program.info() {
                Ok(info) => info,
                Err(e) => {
                    log::debug!("reading the run statistics of {name}: {e}");
                    return None;
                }
            };
            let skipped_runs = program.fd().ok().and_then(|fd| skipped_runs(fd.as_fd()));
            stats.push(ProgramRunStats {
                program: name.to_owned(),
                runs: info.run_count(),
                run_seconds: info.run_time().as_secs_f64(),
                skipped_runs,
            });
        }
        stats.sort_by(|a, b| a.program.cmp(&b.program));
        Some(stats)
    }
}

/// The runs of the program at `fd` that the kernel skipped because the program was
/// already running on that CPU (`bpf_prog_info.recursion_misses`, which aya does not
/// expose; counted whether or not run-time statistics are on). A kernel before 5.12
/// fills the struct only up to what it knows: 0.
fn skipped_runs(fd: BorrowedFd<'_>) -> Option<u64> {
    use aya_obj::generated::bpf_prog_info;
    /// `BPF_OBJ_GET_INFO_BY_FD`.
    const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: a struct of integers, for which all zeroes is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let address = (&raw mut info) as u64;
    // union bpf_attr's info: bpf_fd (u32), info_len (u32), info (u64 address).
    let mut attr = [
        fd.as_raw_fd() as u32,
        std::mem::size_of::<bpf_prog_info>() as u32,
        address as u32,
        (address >> 32) as u32,
    ];
    if let Err(e) = super::sys::bpf(OBJ_GET_INFO_BY_FD, &mut attr) {
        log::debug!("BPF_OBJ_GET_INFO_BY_FD: {e}");
        return None;
    }
    Some(info.recursion_misses)
}
