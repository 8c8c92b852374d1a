//! OOM kills, per victim: its cgroup, pid and command.
//!
//! Hooks, one of which the agent attaches:
//! - tp_btf `mark_victim` where it passes the victim task (6.8+): no trampoline
//!   needed, so it also works where fentry is not available.
//! - fentry on `__oom_kill_process(struct task_struct *victim, const char *message)`
//!   before that: the function through which every OOM kill goes (global and memcg
//!   OOM, each member of a `memory.oom.group`), where the kernel counts
//!   `memory.events` `oom_kill`.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, fentry, map},
    maps::{PerCpuArray, Queue},
    programs::{BtfTracePointContext, FEntryContext},
};
use cgscope_common::oom::{drop, OomVictim, MAX_VICTIMS};

use crate::kernel::{
    bump, cgroup_ancestors, offsets, task_cgroup, task_cgroup_id, task_comm, task_tgid,
    ROOT_CGROUP_ID,
};

/// Kills not yet read by the agent.
#[map]
static OOM_VICTIMS: Queue<OomVictim> = Queue::with_max_entries(MAX_VICTIMS, 0);

/// Events lost, by reason (`cgscope_common::oom::drop`).
#[map]
static OOM_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop::SLOTS, 0);

/// Kernels >= 6.8: `mark_victim(struct task_struct *task, uid_t uid)`, in
/// `mark_oom_victim`, for each victim of a kill (and for a task that was already
/// exiting when it hit the OOM, which the kernel then lets die without a kill).
#[btf_tracepoint(function = "mark_victim")]
pub fn oom_mark_victim(ctx: BtfTracePointContext) -> i32 {
    report(ctx.arg(0));
    0
}

/// Kernels before 6.8, whose `mark_victim` passes only a pid.
#[fentry(function = "__oom_kill_process")]
pub fn oom_kill(ctx: FEntryContext) -> i32 {
    report(ctx.arg(0));
    0
}

#[inline(always)]
fn report(victim: *const u8) {
    let off = offsets();
    let cgroup_id = task_cgroup_id(victim, &off).unwrap_or_else(|_| {
        count(drop::CGROUP_UNREADABLE);
        ROOT_CGROUP_ID
    });
    let killed = OomVictim {
        cgroup_id,
        // SAFETY: helper without preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        pid: task_tgid(victim, &off),
        _pad: 0,
        comm: task_comm(victim, &off),
        ancestors: cgroup_ancestors(task_cgroup(victim, &off), &off),
    };
    if OOM_VICTIMS.push(&killed, 0).is_err() {
        count(drop::QUEUE_FULL);
    }
}

#[inline(always)]
fn count(slot: u32) {
    bump(&OOM_DROPS, slot);
}
