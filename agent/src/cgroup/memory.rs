//! `memory.stat`, `memory.events`.

use super::format::{flat, number, FormatError};
use crate::snapshot::{stat_index, MEMORY_STAT};

/// Fills the `Option<u64>` fields of a struct from a flat-keyed file: one match arm
/// per key, unknown keys ignored, a malformed value an error naming its key.
macro_rules! flat_keyed {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl std::str::FromStr for $ty {
            type Err = FormatError;

            fn from_str(text: &str) -> Result<Self, FormatError> {
                let mut out = Self::default();
                for (key, value) in flat(text) {
                    let slot = match key {
                        $(stringify!($field) => &mut out.$field,)*
                        _ => continue,
                    };
                    *slot = Some(number(value).map_err(|e| format!("{key}: {e}"))?);
                }
                Ok(out)
            }
        }
    };
}
pub(crate) use flat_keyed;

/// The values of `memory.stat` that cgscope reports ([`MEMORY_STAT`], in its order):
/// bytes, except `pg*` and `workingset_*`, which count events. A key this kernel
/// does not have is `None`.
///
/// ```text
/// anon 0
/// file 0
/// kernel 0
/// ...
/// workingset_refault_anon 0
/// pgfault 9
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStat([Option<u64>; MEMORY_STAT.len()]);

impl MemoryStat {
    /// The value of `key`, where this kernel has it and cgscope reports it.
    pub fn get(&self, key: &str) -> Option<u64> {
        stat_index(key).and_then(|i| self.0[i])
    }

    /// Each reported key's value, in the order of [`MEMORY_STAT`].
    pub fn values(&self) -> &[Option<u64>; MEMORY_STAT.len()] {
        &self.0
    }
}

impl std::str::FromStr for MemoryStat {
    type Err = FormatError;

    fn from_str(text: &str) -> Result<Self, FormatError> {
        let mut out = Self::default();
        for (key, value) in flat(text) {
            if let Some(i) = stat_index(key) {
                out.0[i] = Some(number(value).map_err(|e| format!("{key}: {e}"))?);
            }
        }
        Ok(out)
    }
}

/// `memory.events`: how often each boundary was hit (cumulative, this cgroup and
/// its descendants).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEvents {
    pub low: Option<u64>,
    pub high: Option<u64>,
    pub max: Option<u64>,
    pub oom: Option<u64>,
    pub oom_kill: Option<u64>,
    pub oom_group_kill: Option<u64>,
}

flat_keyed!(MemoryEvents {
    low,
    high,
    max,
    oom,
    oom_kill,
    oom_group_kill
});

/// The working set as cAdvisor computes it: usage minus inactive file pages (the
/// memory the kernel would reclaim first), never below zero.
pub fn working_set(current: u64, stat: &MemoryStat) -> u64 {
    current.saturating_sub(stat.get("inactive_file").unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn memory_stat_of_a_6_12_container() {
        let stat: MemoryStat = fixture("unified-6.12-container/memory.stat")
            .parse()
            .unwrap();
        assert_eq!(stat.get("anon"), Some(0));
        assert_eq!(stat.get("kernel"), Some(0));
        assert_eq!(stat.get("pgfault"), Some(9));
        assert_eq!(stat.get("workingset_nodereclaim"), Some(0));
        assert_eq!(stat.get("file_thp"), None, "a key cgscope does not report");
    }

    #[test]
    fn events_and_working_set() {
        let events: MemoryEvents = fixture("unified-6.12-container/memory.events")
            .parse()
            .unwrap();
        assert_eq!(events.oom_kill, Some(0));
        assert_eq!(events.oom_group_kill, Some(0));
        let old_kernel: MemoryEvents = "low 0\nhigh 3\nmax 2\noom 1\noom_kill 1\n".parse().unwrap();
        assert_eq!(
            (old_kernel.high, old_kernel.oom_group_kill),
            (Some(3), None)
        );
        let stat: MemoryStat = "inactive_file 300\n".parse().unwrap();
        assert_eq!(working_set(1000, &stat), 700);
        assert_eq!(working_set(100, &stat), 0);
        assert!("anon 12x\n".parse::<MemoryStat>().is_err());
    }
}
