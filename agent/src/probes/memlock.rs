//! Where the kernel charges BPF map memory: before 5.11 to the loading user's
//! `RLIMIT_MEMLOCK` (the map carries a `struct bpf_map_memory`), since then to the
//! memory cgroup. Where it is the rlimit, the limit a container starts with (64 KiB
//! from systemd before v253, inherited through the container runtime) is far below
//! what the maps need (several MiB, preallocated there: see [`super::prealloc`]), so
//! the agent raises it before loading: to unlimited with `CAP_SYS_RESOURCE`, else
//! the soft limit to the hard one. If that is not enough the load fails, and the
//! error says which limit and what to grant.

use nix::{
    errno::Errno,
    sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY},
};

use super::ProbeError;

/// Whether the running kernel charges BPF maps to `RLIMIT_MEMLOCK` (before 5.11).
pub fn kernel_charges_memlock(btf: &crate::btf::Btf) -> bool {
    btf.has_struct("bpf_map_memory")
}

/// Raises `RLIMIT_MEMLOCK` as far as this process may; returns the soft limit
/// now in force (None: unlimited).
pub fn raise() -> Option<u64> {
    if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_ok() {
        return None;
    }
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((_, hard)) => {
            let _ = setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard);
            let (soft, _) = getrlimit(Resource::RLIMIT_MEMLOCK).unwrap_or((hard, hard));
            (soft != RLIM_INFINITY).then_some(soft)
        }
        Err(_) => Some(0),
    }
}

/// The probes' note: what the kernel charges the maps to and the limit in force.
pub fn note(limit: Option<u64>) -> String {
    let limit = limit.map_or("unlimited".to_owned(), |l| format!("{} KiB", l / 1024));
    format!("this kernel (before 5.11) charges BPF maps to RLIMIT_MEMLOCK: limit {limit}")
}

/// `error` of loading the object, with the cause named where it is the rlimit:
/// a map the kernel refused (EPERM) while the limit is finite.
pub fn explain(error: aya::EbpfError, limit: Option<u64>) -> ProbeError {
    let aya::EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }) = &error
    else {
        return error.into();
    };
    match limit {
        Some(limit) if io_error.raw_os_error() == Some(Errno::EPERM as i32) => {
            ProbeError::Load(format!(
                "creating map {name}: refused (EPERM): this kernel (before 5.11) charges BPF \
                 maps to RLIMIT_MEMLOCK, {} KiB for this process, and raising it needs \
                 CAP_SYS_RESOURCE: grant that capability (the DaemonSet and the systemd unit \
                 do) or raise the container runtime's memlock limit",
                limit / 1024
            ))
        }
        _ => error.into(),
    }
}
