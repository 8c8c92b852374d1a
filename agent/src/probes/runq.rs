//! Run-queue latency per cgroup (kernel side: `agent-ebpf/src/runq.rs`).
//!
//! Kernel 5.10+ with BTF (tp_btf); what differs by version: docs/kernels.md.

use std::collections::{BTreeMap, HashMap};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap},
    Ebpf,
};
use cgscope_common::{
    histogram::Histogram,
    runq::{self, drop, QueuedTask},
};

use super::{attach_all, blame::Blame, counters, take_map, ProbeError};
use crate::histogram::LatencyTotals;

pub const NAME: &str = "runq";

/// Programs and the tracepoints they attach to.
const PROGRAMS: [(&str, &str); 4] = [
    ("runq_wakeup", "sched_wakeup"),
    ("runq_wakeup_new", "sched_wakeup_new"),
    ("runq_switch", "sched_switch"),
    ("runq_free", "sched_process_free"),
];

/// The same with the switch program that splits each wait by who held the CPU.
/// The switch program first: if the kernel refuses it, nothing else was loaded.
const BLAME_PROGRAMS: [(&str, &str); 4] = [
    ("runq_switch_blame", "sched_switch"),
    ("runq_wakeup", "sched_wakeup"),
    ("runq_wakeup_new", "sched_wakeup_new"),
    ("runq_free", "sched_process_free"),
];

/// The capacity of `RUNQ_START` for this node: from the tasks it runs now (the
/// total of `/proc/loadavg`'s fourth field), see [`runq::start_capacity`].
pub fn start_capacity() -> u32 {
    let tasks = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok())
        .unwrap_or(0);
    runq::start_capacity(tasks)
}

/// Names of the `RUNQ_DROPS` slots, in slot order.
const DROP_REASONS: [&str; drop::SLOTS as usize] =
    ["start_map_full", "cgroup_map_full", "cgroup_unreadable"];

/// The attached probe and its maps.
pub struct Runq {
    hist: PerCpuHashMap<MapData, u64, Histogram>,
    start: BpfHashMap<MapData, u64, QueuedTask>,
    drops: PerCpuArray<MapData, u64>,
    /// Who caused the waits: `None` when turned off, else attached or why not.
    pub blame: Option<Result<Blame, ProbeError>>,
    /// The task field read for the outgoing task's state (kernels before 5.18).
    switch_state: Option<&'static str>,
}

impl Runq {
    /// Loads and attaches the three programs, all or none: with `blame`, the switch
    /// program that splits each wait and blame's own programs; blame failing leaves
    /// the latency histograms attached. `group_offsets`: see [`Blame::attach`];
    /// `switch_state`: see [`super::switch_state_field`].
    pub fn attach(
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        blame: bool,
        group_offsets: Result<(), String>,
        switch_state: Option<&'static str>,
    ) -> Result<Self, ProbeError> {
        // With blame, the switch program that splits each wait; where this kernel
        // refuses it, the plain one, and blame says why.
        let blame = if blame {
            match attach_all(ebpf, btf, &BLAME_PROGRAMS) {
                Ok(()) => Some(Blame::attach(ebpf, btf, group_offsets)),
                Err(e) => {
                    attach_all(ebpf, btf, &PROGRAMS)?;
                    Some(Err(e))
                }
            }
        } else {
            attach_all(ebpf, btf, &PROGRAMS)?;
            None
        };
        Ok(Self {
            hist: take_map(ebpf, "RUNQ_HIST")?,
            start: take_map(ebpf, "RUNQ_START")?,
            drops: take_map(ebpf, "RUNQ_DROPS")?,
            blame,
            switch_state,
        })
    }

    /// The attached blame, if any.
    pub fn blame(&self) -> Option<&Blame> {
        self.blame.as_ref().and_then(|b| b.as_ref().ok())
    }

    /// How the probe measures on this kernel.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = match &self.blame {
            None => vec!["blame off (--runq-blame false): waits are not split by cause".to_owned()],
            Some(Ok(blame)) => blame.notes(),
            Some(Err(e)) => vec![format!("blame not attached: {e}")],
        };
        if let Some(field) = self.switch_state {
            notes.push(format!(
                "sched_switch has no prev_state before 5.18: using task_struct.{field}"
            ));
        }
        notes
    }

    /// Reads the cumulative histogram of every cgroup into `out` (cleared first).
    pub fn read(&self, out: &mut HashMap<u64, LatencyTotals>) -> Result<(), MapError> {
        super::read_map(self.hist.iter(), out, |cpus| {
            LatencyTotals::from_cpus(cpus.iter())
        })
    }

    /// The tasks `RUNQ_START` follows now: live tasks that have waited since the
    /// probe attached (a walk of the map's keys: for tests and diagnostics).
    pub fn tasks_followed(&self) -> usize {
        self.start.keys().filter(Result::is_ok).count()
    }

    /// Deletes the histograms of removed cgroups, so that their entries do not live
    /// forever. `dead` must be ids seen by `read` and missing from a tree walked
    /// after it: a cgroup created after that walk is never in `dead`.
    pub fn forget(&mut self, dead: &[u64]) {
        for id in dead {
            let _ = self.hist.remove(id);
        }
        if let Some(Ok(blame)) = &mut self.blame {
            blame.forget(dead);
        }
    }

    /// Events dropped since load, by reason (blame's included).
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        let mut dropped = counters(&self.drops, &DROP_REASONS);
        if let Some(blame) = self.blame() {
            dropped.extend(blame.dropped());
        }
        dropped
    }
}
