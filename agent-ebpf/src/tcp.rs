//! TCP per cgroup and network namespace: smoothed-RTT samples, connect latency and
//! failures of active opens, retransmitted segments, resets. Stable tracepoints
//! through tp_btf only (no kprobes, no trampolines):
//! - `inet_sock_set_state(sk, oldstate, newstate)`: CLOSE → SYN-SENT starts a
//!   connect, SYN-SENT → ESTABLISHED ends it (its latency), SYN-SENT → CLOSE fails it.
//!   Any state → CLOSE also deletes what is kept here for the socket: the kernel
//!   frees a TCP socket only in CLOSE, and the next socket allocated at its address
//!   must not find its entries (it would lose its first RTT sample to the "sampled
//!   less than a second ago" of the dead one). A socket entering SYN-SENT or
//!   SYN-RECV clears its RTT entry as well, in case a CLOSE went unseen.
//! - `tcp_probe(sk, skb)`: every segment received on an established socket. RTT
//!   sample policy: one sample of `srtt` per socket per second, the first at the
//!   socket's first segment that finds an RTT measured. Sampling every
//!   segment would weight connections by their packet rate (one bulk transfer
//!   would be the whole histogram) and cost a histogram update per packet; per
//!   socket and interval, each connection counts by how long it lives, and a packet
//!   costs one hash lookup and a read of `jiffies`: the clock is read once per
//!   socket and tick, not per packet (measured here: 180-210 → 130-150 ns per
//!   segment on iperf3).
//! - `tcp_retransmit_skb(sk, skb, ...)`, `tcp_send_reset(sk, skb, ...)`,
//!   `tcp_receive_reset(sk)`. Since 6.10 `tcp_send_reset` also passes no socket (a
//!   segment to a closed port), a time-wait socket or a request socket: only full
//!   sockets carry a cgroup (`sk_cgrp_data` lies past the end of the other two), so
//!   the socket's kind is read first (`skc_state`, in the `sock_common` all three
//!   share) and the events of the others are counted as unattributed ([`event`]).
//!   (The resets of a connection in SYN-RECV come with its listener, a full socket,
//!   on 6.1-6.18.)

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_skc_to_tcp_sock},
    macros::{btf_tracepoint, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use cgscope_common::{
    histogram::{atomic_add_u64, record_shared},
    tcp::{
        event, RttSampled, TcpConfig, TcpKey, TcpStats, DEFAULT_MAX_KEYS, MAX_SOCKETS,
        RTT_SAMPLE_INTERVAL_NS,
    },
};

use crate::kernel::{
    bump, cgroup_id, entry_or_zeroed, load, loaded, now_ns, offsets, BPF_F_NO_PREALLOC,
    ROOT_CGROUP_ID,
};

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
/// `skc_state` of an `inet_timewait_sock` (include/net/tcp_states.h).
const TCP_TIME_WAIT: u8 = 6;
/// `skc_state` of a `request_sock`: a connection in SYN-RECV before it has a full
/// socket (include/net/tcp_states.h, since 4.4).
const TCP_NEW_SYN_RECV: u8 = 12;

#[unsafe(no_mangle)]
static TCP_CONFIG: TcpConfig = TcpConfig {
    sock_protocol: 0,
    sock_net: 0,
    net_inum: 0,
    sock_cgroup: 0,
    tcp_srtt_us: 0,
    sock_state: 0,
};

#[inline(always)]
fn config() -> TcpConfig {
    loaded(&TCP_CONFIG)
}

/// Per (cgroup, netns), shared by all CPUs (atomic adds).
#[map]
static TCP_STATS: HashMap<TcpKey, TcpStats> =
    HashMap::with_max_entries(DEFAULT_MAX_KEYS, BPF_F_NO_PREALLOC);

#[map]
static TCP_ZERO: Array<TcpStats> = Array::with_max_entries(1, 0);

/// Active opens in SYN-SENT: when they started, by socket; deleted when the socket
/// leaves SYN-SENT.
#[map]
static TCP_CONNECTING: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

/// When each socket's RTT was last sampled; deleted when the socket closes.
#[map]
static TCP_RTT_SAMPLED: LruHashMap<u64, RttSampled> = LruHashMap::with_max_entries(MAX_SOCKETS, 0);

#[map]
static TCP_EVENTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(event::SLOTS, 0);

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tcp_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let (old, new): (i32, i32) = (ctx.arg(1), ctx.arg(2));
    let cfg = config();
    if load::<u16>(sk, cfg.sock_protocol) != IPPROTO_TCP {
        return 0;
    }
    let key = sk as u64;
    // The connect that started at this socket's CLOSE → SYN-SENT, if it was seen;
    // taken out whatever SYN-SENT leads to (also SYN-RECV: a simultaneous open).
    let started = if old == TCP_SYN_SENT {
        // SAFETY: the value is copied out before the entry is removed.
        let started = unsafe { TCP_CONNECTING.get(&key) }.copied();
        let _ = TCP_CONNECTING.remove(&key);
        started
    } else {
        None
    };
    match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            // LRU: never full; the oldest stale entry makes room.
            let _ = TCP_CONNECTING.insert(&key, &now_ns(), 0);
            // A socket starting a connection has taken no RTT sample yet, whatever
            // a dead socket at this address left (its CLOSE not seen: freed while
            // the probe attached, or a path that does not trace it).
            let _ = TCP_RTT_SAMPLED.remove(&key);
        }
        (_, TCP_SYN_RECV) => {
            // The same for a passive open's new socket.
            let _ = TCP_RTT_SAMPLED.remove(&key);
        }
        (TCP_SYN_SENT, TCP_ESTABLISHED) => match (started, stats(sk, &cfg)) {
            (Some(started), Some(stats)) => {
                // SAFETY: a live shared map value, updated atomically only.
                unsafe {
                    record_shared(&raw mut (*stats).connect, now_ns().saturating_sub(started))
                };
            }
            (None, _) => count(event::CONNECT_START_MISSING),
            _ => {}
        },
        (_, TCP_CLOSE) => {
            let _ = TCP_RTT_SAMPLED.remove(&key);
            if old == TCP_SYN_SENT {
                if let Some(stats) = stats(sk, &cfg) {
                    // SAFETY: as above.
                    unsafe { atomic_add_u64(&raw mut (*stats).connect_failures, 1) };
                }
            }
        }
        _ => {}
    }
    0
}

#[btf_tracepoint(function = "tcp_probe")]
pub fn tcp_probe(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let key = sk as u64;
    // SAFETY: helper without preconditions (reads jiffies_64).
    let jiffies = unsafe { bpf_jiffies64() };
    let last = TCP_RTT_SAMPLED.get_ptr_mut(&key);
    let now = match last {
        Some(last) => {
            // SAFETY: a live map value of this socket; segments of one socket are
            // processed under its lock, one at a time.
            let last = unsafe { &mut *last };
            if last.checked_jiffies == jiffies {
                return 0; // checked in this tick already
            }
            last.checked_jiffies = jiffies;
            let now = now_ns();
            if now.saturating_sub(last.sampled_ns) < RTT_SAMPLE_INTERVAL_NS {
                return 0;
            }
            now
        }
        None => now_ns(),
    };
    let cfg = config();
    // SAFETY: the helper checks the socket type; NULL if it is not a tcp_sock.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut _) } as *const u8;
    if tp.is_null() {
        return 0;
    }
    let srtt_us = u64::from(load::<u32>(tp, cfg.tcp_srtt_us) >> 3);
    if srtt_us == 0 {
        // No RTT measured yet: the socket's first sample is still to come (not
        // marked as sampled).
        return 0;
    }
    if let Some(stats) = stats(sk, &cfg) {
        // SAFETY: a live shared map value, updated atomically only.
        unsafe { record_shared(&raw mut (*stats).rtt, srtt_us * 1000) };
    }
    match last {
        // SAFETY: as above; the entry is this socket's.
        Some(last) => unsafe { (*last).sampled_ns = now },
        None => {
            let first = RttSampled {
                sampled_ns: now,
                checked_jiffies: jiffies,
            };
            // LRU: never full; the oldest entry makes room.
            let _ = TCP_RTT_SAMPLED.insert(&key, &first, 0);
        }
    }
    0
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit(ctx: BtfTracePointContext) -> i32 {
    add(ctx.arg(0), |s| &raw mut s.retransmits);
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    add(ctx.arg(0), |s| &raw mut s.resets_sent);
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    add(ctx.arg(0), |s| &raw mut s.resets_received);
    0
}

/// Adds one to the counter `field` selects in `sk`'s entry; an event of a socket
/// without a cgroup is counted as unattributed instead.
#[inline(always)]
fn add(sk: *const u8, field: impl FnOnce(&mut TcpStats) -> *mut u64) {
    let cfg = config();
    let owner = match full_socket(sk, &cfg) {
        Ok(owner) => owner,
        Err(slot) => return count(slot),
    };
    if let Some(stats) = stats(owner, &cfg) {
        // SAFETY: a live shared map value, its counters updated atomically only.
        unsafe { atomic_add_u64(field(&mut *stats), 1) };
    }
}

/// `sk` if it is a full socket, the only kind that carries a cgroup; else the
/// [`event`] slot that counts it as unattributed: no socket, a time-wait socket, a
/// request socket. Reads only `skc_state` from `sk` before it knows `sk` is a full
/// `struct sock`.
#[inline(always)]
fn full_socket(sk: *const u8, cfg: &TcpConfig) -> Result<*const u8, u32> {
    if sk.is_null() {
        return Err(event::UNATTRIBUTED_NO_SOCKET);
    }
    match load::<u8>(sk, cfg.sock_state) {
        TCP_TIME_WAIT => Err(event::UNATTRIBUTED_TIME_WAIT),
        TCP_NEW_SYN_RECV => Err(event::UNATTRIBUTED_REQUEST),
        _ => Ok(sk),
    }
}

/// The entry of `sk`'s (cgroup, netns), created if needed; `None` if the map is full.
/// `sk` must be a full socket (see [`full_socket`]).
#[inline(always)]
fn stats(sk: *const u8, cfg: &TcpConfig) -> Option<*mut TcpStats> {
    let cgroup = load::<*const u8>(sk, cfg.sock_cgroup);
    let cgroup_id = cgroup_id(cgroup, &offsets()).unwrap_or_else(|| {
        count(event::CGROUP_UNREADABLE);
        ROOT_CGROUP_ID
    });
    let net = load::<*const u8>(sk, cfg.sock_net);
    let key = TcpKey {
        cgroup_id,
        netns: load::<u32>(net, cfg.net_inum),
        _pad: 0,
    };
    let stats = entry_or_zeroed!(TCP_STATS, &key, TCP_ZERO);
    if stats.is_none() {
        count(event::STATS_FULL);
    }
    stats
}

#[inline(always)]
fn count(slot: u32) {
    bump(&TCP_EVENTS, slot);
}
