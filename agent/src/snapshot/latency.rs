//! Latency histograms as the snapshot shows them: the window's counts in the
//! kernel's buckets, as an OTLP exponential histogram, and their summary.

use cgscope_common::histogram::SUB_BUCKETS;
use schemars::JsonSchema;
use serde::Serialize;

/// An OTLP exponential histogram of durations in seconds: bucket `offset + i` holds
/// values in `(2^((offset+i)/2^scale), 2^((offset+i+1)/2^scale)]` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ExponentialHistogram {
    pub scale: i32,
    pub count: u64,
    pub sum_seconds: f64,
    /// Values at or below `zero_threshold_seconds`.
    pub zero_count: u64,
    pub zero_threshold_seconds: f64,
    /// Index of `bucket_counts[0]`.
    pub offset: i32,
    /// From the first to the last non-empty bucket.
    pub bucket_counts: Vec<u64>,
}

impl ExponentialHistogram {
    /// Upper bound in seconds of OTLP bucket `index` at the kernel's scale.
    pub fn upper_bound(index: i32) -> f64 {
        2f64.powf(f64::from(index + 1) / SUB_BUCKETS as f64)
    }

    /// The value below which a fraction `q` of the observations lie, interpolated
    /// geometrically inside the bucket that holds it (linearly in the zero bucket).
    /// 0 for an empty histogram.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        if rank <= self.zero_count as f64 {
            return self.zero_threshold_seconds * rank / self.zero_count as f64;
        }
        let mut seen = self.zero_count as f64;
        for (i, &c) in self.bucket_counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if seen + c as f64 >= rank {
                let index = self.offset + i as i32;
                let (lo, hi) = (Self::upper_bound(index - 1), Self::upper_bound(index));
                let frac = (rank - seen) / c as f64;
                return lo * (hi / lo).powf(frac);
            }
            seen += c as f64;
        }
        self.max_bucket_seconds()
    }

    /// Counts per power of two, from the lowest to the highest non-empty one: (upper
    /// bound in seconds, count); the zero bucket first, at the zero threshold.
    pub fn octaves(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = Vec::new();
        if self.zero_count > 0 {
            out.push((self.zero_threshold_seconds, self.zero_count));
        }
        let per_octave = SUB_BUCKETS as i32;
        for (i, &c) in self.bucket_counts.iter().enumerate() {
            let octave = (self.offset + i as i32).div_euclid(per_octave);
            let upper = 2f64.powi(octave + 1);
            match out.last_mut() {
                Some((u, n)) if *u == upper => *n += c,
                _ => out.push((upper, c)),
            }
        }
        out
    }

    /// Upper bound of the highest non-empty bucket (the zero threshold if only the
    /// zero bucket has counts, 0 if empty).
    pub fn max_bucket_seconds(&self) -> f64 {
        if !self.bucket_counts.is_empty() {
            Self::upper_bound(self.offset + self.bucket_counts.len() as i32 - 1)
        } else if self.zero_count > 0 {
            self.zero_threshold_seconds
        } else {
            0.0
        }
    }
}

/// A latency histogram with its summary, as the snapshot shows it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_seconds: f64,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    pub max_bucket_seconds: f64,
    pub histogram: ExponentialHistogram,
}
