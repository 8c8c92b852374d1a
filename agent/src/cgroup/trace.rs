//! A record of the filesystem calls this thread makes to read cgroups, for the
//! benches' floor: replayed with bare libc calls (no allocation, no parsing), it costs
//! what the kernel makes any scan pay, with exactly the directories and files the
//! scan met on that host. Off unless [`record`] runs: one thread-local check per call.

use std::{cell::RefCell, path::PathBuf};

/// One filesystem call of a scan, in the order made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Opened and listed a directory to its end (the walk).
    List(PathBuf),
    /// Opened a cgroup directory to read files relative to it.
    OpenDir(PathBuf),
    /// Opened (relative to the last [`Call::OpenDir`]) and read a file, or tried to.
    ReadAt(String),
    /// Opened and read a file by its path, or tried to.
    Read(PathBuf),
    /// Looked a path up (stat).
    Stat(PathBuf),
}

thread_local! {
    static CALLS: RefCell<Option<Vec<Call>>> = const { RefCell::new(None) };
}

/// Runs `f`, recording the calls this thread makes through the cgroup readers.
pub fn record<T>(f: impl FnOnce() -> T) -> (T, Vec<Call>) {
    CALLS.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let out = f();
    let calls = CALLS.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (out, calls)
}

/// Notes a call if [`record`] is running on this thread; `call` is built only then.
pub(crate) fn note(call: impl FnOnce() -> Call) {
    CALLS.with(|c| {
        if let Some(calls) = c.borrow_mut().as_mut() {
            calls.push(call());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_inside_record() {
        note(|| Call::Stat("/outside".into()));
        let ((), calls) = record(|| {
            note(|| Call::OpenDir("/a".into()));
            note(|| Call::ReadAt("cpu.stat".into()));
        });
        assert_eq!(
            calls,
            [Call::OpenDir("/a".into()), Call::ReadAt("cpu.stat".into())]
        );
        note(|| Call::Stat("/after".into()));
        assert_eq!(record(|| ()).1, []);
    }
}
