//! From two readings of a cgroup to one window: counters become deltas, gauges are
//! the value at the end, rates are deltas over the time between the readings. A
//! cgroup without a previous reading was created during the window: its counters all
//! belong to it. A counter that went backwards (impossible for one cgroup id, but a
//! kernel that re-creates an entry resets it) has no delta in that window (`None`):
//! its new value is the next window's baseline, and no wrapped difference is ever
//! reported.

use cgscope_common::blockio::dev_parts;

use crate::{
    cgroup::{
        io::{Device, DeviceNames},
        memory::working_set,
        pressure::Pressure,
        stats::{CgroupStats, MemoryStats},
    },
    histogram::LatencyWindow,
    probes::{
        oom::OomKill,
        reader::{BlockioWindow, TcpWindow},
    },
    snapshot::{
        Completed, CpuSample, IoDeviceSample, IoSample, LatencySummary, MemoryEventsSample,
        MemorySample, NetworkSample, OomKillsSample, OomVictimSample, PerOperation, PidsSample,
        PressureSample, PressureWindow, StatKind, MAX_OOM_VICTIMS, MEMORY_STAT,
    },
};

/// `now - before` of an optional counter; `None` if `now` is, or if the counter
/// went backwards.
fn delta(now: Option<u64>, before: Option<u64>) -> Option<u64> {
    now?.checked_sub(before.unwrap_or(0))
}

fn usec(v: Option<u64>) -> Option<f64> {
    v.map(|u| u as f64 * 1e-6)
}

pub fn cpu(now: &CgroupStats, before: Option<&CgroupStats>) -> CpuSample {
    let (n, b) = (&now.cpu, before.map(|b| b.cpu).unwrap_or_default());
    let d = |now: u64, then: u64| usec(now.checked_sub(then));
    CpuSample {
        usage_seconds: d(n.usage_usec, b.usage_usec),
        user_seconds: d(n.user_usec, b.user_usec),
        system_seconds: d(n.system_usec, b.system_usec),
        periods: delta(n.nr_periods, b.nr_periods),
        throttled_periods: delta(n.nr_throttled, b.nr_throttled),
        throttled_seconds: usec(delta(n.throttled_usec, b.throttled_usec)),
        bursts: delta(n.nr_bursts, b.nr_bursts),
        burst_seconds: usec(delta(n.burst_usec, b.burst_usec)),
        limit_cores: now.cpu_max.and_then(|m| m.cores()),
        burst_limit_seconds: usec(now.cpu_max_burst_usec),
        weight: now.cpu_weight,
        runq_latency: None,
        runq_blame: None,
    }
}

pub fn memory(now: &MemoryStats, before: Option<&MemoryStats>) -> MemorySample {
    let stat = now.stat.unwrap_or_default();
    let was = before.and_then(|b| b.stat).unwrap_or_default();
    let events = now.events.map(|e| {
        let b = before.and_then(|b| b.events).unwrap_or_default();
        MemoryEventsSample {
            low: delta(e.low, b.low),
            high: delta(e.high, b.high),
            max: delta(e.max, b.max),
            oom: delta(e.oom, b.oom),
            oom_kill: delta(e.oom_kill, b.oom_kill),
            oom_group_kill: delta(e.oom_group_kill, b.oom_group_kill),
        }
    });
    let mut out = MemorySample {
        current_bytes: Some(now.current),
        working_set_bytes: now.stat.map(|s| working_set(now.current, &s)),
        max_bytes: now.max,
        high_bytes: now.high,
        low_bytes: now.low,
        min_bytes: now.min,
        peak_bytes: now.peak,
        swap_current_bytes: now.swap_current,
        swap_max_bytes: now.swap_max,
        events,
        oom_kills: None, // set by the oom probe
        ..MemorySample::default()
    };
    let values = stat.values().iter().zip(was.values());
    for (key, (&now, &was)) in MEMORY_STAT.iter().zip(values) {
        *(key.field_mut)(&mut out) = match key.kind {
            StatKind::Events => delta(now, was),
            StatKind::State | StatKind::Bytes => now,
        };
    }
    out
}

/// Events per second over a window of `seconds` (0 for an empty window).
fn rate(events: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    }
}

/// Adds the blockio probe's window to a cgroup's devices: every device it lists
/// (from `io.stat` or from the probe) gets the probe's per-operation counts and
/// latencies, zero where the probe saw no request.
pub fn blockio(
    sample: &mut Option<IoSample>,
    windows: &[BlockioWindow],
    seconds: f64,
    names: &mut DeviceNames,
) {
    if sample.is_none() && windows.is_empty() {
        return;
    }
    let devices = &mut sample.get_or_insert_with(IoSample::default).devices;
    for w in windows {
        let (major, minor) = dev_parts(w.dev);
        let device = Device { major, minor };
        let name = device.to_string();
        let entry = match devices.iter().position(|d| d.device == name) {
            Some(i) => &mut devices[i],
            None => {
                devices.push(IoDeviceSample {
                    name: names.name(device).map(str::to_owned),
                    device: name,
                    ..IoDeviceSample::default()
                });
                devices.last_mut().expect("just pushed")
            }
        };
        let completed = entry.completed.get_or_insert_with(Default::default);
        if let Some(c) = completed.get_mut(w.op) {
            *c = Completed {
                ops: w.ios,
                bytes: w.bytes,
                iops: rate(w.ios, seconds),
            };
        }
        let latency = entry.latency.get_or_insert_with(empty_latencies);
        if let Some(l) = latency.get_mut(w.op) {
            *l = LatencySummary::from(&w.queue);
        }
        let device_latency = entry.device_latency.get_or_insert_with(empty_latencies);
        if let Some(l) = device_latency.get_mut(w.op) {
            *l = LatencySummary::from(&w.device);
        }
    }
    for d in devices.iter_mut() {
        d.completed.get_or_insert_with(Default::default);
        d.latency.get_or_insert_with(empty_latencies);
        d.device_latency.get_or_insert_with(empty_latencies);
    }
}

/// The tcp probe's window (`None`: nothing recorded), into a cgroup's network sample.
pub fn tcp(network: &mut NetworkSample, tcp: Option<&TcpWindow>) {
    let summary = |f: fn(&TcpWindow) -> &LatencyWindow| {
        Some(tcp.map_or_else(LatencySummary::empty, |t| LatencySummary::from(f(t))))
    };
    let count = |f: fn(&TcpWindow) -> u64| Some(tcp.map_or(0, f));
    network.tcp_rtt = summary(|t| &t.rtt);
    network.tcp_connect_latency = summary(|t| &t.connect);
    network.tcp_connect_failures = count(|t| t.connect_failures);
    network.tcp_retransmits = count(|t| t.retransmits);
    network.tcp_resets_sent = count(|t| t.resets_sent);
    network.tcp_resets_received = count(|t| t.resets_received);
}

/// The oom probe's kills of one window, as the snapshot shows them.
pub fn oom_kills(kills: &[OomKill]) -> OomKillsSample {
    OomKillsSample {
        count: kills.len() as u64,
        victims: kills
            .iter()
            .take(MAX_OOM_VICTIMS)
            .map(|k| OomVictimSample {
                pid: k.pid,
                command: k.command.clone(),
                cgroup_id: k.cgroup_id,
            })
            .collect(),
    }
}

fn empty_latencies() -> PerOperation<LatencySummary> {
    let empty = LatencySummary::empty;
    PerOperation {
        read: empty(),
        write: empty(),
        discard: empty(),
        flush: empty(),
    }
}

pub fn io(
    now: &CgroupStats,
    before: Option<&CgroupStats>,
    seconds: f64,
    names: &mut DeviceNames,
) -> Option<IoSample> {
    let devices = now.io.as_ref()?;
    let devices = devices
        .iter()
        .map(|(device, n)| {
            let b = before
                .and_then(|b| b.io.as_ref())
                .and_then(|io| io.iter().find(|(d, _)| d == device))
                .map(|(_, s)| *s)
                .unwrap_or_default();
            let limit = now
                .io_max
                .iter()
                .find(|(d, _)| d == device)
                .map(|(_, m)| *m)
                .unwrap_or_default();
            let (read_ops, write_ops) = (n.rios.checked_sub(b.rios), n.wios.checked_sub(b.wios));
            IoDeviceSample {
                device: device.to_string(),
                name: names.name(*device).map(str::to_owned),
                read_ops,
                write_ops,
                read_bytes: n.rbytes.checked_sub(b.rbytes),
                write_bytes: n.wbytes.checked_sub(b.wbytes),
                discard_ops: n.dios.checked_sub(b.dios),
                discard_bytes: n.dbytes.checked_sub(b.dbytes),
                read_iops: read_ops.map(|ops| rate(ops, seconds)),
                write_iops: write_ops.map(|ops| rate(ops, seconds)),
                limit_read_bps: limit.rbps,
                limit_write_bps: limit.wbps,
                limit_read_iops: limit.riops,
                limit_write_iops: limit.wiops,
                ..IoDeviceSample::default()
            }
        })
        .collect();
    Some(IoSample { devices })
}

pub fn pids(now: &CgroupStats, before: Option<&CgroupStats>) -> Option<PidsSample> {
    let p = now.pids?;
    let b = before
        .and_then(|b| b.pids)
        .and_then(|p| p.events)
        .unwrap_or_default();
    Some(PidsSample {
        current: p.current,
        max: p.max,
        max_events: p.events.and_then(|e| delta(e.max, b.max)),
    })
}

/// One PSI file's window.
pub fn pressure_window(
    now: Option<&Pressure>,
    before: Option<&Pressure>,
) -> Option<PressureWindow> {
    let now = now?;
    let total = |p: Option<&Pressure>, full: bool| {
        p.and_then(|p| if full { p.full } else { p.some })
            .map(|s| s.total_usec)
    };
    Some(PressureWindow {
        some_seconds: usec(delta(total(Some(now), false), total(before, false))),
        full_seconds: usec(delta(total(Some(now), true), total(before, true))),
        some_avg10: now.some.map(|s| s.avg10),
        full_avg10: now.full.map(|s| s.avg10),
    })
}

pub fn pressure(now: &CgroupStats, before: Option<&CgroupStats>) -> PressureSample {
    let w = |f: fn(&CgroupStats) -> Option<&Pressure>| pressure_window(f(now), before.and_then(f));
    PressureSample {
        cpu: w(|s| s.cpu_pressure.as_ref()),
        memory: w(|s| s.memory_pressure.as_ref()),
        io: w(|s| s.io_pressure.as_ref()),
        irq: w(|s| s.irq_pressure.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{
        cpu::CpuStat,
        io::{Device, IoMax, IoStat},
        pressure::Stall,
    };

    #[test]
    fn counters_are_deltas_and_gauges_are_current() {
        let dev = Device { major: 7, minor: 0 };
        let before = CgroupStats {
            cpu: CpuStat {
                usage_usec: 1_000_000,
                nr_periods: Some(10),
                nr_throttled: Some(5),
                ..Default::default()
            },
            io: Some(vec![(
                dev,
                IoStat {
                    rios: 100,
                    rbytes: 4096,
                    ..Default::default()
                },
            )]),
            cpu_pressure: Some(Pressure {
                some: Some(Stall {
                    total_usec: 500_000,
                    avg10: 1.0,
                }),
                full: None,
            }),
            ..Default::default()
        };
        let mut now = before.clone();
        now.cpu.usage_usec = 1_500_000;
        now.cpu.nr_periods = Some(20);
        now.cpu.nr_throttled = Some(15);
        now.io = Some(vec![(
            dev,
            IoStat {
                rios: 300,
                rbytes: 8192,
                ..Default::default()
            },
        )]);
        now.io_max = vec![(
            dev,
            IoMax {
                riops: Some(100),
                ..Default::default()
            },
        )];
        now.cpu_pressure = Some(Pressure {
            some: Some(Stall {
                total_usec: 750_000,
                avg10: 9.5,
            }),
            full: None,
        });

        let c = cpu(&now, Some(&before));
        assert_eq!(c.usage_seconds, Some(0.5));
        assert_eq!((c.periods, c.throttled_periods), (Some(10), Some(10)));
        assert_eq!(c.throttled_seconds, None);
        let io = io(&now, Some(&before), 2.0, &mut DeviceNames::default()).unwrap();
        assert_eq!(io.devices[0].device, "7:0");
        assert_eq!(
            (io.devices[0].read_ops, io.devices[0].read_iops),
            (Some(200), Some(100.0))
        );
        assert_eq!(
            (io.devices[0].read_bytes, io.devices[0].limit_read_iops),
            (Some(4096), Some(100))
        );
        assert!(io.devices[0].completed.is_none(), "no probe data yet");

        // The probe's requests join the io.stat device, or add one io.stat lacks.
        let mut io = Some(io);
        let windows = [
            BlockioWindow::requests(7 << 20, 0, 50),
            BlockioWindow::requests(8 << 20 | 16, 1, 4),
        ];
        blockio(&mut io, &windows, 2.0, &mut DeviceNames::default());
        let devices = &io.unwrap().devices;
        assert_eq!(devices.len(), 2);
        let loop0 = devices[0].completed.as_ref().unwrap();
        assert_eq!(
            (loop0.read.ops, loop0.read.iops, loop0.write.ops),
            (50, 25.0, 0)
        );
        assert_eq!(devices[1].device, "8:16");
        assert_eq!(devices[1].read_ops, None, "not in io.stat: null, not 0");
        assert_eq!(devices[1].completed.as_ref().unwrap().write.bytes, 4 * 4096);
        assert_eq!(devices[1].latency.as_ref().unwrap().write.count, 0);
        let mut none = None;
        blockio(&mut none, &[], 2.0, &mut DeviceNames::default());
        assert!(none.is_none(), "no io.stat and no requests: no io object");
        let p = pressure(&now, Some(&before)).cpu.unwrap();
        assert_eq!(
            (p.some_seconds, p.some_avg10, p.full_seconds),
            (Some(0.25), Some(9.5), None)
        );

        let fresh = cpu(&now, None);
        assert_eq!(
            fresh.usage_seconds,
            Some(1.5),
            "a new cgroup's usage belongs to the window"
        );

        // Counters that went backwards: no delta, never a wrapped one.
        let back = cpu(&before, Some(&now));
        assert_eq!((back.usage_seconds, back.periods), (None, None));
        let io = super::io(&before, Some(&now), 2.0, &mut DeviceNames::default()).unwrap();
        assert_eq!(
            (io.devices[0].read_ops, io.devices[0].read_iops),
            (None, None)
        );
        let p = pressure(&before, Some(&now)).cpu.unwrap();
        assert_eq!(p.some_seconds, None);
    }
}
