//! Block IO per cgroup, disk and operation: completed requests, bytes, and the
//! queue-to-complete and issue-to-complete latency histograms.
//!
//! The work is done at completion, from the timestamps the request itself carries
//! (`start_time_ns` when it was allocated, `io_start_time_ns` when it was dispatched
//! to the driver), so that the common path keeps no in-flight map. Hooks (tp_btf):
//! - `block_rq_complete`: `TP_PROTO(struct request *rq, blk_status_t error,
//!   unsigned int nr_bytes)`, called for every (partial) completion before the
//!   request's bios are ended.
//! - `block_rq_issue`: `TP_PROTO(struct request *rq)`. Only for the fallback: a queue
//!   without device timestamps (no `QUEUE_FLAG_STATS`) gets its issue time noted in a
//!   map, keyed by request. The completion program marks such queues the first time
//!   it meets one, and only then does the agent attach this program: where every
//!   queue keeps its timestamps (the common case) issues cost nothing.
//!
//! Requests and queues are known by address, and addresses are reused: a request
//! slot serves request after request, and a removed disk's queue memory may become
//! another disk's. So each fallback entry also holds what identifies its owner (the
//! disk, and the request's allocation stamp), and is used only by that owner.
//! - `block_bio_queue`: `TP_PROTO(struct bio *bio)`, in the submitter's context, and
//!   `block_split`. Only attached where the io controller is on cgroup v1, to note the
//!   submitting task's v2 cgroup per bio ([`owner::SUBMITTER`]).
//!
//! Before 5.11 `block_rq_issue`, `block_bio_queue` and `block_split` pass the request
//! queue first (`BlockioConfig::queue_first`), and before 5.15 a request's disk is its
//! own `rq_disk`, not its queue's (`BlockioConfig::request_disk`).

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id,
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use cgscope_common::{
    blockio::{
        event, op, owner, BlockioConfig, BlockioKey, BlockioStats, DEFAULT_MAX_KEYS, MAX_INFLIGHT,
        MAX_QUEUES,
    },
    histogram::{atomic_add_u64, record_shared},
};

use crate::kernel::{
    bump, cgroup_id, entry_or_zeroed, load, loaded, now_ns, offsets, BPF_F_NO_PREALLOC,
    ROOT_CGROUP_ID,
};

/// Settings and field offsets; set by the agent at load time.
#[unsafe(no_mangle)]
static BLOCKIO_CONFIG: BlockioConfig = BlockioConfig {
    owner: 0,
    request_q: 0,
    request_cmd_flags: 0,
    request_data_len: 0,
    request_bio: 0,
    request_start_time_ns: 0,
    request_io_start_time_ns: 0,
    queue_disk: 0,
    disk_major: 0,
    disk_first_minor: 0,
    bio_blkg: 0,
    blkg_blkcg: 0,
    blkcg_cgroup: 0,
    bio_private: 0,
    request_disk: 0,
    queue_first: 0,
};

#[inline(always)]
fn config() -> BlockioConfig {
    loaded(&BLOCKIO_CONFIG)
}

/// Per (cgroup, disk, operation), shared by all CPUs (atomic adds): one copy per
/// triple instead of one per CPU, at the price of an atomic add per IO.
#[map]
static BLOCKIO_STATS: HashMap<BlockioKey, BlockioStats> =
    HashMap::with_max_entries(DEFAULT_MAX_KEYS, BPF_F_NO_PREALLOC);

/// A zeroed value for new `BLOCKIO_STATS` entries (too large for the stack).
#[map]
static BLOCKIO_ZERO: Array<BlockioStats> = Array::with_max_entries(1, 0);

/// A request's dispatch, noted by the issue program (the fallback).
#[repr(C)]
#[derive(Clone, Copy)]
struct Issued {
    /// When it was dispatched.
    at: u64,
    /// Its `start_time_ns` (0 where the queue keeps none) and disk: a completion
    /// uses the entry only if both are its own, so that a request in a reused slot
    /// is never timed from the dispatch of an earlier one that did not complete here
    /// (the entry of a request that completes is removed; one that is requeued is
    /// overwritten at its next dispatch).
    allocated: u64,
    dev: u32,
    _pad: u32,
}

/// Fallback: the dispatch by request address, for queues in
/// `BLOCKIO_UNTIMED_QUEUES`. LRU: the entry of a request that never completes
/// (aborted) is evicted, not kept forever.
#[map]
static BLOCKIO_ISSUED: LruHashMap<u64, Issued> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Queues whose requests carry no `io_start_time_ns`, by queue address, with their
/// disk: an entry whose disk is not the queue's own is a removed disk's (the agent
/// deletes those) and is not used.
#[map]
static BLOCKIO_UNTIMED_QUEUES: HashMap<u64, u32> = HashMap::with_max_entries(MAX_QUEUES, 0);

/// [`owner::SUBMITTER`] only: the submitter's v2 cgroup by bio address. Entries are
/// overwritten in place, never deleted: bios come from slab caches, so the same few
/// addresses are reused over and over, and a lookup that finds one costs a fraction
/// of an insert plus a delete (measured here: 460-750 ns per IO with insert at queue
/// and delete at completion). An entry always belongs to the address's latest bio:
/// every bio is noted when queued, before it can be part of a request. LRU: the
/// addresses of slab pages that were freed are evicted, not kept.
#[map]
static BLOCKIO_OWNER: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Counters by [`event`] slot.
#[map]
static BLOCKIO_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(event::SLOTS, 0);

#[btf_tracepoint(function = "block_rq_complete")]
pub fn blockio_complete(ctx: BtfTracePointContext) -> i32 {
    if let Err(slot) = try_complete(&ctx) {
        count(slot);
    }
    0
}

#[btf_tracepoint(function = "block_rq_issue")]
pub fn blockio_issue(ctx: BtfTracePointContext) -> i32 {
    let cfg = config();
    let rq = first_arg(&ctx, &cfg);
    let queue = load::<*const u8>(rq, cfg.request_q);
    // SAFETY: the value is copied out.
    let Some(untimed_dev) = (unsafe { BLOCKIO_UNTIMED_QUEUES.get(&(queue as u64)) }).copied()
    else {
        return 0;
    };
    let dev = disk_of(rq, queue, &cfg);
    if untimed_dev != dev || operation(rq, &cfg).is_none() {
        return 0;
    }
    let issued = Issued {
        at: now_ns(),
        allocated: load::<u64>(rq, cfg.request_start_time_ns),
        dev,
        _pad: 0,
    };
    if BLOCKIO_ISSUED.insert(&(rq as u64), &issued, 0).is_err() {
        count(event::INFLIGHT_FULL);
    }
    0
}

/// The whole disk of a request on `queue`, `major << 20 | minor` (the kernel's
/// `dev_t`): the queue's disk (5.15+), else the request's own.
#[inline(always)]
fn disk_of(rq: *const u8, queue: *const u8, cfg: &BlockioConfig) -> u32 {
    let disk = match cfg.request_disk {
        0 => load::<*const u8>(queue, cfg.queue_disk),
        request_disk => load::<*const u8>(rq, request_disk),
    };
    let major = load::<u32>(disk, cfg.disk_major);
    let minor = load::<u32>(disk, cfg.disk_first_minor);
    major << 20 | (minor & 0xf_ffff)
}

#[btf_tracepoint(function = "block_bio_queue")]
pub fn blockio_bio_queue(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: helper without preconditions.
    note_owner(first_arg(&ctx, &config()) as u64, unsafe {
        bpf_get_current_cgroup_id()
    });
    0
}

#[btf_tracepoint(function = "block_split")]
pub fn blockio_split(ctx: BtfTracePointContext) -> i32 {
    // `TP_PROTO(struct bio *bio, unsigned int new_sector)`: `bio` is the new front
    // part, chained to the bio it was cut from (its `bi_private`), which was queued
    // (and noted) by the submitter; the front part is not queued again.
    let cfg = config();
    let split = first_arg(&ctx, &cfg);
    let parent = load::<u64>(split, cfg.bio_private);
    // SAFETY: the value is copied out.
    if let Some(cgroup_id) = unsafe { BLOCKIO_OWNER.get(&parent) }.copied() {
        note_owner(split as u64, cgroup_id);
    }
    0
}

/// The first argument of `block_rq_issue`, `block_bio_queue` or `block_split` after
/// the request queue they passed first before 5.11 (the verifier follows only the
/// branch the read-only setting selects).
#[inline(always)]
fn first_arg(ctx: &BtfTracePointContext, cfg: &BlockioConfig) -> *const u8 {
    match cfg.queue_first {
        0 => ctx.arg(0),
        _ => ctx.arg(1),
    }
}

/// Notes `cgroup_id` as the owner of `bio`: in place where the address has an entry.
#[inline(always)]
fn note_owner(bio: u64, cgroup_id: u64) {
    match BLOCKIO_OWNER.get_ptr_mut(&bio) {
        // SAFETY: a live map value; no other bio has this address while it is queued.
        Some(owner) => unsafe { *owner = cgroup_id },
        None => {
            if BLOCKIO_OWNER.insert(&bio, &cgroup_id, 0).is_err() {
                count(event::INFLIGHT_FULL);
            }
        }
    }
}

/// The request's operation, `None` for those not counted (zone management,
/// driver-private passthrough).
#[inline(always)]
fn operation(rq: *const u8, cfg: &BlockioConfig) -> Option<u32> {
    // REQ_OP_* (include/linux/blk_types.h): the low 8 bits of cmd_flags.
    match load::<u32>(rq, cfg.request_cmd_flags) & 0xff {
        0 => Some(op::READ),
        1 | 9 => Some(op::WRITE),   // WRITE, WRITE_ZEROES
        3 | 5 => Some(op::DISCARD), // DISCARD, SECURE_ERASE
        2 => Some(op::FLUSH),
        _ => None,
    }
}

fn try_complete(ctx: &BtfTracePointContext) -> Result<(), u32> {
    let now = now_ns();
    let cfg = config();
    let rq: *const u8 = ctx.arg(0);
    let nr_bytes = ctx.arg::<u64>(2) & 0xffff_ffff;
    let Some(op) = operation(rq, &cfg) else {
        return Ok(());
    };
    // A partial completion adds its bytes; the request counts once, at its last one.
    let last = nr_bytes >= u64::from(load::<u32>(rq, cfg.request_data_len));
    let queue = load::<*const u8>(rq, cfg.request_q);
    let key = BlockioKey {
        cgroup_id: owner_of(rq, &cfg),
        dev: disk_of(rq, queue, &cfg),
        op,
    };
    let stats = entry_or_zeroed!(BLOCKIO_STATS, &key, BLOCKIO_ZERO).ok_or(event::STATS_FULL)?;
    // SAFETY: a live map value, 8-byte aligned; its counters are only updated with
    // atomic adds.
    unsafe { atomic_add_u64(&raw mut (*stats).bytes, nr_bytes) };
    if !last {
        return Ok(());
    }
    // SAFETY: as above.
    unsafe { atomic_add_u64(&raw mut (*stats).ios, 1) };

    let start = load::<u64>(rq, cfg.request_start_time_ns);
    if start != 0 {
        // SAFETY: as above.
        unsafe { record_shared(&raw mut (*stats).queue, now.saturating_sub(start)) };
    } else {
        count(event::NO_QUEUE_TIME);
    }
    if let Some(issued) = issue_time(rq, &cfg, queue as u64, key.dev, start) {
        // SAFETY: as above.
        unsafe { record_shared(&raw mut (*stats).device, now.saturating_sub(issued)) };
    }
    Ok(())
}

/// When the request, allocated at `allocated` (its `start_time_ns`) on disk `dev`,
/// was dispatched: its own timestamp, else the fallback's.
#[inline(always)]
fn issue_time(
    rq: *const u8,
    cfg: &BlockioConfig,
    queue: u64,
    dev: u32,
    allocated: u64,
) -> Option<u64> {
    let issued = load::<u64>(rq, cfg.request_io_start_time_ns);
    if issued != 0 {
        return Some(issued);
    }
    let key = rq as u64;
    // SAFETY: the value is copied out before the entry is removed.
    if let Some(issued) = unsafe { BLOCKIO_ISSUED.get(&key) }.copied() {
        let _ = BLOCKIO_ISSUED.remove(&key);
        if issued.dev == dev && issued.allocated == allocated {
            count(event::DEVICE_TIME_FALLBACK);
            return Some(issued.at);
        }
        count(event::STALE_ISSUE);
        return None;
    }
    // The first untimed request of this queue (or of a new disk whose queue has a
    // removed one's address): from now on its issues are noted (once the agent has
    // attached the issue program, at its next window).
    // SAFETY: the value is copied out.
    if unsafe { BLOCKIO_UNTIMED_QUEUES.get(&queue) }.copied() != Some(dev) {
        let _ = BLOCKIO_UNTIMED_QUEUES.insert(&queue, &dev, 0);
    }
    count(event::NO_DEVICE_TIME);
    None
}

/// The cgroup the request's IO belongs to.
#[inline(always)]
fn owner_of(rq: *const u8, cfg: &BlockioConfig) -> u64 {
    let bio = load::<*const u8>(rq, cfg.request_bio);
    if bio.is_null() {
        return ROOT_CGROUP_ID; // a flush
    }
    if cfg.owner == owner::SUBMITTER {
        // SAFETY: the value is copied out.
        return unsafe { BLOCKIO_OWNER.get(&(bio as u64)) }
            .copied()
            .unwrap_or(ROOT_CGROUP_ID);
    }
    let blkg = load::<*const u8>(bio, cfg.bio_blkg);
    let blkcg = load::<*const u8>(blkg, cfg.blkg_blkcg);
    let cgroup = load::<*const u8>(blkcg, cfg.blkcg_cgroup);
    cgroup_id(cgroup, &offsets()).unwrap_or_else(|| {
        count(event::CGROUP_UNREADABLE);
        ROOT_CGROUP_ID
    })
}

#[inline(always)]
fn count(slot: u32) {
    bump(&BLOCKIO_EVENTS, slot);
}
