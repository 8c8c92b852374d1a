//! Human-readable rendering of a snapshot (`cgscope snapshot --format table`).

use std::fmt::Write as _;

use crate::sample::Snapshot;

/// A duration in seconds with a unit that keeps three significant digits.
pub fn duration(seconds: f64) -> String {
    if seconds == 0.0 {
        "0".into()
    } else if seconds < 1e-6 {
        format!("{:.0}ns", seconds * 1e9)
    } else if seconds < 1e-3 {
        format!("{:.1}µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.1}ms", seconds * 1e3)
    } else {
        format!("{seconds:.2}s")
    }
}

/// One line per cgroup, the busiest run queues first.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kernel {}  cgroup {} at {}  window {:.1}s",
        snapshot.host.kernel,
        snapshot.host.cgroup_mode.as_str(),
        snapshot.host.cgroup_root,
        snapshot.window_seconds
    );
    for probe in snapshot.probes.iter().filter(|p| !p.attached) {
        let _ = writeln!(
            out,
            "probe {} not attached: {}",
            probe.name,
            probe.error.as_deref().unwrap_or("?")
        );
    }
    let _ = writeln!(
        out,
        "{:>8} {:>9} {:>10} {:>9} {:>9} {:>9}  PATH",
        "CPU", "RUNQ-WAIT", "WAITS", "P50", "P99", "MAX"
    );
    let mut rows: Vec<_> = snapshot.cgroups.iter().collect();
    let wait = |c: &&crate::sample::CgroupSample| {
        c.cpu.runq_latency.as_ref().map_or(0.0, |r| r.sum_seconds)
    };
    rows.sort_by(|a, b| {
        wait(b)
            .total_cmp(&wait(a))
            .then_with(|| a.path.cmp(&b.path))
    });
    for c in rows {
        let cpu = c.cpu.usage_seconds.map_or("-".into(), |s| {
            format!("{:.2}", s / snapshot.window_seconds.max(1e-9))
        });
        let (sum, count, p50, p99, max) = match &c.cpu.runq_latency {
            Some(r) => (
                duration(r.sum_seconds),
                r.count.to_string(),
                duration(r.p50_seconds),
                duration(r.p99_seconds),
                duration(r.max_bucket_seconds),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let removed = if c.removed { " (removed)" } else { "" };
        let _ = writeln!(
            out,
            "{cpu:>8} {sum:>9} {count:>10} {p50:>9} {p99:>9} {max:>9}  {}{removed}",
            c.path
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations() {
        assert_eq!(duration(0.0), "0");
        assert_eq!(duration(2.5e-7), "250ns");
        assert_eq!(duration(1.25e-5), "12.5µs");
        assert_eq!(duration(0.0031), "3.1ms");
        assert_eq!(duration(2.0), "2.00s");
    }
}
