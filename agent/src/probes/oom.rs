//! OOM kills per cgroup, with each victim's pid and command (kernel side:
//! `agent-ebpf/src/oom.rs`). Requires fentry (BPF trampolines) and BTF.

use aya::{
    maps::{MapData, MapError, PerCpuArray, Queue},
    programs::FEntry,
    Ebpf,
};
use cgscope_common::oom::{drop, OomVictim, MAX_ANCESTORS};

use super::{attach_all, attach_traced, counters, take_map, ProbeError};
use crate::snapshot::ProbeStatus;

pub const NAME: &str = "oom";

/// tp_btf `mark_victim` where it passes the task, else fentry on the kill function.
const TRACEPOINT: (&str, &str) = ("oom_mark_victim", "mark_victim");
const FENTRY: (&str, &str) = ("oom_kill", "__oom_kill_process");

/// Names of the `OOM_DROPS` slots, in slot order.
const DROP_REASONS: [&str; drop::SLOTS as usize] = ["queue_full", "cgroup_unreadable"];

/// One OOM kill, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKill {
    /// The victim's own cgroup.
    pub cgroup_id: u64,
    pub pid: u32,
    pub command: String,
    /// Its cgroup's ancestors at the kill, parent first (0 past the root).
    pub ancestors: [u64; MAX_ANCESTORS],
    /// The cgroup whose window counts the kill: the victim's own, or, where that
    /// is gone before the walk, its nearest ancestor that is there (see
    /// [`OomKill::count_in_nearest`]).
    pub counted_in: u64,
}

impl OomKill {
    /// Counts the kill in its own cgroup if `walked` has it, else in the nearest
    /// ancestor `walked` has; a kill with none stays with its own cgroup id.
    pub fn count_in_nearest(&mut self, walked: impl Fn(u64) -> bool) {
        self.counted_in = std::iter::once(self.cgroup_id)
            .chain(self.ancestors.iter().copied().take_while(|&id| id != 0))
            .find(|&id| walked(id))
            .unwrap_or(self.cgroup_id);
    }
}

impl From<&OomVictim> for OomKill {
    fn from(v: &OomVictim) -> Self {
        let end = v.comm.iter().position(|&b| b == 0).unwrap_or(v.comm.len());
        // The command is the victim's own choice: keep it printable.
        let command = String::from_utf8_lossy(&v.comm[..end])
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Self {
            cgroup_id: v.cgroup_id,
            pid: v.pid,
            command,
            ancestors: v.ancestors,
            counted_in: v.cgroup_id,
        }
    }
}

/// The attached probe and its maps.
pub struct Oom {
    victims: Queue<MapData, OomVictim>,
    drops: PerCpuArray<MapData, u64>,
    /// The hook attached, for `check`.
    hook: &'static str,
}

impl Oom {
    /// `victim_is_task`: whether this kernel's `mark_victim` passes the task (from
    /// [`crate::btf::Btf::tracepoint_arg_is_pointer`]).
    pub fn attach(
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        victim_is_task: bool,
    ) -> Result<Self, ProbeError> {
        let hook = if victim_is_task {
            attach_all(ebpf, btf, &[TRACEPOINT])?;
            "tp_btf mark_victim"
        } else {
            attach_traced!(ebpf, btf, FEntry, FENTRY)?;
            "fentry __oom_kill_process"
        };
        Ok(Self {
            victims: take_map(ebpf, "OOM_VICTIMS")?,
            drops: take_map(ebpf, "OOM_DROPS")?,
            hook,
        })
    }

    /// Takes the kills queued since the last call, oldest first, into `out`.
    /// The kills queued since the last read into `out` (cleared first); an error
    /// other than the queue's end is returned, not taken for "no kills".
    pub fn read(&mut self, out: &mut Vec<OomKill>) -> Result<(), MapError> {
        out.clear();
        loop {
            match self.victims.pop(0) {
                Ok(victim) => out.push(OomKill::from(&victim)),
                Err(MapError::ElementNotFound) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    pub fn status(&self) -> ProbeStatus {
        ProbeStatus {
            name: NAME,
            attached: true,
            error: None,
            dropped: counters(&self.drops, &DROP_REASONS),
            notes: vec![format!("kills seen at {}", self.hook)],
            map_entries: None,
            run_stats: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_cut_at_nul_and_made_printable() {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"hog\x1b[m");
        let kill = OomKill::from(&OomVictim {
            cgroup_id: 7,
            time_ns: 1,
            pid: 42,
            _pad: 0,
            comm,
            ancestors: [0; MAX_ANCESTORS],
        });
        assert_eq!((kill.pid, kill.command.as_str()), (42, "hog?[m"));
        let full = OomKill::from(&OomVictim {
            comm: *b"abcdefghijklmnop",
            ..OomVictim {
                cgroup_id: 1,
                time_ns: 0,
                pid: 1,
                _pad: 0,
                comm: [0; 16],
                ancestors: [0; MAX_ANCESTORS],
            }
        });
        assert_eq!(full.command, "abcdefghijklmnop");
    }

    #[test]
    fn a_kill_in_a_cgroup_gone_counts_for_its_nearest_walked_ancestor() {
        let mut ancestors = [0; MAX_ANCESTORS];
        ancestors[..4].copy_from_slice(&[40, 30, 20, 1]);
        let mut kill = OomKill::from(&OomVictim {
            cgroup_id: 50,
            time_ns: 1,
            pid: 9,
            _pad: 0,
            comm: [0; 16],
            ancestors,
        });
        kill.count_in_nearest(|id| [1, 20, 30, 50].contains(&id));
        assert_eq!(kill.counted_in, 50, "its own cgroup, where it is there");
        kill.count_in_nearest(|id| [1, 20, 30].contains(&id));
        assert_eq!(kill.counted_in, 30, "the pod, when the container is gone");
        kill.count_in_nearest(|id| id == 99);
        assert_eq!(kill.counted_in, 50, "nothing walked: its own id");
        assert_eq!(kill.cgroup_id, 50, "the victim's cgroup is still named");
    }
}
