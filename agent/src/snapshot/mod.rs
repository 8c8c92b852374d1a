//! The per-cgroup snapshot of one sampling window: what every consumer (the JSON API,
//! `snapshot`, the exporters, `top`, the playbooks) reads. Nothing here reads the
//! kernel; the sampler and its readers fill it.
//!
//! The JSON form is the versioned contract `cgscope.snapshot/v1`: keys may be added,
//! never renamed or removed, within v1. Absent data is `null`, never zero. Every type
//! of it is declared here and nowhere else, so that a change of a reader cannot
//! change it by accident; `docs/snapshot.schema.json` is its JSON Schema, generated
//! from these types and checked against them and against a real snapshot (`schema`).

mod bounds;
mod container;
mod cpu;
mod host;
mod io;
mod latency;
mod memory;
mod network;
#[cfg(test)]
mod schema;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

pub use self::{
    bounds::Bounds,
    container::{CgroupKind, CgroupMode, ContainerSample, Qos, Runtime},
    cpu::{BlameCauses, CpuSample, Culprit, RunqBlame, MAX_CULPRITS},
    host::{Disk, HostCpu, HostSample},
    io::{Completed, IoDeviceSample, IoSample, PerOperation},
    latency::{ExponentialHistogram, LatencySummary},
    memory::{
        stat_index, MemoryEventsSample, MemorySample, OomKillsSample, OomVictimSample, StatKind,
        MAX_OOM_VICTIMS, MEMORY_STAT,
    },
    network::{Interface, NetworkSample, Tcp, Udp},
};

/// Schema identifier of the JSON form.
pub const SCHEMA: &str = "cgscope.snapshot/v1";

/// One sampling window of the node: the JSON form `cgscope.snapshot/v1`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Snapshot {
    pub schema: &'static str,
    /// End of the window, seconds since the Unix epoch.
    pub timestamp_seconds: f64,
    /// Length of the window the deltas cover.
    pub window_seconds: f64,
    pub host: Host,
    pub probes: Vec<ProbeStatus>,
    /// Reads that failed in this window, by reason (the errno's name, e.g. `EMFILE`,
    /// or `malformed`): each cgroup that could not be read whole is in `cgroups`
    /// with `unreadable` set, and each failed directory listing counts once.
    pub scan_errors: BTreeMap<&'static str, u64>,
    /// What cgscope cost the node in this window, against its budget.
    pub cost: CostSample,
    pub cgroups: Vec<CgroupSample>,
}

/// The node: its kernel, its cgroup layout, and its window.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Host {
    /// Kernel release (`uname -r`).
    pub kernel: String,
    pub cgroup_mode: CgroupMode,
    /// Mount point of the cgroup v2 hierarchy that was scanned.
    pub cgroup_root: String,
    /// The whole host in this window, to compare containers with.
    #[serde(flatten)]
    pub window: HostSample,
}

/// Whether a probe is attached, and why not.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub attached: bool,
    /// Why the probe is not attached; `null` with `attached: false` when it was
    /// disabled (`--probes`).
    pub error: Option<String>,
    /// Events the kernel side could not record since the probe was attached, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// How the probe measures on this kernel, where that differs between hosts
    /// (attribution mode, fallbacks in use).
    pub notes: Vec<String>,
    /// Entries in the probe's per-cgroup map when the sampler read it at the end of
    /// the window, before deleting those of removed cgroups (`null` for a probe
    /// without one, or outside a sampler).
    pub map_entries: Option<u64>,
    /// What the probe's programs cost in the kernel since they were loaded, by
    /// program: runs and run time, from the kernel's run-time statistics; `null`
    /// where it keeps none (the notes say why) or the probe is not attached.
    pub run_stats: Option<Vec<ProgramRunStats>>,
}

/// One program's runs and run time since it was loaded (while statistics were on).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ProgramRunStats {
    pub program: String,
    pub runs: u64,
    pub run_seconds: f64,
    /// Runs the kernel skipped since load, each an event not recorded: the program
    /// was already running on that CPU when its hook fired again (from an interrupt
    /// during the run). The kernel's `recursion_misses` (5.12+; 0 before); `null`
    /// where it could not be read.
    pub skipped_runs: Option<u64>,
}

/// One window's cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, JsonSchema)]
pub struct CostSample {
    /// The budget, as a share of the node's CPU time.
    pub budget: f64,
    /// CPU time of cgscope's process (user + system) in the window.
    pub process_seconds: f64,
    /// Run time of its probes' programs in the window, by probe (`null`: the kernel
    /// keeps no run-time statistics, see the probes' notes; only the process is
    /// counted then).
    pub probe_seconds: Option<BTreeMap<&'static str, f64>>,
    /// Both together over the node's CPU time in the window (window x CPUs); `null`
    /// in the first window, which has no baseline.
    pub node_share: Option<f64>,
    /// Windows in a row over the budget, this one included.
    pub windows_over: u32,
    /// Over the budget for [`WINDOWS_OVER`] windows in a row.
    pub over_budget: bool,
    /// The probe that cost most in the window, when the probes are counted.
    pub costliest_probe: Option<&'static str>,
}

/// One cgroup in the window.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CgroupSample {
    /// Path relative to the v2 root; `/` is the root. A name that is not UTF-8 has
    /// each of its other bytes written `\xNN` (then `raw_path_hex` is set).
    pub path: String,
    /// The path's exact bytes in hex, where they are not UTF-8; otherwise `null`.
    pub raw_path_hex: Option<String>,
    /// cgroup id: inode number of the cgroup directory.
    pub id: u64,
    /// root, pod, container, service, slice or other (from the path layout).
    pub kind: CgroupKind,
    /// Pods and containers; `null` for every other kind.
    pub container: Option<ContainerSample>,
    /// The cgroup was removed during the window; what it recorded before is kept.
    pub removed: bool,
    /// The cgroup exists but its files could not be read at the end of this window
    /// (why, below): its cgroup-file numbers are `null` in this window, and the next
    /// reading covers this window too (`stats_window_seconds`).
    pub unreadable: Option<Unreadable>,
    /// The time the cgroup-file counters (CPU, memory events, IO, PSI) of this
    /// sample cover, from the cgroup's previous reading to this one, where it
    /// differs from the window by more than 2% (the reads at the end of the windows
    /// before failed, or a loaded machine reached this cgroup later in the scan than
    /// last time); `null` when it is the window. Rates use it.
    pub stats_window_seconds: Option<f64>,
    pub cpu: CpuSample,
    /// `null` without the memory controller.
    pub memory: Option<MemorySample>,
    /// `null` without the io controller.
    pub io: Option<IoSample>,
    /// `null` without the pids controller.
    pub pids: Option<PidsSample>,
    pub pressure: PressureSample,
    /// Gauges from `cgroup.stat`.
    pub descendants: Option<u64>,
    pub dying_descendants: Option<u64>,
    /// The network namespace this cgroup owns (a pod, or a container outside any
    /// pod), `null` for cgroups in the host's namespace or sharing their pod's.
    pub network: Option<NetworkSample>,
}

/// Why a cgroup could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Unreadable {
    /// As `scan_errors` counts it: the errno's name (`EMFILE`), or `malformed`.
    pub reason: &'static str,
    /// The failure, naming the file.
    pub error: String,
}

impl CgroupSample {
    /// The time this sample's cgroup-file counters cover, in a window of
    /// `window_seconds`: what rates and shares of them divide by.
    pub fn stats_seconds(&self, window_seconds: f64) -> f64 {
        self.stats_window_seconds.unwrap_or(window_seconds)
    }

    /// A cgroup with no file read: what a removed cgroup's sample starts from (its
    /// probe windows are added to it), and tests' samples of a given place.
    pub fn bare(path: &str, id: u64, kind: CgroupKind) -> Self {
        Self {
            path: path.to_owned(),
            raw_path_hex: None,
            id,
            kind,
            container: None,
            removed: false,
            unreadable: None,
            stats_window_seconds: None,
            cpu: CpuSample::default(),
            memory: None,
            io: None,
            pids: None,
            pressure: PressureSample::default(),
            descendants: None,
            dying_descendants: None,
            network: None,
        }
    }
}

/// `current` and `max` are gauges (`max` `null` = no limit); `max_events` counts forks
/// refused by `pids.max` in the window.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct PidsSample {
    pub current: u64,
    pub max: Option<u64>,
    pub max_events: Option<u64>,
}

/// Pressure stall information per resource; `null` where the kernel has no file.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct PressureSample {
    pub cpu: Option<PressureWindow>,
    pub memory: Option<PressureWindow>,
    pub io: Option<PressureWindow>,
    pub irq: Option<PressureWindow>,
}

/// Stall time within the window (`some`: at least one task stalled; `full`: all
/// non-idle tasks stalled at once), and the kernel's 10-second averages (percent) at
/// the end of the window.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct PressureWindow {
    pub some_seconds: Option<f64>,
    pub full_seconds: Option<f64>,
    pub some_avg10: Option<f64>,
    pub full_avg10: Option<f64>,
}

impl PressureWindow {
    /// Share of a window of `window` seconds in which some task stalled.
    pub fn some_share(&self, window: f64) -> Option<f64> {
        self.some_seconds
            .filter(|_| window > 0.0)
            .map(|s| s / window)
    }
}
