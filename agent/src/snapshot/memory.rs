//! Memory: `memory.current`, `memory.stat`, the limits and `memory.events` of one
//! window, with the oom probe's kills.

use schemars::JsonSchema;
use serde::Serialize;

/// Memory. `*_bytes` are gauges at the end of the window (limits: `null` = no limit);
/// `pgfault`, `pgmajfault`, `workingset_*` and `events` are deltas over the window.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct MemorySample {
    /// `null` where the memory controller is not enabled (then only `oom_kills` is
    /// set, from the oom probe).
    pub current_bytes: Option<u64>,
    /// `current - inactive_file`, as cAdvisor's container_memory_working_set_bytes.
    pub working_set_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub kernel_bytes: Option<u64>,
    pub sock_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
    pub file_mapped_bytes: Option<u64>,
    pub file_dirty_bytes: Option<u64>,
    pub file_writeback_bytes: Option<u64>,
    pub inactive_file_bytes: Option<u64>,
    pub active_file_bytes: Option<u64>,
    pub max_bytes: Option<u64>,
    pub high_bytes: Option<u64>,
    pub low_bytes: Option<u64>,
    pub min_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
    pub swap_current_bytes: Option<u64>,
    pub swap_max_bytes: Option<u64>,
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
    pub workingset_refault_anon: Option<u64>,
    pub workingset_refault_file: Option<u64>,
    pub workingset_activate_anon: Option<u64>,
    pub workingset_activate_file: Option<u64>,
    pub workingset_restore_anon: Option<u64>,
    pub workingset_restore_file: Option<u64>,
    pub workingset_nodereclaim: Option<u64>,
    pub events: Option<MemoryEventsSample>,
    /// OOM kills in the window in this cgroup and below (as `memory.events`
    /// `oom_kill` counts them), from the oom probe; `null` when it is not attached.
    pub oom_kills: Option<OomKillsSample>,
}

/// How a `memory.stat` key is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    /// Bytes at the end of the window, also a `memory.state` of the exported
    /// `container.memory.state`.
    State,
    /// Bytes at the end of the window, in the snapshot only.
    Bytes,
    /// Events, as a delta over the window.
    Events,
}

/// One `memory.stat` key cgscope reports, and its field of [`MemorySample`].
pub struct StatKey {
    pub key: &'static str,
    pub kind: StatKind,
    pub field: fn(&MemorySample) -> Option<u64>,
    pub field_mut: fn(&mut MemorySample) -> &mut Option<u64>,
}

macro_rules! stat_keys {
    ($($key:ident $kind:ident => $field:ident),* $(,)?) => {
        [$(StatKey {
            key: stringify!($key),
            kind: StatKind::$kind,
            field: |m| m.$field,
            field_mut: |m| &mut m.$field,
        }),*]
    };
}

/// The `memory.stat` keys cgscope reports, sorted by key: the one list the parser
/// (`crate::cgroup::memory`), the window and the exporters go by.
pub const MEMORY_STAT: [StatKey; 19] = stat_keys![
    active_file Bytes => active_file_bytes,
    anon State => anon_bytes,
    file State => file_bytes,
    file_dirty State => file_dirty_bytes,
    file_mapped State => file_mapped_bytes,
    file_writeback State => file_writeback_bytes,
    inactive_file Bytes => inactive_file_bytes,
    kernel State => kernel_bytes,
    pgfault Events => pgfault,
    pgmajfault Events => pgmajfault,
    shmem State => shmem_bytes,
    sock State => sock_bytes,
    workingset_activate_anon Events => workingset_activate_anon,
    workingset_activate_file Events => workingset_activate_file,
    workingset_nodereclaim Events => workingset_nodereclaim,
    workingset_refault_anon Events => workingset_refault_anon,
    workingset_refault_file Events => workingset_refault_file,
    workingset_restore_anon Events => workingset_restore_anon,
    workingset_restore_file Events => workingset_restore_file,
];

/// Where `key` is in [`MEMORY_STAT`]. A scan, as a `match` on the keys would be:
/// most keys of the file differ in length from most of the table's, and `==`
/// compares lengths first (a binary search's `cmp` compares bytes: 3x slower here).
pub fn stat_index(key: &str) -> Option<usize> {
    MEMORY_STAT.iter().position(|k| k.key == key)
}

/// OOM kills in a window.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct OomKillsSample {
    pub count: u64,
    /// The first [`MAX_OOM_VICTIMS`] victims, oldest first.
    pub victims: Vec<OomVictimSample>,
}

/// Victims listed per cgroup and window; `count` has them all.
pub const MAX_OOM_VICTIMS: usize = 16;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OomVictimSample {
    pub pid: u32,
    /// The victim's `comm` (up to 15 bytes, control characters replaced).
    pub command: String,
    /// Id of the victim's own cgroup (a descendant, for a parent's sample).
    pub cgroup_id: u64,
}

/// `memory.events` deltas over the window.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct MemoryEventsSample {
    pub low: Option<u64>,
    pub high: Option<u64>,
    pub max: Option<u64>,
    pub oom: Option<u64>,
    pub oom_kill: Option<u64>,
    pub oom_group_kill: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sorted (so that a key is added once), and each field of [`MemorySample`] from
    /// `memory.stat` has its key: filled through the table, only the fields from
    /// other files stay `null`.
    #[test]
    fn the_table_is_sorted_and_whole() {
        assert!(MEMORY_STAT.windows(2).all(|w| w[0].key < w[1].key));
        let mut m = MemorySample::default();
        for (i, k) in MEMORY_STAT.iter().enumerate() {
            *(k.field_mut)(&mut m) = Some(i as u64);
            assert_eq!((k.field)(&m), Some(i as u64), "{}", k.key);
            assert_eq!(stat_index(k.key), Some(i));
        }
        let json = serde_json::to_value(&m).unwrap();
        let nulls: Vec<&str> = json
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k.as_str())
            .collect();
        let mut other_files = [
            "current_bytes",
            "working_set_bytes",
            "max_bytes",
            "high_bytes",
            "low_bytes",
            "min_bytes",
            "peak_bytes",
            "swap_current_bytes",
            "swap_max_bytes",
            "events",
            "oom_kills",
        ];
        other_files.sort_unstable();
        assert_eq!(nulls, other_files, "(sorted as serde_json keeps keys)");
    }
}
