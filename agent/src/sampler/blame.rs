//! Names the culprits of each cgroup's run-queue waits: the kernel split every wait
//! by the cgroup id that held the CPU (`probes::blame`); here each id is placed
//! relative to the waiting cgroup (itself, its pod, another container, a system
//! cgroup) and the longest-running others are named.

use std::collections::HashMap;

use cgscope_common::blame::culprit;

use crate::{
    cgroup::{identity, tree::CgroupDir},
    probes::reader::ProbeWindow,
    snapshot::{BlameCauses, CgroupKind, CgroupSample, Culprit, RunqBlame, MAX_CULPRITS},
};

/// The walk seen from a culprit's side: ids to walk indexes, and each walked
/// cgroup's kind (classified on first use).
struct Walk<'a> {
    dirs: &'a [CgroupDir],
    index: HashMap<u64, usize>,
    kinds: Vec<Option<CgroupKind>>,
}

impl<'a> Walk<'a> {
    fn new(dirs: &'a [CgroupDir]) -> Self {
        Self {
            dirs,
            index: dirs.iter().enumerate().map(|(i, d)| (d.id, i)).collect(),
            kinds: vec![None; dirs.len()],
        }
    }

    fn kind(&mut self, i: usize) -> CgroupKind {
        *self.kinds[i].get_or_insert_with(|| {
            identity::classify(self.dirs[i].path())
                .kind
                .unwrap_or(CgroupKind::Other)
        })
    }

    /// `i` and its ancestors, nearest first.
    fn up(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(Some(i), |&j| self.dirs[j].parent)
    }

    /// The nearest container or pod that `i` is or is in.
    fn unit(&mut self, i: usize) -> Option<usize> {
        let chain: Vec<usize> = self.up(i).collect();
        chain
            .into_iter()
            .find(|&j| matches!(self.kind(j), CgroupKind::Container | CgroupKind::Pod))
    }

    /// The pod that `i` is or is in.
    fn pod(&mut self, i: usize) -> Option<usize> {
        let chain: Vec<usize> = self.up(i).collect();
        chain.into_iter().find(|&j| self.kind(j) == CgroupKind::Pod)
    }
}

/// Sets `runq_blame` of every sampled cgroup from its window (its own waits and
/// its descendants'): `windows` and `sample_of` are per walked cgroup.
pub(super) fn attribute(
    dirs: &[CgroupDir],
    windows: &[Option<Box<ProbeWindow>>],
    sample_of: &[Option<usize>],
    cgroups: &mut [CgroupSample],
) {
    let mut walk = Walk::new(dirs);
    for (i, window) in windows.iter().enumerate() {
        let Some(&Some(s)) = sample_of.get(i) else {
            continue;
        };
        let pieces = window.as_ref().map_or(&[][..], |w| &w.blame[..]);
        let blame = blame_of(&mut walk, i, pieces, cgroups, sample_of);
        cgroups[s].cpu.runq_blame = Some(blame);
    }
}

/// The blame of walked cgroup `i` from its window's `(culprit, ns)` pieces.
fn blame_of(
    walk: &mut Walk,
    i: usize,
    pieces: &[(u64, u64)],
    cgroups: &[CgroupSample],
    sample_of: &[Option<usize>],
) -> RunqBlame {
    let mut causes = BlameCauses::default();
    // Nanoseconds and cause by culprit cgroup (walk index), for the named list.
    let mut named: HashMap<usize, (u64, &'static str)> = HashMap::new();
    let pod = walk.pod(i);
    for &(id, ns) in pieces {
        let seconds = ns as f64 * 1e-9;
        let cause = match id {
            culprit::IDLE => &mut causes.idle,
            culprit::KERNEL => &mut causes.kernel,
            culprit::OWN_QUOTA => &mut causes.own_quota,
            culprit::UNATTRIBUTED => &mut causes.unattributed,
            id => match walk.index.get(&id).copied() {
                None => &mut causes.removed,
                Some(j) if walk.up(j).any(|a| a == i) => &mut causes.own,
                Some(j) => {
                    let (cause, name, who) = if pod.is_some() && walk.pod(j) == pod {
                        let who = walk.unit(j).unwrap_or(j);
                        (&mut causes.same_pod, "same_pod", who)
                    } else if let Some(unit) = walk.unit(j) {
                        (&mut causes.other_containers, "other_containers", unit)
                    } else {
                        (&mut causes.system, "system", j)
                    };
                    let total = named.entry(who).or_insert((0, name));
                    total.0 = total.0.saturating_add(ns);
                    cause
                }
            },
        };
        *cause += seconds;
    }
    let mut culprits: Vec<(usize, (u64, &'static str))> = named.into_iter().collect();
    // Longest first; equal ones by walk order, so that the list is stable.
    culprits.sort_unstable_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    culprits.truncate(MAX_CULPRITS);
    let culprits = culprits
        .into_iter()
        .map(|(j, (ns, cause))| {
            let dir = &walk.dirs[j];
            // Its names where it is sampled (the runtime's), else its path's.
            let sampled = sample_of.get(j).copied().flatten().map(|s| &cgroups[s]);
            let container = sampled.and_then(|c| c.container.as_ref());
            Culprit {
                path: dir.path().to_owned(),
                kind: walk.kind(j),
                cause,
                container_id: container.and_then(|c| c.id.clone()),
                name: container.and_then(|c| c.name.clone()),
                pod: container.and_then(|c| c.pod.clone()),
                namespace: container.and_then(|c| c.namespace.clone()),
                seconds: ns as f64 * 1e-9,
            }
        })
        .collect();
    RunqBlame { causes, culprits }
}
