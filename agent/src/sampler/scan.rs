//! The sampler's bookkeeping of what it could not read: the second look that tells
//! a removed cgroup from one that could not be listed, and the count of failures.

use std::{collections::BTreeMap, os::unix::fs::MetadataExt, path::Path};

use crate::cgroup;

/// The second look at a cgroup the walk did not find: `true` if the kernel says it
/// is gone (no such directory, or another cgroup now has its name), `false` if it is
/// still there, an error if the look itself failed.
pub(super) fn second_look(dir: &Path, id: u64) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) => Ok(m.ino() != id),
        Err(e) if cgroup::is_gone(&e) => Ok(true),
        Err(e) => Err(e),
    }
}

/// The read failures of one scan: counted by reason, logged once.
#[derive(Default)]
pub(super) struct ScanErrors {
    pub(super) by_reason: BTreeMap<&'static str, u64>,
    first: Option<String>,
    total: u64,
}

impl ScanErrors {
    pub(super) fn count(&mut self, reason: &'static str, n: u64) {
        *self.by_reason.entry(reason).or_default() += n;
        self.total += n;
    }

    pub(super) fn note(&mut self, message: String) {
        self.first.get_or_insert(message);
    }

    /// One line per scan, however many reads failed: no error storm.
    pub(super) fn log(&self) {
        if let Some(first) = &self.first {
            log::warn!(
                "{first} ({} read failures in this scan, by reason: {:?})",
                self.total,
                self.by_reason
            );
        }
    }
}

/// Raises the soft limit on open descriptors to the hard one: each scan opens a
/// directory and a file at a time, the API's clients and the probes hold more, and
/// the default soft limit (1024) is the one a flood of clients reaches first.
/// Returns the limit now in force.
pub(super) fn raise_descriptor_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}
