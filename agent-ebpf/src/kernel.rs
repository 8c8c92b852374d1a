//! Reading kernel structs without CO-RE relocations.
//!
//! rustc emits no BTF field relocations, so field offsets cannot be patched by the
//! loader. Instead the agent resolves them from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) and writes them into read-only globals before load;
//! every read goes through `bpf_probe_read_kernel`, which tolerates any address.
//! That is correct on every kernel with BTF for the same reason CO-RE is: the offsets
//! come from the BTF of the kernel the program runs on.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use cgscope_common::runq::{drop, TaskOffsets};

/// Offsets of the task fields the probes read; set by the agent at load time.
#[unsafe(no_mangle)]
static TASK_OFFSETS: TaskOffsets = TaskOffsets {
    task_pid: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    _pad: 0,
};

#[inline(always)]
pub fn offsets() -> TaskOffsets {
    // SAFETY: a plain read of an initialised static; volatile so that the compiler
    // does not fold the zero initialiser: the loader rewrites the value.
    unsafe { core::ptr::read_volatile(&TASK_OFFSETS) }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Result<T, u32> {
    // SAFETY: bpf_probe_read_kernel validates the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .map_err(|_| drop::READ_FAILED)
}

/// `task->pid`: the thread id in the initial pid namespace.
#[inline(always)]
pub fn task_pid(task: *const u8, off: &TaskOffsets) -> Result<u32, u32> {
    read::<u32>(task, off.task_pid)
}

/// `task->cgroups->dfl_cgrp->kn->id`: the cgroup v2 id of any task, the value
/// `bpf_get_current_cgroup_id()` returns for the current one.
#[inline(always)]
pub fn task_cgroup_id(task: *const u8, off: &TaskOffsets) -> Result<u64, u32> {
    let css_set = read::<*const u8>(task, off.task_cgroups)?;
    let cgroup = read::<*const u8>(css_set, off.css_set_dfl_cgrp)?;
    let kn = read::<*const u8>(cgroup, off.cgroup_kn)?;
    read::<u64>(kn, off.kernfs_node_id)
}
