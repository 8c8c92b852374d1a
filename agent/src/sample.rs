//! The per-cgroup snapshot of one sampling window: what every consumer (the JSON API,
//! `snapshot`, the exporters, `top`, the playbooks) reads. Nothing here reads the
//! kernel; the sampler fills it.
//!
//! The JSON form is the versioned contract `cgscope.snapshot/v1`: keys may be added,
//! never renamed or removed, within v1. Absent data is `null`, never zero.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    cgroup::{
        identity::{CgroupKind, Qos, Runtime},
        mount::CgroupMode,
    },
    histogram::LatencySummary,
    host::HostSample,
    net::NetworkSample,
};

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
    /// Reads that failed in this window, by reason (the errno's name, e.g. `EMFILE`,
    /// or `malformed`): each cgroup that could not be read whole is in `cgroups`
    /// with `unreadable` set, and each failed directory listing counts once.
    pub scan_errors: BTreeMap<&'static str, u64>,
    /// What cgscope cost the node in this window, against its budget.
    pub cost: crate::sampler::cost::CostSample,
    pub cgroups: Vec<CgroupSample>,
}

#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    pub run_stats: Option<Vec<crate::probes::cost::ProgramRunStats>>,
}

#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// As `scan_errors` counts it: the errno's name (`EMFILE`), or `malformed`.
    pub reason: &'static str,
    /// The failure, naming the file.
    pub error: String,
}

/// A pod or container. Names come from the container runtime's API and are `null`
/// until it answers (or where none runs).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerSample {
    /// `pod` or `container`.
    pub kind: CgroupKind,
    /// Container id (64 hex digits); for a pod, its UID.
    pub id: Option<String>,
    pub pod_uid: Option<String>,
    /// Container name, or pod name for a pod.
    pub name: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub runtime: Option<Runtime>,
    pub image: Option<String>,
    pub qos: Option<Qos>,
    /// The runtime's labels (sanitised).
    pub labels: BTreeMap<String, String>,
    /// When the runtime created the container, Unix seconds (containers only).
    pub created_seconds: Option<f64>,
}

/// CPU. Counters (`*_seconds`, `periods`, `throttled_periods`, `bursts`) are deltas
/// over the window; `limit_cores`, `burst_limit_seconds`, `weight` are gauges.
#[derive(Debug, Clone, Default, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// Memory. `*_bytes` are gauges at the end of the window (limits: `null` = no limit);
/// `pgfault`, `pgmajfault`, `workingset_*` and `events` are deltas over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemorySample {
    /// `null` where the memory controller is not enabled (then only `oom_kills` is
    /// set, from the oom probe).
    pub current_bytes: Option<u64>,
    /// `current - inactive_file`, as cAdvisor's container_memory_working_set_bytes.
    pub working_set_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub kernel_bytes: Option<u64>,
    pub sock_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
    pub file_mapped_bytes: Option<u64>,
    pub file_dirty_bytes: Option<u64>,
    pub file_writeback_bytes: Option<u64>,
    pub inactive_file_bytes: Option<u64>,
    pub active_file_bytes: Option<u64>,
    pub max_bytes: Option<u64>,
    pub high_bytes: Option<u64>,
    pub low_bytes: Option<u64>,
    pub min_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
    pub swap_current_bytes: Option<u64>,
    pub swap_max_bytes: Option<u64>,
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
    pub workingset_refault_anon: Option<u64>,
    pub workingset_refault_file: Option<u64>,
    pub workingset_activate_anon: Option<u64>,
    pub workingset_activate_file: Option<u64>,
    pub workingset_restore_anon: Option<u64>,
    pub workingset_restore_file: Option<u64>,
    pub workingset_nodereclaim: Option<u64>,
    pub events: Option<MemoryEventsSample>,
    /// OOM kills in the window in this cgroup and below (as `memory.events`
    /// `oom_kill` counts them), from the oom probe; `null` when it is not attached.
    pub oom_kills: Option<OomKillsSample>,
}

/// OOM kills in a window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OomKillsSample {
    pub count: u64,
    /// The first [`MAX_OOM_VICTIMS`] victims, oldest first.
    pub victims: Vec<OomVictimSample>,
}

/// Victims listed per cgroup and window; `count` has them all.
pub const MAX_OOM_VICTIMS: usize = 16;

#[derive(Debug, Clone, Serialize)]
pub struct OomVictimSample {
    pub pid: u32,
    /// The victim's `comm` (up to 15 bytes, control characters replaced).
    pub command: String,
    /// Id of the victim's own cgroup (a descendant, for a parent's sample).
    pub cgroup_id: u64,
}

/// `memory.events` deltas over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryEventsSample {
    pub low: Option<u64>,
    pub high: Option<u64>,
    pub max: Option<u64>,
    pub oom: Option<u64>,
    pub oom_kill: Option<u64>,
    pub oom_group_kill: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IoSample {
    pub devices: Vec<IoDeviceSample>,
}

/// One block device. The `io.stat` counters are deltas over the window, `*_iops`
/// their rates, the limits gauges from `io.max` (`null` = no limit); all are `null`
/// where the cgroup has no `io.stat` line for the device (io controller not enabled,
/// hybrid host). `completed`, `latency` and `device_latency` come from the blockio
/// probe, per operation (`null` when the probe is not attached): `io.stat` counts
/// IOs as submitted, the probe counts requests as completed by the device (merged
/// IOs are one request).
#[derive(Debug, Clone, Default, Serialize)]
pub struct IoDeviceSample {
    /// `"MAJ:MIN"`
    pub device: String,
    /// Kernel name (`sda`, `nvme0n1`), if the device still exists.
    pub name: Option<String>,
    pub read_ops: Option<u64>,
    pub write_ops: Option<u64>,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    pub discard_ops: Option<u64>,
    pub discard_bytes: Option<u64>,
    pub read_iops: Option<f64>,
    pub write_iops: Option<f64>,
    pub limit_read_bps: Option<u64>,
    pub limit_write_bps: Option<u64>,
    pub limit_read_iops: Option<u64>,
    pub limit_write_iops: Option<u64>,
    /// Requests completed in the window.
    pub completed: Option<PerOperation<Completed>>,
    /// Queue-to-complete: from the request's allocation (after io.max throttling) to
    /// its completion, what the application waits.
    pub latency: Option<PerOperation<LatencySummary>>,
    /// Issue-to-complete: from the dispatch to the driver to the completion, what the
    /// device takes.
    pub device_latency: Option<PerOperation<LatencySummary>>,
}

/// One value per block operation (`write` includes write-zeroes, `discard` secure
/// erase).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerOperation<T> {
    pub read: T,
    pub write: T,
    pub discard: T,
    pub flush: T,
}

impl ContainerSample {
    /// Whether `id` is this container's id, or a prefix of it of at least 12 digits
    /// (as `docker ps` and `crictl ps` show it).
    pub fn id_matches(&self, id: &str) -> bool {
        self.id
            .as_deref()
            .is_some_and(|mine| mine == id || (id.len() >= 12 && mine.starts_with(id)))
    }
}

/// What no true window can exceed, to refuse a value that a broken baseline made.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The host's CPUs (`/proc/stat`), not the agent's allowance.
    pub cpus: usize,
    pub window_seconds: f64,
    /// Time since the host booted: no single wait is longer.
    pub uptime_seconds: f64,
}

impl Bounds {
    /// The bounds of a window of `window_seconds` on this host now; `None` where
    /// the host's CPU count is not known.
    pub fn now(cpus: Option<usize>, window_seconds: f64) -> Option<Self> {
        let mut uptime = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `uptime` is a valid timespec for the call to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut uptime) } != 0 {
            return None;
        }
        Some(Self {
            cpus: cpus.filter(|&n| n > 0)?,
            window_seconds,
            uptime_seconds: uptime.tv_sec as f64 + uptime.tv_nsec as f64 * 1e-9,
        })
    }
}

impl CgroupSample {
    /// Which of this sample's values is impossible in its window, if one is: more
    /// CPU time than every CPU of the host could give in it (with a second and a
    /// quarter of slack for the time between the reads of two windows), a latency
    /// histogram with waits longer on average than the host has been up, or with
    /// more events than 20 million per CPU and second.
    pub fn impossible(&self, bounds: &Bounds) -> Option<&'static str> {
        let span = self.stats_seconds(bounds.window_seconds);
        let cpus = bounds.cpus as f64;
        let cpu_time = cpus * (span * 1.25 + 1.0);
        let cpu = &self.cpu;
        let times = [cpu.usage_seconds, cpu.user_seconds, cpu.system_seconds];
        if times
            .iter()
            .flatten()
            .any(|t| !(0.0..=cpu_time).contains(t))
        {
            return Some("cpu_time");
        }
        let events = cpus * (bounds.window_seconds + 1.0) * 2e7;
        let bad = |l: &LatencySummary| {
            l.count as f64 > events
                || !(0.0..=l.count as f64 * bounds.uptime_seconds).contains(&l.sum_seconds)
        };
        if cpu.runq_latency.as_ref().is_some_and(bad) {
            return Some("runq_latency");
        }
        let io = self.io.iter().flat_map(|io| &io.devices);
        let per_op = |p: &Option<PerOperation<LatencySummary>>| {
            p.as_ref().is_some_and(|p| {
                [&p.read, &p.write, &p.discard, &p.flush]
                    .into_iter()
                    .any(bad)
            })
        };
        if io
            .into_iter()
            .any(|d| per_op(&d.latency) || per_op(&d.device_latency))
        {
            return Some("io_latency");
        }
        let net = self.network.as_ref();
        let tcp = net
            .iter()
            .flat_map(|n| [&n.tcp_rtt, &n.tcp_connect_latency]);
        if tcp.flatten().any(bad) {
            return Some("tcp_latency");
        }
        None
    }

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

impl<T> PerOperation<T> {
    /// The slot of `cgscope_common::blockio::op` `op`.
    pub fn get_mut(&mut self, op: u32) -> Option<&mut T> {
        use cgscope_common::blockio::op;
        match op {
            op::READ => Some(&mut self.read),
            op::WRITE => Some(&mut self.write),
            op::DISCARD => Some(&mut self.discard),
            op::FLUSH => Some(&mut self.flush),
            _ => None,
        }
    }
}

/// Requests of one operation completed in the window, and their rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Completed {
    pub ops: u64,
    pub bytes: u64,
    pub iops: f64,
}

/// `current` and `max` are gauges (`max` `null` = no limit); `max_events` counts forks
/// refused by `pids.max` in the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PidsSample {
    pub current: u64,
    pub max: Option<u64>,
    pub max_events: Option<u64>,
}

/// Pressure stall information per resource; `null` where the kernel has no file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PressureSample {
    pub cpu: Option<PressureWindow>,
    pub memory: Option<PressureWindow>,
    pub io: Option<PressureWindow>,
    pub irq: Option<PressureWindow>,
}

/// Stall time within the window (`some`: at least one task stalled; `full`: all
/// non-idle tasks stalled at once), and the kernel's 10-second averages (percent) at
/// the end of the window.
#[derive(Debug, Clone, Default, Serialize)]
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
