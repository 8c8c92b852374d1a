//! Which cgroups are exported, and how many series a metric may have: the
//! cardinality controls. The snapshot and the REST API are not filtered.

use std::time::Duration;

use crate::{cgroup::tree::under, snapshot::CgroupKind, snapshot::CgroupSample};

/// Series per metric before points go to the overflow series.
pub const DEFAULT_MAX_SERIES: usize = 20_000;

/// The cardinality controls; `Default` exports containers, pods, services and the
/// root, with no other condition.
#[derive(Debug, Clone)]
pub struct Filter {
    pub kinds: Vec<CgroupKind>,
    /// Kubernetes namespaces to keep (empty: all) and to drop.
    pub include_namespaces: Vec<String>,
    pub exclude_namespaces: Vec<String>,
    /// `key=value` runtime labels a container or pod must all have, or must not have
    /// any of.
    pub include_labels: Vec<(String, String)>,
    pub exclude_labels: Vec<(String, String)>,
    /// cgroup path prefixes to keep (empty: all) and to drop.
    pub include_paths: Vec<String>,
    pub exclude_paths: Vec<String>,
    /// A cgroup is exported once it has been seen this long (short-lived jobs and
    /// exec probes would otherwise make a series each).
    pub min_age: Duration,
    pub max_series: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            kinds: vec![
                CgroupKind::Root,
                CgroupKind::Pod,
                CgroupKind::Container,
                CgroupKind::Service,
            ],
            include_namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            include_labels: Vec::new(),
            exclude_labels: Vec::new(),
            include_paths: Vec::new(),
            exclude_paths: Vec::new(),
            min_age: Duration::ZERO,
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Export,
    /// Wanted but younger than `min_age`.
    Wait,
    Skip,
}

impl Filter {
    pub fn verdict(&self, c: &CgroupSample, age_seconds: f64) -> Verdict {
        if !self.kinds.contains(&c.kind) {
            return Verdict::Skip;
        }
        let path_in =
            self.include_paths.is_empty() || self.include_paths.iter().any(|p| under(&c.path, p));
        if !path_in || self.exclude_paths.iter().any(|p| under(&c.path, p)) {
            return Verdict::Skip;
        }
        let namespace = c.container.as_ref().and_then(|m| m.namespace.as_deref());
        if !self.include_namespaces.is_empty()
            && !namespace.is_some_and(|n| self.include_namespaces.iter().any(|i| i == n))
        {
            return Verdict::Skip;
        }
        if namespace.is_some_and(|n| self.exclude_namespaces.iter().any(|x| x == n)) {
            return Verdict::Skip;
        }
        let has = |(k, v): &(String, String)| {
            c.container
                .as_ref()
                .and_then(|m| m.labels.get(k))
                .is_some_and(|have| have == v)
        };
        if !self.include_labels.iter().all(has) || self.exclude_labels.iter().any(has) {
            return Verdict::Skip;
        }
        if age_seconds < self.min_age.as_secs_f64() {
            return Verdict::Wait;
        }
        Verdict::Export
    }
}

/// `key=value`, for the label flags.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE (e.g. app=web)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ContainerSample;

    fn cgroup(
        path: &str,
        kind: CgroupKind,
        namespace: Option<&str>,
        labels: &[(&str, &str)],
    ) -> CgroupSample {
        let container = ContainerSample {
            kind,
            namespace: namespace.map(str::to_owned),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ContainerSample::default()
        };
        CgroupSample {
            container: matches!(kind, CgroupKind::Pod | CgroupKind::Container).then_some(container),
            ..CgroupSample::bare(path, 1, kind)
        }
    }

    #[test]
    fn kinds_paths_namespaces_labels_and_age() {
        let web = cgroup(
            "/kubepods.slice/pod1/c1",
            CgroupKind::Container,
            Some("shop"),
            &[("app", "web")],
        );
        let slice = cgroup("/system.slice", CgroupKind::Slice, None, &[]);
        let f = Filter::default();
        assert_eq!(f.verdict(&web, 0.0), Verdict::Export);
        assert_eq!(f.verdict(&slice, 0.0), Verdict::Skip);

        let only = |f: Filter| f.verdict(&web, 100.0);
        let ns = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            only(Filter {
                include_namespaces: ns(&["kube-system"]),
                ..Filter::default()
            }),
            Verdict::Skip
        );
        assert_eq!(
            only(Filter {
                include_namespaces: ns(&["shop"]),
                ..Filter::default()
            }),
            Verdict::Export
        );
        assert_eq!(
            only(Filter {
                exclude_namespaces: ns(&["shop"]),
                ..Filter::default()
            }),
            Verdict::Skip
        );
        assert_eq!(
            only(Filter {
                exclude_paths: ns(&["/kubepods.slice"]),
                ..Filter::default()
            }),
            Verdict::Skip
        );
        assert_eq!(
            only(Filter {
                include_paths: ns(&["/kubepods"]),
                ..Filter::default()
            }),
            Verdict::Skip
        );
        let label = |s| vec![parse_label(s).unwrap()];
        assert_eq!(
            only(Filter {
                include_labels: label("app=web"),
                ..Filter::default()
            }),
            Verdict::Export
        );
        assert_eq!(
            only(Filter {
                include_labels: label("app=db"),
                ..Filter::default()
            }),
            Verdict::Skip
        );
        assert_eq!(
            only(Filter {
                exclude_labels: label("app=web"),
                ..Filter::default()
            }),
            Verdict::Skip
        );
        let young = Filter {
            min_age: Duration::from_secs(30),
            ..Filter::default()
        };
        assert_eq!(young.verdict(&web, 10.0), Verdict::Wait);
        assert_eq!(young.verdict(&web, 30.0), Verdict::Export);
        assert!(parse_label("novalue").is_err());
    }
}
