//! Block IO per device: `io.stat` and `io.max`, with the blockio probe's requests and
//! latencies.

use schemars::JsonSchema;
use serde::Serialize;

use super::LatencySummary;

/// Block IO, by device.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct IoSample {
    pub devices: Vec<IoDeviceSample>,
}

/// One block device. The `io.stat` counters are deltas over the window, `*_iops`
/// their rates, the limits gauges from `io.max` (`null` = no limit); all are `null`
/// where the cgroup has no `io.stat` line for the device (io controller not enabled,
/// hybrid host). `completed`, `latency` and `device_latency` come from the blockio
/// probe, per operation (`null` when the probe is not attached): `io.stat` counts
/// IOs as submitted, the probe counts requests as completed by the device (merged
/// IOs are one request).
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct IoDeviceSample {
    /// `"MAJ:MIN"`
    pub device: String,
    /// Kernel name (`sda`, `nvme0n1`), if the device still exists.
    pub name: Option<String>,
    pub read_ops: Option<u64>,
    pub write_ops: Option<u64>,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    pub discard_ops: Option<u64>,
    pub discard_bytes: Option<u64>,
    pub read_iops: Option<f64>,
    pub write_iops: Option<f64>,
    pub limit_read_bps: Option<u64>,
    pub limit_write_bps: Option<u64>,
    pub limit_read_iops: Option<u64>,
    pub limit_write_iops: Option<u64>,
    /// Requests completed in the window.
    pub completed: Option<PerOperation<Completed>>,
    /// Queue-to-complete: from the request's allocation (after io.max throttling) to
    /// its completion, what the application waits.
    pub latency: Option<PerOperation<LatencySummary>>,
    /// Issue-to-complete: from the dispatch to the driver to the completion, what the
    /// device takes.
    pub device_latency: Option<PerOperation<LatencySummary>>,
}

/// One value per block operation (`write` includes write-zeroes, `discard` secure
/// erase).
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
#[schemars(rename = "PerOperation_{T}")]
pub struct PerOperation<T> {
    pub read: T,
    pub write: T,
    pub discard: T,
    pub flush: T,
}

impl<T> PerOperation<T> {
    /// The slot of `cgscope_common::blockio::op` `op`.
    pub fn get_mut(&mut self, op: u32) -> Option<&mut T> {
        use cgscope_common::blockio::op;
        match op {
            op::READ => Some(&mut self.read),
            op::WRITE => Some(&mut self.write),
            op::DISCARD => Some(&mut self.discard),
            op::FLUSH => Some(&mut self.flush),
            _ => None,
        }
    }
}

/// Requests of one operation completed in the window, and their rate.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Completed {
    pub ops: u64,
    pub bytes: u64,
    pub iops: f64,
}
