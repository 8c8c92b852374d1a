//! The per-cgroup snapshot of one sampling window: what every consumer (the JSON API,
//! `snapshot`, the exporters, `top`, the playbooks) reads. Nothing here reads the
//! kernel; the sampler fills it.
//!
//! The JSON form is the versioned contract `cgscope.snapshot/v1`: keys may be added,
//! never renamed or removed, within v1. Absent data is `null`, never zero.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{cgroup::mount::CgroupMode, histogram::LatencySummary};

/// Schema identifier of the JSON form.
pub const SCHEMA: &str = "cgscope.snapshot/v1";

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub schema: &'static str,
    /// End of the window, seconds since the Unix epoch.
    pub timestamp_seconds: f64,
    /// Length of the window the deltas cover.
    pub window_seconds: f64,
    pub host: Host,
    pub probes: Vec<ProbeStatus>,
    pub cgroups: Vec<CgroupSample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    pub cgroup_mode: CgroupMode,
    /// Mount point of the cgroup v2 hierarchy that was scanned.
    pub cgroup_root: String,
}

/// Whether a probe is attached, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub attached: bool,
    /// Why the probe is not attached.
    pub error: Option<String>,
    /// Events the kernel side could not record since the probe was attached, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CgroupSample {
    /// Path relative to the v2 root; `/` is the root.
    pub path: String,
    /// cgroup id: inode number of the cgroup directory.
    pub id: u64,
    /// The cgroup was removed during the window; what it recorded before is kept.
    pub removed: bool,
    pub cpu: CpuSample,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuSample {
    /// CPU time used within the window (`cpu.stat` usage_usec).
    pub usage_seconds: Option<f64>,
    pub user_seconds: Option<f64>,
    pub system_seconds: Option<f64>,
    /// Run-queue latency of this cgroup's tasks in the window; `null` when the
    /// `runq` probe is not attached.
    pub runq_latency: Option<LatencySummary>,
}
