//! Getting batches to the collector: a bounded queue filled by the sampler thread
//! (it never waits on the network) and one async task that sends the oldest batch,
//! retrying with exponential backoff and jitter (at least the server's
//! `Retry-After`/`RetryInfo`) until it is accepted or rejected for good. When the
//! queue is full the oldest batch is dropped and counted: with cumulative
//! temporality the next batch carries the totals anyway, so a dropped batch loses
//! resolution, not counts.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use super::{otlp, transport::Transport};

/// Queue bounds: whichever is reached first drops the oldest batch.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub batches: usize,
    pub bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            batches: 60,
            bytes: 64 << 20,
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Short enough that export resumes within seconds of the collector's return; one
/// connection attempt per node every few seconds is no load for a collector.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the exporter did since start (cgscope's own `cgscope.export.*` series).
#[derive(Debug, Default)]
pub struct ExportStats {
    pub sent: AtomicU64,
    /// Failed attempts by `error.type`.
    pub failures: Mutex<BTreeMap<String, u64>>,
    /// Batches dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Batches the collector refused for good (non-retryable error).
    pub dropped_rejected: AtomicU64,
    /// Points the collector reported as rejected in a partial success.
    pub rejected_points: AtomicU64,
}

struct Queued {
    seq: u64,
    body: Bytes,
}

#[derive(Default)]
struct QueueState {
    batches: VecDeque<Queued>,
    bytes: usize,
    next_seq: u64,
}

/// The sampler's side: push a batch, never block on the network.
pub struct Queue {
    state: Mutex<QueueState>,
    wake: Notify,
    limits: QueueLimits,
    pub stats: ExportStats,
}

impl Queue {
    pub fn new(limits: QueueLimits) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            limits,
            stats: ExportStats::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding the lock cannot leave the queue inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an encoded export request, dropping the oldest when full.
    pub fn push(&self, body: Bytes) {
        let mut q = self.lock();
        let seq = q.next_seq;
        q.next_seq += 1;
        q.bytes += body.len();
        q.batches.push_back(Queued { seq, body });
        while q.batches.len() > self.limits.batches.max(1)
            || (q.bytes > self.limits.bytes && q.batches.len() > 1)
        {
            if let Some(old) = q.batches.pop_front() {
                q.bytes -= old.body.len();
                self.stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn front(&self) -> Option<(u64, Bytes)> {
        self.lock().batches.front().map(|b| (b.seq, b.body.clone()))
    }

    /// Removes batch `seq` if it is still queued (it may have been dropped as the
    /// oldest while it was being sent).
    fn done(&self, seq: u64) {
        let mut q = self.lock();
        if q.batches.front().is_some_and(|b| b.seq == seq) {
            if let Some(b) = q.batches.pop_front() {
                q.bytes -= b.body.len();
            }
        }
    }

    fn failed(&self, kind: &str) {
        let mut f = self
            .stats
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *f.entry(kind.to_owned()).or_default() += 1;
    }
}

/// A small xorshift for backoff jitter (no need for a cryptographic source).
fn jitter(state: &mut u64, d: Duration) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    // 0.5 .. 1.5 times the delay.
    let factor = 0.5 + (*state % 1000) as f64 / 1000.0;
    d.mul_f64(factor)
}

/// Sends queued batches until `stop` turns true, then tries for `drain` more to
/// empty the queue.
pub async fn run(
    queue: std::sync::Arc<Queue>,
    transport: Transport,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    // First failure of the current outage, attempts, and when it was last logged.
    let mut failing_since: Option<(Instant, u64)> = None;
    let mut logged = Instant::now();
    let mut stop_at: Option<Instant> = None;
    loop {
        if stop_at.is_none() && *stop.borrow() {
            stop_at = Some(Instant::now() + drain);
        }
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let Some((seq, body)) = queue.front() else {
            if stop_at.is_some() {
                break;
            }
            tokio::select! {
                () = queue.wake.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        let result = match stop_at {
            Some(t) => tokio::time::timeout(
                t.saturating_duration_since(Instant::now()),
                transport.send(body),
            )
            .await
            .unwrap_or_else(|_| {
                Err(super::transport::SendError {
                    kind: "shutdown".into(),
                    detail: "stopping".into(),
                    retryable: false,
                    retry_after: None,
                })
            }),
            None => transport.send(body).await,
        };
        match result {
            Ok(response) => {
                queue.done(seq);
                queue.stats.sent.fetch_add(1, Ordering::Relaxed);
                backoff = FIRST_BACKOFF;
                if let Some((since, attempts)) = failing_since.take() {
                    log::info!(
                        "OTLP export resumed after {attempts} failed attempts over {:.0?}; {} batches queued",
                        since.elapsed(),
                        queue.len()
                    );
                }
                if let Some((points, message)) = otlp::rejected(&response) {
                    queue
                        .stats
                        .rejected_points
                        .fetch_add(points.max(0) as u64, Ordering::Relaxed);
                    log::warn!("the collector rejected {points} data points: {message}");
                }
            }
            Err(e) if e.retryable && stop_at.is_none() => {
                queue.failed(&e.kind);
                let attempts = failing_since.map_or(1, |(_, n)| n + 1);
                let since = failing_since.map_or_else(Instant::now, |(t, _)| t);
                // Log the first failure, then once a minute: no error storm.
                if attempts == 1 || logged.elapsed() >= Duration::from_secs(60) {
                    logged = Instant::now();
                    log::warn!(
                        "OTLP export failed ({e}); retrying, {} batches queued",
                        queue.len()
                    );
                }
                failing_since = Some((since, attempts));
                let delay = jitter(&mut seed, backoff).max(e.retry_after.unwrap_or_default());
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
            }
            // Stopping: one failed attempt ends the drain.
            Err(e) if stop_at.is_some() => {
                queue.failed(&e.kind);
                break;
            }
            Err(e) => {
                queue.failed(&e.kind);
                queue.done(seq);
                queue.stats.dropped_rejected.fetch_add(1, Ordering::Relaxed);
                log::error!("OTLP export: batch dropped ({e})");
            }
        }
    }
    let left = queue.len();
    if left > 0 {
        log::warn!("stopping with {left} OTLP batches not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let q = Queue::new(QueueLimits {
            batches: 2,
            bytes: 1 << 20,
        });
        for i in 0..5u8 {
            q.push(Bytes::from(vec![i; 10]));
        }
        assert_eq!(q.len(), 2);
        assert_eq!(q.stats.dropped_queue_full.load(Ordering::Relaxed), 3);
        let (seq, body) = q.front().expect("queued");
        assert_eq!((seq, body[0]), (3, 3));
        // Bytes bound: a batch larger than the limit still goes out alone.
        let q = Queue::new(QueueLimits {
            batches: 10,
            bytes: 25,
        });
        for _ in 0..3 {
            q.push(Bytes::from(vec![0; 10]));
        }
        assert_eq!(q.len(), 2);
        q.push(Bytes::from(vec![0; 100]));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        let mut seed = 12345;
        for _ in 0..1000 {
            let d = jitter(&mut seed, Duration::from_secs(2));
            assert!(
                d >= Duration::from_secs(1) && d < Duration::from_secs(3),
                "{d:?}"
            );
        }
    }
}
