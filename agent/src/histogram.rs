//! Userspace half of the latency histograms: sum the per-CPU kernel copies, take the
//! difference between two reads, and present the window as an OTLP exponential
//! histogram with its summary (count, sum, p50, p99). Bucket layout and accuracy are
//! documented in `cgscope_common::histogram`.

use crate::snapshot::{ExponentialHistogram, LatencySummary};
use cgscope_common::histogram::{
    Histogram, BUCKETS, MIN_OCTAVE, OTLP_OFFSET, SCALE, UNITS_PER_SECOND_LOG2,
};

/// Cumulative counters of one kernel histogram, summed over CPUs with wrapping
/// arithmetic (the kernel counters are `u32` and wrap).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LatencyTotals {
    sum_ns: u64,
    zero_count: u32,
    buckets: [u32; BUCKETS],
}

impl Default for LatencyTotals {
    fn default() -> Self {
        Self {
            sum_ns: 0,
            zero_count: 0,
            buckets: [0; BUCKETS],
        }
    }
}

impl LatencyTotals {
    /// Sums the per-CPU copies of one map value.
    pub fn from_cpus<'a>(cpus: impl IntoIterator<Item = &'a Histogram>) -> Self {
        let mut t = Self::default();
        for h in cpus {
            t.sum_ns = t.sum_ns.wrapping_add(h.sum_ns);
            t.zero_count = t.zero_count.wrapping_add(h.zero_count);
            for (acc, b) in t.buckets.iter_mut().zip(h.buckets.iter()) {
                *acc = acc.wrapping_add(*b);
            }
        }
        t
    }

    /// Whether the counters went back since `prev` was read: the kernel's entry was
    /// deleted and created again, so `prev` is no baseline. The sum (`u64`
    /// nanoseconds, which takes 584 years to wrap) going back says so, as does a
    /// bucket that would have wrapped by half its range or more (2^31 events in one
    /// bucket between two reads).
    pub fn went_back(&self, prev: &Self) -> bool {
        const HALF: u32 = 1 << 31;
        self.sum_ns < prev.sum_ns
            || self.zero_count.wrapping_sub(prev.zero_count) >= HALF
            || self
                .buckets
                .iter()
                .zip(&prev.buckets)
                .any(|(now, before)| now.wrapping_sub(*before) >= HALF)
    }

    /// What was recorded after `prev` was read: all of it if there is no `prev` or
    /// the entry was created again since ([`Self::went_back`]).
    pub fn since(&self, prev: Option<&Self>) -> LatencyWindow {
        let zero = Self::default();
        let prev = prev.filter(|p| !self.went_back(p)).unwrap_or(&zero);
        let mut buckets = [0u64; BUCKETS];
        for ((out, now), before) in buckets.iter_mut().zip(&self.buckets).zip(&prev.buckets) {
            *out = u64::from(now.wrapping_sub(*before));
        }
        LatencyWindow {
            sum_ns: self.sum_ns.wrapping_sub(prev.sum_ns),
            zero_count: u64::from(self.zero_count.wrapping_sub(prev.zero_count)),
            buckets,
        }
    }
}

/// What one histogram recorded in one window, in the kernel's bucket layout; windows
/// of several cgroups add up (a parent's is its own plus its descendants').
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LatencyWindow {
    sum_ns: u64,
    zero_count: u64,
    buckets: [u64; BUCKETS],
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl LatencyWindow {
    /// Nothing recorded.
    pub const EMPTY: Self = Self {
        sum_ns: 0,
        zero_count: 0,
        buckets: [0; BUCKETS],
    };

    pub fn add(&mut self, other: &Self) {
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(self.zero_count, |n, b| n.saturating_add(*b))
    }

    pub fn histogram(&self) -> ExponentialHistogram {
        ExponentialHistogram::from_counts(self.sum_ns, self.zero_count, &self.buckets)
    }
}

impl ExponentialHistogram {
    /// Builds the histogram from window counts of the kernel buckets.
    fn from_counts(sum_ns: u64, zero_count: u64, counts: &[u64]) -> Self {
        let first = counts.iter().position(|&c| c > 0);
        let last = first.and_then(|_| counts.iter().rposition(|&c| c > 0));
        let (offset, bucket_counts) = match (first, last) {
            (Some(f), Some(l)) => (OTLP_OFFSET + f as i32, counts[f..=l].to_vec()),
            _ => (OTLP_OFFSET, Vec::new()),
        };
        Self {
            scale: SCALE,
            count: zero_count + bucket_counts.iter().sum::<u64>(),
            sum_seconds: sum_ns as f64 * 1e-9,
            zero_count,
            zero_threshold_seconds: 2f64.powi(MIN_OCTAVE as i32 - UNITS_PER_SECOND_LOG2 as i32),
            offset,
            bucket_counts,
        }
    }
}

impl LatencySummary {
    /// The summary of an empty window, without scanning one: most cgroups record
    /// nothing in most windows.
    pub fn empty() -> Self {
        static EMPTY: std::sync::LazyLock<LatencySummary> =
            std::sync::LazyLock::new(|| LatencySummary::from(&LatencyWindow::EMPTY));
        EMPTY.clone()
    }
}

impl From<&LatencyWindow> for LatencySummary {
    fn from(window: &LatencyWindow) -> Self {
        let histogram = window.histogram();
        Self {
            count: histogram.count,
            sum_seconds: histogram.sum_seconds,
            p50_seconds: histogram.quantile(0.5),
            p99_seconds: histogram.quantile(0.99),
            max_bucket_seconds: histogram.max_bucket_seconds(),
            histogram,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(values_ns: &[u64]) -> Histogram {
        let mut h = Histogram::ZERO;
        values_ns.iter().for_each(|&v| h.record(v));
        h
    }

    #[test]
    fn sums_cpus_and_takes_window_differences() {
        let a = recorded(&[1_000, 2_000_000]);
        let b = recorded(&[1_000, 50]);
        let before = LatencyTotals::from_cpus([&a, &b]);
        let a2 = recorded(&[1_000, 2_000_000, 3_000_000, 3_000_000]);
        let after = LatencyTotals::from_cpus([&a2, &b]);
        let window = after.since(Some(&before)).histogram();
        assert_eq!(window.count, 2);
        assert!((window.sum_seconds - 0.006).abs() < 1e-12);
        assert_eq!(window.zero_count, 0);
        assert_eq!(window.bucket_counts, [2]);
        let all = after.since(None).histogram();
        assert_eq!((all.count, all.zero_count), (6, 1));
    }

    #[test]
    fn wrapped_counters_still_give_the_right_difference() {
        let mut before = LatencyTotals::default();
        before.buckets[10] = u32::MAX - 1;
        let mut after = before.clone();
        after.buckets[10] = 3;
        assert_eq!(after.since(Some(&before)).count(), 5);
    }

    #[test]
    fn quantiles_fall_in_the_bucket_of_the_true_value() {
        let values: Vec<u64> = (1..=1000).map(|i| i * 10_000).collect(); // 10 µs .. 10 ms
        let window = LatencyTotals::from_cpus([&recorded(&values)]).since(None);
        let summary = LatencySummary::from(&window);
        assert_eq!(summary.count, 1000);
        let within = |got: f64, want: f64| (got / want - 1.0).abs() < 0.0905;
        assert!(
            within(summary.p50_seconds, 5.0e-3),
            "p50 {}",
            summary.p50_seconds
        );
        assert!(
            within(summary.p99_seconds, 9.9e-3),
            "p99 {}",
            summary.p99_seconds
        );
        assert!(summary.max_bucket_seconds >= 10e-3 && summary.max_bucket_seconds < 10.905e-3);
        // bucket bounds in seconds: the OTLP offset maps buckets onto powers of 2^(1/8)
        let first = ExponentialHistogram::upper_bound(summary.histogram.offset - 1);
        assert!(
            first < 10e-6 && 10e-6 <= ExponentialHistogram::upper_bound(summary.histogram.offset)
        );
    }

    #[test]
    fn windows_add_up() {
        let mut parent = LatencyTotals::from_cpus([&recorded(&[1_000, 5_000])]).since(None);
        let child = LatencyTotals::from_cpus([&recorded(&[5_000, 100])]).since(None);
        parent.add(&child);
        let h = parent.histogram();
        assert_eq!((h.count, h.zero_count), (4, 1));
        assert!((h.sum_seconds - 11.1e-6).abs() < 1e-12);
    }

    #[test]
    fn empty_and_zero_only() {
        let empty = LatencyTotals::default().since(None).histogram();
        assert_eq!(
            (empty.count, empty.quantile(0.5), empty.max_bucket_seconds()),
            (0, 0.0, 0.0)
        );
        let zeros = LatencyTotals::from_cpus([&recorded(&[10, 20])])
            .since(None)
            .histogram();
        assert!(zeros.bucket_counts.is_empty());
        assert_eq!(zeros.max_bucket_seconds(), zeros.zero_threshold_seconds);
    }
}
