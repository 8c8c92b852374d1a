//! From a snapshot to data points: which field of the snapshot feeds which metric of
//! the [catalogue](super::catalogue), with which attributes. Counters are the
//! window's deltas (the [store](super::store) makes them cumulative); absent data
//! (`null` in the snapshot) gives no point, never a zero.

use crate::snapshot::{
    CgroupSample, CostSample, ExponentialHistogram, HostSample, IoDeviceSample, LatencySummary,
    PerOperation, PressureSample, PressureWindow, ProbeStatus, RunqBlame, StatKind, MEMORY_STAT,
};

use super::catalogue::{self as c, Metric};

/// Data point attributes: `(key, value)`, in the order the catalogue lists the keys.
pub type Attributes = Vec<(&'static str, String)>;

/// A value of one window.
#[derive(Debug, Clone, Copy)]
pub enum PointValue<'a> {
    /// A gauge's value, or what a counter counted in the window.
    Int(u64),
    Double(f64),
    /// A counter's total since the agent started (cgscope's own counters).
    TotalInt(u64),
    TotalDouble(f64),
    Histogram(&'a ExponentialHistogram),
}

#[derive(Debug)]
pub struct Point<'a> {
    pub metric: &'static Metric,
    pub attributes: Attributes,
    pub value: PointValue<'a>,
}

/// Collects points; `None` values are skipped.
pub struct Points<'a>(pub Vec<Point<'a>>);

impl<'a> Points<'a> {
    fn push(&mut self, metric: &'static Metric, attributes: Attributes, value: PointValue<'a>) {
        self.0.push(Point {
            metric,
            attributes,
            value,
        });
    }

    fn int(&mut self, metric: &'static Metric, attributes: Attributes, v: Option<u64>) {
        if let Some(v) = v {
            self.push(metric, attributes, PointValue::Int(v));
        }
    }

    fn double(&mut self, metric: &'static Metric, attributes: Attributes, v: Option<f64>) {
        if let Some(v) = v {
            self.push(metric, attributes, PointValue::Double(v));
        }
    }

    fn histogram(
        &mut self,
        metric: &'static Metric,
        attributes: Attributes,
        v: Option<&'a LatencySummary>,
    ) {
        if let Some(v) = v {
            self.push(metric, attributes, PointValue::Histogram(&v.histogram));
        }
    }
}

fn attr(key: &'static str, value: &str) -> Attributes {
    vec![(key, value.to_owned())]
}

fn attr2(k1: &'static str, v1: &str, k2: &'static str, v2: &str) -> Attributes {
    vec![(k1, v1.to_owned()), (k2, v2.to_owned())]
}

/// Every point of one cgroup's window ending at `end_seconds` (Unix).
pub fn cgroup<'a>(
    c: &'a CgroupSample,
    end_seconds: f64,
    window_seconds: f64,
    out: &mut Points<'a>,
) {
    let cpu = &c.cpu;
    out.double(&c::CPU_TIME, attr("cpu.mode", "user"), cpu.user_seconds);
    out.double(&c::CPU_TIME, attr("cpu.mode", "system"), cpu.system_seconds);
    let span = c.stats_seconds(window_seconds);
    let usage = cpu.usage_seconds.filter(|_| span > 0.0).map(|s| s / span);
    out.double(&c::CPU_USAGE, vec![], usage);
    out.double(&c::CPU_LIMIT, vec![], cpu.limit_cores);
    out.int(&c::CPU_THROTTLING_PERIODS, vec![], cpu.periods);
    out.int(&c::CPU_THROTTLED_PERIODS, vec![], cpu.throttled_periods);
    out.double(&c::CPU_THROTTLED_TIME, vec![], cpu.throttled_seconds);
    out.histogram(&c::CPU_RUNQ_LATENCY, vec![], cpu.runq_latency.as_ref());
    if let Some(blame) = &cpu.runq_blame {
        runq_blame(blame, out);
    }

    if let Some(m) = &c.memory {
        out.int(&c::MEMORY_USAGE, vec![], m.current_bytes);
        out.int(&c::MEMORY_WORKING_SET, vec![], m.working_set_bytes);
        for key in MEMORY_STAT.iter().filter(|k| k.kind == StatKind::State) {
            let state = attr("memory.state", key.key);
            out.int(&c::MEMORY_STAT, state, (key.field)(m));
        }
        out.int(&c::MEMORY_LIMIT, vec![], m.max_bytes);
        out.int(&c::MEMORY_SWAP, vec![], m.swap_current_bytes);
        let minor = m
            .pgfault
            .map(|all| all.saturating_sub(m.pgmajfault.unwrap_or(0)));
        out.int(
            &c::MEMORY_PAGE_FAULTS,
            attr("system.paging.type", "minor"),
            minor,
        );
        out.int(
            &c::MEMORY_PAGE_FAULTS,
            attr("system.paging.type", "major"),
            m.pgmajfault,
        );
        if let Some(e) = &m.events {
            for (event, v) in [
                ("low", e.low),
                ("high", e.high),
                ("max", e.max),
                ("oom", e.oom),
                ("oom_kill", e.oom_kill),
                ("oom_group_kill", e.oom_group_kill),
            ] {
                out.int(&c::MEMORY_EVENTS, attr("memory.event", event), v);
            }
        }
        out.int(
            &c::MEMORY_OOM_KILLS,
            vec![],
            m.oom_kills.as_ref().map(|k| k.count),
        );
    }

    for d in c.io.iter().flat_map(|io| &io.devices) {
        disk(d, out);
    }

    let created = c.container.as_ref().and_then(|m| m.created_seconds);
    out.double(
        &c::CONTAINER_UPTIME,
        vec![],
        created.map(|t| (end_seconds - t).max(0.0)),
    );

    if let Some(p) = &c.pids {
        out.int(&c::PIDS_COUNT, vec![], Some(p.current));
        out.int(&c::PIDS_LIMIT, vec![], p.max);
        out.int(&c::PIDS_REFUSED, vec![], p.max_events);
    }
    pressure(
        &c::PRESSURE_STALL_TIME,
        Some(&c::PRESSURE_AVG10),
        &c.pressure,
        out,
    );

    if let Some(n) = &c.network {
        for i in &n.interfaces {
            for (metric, rx, tx) in [
                (&c::NETWORK_IO, i.rx_bytes, i.tx_bytes),
                (&c::NETWORK_PACKETS, i.rx_packets, i.tx_packets),
                (&c::NETWORK_ERRORS, i.rx_errors, i.tx_errors),
                (&c::NETWORK_DROPPED, i.rx_dropped, i.tx_dropped),
            ] {
                let dir = |d| attr2("network.interface.name", &i.name, "network.io.direction", d);
                out.int(metric, dir("receive"), Some(rx));
                out.int(metric, dir("transmit"), Some(tx));
            }
        }
        out.histogram(&c::TCP_RTT, vec![], n.tcp_rtt.as_ref());
        out.histogram(
            &c::TCP_CONNECT_LATENCY,
            vec![],
            n.tcp_connect_latency.as_ref(),
        );
        out.int(&c::TCP_CONNECT_FAILURES, vec![], n.tcp_connect_failures);
        out.int(&c::TCP_RETRANSMITS, vec![], n.tcp_retransmits);
        let direction = |d| attr("network.io.direction", d);
        out.int(&c::TCP_RESETS, direction("transmit"), n.tcp_resets_sent);
        out.int(&c::TCP_RESETS, direction("receive"), n.tcp_resets_received);
    }
}

/// The wait by cause, the window's named culprits apart: one series per cause
/// without culprit attributes for the rest of it, so that the series add up to the
/// wait and a cgroup has at most nine plus five in a window.
fn runq_blame(blame: &RunqBlame, out: &mut Points<'_>) {
    for culprit in &blame.culprits {
        let name = culprit
            .name
            .as_deref()
            .or(culprit.pod.as_deref())
            .unwrap_or("");
        let attributes = vec![
            ("cpu.runq.cause", culprit.cause.to_owned()),
            ("cpu.runq.culprit", culprit.path.clone()),
            ("cpu.runq.culprit_name", name.to_owned()),
        ];
        out.double(&c::CPU_RUNQ_BLAME, attributes, Some(culprit.seconds));
    }
    for (cause, seconds) in blame.causes.named() {
        let named: f64 = (blame.culprits.iter())
            .filter(|c| c.cause == cause)
            .map(|c| c.seconds)
            .sum();
        let rest = (seconds - named).max(0.0);
        if rest > 0.0 {
            // The same attributes as a named culprit's, empty: one label set.
            let attributes = vec![
                ("cpu.runq.cause", cause.to_owned()),
                ("cpu.runq.culprit", String::new()),
                ("cpu.runq.culprit_name", String::new()),
            ];
            out.double(&c::CPU_RUNQ_BLAME, attributes, Some(rest));
        }
    }
}

fn disk<'a>(d: &'a IoDeviceSample, out: &mut Points<'a>) {
    let device = d.name.as_deref().unwrap_or(&d.device);
    let at = |direction| attr2("system.device", device, "disk.io.direction", direction);
    for (direction, bytes, ops) in [
        ("read", d.read_bytes, d.read_ops),
        ("write", d.write_bytes, d.write_ops),
        ("discard", d.discard_bytes, d.discard_ops),
    ] {
        out.int(&c::DISK_IO, at(direction), bytes);
        out.int(&c::DISK_OPERATIONS, at(direction), ops);
    }
    if let Some(done) = &d.completed {
        for (direction, v) in per_operation(done) {
            // An operation the device never completed has no series.
            if v.ops > 0 {
                out.int(&c::DISK_REQUESTS, at(direction), Some(v.ops));
            }
        }
    }
    for (metric, latency) in [
        (&c::DISK_LATENCY, &d.latency),
        (&c::DISK_DEVICE_LATENCY, &d.device_latency),
    ] {
        for (direction, v) in latency.iter().flat_map(per_operation) {
            if v.count > 0 {
                out.histogram(metric, at(direction), Some(v));
            }
        }
    }
}

fn per_operation<T>(p: &PerOperation<T>) -> [(&'static str, &T); 4] {
    [
        ("read", &p.read),
        ("write", &p.write),
        ("discard", &p.discard),
        ("flush", &p.flush),
    ]
}

fn pressure(
    stall_time: &'static Metric,
    avg10: Option<&'static Metric>,
    p: &PressureSample,
    out: &mut Points<'_>,
) {
    let resources: [(&str, &Option<PressureWindow>); 4] = [
        ("cpu", &p.cpu),
        ("memory", &p.memory),
        ("io", &p.io),
        ("irq", &p.irq),
    ];
    for (resource, w) in resources {
        let Some(w) = w else { continue };
        let at = |stall| {
            attr2(
                "linux.pressure.resource",
                resource,
                "linux.pressure.stall",
                stall,
            )
        };
        out.double(stall_time, at("some"), w.some_seconds);
        out.double(stall_time, at("full"), w.full_seconds);
        if let Some(avg10) = avg10 {
            out.double(avg10, at("some"), w.some_avg10);
            out.double(avg10, at("full"), w.full_avg10);
        }
    }
}

/// The host's points (`system.*`).
pub fn host<'a>(h: &'a HostSample, out: &mut Points<'a>) {
    if let Some(cpu) = &h.cpu {
        for (mode, v) in [
            ("user", cpu.user_seconds),
            ("nice", cpu.nice_seconds),
            ("system", cpu.system_seconds),
            ("idle", cpu.idle_seconds),
            ("iowait", cpu.iowait_seconds),
            ("interrupt", cpu.irq_seconds),
            ("softirq", cpu.softirq_seconds),
            ("steal", cpu.steal_seconds),
        ] {
            out.double(&c::HOST_CPU_TIME, attr("cpu.mode", mode), Some(v));
        }
    }
    pressure(&c::HOST_PRESSURE_STALL_TIME, None, &h.pressure, out);
    for d in &h.disks {
        let at = |direction| attr2("system.device", &d.name, "disk.io.direction", direction);
        out.int(&c::HOST_DISK_IO, at("read"), Some(d.read_bytes));
        out.int(&c::HOST_DISK_IO, at("write"), Some(d.write_bytes));
        out.int(&c::HOST_DISK_OPERATIONS, at("read"), Some(d.read_ops));
        out.int(&c::HOST_DISK_OPERATIONS, at("write"), Some(d.write_ops));
    }
}

/// cgscope's own state at the end of a window.
#[derive(Debug, Clone, Default)]
pub struct AgentSample {
    /// Totals since the agent started.
    pub user_seconds: f64,
    pub system_seconds: f64,
    pub rss_bytes: Option<u64>,
    /// Wall time of the window's scan.
    pub scan_seconds: f64,
    pub cgroups: u64,
    pub export_sent: Option<u64>,
    /// By `error.type`.
    pub export_failures: Vec<(String, u64)>,
    /// By reason: `queue_full`, `rejected`.
    pub export_dropped: Vec<(&'static str, u64)>,
    pub series_overflow: u64,
    /// Since start, by reason.
    pub scan_errors: Vec<(&'static str, u64)>,
    pub export_refused: Vec<(&'static str, u64)>,
}

/// The agent's points (`cgscope.*`): its cost, its probes, its exporter.
pub fn agent<'a>(
    a: &AgentSample,
    probes: &'a [ProbeStatus],
    cost: &'a CostSample,
    out: &mut Points<'a>,
) {
    out.push(
        &c::SELF_CPU_TIME,
        attr("cpu.mode", "user"),
        PointValue::TotalDouble(a.user_seconds),
    );
    out.push(
        &c::SELF_CPU_TIME,
        attr("cpu.mode", "system"),
        PointValue::TotalDouble(a.system_seconds),
    );
    out.int(&c::SELF_MEMORY_RSS, vec![], a.rss_bytes);
    out.double(&c::SELF_SCAN_DURATION, vec![], Some(a.scan_seconds));
    out.int(&c::SELF_CGROUPS, vec![], Some(a.cgroups));
    for (reason, n) in &a.scan_errors {
        let at = attr("cgscope.reason", reason);
        out.push(&c::SELF_SCAN_ERRORS, at, PointValue::TotalInt(*n));
    }
    for (reason, n) in &a.export_refused {
        let at = attr("cgscope.reason", reason);
        out.push(&c::SELF_EXPORT_REFUSED, at, PointValue::TotalInt(*n));
    }
    for p in probes {
        out.int(
            &c::SELF_PROBE_ATTACHED,
            attr("cgscope.probe", p.name),
            Some(u64::from(p.attached)),
        );
        out.int(
            &c::SELF_PROBE_MAP_ENTRIES,
            attr("cgscope.probe", p.name),
            p.map_entries,
        );
        for (reason, n) in &p.dropped {
            let at = attr2("cgscope.probe", p.name, "cgscope.reason", reason);
            out.push(&c::SELF_PROBE_DROPPED, at, PointValue::TotalInt(*n));
        }
        for s in p.run_stats.iter().flatten() {
            let at = || attr2("cgscope.probe", p.name, "cgscope.program", &s.program);
            out.push(&c::SELF_PROBE_RUNS, at(), PointValue::TotalInt(s.runs));
            let seconds = PointValue::TotalDouble(s.run_seconds);
            out.push(&c::SELF_PROBE_RUN_TIME, at(), seconds);
        }
    }
    if let Some(sent) = a.export_sent {
        out.push(&c::SELF_EXPORT_SENT, vec![], PointValue::TotalInt(sent));
        for (kind, n) in &a.export_failures {
            out.push(
                &c::SELF_EXPORT_FAILURES,
                attr("error.type", kind),
                PointValue::TotalInt(*n),
            );
        }
        for (reason, n) in &a.export_dropped {
            out.push(
                &c::SELF_EXPORT_DROPPED,
                attr("cgscope.reason", reason),
                PointValue::TotalInt(*n),
            );
        }
    }
    out.push(
        &c::SELF_SERIES_OVERFLOW,
        vec![],
        PointValue::TotalInt(a.series_overflow),
    );
    out.double(&c::SELF_COST_SHARE, vec![], cost.node_share);
    let costliest = match (cost.over_budget, cost.costliest_probe) {
        (true, Some(probe)) => attr("cgscope.probe", probe),
        _ => vec![],
    };
    out.int(
        &c::SELF_COST_OVER_BUDGET,
        costliest,
        Some(u64::from(cost.over_budget)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        snapshot::CgroupKind,
        snapshot::{BlameCauses, Culprit},
    };

    fn culprit(path: &str, cause: &'static str, seconds: f64) -> Culprit {
        Culprit {
            path: path.into(),
            kind: CgroupKind::Container,
            cause,
            container_id: None,
            name: Some(format!("{path}-name")),
            pod: None,
            namespace: None,
            seconds,
        }
    }

    /// The named culprits and the rest of each cause: the series add up to the wait,
    /// and the rest of a cause is never negative.
    #[test]
    fn blame_series_add_up_to_the_wait() {
        let blame = RunqBlame {
            causes: BlameCauses {
                own: 0.5,
                other_containers: 2.0,
                system: 0.25,
                own_quota: 1.0,
                ..BlameCauses::default()
            },
            culprits: vec![
                culprit("/a", "other_containers", 1.5),
                culprit("/s", "system", 0.25),
            ],
        };
        let mut out = Points(Vec::new());
        runq_blame(&blame, &mut out);
        let value = |p: &Point| match p.value {
            PointValue::Double(v) => v,
            _ => panic!("a double"),
        };
        let total: f64 = out.0.iter().map(value).sum();
        assert_eq!(total, 3.75);
        let attrs: Vec<(String, String, f64)> = (out.0.iter())
            .map(|p| {
                (
                    p.attributes[0].1.clone(),
                    p.attributes[1].1.clone(),
                    value(p),
                )
            })
            .collect();
        assert_eq!(
            attrs,
            [
                ("other_containers".into(), "/a".into(), 1.5),
                ("system".into(), "/s".into(), 0.25),
                ("self".into(), String::new(), 0.5),
                ("other_containers".into(), String::new(), 0.5),
                ("own_quota".into(), String::new(), 1.0),
            ]
        );
        assert_eq!(out.0[0].attributes[2].1, "/a-name");
    }
}
