//! TCP per cgroup and network namespace (kernel side: `agent-ebpf/src/tcp.rs`).
//! Requires kernel 6.1+ with BTF (tp_btf on `sock:inet_sock_set_state` and the
//! `tcp:*` tracepoints).

use std::collections::HashMap;

use aya::{
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray},
    Ebpf, EbpfLoader,
};
pub use cgscope_common::tcp::TcpKey;
use cgscope_common::tcp::{event, TcpConfig, TcpStats};

use super::{attach_all, counters, take_map, ProbeConfig, ProbeError};
use crate::{
    btf::{Btf, BtfError},
    histogram::LatencyTotals,
    snapshot::ProbeStatus,
};

pub const NAME: &str = "tcp";

const PROGRAMS: [(&str, &str); 5] = [
    ("tcp_state", "inet_sock_set_state"),
    ("tcp_probe", "tcp_probe"),
    ("tcp_retransmit", "tcp_retransmit_skb"),
    ("tcp_send_reset", "tcp_send_reset"),
    ("tcp_receive_reset", "tcp_receive_reset"),
];

/// Names of the `TCP_EVENTS` slots, in slot order.
const EVENTS: [&str; event::SLOTS as usize] = [
    "stats_map_full",
    "cgroup_unreadable",
    "connect_start_missing",
    "unattributed_time_wait",
    "unattributed_request",
    "unattributed_no_socket",
];

/// Field offsets from the running kernel's BTF.
pub fn config(btf: &Btf) -> Result<TcpConfig, BtfError> {
    Ok(TcpConfig {
        sock_protocol: btf.offset_of("sock", "sk_protocol", 2)?,
        // `possible_net_t` is an anonymous struct holding just `struct net *net`
        // (8 bytes, at its start).
        sock_net: btf.offset_of("sock_common", "skc_net", 8)?,
        net_inum: btf.member("net", "ns")?.offset + btf.offset_of("ns_common", "inum", 4)?,
        sock_cgroup: btf.member("sock", "sk_cgrp_data")?.offset
            + btf.offset_of("sock_cgroup_data", "cgroup", 8)?,
        tcp_srtt_us: btf.offset_of("tcp_sock", "srtt_us", 4)?,
        sock_state: btf.offset_of("sock_common", "skc_state", 1)?,
    })
}

pub fn size_maps(loader: &mut EbpfLoader, config: &ProbeConfig) {
    loader.map_max_entries("TCP_STATS", config.max_cgroups);
}

/// Cumulative counters of one (cgroup, netns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTotals {
    pub retransmits: u64,
    pub connect_failures: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub rtt: LatencyTotals,
    pub connect: LatencyTotals,
}

impl From<&TcpStats> for TcpTotals {
    fn from(v: &TcpStats) -> Self {
        Self {
            retransmits: v.retransmits,
            connect_failures: v.connect_failures,
            resets_sent: v.resets_sent,
            resets_received: v.resets_received,
            rtt: LatencyTotals::from_cpus([&v.rtt]),
            connect: LatencyTotals::from_cpus([&v.connect]),
        }
    }
}

/// The attached probe and its maps.
pub struct Tcp {
    stats: BpfHashMap<MapData, TcpKey, TcpStats>,
    events: PerCpuArray<MapData, u64>,
}

impl Tcp {
    /// Loads and attaches the programs, all or none. A missing kernel field
    /// (`config` failed) is reported here, as this probe's error.
    pub fn attach(
        ebpf: &mut Ebpf,
        btf: &aya::Btf,
        config: Result<(), &BtfError>,
    ) -> Result<Self, ProbeError> {
        config.map_err(|e| ProbeError::Load(format!("kernel BTF: {e}")))?;
        attach_all(ebpf, btf, &PROGRAMS)?;
        Ok(Self {
            stats: take_map(ebpf, "TCP_STATS")?,
            events: take_map(ebpf, "TCP_EVENTS")?,
        })
    }

    /// Reads the cumulative counters of every (cgroup, netns) into `out` (cleared
    /// first).
    pub fn read(&self, out: &mut HashMap<TcpKey, TcpTotals>) -> Result<(), MapError> {
        super::read_map(self.stats.iter(), out, |v| TcpTotals::from(&v))
    }

    /// Deletes the entries of removed cgroups.
    pub fn forget<'a>(&mut self, keys: impl IntoIterator<Item = &'a TcpKey>) {
        super::forget_keys(&mut self.stats, keys);
    }

    pub fn status(&self) -> ProbeStatus {
        ProbeStatus {
            name: NAME,
            attached: true,
            error: None,
            dropped: counters(&self.events, &EVENTS),
            notes: vec![
                "RTT: one smoothed-RTT sample per socket per second".into(),
                "resets sent for a time-wait or request socket, or for none (kernels \
                 6.10+ trace those), which carry no cgroup, are counted as \
                 unattributed_* here"
                    .into(),
            ],
            map_entries: None,
            run_stats: None,
        }
    }
}
