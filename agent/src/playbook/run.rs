//! Evaluating a playbook on one window: which cgroups it examines, its findings
//! (worst first), and the report in text, Markdown or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    measure::{self, Scope, Unit},
    Examine, Playbook, Rank,
};
use crate::{
    cgroup::{identity::CgroupKind, tree::under},
    sample::{CgroupSample, Snapshot},
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

/// Whether `selector` names this cgroup: container or pod name, namespace, container
/// id (or a prefix of 12+ digits), pod UID, or a cgroup path prefix.
pub fn selects(c: &CgroupSample, selector: &str) -> bool {
    if selector.starts_with('/') {
        return under(&c.path, selector);
    }
    let Some(m) = &c.container else {
        return false;
    };
    let eq = |v: &Option<String>| v.as_deref() == Some(selector);
    eq(&m.name) || eq(&m.pod) || eq(&m.namespace) || eq(&m.pod_uid) || m.id_matches(selector)
}

/// The cgroups a run examines: the leaves among those the selector names or, without
/// one, every leaf but the root (a parent's numbers include its children's: examining
/// both would report one problem twice); the root if it is alone.
pub fn targets<'a>(snapshot: &'a Snapshot, selector: Option<&str>) -> Vec<&'a CgroupSample> {
    let mut paths: Vec<&str> = snapshot.cgroups.iter().map(|c| c.path.as_str()).collect();
    paths.sort_unstable();
    let has_children = |path: &str| {
        let prefix = if path == "/" {
            "/".to_owned()
        } else {
            format!("{path}/")
        };
        let at = paths.partition_point(|p| *p <= path);
        paths.get(at).is_some_and(|next| next.starts_with(&prefix))
    };
    let chosen: Vec<&CgroupSample> = snapshot
        .cgroups
        .iter()
        .filter(|c| match selector {
            Some(s) => selects(c, s) && !has_children(&c.path),
            None => c.kind != CgroupKind::Root && !has_children(&c.path),
        })
        .collect();
    // A host whose v2 tree has no cgroup below the root: the root is the only one.
    match (selector, chosen.is_empty()) {
        (None, true) => snapshot
            .cgroups
            .iter()
            .filter(|c| c.kind == CgroupKind::Root)
            .collect(),
        _ => chosen,
    }
}

fn label(c: &CgroupSample) -> Option<String> {
    c.container.as_ref().and_then(|m| m.name.clone())
}

/// What to put for `{target}` in the next command.
fn selector_of(c: &CgroupSample) -> String {
    c.container
        .as_ref()
        .and_then(|m| m.id.clone())
        .unwrap_or_else(|| c.path.clone())
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
            let neighbours = if check.neighbours {
                busiest_others(&candidates, window, c)
            } else {
                Vec::new()
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

/// `before` + the value + `after`, or nothing.
fn prefixed(v: &Option<String>, before: &str, after: &str) -> String {
    v.as_deref()
        .map(|v| format!("{before}{v}{after}"))
        .unwrap_or_default()
}

impl Report {
    pub fn text(&self, markdown: bool) -> String {
        let mut out = String::new();
        let (h, b) = if markdown { ("## ", "**") } else { ("", "") };
        let _ = writeln!(
            out,
            "{h}{}: {} ({} cgroups, {:.1}s window)",
            self.playbook, self.summary, self.examined, self.window_seconds
        );
        if self.findings.is_empty() {
            let _ = writeln!(out, "\nNo finding: every check stayed under its threshold.");
        }
        for f in &self.findings {
            let who = prefixed(&f.name, "", " ");
            let severity = format!("{:?}", f.severity).to_uppercase();
            let _ = writeln!(out, "\n{b}{severity}{b} {who}{}: {}", f.path, f.finding);
            let _ = writeln!(out, "  evidence: {}", f.evidence);
            for n in &f.neighbours {
                let who = prefixed(&n.name, "", " ");
                let _ = writeln!(
                    out,
                    "  neighbour: {who}{} used {:.2} CPUs",
                    n.path, n.cpu_cores
                );
            }
            let _ = writeln!(out, "  means: {}", f.means);
            let _ = writeln!(out, "  next: {}", f.next);
        }
        if !self.readings.is_empty() {
            let _ = writeln!(out, "\n{h}Readings, highest first");
            for r in &self.readings {
                let headroom = r
                    .headroom
                    .map(|h| format!("headroom {:.1}%", h * 100.0))
                    .unwrap_or_default();
                let on = prefixed(&r.on, " on ", "");
                let who = prefixed(&r.name, "", " ");
                let _ = writeln!(
                    out,
                    "  {:<24} {:>9} {:<16} {who}{}{on}",
                    r.measure, r.shown, headroom, r.path
                );
            }
        }
        for n in &self.no_data {
            let _ = writeln!(out, "\nnot evaluated, no data: {n}");
        }
        out
    }
}
