//! Executable playbooks: each page in `playbooks/` is both the human procedure and,
//! in its ```` ```cgscope-playbook ```` block, the checks the engine runs (which
//! [measure](crate::measure), what thresholds, what it means, what to run next). The pages
//! are compiled into the binary, so the agent and its documentation cannot disagree.

pub mod run;

use serde::{Deserialize, Serialize};

use crate::measure;

/// The pages, by file name.
const PAGES: &[(&str, &str)] = &[
    ("triage", include_str!("../../../playbooks/triage.md")),
    ("host", include_str!("../../../playbooks/host.md")),
    (
        "throughput-ceiling",
        include_str!("../../../playbooks/throughput-ceiling.md"),
    ),
    (
        "cpu-throttling",
        include_str!("../../../playbooks/cpu-throttling.md"),
    ),
    (
        "cpu-contention",
        include_str!("../../../playbooks/cpu-contention.md"),
    ),
    (
        "memory-pressure",
        include_str!("../../../playbooks/memory-pressure.md"),
    ),
    ("disk-io", include_str!("../../../playbooks/disk-io.md")),
    (
        "network-latency",
        include_str!("../../../playbooks/network-latency.md"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("playbook {0}: no ```cgscope-playbook block")]
    NoBlock(String),
    #[error("playbook {name}: {source}")]
    Toml {
        name: String,
        source: toml::de::Error,
    },
    #[error("playbook {name}: check {check}: unknown measure {measure:?}")]
    UnknownMeasure {
        name: String,
        check: usize,
        measure: String,
    },
    #[error("no playbook {0:?} (cgscope playbook list)")]
    Unknown(String),
}

/// One check: a measure compared with thresholds (higher is worse).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub measure: String,
    pub warn: f64,
    pub critical: f64,
    /// The finding, in a few words ("waits for a CPU").
    pub finding: String,
    /// What it means for the workload.
    pub means: String,
    /// The next command; `{target}` is replaced by the cgroup's selector.
    pub next: String,
    /// Name the busiest other cgroups of the window as evidence (noisy neighbours).
    #[serde(default)]
    pub neighbours: bool,
}

/// Which cgroups a run examines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Examine {
    /// The leaves (containers, services): a parent's numbers include its children's.
    #[default]
    Leaves,
    /// The top (the root, or the selected cgroup) and its children: the node's
    /// level, where system.slice, kubepods and user.slice share the machine.
    Top,
}

/// How findings of one severity are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rank {
    /// In the order of the checks (the first is the playbook's main question), then
    /// by how far over its threshold.
    #[default]
    Checks,
    /// By value, whatever the check: for checks of one unit (shares of a limit),
    /// the one nearest to its ceiling first.
    Value,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    pub name: String,
    /// One line: the question it answers.
    pub summary: String,
    #[serde(default)]
    pub examine: Examine,
    #[serde(default)]
    pub rank: Rank,
    /// Report every value computed, findings or not (the headroom of the rest).
    #[serde(default)]
    pub readings: bool,
    #[serde(rename = "check")]
    pub checks: Vec<Check>,
    /// The page, for `explain`.
    #[serde(skip)]
    pub page: &'static str,
}

/// Parses the playbook block of a page and validates its measures.
pub fn parse(name: &str, page: &'static str) -> Result<Playbook, PlaybookError> {
    let mut playbook = parse_block(name, page)?;
    playbook.page = page;
    Ok(playbook)
}

/// [`parse`] for a page of any lifetime: the playbook it returns keeps no page.
pub fn parse_block(name: &str, page: &str) -> Result<Playbook, PlaybookError> {
    let start = page
        .find("```cgscope-playbook\n")
        .ok_or_else(|| PlaybookError::NoBlock(name.to_owned()))?
        + "```cgscope-playbook\n".len();
    let len = page[start..]
        .find("\n```")
        .ok_or_else(|| PlaybookError::NoBlock(name.to_owned()))?;
    let playbook: Playbook =
        toml::from_str(&page[start..start + len]).map_err(|source| PlaybookError::Toml {
            name: name.to_owned(),
            source,
        })?;
    for (i, check) in playbook.checks.iter().enumerate() {
        if measure::find(&check.measure).is_none() {
            return Err(PlaybookError::UnknownMeasure {
                name: name.to_owned(),
                check: i + 1,
                measure: check.measure.clone(),
            });
        }
    }
    Ok(playbook)
}

/// Every playbook shipped with this binary.
pub fn all() -> Result<Vec<Playbook>, PlaybookError> {
    PAGES.iter().map(|(name, page)| parse(name, page)).collect()
}

pub fn find(name: &str) -> Result<Playbook, PlaybookError> {
    all()?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PlaybookError::Unknown(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_parses_and_names_itself() {
        let all = all().expect("playbooks parse");
        assert_eq!(all.len(), PAGES.len());
        for (p, (file, _)) in all.iter().zip(PAGES) {
            assert_eq!(p.name, *file, "the block's name is the file's");
            assert!(!p.checks.is_empty());
            for c in &p.checks {
                assert!(
                    c.warn <= c.critical,
                    "{}: {} warn above critical",
                    p.name,
                    c.measure
                );
            }
        }
    }

    #[test]
    fn bad_blocks_are_named_errors() {
        assert!(matches!(
            parse("x", "# no block"),
            Err(PlaybookError::NoBlock(_))
        ));
        let page = "```cgscope-playbook\nname = \"x\"\nsummary = \"s\"\n[[check]]\nmeasure = \"cpu.nope\"\nwarn = 1.0\ncritical = 2.0\nfinding = \"f\"\nmeans = \"m\"\nnext = \"n\"\n```\n";
        assert!(matches!(
            parse("x", page),
            Err(PlaybookError::UnknownMeasure { .. })
        ));
        let page = "```cgscope-playbook\nname = 3\n```\n";
        assert!(matches!(parse("x", page), Err(PlaybookError::Toml { .. })));
    }
}
