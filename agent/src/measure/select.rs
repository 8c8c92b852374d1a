//! Which cgroups a selector names, and which of them a playbook run or `top`
//! examines.

use crate::{
    cgroup::tree::under,
    snapshot::{CgroupKind, CgroupSample, Snapshot},
};

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

/// The cgroups a run (or `top`) examines: the leaves among those the selector names or, without
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
