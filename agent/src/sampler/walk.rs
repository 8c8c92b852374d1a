//! The window's steps over the cgroup tree: walk it, read every walked cgroup's
//! files into its sample, and settle the cgroups of the last window that the walk
//! did not find (removed, or not listed).

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use super::{container_sample, results::probe_results, scan::second_look, scan::ScanErrors};
use super::{Previous, Sampler};
use crate::{
    cgroup::{
        self, identity,
        stats::{StatsRead, StatsReader},
    },
    probes::reader::ProbeWindow,
    snapshot::{CgroupKind, CgroupSample, Unreadable},
    window,
};

/// What reading the walked cgroups made of them.
pub(super) struct Walked {
    /// What the next window keeps of each cgroup, by id.
    pub(super) next: HashMap<u64, Previous>,
    /// The samples, built in place (each is about 1 KB: moving them costs).
    pub(super) cgroups: Vec<CgroupSample>,
    /// Per walked cgroup, the index of its sample, if it exists and is wanted.
    pub(super) sample_of: Vec<Option<usize>>,
    /// Per walked cgroup, its probe window: only cgroups (and, once aggregated,
    /// their ancestors) in which a probe recorded something have one.
    pub(super) windows: Vec<Option<Box<ProbeWindow>>>,
}

/// The cgroups of the last window that the walk did not find.
pub(super) struct Missing {
    /// Samples of the removed ones (their last window) and of those that could not be
    /// listed (unreadable).
    pub(super) samples: Vec<CgroupSample>,
    /// Ids the kernel removed: their map entries are to be forgotten.
    pub(super) dead: Vec<u64>,
}

impl Sampler {
    /// Lists the tree into `self.dirs`. Returns why a part of it could not be
    /// listed, if it could not (then a cgroup missing from the walk may be alive).
    pub(super) fn walk(&mut self, scan: &mut ScanErrors) -> Option<&'static str> {
        match cgroup::tree::walk(&self.root, &mut self.dirs) {
            Ok(errors) => {
                if let Some((dir, e)) = &errors.first {
                    let reason = cgroup::io_reason(e);
                    scan.count(reason, errors.count as u64);
                    scan.note(format!("cannot list {}: {e}", dir.display()));
                }
                errors.first.map(|(_, e)| cgroup::io_reason(&e))
            }
            Err(e) => {
                // The root itself: nothing was listed, nothing is known to be gone.
                let reason = cgroup::io_reason(&e);
                scan.count(reason, 1);
                scan.note(format!("cannot walk {}: {e}", self.root.display()));
                self.dirs.clear();
                Some(reason)
            }
        }
    }

    /// Counts each OOM kill in the cgroup it happened in, or its nearest ancestor
    /// still known (walked now or in the last window).
    pub(super) fn place_oom_kills(&mut self) {
        if self.kernel.has_oom_kills() {
            let known: HashSet<u64> = (self.dirs.iter().map(|d| d.id))
                .chain(self.previous.keys().copied())
                .collect();
            self.kernel.place_oom_kills(|id| known.contains(&id));
        }
    }

    /// Reads every walked cgroup's files and turns them, against the last window's
    /// reading, into its sample (only for cgroups at or below `prefix`). A cgroup
    /// removed during the walk stays in `self.previous`, for [`Self::settle_missing`].
    pub(super) fn read_walked(
        &mut self,
        prefix: Option<&str>,
        seconds: f64,
        scan: &mut ScanErrors,
    ) -> Walked {
        let n = self.dirs.len();
        let mut walked = Walked {
            next: HashMap::with_capacity(n),
            cgroups: Vec::with_capacity(n),
            sample_of: Vec::with_capacity(n),
            windows: Vec::with_capacity(n),
        };
        for dir in &self.dirs {
            // When this cgroup's files were read: under load the scan reaches a cgroup
            // at a different point of each window, and its counters cover exactly
            // the time between its own reads.
            let read_at = Instant::now();
            let read = StatsReader::new(dir.dir(), &mut self.text).read();
            walked.windows.push(self.kernel.window(dir.id));
            let mut prev = self.previous.remove(&dir.id);
            let read = match read {
                StatsRead::Stats(stats) => Ok(stats),
                StatsRead::Unreadable(e) => Err(e),
                StatsRead::Gone => {
                    // Removed during the scan: its last window is reported with the
                    // missing ones.
                    if let Some(prev) = prev {
                        self.previous.insert(dir.id, prev);
                    }
                    walked.sample_of.push(None);
                    continue;
                }
            };
            // What the last window kept, reused where it still holds (no allocation
            // per cgroup and window).
            let (path, dir_buf, identity) = match prev.as_mut() {
                Some(p) if p.path == dir.path() => (
                    std::mem::take(&mut p.path),
                    std::mem::take(&mut p.dir),
                    p.identity.clone(),
                ),
                _ => (
                    dir.path().to_owned(),
                    dir.dir().to_owned(),
                    identity::classify(dir.path()),
                ),
            };
            let (before, mut since) = match prev {
                Some(p) => (p.stats, p.since),
                None => (None, self.previous_at),
            };
            let wanted = prefix.is_none_or(|p| cgroup::tree::under(dir.path(), p));
            let mut sample = wanted.then(|| CgroupSample {
                raw_path_hex: dir.raw_path_hex(),
                container: container_sample(&identity),
                ..CgroupSample::bare(
                    dir.path(),
                    dir.id,
                    identity.kind.unwrap_or(CgroupKind::Other),
                )
            });
            let stats = match read {
                Err(e) => {
                    // Not a removal: the baseline and the kernel entries stay.
                    let reason = e.reason();
                    scan.count(reason, 1);
                    scan.note(e.to_string());
                    if let Some(sample) = sample.as_mut() {
                        sample.unreadable = Some(Unreadable {
                            reason,
                            error: e.to_string(),
                        });
                    }
                    before
                }
                Ok(stats) => {
                    if let Some(sample) = sample.as_mut() {
                        let before = before.as_ref();
                        let span = read_at.duration_since(since).as_secs_f64();
                        if (span - seconds).abs() > (seconds * 0.02).max(0.01) {
                            sample.stats_window_seconds = Some(span);
                        }
                        sample.cpu = window::cpu(&stats, before);
                        sample.memory = stats
                            .memory
                            .as_ref()
                            .map(|m| window::memory(m, before.and_then(|b| b.memory.as_ref())));
                        sample.io = window::io(&stats, before, span, &mut self.devices);
                        sample.pids = window::pids(&stats, before);
                        sample.pressure = window::pressure(&stats, before);
                        sample.descendants = stats.cgroup.and_then(|c| c.nr_descendants);
                        sample.dying_descendants =
                            stats.cgroup.and_then(|c| c.nr_dying_descendants);
                    }
                    since = read_at;
                    Some(stats)
                }
            };
            walked
                .sample_of
                .push(sample.is_some().then_some(walked.cgroups.len()));
            walked.cgroups.extend(sample);
            walked.next.insert(
                dir.id,
                Previous {
                    path,
                    dir: dir_buf,
                    identity,
                    stats,
                    since,
                },
            );
        }
        walked
    }

    /// The cgroups of the last window that the walk did not find (all that is left
    /// in `self.previous`). A second look tells those the kernel removed (their last
    /// window is reported and counted in their nearest walked ancestor's, then they
    /// are forgotten) from those that could not be listed (kept in `walked.next`,
    /// reported unreadable). `unlisted`: why a part of the tree was not listed.
    pub(super) fn settle_missing(
        &mut self,
        walked: &mut Walked,
        unlisted: Option<&'static str>,
        seconds: f64,
        scan: &mut ScanErrors,
    ) -> Missing {
        // Walk index by path, for the ancestors of cgroups the walk did not list;
        // built only if there is one.
        let mut index_of: Option<HashMap<&str, usize>> = None;
        let dirs = &self.dirs;
        let mut nearest_walked = |path: &str| {
            let index_of = index_of.get_or_insert_with(|| {
                let paths = dirs.iter().enumerate();
                paths.map(|(i, d)| (d.path(), i)).collect::<HashMap<_, _>>()
            });
            let mut at = super::parent_path(path);
            while let Some(p) = at {
                if let Some(&i) = index_of.get(p) {
                    return Some(i);
                }
                at = super::parent_path(p);
            }
            None
        };
        let mut missing = Missing {
            samples: Vec::new(),
            dead: Vec::new(),
        };
        for (id, prev) in std::mem::take(&mut self.previous) {
            let last = self.kernel.window(id);
            if let Some((w, parent)) = last.as_ref().zip(nearest_walked(&prev.path)) {
                walked.windows[parent]
                    .get_or_insert_with(Box::default)
                    .add(w);
            }
            let kind = prev.identity.kind.unwrap_or(CgroupKind::Other);
            let mut sample = CgroupSample {
                container: container_sample(&prev.identity),
                ..CgroupSample::bare(&prev.path, id, kind)
            };
            match second_look(&prev.dir, id) {
                Ok(true) => {
                    missing.dead.push(id);
                    if last.is_none() {
                        continue;
                    }
                    sample.removed = true;
                }
                // Still there (or the look failed): not gone, whatever kept the walk
                // from listing it. Its baseline stays, as for a file that failed.
                result => {
                    // A failed listing was counted once, where it failed.
                    let reason = match result {
                        Err(e) => Some(cgroup::io_reason(&e)),
                        Ok(_) => unlisted.is_none().then_some("unlisted"),
                    };
                    if let Some(reason) = reason {
                        scan.count(reason, 1);
                    }
                    let reason = reason.or(unlisted).unwrap_or("unlisted");
                    sample.unreadable = Some(Unreadable {
                        reason,
                        error: format!("{} could not be listed this window", prev.dir.display()),
                    });
                    walked.next.insert(id, prev);
                }
            }
            probe_results(
                &self.probes,
                &self.kernel,
                &mut self.devices,
                &mut sample,
                last.as_deref(),
                seconds,
            );
            missing.samples.push(sample);
        }
        missing
    }
}
