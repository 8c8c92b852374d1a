//! Everything that leaves the agent: OTLP metrics, Prometheus `/metrics` and the REST
//! API, all read from the same window's [`Snapshot`].
//!
//! Per window, on the sampler thread: the [store](store::Store) adds the window to
//! its cumulative series; the Prometheus text is rendered once; the OTLP request is
//! encoded once and queued for the [delivery](delivery) task, which alone talks to
//! the collector. Nothing on this path waits for the network.

pub mod api;
pub mod catalogue;
pub mod delivery;
pub mod filter;
pub mod otlp;
pub mod points;
pub mod prometheus;
pub mod resource;
pub mod serve;
pub mod settings;
pub mod store;
pub mod transport;

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use crate::snapshot::Snapshot;

use self::{
    delivery::Queue, filter::Filter, otlp::Temporality, points::AgentSample,
    prometheus::Exposition, store::Store,
};

/// The exporters' per-window work.
pub struct Exporter {
    /// The store, shared with `/metrics`.
    pub exposition: Arc<Exposition>,
    pub filter: Filter,
    /// The OTLP queue and temporality, when OTLP export is on.
    pub otlp: Option<(Arc<Queue>, Temporality)>,
    /// The sampler's read failures since start, by reason.
    pub scan_errors: BTreeMap<&'static str, u64>,
}

impl Exporter {
    /// Adds the window to the store and queues the OTLP batch.
    pub fn window(&mut self, snapshot: &Snapshot, scan: Duration) {
        for (reason, n) in &snapshot.scan_errors {
            *self.scan_errors.entry(reason).or_default() += n;
        }
        let mut store = self.exposition.store();
        let agent = self.agent_sample(snapshot, scan, &store);
        store.update(snapshot, &agent, &self.filter);
        if let Some((queue, temporality)) = &self.otlp {
            let agent = self.exposition.agent();
            queue.push(otlp::encode(&store, agent, *temporality).into());
        }
    }

    fn agent_sample(&self, snapshot: &Snapshot, scan: Duration, store: &Store) -> AgentSample {
        let (user_seconds, system_seconds) =
            crate::sampler::cost::process_cpu_seconds().unwrap_or_default();
        let mut a = AgentSample {
            user_seconds,
            system_seconds,
            rss_bytes: self_rss_bytes(),
            scan_seconds: scan.as_secs_f64(),
            cgroups: snapshot.cgroups.len() as u64,
            series_overflow: store.overflowed,
            scan_errors: self.scan_errors.iter().map(|(k, v)| (*k, *v)).collect(),
            export_refused: store.refused.iter().map(|(k, v)| (*k, *v)).collect(),
            ..AgentSample::default()
        };
        if let Some((queue, _)) = &self.otlp {
            let s = &queue.stats;
            a.export_sent = Some(s.sent.load(Ordering::Relaxed));
            a.export_failures = s
                .failures
                .lock()
                .map(|f| f.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            a.export_dropped = vec![
                ("queue_full", s.dropped_queue_full.load(Ordering::Relaxed)),
                ("rejected", s.dropped_rejected.load(Ordering::Relaxed)),
            ];
        }
        a
    }
}

/// Resident set size from `/proc/self/statm` (second field, in pages).
fn self_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * page as u64)
}
