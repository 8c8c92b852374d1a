//! Reading kernel structs without CO-RE relocations.
//!
//! rustc emits no BTF field relocations, so field offsets cannot be patched by the
//! loader. Instead the agent resolves them from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) and writes them into read-only globals before load.
//! That is correct on every kernel with BTF for the same reason CO-RE is: the offsets
//! come from the BTF of the kernel the program runs on.
//!
//! The reads are direct loads, not `bpf_probe_read_kernel` calls. The task pointers
//! of tp_btf programs are BTF pointers, and `.rodata` is frozen and read-only for
//! programs, so the verifier knows each offset as a constant: it checks every load
//! against the kernel's own struct layout (offset and size must match a member) and
//! turns it into a fault-tolerant load (a bad pointer reads 0). No helper call, no
//! copy through the stack: about a quarter of the cost of a probe read.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::PerCpuArray};
use cgscope_common::runq::{drop, TaskOffsets};

/// `BPF_F_NO_PREALLOC`: a hash map allocates entries as they are created, not its
/// whole capacity (times the CPUs, for per-CPU maps) up front.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// The root cgroup's id: what is counted where no cgroup can be read.
pub const ROOT_CGROUP_ID: u64 = 1;

/// Offsets of the task fields the probes read; set by the agent at load time.
#[unsafe(no_mangle)]
static TASK_OFFSETS: TaskOffsets = TaskOffsets {
    task_pid: 0,
    task_on_cpu: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    task_tgid: 0,
    task_comm: 0,
    kernfs_node_parent: 0,
    task_flags: 0,
    task_cpu: 0,
    cfs_rq_rq: 0,
    cfs_rq_tg: 0,
    task_group_css_cgroup: 0,
    rq_cpu: 0,
    task_state: 0,
    task_on_cpu_size: 0,
    _pad: 0,
};

#[inline(always)]
pub fn offsets() -> TaskOffsets {
    loaded(&TASK_OFFSETS)
}

/// The value of a global the agent writes at load time (a probe's configuration).
#[inline(always)]
pub fn loaded<T: Copy>(global: &'static T) -> T {
    // SAFETY: a plain read of an initialised static; volatile so that the compiler
    // does not fold the zero initialiser: the loader rewrites the value.
    unsafe { core::ptr::read_volatile(global) }
}

/// A pointer to `key`'s value in the hash map `map` (per-CPU or shared), created
/// from the zeroed value at index 0 of the array `zero` (values too large for the
/// stack) where it is missing; `None` when the map is full. Another CPU creating
/// it first (`EEXIST`) is fine: its entry is the one returned.
macro_rules! entry_or_zeroed {
    ($map:expr, $key:expr, $zero:expr) => {
        match $map.get_ptr_mut($key) {
            Some(value) => Some(value),
            None => $zero.get(0).and_then(|zero| {
                let _ = $map.insert($key, zero, u64::from(aya_ebpf::bindings::BPF_NOEXIST));
                $map.get_ptr_mut($key)
            }),
        }
    };
}
pub(crate) use entry_or_zeroed;

/// The clock of every probe: `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Loads a `T` at `base + offset` from a BTF pointer.
#[inline(always)]
pub fn load<T: Copy>(base: *const u8, offset: u32) -> T {
    // SAFETY: `base` is a BTF pointer (a tp_btf argument or a pointer loaded from
    // one) and `offset` a verifier-known constant: the verifier checks the access
    // against the kernel's BTF and makes it fault-tolerant. Volatile keeps it a
    // single load of exactly `size_of::<T>()` bytes, which the BTF check requires.
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// `task->pid`: the thread id in the initial pid namespace.
#[inline(always)]
pub fn task_pid(task: *const u8, off: &TaskOffsets) -> u32 {
    load::<u32>(task, off.task_pid)
}

/// `task->tgid`: the process id in the initial pid namespace.
#[inline(always)]
pub fn task_tgid(task: *const u8, off: &TaskOffsets) -> u32 {
    load::<u32>(task, off.task_tgid)
}

/// `task->comm`, NUL-padded. Two 8-byte loads inside the array member, which the
/// verifier allows (it checks the access against the end of the array).
#[inline(always)]
pub fn task_comm(task: *const u8, off: &TaskOffsets) -> [u8; 16] {
    let head = load::<u64>(task, off.task_comm).to_ne_bytes();
    let tail = load::<u64>(task, off.task_comm + 8).to_ne_bytes();
    let mut comm = [0u8; 16];
    comm[..8].copy_from_slice(&head);
    comm[8..].copy_from_slice(&tail);
    comm
}

/// `task->on_cpu`: whether the task is running on a CPU right now.
#[inline(always)]
pub fn task_on_cpu(task: *const u8, off: &TaskOffsets) -> bool {
    // One byte since 7.x; the verifier follows only the branch the read-only
    // setting selects.
    match off.task_on_cpu_size {
        1 => load::<u8>(task, off.task_on_cpu) != 0,
        _ => load::<u32>(task, off.task_on_cpu) != 0,
    }
}

/// `cgroup->kn->id` of a `struct cgroup *`: its id, the inode number of its v2
/// directory. `None` (no cgroup has id 0) if a pointer on the way was bad.
#[inline(always)]
pub fn cgroup_id(cgroup: *const u8, off: &TaskOffsets) -> Option<u64> {
    let kn = load::<*const u8>(cgroup, off.cgroup_kn);
    match load::<u64>(kn, off.kernfs_node_id) {
        0 => None,
        id => Some(id),
    }
}

/// `task->cgroups->dfl_cgrp`: the cgroup v2 of any task.
#[inline(always)]
pub fn task_cgroup(task: *const u8, off: &TaskOffsets) -> *const u8 {
    let css_set = load::<*const u8>(task, off.task_cgroups);
    load::<*const u8>(css_set, off.css_set_dfl_cgrp)
}

/// `task->cgroups->dfl_cgrp->kn->id`: the cgroup v2 id of any task, the value
/// `bpf_get_current_cgroup_id()` returns for the current one.
#[inline(always)]
pub fn task_cgroup_id(task: *const u8, off: &TaskOffsets) -> Result<u64, u32> {
    cgroup_id(task_cgroup(task, off), off).ok_or(drop::READ_FAILED)
}

/// The ids of the ancestors of `cgroup`, parent first, up to `N` (0 past the root):
/// the chain of its directory's `kernfs_node` parents.
#[inline(always)]
pub fn cgroup_ancestors<const N: usize>(cgroup: *const u8, off: &TaskOffsets) -> [u64; N] {
    let mut ids = [0u64; N];
    let mut kn = load::<*const u8>(cgroup, off.cgroup_kn);
    for id in ids.iter_mut() {
        kn = load::<*const u8>(kn, off.kernfs_node_parent);
        if kn.is_null() {
            break;
        }
        *id = load::<u64>(kn, off.kernfs_node_id);
    }
    ids
}

/// Runs `$body` once for each `$i` in `0..8` or `0..16`, as straight-line code.
/// Kernels before 6.3 refuse some loops the compiler lays out with the jump back
/// as a fall-through ("back-edge"); unrolled code has no loop to refuse. Leave
/// early with a labelled block around it.
macro_rules! unroll {
    ($i:ident in 0..8 => $body:block) => {
        unroll!(@ $i [0 1 2 3 4 5 6 7] $body)
    };
    ($i:ident in 0..16 => $body:block) => {
        unroll!(@ $i [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15] $body)
    };
    (@ $i:ident [$($n:literal)*] $body:block) => {
        $({
            let $i: usize = $n;
            $body
        })*
    };
}
pub(crate) use unroll;

/// Adds one to slot `slot` of a per-CPU counter array.
#[inline(always)]
pub fn bump(counters: &PerCpuArray<u64>, slot: u32) {
    if let Some(counter) = counters.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot, written from this CPU only, preemption off.
        unsafe { *counter += 1 };
    }
}
