//! Hash maps allocated as they fill, or preallocated: chosen per kernel at load time.
//!
//! The per-cgroup maps are created with `BPF_F_NO_PREALLOC`: memory for the cgroups
//! that exist, not for the most there could be. That is safe only where the kernel
//! allocates map elements with its BPF memory allocator (6.1+, `struct
//! bpf_mem_alloc`). Before, an insert calls `kmalloc(GFP_ATOMIC)` in the program's
//! context; the run-queue programs run with the run-queue lock held, and an
//! allocation that wakes a task (kswapd, the per-CPU allocator's balance work)
//! takes that lock again: the CPU deadlocks (seen on 5.10: the first runq test
//! hung the guest). The kernel does not refuse such maps for tp_btf and fentry
//! programs, so the loader must: there every hash map is preallocated, and
//! `check` and the probes' notes say what that costs.
//!
//! The maps are legacy definitions (`struct bpf_map_def`, 28 bytes: type, key
//! size, value size, max entries, flags, id, pinning) in the object's `maps`
//! section, one symbol per map: the flag is cleared there before aya reads them.

use object::{Object, ObjectSection, ObjectSymbol};

use super::ProbeError;

const BPF_F_NO_PREALLOC: u32 = 1;
/// Offset of `map_flags` in `struct bpf_map_def`.
const FLAGS_OFFSET: u64 = 16;

/// Whether the running kernel allocates map elements safely in any context.
pub fn kernel_allocates_safely(btf: &crate::btf::Btf) -> bool {
    btf.has_struct("bpf_mem_alloc")
}

/// A copy of the eBPF object `elf` whose maps are all preallocated, and the names
/// of the maps that were not.
pub fn preallocate(elf: &[u8]) -> Result<(Vec<u8>, Vec<String>), ProbeError> {
    let bad = |what: &str| ProbeError::Load(format!("eBPF object: {what}"));
    let file = object::File::parse(elf).map_err(|e| bad(&e.to_string()))?;
    let section = file
        .section_by_name("maps")
        .ok_or_else(|| bad("no maps section"))?;
    let (start, size) = section
        .file_range()
        .ok_or_else(|| bad("maps section without file data"))?;
    let mut patched = elf.to_vec();
    let mut names = Vec::new();
    for symbol in file.symbols() {
        if symbol.section_index() != Some(section.index()) {
            continue;
        }
        let at = symbol.address() + FLAGS_OFFSET;
        if at + 4 > size {
            return Err(bad("map definition past the end of the maps section"));
        }
        let at = (start + at) as usize;
        let flags = u32::from_le_bytes(patched[at..at + 4].try_into().expect("4 bytes"));
        if flags & BPF_F_NO_PREALLOC != 0 {
            patched[at..at + 4].copy_from_slice(&(flags & !BPF_F_NO_PREALLOC).to_le_bytes());
            names.push(symbol.name().map_err(|e| bad(&e.to_string()))?.to_owned());
        }
    }
    Ok((patched, names))
}

/// About what a preallocated hash map holds in kernel memory: every element (key,
/// value and the kernel's ~48-byte header, 8-byte aligned), per CPU for per-CPU
/// values.
pub fn preallocated_bytes(info: &aya::maps::MapInfo, per_cpu: bool, cpus: u64) -> u64 {
    let align = |n: u32| u64::from(n).div_ceil(8) * 8;
    let value = align(info.value_size());
    let element = 48 + align(info.key_size()) + if per_cpu { 8 } else { value };
    let per_cpu_values = if per_cpu { value * cpus } else { 0 };
    u64::from(info.max_entries()) * (element + per_cpu_values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_the_flag_of_the_maps_that_have_it_and_only_the_flag() {
        let elf = super::super::EBPF_OBJECT;
        if elf.is_empty() {
            return; // built with AYA_BUILD_SKIP=1: nothing to patch
        }
        let (patched, names) = preallocate(elf).expect("patch");
        for want in ["RUNQ_HIST", "BLOCKIO_STATS", "TCP_STATS"] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n == "RUNQ_START"),
            "already preallocated"
        );
        // Only flag words changed, each by the one bit.
        let changed: Vec<usize> = (0..elf.len()).filter(|&i| elf[i] != patched[i]).collect();
        assert_eq!(changed.len(), names.len(), "one byte per map");
        for i in changed {
            assert_eq!(elf[i] ^ patched[i], BPF_F_NO_PREALLOC as u8);
        }
        let (_, again) = preallocate(&patched).expect("patch again");
        assert!(again.is_empty(), "nothing left to preallocate");
    }
}
