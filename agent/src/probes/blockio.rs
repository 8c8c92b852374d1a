//! Block IO per cgroup, disk and operation (kernel side: `agent-ebpf/src/blockio.rs`).
//!
//! Requires kernel 6.1+ with BTF (tp_btf, `request_queue.disk`, non-preallocated hash
//! maps usable from completion interrupts).

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray},
    Ebpf, EbpfLoader,
};
use cgscope_common::blockio::{dev_parts, event, owner, BlockioConfig, BlockioKey, BlockioStats};

use super::{attach_all, counters, take_map, tracepoint_program, ProbeConfig, ProbeError};
use crate::{
    btf::{Btf, BtfError},
    histogram::LatencyTotals,
    snapshot::ProbeStatus,
};

pub const NAME: &str = "blockio";

/// The program attached in every mode, and those only [`owner::SUBMITTER`] needs.
const COMPLETE: (&str, &str) = ("blockio_complete", "block_rq_complete");
const SUBMITTER_PROGRAMS: [(&str, &str); 2] = [
    ("blockio_bio_queue", "block_bio_queue"),
    ("blockio_split", "block_split"),
];

/// The fallback for queues without issue timestamps: loaded with the others,
/// attached only once such a queue is seen ([`Blockio::attach_fallback`]).
const ISSUE: (&str, &str) = ("blockio_issue", "block_rq_issue");

/// Names of the `BLOCKIO_EVENTS` slots, in slot order.
const EVENTS: [&str; event::SLOTS as usize] = [
    "stats_map_full",
    "inflight_map_full",
    "cgroup_unreadable",
    "no_queue_timestamp",
    "device_time_fallback",
    "no_device_timestamp",
    "stale_issue_entry",
];

/// How requests are attributed here: to their bio's blkcg where the io controller is
/// on the v2 hierarchy (its root lists `io` in `cgroup.controllers`), else to the
/// submitting task's v2 cgroup.
pub fn owner_mode(cgroup_root: Option<&Path>) -> u32 {
    let controllers =
        cgroup_root.and_then(|r| std::fs::read_to_string(r.join("cgroup.controllers")).ok());
    match controllers {
        Some(c) if c.split_whitespace().any(|c| c == "io") => owner::BLKCG,
        _ => owner::SUBMITTER,
    }
}

/// The programs' settings and field offsets, from the running kernel's BTF.
pub fn config(btf: &Btf, owner: u32) -> Result<BlockioConfig, BtfError> {
    // The queue's disk since 5.15; before, each request's.
    let queue_disk = btf.offset_of("request_queue", "disk", 8);
    Ok(BlockioConfig {
        owner,
        request_q: btf.offset_of("request", "q", 8)?,
        request_cmd_flags: btf.offset_of("request", "cmd_flags", 4)?,
        request_data_len: btf.offset_of("request", "__data_len", 4)?,
        request_bio: btf.offset_of("request", "bio", 8)?,
        request_start_time_ns: btf.offset_of("request", "start_time_ns", 8)?,
        request_io_start_time_ns: btf.offset_of("request", "io_start_time_ns", 8)?,
        queue_disk: *queue_disk.as_ref().unwrap_or(&0),
        disk_major: btf.offset_of("gendisk", "major", 4)?,
        disk_first_minor: btf.offset_of("gendisk", "first_minor", 4)?,
        bio_blkg: btf.offset_of("bio", "bi_blkg", 8)?,
        blkg_blkcg: btf.offset_of("blkcg_gq", "blkcg", 8)?,
        blkcg_cgroup: btf.member("blkcg", "css")?.offset
            + btf.offset_of("cgroup_subsys_state", "cgroup", 8)?,
        bio_private: btf.offset_of("bio", "bi_private", 8)?,
        request_disk: match queue_disk {
            Ok(_) => 0,
            Err(queue) => btf.offset_of("request", "rq_disk", 8).map_err(|_| queue)?,
        },
        // `block_rq_issue(q, rq)` before 5.11, `block_rq_issue(rq)` since.
        queue_first: u32::from(btf.tracepoint_arity("block_rq_issue")? == 2),
    })
}

/// Map capacities: one stats entry per (cgroup, disk, operation), two per cgroup on
/// average; the per-bio owner map only where it is used.
pub fn size_maps(loader: &mut EbpfLoader, config: &ProbeConfig, owner: u32) {
    loader.map_max_entries("BLOCKIO_STATS", config.max_cgroups.saturating_mul(2));
    if owner != owner::SUBMITTER {
        loader.map_max_entries("BLOCKIO_OWNER", 1);
    }
}

/// Cumulative counters of one (cgroup, disk, operation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockioTotals {
    pub ios: u64,
    pub bytes: u64,
    pub queue: LatencyTotals,
    pub device: LatencyTotals,
}

/// Where the issue-time fallback program is.
enum Fallback {
    /// Loaded; no queue has needed it yet.
    Waiting,
    Attached,
    /// The kernel refused to attach it (the error).
    Failed(String),
}

/// The attached probe and its maps.
pub struct Blockio {
    stats: BpfHashMap<MapData, BlockioKey, BlockioStats>,
    untimed: BpfHashMap<MapData, u64, u32>,
    events: PerCpuArray<MapData, u64>,
    owner: u32,
    fallback: Fallback,
}

impl Blockio {
    /// Loads and attaches the programs of this mode, all or none. A missing kernel
    /// field (`config` failed) is reported here, as this probe's error.
    pub fn attach(
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        owner: u32,
        config: Result<(), &BtfError>,
    ) -> Result<Self, ProbeError> {
        config.map_err(|e| ProbeError::Load(format!("kernel BTF: {e}")))?;
        let mut programs = vec![COMPLETE];
        if owner == owner::SUBMITTER {
            programs.extend(SUBMITTER_PROGRAMS);
        }
        // Verified now, so that a kernel that rejects the fallback fails the probe
        // here, whole, rather than later.
        let (name, hook) = ISSUE;
        let issue = tracepoint_program(ebpf, name, hook)?;
        issue
            .load(hook, btf)
            .map_err(|e| ProbeError::program(name, hook, e))?;
        if let Err(e) = attach_all(ebpf, btf, &programs) {
            let _ = tracepoint_program(ebpf, name, hook).map(|p| p.unload());
            return Err(e);
        }
        Ok(Self {
            stats: take_map(ebpf, "BLOCKIO_STATS")?,
            untimed: take_map(ebpf, "BLOCKIO_UNTIMED_QUEUES")?,
            events: take_map(ebpf, "BLOCKIO_EVENTS")?,
            owner,
            fallback: Fallback::Waiting,
        })
    }

    /// Attaches the issue-time fallback once the completion program has met a queue
    /// that keeps no issue timestamps. Until then (the common case: every queue with
    /// writeback throttling or IO cost control keeps them) no program runs at issue,
    /// which would cost a whole program run per IO; such a queue's device latency is
    /// missing for the window in which it was first seen.
    pub fn attach_fallback(&mut self, ebpf: &mut Ebpf) {
        if !matches!(self.fallback, Fallback::Waiting) || self.untimed.keys().next().is_none() {
            return;
        }
        let (name, hook) = ISSUE;
        let attached = tracepoint_program(ebpf, name, hook)
            .and_then(|p| p.attach().map_err(|e| ProbeError::program(name, hook, e)));
        self.fallback = match attached {
            Ok(_) => {
                log::info!("blockio: a queue keeps no issue timestamps; {hook} attached");
                Fallback::Attached
            }
            Err(e) => {
                log::warn!("blockio: no device latency where queues keep no timestamps: {e}");
                Fallback::Failed(e.to_string())
            }
        };
    }

    /// Deletes the untimed-queue entries of disks that no longer exist (no
    /// `/sys/dev/block/MAJ:MIN`): the status would name a removed disk, and its
    /// queue's address may become another disk's.
    pub fn forget_removed_disks(&mut self) {
        let removed: Vec<u64> = self
            .untimed
            .iter()
            .flatten()
            .filter(|(_, dev)| {
                let (major, minor) = dev_parts(*dev);
                !Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists()
            })
            .map(|(queue, _)| queue)
            .collect();
        for queue in removed {
            let _ = self.untimed.remove(&queue);
        }
    }

    /// Reads the cumulative counters of every (cgroup, disk, operation) into `out`
    /// (cleared first).
    pub fn read(&self, out: &mut HashMap<BlockioKey, BlockioTotals>) -> Result<(), MapError> {
        super::read_map(self.stats.iter(), out, |v| BlockioTotals {
            ios: v.ios,
            bytes: v.bytes,
            queue: LatencyTotals::from_cpus([&v.queue]),
            device: LatencyTotals::from_cpus([&v.device]),
        })
    }

    /// Deletes the entries of removed cgroups (`keys` from a `read` whose cgroup is
    /// missing from a tree walked after it).
    pub fn forget<'a>(&mut self, keys: impl IntoIterator<Item = &'a BlockioKey>) {
        super::forget_keys(&mut self.stats, keys);
    }

    pub fn status(&self) -> ProbeStatus {
        let counts = counters(&self.events, &EVENTS);
        let mut notes = vec![match self.owner {
            owner::BLKCG => "IO attributed to the request's blkcg (io controller on cgroup v2; \
                             writeback counts for the cgroup that dirtied the pages)"
                .to_owned(),
            _ => "IO attributed to the submitting task's cgroup (io controller not on cgroup \
                  v2: writeback by kernel flushers counts for the root)"
                .to_owned(),
        }];
        let untimed: Vec<String> = self
            .untimed
            .iter()
            .flatten()
            .map(|(_, dev)| {
                let (major, minor) = dev_parts(dev);
                format!("{major}:{minor}")
            })
            .collect();
        if !untimed.is_empty() {
            let untimed = untimed.join(", ");
            notes.push(match &self.fallback {
                Fallback::Attached => format!(
                    "device latency timed from block_rq_issue (the queue keeps no issue \
                     timestamp) on {untimed}; {} requests so timed",
                    counts.get("device_time_fallback").copied().unwrap_or(0)
                ),
                Fallback::Waiting => format!(
                    "no issue timestamps on {untimed}: block_rq_issue attaches when this \
                     window ends"
                ),
                Fallback::Failed(e) => format!("no device latency on {untimed}: {e}"),
            });
        }
        let dropped: BTreeMap<_, _> = counts
            .into_iter()
            .filter(|(name, _)| *name != "device_time_fallback")
            .collect();
        ProbeStatus {
            name: NAME,
            attached: true,
            error: None,
            dropped,
            notes,
            map_entries: None,
            run_stats: None,
        }
    }
}
