//! Helpers for the integration tests: real cgroups under the v2 root, real
//! processes in them, cleaned up on drop (also when an assertion fails).

#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use nix::{
    sched::{sched_setaffinity, CpuSet},
    sys::{
        signal::{kill, Signal},
        wait::waitpid,
    },
    unistd::{fork, ForkResult, Pid},
};

/// Why the test cannot run here, or `None` if it can.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (CAP_BPF, CAP_PERFMON, writing cgroupfs)".into());
    }
    if let Err(e) = cgscope::sampler::resolve_root(None) {
        return Some(format!("no usable cgroup v2: {e}"));
    }
    None
}

/// Skips the calling test with a visible reason when it cannot run here.
#[macro_export]
macro_rules! require_root_and_cgroup_v2 {
    () => {
        if let Some(reason) = common::skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// The cgroup v2 mount point of this host.
pub fn v2_root() -> PathBuf {
    cgscope::sampler::resolve_root(None).expect("cgroup v2").1
}

/// A cgroup created for one test, directly under the v2 root. Dropping it kills the
/// processes the test started in it and removes the directory.
pub struct TestCgroup {
    pub dir: PathBuf,
    /// Path relative to the v2 root, as cgscope reports it.
    pub path: String,
    pids: Vec<Pid>,
}

impl TestCgroup {
    pub fn create(name: &str) -> Self {
        let path = format!("/cgscope-test-{}-{name}", std::process::id());
        let dir = v2_root().join(&path[1..]);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self {
            dir,
            path,
            pids: Vec::new(),
        }
    }

    /// The cgroup id cgscope reports: the directory's inode.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.dir)
            .expect("stat test cgroup")
            .ino()
    }

    /// Forks a child that runs `body` forever, moves it into this cgroup and, if
    /// given, pins it to `cpu`.
    pub fn spawn(&mut self, cpu: Option<usize>, body: fn() -> !) -> Pid {
        // SAFETY: the child only runs `body`, which spins or pauses: no allocation,
        // no locks, nothing that fork in a threaded process makes unsafe.
        let pid = match unsafe { fork() }.expect("fork") {
            ForkResult::Child => body(),
            ForkResult::Parent { child } => child,
        };
        self.pids.push(pid);
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .expect("move child into the test cgroup");
        if let Some(cpu) = cpu {
            let mut set = CpuSet::new();
            set.set(cpu).expect("cpu index");
            sched_setaffinity(pid, &set).expect("pin child");
        }
        pid
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for pid in self.pids.drain(..) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// A CPU-bound child body.
pub fn spin() -> ! {
    loop {
        std::hint::spin_loop();
    }
}

/// An idle child body.
pub fn sleep_forever() -> ! {
    loop {
        // SAFETY: pause(2) has no preconditions.
        unsafe { libc::pause() };
    }
}

/// `(cpu_time, run_delay)` in nanoseconds from `/proc/<pid>/schedstat`, the
/// scheduler's own accounting: the ground truth for run-queue latency.
pub fn schedstat(pid: Pid) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("schedstat");
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().expect("schedstat field"));
    (
        fields.next().expect("cpu_time"),
        fields.next().expect("run_delay"),
    )
}
