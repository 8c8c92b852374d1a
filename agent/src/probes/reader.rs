//! Reading the probes' kernel maps, and what they measured per cgroup in one window:
//! the difference between two readings, per cgroup id. Windows add up, so a parent's
//! can include its descendants' (as `cpu.stat` and `io.stat` do). (`crate::window`
//! does the same for the cgroup files.)

use std::collections::HashMap;

use aya::maps::MapError;

use cgscope_common::{blame::BlameKey, blockio::BlockioKey};

use super::{
    blockio::BlockioTotals,
    oom::OomKill,
    tcp::{TcpKey, TcpTotals},
    Probes,
};
use crate::histogram::{LatencyTotals, LatencyWindow};

/// One reading of every probe's map.
#[derive(Default)]
struct Reading {
    runq: HashMap<u64, LatencyTotals>,
    blockio: HashMap<BlockioKey, BlockioTotals>,
    /// `blockio`'s keys by cgroup id.
    blockio_keys: HashMap<u64, Vec<BlockioKey>>,
    /// OOM kills since the previous reading (events, not counters).
    oom: Vec<OomKill>,
    tcp: HashMap<TcpKey, TcpTotals>,
    /// `tcp`'s keys by cgroup id.
    tcp_keys: HashMap<u64, Vec<TcpKey>>,
    /// Wait nanoseconds by (waiter, culprit), cumulative.
    blame: HashMap<BlameKey, u64>,
    /// `blame`'s keys by waiter.
    blame_keys: HashMap<u64, Vec<BlameKey>>,
}

impl Reading {
    fn clear(&mut self) {
        self.blame.clear();
        self.blame_keys.clear();
        self.runq.clear();
        self.blockio.clear();
        self.blockio_keys.clear();
        self.oom.clear();
        self.tcp.clear();
        self.tcp_keys.clear();
    }
}

/// Block IO of one (disk, operation) in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockioWindow {
    /// `major << 20 | minor`
    pub dev: u32,
    /// `cgscope_common::blockio::op`
    pub op: u32,
    pub ios: u64,
    pub bytes: u64,
    pub queue: LatencyWindow,
    pub device: LatencyWindow,
}

impl BlockioWindow {
    /// `ios` requests of 4 KiB with no latency recorded (for tests).
    #[cfg(test)]
    pub fn requests(dev: u32, op: u32, ios: u64) -> Self {
        Self {
            dev,
            op,
            ios,
            bytes: ios * 4096,
            queue: LatencyWindow::EMPTY,
            device: LatencyWindow::EMPTY,
        }
    }

    fn add(&mut self, other: &Self) {
        self.ios = self.ios.saturating_add(other.ios);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.queue.add(&other.queue);
        self.device.add(&other.device);
    }
}

/// What the probes recorded for one cgroup in one window.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProbeWindow {
    pub runq: LatencyWindow,
    /// One entry per (disk, operation) with IO.
    pub blockio: Vec<BlockioWindow>,
    /// Processes killed by the OOM killer.
    pub oom: Vec<OomKill>,
    /// TCP, summed over the cgroup's network namespaces.
    pub tcp: TcpWindow,
    /// Wait nanoseconds by culprit (a cgroup id or a `blame::culprit` value), sorted
    /// by culprit.
    pub blame: Vec<(u64, u64)>,
}

/// TCP of one cgroup in a window.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TcpWindow {
    pub rtt: LatencyWindow,
    pub connect: LatencyWindow,
    pub connect_failures: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
}

impl TcpWindow {
    fn add(&mut self, other: &Self) {
        self.rtt.add(&other.rtt);
        self.connect.add(&other.connect);
        self.connect_failures = self.connect_failures.saturating_add(other.connect_failures);
        self.retransmits = self.retransmits.saturating_add(other.retransmits);
        self.resets_sent = self.resets_sent.saturating_add(other.resets_sent);
        self.resets_received = self.resets_received.saturating_add(other.resets_received);
    }

    fn is_empty(&self) -> bool {
        self.rtt.count() == 0
            && self.connect.count() == 0
            && self.connect_failures == 0
            && self.retransmits == 0
            && self.resets_sent == 0
            && self.resets_received == 0
    }

    /// `now - before` of one (cgroup, netns); all of `now` if the kernel's entry
    /// was created again since `before` (a counter went back).
    fn since(now: &TcpTotals, before: Option<&TcpTotals>) -> Self {
        let counters: [fn(&TcpTotals) -> u64; 4] = [
            |t| t.connect_failures,
            |t| t.retransmits,
            |t| t.resets_sent,
            |t| t.resets_received,
        ];
        let before = before.filter(|b| {
            !(now.rtt.went_back(&b.rtt)
                || now.connect.went_back(&b.connect)
                || counters.iter().any(|f| f(now) < f(b)))
        });
        let d = |f: fn(&TcpTotals) -> u64| f(now) - before.map_or(0, f);
        Self {
            rtt: now.rtt.since(before.map(|b| &b.rtt)),
            connect: now.connect.since(before.map(|b| &b.connect)),
            connect_failures: d(|t| t.connect_failures),
            retransmits: d(|t| t.retransmits),
            resets_sent: d(|t| t.resets_sent),
            resets_received: d(|t| t.resets_received),
        }
    }
}

impl ProbeWindow {
    pub fn add(&mut self, other: &Self) {
        for &(culprit, ns) in &other.blame {
            match self.blame.binary_search_by_key(&culprit, |&(c, _)| c) {
                Ok(at) => self.blame[at].1 = self.blame[at].1.saturating_add(ns),
                Err(at) => self.blame.insert(at, (culprit, ns)),
            }
        }
        self.runq.add(&other.runq);
        for theirs in &other.blockio {
            match self
                .blockio
                .iter_mut()
                .find(|o| o.dev == theirs.dev && o.op == theirs.op)
            {
                Some(ours) => ours.add(theirs),
                None => self.blockio.push(theirs.clone()),
            }
        }
        self.oom.extend_from_slice(&other.oom);
        self.tcp.add(&other.tcp);
    }

    pub fn is_empty(&self) -> bool {
        self.runq.count() == 0
            && self.blockio.iter().all(|io| io.ios == 0 && io.bytes == 0)
            && self.oom.is_empty()
            && self.tcp.is_empty()
            && self.blame.is_empty()
    }
}

/// The last two readings of the probes' maps (swapped each window: the previous
/// reading is kept, never copied).
#[derive(Default)]
pub struct ProbeReader {
    now: Reading,
    previous: Reading,
    /// Probes whose maps could not be read at the end of this window, and why.
    failed: Vec<(&'static str, String)>,
    /// Those that failed at the end of the previous window: this reading of theirs
    /// has no baseline to be a window of.
    failed_before: Vec<&'static str>,
}

/// Groups map keys by the cgroup they belong to.
fn index_by_cgroup<'a, K: Copy + 'a>(
    keys: impl Iterator<Item = &'a K>,
    cgroup_of: fn(&K) -> u64,
    out: &mut HashMap<u64, Vec<K>>,
) {
    for key in keys {
        out.entry(cgroup_of(key)).or_default().push(*key);
    }
}

impl ProbeReader {
    /// Ends a window: this reading becomes the previous one, the maps are read anew.
    pub fn read(&mut self, probes: &mut Probes) {
        std::mem::swap(&mut self.now, &mut self.previous);
        self.now.clear();
        self.failed_before = self.failed.drain(..).map(|(name, _)| name).collect();
        let (now, failed) = (&mut self.now, &mut self.failed);
        let mut check = |name: &'static str, read: Result<(), MapError>| {
            if let Err(e) = read {
                failed.push((name, format!("its maps could not be read this window: {e}")));
            }
        };
        if let Ok(runq) = &probes.runq {
            let read = runq.read(&mut now.runq).and_then(|()| {
                runq.blame()
                    .map_or(Ok(()), |blame| blame.read(&mut now.blame))
            });
            check(super::runq::NAME, read);
            index_by_cgroup(now.blame.keys(), |k| k.victim, &mut now.blame_keys);
        }
        if let Ok(blockio) = &probes.blockio {
            check(super::blockio::NAME, blockio.read(&mut now.blockio));
            index_by_cgroup(now.blockio.keys(), |k| k.cgroup_id, &mut now.blockio_keys);
        }
        if let Ok(oom) = &mut probes.oom {
            check(super::oom::NAME, oom.read(&mut now.oom));
        }
        if let Ok(tcp) = &probes.tcp {
            check(super::tcp::NAME, tcp.read(&mut now.tcp));
            index_by_cgroup(now.tcp.keys(), |k| k.cgroup_id, &mut now.tcp_keys);
        }
        for (name, error) in &self.failed {
            log::warn!(
                "probe {name}: {error}; its numbers are null until two reads in a row succeed"
            );
        }
    }

    /// Whether `probe`'s numbers are missing this window: its maps could not be read
    /// now, or at the end of the previous window (nothing to subtract from).
    pub fn missing(&self, probe: &str) -> bool {
        self.failed.iter().any(|(name, _)| *name == probe) || self.failed_before.contains(&probe)
    }

    /// The probes whose maps could not be read this window, and why.
    pub fn failures(&self) -> &[(&'static str, String)] {
        &self.failed
    }

    /// Entries of each probe's per-cgroup map as last read, by probe name.
    pub fn map_entries(&self) -> [(&'static str, u64); 3] {
        [
            (super::runq::NAME, self.now.runq.len() as u64),
            (super::blockio::NAME, self.now.blockio.len() as u64),
            (super::tcp::NAME, self.now.tcp.len() as u64),
        ]
    }

    /// What cgroup `id` itself recorded in the window; `None` if nothing.
    pub fn window(&self, id: u64) -> Option<Box<ProbeWindow>> {
        // Most cgroups have no entry in any map: no window to build (each is a few KB).
        let now = &self.now;
        if !(now.runq.contains_key(&id)
            || now.blame_keys.contains_key(&id)
            || now.blockio_keys.contains_key(&id)
            || now.tcp_keys.contains_key(&id)
            || now.oom.iter().any(|k| k.counted_in == id))
        {
            return None;
        }
        let runq = self
            .now
            .runq
            .get(&id)
            .map(|r| r.since(self.previous.runq.get(&id)));
        let blockio: Vec<BlockioWindow> = self
            .now
            .blockio_keys
            .get(&id)
            .into_iter()
            .flatten()
            .map(|key| {
                let now = &self.now.blockio[key];
                // An entry created again since the last read: all of it is new.
                let before = self.previous.blockio.get(key).filter(|b| {
                    !(now.ios < b.ios
                        || now.bytes < b.bytes
                        || now.queue.went_back(&b.queue)
                        || now.device.went_back(&b.device))
                });
                BlockioWindow {
                    dev: key.dev,
                    op: key.op,
                    ios: now.ios - before.map_or(0, |b| b.ios),
                    bytes: now.bytes - before.map_or(0, |b| b.bytes),
                    queue: now.queue.since(before.map(|b| &b.queue)),
                    device: now.device.since(before.map(|b| &b.device)),
                }
            })
            .collect();
        let oom = self.now.oom.iter().filter(|k| k.counted_in == id);
        let mut tcp = TcpWindow::default();
        for key in self.now.tcp_keys.get(&id).into_iter().flatten() {
            tcp.add(&TcpWindow::since(
                &self.now.tcp[key],
                self.previous.tcp.get(key),
            ));
        }
        // A pair created again since the last read (its cgroup's entry deleted and
        // made anew): all of it is new.
        let mut blame: Vec<(u64, u64)> = (self.now.blame_keys.get(&id).into_iter().flatten())
            .map(|key| {
                let now = self.now.blame[key];
                let before = self.previous.blame.get(key).copied().unwrap_or(0);
                (key.culprit, now.checked_sub(before).unwrap_or(now))
            })
            .filter(|&(_, ns)| ns > 0)
            .collect();
        blame.sort_unstable();
        let window = ProbeWindow {
            runq: runq.unwrap_or_default(),
            blockio,
            oom: oom.cloned().collect(),
            tcp,
            blame,
        };
        (!window.is_empty()).then(|| Box::new(window))
    }

    /// Counts each OOM kill of this reading in the nearest of its cgroups that the
    /// agent knows (`known`: walked now or last window): the cgroup of a killed
    /// container is often gone before the walk, and its pod is not.
    pub fn place_oom_kills(&mut self, known: impl Fn(u64) -> bool) {
        for kill in &mut self.now.oom {
            kill.count_in_nearest(&known);
        }
    }

    /// Whether this reading has OOM kills.
    pub fn has_oom_kills(&self) -> bool {
        !self.now.oom.is_empty()
    }

    /// Every cgroup id the probes hold data for.
    pub fn cgroup_ids(&self) -> impl Iterator<Item = u64> + '_ {
        let mut ids: Vec<u64> = self.now.runq.keys().copied().collect();
        ids.extend(self.now.blame_keys.keys());
        ids.extend(self.now.blockio_keys.keys());
        ids.extend(self.now.oom.iter().map(|k| k.cgroup_id));
        ids.extend(self.now.tcp_keys.keys());
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
    }

    /// Deletes the kernel entries of removed cgroups: `dead` must be ids of this
    /// reading missing from a tree walked after it.
    pub fn forget(&self, probes: &mut Probes, dead: &[u64]) {
        if let Ok(runq) = &mut probes.runq {
            runq.forget(dead);
        }
        if let Ok(blockio) = &mut probes.blockio {
            blockio.forget(
                dead.iter()
                    .filter_map(|id| self.now.blockio_keys.get(id))
                    .flatten(),
            );
        }
        if let Ok(tcp) = &mut probes.tcp {
            tcp.forget(
                dead.iter()
                    .filter_map(|id| self.now.tcp_keys.get(id))
                    .flatten(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_add_per_disk_and_operation() {
        let mut parent = ProbeWindow {
            blockio: vec![BlockioWindow::requests(1, 0, 2)],
            ..ProbeWindow::default()
        };
        let child = ProbeWindow {
            blockio: vec![
                BlockioWindow::requests(1, 0, 3),
                BlockioWindow::requests(1, 1, 1),
                BlockioWindow::requests(2, 0, 5),
            ],
            ..ProbeWindow::default()
        };
        parent.add(&child);
        assert_eq!(
            parent.blockio,
            vec![
                BlockioWindow::requests(1, 0, 5),
                BlockioWindow::requests(1, 1, 1),
                BlockioWindow::requests(2, 0, 5)
            ]
        );
        assert!(!parent.is_empty());
        assert!(ProbeWindow::default().is_empty());
    }
}
