//! Evaluating a playbook on one window: which cgroups it examines, its findings
//! (worst first), and the report in text, Markdown or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Examine, Playbook, Rank};
use crate::{
    cgroup::tree::under,
    measure::{self, selects, targets, Scope, Unit},
    snapshot::{CgroupKind, CgroupSample, RunqBlame, Snapshot},
    text::{escape, markdown_cell, markdown_code, shell_word, Escaped},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warning,
    Critical,
}

/// Another cgroup's CPU use in the same window.
#[derive(Debug, Clone, Serialize)]
pub struct Neighbour {
    pub path: String,
    pub name: Option<String>,
    pub cpu_cores: f64,
    /// Seconds of the examined cgroup's wait during which this one held its CPU, as
    /// the runq probe split the wait in the kernel; `null` where that split is not
    /// measured (blame off): then the neighbours are the busiest others only.
    pub held_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub path: String,
    /// Container or pod name, when the runtime gave one.
    pub name: Option<String>,
    pub finding: String,
    pub measure: String,
    pub value: f64,
    /// Where the value was found (a device and operation, a CPU), for measures over
    /// several.
    pub on: Option<String>,
    /// The value with its unit, and the threshold it crossed (or stayed under).
    pub evidence: String,
    pub means: String,
    pub next: String,
    pub neighbours: Vec<Neighbour>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub playbook: String,
    pub summary: String,
    pub window_seconds: f64,
    /// cgroups examined.
    pub examined: usize,
    /// Checks that could not be evaluated (no data: controller or probe missing).
    pub no_data: Vec<String>,
    /// Worst first; `ok` results are left out.
    pub findings: Vec<Finding>,
    /// Every value computed, highest first, for playbooks that report them all
    /// (`readings = true`); empty otherwise.
    pub readings: Vec<Reading>,
}

/// One measure of one cgroup, finding or not.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub path: String,
    pub name: Option<String>,
    pub measure: String,
    pub value: f64,
    pub on: Option<String>,
    /// The value with its unit.
    pub shown: String,
    /// `1 - value`, for shares of a limit or capacity.
    pub headroom: Option<f64>,
}

fn label(c: &CgroupSample) -> Option<String> {
    c.container.as_ref().and_then(|m| m.name.clone())
}

/// What to put for `{target}` in the next command: the container id, else the
/// path, as one shell word (the path is the container's choice).
fn selector_of(c: &CgroupSample) -> String {
    let selector = c
        .container
        .as_ref()
        .and_then(|m| m.id.as_deref())
        .unwrap_or(&c.path);
    shell_word(selector).into_owned()
}

/// The parent of a cgroup path (`None` for the root).
fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(i) if i > 0 => Some(&path[..i]),
        _ => None,
    }
}

/// The cgroups `playbook` examines: [`targets`] for leaves; for the top, the selected
/// cgroups (the root without a selector) and their children.
pub fn examined<'a>(
    playbook: &Playbook,
    snapshot: &'a Snapshot,
    selector: Option<&str>,
) -> Vec<&'a CgroupSample> {
    if playbook.examine == Examine::Leaves {
        return targets(snapshot, selector);
    }
    let chosen = |c: &CgroupSample| match selector {
        Some(s) => selects(c, s),
        None => c.kind == CgroupKind::Root,
    };
    let tops: Vec<&str> = snapshot
        .cgroups
        .iter()
        .filter(|c| chosen(c))
        .map(|c| c.path.as_str())
        .collect();
    snapshot
        .cgroups
        .iter()
        .filter(|c| {
            tops.contains(&c.path.as_str()) || parent(&c.path).is_some_and(|p| tops.contains(&p))
        })
        .collect()
}

/// Evaluates `playbook` on the `examined` cgroups of `snapshot`.
pub fn evaluate(playbook: &Playbook, snapshot: &Snapshot, examined: &[&CgroupSample]) -> Report {
    let window = snapshot.window_seconds;
    let scope = Scope {
        window,
        host: &snapshot.host.window,
    };
    // Where noisy neighbours are looked for: every leaf of the node (the examined
    // cgroups are leaves too), or for the top, the cgroups examined.
    let candidates = match playbook.examine {
        Examine::Leaves => targets(snapshot, None),
        Examine::Top => examined.to_vec(),
    };
    let mut findings = Vec::new();
    let mut readings = Vec::new();
    let mut no_data = Vec::new();
    for check in &playbook.checks {
        let Some(m) = measure::find(&check.measure) else {
            continue; // parse() rejects unknown measures
        };
        let mut evaluated = false;
        for c in examined {
            let Some(measure::Value { value, on }) = (m.compute)(c, &scope) else {
                continue;
            };
            evaluated = true;
            if playbook.readings {
                readings.push(Reading {
                    path: c.path.clone(),
                    name: label(c),
                    measure: m.name.to_owned(),
                    value,
                    on: on.clone(),
                    shown: m.unit.show(value),
                    headroom: (m.unit == Unit::OfCeiling).then_some(1.0 - value),
                });
            }
            let severity = if value >= check.critical {
                Severity::Critical
            } else if value >= check.warn {
                Severity::Warning
            } else {
                continue;
            };
            let threshold = match severity {
                Severity::Critical => check.critical,
                _ => check.warn,
            };
            // A wait's neighbours are who held the CPU during it, where measured;
            // otherwise (blame off, or a measure of the node) the busiest others.
            let waited = m.name.starts_with("cpu.runq");
            let neighbours = match (check.neighbours, &c.cpu.runq_blame) {
                (false, _) => Vec::new(),
                (true, Some(blame)) if waited => culprits(snapshot, window, blame),
                (true, _) => busiest_others(&candidates, window, c),
            };
            findings.push(Finding {
                severity,
                path: c.path.clone(),
                name: label(c),
                finding: check.finding.clone(),
                measure: m.name.to_owned(),
                value,
                evidence: format!(
                    "{} {}{} ≥ {} ({})",
                    m.name,
                    m.unit.show(value),
                    prefixed(&on, " on ", ""),
                    m.unit.show(threshold),
                    m.description
                ),
                on,
                means: check.means.clone(),
                next: check.next.replace("{target}", &selector_of(c)),
                neighbours,
            });
        }
        if !evaluated {
            no_data.push(format!("{} ({})", m.name, m.description));
        }
    }
    // Worst first; within a severity, in the playbook's order of checks (the first is
    // its main question), then the furthest over its threshold.
    let rank = |f: &Finding| {
        let i = playbook.checks.iter().position(|c| c.measure == f.measure);
        let warn = i.map_or(1.0, |i| playbook.checks[i].warn.max(f64::MIN_POSITIVE));
        (i.unwrap_or(usize::MAX), f.value / warn)
    };
    findings.sort_by(|a, b| {
        let ((ia, xa), (ib, xb)) = (rank(a), rank(b));
        let by_rank = match playbook.rank {
            Rank::Checks => ia.cmp(&ib).then(xb.total_cmp(&xa)),
            Rank::Value => b.value.total_cmp(&a.value),
        };
        b.severity.cmp(&a.severity).then(by_rank)
    });
    readings.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.path.cmp(&b.path)));
    Report {
        playbook: playbook.name.clone(),
        summary: playbook.summary.clone(),
        window_seconds: window,
        examined: examined.len(),
        no_data,
        findings,
        readings,
    }
}

/// The three cgroups that held the CPU longest while the examined one waited, as
/// measured (its `runq_blame`), with their CPU use in the window.
fn culprits(snapshot: &Snapshot, window: f64, blame: &RunqBlame) -> Vec<Neighbour> {
    let window = window.max(f64::MIN_POSITIVE);
    blame
        .culprits
        .iter()
        .take(3)
        .filter_map(|culprit| {
            let c = snapshot.cgroups.iter().find(|c| c.path == culprit.path)?;
            Some(Neighbour {
                path: culprit.path.clone(),
                name: label(c),
                cpu_cores: c.cpu.usage_seconds.unwrap_or(0.0) / window,
                held_seconds: Some(culprit.seconds),
            })
        })
        .collect()
}

/// The three of `leaves`, other than `me` and its ancestors, that used the most CPU in
/// the window (at least 1% of one).
fn busiest_others(leaves: &[&CgroupSample], window: f64, me: &CgroupSample) -> Vec<Neighbour> {
    let window = window.max(f64::MIN_POSITIVE);
    let mut others: Vec<Neighbour> = leaves
        .iter()
        .filter(|c| c.path != me.path && !under(&me.path, &c.path))
        .filter_map(|c| {
            Some(Neighbour {
                path: c.path.clone(),
                name: label(c),
                cpu_cores: c.cpu.usage_seconds? / window,
                held_seconds: None,
            })
        })
        // Idle cgroups are nobody's noisy neighbour.
        .filter(|n| n.cpu_cores >= 0.01)
        .collect();
    others.sort_by(|a, b| {
        b.cpu_cores
            .total_cmp(&a.cpu_cores)
            .then(a.path.cmp(&b.path))
    });
    others.truncate(3);
    others
}

impl Neighbour {
    /// `who` and what it did: the wait it caused where measured, its CPU use.
    fn line(&self, who: String) -> String {
        match self.held_seconds {
            Some(held) => format!(
                "{who} held the CPU for {held:.2} s of the wait (used {:.2} CPUs)",
                self.cpu_cores
            ),
            None => format!("{who} used {:.2} CPUs", self.cpu_cores),
        }
    }
}

/// `before` + the value + `after`, or nothing.
fn prefixed(v: &Option<String>, before: &str, after: &str) -> String {
    v.as_deref()
        .map(|v| format!("{before}{v}{after}"))
        .unwrap_or_default()
}

/// Who a line is about in text: the name (if any) and the path, escaped.
fn who(name: &Option<String>, path: &str) -> String {
    match name {
        Some(n) => format!("{} {}", Escaped(n), Escaped(path)),
        None => escape(path).into_owned(),
    }
}

/// Who a line is about in Markdown: the name (if any) and the path, code spans.
fn md_who(name: &Option<String>, path: &str, span: fn(&str) -> String) -> String {
    match name {
        Some(n) => format!("{} {}", span(n), span(path)),
        None => span(path),
    }
}

fn severity(s: Severity) -> String {
    format!("{s:?}").to_uppercase()
}

impl Report {
    /// The report as plain text. Names, paths and device names are
    /// [escaped](crate::text); `{target}` in a next command is a shell word.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} ({} cgroups, {:.1}s window)",
            self.playbook, self.summary, self.examined, self.window_seconds
        );
        if self.findings.is_empty() {
            let _ = writeln!(out, "\nNo finding: every check stayed under its threshold.");
        }
        for f in &self.findings {
            let _ = writeln!(
                out,
                "\n{} {}: {}",
                severity(f.severity),
                who(&f.name, &f.path),
                f.finding
            );
            let _ = writeln!(out, "  evidence: {}", Escaped(&f.evidence));
            for n in &f.neighbours {
                let _ = writeln!(out, "  neighbour: {}", n.line(who(&n.name, &n.path)));
            }
            let _ = writeln!(out, "  means: {}", f.means);
            let _ = writeln!(out, "  next: {}", Escaped(&f.next));
        }
        if !self.readings.is_empty() {
            let _ = writeln!(out, "\nReadings, highest first");
            for r in &self.readings {
                let headroom = r
                    .headroom
                    .map(|h| format!("headroom {:.1}%", h * 100.0))
                    .unwrap_or_default();
                let on = prefixed(&r.on, " on ", "");
                let _ = writeln!(
                    out,
                    "  {:<24} {:>9} {:<16} {}{}",
                    r.measure,
                    r.shown,
                    headroom,
                    who(&r.name, &r.path),
                    Escaped(&on)
                );
            }
        }
        for n in &self.no_data {
            let _ = writeln!(out, "\nnot evaluated, no data: {n}");
        }
        out
    }

    /// The report as Markdown (CommonMark, with a GitHub table for the readings).
    /// Names and paths are code spans, so no name is read as Markdown or HTML nor
    /// breaks the table; next commands are code spans too.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## {}: {} ({} cgroups, {:.1}s window)",
            self.playbook, self.summary, self.examined, self.window_seconds
        );
        if self.findings.is_empty() {
            let _ = writeln!(out, "\nNo finding: every check stayed under its threshold.");
        } else {
            out.push('\n');
        }
        for f in &self.findings {
            let _ = writeln!(
                out,
                "- **{}** {}: {}",
                severity(f.severity),
                md_who(&f.name, &f.path, markdown_code),
                f.finding
            );
            let _ = writeln!(out, "  - evidence: {}", Escaped(&f.evidence));
            for n in &f.neighbours {
                let who = md_who(&n.name, &n.path, markdown_code);
                let _ = writeln!(out, "  - neighbour: {}", n.line(who));
            }
            let _ = writeln!(out, "  - means: {}", f.means);
            let _ = writeln!(out, "  - next: {}", markdown_code(&f.next));
        }
        if !self.readings.is_empty() {
            let _ = writeln!(out, "\n## Readings, highest first\n");
            let _ = writeln!(out, "| measure | value | headroom | cgroup | on |");
            let _ = writeln!(out, "|---|--:|--:|---|---|");
            for r in &self.readings {
                let headroom = r
                    .headroom
                    .map(|h| format!("{:.1}%", h * 100.0))
                    .unwrap_or_default();
                let on = r.on.as_deref().map(markdown_cell).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | {} | {headroom} | {} | {on} |",
                    r.measure,
                    r.shown,
                    md_who(&r.name, &r.path, markdown_cell)
                );
            }
        }
        if !self.no_data.is_empty() {
            let _ = writeln!(out, "\nNot evaluated, no data:\n");
            for n in &self.no_data {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "/t/\x1b]0;pwned\x07\u{202e}|`x`<b>";

    fn report() -> Report {
        let finding = Finding {
            severity: Severity::Critical,
            path: HOSTILE.into(),
            name: Some("web\x1b[2J".into()),
            finding: "waits for a CPU".into(),
            measure: "cpu.runq_wait".into(),
            value: 1.0,
            on: None,
            evidence: "cpu.runq_wait 1.00 ≥ 0.50 (time runnable tasks waited)".into(),
            means: "m".into(),
            next: format!("cgscope snapshot --cgroup {}", shell_word(HOSTILE)),
            neighbours: vec![Neighbour {
                path: "/n\u{9b}2J".into(),
                name: None,
                cpu_cores: 1.0,
                held_seconds: None,
            }],
        };
        Report {
            playbook: "triage".into(),
            summary: "s".into(),
            window_seconds: 1.0,
            examined: 2,
            no_data: Vec::new(),
            findings: vec![finding],
            readings: vec![Reading {
                path: HOSTILE.into(),
                name: Some("a|b".into()),
                measure: "cpu.usage".into(),
                value: 0.5,
                on: Some("sda\x1b".into()),
                shown: "50%".into(),
                headroom: Some(0.5),
            }],
        }
    }

    fn printable(s: &str) -> bool {
        !s.chars().any(|c| c != '\n' && crate::text::is_escaped(c))
    }

    #[test]
    fn text_escapes_every_name() {
        let t = report().text();
        assert!(printable(&t), "{t}");
        assert!(
            t.contains(r"CRITICAL web\x1b[2J /t/\x1b]0;pwned\x07\u{202e}|`x`<b>: waits"),
            "{t}"
        );
        assert!(t.contains(r"neighbour: /n\u{009b}2J used"), "{t}");
        assert!(t.contains(r"on sda\x1b"), "{t}");
        assert!(
            t.contains(
                r"next: cgscope snapshot --cgroup $'/t/\x1b]0;pwned\x07\xe2\x80\xae|`x`<b>'"
            ),
            "{t}"
        );
    }

    #[test]
    fn markdown_keeps_names_in_code_spans_and_cells() {
        let md = report().markdown();
        assert!(printable(&md), "{md}");
        let path = r"``/t/\x1b]0;pwned\x07\u{202e}|`x`<b>``";
        assert!(
            md.contains(&format!("- **CRITICAL** `web\\x1b[2J` {path}: waits")),
            "{md}"
        );
        // A table row has its six cell borders; the name's pipes are escaped.
        let row = md
            .lines()
            .find(|l| l.starts_with("| cpu.usage"))
            .expect(&md);
        let borders = row
            .match_indices('|')
            .filter(|(i, _)| !row[..*i].ends_with('\\'));
        assert_eq!(borders.count(), 6, "{row}");
        assert!(row.contains(r"`a\|b` "), "{row}");
        assert!(row.contains(r"`sda\x1b`"), "{row}");
    }

    #[test]
    fn the_next_command_selects_by_a_shell_word() {
        let mut c = CgroupSample::bare("/a b;reboot", 7, CgroupKind::Other);
        assert_eq!(selector_of(&c), "'/a b;reboot'");
        c.path = "/plain".into();
        assert_eq!(selector_of(&c), "/plain");
    }
}
