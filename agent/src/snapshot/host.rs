//! The whole host in one window, to compare containers with: CPU time from
//! `/proc/stat`, disk totals from `/proc/diskstats`, and `/proc/pressure/*`.

use schemars::JsonSchema;
use serde::Serialize;

use super::PressureSample;

/// Host CPU time in the window, in seconds (deltas of `/proc/stat`).
#[derive(Debug, Default, Clone, Serialize, JsonSchema)]
pub struct HostCpu {
    pub cpus: usize,
    pub user_seconds: f64,
    pub nice_seconds: f64,
    pub system_seconds: f64,
    pub idle_seconds: f64,
    pub iowait_seconds: f64,
    pub irq_seconds: f64,
    pub softirq_seconds: f64,
    pub steal_seconds: f64,
    /// Each online CPU's busy share of the window (0 to 1), by CPU number: where the
    /// load sits (one saturated CPU on an idle host is pinned work).
    pub per_cpu_busy: Vec<(usize, f64)>,
}

impl HostCpu {
    fn total_seconds(&self) -> f64 {
        self.user_seconds
            + self.nice_seconds
            + self.system_seconds
            + self.idle_seconds
            + self.iowait_seconds
            + self.irq_seconds
            + self.softirq_seconds
            + self.steal_seconds
    }

    /// Share of all CPU time in the window that was busy (not idle, not iowait);
    /// `None` for an empty window.
    pub fn busy_share(&self) -> Option<f64> {
        let total = self.total_seconds();
        (total > 0.0).then(|| 1.0 - (self.idle_seconds + self.iowait_seconds) / total)
    }

    /// Share of all CPU time in the window the hypervisor gave to others.
    pub fn steal_share(&self) -> Option<f64> {
        let total = self.total_seconds();
        (total > 0.0).then(|| self.steal_seconds / total)
    }
}

/// The host in one window: every field is a delta over the window except the PSI
/// averages. `null` where the host has no such file.
#[derive(Debug, Default, Clone, Serialize, JsonSchema)]
pub struct HostSample {
    pub cpu: Option<HostCpu>,
    pub pressure: PressureSample,
    pub disks: Vec<Disk>,
}

/// One whole disk (`/proc/diskstats`), deltas over the window.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Disk {
    pub name: String,
    pub read_ops: u64,
    pub write_ops: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// Time with at least one IO in flight (`io_ticks`), in milliseconds.
    pub busy_ms: u64,
}
