//! Human-readable rendering of a snapshot (`cgscope snapshot --format table`).

use std::fmt::Write as _;

use crate::{
    snapshot::{CgroupSample, Snapshot},
    text::Escaped,
};

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

/// One line per cgroup, the longest run-queue waits first. Paths and container
/// names are [escaped](crate::text).
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
        "{:>6} {:>6} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9}  {:<9} PATH",
        "CPU", "LIMIT", "THROTTLED", "MEM", "WAITS", "RUNQ-WAIT", "P50", "P99", "KIND"
    );
    let mut rows: Vec<_> = snapshot.cgroups.iter().collect();
    let wait = |c: &&CgroupSample| c.cpu.runq_latency.as_ref().map_or(0.0, |r| r.sum_seconds);
    rows.sort_by(|a, b| {
        wait(b)
            .total_cmp(&wait(a))
            .then_with(|| a.path.cmp(&b.path))
    });
    let dash = || "-".to_owned();
    for c in rows {
        let per_window = |s: f64| s / c.stats_seconds(snapshot.window_seconds).max(1e-9);
        let cpu = c
            .cpu
            .usage_seconds
            .map_or_else(dash, |s| format!("{:.2}", per_window(s)));
        let limit = c.cpu.limit_cores.map_or_else(dash, |l| format!("{l:.2}"));
        let throttled = match (c.cpu.throttled_periods, c.cpu.periods) {
            (Some(t), Some(p)) if p > 0 => format!("{:.0}%", 100.0 * t as f64 / p as f64),
            _ => dash(),
        };
        let mem = c.memory.as_ref().map_or_else(dash, |m| {
            m.working_set_bytes
                .or(m.current_bytes)
                .map_or_else(|| "-".into(), bytes)
        });
        let (count, sum, p50, p99) = match &c.cpu.runq_latency {
            Some(r) => (
                r.count.to_string(),
                duration(r.sum_seconds),
                duration(r.p50_seconds),
                duration(r.p99_seconds),
            ),
            None => (dash(), dash(), dash(), dash()),
        };
        let kind = serde_json::to_value(c.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let name = c
            .container
            .as_ref()
            .and_then(|k| k.name.as_deref())
            .map(|n| format!(" ({})", Escaped(n)))
            .unwrap_or_default();
        let removed = if c.removed { " (removed)" } else { "" };
        let _ = writeln!(
            out,
            "{cpu:>6} {limit:>6} {throttled:>9} {mem:>9} {count:>7} {sum:>9} {p50:>9} {p99:>9}  {kind:<9} {}{name}{removed}",
            Escaped(&c.path)
        );
    }
    out
}

/// Bytes with a binary unit.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::duration;
    use crate::{
        export::store::tests::{cgroup, snapshot},
        snapshot::ContainerSample,
    };

    #[test]
    fn names_are_escaped() {
        let mut c = cgroup(1, 1.0, &[1_000_000]);
        c.path = "/x\x1b]0;pwned\x07\u{202e}".into();
        c.container = Some(ContainerSample {
            name: Some("web\x1b[2J".into()),
            ..Default::default()
        });
        let table = super::render(&snapshot(1.0, vec![c]));
        assert!(
            table.contains(r"/x\x1b]0;pwned\x07\u{202e} (web\x1b[2J)"),
            "{table}"
        );
        assert!(!table
            .chars()
            .any(|c| c != '\n' && crate::text::is_escaped(c)));
    }

    #[test]
    fn byte_units() {
        assert_eq!(super::bytes(512), "512B");
        assert_eq!(super::bytes(33_554_432), "32.0MiB");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0.0), "0");
        assert_eq!(duration(2.5e-7), "250ns");
        assert_eq!(duration(1.25e-5), "12.5µs");
        assert_eq!(duration(0.0031), "3.1ms");
        assert_eq!(duration(2.0), "2.00s");
    }
}
