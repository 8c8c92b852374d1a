//! What no true window can exceed: a value beyond it comes from a broken baseline
//! and is refused, not shown.

use super::{CgroupSample, LatencySummary, PerOperation};

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
}
