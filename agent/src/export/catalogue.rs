//! Every metric cgscope exports, in one table: name, instrument, unit, attributes,
//! where the value comes from and which cAdvisor / coroot metric it replaces.
//! `docs/metrics.md` is rendered from this table (a test fails when it is stale), and
//! the OTLP and Prometheus exporters take names, units and descriptions from it.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists
//! (`container.cpu.time`, `container.memory.usage`, `container.disk.io`,
//! `container.network.io`, `system.cpu.time`, ...). Where none exists the name is a
//! `container.*` extension shaped like the collector's receivers: throttling as the
//! docker_stats receiver names it (`container.cpu.throttling_data.*`), pressure stall
//! information as `*.linux.pressure.*`, kernel latency distributions as
//! `<area>.<what>.latency` histograms in seconds. cgscope's own health is `cgscope.*`.

use std::fmt::Write as _;

/// How a metric is aggregated, in OTLP terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    /// Monotonic sum: exported cumulative (or as deltas, on request).
    Counter,
    /// Value at the end of the window.
    Gauge,
    /// Exponential histogram of durations, as the kernel aggregated them.
    Histogram,
}

impl Instrument {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "exponential histogram",
        }
    }
}

/// One exported metric.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub instrument: Instrument,
    /// UCUM, as OTLP carries it (`s`, `By`, `{cpu}`).
    pub unit: &'static str,
    pub description: &'static str,
    /// Data point attributes (resource attributes are in [`RESOURCE_ATTRIBUTES`]).
    pub attributes: &'static [&'static str],
    /// The kernel file or probe it is read from.
    pub source: &'static str,
    /// The cAdvisor or coroot metric it replaces, if any.
    pub replaces: &'static str,
    /// A gauge whose zero says only that nothing happened (a kind of page the
    /// container never had, swap never used): like a counter, a cgroup's series
    /// exists once it has been non-zero.
    pub sparse: bool,
}

macro_rules! sparse {
    () => {
        false
    };
    (sparse) => {
        true
    };
}

macro_rules! metrics {
    ($list:ident; $($id:ident: $name:literal, $inst:ident $($sparse:ident)?, $unit:literal, [$($attr:literal),*], $source:literal, $replaces:literal, $desc:literal;)*) => {
        $(pub const $id: Metric = Metric {
            name: $name,
            instrument: Instrument::$inst,
            sparse: sparse!($($sparse)?),
            unit: $unit,
            description: $desc,
            attributes: &[$($attr),*],
            source: $source,
            replaces: $replaces,
        };)*
        pub const $list: &[&Metric] = &[$(&$id),*];
    };
}

// Per cgroup (container, pod, service, the root): resource = the cgroup.
metrics! { CGROUP_METRICS;
    CPU_TIME: "container.cpu.time", Counter, "s", ["cpu.mode"], "cpu.stat user_usec, system_usec", "container_cpu_user_seconds_total, container_cpu_system_seconds_total",
        "CPU time consumed, by mode (user, system).";
    CPU_USAGE: "container.cpu.usage", Gauge, "{cpu}", [], "cpu.stat usage_usec", "rate(container_cpu_usage_seconds_total)",
        "CPUs used on average over the window.";
    CPU_LIMIT: "container.cpu.limit", Gauge, "{cpu}", [], "cpu.max", "container_spec_cpu_quota / container_spec_cpu_period",
        "CPU quota in CPUs (absent without a quota).";
    CPU_THROTTLING_PERIODS: "container.cpu.throttling_data.periods", Counter, "{period}", [], "cpu.stat nr_periods", "container_cpu_cfs_periods_total",
        "Enforcement periods that elapsed while the cgroup had runnable tasks.";
    CPU_THROTTLED_PERIODS: "container.cpu.throttling_data.throttled_periods", Counter, "{period}", [], "cpu.stat nr_throttled", "container_cpu_cfs_throttled_periods_total",
        "Enforcement periods in which the quota ran out.";
    CPU_THROTTLED_TIME: "container.cpu.throttling_data.throttled_time", Counter, "s", [], "cpu.stat throttled_usec", "container_cpu_cfs_throttled_seconds_total",
        "Time the cgroup's tasks could not run because the quota was used up.";
    CPU_RUNQ_LATENCY: "container.cpu.runq.latency", Histogram, "s", [], "runq probe (sched_wakeup, sched_switch)", "coroot container_cpu_delay_seconds_total (a sum only)",
        "Run-queue latency: time runnable tasks of the cgroup and its descendants waited for a CPU.";
    CPU_RUNQ_BLAME: "container.cpu.runq.blame", Counter, "s", ["cpu.runq.cause", "cpu.runq.culprit", "cpu.runq.culprit_name"], "runq probe, blame (sched_switch, sched_migrate_task, throttle_cfs_rq)", "none",
        "Time runnable tasks of the cgroup and its descendants waited for a CPU, by what held it: the cause (self, same_pod, other_containers, system, kernel, idle, own_quota, removed, unattributed) and, for the window's five longest culprits, their cgroup path and container or pod name (else both empty). The series of one cgroup add up to its run-queue latency's sum.";
    MEMORY_USAGE: "container.memory.usage", Gauge, "By", [], "memory.current", "container_memory_usage_bytes",
        "Memory charged to the cgroup, page cache included.";
    MEMORY_WORKING_SET: "container.memory.working_set", Gauge, "By", [], "memory.current - memory.stat inactive_file", "container_memory_working_set_bytes",
        "Memory that cannot be reclaimed without IO: usage minus inactive file pages.";
    MEMORY_STAT: "container.memory.state", Gauge sparse, "By", ["memory.state"], "memory.stat anon, file, kernel, sock, shmem, file_mapped, file_dirty, file_writeback", "container_memory_rss, container_memory_cache, container_memory_mapped_file, container_memory_kernel_usage",
        "Memory by kind of page.";
    MEMORY_LIMIT: "container.memory.limit", Gauge, "By", [], "memory.max", "container_spec_memory_limit_bytes",
        "Memory limit (absent without a limit).";
    MEMORY_SWAP: "container.memory.swap", Gauge sparse, "By", [], "memory.swap.current", "container_memory_swap",
        "Swap used by the cgroup.";
    MEMORY_PAGE_FAULTS: "container.memory.page_faults", Counter, "{fault}", ["system.paging.type"], "memory.stat pgfault, pgmajfault", "container_memory_failures_total",
        "Page faults, minor and major.";
    MEMORY_EVENTS: "container.memory.events", Counter, "{event}", ["memory.event"], "memory.events", "container_oom_events_total (oom_kill)",
        "memory.events: low, high, max, oom, oom_kill, oom_group_kill.";
    MEMORY_OOM_KILLS: "container.memory.oom_kills", Counter, "{kill}", [], "oom probe (mark_victim)", "coroot container_oom_kills_total",
        "Processes of the cgroup or its descendants killed by the OOM killer (also on hosts without the memory controller).";
    DISK_IO: "container.disk.io", Counter, "By", ["system.device", "disk.io.direction"], "io.stat rbytes, wbytes, dbytes", "container_fs_reads_bytes_total, container_fs_writes_bytes_total",
        "Bytes read, written and discarded, per device.";
    DISK_OPERATIONS: "container.disk.operations", Counter, "{operation}", ["system.device", "disk.io.direction"], "io.stat rios, wios, dios", "container_fs_reads_total, container_fs_writes_total",
        "IOs submitted, per device and direction.";
    DISK_REQUESTS: "container.disk.requests", Counter, "{request}", ["system.device", "disk.io.direction"], "blockio probe (block_rq_complete)", "coroot container_resources_disk_*",
        "Block requests completed by the device (merged IOs are one request), per device and operation (read, write, discard, flush).";
    DISK_LATENCY: "container.disk.latency", Histogram, "s", ["system.device", "disk.io.direction"], "blockio probe (block_rq_complete)", "coroot container_resources_disk_delay_seconds_total (a sum only)",
        "Queue-to-complete time of block requests: what the application waits.";
    DISK_DEVICE_LATENCY: "container.disk.device_latency", Histogram, "s", ["system.device", "disk.io.direction"], "blockio probe (block_rq_issue, block_rq_complete)", "",
        "Issue-to-complete time of block requests: what the device takes.";
    CONTAINER_UPTIME: "container.uptime", Gauge, "s", [], "runtime API: CRI created_at, Docker/Podman Created", "container_start_time_seconds",
        "Time since the runtime created the container (containers only).";
    PIDS_COUNT: "container.pids.count", Gauge, "{process}", [], "pids.current", "container_processes, container_threads",
        "Tasks (processes and threads) in the cgroup.";
    PIDS_LIMIT: "container.pids.limit", Gauge, "{process}", [], "pids.max", "container_spec_... (none)",
        "Task limit (absent without a limit).";
    PIDS_REFUSED: "container.pids.refused", Counter, "{fork}", [], "pids.events max", "",
        "Forks refused because pids.max was reached.";
    PRESSURE_STALL_TIME: "container.linux.pressure.stall_time", Counter, "s", ["linux.pressure.resource", "linux.pressure.stall"], "cpu.pressure, memory.pressure, io.pressure, irq.pressure total", "container_pressure_*_stalled_seconds_total, container_pressure_*_waiting_seconds_total",
        "Time in which some (or all non-idle) tasks of the cgroup stalled on a resource.";
    PRESSURE_AVG10: "container.linux.pressure.avg10", Gauge, "%", ["linux.pressure.resource", "linux.pressure.stall"], "*.pressure avg10", "",
        "The kernel's 10-second average share of stalled time.";
    NETWORK_IO: "container.network.io", Counter, "By", ["network.interface.name", "network.io.direction"], "/proc/PID/net/dev of the cgroup's network namespace", "container_network_receive_bytes_total, container_network_transmit_bytes_total",
        "Bytes received and transmitted, per interface of the container's network namespace.";
    NETWORK_PACKETS: "container.network.packets", Counter, "{packet}", ["network.interface.name", "network.io.direction"], "/proc/PID/net/dev", "container_network_receive_packets_total, container_network_transmit_packets_total",
        "Packets received and transmitted.";
    NETWORK_ERRORS: "container.network.errors", Counter, "{error}", ["network.interface.name", "network.io.direction"], "/proc/PID/net/dev", "container_network_receive_errors_total, container_network_transmit_errors_total",
        "Receive and transmit errors.";
    NETWORK_DROPPED: "container.network.dropped", Counter, "{packet}", ["network.interface.name", "network.io.direction"], "/proc/PID/net/dev", "container_network_receive_packets_dropped_total, container_network_transmit_packets_dropped_total",
        "Packets dropped.";
    TCP_RTT: "container.network.tcp.rtt", Histogram, "s", [], "tcp probe (tcp_probe: srtt, one sample per socket per second)", "coroot container_net_tcp_*_rtt (a sum only)",
        "Smoothed round-trip time of the cgroup's TCP connections.";
    TCP_CONNECT_LATENCY: "container.network.tcp.connect.latency", Histogram, "s", [], "tcp probe (inet_sock_set_state SYN_SENT -> ESTABLISHED)", "coroot container_net_tcp_connection_time_seconds_total (a sum only)",
        "Time from SYN sent to established, for connections the cgroup opened.";
    TCP_CONNECT_FAILURES: "container.network.tcp.connect.failures", Counter, "{connection}", [], "tcp probe (inet_sock_set_state SYN_SENT -> CLOSE)", "coroot container_net_tcp_failed_connects_total",
        "Connections the cgroup opened that failed.";
    TCP_RETRANSMITS: "container.network.tcp.retransmits", Counter, "{segment}", [], "tcp probe (tcp_retransmit_skb)", "coroot container_net_tcp_retransmits_total",
        "TCP segments the cgroup's sockets retransmitted.";
    TCP_RESETS: "container.network.tcp.resets", Counter, "{segment}", ["network.io.direction"], "tcp probe (tcp_send_reset, tcp_receive_reset)", "",
        "TCP resets sent (transmit) and received (receive) by the cgroup's sockets.";
}

// Host: resource = the node.
metrics! { HOST_METRICS;
    HOST_CPU_TIME: "system.cpu.time", Counter, "s", ["cpu.mode"], "/proc/stat", "node_cpu_seconds_total",
        "CPU time of the whole host, by mode (user, nice, system, idle, iowait, irq, softirq, steal).";
    HOST_PRESSURE_STALL_TIME: "system.linux.pressure.stall_time", Counter, "s", ["linux.pressure.resource", "linux.pressure.stall"], "/proc/pressure/*", "node_pressure_*_seconds_total",
        "Time in which some (or all non-idle) tasks of the host stalled on a resource.";
    HOST_DISK_IO: "system.disk.io", Counter, "By", ["system.device", "disk.io.direction"], "/proc/diskstats", "node_disk_read_bytes_total, node_disk_written_bytes_total",
        "Bytes read and written, per whole disk.";
    HOST_DISK_OPERATIONS: "system.disk.operations", Counter, "{operation}", ["system.device", "disk.io.direction"], "/proc/diskstats", "node_disk_reads_completed_total, node_disk_writes_completed_total",
        "Reads and writes completed, per whole disk.";
}

// cgscope itself: resource = the agent.
metrics! { SELF_METRICS;
    SELF_CPU_TIME: "cgscope.cpu.time", Counter, "s", ["cpu.mode"], "getrusage(RUSAGE_SELF)", "",
        "CPU time of the agent, user and system.";
    SELF_MEMORY_RSS: "cgscope.memory.rss", Gauge, "By", [], "/proc/self/statm", "",
        "Resident memory of the agent.";
    SELF_SCAN_DURATION: "cgscope.scan.duration", Gauge, "s", [], "the sampler", "",
        "Wall time of the last scan (maps, cgroup tree, files, namespaces).";
    SELF_CGROUPS: "cgscope.cgroups", Gauge, "{cgroup}", [], "the sampler", "",
        "cgroups in the last scan.";
    SELF_SCAN_ERRORS: "cgscope.scan.errors", Counter, "{error}", ["cgscope.reason"], "the sampler", "",
        "Reads that failed (a cgroup's files, a directory listing) or values refused as impossible, by reason (errno name, `malformed`, `impossible`): those cgroups are reported unreadable for the window, never removed.";
    SELF_PROBE_ATTACHED: "cgscope.probe.attached", Gauge, "1", ["cgscope.probe"], "the probes", "",
        "1 when the probe is attached, 0 when it failed or is disabled.";
    SELF_PROBE_DROPPED: "cgscope.probe.dropped", Counter, "{event}", ["cgscope.probe", "cgscope.reason"], "the probes' counters", "",
        "Events a probe could not record, by reason (map full, no timestamp, ...).";
    SELF_PROBE_MAP_ENTRIES: "cgscope.probe.map_entries", Gauge, "{entry}", ["cgscope.probe"], "the probes' maps", "",
        "Entries in a probe's per-cgroup map (its capacity is --max-cgroups).";
    SELF_PROBE_RUNS: "cgscope.probe.runs", Counter, "{run}", ["cgscope.probe", "cgscope.program"], "BPF run-time statistics", "",
        "Runs of each probe program (one per event on its hook), where the kernel keeps run-time statistics (see the probe's notes where it does not).";
    SELF_PROBE_RUN_TIME: "cgscope.probe.run_time", Counter, "s", ["cgscope.probe", "cgscope.program"], "BPF run-time statistics", "",
        "Time the kernel spent running each probe program: divided by `cgscope.probe.runs`, what one event costs; over the node's CPU time, the probes' share.";
    SELF_COST_SHARE: "cgscope.cost.node_share", Gauge, "1", [], "getrusage and BPF run-time statistics", "",
        "cgscope's process CPU time plus its probes' run time in the kernel, over the node's CPU time in the window.";
    SELF_COST_OVER_BUDGET: "cgscope.cost.over_budget", Gauge, "1", ["cgscope.probe"], "--cost-budget", "",
        "1 once cgscope has been over its cost budget (--cost-budget) for three windows in a row, with the costliest probe in `cgscope.probe`; else 0.";
    SELF_EXPORT_SENT: "cgscope.export.sent", Counter, "{batch}", [], "the OTLP exporter", "",
        "Batches the collector accepted.";
    SELF_EXPORT_FAILURES: "cgscope.export.failures", Counter, "{attempt}", ["error.type"], "the OTLP exporter", "",
        "Export attempts that failed (retried while the batch is queued).";
    SELF_EXPORT_DROPPED: "cgscope.export.dropped", Counter, "{batch}", ["cgscope.reason"], "the OTLP exporter", "",
        "Batches given up: the queue was full (oldest dropped) or the collector rejected them.";
    SELF_EXPORT_REFUSED: "cgscope.export.refused", Counter, "{window}", ["cgscope.reason"], "the export store", "",
        "Cgroup windows not added to the cumulative series because a value was impossible in the window (`cpu_time`, `runq_latency`, `io_latency`, `tcp_latency`); their totals stay.";
    SELF_SERIES_OVERFLOW: "cgscope.series.overflow", Counter, "{point}", [], "the series cap", "",
        "Points folded into an overflow series because a metric reached --max-series.";
}

/// Every exported metric, in the order of `docs/metrics.md`: per cgroup, host, and
/// cgscope's own.
pub fn all() -> impl Iterator<Item = &'static Metric> {
    CGROUP_METRICS
        .iter()
        .chain(HOST_METRICS)
        .chain(SELF_METRICS)
        .copied()
}

/// Resource attributes, with where they come from.
pub const RESOURCE_ATTRIBUTES: &[(&str, &str)] = &[
    ("service.name", "`OTEL_SERVICE_NAME`, else `cgscope`"),
    ("service.version", "cgscope's version"),
    ("service.instance.id", "`host.name`: one agent per node"),
    ("host.name", "the node's hostname"),
    ("k8s.node.name", "`NODE_NAME` (downward API), when set"),
    (
        "cgscope.cgroup.path",
        "the cgroup, relative to the v2 root (`/` is the host)",
    ),
    (
        "cgscope.cgroup.kind",
        "`root`, `pod`, `container`, `service`, `slice`, `other`",
    ),
    ("container.id", "containers: from the cgroup path"),
    ("container.name", "containers: from the runtime"),
    (
        "container.runtime.name",
        "`containerd`, `cri-o`, `docker`, `podman`",
    ),
    ("container.image.name", "containers: from the runtime"),
    (
        "k8s.pod.name",
        "pods and their containers: from the runtime",
    ),
    (
        "k8s.pod.uid",
        "pods and their containers: from the cgroup path",
    ),
    (
        "k8s.namespace.name",
        "pods and their containers: from the runtime",
    ),
    (
        "k8s.container.name",
        "Kubernetes containers: from the runtime",
    ),
];

/// `docs/metrics.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "# cgscope metrics\n\n\
         Generated from `agent/src/export/catalogue.rs` (`cargo test -p cgscope catalogue` \
         fails when this file is stale; `CGSCOPE_BLESS=1` rewrites it).\n\n\
         ## Resources\n\n\
         One OTLP resource per exported cgroup (a container, a pod, a systemd service, the \
         host's root cgroup), one for the host (`system.*`) and one for the agent \
         (`cgscope.*`). Every resource carries the agent's attributes (`service.*`, \
         `host.name`, `k8s.node.name`, `OTEL_RESOURCE_ATTRIBUTES`); a cgroup's adds its \
         identity. In Prometheus the cgroup identity attributes are labels on every \
         series (`container_id`, `k8s_pod_name`, ...) and the agent's are on `target_info`.\n\n\
         | attribute | value |\n|---|---|\n",
    );
    for (name, from) in RESOURCE_ATTRIBUTES {
        let _ = writeln!(out, "| `{name}` | {from} |");
    }
    out.push_str(
        "\n## Metrics\n\n\
         Counters are cumulative from when cgscope first saw the series (OTLP start time), \
         or deltas with `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta`. \
         Histograms are the kernel's buckets as OTLP exponential histograms (scale 3, \
         bucket bounds 2^(i/8) s); Prometheus gets them as classic buckets at powers of 2.\n\n\
         When a series appears and goes: a cgroup's gauge from its first exported window; \
         a cgroup's counter or histogram only once it has counted something (an idle \
         container's never-woken run-queue histogram or never-throttled counter is not \
         exported, in OTLP or Prometheus), then in every window after, empty or not; so \
         do the gauges marked *sparse* below, whose zero says only that nothing happened \
         (a kind of page the container never had, swap never used), once non-zero. A \
         series goes stale when its cgroup is removed (its last window is exported once) \
         or its source stops giving a value; back, it starts again with a new start time. \
         The node's series (`system.*`, `cgscope.*`) are always exported. `/metrics` is \
         gzipped for scrapers that accept it (Prometheus does).\n\n\
         | metric | instrument | unit | attributes | source | replaces | description |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for m in all() {
        let attributes: Vec<String> = m.attributes.iter().map(|a| format!("`{a}`")).collect();
        let _ = writeln!(
            out,
            "| `{}` | {}{} | `{}` | {} | {} | {} | {} |",
            m.name,
            m.instrument.as_str(),
            if m.sparse { " (sparse)" } else { "" },
            m.unit,
            attributes.join(", "),
            m.source,
            m.replaces,
            m.description
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = all().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a metric name appears twice");
    }

    #[test]
    fn docs_are_current() {
        crate::assert_blessed(
            "docs/metrics.md",
            &markdown(),
            "run CGSCOPE_BLESS=1 cargo test -p cgscope catalogue",
        );
    }
}
