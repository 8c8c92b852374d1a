//! Docker-like container cgroups (`docker-<id>.scope`) with one task each, for the
//! benches that measure an agent on a dense node: `scale`, and `cargo xtask bench
//! agents`, which includes this file. The tasks are forked children that die with
//! the bench; on drop they are killed and the cgroups removed.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

/// What a container's task runs, given its index: only async-signal-safe calls
/// (raw syscalls, no allocation), since the parent may have threads when it forks.
pub type Body = fn(usize) -> !;

#[derive(Default)]
pub struct Containers {
    slices: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    tasks: Vec<libc::pid_t>,
}

impl Containers {
    /// `n` containers under `root/<slice>` (created), each with a task running `body`.
    pub fn add(&mut self, root: &Path, slice: &str, n: usize, body: Body) -> io::Result<()> {
        let slice = root.join(slice);
        std::fs::create_dir(&slice)?;
        self.slices.push(slice.clone());
        enable_controllers(&slice)?;
        for i in 0..n {
            let id = (i as u128) << 64 | self.dirs.len() as u128;
            let dir = slice.join(format!("docker-{id:064x}.scope"));
            std::fs::create_dir(&dir)?;
            self.dirs.push(dir.clone());
            let task = spawn(i, body)?;
            self.tasks.push(task);
            std::fs::write(dir.join("cgroup.procs"), task.to_string())?;
        }
        Ok(())
    }

    /// Every container's cgroup path below `root` (`/slice/docker-<id>.scope`), as the
    /// agent names it.
    pub fn paths(&self, root: &Path) -> Vec<String> {
        self.dirs
            .iter()
            .filter_map(|d| Some(format!("/{}", d.strip_prefix(root).ok()?.display())))
            .collect()
    }
}

/// Enables in `dir`'s children every controller `dir` has, as a node's container
/// manager does for its slices: then each container has the cpu, memory, io and pids
/// files an agent reads on a real node (none on a hybrid host's v2 mount).
pub fn enable_controllers(dir: &Path) -> io::Result<()> {
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))?;
    let enable: Vec<String> = controllers
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if enable.is_empty() {
        return Ok(());
    }
    std::fs::write(dir.join("cgroup.subtree_control"), enable.join(" "))
}

impl Drop for Containers {
    fn drop(&mut self) {
        for &task in &self.tasks {
            // SAFETY: signals and reaps only children this bench forked.
            unsafe {
                libc::kill(task, libc::SIGKILL);
                libc::waitpid(task, std::ptr::null_mut(), 0);
            }
        }
        for d in self.dirs.iter().chain(&self.slices) {
            // A cgroup whose last task was just reaped can refuse removal (EBUSY)
            // for a moment, until the kernel has finished the task's exit.
            for _ in 0..100 {
                match std::fs::remove_dir(d) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        sleep(Duration::from_millis(10))
                    }
                    _ => break,
                }
            }
        }
    }
}

/// A child running `body(i)`, killed when the bench exits.
fn spawn(i: usize, body: Body) -> io::Result<libc::pid_t> {
    // SAFETY: the child sets its death signal and runs `body`, which never returns
    // and makes only async-signal-safe calls.
    unsafe {
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                body(i)
            }
            pid => Ok(pid),
        }
    }
}

/// nanosleep, without allocating.
pub fn sleep(d: Duration) {
    let t = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid timespec; the remainder is not wanted.
    unsafe { libc::nanosleep(&t, std::ptr::null_mut()) };
}

/// The phase of task `i` within a second, so that the wakeups of many spread out.
pub fn phase(i: usize) -> Duration {
    Duration::from_micros(997 * i as u64 % 1_000_000)
}

/// An idle container: its task never wakes.
pub fn sleep_forever(_: usize) -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// A container whose task wakes up once a second and does nothing else.
pub fn wake_every_second(i: usize) -> ! {
    sleep(phase(i));
    loop {
        sleep(Duration::from_secs(1));
    }
}
