//! Block IO: what the `blockio` programs keep in the kernel.
//!
//! One entry per (cgroup, disk, operation) with the completed requests, their bytes,
//! and two latency histograms: queue-to-complete (from the request's allocation, what
//! the application waits, `request.start_time_ns`) and issue-to-complete (from the
//! dispatch to the driver, what the device takes, `request.io_start_time_ns`).

use crate::histogram::Histogram;

/// Default capacity of `BLOCKIO_STATS`: (cgroup, disk, operation) triples.
pub const DEFAULT_MAX_KEYS: u32 = 4_096;
/// Capacity of the maps keyed by an in-flight request or bio (fallbacks only).
pub const MAX_INFLIGHT: u32 = 16_384;
/// Capacity of `BLOCKIO_UNTIMED_QUEUES`: request queues without device timestamps.
pub const MAX_QUEUES: u32 = 256;

/// Operations, the `op` of [`BlockioKey`].
pub mod op {
    pub const READ: u32 = 0;
    /// Also `REQ_OP_WRITE_ZEROES`.
    pub const WRITE: u32 = 1;
    /// Also `REQ_OP_SECURE_ERASE`.
    pub const DISCARD: u32 = 2;
    pub const FLUSH: u32 = 3;
    pub const COUNT: usize = 4;
}

/// How a request is attributed to a cgroup; the value of [`BlockioConfig::owner`].
pub mod owner {
    /// The request's bio blkcg (`bio->bi_blkg->blkcg`): right for writeback done by
    /// kworkers. Needs the io controller on the cgroup v2 hierarchy.
    pub const BLKCG: u32 = 0;
    /// The v2 cgroup of the task that submitted the bio, noted at `block_bio_queue`
    /// and handed to the front part of a split bio at `block_split`: for hosts whose
    /// io controller is on cgroup v1 (writeback then counts for the flusher's cgroup).
    pub const SUBMITTER: u32 = 1;
}

/// Counter slots of `BLOCKIO_EVENTS`.
pub mod event {
    /// `BLOCKIO_STATS` is full: a new (cgroup, disk, operation) was not recorded.
    pub const STATS_FULL: u32 = 0;
    /// `BLOCKIO_ISSUED` or `BLOCKIO_OWNER` is full: a request lost its fallback data.
    pub const INFLIGHT_FULL: u32 = 1;
    /// The request's cgroup could not be read; counted for the root cgroup.
    pub const CGROUP_UNREADABLE: u32 = 2;
    /// Completed without `start_time_ns` (iostats off, no scheduler): no
    /// queue-to-complete latency for it.
    pub const NO_QUEUE_TIME: u32 = 3;
    /// Timed issue-to-complete by the fallback (the queue keeps no device timestamp).
    pub const DEVICE_TIME_FALLBACK: u32 = 4;
    /// Completed without any device timestamp (before its queue was known to need
    /// the fallback).
    pub const NO_DEVICE_TIME: u32 = 5;
    /// The fallback's entry for the request's address was another request's (one
    /// that did not complete here, or another disk's): not used, no device latency.
    pub const STALE_ISSUE: u32 = 6;
    /// Number of slots.
    pub const SLOTS: u32 = 7;
}

/// Key of `BLOCKIO_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockioKey {
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// The whole disk, `major << 20 | minor` (the kernel's `dev_t` layout).
    pub dev: u32,
    /// [`op`].
    pub op: u32,
}

const _: () = assert!(core::mem::size_of::<BlockioKey>() == 16);

/// Value of `BLOCKIO_STATS`, shared by all CPUs and updated with atomic adds.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockioStats {
    /// Completed requests.
    pub ios: u64,
    /// Completed bytes.
    pub bytes: u64,
    /// Queue-to-complete latency.
    pub queue: Histogram,
    /// Issue-to-complete latency.
    pub device: Histogram,
}

const _: () =
    assert!(core::mem::size_of::<BlockioStats>() == 16 + 2 * core::mem::size_of::<Histogram>());

impl BlockioStats {
    pub const ZERO: Self = Self {
        ios: 0,
        bytes: 0,
        queue: Histogram::ZERO,
        device: Histogram::ZERO,
    };
}

/// `major << 20 | minor` → (major, minor).
pub const fn dev_parts(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & ((1 << 20) - 1))
}

/// Load-time settings and kernel struct field offsets, resolved by the agent from the
/// running kernel's BTF and written into the programs' read-only globals.
/// From a `struct cgroup *` to its id, the programs use [`crate::runq::TaskOffsets`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockioConfig {
    /// [`owner`].
    pub owner: u32,
    /// `request.q` (`struct request_queue *`)
    pub request_q: u32,
    /// `request.cmd_flags` (`blk_opf_t`, u32; the operation in its low 8 bits)
    pub request_cmd_flags: u32,
    /// `request.__data_len` (u32, bytes not yet completed)
    pub request_data_len: u32,
    /// `request.bio` (`struct bio *`, the first bio; none for a flush)
    pub request_bio: u32,
    /// `request.start_time_ns` (u64, 0 when not kept)
    pub request_start_time_ns: u32,
    /// `request.io_start_time_ns` (u64, 0 when not kept)
    pub request_io_start_time_ns: u32,
    /// `request_queue.disk` (`struct gendisk *`, 5.15+); 0 where the disk is read
    /// from `request_disk` instead
    pub queue_disk: u32,
    /// `gendisk.major` (int)
    pub disk_major: u32,
    /// `gendisk.first_minor` (int)
    pub disk_first_minor: u32,
    /// `bio.bi_blkg` (`struct blkcg_gq *`)
    pub bio_blkg: u32,
    /// `blkcg_gq.blkcg` (`struct blkcg *`)
    pub blkg_blkcg: u32,
    /// `blkcg.css.cgroup` (`struct cgroup *`): offset of `css` plus that of `cgroup`
    pub blkcg_cgroup: u32,
    /// `bio.bi_private` (`void *`; a split bio's parent, see `bio_chain`)
    pub bio_private: u32,
    /// `request.rq_disk` (`struct gendisk *`; until 5.19), used only where the queue
    /// has no `disk` (before 5.15); else 0
    pub request_disk: u32,
    /// 1 where `block_rq_issue`, `block_bio_queue` and `block_split` pass the
    /// request queue before their own arguments (before 5.11), else 0
    pub queue_first: u32,
}

const _: () = assert!(core::mem::size_of::<BlockioConfig>() == 64);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), Copy, explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::BlockioKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockioStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockioConfig {}
}
