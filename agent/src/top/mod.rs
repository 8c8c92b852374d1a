//! `cgscope top`: the node's containers (or pods) in one table, one row each, sorted
//! by any column, refreshed every window; a row's details with its latency
//! histograms. The columns are playbook [measures](crate::measure): the
//! numbers `top` shows are the ones the playbooks judge. `--once` (and any stdout
//! that is not a terminal) prints the table once as plain text.

pub mod ui;

use std::fmt::Write as _;

use crate::{
    measure::{self, targets, Measure, Scope, Unit},
    snapshot::{CgroupKind, CgroupSample, LatencySummary, RunqBlame, Snapshot},
    text::escape,
};

/// A column: a title and the measure it shows.
pub struct Column {
    pub title: &'static str,
    pub measure: &'static str,
    pub width: usize,
}

/// The columns, left to right; the first column (NAME) is not a measure.
pub const COLUMNS: &[Column] = &[
    Column {
        title: "CPU",
        measure: "cpu.usage",
        width: 10,
    },
    Column {
        title: "THROTTLED",
        measure: "cpu.throttled_time",
        width: 10,
    },
    Column {
        title: "RUNQ-P99",
        measure: "cpu.runq_p99",
        width: 9,
    },
    Column {
        title: "MEM",
        measure: "memory.current",
        width: 8,
    },
    Column {
        title: "MEM/LIM",
        measure: "memory.usage_of_limit",
        width: 8,
    },
    Column {
        title: "PSI",
        measure: "pressure.some",
        width: 6,
    },
    Column {
        title: "R-IOPS",
        measure: "io.read_iops",
        width: 8,
    },
    Column {
        title: "W-IOPS",
        measure: "io.write_iops",
        width: 8,
    },
    Column {
        title: "IO-P99",
        measure: "io.latency_p99",
        width: 8,
    },
    Column {
        title: "RX",
        measure: "net.rx",
        width: 10,
    },
    Column {
        title: "TX",
        measure: "net.tx",
        width: 10,
    },
    Column {
        title: "RTT-P99",
        measure: "net.tcp_rtt_p99",
        width: 8,
    },
];

/// Width of the NAME column.
pub const NAME_WIDTH: usize = 36;

/// What is sorted on: NAME (`None`) or a column of [`COLUMNS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub column: Option<usize>,
    /// Highest first (for NAME: Z to A).
    pub descending: bool,
}

impl Sort {
    /// By the column titled `title` (case-insensitive, or its measure's name).
    pub fn by(title: &str) -> Result<Self, String> {
        if title.eq_ignore_ascii_case("name") {
            return Ok(Self {
                column: None,
                descending: false,
            });
        }
        COLUMNS
            .iter()
            .position(|c| c.title.eq_ignore_ascii_case(title) || c.measure == title)
            .map(|i| Self {
                column: Some(i),
                descending: true,
            })
            .ok_or_else(|| {
                let titles: Vec<&str> = COLUMNS.iter().map(|c| c.title).collect();
                format!("no column {title:?}: NAME, {}", titles.join(", "))
            })
    }

    /// The next column to the right (`step` 1) or left (-1), wrapping.
    pub fn moved(self, step: isize) -> Self {
        let n = COLUMNS.len() as isize + 1;
        let at = self.column.map_or(0, |c| c as isize + 1);
        let to = (at + step).rem_euclid(n);
        Self {
            column: (to > 0).then(|| to as usize - 1),
            descending: to > 0,
        }
    }
}

/// One row: a cgroup of the window and its columns' values.
pub struct Row<'a> {
    pub cgroup: &'a CgroupSample,
    pub name: String,
    pub values: Vec<Option<f64>>,
}

fn measure_of(c: &Column) -> &'static Measure {
    // COLUMNS name only measures that exist (tested).
    measure::find(c.measure).unwrap_or(&measure::MEASURES[0])
}

/// The name a row shows: namespace/pod[/container] for Kubernetes, the container's
/// name, else the cgroup path. Exact: [`line`] escapes it.
pub fn display_name(c: &CgroupSample) -> String {
    let Some(m) = &c.container else {
        return c.path.clone();
    };
    match (&m.namespace, &m.pod, &m.name) {
        (Some(ns), Some(pod), Some(name)) if m.kind == CgroupKind::Container => {
            format!("{ns}/{pod}/{name}")
        }
        (Some(ns), _, Some(name)) => format!("{ns}/{name}"),
        (_, _, Some(name)) => name.clone(),
        _ => c.path.clone(),
    }
}

/// The rows of a window: the containers (leaf cgroups) or the pods, sorted.
pub fn rows(snapshot: &Snapshot, pods: bool, sort: Sort) -> Vec<Row<'_>> {
    let scope = Scope {
        window: snapshot.window_seconds,
        host: &snapshot.host.window,
    };
    let chosen: Vec<&CgroupSample> = if pods {
        snapshot
            .cgroups
            .iter()
            .filter(|c| c.kind == CgroupKind::Pod)
            .collect()
    } else {
        targets(snapshot, None)
    };
    let mut rows: Vec<Row> = chosen
        .into_iter()
        .map(|c| Row {
            cgroup: c,
            name: display_name(c),
            values: COLUMNS
                .iter()
                .map(|col| (measure_of(col).compute)(c, &scope).map(|v| v.value))
                .collect(),
        })
        .collect();
    rows.sort_by(|a, b| {
        let order = match sort.column {
            None => a.name.cmp(&b.name),
            // Rows without a value last, whichever the direction.
            Some(i) => match (a.values[i], b.values[i]) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Greater,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (None, None) => std::cmp::Ordering::Equal,
            },
        };
        let order = if sort.descending {
            order.reverse()
        } else {
            order
        };
        order.then_with(|| a.cgroup.path.cmp(&b.cgroup.path))
    });
    rows
}

/// A column's value as the table shows it (`-`: no data).
pub fn cell(column: usize, value: Option<f64>) -> String {
    let m = measure_of(&COLUMNS[column]);
    match (value, m.unit) {
        (None, _) => "-".into(),
        (Some(v), Unit::Cores) => format!("{:.0}%", v * 100.0),
        (Some(v), unit) => unit.show(v),
    }
}

/// The node's line above the table.
pub fn summary(snapshot: &Snapshot) -> String {
    let host = &snapshot.host.window;
    let mut out = format!("kernel {}", snapshot.host.kernel);
    if let Some(cpu) = &host.cpu {
        let busy = cpu.busy_share().unwrap_or(0.0);
        let _ = write!(out, "  {} CPUs, {:.0}% busy", cpu.cpus, busy * 100.0);
    }
    let psi = |p: &Option<crate::snapshot::PressureWindow>| {
        p.as_ref()
            .and_then(|p| p.some_share(snapshot.window_seconds))
            .map_or("-".into(), |s| format!("{:.0}%", s * 100.0))
    };
    let p = &host.pressure;
    let _ = write!(
        out,
        "  PSI cpu {} mem {} io {}  window {:.1}s",
        psi(&p.cpu),
        psi(&p.memory),
        psi(&p.io),
        snapshot.window_seconds
    );
    out
}

/// The header line of the table, the sorted column marked.
pub fn header(sort: Sort) -> String {
    let mark = |on: bool| match (on, sort.descending) {
        (false, _) => ' ',
        (true, true) => '▼',
        (true, false) => '▲',
    };
    let mut out = format!(
        "{:<w$}",
        format!("NAME{}", mark(sort.column.is_none())),
        w = NAME_WIDTH
    );
    for (i, c) in COLUMNS.iter().enumerate() {
        let title = format!("{}{}", c.title, mark(sort.column == Some(i)));
        let _ = write!(out, " {title:>w$}", w = c.width);
    }
    out
}

/// One row as a line of the table; the name [escaped](crate::text), its start cut
/// if it is too long.
pub fn line(row: &Row) -> String {
    let mut name = escape(&row.name).into_owned();
    if name.chars().count() > NAME_WIDTH {
        let tail: String = name.chars().rev().take(NAME_WIDTH - 1).collect();
        name = format!("…{}", tail.chars().rev().collect::<String>());
    }
    let mut out = format!("{name:<NAME_WIDTH$}");
    for (i, c) in COLUMNS.iter().enumerate() {
        let _ = write!(out, " {:>w$}", cell(i, row.values[i]), w = c.width);
    }
    out
}

/// The whole table as text (`--once`).
pub fn text(snapshot: &Snapshot, pods: bool, sort: Sort) -> String {
    let mut out = summary(snapshot);
    out.push('\n');
    out.push_str(&header(sort));
    out.push('\n');
    let rows = rows(snapshot, pods, sort);
    if rows.is_empty() {
        out.push_str(if pods {
            "(no pods)\n"
        } else {
            "(no cgroups)\n"
        });
    }
    for row in &rows {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// A latency histogram as bar lines: `≤ upper  bar  count`, `width` characters of
/// bar for the largest count.
pub fn histogram_lines(title: &str, l: &LatencySummary, width: usize) -> Vec<String> {
    let mut out = vec![format!(
        "{title}: {} in the window, p50 {}, p99 {}",
        l.count,
        crate::table::duration(l.p50_seconds),
        crate::table::duration(l.p99_seconds)
    )];
    let octaves = l.histogram.octaves();
    let max = octaves.iter().map(|o| o.1).max().unwrap_or(0).max(1);
    for (upper, count) in octaves {
        let n = (count as f64 / max as f64 * width as f64).ceil() as usize;
        out.push(format!(
            "  ≤{:>8} {:<width$} {count}",
            crate::table::duration(upper),
            "█".repeat(n)
        ));
    }
    out
}

/// Who held the CPU while the cgroup waited: the causes over a millisecond, longest
/// first, then the named culprits; nothing if it did not wait.
pub fn blame_lines(blame: &RunqBlame) -> Vec<String> {
    let mut causes: Vec<(&str, f64)> = blame
        .causes
        .named()
        .into_iter()
        .filter(|(_, s)| *s >= 0.001)
        .collect();
    if causes.is_empty() {
        return Vec::new();
    }
    causes.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = causes.iter().map(|(_, s)| s).sum();
    let mut out = vec![format!(
        "who held the CPU while it waited ({} in all):",
        crate::table::duration(total)
    )];
    for (cause, seconds) in causes {
        out.push(format!(
            "  {cause:<17} {:>8}",
            crate::table::duration(seconds)
        ));
    }
    for c in &blame.culprits {
        let name = c.name.as_deref().or(c.pod.as_deref()).unwrap_or("");
        out.push(format!(
            "  {:>8}  {} {}",
            crate::table::duration(c.seconds),
            escape(name),
            escape(&c.path)
        ));
    }
    out
}

/// The latency histograms of a cgroup: run queue, the slowest device's reads and
/// writes, TCP RTT and connect.
pub fn histograms(c: &CgroupSample, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |lines: Vec<String>| {
        if !lines.is_empty() {
            out.extend(lines);
            out.push(String::new());
        }
    };
    let hist = |title: String, l: Option<&LatencySummary>| {
        l.filter(|l| l.count > 0)
            .map(|l| histogram_lines(&title, l, width))
            .unwrap_or_default()
    };
    add(hist(
        "run-queue latency".into(),
        c.cpu.runq_latency.as_ref(),
    ));
    add(c
        .cpu
        .runq_blame
        .as_ref()
        .map(blame_lines)
        .unwrap_or_default());
    for d in c.io.iter().flat_map(|io| &io.devices) {
        let name = escape(d.name.as_deref().unwrap_or(&d.device));
        if let Some(l) = &d.latency {
            add(hist(format!("{name} read latency"), Some(&l.read)));
            add(hist(format!("{name} write latency"), Some(&l.write)));
        }
    }
    if let Some(n) = &c.network {
        add(hist("TCP RTT".into(), n.tcp_rtt.as_ref()));
        add(hist(
            "TCP connect latency".into(),
            n.tcp_connect_latency.as_ref(),
        ));
    }
    if out.is_empty() {
        out.push("no latency recorded in this window (probes not attached, or idle)".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::store::tests::{cgroup, snapshot};

    #[test]
    fn columns_name_real_measures() {
        for c in COLUMNS {
            assert!(measure::find(c.measure).is_some(), "{}", c.measure);
            assert!(c.title.len() < c.width, "{} fits its column", c.title);
        }
    }

    #[test]
    fn sorting_moves_and_wraps() {
        let s = Sort::by("cpu").unwrap();
        assert_eq!(
            s,
            Sort {
                column: Some(0),
                descending: true
            }
        );
        assert_eq!(s.moved(-1), Sort::by("name").unwrap());
        assert_eq!(
            Sort::by("name").unwrap().moved(-1).column,
            Some(COLUMNS.len() - 1)
        );
        assert_eq!(Sort::by("io.latency_p99").unwrap().column, Some(8));
        assert!(Sort::by("nope").unwrap_err().contains("RTT-P99"));
    }

    #[test]
    fn rows_sort_with_missing_values_last() {
        let with_usage = |id: u64, usage: Option<f64>| {
            let mut c = cgroup(id, 1.0, &[1_000_000, 30_000_000]);
            c.cpu.usage_seconds = usage;
            c
        };
        let snap = snapshot(
            100.0,
            vec![
                with_usage(1, Some(2.0)),
                with_usage(2, None),
                with_usage(3, Some(9.0)),
            ],
        );
        let rows = rows(&snap, false, Sort::by("cpu").unwrap());
        assert_eq!(rows[0].cgroup.path, "/c3");
        assert!(!rows.is_empty());
        let cpu: Vec<Option<f64>> = rows.iter().map(|r| r.values[0]).collect();
        let firsts: Vec<f64> = cpu.iter().map_while(|v| *v).collect();
        assert!(firsts.windows(2).all(|w| w[0] >= w[1]), "{cpu:?}");
        assert!(cpu[firsts.len()..].iter().all(Option::is_none));
        let t = text(&snap, false, Sort::by("cpu").unwrap());
        assert!(t.lines().nth(1).unwrap().contains("CPU▼"));
        assert_eq!(t.lines().count(), rows.len() + 2);
    }

    #[test]
    fn names_are_escaped_before_they_are_cut() {
        let mut c = cgroup(1, 1.0, &[1_000_000]);
        c.path = "/t/\x1b]0;pwned\x07".into();
        let long = format!("/t/{}\u{202e}end", "x".repeat(NAME_WIDTH));
        let mut d = cgroup(2, 1.0, &[1_000_000]);
        d.path = long;
        let t = text(&snapshot(1.0, vec![c, d]), false, Sort::by("name").unwrap());
        assert!(t.contains(r"/t/\x1b]0;pwned\x07 "), "{t}");
        assert!(t.contains(r"\u{202e}end "), "{t}");
        assert!(!t.chars().any(|c| c != '\n' && crate::text::is_escaped(c)));
    }

    #[test]
    fn histogram_bars_per_power_of_two() {
        let c = cgroup(1, 1.0, &[1_000_000, 1_100_000, 30_000_000]);
        let lines = histograms(&c, 10);
        assert!(
            lines[0].starts_with("run-queue latency: 3 in the window"),
            "{lines:?}"
        );
        let bars: Vec<&String> = lines.iter().filter(|l| l.contains('█')).collect();
        assert_eq!(bars.len(), 2, "{lines:?}");
        assert!(bars[0].contains("██████████ 2"), "{lines:?}");
        assert!(bars[1].ends_with(" 1"), "{lines:?}");
    }
}
