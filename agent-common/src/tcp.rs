//! TCP: what the `tcp` programs keep in the kernel, per (cgroup, network namespace).

use crate::histogram::Histogram;

/// Default capacity of `TCP_STATS`: (cgroup, netns) pairs.
pub const DEFAULT_MAX_KEYS: u32 = 4_096;
/// Capacity of `TCP_CONNECTING` (active opens in SYN-SENT) and `TCP_RTT_SAMPLED`
/// (sockets by the time of their last RTT sample). Entries are keyed by the socket's
/// address and deleted when the socket closes (the kernel frees a TCP socket only in
/// `TCP_CLOSE`), so that the next socket at the same address starts afresh; LRU as a
/// backstop: an entry whose deletion was missed is evicted, not kept.
pub const MAX_SOCKETS: u32 = 16_384;
/// RTT sample policy: at most one sample of a socket's smoothed RTT per this
/// interval, taken when a segment arrives on it (see `agent-ebpf/src/tcp.rs`).
pub const RTT_SAMPLE_INTERVAL_NS: u64 = 1_000_000_000;

/// Value of `TCP_RTT_SAMPLED`, per socket: when its RTT was last sampled, and the
/// jiffy in which that was last checked (a segment in the same jiffy is not
/// checked again: one clock read per socket and tick, not per segment).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RttSampled {
    pub sampled_ns: u64,
    pub checked_jiffies: u64,
}

/// Counter slots of `TCP_EVENTS`.
pub mod event {
    /// `TCP_STATS` is full: a new (cgroup, netns) was not recorded.
    pub const STATS_FULL: u32 = 0;
    /// The socket's cgroup could not be read; counted for the root cgroup.
    pub const CGROUP_UNREADABLE: u32 = 1;
    /// An established connection whose SYN-SENT start was not seen (opened before
    /// the probe attached, or evicted): no connect latency for it.
    pub const CONNECT_START_MISSING: u32 = 2;
    /// An event (a reset sent) for a time-wait socket: a `inet_timewait_sock`, which
    /// keeps no cgroup, so the event is not attributed to any (kernels 6.10+ trace
    /// `tcp_send_reset` for them).
    pub const UNATTRIBUTED_TIME_WAIT: u32 = 3;
    /// An event for a request socket (a connection in SYN-RECV before it has a full
    /// socket), which keeps no cgroup either. (6.1-6.18 send the resets of such a
    /// connection with its listener, a full socket, which is attributed.)
    pub const UNATTRIBUTED_REQUEST: u32 = 4;
    /// A reset sent for no socket (a segment to a closed port; kernels 6.10+).
    pub const UNATTRIBUTED_NO_SOCKET: u32 = 5;
    pub const SLOTS: u32 = 6;
}

/// Key of `TCP_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpKey {
    /// cgroup v2 id of the socket (the cgroup of the task that created it; accepted
    /// sockets inherit the listener's).
    pub cgroup_id: u64,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<TcpKey>() == 16);

/// Value of `TCP_STATS`, shared by all CPUs and updated with atomic adds.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TcpStats {
    /// Retransmitted segments (`tcp:tcp_retransmit_skb`).
    pub retransmits: u64,
    /// Active opens that went from SYN-SENT back to CLOSE.
    pub connect_failures: u64,
    /// Resets sent on a socket (`tcp:tcp_send_reset`).
    pub resets_sent: u64,
    /// Resets received (`tcp:tcp_receive_reset`).
    pub resets_received: u64,
    /// Smoothed RTT samples.
    pub rtt: Histogram,
    /// Active opens: SYN-SENT to ESTABLISHED.
    pub connect: Histogram,
}

const _: () =
    assert!(core::mem::size_of::<TcpStats>() == 32 + 2 * core::mem::size_of::<Histogram>());

impl TcpStats {
    pub const ZERO: Self = Self {
        retransmits: 0,
        connect_failures: 0,
        resets_sent: 0,
        resets_received: 0,
        rtt: Histogram::ZERO,
        connect: Histogram::ZERO,
    };
}

/// Kernel struct field offsets, resolved by the agent from the running kernel's BTF.
/// From a `struct cgroup *` to its id, the programs use [`crate::runq::TaskOffsets`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpConfig {
    /// `sock.sk_protocol` (u16)
    pub sock_protocol: u32,
    /// `sock.__sk_common.skc_net.net` (`struct net *`)
    pub sock_net: u32,
    /// `net.ns.inum` (u32)
    pub net_inum: u32,
    /// `sock.sk_cgrp_data.cgroup` (`struct cgroup *`)
    pub sock_cgroup: u32,
    /// `tcp_sock.srtt_us` (u32, smoothed RTT in µs << 3)
    pub tcp_srtt_us: u32,
    /// `sock_common.skc_state` (u8): tells full sockets from the smaller time-wait
    /// (`TCP_TIME_WAIT`) and request (`TCP_NEW_SYN_RECV`) sockets, which share only
    /// `sock_common` with them.
    pub sock_state: u32,
}

const _: () = assert!(core::mem::size_of::<TcpConfig>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), Copy, explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::TcpKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TcpConfig {}
}
