//! Helpers for the integration tests: real cgroups under the v2 root, real
//! processes in them, cleaned up on drop (also when an assertion fails).

#![allow(dead_code)]

mod agent;
mod netns;
pub mod truth;

// Each test binary uses some of these: the others are not unused code.
#[allow(unused_imports)]
pub use agent::*;
#[allow(unused_imports)]
pub use netns::*;

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

/// Skips the calling test with a visible reason when it cannot create network
/// namespaces here.
#[macro_export]
macro_rules! require_network_namespaces {
    () => {
        if let Some(reason) = common::netns_skip_reason() {
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
    pub(crate) pids: Vec<Pid>,
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
            pin(pid, cpu);
        }
        pid
    }
}

/// The sample of the cgroup at `path` (as cgscope reports it) in a snapshot.
pub fn find<'a>(
    cgroups: &'a [cgscope::snapshot::CgroupSample],
    path: &str,
) -> &'a cgscope::snapshot::CgroupSample {
    cgroups
        .iter()
        .find(|c| c.path == path)
        .unwrap_or_else(|| panic!("{path} missing from the snapshot"))
}

/// Freezes (or thaws) the cgroup `dir` with `cgroup.freeze` and waits until the
/// kernel reports it done in `cgroup.events`: a frozen cgroup's tasks neither run
/// nor wait, so what is read while it is frozen is exact at both ends of a window.
pub fn set_frozen(dir: &std::path::Path, frozen: bool) {
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    std::fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })
        .unwrap_or_else(|e| panic!("cgroup.freeze in {}: {e}", dir.display()));
    for _ in 0..500 {
        let events = std::fs::read_to_string(dir.join("cgroup.events")).expect("cgroup.events");
        if events.lines().any(|l| l == want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("{} did not become `{want}` within a second", dir.display());
}

/// The CPUs this test may run on (its affinity), lowest first.
pub fn allowed_cpus() -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// Pins a child this test started to one CPU.
pub fn pin(pid: Pid, cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("cpu index");
    sched_setaffinity(pid, &set).expect("pin child");
}

/// Kills and reaps the children a test started.
fn reap(pids: &mut Vec<Pid>) {
    for pid in pids.drain(..) {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

/// Removes an empty cgroup directory, retrying while the kernel still counts the
/// exiting tasks in it. False if it is still there after a second.
pub fn remove_cgroup_dir(dir: &std::path::Path) -> bool {
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        reap(&mut self.pids);
        if !remove_cgroup_dir(&self.dir) {
            eprintln!("warning: could not remove {}", self.dir.display());
        }
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
    let (cpu_time, run_delay, _) = schedstat_arrivals(pid);
    (cpu_time, run_delay)
}

/// `/proc/<pid>/schedstat` whole: `(cpu_time, run_delay, pcount)`, where `pcount`
/// counts the times the task was switched in, each the end of a run-queue wait
/// (`sched_info_arrive`).
pub fn schedstat_arrivals(pid: Pid) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("schedstat");
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().expect("schedstat field"));
    (
        fields.next().expect("cpu_time"),
        fields.next().expect("run_delay"),
        fields.next().expect("pcount"),
    )
}

/// A tree of test cgroups below one top directory `/cgscope-test-<pid>-<name>`;
/// dropping it kills the processes started in it and removes every directory,
/// deepest first.
pub struct TestTree {
    pub top: TestCgroup,
    dirs: Vec<PathBuf>,
}

impl TestTree {
    pub fn create(name: &str) -> Self {
        Self {
            top: TestCgroup::create(name),
            dirs: Vec::new(),
        }
    }

    /// Creates `rel` (and its parents) below the top; returns its path as cgscope
    /// reports it.
    pub fn mkdir(&mut self, rel: &str) -> String {
        self.make(rel, false)
    }

    /// [`Self::mkdir`], enabling at each level every controller the level has for
    /// its children, as a runtime delegates them (containerd, systemd): `rel` then
    /// has `cpu.max`, `memory.*` and `io.stat` wherever the host's root offers them
    /// (a hybrid host's offers none).
    pub fn mkdir_delegated(&mut self, rel: &str) -> String {
        self.make(rel, true)
    }

    /// A kubepods-style pod slice `pod` with one cri-containerd scope per id in
    /// `ids`, each running a busy loop pinned to CPU 0: together they use at most
    /// one CPU. Returns the containers' directories.
    pub fn spinning_pod(&mut self, pod: &str, ids: &[String]) -> Vec<PathBuf> {
        ids.iter()
            .map(|id| {
                let rel = format!("{pod}/cri-containerd-{id}.scope");
                self.mkdir(&rel);
                self.spawn(&rel, || pin(Pid::from_raw(0), 0), spin);
                self.top.dir.join(&rel)
            })
            .collect()
    }

    /// Creates `rel` level by level; with `delegate`, each level first enables for
    /// its children every controller it has.
    fn make(&mut self, rel: &str, delegate: bool) -> String {
        let mut dir = self.top.dir.clone();
        for part in rel.split('/') {
            if delegate {
                let offered =
                    std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
                let enable: Vec<String> = offered
                    .split_whitespace()
                    .map(|c| format!("+{c}"))
                    .collect();
                if !enable.is_empty() {
                    std::fs::write(dir.join("cgroup.subtree_control"), enable.join(" "))
                        .unwrap_or_else(|e| panic!("enable {enable:?} in {}: {e}", dir.display()));
                }
            }
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                self.dirs.push(dir.clone());
            }
        }
        format!("{}/{rel}", self.top.path)
    }

    /// Forks a child running `body` (after `setup` ran in it) into the cgroup `rel`.
    pub fn spawn(&mut self, rel: &str, setup: impl FnOnce(), body: fn() -> !) -> Pid {
        // SAFETY: the child runs `setup` (a raw syscall) and `body`: nothing that
        // fork in a threaded process makes unsafe.
        let pid = match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                setup();
                body()
            }
            ForkResult::Parent { child } => child,
        };
        self.top.pids.push(pid);
        let procs = self.top.dir.join(rel).join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).expect("move child into its cgroup");
        pid
    }
}

impl Drop for TestTree {
    fn drop(&mut self) {
        // Also the processes our workloads forked (cgroup.kill: Linux 5.14+).
        let _ = std::fs::write(self.top.dir.join("cgroup.kill"), "1");
        reap(&mut self.top.pids);
        for dir in self.dirs.iter().rev() {
            remove_cgroup_dir(dir);
        }
    }
}

/// Why a test that needs these controllers enabled below the v2 root cannot run.
pub fn missing_controllers(wanted: &[&str]) -> Option<String> {
    let enabled =
        std::fs::read_to_string(v2_root().join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "controllers {missing:?} not enabled at the v2 root (hybrid host?); runs in the VMs"
        )
    })
}

impl TestCgroup {
    /// A command whose process joins this cgroup before it execs, so that all of
    /// its work is accounted here.
    pub fn command(&self, program: &str) -> std::process::Command {
        command_in(&self.dir, program)
    }
}

impl TestTree {
    /// Starts `cmd` (from [`command_in`]) and kills it with the tree.
    // The child is reaped by PID with the tree's others (`reap`), not by `Child::wait`.
    #[allow(clippy::zombie_processes)]
    pub fn start(&mut self, mut cmd: std::process::Command) -> Pid {
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a workload");
        let pid = Pid::from_raw(child.id() as i32);
        self.top.pids.push(pid);
        pid
    }
}

/// A command whose process joins the cgroup at `dir` before it execs.
pub fn command_in(dir: &std::path::Path, program: &str) -> std::process::Command {
    {
        use std::os::unix::process::CommandExt;
        let procs = std::ffi::CString::new(dir.join("cgroup.procs").to_string_lossy().into_owned())
            .expect("path");
        let mut cmd = std::process::Command::new(program);
        // SAFETY: only open/write/close between fork and exec: async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        cmd
    }
}

impl TestCgroup {
    /// Waits up to `timeout` for a child started by `spawn` to exit.
    pub fn wait_exit(&self, pid: Pid, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return true,
            }
        }
        false
    }
}

/// Whether `program` runs here.
pub fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok()
}

/// What fio reported of a read job.
pub struct FioReads {
    pub ios: u64,
    pub iops: f64,
    pub clat_p50_seconds: f64,
}

impl TestCgroup {
    /// fio in this cgroup: O_DIRECT random reads of `block` bytes at queue depth 1
    /// for `seconds` on `device`.
    pub fn fio_reads(&self, device: &str, block: &str, seconds: u32) -> FioReads {
        let out = self
            .command("fio")
            .args(["--name=cgscope", "--rw=randread", "--direct=1"])
            .args(["--ioengine=psync", "--time_based", "--output-format=json"])
            .arg(format!("--bs={block}"))
            .arg(format!("--filename={device}"))
            .arg(format!("--runtime={seconds}"))
            .output()
            .expect("run fio");
        assert!(
            out.status.success(),
            "fio: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fio JSON");
        let read = &report["jobs"][0]["read"];
        FioReads {
            ios: read["total_ios"].as_u64().expect("total_ios"),
            iops: read["iops"].as_f64().expect("iops"),
            clat_p50_seconds: read["clat_ns"]["percentile"]["50.000000"]
                .as_f64()
                .expect("clat p50")
                * 1e-9,
        }
    }
}

/// The command (`comm`) of [`eat_memory`]'s process.
pub const HOG_COMMAND: &std::ffi::CStr = c"cgscope-hog";

/// A child body that maps and touches memory until the kernel stops it; its
/// command is [`HOG_COMMAND`].
pub fn eat_memory() -> ! {
    const CHUNK: usize = 1 << 20;
    // SAFETY: prctl with a NUL-terminated name: async-signal-safe.
    unsafe { libc::prctl(libc::PR_SET_NAME, HOG_COMMAND.as_ptr()) };
    loop {
        // SAFETY: an anonymous private mapping, written only within its length.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                CHUNK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::_exit(2);
            }
            let bytes = p.cast::<u8>();
            for page in (0..CHUNK).step_by(4096) {
                bytes.add(page).write_volatile(1);
            }
        }
    }
}
