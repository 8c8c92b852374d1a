//! Network namespaces to cgroups: each namespace's window goes to the cgroup that
//! owns it.

use crate::{
    cgroup::tree::CgroupDir,
    net::NetnsReader,
    snapshot::{CgroupKind, CgroupSample},
};

/// Gives each network namespace's window to the cgroup that owns it: the pod for its
/// containers, else the container itself. Returns the problems met.
pub(super) fn assign_network(
    reader: &mut NetnsReader,
    dirs: &[CgroupDir],
    cgroups: &mut [CgroupSample],
    sample_of: &[Option<usize>],
) -> Vec<String> {
    let mut found: Vec<(u64, u32)> = Vec::new();
    let mut owners: Vec<(usize, u64)> = Vec::new();
    let mut problems = Vec::new();
    for (i, s) in sample_of.iter().enumerate() {
        let Some(sample) = s
            .map(|s| &cgroups[s])
            .filter(|s| s.kind == CgroupKind::Container)
        else {
            continue;
        };
        let (netns, pid) = match reader.own_netns(dirs[i].dir()) {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let in_pod = sample
            .container
            .as_ref()
            .is_some_and(|c| c.pod_uid.is_some());
        let parent = dirs[i].parent.and_then(|d| sample_of[d]);
        let owner = match (in_pod, parent) {
            (true, Some(parent)) => parent,
            _ => s.unwrap_or_default(),
        };
        found.push((netns, pid));
        owners.push((owner, netns));
    }
    let (windows, mut errors) = reader.read(&found);
    errors.append(&mut problems);
    for (owner, netns) in owners {
        let sample = &mut cgroups[owner];
        if sample.network.is_none() {
            sample.network = windows.get(&netns).cloned();
        }
    }
    errors
}
