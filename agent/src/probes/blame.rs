//! Who caused the run-queue waits (kernel side: `agent-ebpf/src/blame.rs`): the
//! nanoseconds each cgroup's tasks waited, split by what held their CPU meanwhile,
//! read as cumulative (waiter, culprit) pairs.

use std::collections::{BTreeMap, HashMap, HashSet};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray},
    programs::{FEntry, FExit},
    Ebpf,
};
use cgscope_common::blame::{drop, BlameKey, SEGMENTS};

use super::{attach_all, attach_traced, counters, take_map, ProbeError};

/// The tp_btf program that follows a waiting task to another CPU.
const MIGRATE: [(&str, &str); 1] = [("runq_migrate", "sched_migrate_task")];
/// The programs that see a group's quota run out and come back, per CPU.
const THROTTLE: (&str, &str) = ("runq_throttle", "throttle_cfs_rq");
const UNTHROTTLE: (&str, &str) = ("runq_unthrottle", "unthrottle_cfs_rq");

/// Names of the `BLAME_DROPS` slots, in slot order.
const DROP_REASONS: [&str; drop::SLOTS as usize] = [
    "blame_map_full",
    "blame_lost",
    "throttle_untracked",
    "blame_timeline_short",
];

/// The attached blame programs and their maps.
pub struct Blame {
    pairs: BpfHashMap<MapData, BlameKey, u64>,
    drops: PerCpuArray<MapData, u64>,
    /// Why a wait's throttled part cannot be told apart here, if it cannot.
    throttles: Result<(), String>,
}

impl Blame {
    /// Attaches the migration program (required) and the throttle programs (where
    /// the kernel has them: without, a throttled wait counts as its CPU's
    /// occupants, and the notes say so). `group_offsets`: whether the BTF had the
    /// `cfs_rq`/`task_group` fields the throttle programs read (else why not).
    pub fn attach(
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        group_offsets: Result<(), String>,
    ) -> Result<Self, ProbeError> {
        attach_all(ebpf, btf, &MIGRATE)?;
        let throttles =
            group_offsets.and_then(|()| attach_throttles(ebpf, btf).map_err(|e| e.to_string()));
        Ok(Self {
            pairs: take_map(ebpf, "BLAME")?,
            drops: take_map(ebpf, "BLAME_DROPS")?,
            throttles,
        })
    }

    /// Reads every (waiter, culprit) pair's cumulative nanoseconds into `out`
    /// (cleared first).
    pub fn read(&self, out: &mut HashMap<BlameKey, u64>) -> Result<(), MapError> {
        super::read_map(self.pairs.iter(), out, |ns| ns)
    }

    /// Deletes the pairs whose waiter or culprit is a removed cgroup (`dead`, as
    /// for `Runq::forget`), after their last window was reported.
    pub fn forget(&mut self, dead: &[u64]) {
        if dead.is_empty() {
            return;
        }
        let dead: HashSet<u64> = dead.iter().copied().collect();
        let gone: Vec<BlameKey> = self
            .pairs
            .keys()
            .flatten()
            .filter(|k| dead.contains(&k.victim) || dead.contains(&k.culprit))
            .collect();
        super::forget_keys(&mut self.pairs, &gone);
    }

    /// Pieces lost or cut short since load, by reason.
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        counters(&self.drops, &DROP_REASONS)
    }

    /// How blame is measured on this kernel.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "waits split over what held their CPU (up to {SEGMENTS} occupants each; \
             migrations followed)"
        )];
        notes.push(match &self.throttles {
            Ok(()) => "own quota: throttled time told apart (fexit throttle_cfs_rq, \
                       fentry unthrottle_cfs_rq)"
                .to_owned(),
            Err(why) => format!(
                "own quota not told apart: {why}; a throttled wait counts as its CPU's occupants"
            ),
        });
        notes
    }
}

/// fexit `throttle_cfs_rq` and fentry `unthrottle_cfs_rq`, both or neither.
fn attach_throttles(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<(), ProbeError> {
    let throttle_link = attach_traced!(ebpf, btf, FExit, THROTTLE)?;
    let result = attach_traced!(ebpf, btf, FEntry, UNTHROTTLE);
    if result.is_err() {
        if let Some(Ok(throttle)) = ebpf.program_mut(THROTTLE.0).map(<&mut FExit>::try_from) {
            let _ = throttle.detach(throttle_link);
            let _ = throttle.unload();
        }
    }
    result.map(|_| ())
}
