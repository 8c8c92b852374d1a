//! Network: the counters of the network namespace a cgroup owns, and the tcp
//! probe's view of its sockets.

use schemars::JsonSchema;
use serde::Serialize;

use super::LatencySummary;

/// A cgroup's network in the window. Two sources:
/// - the network namespace the cgroup owns (a pod, or a container outside any pod):
///   `netns`, `interfaces`, `tcp`, `udp`, namespace-wide, every counter a delta
///   except `tcp.curr_estab` (a gauge); `null`/empty for a cgroup that owns none;
/// - the tcp probe, for the sockets of this cgroup and its descendants in any
///   namespace: the `tcp_*` fields (deltas, histograms of the window); `null` when
///   the probe is not attached.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct NetworkSample {
    /// Inode of the network namespace (`/proc/<pid>/ns/net`).
    pub netns: Option<u64>,
    pub interfaces: Vec<Interface>,
    pub tcp: Option<Tcp>,
    pub udp: Option<Udp>,
    /// Smoothed RTT, one sample per socket per second.
    pub tcp_rtt: Option<LatencySummary>,
    /// Active opens, SYN sent to established.
    pub tcp_connect_latency: Option<LatencySummary>,
    /// Active opens that failed (SYN-SENT back to CLOSE: refused, timed out).
    pub tcp_connect_failures: Option<u64>,
    /// Retransmitted segments.
    pub tcp_retransmits: Option<u64>,
    pub tcp_resets_sent: Option<u64>,
    pub tcp_resets_received: Option<u64>,
}

/// One interface of the namespace (`net/dev`), deltas over the window.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The namespace's TCP counters (`net/snmp` `Tcp:`, `net/netstat` `TcpExt:`, the
/// source of each in `crate::net`): deltas over the window, except `curr_estab`, a
/// gauge. `null` where this kernel does not count it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Tcp {
    pub active_opens: Option<u64>,
    pub passive_opens: Option<u64>,
    pub attempt_fails: Option<u64>,
    pub estab_resets: Option<u64>,
    pub curr_estab: Option<u64>,
    pub in_segs: Option<u64>,
    pub out_segs: Option<u64>,
    pub retrans_segs: Option<u64>,
    pub in_errs: Option<u64>,
    pub out_rsts: Option<u64>,
    pub listen_overflows: Option<u64>,
    pub listen_drops: Option<u64>,
    pub timeouts: Option<u64>,
    pub syn_retrans: Option<u64>,
    pub lost_retransmits: Option<u64>,
}

/// The namespace's UDP counters (`net/snmp` `Udp:`), deltas over the window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Udp {
    pub in_datagrams: Option<u64>,
    pub out_datagrams: Option<u64>,
    pub no_ports: Option<u64>,
    pub in_errors: Option<u64>,
    pub rcvbuf_errors: Option<u64>,
    pub sndbuf_errors: Option<u64>,
}
