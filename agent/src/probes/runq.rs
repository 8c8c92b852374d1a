//! Run-queue latency per cgroup (kernel side: `agent-ebpf/src/runq.rs`).
//!
//! Requires kernel 6.1+ (tp_btf with the `prev_state` argument of `sched_switch`,
//! 5.18; non-preallocated hash maps in tracing programs, 6.1) with BTF.

use std::collections::{BTreeMap, HashMap};

use aya::{
    maps::{MapData, PerCpuArray, PerCpuHashMap},
    Ebpf,
};
use cgscope_common::{histogram::Histogram, runq::drop};

use super::{attach_all, counters, take_map, ProbeError};
use crate::histogram::LatencyTotals;

pub const NAME: &str = "runq";

/// Programs and the tracepoints they attach to.
const PROGRAMS: [(&str, &str); 3] = [
    ("runq_wakeup", "sched_wakeup"),
    ("runq_wakeup_new", "sched_wakeup_new"),
    ("runq_switch", "sched_switch"),
];

/// Names of the `RUNQ_DROPS` slots, in slot order.
const DROP_REASONS: [&str; drop::SLOTS as usize] =
    ["start_map_full", "cgroup_map_full", "cgroup_unreadable"];

/// The attached probe and its maps.
pub struct Runq {
    hist: PerCpuHashMap<MapData, u64, Histogram>,
    drops: PerCpuArray<MapData, u64>,
}

impl Runq {
    /// Loads and attaches the three programs, all or none.
    pub fn attach(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<Self, ProbeError> {
        attach_all(ebpf, btf, &PROGRAMS)?;
        Ok(Self {
            hist: take_map(ebpf, "RUNQ_HIST")?,
            drops: take_map(ebpf, "RUNQ_DROPS")?,
        })
    }

    /// Reads the cumulative histogram of every cgroup into `out` (cleared first).
    pub fn read(&self, out: &mut HashMap<u64, LatencyTotals>) {
        out.clear();
        // An entry removed while iterating is skipped, not an error.
        for (id, cpus) in self.hist.iter().flatten() {
            out.insert(id, LatencyTotals::from_cpus(cpus.iter()));
        }
    }

    /// Deletes the histograms of removed cgroups, so that their entries do not live
    /// forever. `dead` must be ids seen by `read` and missing from a tree walked
    /// after it: a cgroup created after that walk is never in `dead`.
    pub fn forget(&mut self, dead: &[u64]) {
        for id in dead {
            let _ = self.hist.remove(id);
        }
    }

    /// Events dropped since load, by reason.
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        counters(&self.drops, &DROP_REASONS)
    }
}
