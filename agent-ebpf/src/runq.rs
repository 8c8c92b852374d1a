//! Run-queue latency per cgroup: the time a task spends runnable but not running,
//! from wakeup (or from being preempted while still runnable) until it is switched in,
//! attributed to the cgroup of the task that waited.
//!
//! Hooks (tp_btf, BTF-enabled raw tracepoints, kernel >= 5.5):
//! - `sched_wakeup`, `sched_wakeup_new`: `TP_PROTO(struct task_struct *p)`.
//! - `sched_switch`: `TP_PROTO(bool preempt, struct task_struct *prev,
//!   struct task_struct *next, unsigned int prev_state)`; `prev_state` since 5.18,
//!   before which the outgoing task's state is read from the task.
//! - `sched_process_free`: `TP_PROTO(struct task_struct *p)`, the task is gone.
//! - with blame (`crate::blame`, `runq_switch_blame` for `runq_switch`), also
//!   `sched_migrate_task`: `TP_PROTO(struct task_struct *p, int dest_cpu)`.
//!   Kernels: docs/kernels.md (before 6.1 the agent preallocates the maps).
//!
//! Each task that has waited keeps its `RUNQ_START` entry until it is freed: a wait
//! writes the entry in place (`since_ns`) and the switch-in clears `since_ns`, so the
//! hot path does two lock-free lookups and no insert or delete (a task's first wait
//! inserts). The entry is keyed by the `task_struct` address, unique while the task
//! lives, so a reused thread id cannot meet an older task's entry.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use cgscope_common::{
    histogram::Histogram,
    runq::{drop, QueuedTask, DEFAULT_MAX_CGROUPS, MAX_QUEUED_TASKS},
};

use crate::{
    blame,
    kernel::{
        bump, entry_or_zeroed, load, now_ns, offsets, task_cgroup_id, task_on_cpu, task_pid,
        BPF_F_NO_PREALLOC,
    },
};

/// `TASK_RUNNING`, the `prev_state` of a task that stays on the run queue.
const TASK_RUNNING: u64 = 0;

/// Every task that has waited for a CPU, keyed by its `task_struct` address;
/// `since_ns` non-zero while it waits. Preallocated: these hooks run under the
/// run-queue lock, where nothing may allocate. The agent sizes it to the node.
#[map]
static RUNQ_START: HashMap<u64, QueuedTask> = HashMap::with_max_entries(MAX_QUEUED_TASKS, 0);

/// Per-cgroup run-queue latency histograms, keyed by cgroup id.
#[map]
static RUNQ_HIST: PerCpuHashMap<u64, Histogram> =
    PerCpuHashMap::with_max_entries(DEFAULT_MAX_CGROUPS, BPF_F_NO_PREALLOC);

/// One zeroed histogram: the initial value of a new `RUNQ_HIST` entry (too large for
/// the 512-byte BPF stack).
#[map]
static RUNQ_ZERO: PerCpuArray<Histogram> = PerCpuArray::with_max_entries(1, 0);

/// Events lost, by reason (`cgscope_common::runq::drop`).
#[map]
static RUNQ_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop::SLOTS, 0);

#[btf_tracepoint(function = "sched_wakeup")]
pub fn runq_wakeup(ctx: BtfTracePointContext) -> i32 {
    count_drop(try_wakeup(ctx.arg(0)));
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn runq_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    count_drop(try_wakeup(ctx.arg(0)));
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn runq_switch(ctx: BtfTracePointContext) -> i32 {
    count_drop(try_switch::<false>(&ctx));
    0
}

/// `runq_switch` that also splits each wait by who held the CPU (`crate::blame`);
/// the agent attaches one of the two, this one unless blame is off or the kernel
/// refuses it.
#[btf_tracepoint(function = "sched_switch")]
pub fn runq_switch_blame(ctx: BtfTracePointContext) -> i32 {
    count_drop(try_switch::<true>(&ctx));
    0
}

/// `sched_migrate_task(struct task_struct *p, int dest_cpu)`: a waiting task moved
/// to another CPU's queue. Its wait so far is blamed on the CPU it leaves (whose
/// run-queue lock is held here), the rest will be on `dest_cpu`'s.
#[btf_tracepoint(function = "sched_migrate_task")]
pub fn runq_migrate(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let dest: u32 = ctx.arg(1);
    let Some(queued) = RUNQ_START.get_ptr_mut(&(task as u64)) else {
        return 0;
    };
    // SAFETY: the entry of a task whose run queue is locked: nothing else writes it.
    let queued = unsafe { &mut *queued };
    if queued.since_ns == 0 {
        return 0; // not waiting (a wakeup's placement comes before its wait)
    }
    let now = now_ns();
    blame::settle(queued.cgroup_id, task, queued.cpu, queued.settled_ns, now);
    queued.settled_ns = now;
    queued.cpu = dest;
    0
}

/// `sched_process_free(struct task_struct *p)`: the task is freed (after its last
/// switch); its entry goes, so that `RUNQ_START` holds live tasks only.
#[btf_tracepoint(function = "sched_process_free")]
pub fn runq_free(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let _ = RUNQ_START.remove(&(task as u64));
    0
}

fn try_wakeup(task: *const u8) -> Result<(), u32> {
    let off = offsets();
    // A task woken while it runs (ttwu_runnable) does not wait.
    if task_pid(task, &off) == 0 || task_on_cpu(task, &off) {
        return Ok(());
    }
    let cgroup_id = task_cgroup_id(task, &off)?;
    enqueue(task, cgroup_id, now_ns(), load::<u32>(task, off.task_cpu))
}

fn try_switch<const BLAME: bool>(ctx: &BtfTracePointContext) -> Result<(), u32> {
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let off = offsets();
    // Before 5.18 the tracepoint has no `prev_state`: the task's own state field,
    // read under the same run-queue lock (the agent sets one or the other; the
    // verifier follows only the branch the read-only setting selects).
    let prev_state: u64 = match off.task_state {
        0 => ctx.arg(3),
        state => u64::from(load::<u32>(prev, state)),
    };
    let now = now_ns();
    // The CPU switching: `prev`'s (it is still `current`).
    let cpu = load::<u32>(prev, off.task_cpu);

    // A preempted task (or one that yields) stays runnable: its wait starts now, in
    // its own cgroup. The idle task (pid 0) never waits.
    if (preempt & 0xff != 0 || prev_state & 0xffff_ffff == TASK_RUNNING)
        && task_pid(prev, &off) != 0
    {
        // A full start map or an unreadable cgroup must not also cost `next` its
        // measurement.
        count_drop(task_cgroup_id(prev, &off).and_then(|id| enqueue(prev, id, now, cpu)));
    }

    let next_pid = task_pid(next, &off);
    let queued = match next_pid {
        0 => None,
        _ => RUNQ_START.get_ptr_mut(&(next as u64)).and_then(|entry| {
            // SAFETY: the entry of `next`, whose run queue is locked here.
            let entry = unsafe { &mut *entry };
            if entry.since_ns == 0 {
                return None;
            }
            let queued = *entry;
            entry.since_ns = 0;
            Some(queued)
        }),
    };
    if BLAME {
        if let Some(q) = &queued {
            blame::settle(q.cgroup_id, next, cpu, q.settled_ns, now);
        }
        if next_pid == 0 {
            blame::flush_cpu(cpu);
        }
        let known = queued.map(|q| q.cgroup_id);
        blame::occupy(cpu, now, blame::occupant(next, next_pid, known));
    }
    match queued {
        Some(q) => record(q.cgroup_id, now.saturating_sub(q.since_ns)),
        None => Ok(()),
    }
}

/// `task` waits from `now` on `cpu`'s queue: its entry written in place, or
/// created at its first wait.
#[inline(always)]
fn enqueue(task: *const u8, cgroup_id: u64, now: u64, cpu: u32) -> Result<(), u32> {
    let queued = QueuedTask {
        since_ns: now,
        cgroup_id,
        settled_ns: now,
        cpu,
        _pad: 0,
    };
    let key = task as u64;
    if let Some(entry) = RUNQ_START.get_ptr_mut(&key) {
        // SAFETY: the entry of `task`, whose run queue is locked here.
        unsafe { *entry = queued };
        return Ok(());
    }
    RUNQ_START
        .insert(&key, &queued, 0)
        .map_err(|_| drop::START_FULL)
}

#[inline(always)]
fn record(cgroup_id: u64, delay_ns: u64) -> Result<(), u32> {
    let hist = entry_or_zeroed!(RUNQ_HIST, &cgroup_id, RUNQ_ZERO).ok_or(drop::HIST_FULL)?;
    // SAFETY: a per-CPU map value, only written from this CPU with preemption off.
    unsafe { (*hist).record(delay_ns) };
    Ok(())
}

#[inline(always)]
fn count_drop(result: Result<(), u32>) {
    if let Err(slot) = result {
        bump(&RUNQ_DROPS, slot);
    }
}
