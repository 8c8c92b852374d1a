//! CPU: `cpu.stat` and `cpu.max` of one window, with the runq probe's latency and
//! who caused it.

use schemars::JsonSchema;
use serde::Serialize;

use super::{CgroupKind, LatencySummary};

/// CPU. Counters (`*_seconds`, `periods`, `throttled_periods`, `bursts`) are deltas
/// over the window; `limit_cores`, `burst_limit_seconds`, `weight` are gauges.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct CpuSample {
    /// CPU time used within the window (`cpu.stat` usage_usec).
    pub usage_seconds: Option<f64>,
    pub user_seconds: Option<f64>,
    pub system_seconds: Option<f64>,
    /// Enforcement periods that ran, and those that hit the quota (`cpu.max`).
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    /// Time the cgroup's tasks could not run because the quota was used up.
    pub throttled_seconds: Option<f64>,
    pub bursts: Option<u64>,
    pub burst_seconds: Option<f64>,
    /// Quota / period from `cpu.max`; `null` without a quota.
    pub limit_cores: Option<f64>,
    pub burst_limit_seconds: Option<f64>,
    pub weight: Option<u64>,
    /// Run-queue latency in the window of the tasks in this cgroup and its
    /// descendants (like `cpu.stat`); `null` when the `runq` probe is not attached.
    pub runq_latency: Option<LatencySummary>,
    /// What held the CPU while those tasks waited: `null` when the `runq` probe is
    /// not attached or its blame is off.
    pub runq_blame: Option<RunqBlame>,
}

/// Who delayed a cgroup's tasks in the window: each second they waited for a CPU,
/// split by what ran on that CPU meanwhile (measured in the kernel, see README).
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct RunqBlame {
    /// Seconds of wait by cause; they add up to the wait of `runq_latency`.
    pub causes: BlameCauses,
    /// The cgroups outside this one that held the CPU longest (at most
    /// [`MAX_CULPRITS`], longest first): containers and pods (their container or
    /// pod cgroup), else system services and slices.
    pub culprits: Vec<Culprit>,
}

impl BlameCauses {
    /// Each cause with its JSON name.
    pub fn named(&self) -> [(&'static str, f64); 9] {
        [
            ("self", self.own),
            ("same_pod", self.same_pod),
            ("other_containers", self.other_containers),
            ("system", self.system),
            ("kernel", self.kernel),
            ("idle", self.idle),
            ("own_quota", self.own_quota),
            ("removed", self.removed),
            ("unattributed", self.unattributed),
        ]
    }
}

/// Culprits listed per cgroup and window; the rest is only in `causes`.
pub const MAX_CULPRITS: usize = 5;

/// Seconds of wait by cause.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct BlameCauses {
    /// Its own tasks (another thread of the same container, or of its descendants).
    #[serde(rename = "self")]
    pub own: f64,
    /// Another container of the same pod.
    pub same_pod: f64,
    /// Other containers and pods.
    pub other_containers: f64,
    /// Cgroups that are no container: system services, slices, the root.
    pub system: f64,
    /// Kernel threads.
    pub kernel: f64,
    /// Nothing: the CPU was idle (the waiter was not yet placed on it).
    pub idle: f64,
    /// Its own CPU quota, or an ancestor's: throttled by `cpu.max`.
    pub own_quota: f64,
    /// A cgroup removed before the window ended.
    pub removed: f64,
    /// Beyond what the kernel keeps per wait (more switches than its timeline
    /// holds), or its pair map was full: counted, not split.
    pub unattributed: f64,
}

/// One cgroup that held the CPU while this one waited.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Culprit {
    pub path: String,
    pub kind: CgroupKind,
    /// The cause it counts under: `same_pod`, `other_containers` or `system`.
    pub cause: &'static str,
    /// The container's or pod's identity, where it is one.
    pub container_id: Option<String>,
    pub name: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub seconds: f64,
}
