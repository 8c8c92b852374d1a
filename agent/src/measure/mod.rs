//! The measures playbook checks name and `top`'s columns show: each turns one
//! cgroup's window into one number with a unit (and, for per-device or per-CPU
//! measures, where it was worst). Checks (in `playbooks/*.md`) hold the thresholds;
//! this module only knows how to compute the numbers, and which cgroups a selector
//! names ([`select`]).

mod select;

pub use select::{selects, targets};

use crate::snapshot::{
    CgroupKind, CgroupSample, HostSample, Interface, IoDeviceSample, LatencySummary, NetworkSample,
    PerOperation, PressureWindow,
};

/// How a measure's value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// CPUs (cores' worth of time per second).
    Cores,
    /// A share, shown as a percentage.
    Ratio,
    /// A share of a limit or a capacity, shown as a percentage; `1 - value` is the
    /// headroom left.
    OfCeiling,
    Seconds,
    Count,
    PerSecond,
    Bytes,
    BytesPerSecond,
}

impl Unit {
    pub fn show(self, v: f64) -> String {
        match self {
            Self::Cores => format!("{v:.2} CPUs"),
            Self::Ratio | Self::OfCeiling => format!("{:.1}%", v * 100.0),
            Self::Seconds => crate::table::duration(v),
            Self::Count => format!("{v:.0}"),
            Self::PerSecond => format!("{v:.1}/s"),
            Self::Bytes => bytes(v),
            Self::BytesPerSecond => format!("{}/s", bytes(v)),
        }
    }
}

/// Bytes with a binary unit, three significant digits.
fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{v:.0}B"),
        _ => format!("{v:.1}{}", UNITS[unit]),
    }
}

/// What a measure is computed from besides the cgroup itself.
pub struct Scope<'a> {
    pub window: f64,
    pub host: &'a HostSample,
}

/// A measure's value, and where it was found when the cgroup has several places
/// (the device and operation of the slowest IO, the busiest CPU).
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub value: f64,
    pub on: Option<String>,
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Self { value, on: None }
    }
}

pub struct Measure {
    pub name: &'static str,
    pub unit: Unit,
    pub description: &'static str,
    /// `None` when the window has no data for it (controller or probe missing, or a
    /// `host.` measure asked of a cgroup other than the root).
    pub compute: fn(&CgroupSample, &Scope) -> Option<Value>,
}

fn per_second(v: Option<f64>, window: f64) -> Option<Value> {
    v.filter(|_| window > 0.0).map(|v| (v / window).into())
}

fn some(p: &Option<PressureWindow>, window: f64) -> Option<Value> {
    p.as_ref()?.some_share(window).map(Value::from)
}

fn p99(l: &Option<LatencySummary>) -> Option<Value> {
    l.as_ref()
        .filter(|l| l.count > 0)
        .map(|l| l.p99_seconds.into())
}

/// The largest of `values`, each with where it was found.
fn worst(values: impl Iterator<Item = (f64, String)>) -> Option<Value> {
    values
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(value, on)| Value {
            value,
            on: Some(on),
        })
}

fn devices(c: &CgroupSample) -> impl Iterator<Item = &IoDeviceSample> {
    c.io.iter().flat_map(|io| &io.devices)
}

fn device_name(d: &IoDeviceSample) -> &str {
    d.name.as_deref().unwrap_or(&d.device)
}

/// Rate against limit, for reads and writes of every device with a limit.
fn of_limit(
    c: &CgroupSample,
    rate: impl Fn(&IoDeviceSample) -> [(Option<f64>, Option<u64>); 2],
) -> Option<Value> {
    worst(devices(c).flat_map(|d| {
        let [read, write] = rate(d);
        [("read", read), ("write", write)]
            .into_iter()
            .filter_map(move |(op, (rate, limit))| {
                let limit = limit.filter(|l| *l > 0)? as f64;
                Some((rate? / limit, format!("{} {op}", device_name(d))))
            })
    }))
}

/// The host's value, for the root cgroup only (the host has one).
fn host<T>(c: &CgroupSample, v: Option<T>) -> Option<T> {
    v.filter(|_| c.kind == CgroupKind::Root)
}

/// IOs per second over all devices: io.stat's rate where the cgroup has one, else
/// the probe's completions in the window.
fn iops(
    c: &CgroupSample,
    s: &Scope,
    of: impl Fn(&IoDeviceSample) -> (Option<f64>, Option<u64>),
) -> Option<Value> {
    let mut total = None;
    for d in devices(c) {
        let rate = match of(d) {
            (Some(rate), _) => Some(rate),
            (None, Some(ops)) if s.window > 0.0 => Some(ops as f64 / s.window),
            _ => None,
        };
        if let Some(rate) = rate {
            *total.get_or_insert(0.0) += rate;
        }
    }
    total.map(Value::from)
}

fn network(c: &CgroupSample) -> Option<&NetworkSample> {
    c.network.as_ref()
}

/// The sum of `f` over the interfaces of the network namespace the cgroup owns.
fn interfaces(c: &CgroupSample, f: fn(&Interface) -> u64) -> Option<u64> {
    let n = network(c).filter(|n| n.netns.is_some())?;
    Some(n.interfaces.iter().map(f).sum())
}

/// Every measure, by name.
pub const MEASURES: &[Measure] = &[
    Measure {
        name: "cpu.usage",
        unit: Unit::Cores,
        description: "CPU used (cpu.stat usage_usec per second)",
        compute: |c, s| per_second(c.cpu.usage_seconds, c.stats_seconds(s.window)),
    },
    Measure {
        name: "cpu.usage_of_limit",
        unit: Unit::OfCeiling,
        description: "CPU used as a share of the cpu.max quota",
        compute: |c, s| {
            let limit = c.cpu.limit_cores.filter(|l| *l > 0.0)?;
            per_second(c.cpu.usage_seconds, c.stats_seconds(s.window))
                .map(|u| (u.value / limit).into())
        },
    },
    Measure {
        name: "cpu.usage_of_node",
        unit: Unit::OfCeiling,
        description: "CPU used as a share of all the node's CPUs",
        compute: |c, s| {
            let cpus = s.host.cpu.as_ref().map(|h| h.cpus).filter(|n| *n > 0)?;
            per_second(c.cpu.usage_seconds, c.stats_seconds(s.window))
                .map(|u| (u.value / cpus as f64).into())
        },
    },
    Measure {
        name: "cpu.throttled_periods",
        unit: Unit::Ratio,
        description: "enforcement periods in which the quota ran out (cpu.stat nr_throttled / nr_periods)",
        compute: |c, _| {
            let periods = c.cpu.periods.filter(|p| *p > 0)?;
            c.cpu.throttled_periods.map(|t| (t as f64 / periods as f64).into())
        },
    },
    Measure {
        name: "cpu.throttled_time",
        unit: Unit::Ratio,
        description: "share of the window the cgroup's tasks were held back by the quota (cpu.stat throttled_usec)",
        compute: |c, s| per_second(c.cpu.throttled_seconds, c.stats_seconds(s.window)),
    },
    Measure {
        name: "cpu.runq_p99",
        unit: Unit::Seconds,
        description: "99th percentile of single run-queue waits (runq probe)",
        compute: |c, _| p99(&c.cpu.runq_latency),
    },
    Measure {
        name: "cpu.runq_wait",
        unit: Unit::Cores,
        description: "time runnable tasks waited for a CPU, per second: the CPUs the cgroup would have used more without contention (runq probe)",
        compute: |c, s| per_second(c.cpu.runq_latency.as_ref().map(|l| l.sum_seconds), s.window),
    },
    Measure {
        name: "cpu.runq_wait_own_quota",
        unit: Unit::Cores,
        description: "time runnable tasks waited while their own cpu.max quota (or an ancestor's) was used up, per second (runq probe, blame)",
        compute: |c, s| {
            per_second(
                c.cpu.runq_blame.as_ref().map(|b| b.causes.own_quota),
                s.window,
            )
        },
    },
    Measure {
        name: "cpu.pressure",
        unit: Unit::Ratio,
        description: "share of the window some task stalled on CPU (cpu.pressure some)",
        compute: |c, s| some(&c.pressure.cpu, c.stats_seconds(s.window)),
    },
    Measure {
        name: "memory.usage_of_limit",
        unit: Unit::OfCeiling,
        description: "memory.current as a share of memory.max",
        compute: |c, _| {
            let m = c.memory.as_ref()?;
            let max = m.max_bytes.filter(|m| *m > 0)?;
            m.current_bytes.map(|cur| (cur as f64 / max as f64).into())
        },
    },
    Measure {
        name: "memory.current",
        unit: Unit::Bytes,
        description: "memory in use at the end of the window (memory.current)",
        compute: |c, _| c.memory.as_ref()?.current_bytes.map(|b| (b as f64).into()),
    },
    Measure {
        name: "memory.pressure",
        unit: Unit::Ratio,
        description: "share of the window some task stalled on memory (memory.pressure some)",
        compute: |c, s| some(&c.pressure.memory, c.stats_seconds(s.window)),
    },
    Measure {
        name: "memory.oom_kills",
        unit: Unit::Count,
        description: "processes OOM-killed in the window (oom probe)",
        compute: |c, _| c.memory.as_ref()?.oom_kills.as_ref().map(|k| (k.count as f64).into()),
    },
    Measure {
        name: "pids.usage_of_limit",
        unit: Unit::OfCeiling,
        description: "pids.current as a share of pids.max",
        compute: |c, _| {
            let p = c.pids.as_ref()?;
            p.max.filter(|m| *m > 0).map(|m| (p.current as f64 / m as f64).into())
        },
    },
    Measure {
        name: "io.pressure",
        unit: Unit::Ratio,
        description: "share of the window some task stalled on IO (io.pressure some)",
        compute: |c, s| some(&c.pressure.io, c.stats_seconds(s.window)),
    },
    Measure {
        name: "pressure.some",
        unit: Unit::Ratio,
        description: "the highest of the CPU, memory and IO stall shares of the window (PSI some)",
        compute: |c, s| {
            let p = &c.pressure;
            worst(
                [("cpu", &p.cpu), ("memory", &p.memory), ("io", &p.io)]
                    .into_iter()
                    .filter_map(|(r, p)| {
                        Some((some(p, c.stats_seconds(s.window))?.value, r.to_owned()))
                    }),
            )
        },
    },
    Measure {
        name: "io.read_iops",
        unit: Unit::PerSecond,
        description: "block reads per second, all devices (io.stat, else the blockio probe's completions)",
        compute: |c, s| iops(c, s, |d| (d.read_iops, d.completed.as_ref().map(|c| c.read.ops))),
    },
    Measure {
        name: "io.write_iops",
        unit: Unit::PerSecond,
        description: "block writes per second, all devices (io.stat, else the blockio probe's completions)",
        compute: |c, s| iops(c, s, |d| (d.write_iops, d.completed.as_ref().map(|c| c.write.ops))),
    },
    Measure {
        name: "io.iops_of_limit",
        unit: Unit::OfCeiling,
        description: "IOs per second as a share of the io.max riops/wiops limit, on the device and direction nearest to it",
        compute: |c, _| {
            of_limit(c, |d| [
                (d.read_iops, d.limit_read_iops),
                (d.write_iops, d.limit_write_iops),
            ])
        },
    },
    Measure {
        name: "io.bps_of_limit",
        unit: Unit::OfCeiling,
        description: "bytes per second as a share of the io.max rbps/wbps limit, on the device and direction nearest to it",
        compute: |c, s| {
            let span = c.stats_seconds(s.window);
            let rate = |b: Option<u64>| b.filter(|_| span > 0.0).map(|b| b as f64 / span);
            of_limit(c, |d| [
                (rate(d.read_bytes), d.limit_read_bps),
                (rate(d.write_bytes), d.limit_write_bps),
            ])
        },
    },
    Measure {
        name: "io.latency_p99",
        unit: Unit::Seconds,
        description: "99th percentile of block requests from queueing to completion, on the slowest device and operation (blockio probe)",
        compute: |c, _| {
            worst(devices(c).flat_map(|d| {
                let ops = d.latency.as_ref().map(|l| {
                    let PerOperation { read, write, discard, flush } = l;
                    [("read", read), ("write", write), ("discard", discard), ("flush", flush)]
                });
                ops.into_iter()
                    .flatten()
                    .filter(|(_, l)| l.count > 0)
                    .map(move |(op, l)| (l.p99_seconds, format!("{} {op}", device_name(d))))
            }))
        },
    },
    Measure {
        name: "io.device_busy",
        unit: Unit::Ratio,
        description: "share of the window the busiest device this cgroup used had requests in flight (/proc/diskstats io_ticks, the whole device)",
        compute: |c, s| {
            if s.window <= 0.0 {
                return None;
            }
            let used = |d: &IoDeviceSample| {
                let completed = d.completed.as_ref().map_or(0, |c| c.read.ops + c.write.ops);
                completed + d.read_ops.unwrap_or(0) + d.write_ops.unwrap_or(0) > 0
            };
            worst(devices(c).filter(|d| used(d)).filter_map(|d| {
                let disk = s.host.disks.iter().find(|k| Some(&k.name) == d.name.as_ref())?;
                Some((disk.busy_ms as f64 / 1e3 / s.window, disk.name.clone()))
            }))
        },
    },
    Measure {
        name: "net.tcp_rtt_p99",
        unit: Unit::Seconds,
        description: "99th percentile of the smoothed RTT of the cgroup's TCP connections (tcp probe)",
        compute: |c, _| p99(&network(c)?.tcp_rtt),
    },
    Measure {
        name: "net.tcp_connect_p99",
        unit: Unit::Seconds,
        description: "99th percentile of TCP connect latency, SYN sent to established (tcp probe)",
        compute: |c, _| p99(&network(c)?.tcp_connect_latency),
    },
    Measure {
        name: "net.tcp_connect_failures",
        unit: Unit::PerSecond,
        description: "TCP connects that failed (refused, timed out) per second (tcp probe)",
        compute: |c, s| per_second(network(c)?.tcp_connect_failures.map(|n| n as f64), s.window),
    },
    Measure {
        name: "net.tcp_retransmits",
        unit: Unit::PerSecond,
        description: "TCP segments retransmitted per second (tcp probe)",
        compute: |c, s| per_second(network(c)?.tcp_retransmits.map(|n| n as f64), s.window),
    },
    Measure {
        name: "net.tcp_retransmit_ratio",
        unit: Unit::Ratio,
        description: "retransmitted segments as a share of segments sent (the cgroup's network namespace, /proc/net/snmp)",
        compute: |c, _| {
            let tcp = network(c)?.tcp.as_ref()?;
            let out = tcp.out_segs.filter(|o| *o > 0)?;
            tcp.retrans_segs.map(|r| (r as f64 / out as f64).into())
        },
    },
    Measure {
        name: "net.drops",
        unit: Unit::PerSecond,
        description: "packets dropped per second: interfaces' rx/tx drops and listen-queue drops (the cgroup's network namespace)",
        compute: |c, s| {
            let dropped = interfaces(c, |i| i.rx_dropped + i.tx_dropped)?;
            let listen = network(c)?.tcp.as_ref().and_then(|t| t.listen_drops).unwrap_or(0);
            per_second(Some((dropped + listen) as f64), s.window)
        },
    },
    Measure {
        name: "net.rx",
        unit: Unit::BytesPerSecond,
        description: "bytes received per second on the interfaces of the cgroup's network namespace",
        compute: |c, s| per_second(interfaces(c, |i| i.rx_bytes).map(|b| b as f64), s.window),
    },
    Measure {
        name: "net.tx",
        unit: Unit::BytesPerSecond,
        description: "bytes sent per second on the interfaces of the cgroup's network namespace",
        compute: |c, s| per_second(interfaces(c, |i| i.tx_bytes).map(|b| b as f64), s.window),
    },
    Measure {
        name: "host.cpu.busy",
        unit: Unit::OfCeiling,
        description: "share of all the node's CPU time that was busy (/proc/stat)",
        compute: |c, s| {
            host(c, s.host.cpu.as_ref())?.busy_share().map(Value::from)
        },
    },
    Measure {
        name: "host.cpu.imbalance",
        unit: Unit::Ratio,
        description: "busiest CPU's busy share minus the idlest's (/proc/stat per CPU): load pinned to some CPUs",
        compute: |c, s| {
            let cpus = &host(c, s.host.cpu.as_ref())?.per_cpu_busy;
            let min = cpus.iter().map(|(_, b)| *b).min_by(f64::total_cmp)?;
            let (n, max) = cpus.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
            Some(Value {
                value: max - min,
                on: Some(format!("cpu{n}")),
            })
        },
    },
    Measure {
        name: "host.cpu.steal",
        unit: Unit::Ratio,
        description: "share of the node's CPU time the hypervisor gave to others (/proc/stat steal)",
        compute: |c, s| {
            host(c, s.host.cpu.as_ref())?.steal_share().map(Value::from)
        },
    },
    Measure {
        name: "host.cpu.pressure",
        unit: Unit::Ratio,
        description: "share of the window some task of the node stalled on CPU (/proc/pressure/cpu some)",
        compute: |c, s| host(c, some(&s.host.pressure.cpu, s.window)),
    },
    Measure {
        name: "host.memory.pressure",
        unit: Unit::Ratio,
        description: "share of the window some task of the node stalled on memory (/proc/pressure/memory some)",
        compute: |c, s| host(c, some(&s.host.pressure.memory, s.window)),
    },
    Measure {
        name: "host.io.pressure",
        unit: Unit::Ratio,
        description: "share of the window some task of the node stalled on IO (/proc/pressure/io some)",
        compute: |c, s| host(c, some(&s.host.pressure.io, s.window)),
    },
];

pub fn find(name: &str) -> Option<&'static Measure> {
    MEASURES.iter().find(|m| m.name == name)
}
