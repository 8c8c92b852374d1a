//! Run-queue latency: what the `runq` programs keep in the kernel.

/// Default capacity of `RUNQ_START`: one entry per live task that has waited for a
/// CPU since the probe attached (an entry goes when its task is freed). The agent
/// sizes it to the node at load ([`start_capacity`]); a task that finds it full is
/// not measured and counted as `START_FULL`.
pub const MAX_QUEUED_TASKS: u32 = 32_768;

/// `RUNQ_START`'s capacity for a node running `tasks` tasks now: four times that
/// (tasks come and go), at least [`MAX_QUEUED_TASKS`], at most 2^20 (about 90 MiB
/// of kernel memory, preallocated).
pub fn start_capacity(tasks: u32) -> u32 {
    tasks.saturating_mul(4).clamp(MAX_QUEUED_TASKS, 1 << 20)
}

/// Default capacity of `RUNQ_HIST`, one entry per cgroup that ran a task. The agent
/// overrides it from its configuration and deletes the entries of removed cgroups.
pub const DEFAULT_MAX_CGROUPS: u32 = 4_096;

/// Slots of `RUNQ_DROPS`.
pub mod drop {
    /// `RUNQ_START` could not take a new entry.
    pub const START_FULL: u32 = 0;
    /// `RUNQ_HIST` is full: a new cgroup could not get a histogram.
    pub const HIST_FULL: u32 = 1;
    /// A task's cgroup id could not be read (a bad pointer on the way).
    pub const READ_FAILED: u32 = 2;
    /// Number of slots.
    pub const SLOTS: u32 = 3;
}

/// When a task became runnable, and the cgroup it waits in. Value of `RUNQ_START`,
/// keyed by the task's `task_struct` address (`u64`); `since_ns` is 0 while the
/// task is not waiting.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct QueuedTask {
    /// `bpf_ktime_get_ns()` at wakeup or preemption.
    pub since_ns: u64,
    /// cgroup v2 id (inode number of the cgroup directory).
    pub cgroup_id: u64,
    /// Where the wait's blame has been split up to (it moves at each migration).
    pub settled_ns: u64,
    /// The CPU whose run queue it waits on.
    pub cpu: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<QueuedTask>() == 32);

/// Kernel struct field offsets, resolved by the agent from the running kernel's BTF
/// and written into the programs' read-only globals before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.on_cpu` (1 while the task runs on a CPU): `int`, or one byte
    /// (7.x), as `task_on_cpu_size` says
    pub task_on_cpu: u32,
    /// `task_struct.cgroups` (`struct css_set *`)
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp` (`struct cgroup *`, the cgroup v2 one)
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn` (`struct kernfs_node *`)
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (`u64`, the cgroup id; since 5.5)
    pub kernfs_node_id: u32,
    /// `task_struct.tgid` (the process id)
    pub task_tgid: u32,
    /// `task_struct.comm` (`char[16]`)
    pub task_comm: u32,
    /// `kernfs_node.parent` (`struct kernfs_node *`; `__parent` since 6.15): a
    /// cgroup's parent directory, whose id is the parent cgroup's.
    pub kernfs_node_parent: u32,
    /// `task_struct.flags` (`unsigned int`; `PF_KTHREAD` marks kernel threads)
    pub task_flags: u32,
    /// `task_struct.cpu` (5.16+), else `task_struct.thread_info.cpu`: the CPU whose
    /// run queue the task is on.
    pub task_cpu: u32,
    /// `cfs_rq.rq` (`struct rq *`); this and the next three only for blame's
    /// throttle programs, 0 where the kernel has no group scheduling.
    pub cfs_rq_rq: u32,
    /// `cfs_rq.tg` (`struct task_group *`)
    pub cfs_rq_tg: u32,
    /// `task_group.css.cgroup` (`struct cgroup *`, inside the embedded `css`)
    pub task_group_css_cgroup: u32,
    /// `rq.cpu` (`int`)
    pub rq_cpu: u32,
    /// 0 where `sched_switch` passes `prev_state` (5.18+); else where the outgoing
    /// task's state is read instead: `task_struct.__state` (`unsigned int`, 5.14+) or
    /// `task_struct.state` (`long`, before; its low 32 bits, little-endian).
    pub task_state: u32,
    /// The width of `task_struct.on_cpu` in bytes: 4 or 1.
    pub task_on_cpu_size: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<TaskOffsets>() == 72);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), Copy, explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::QueuedTask {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TaskOffsets {}

    // SAFETY: as above.
    unsafe impl aya::Pod for crate::histogram::Histogram {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_capacity_is_four_times_the_tasks_within_its_bounds() {
        assert_eq!(start_capacity(0), MAX_QUEUED_TASKS);
        assert_eq!(start_capacity(300), MAX_QUEUED_TASKS);
        assert_eq!(start_capacity(10_000), 40_000);
        assert_eq!(start_capacity(u32::MAX), 1 << 20);
    }
}
