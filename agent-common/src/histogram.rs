//! The in-kernel latency histogram: exponential buckets that are exactly the buckets of
//! an OTLP exponential histogram at [`SCALE`] (see the OpenTelemetry data model,
//! "ExponentialHistogram").
//!
//! OTLP bucket `i` at scale `s` holds values in `(base^i, base^(i+1)]` with
//! `base = 2^(2^-s)`, in the unit of the metric (seconds). The kernel measures
//! nanoseconds, and nanosecond boundaries are not on that grid, so each value is first
//! converted to [`UNITS_PER_SECOND_LOG2`]-units, `2^-30 s` ("binary nanoseconds",
//! 1 unit = 0.931 ns), with exact integer arithmetic. In those units every boundary is
//! `2^(k/8)`, and OTLP index = kernel index - `30 * 2^SCALE`.
//!
//! At scale 3 a bucket's upper bound is 9.05 % above its lower bound, so a value
//! reported as the bucket's geometric midpoint is within ±4.3 % of the truth.
//! Values up to `2^MIN_OCTAVE` units (238 ns) fall into the zero bucket (OTLP
//! `zero_threshold`); values above `2^MAX_OCTAVE` units (32 s) are clamped into the
//! last bucket. The exact sum is kept separately, in nanoseconds.

/// OTLP exponential-histogram scale of every cgscope latency histogram.
pub const SCALE: i32 = 3;
/// Buckets per power of two.
pub const SUB_BUCKETS: usize = 1 << SCALE;
/// Kernel values are counted in units of `2^-UNITS_PER_SECOND_LOG2` seconds.
pub const UNITS_PER_SECOND_LOG2: u32 = 30;
/// Values of at most `2^MIN_OCTAVE` units (238 ns) are counted as zero.
pub const MIN_OCTAVE: u32 = 8;
/// Values above `2^MAX_OCTAVE` units (32 s) are clamped into the last bucket.
pub const MAX_OCTAVE: u32 = 35;
/// Number of buckets in [`Histogram::buckets`].
pub const BUCKETS: usize = (MAX_OCTAVE - MIN_OCTAVE) as usize * SUB_BUCKETS;
/// OTLP `offset` of `buckets[0]` when the metric unit is seconds.
pub const OTLP_OFFSET: i32 =
    (MIN_OCTAVE as i32 - UNITS_PER_SECOND_LOG2 as i32) * SUB_BUCKETS as i32;

/// `ceil(2^63 * 2^(j/8))` for `j = 1..8`: the sub-bucket boundaries of one octave, as
/// 64-bit mantissas. The boundaries are irrational, so `m >= T[j]` is exactly
/// `m > 2^63 * 2^(j/8)`. Verified by the unit tests with 512-bit integer arithmetic.
pub const THRESHOLDS: [u64; SUB_BUCKETS - 1] = [
    0x8b95_c1e3_ea8b_d6e7,
    0x9837_f051_8db8_a970,
    0xa5fe_d6a9_b151_38eb,
    0xb504_f333_f9de_6485,
    0xc567_2a11_5506_dade,
    0xd744_fcca_d69d_6af5,
    0xeac0_c6e7_dd24_392f,
];

/// One latency histogram, as stored per CPU in the kernel maps.
///
/// Counters are `u32` and wrap: the agent sums CPUs and subtracts the previous reading
/// with wrapping arithmetic, which is exact while fewer than 2^32 events land in one
/// bucket between two reads.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Histogram {
    /// Sum of all recorded values, in nanoseconds (not clamped).
    pub sum_ns: u64,
    /// Values of at most `2^MIN_OCTAVE` units.
    pub zero_count: u32,
    pub _pad: u32,
    /// `buckets[k]` counts values in `(2^((k + o)/8), 2^((k + o + 1)/8)]` units, with
    /// `o = MIN_OCTAVE * SUB_BUCKETS`.
    pub buckets: [u32; BUCKETS],
}

const _: () = assert!(core::mem::size_of::<Histogram>() == 16 + 4 * BUCKETS);

impl Histogram {
    /// An empty histogram.
    pub const ZERO: Self = Self {
        sum_ns: 0,
        zero_count: 0,
        _pad: 0,
        buckets: [0; BUCKETS],
    };

    /// Records one value in nanoseconds.
    #[inline(always)]
    pub fn record(&mut self, ns: u64) {
        self.sum_ns = self.sum_ns.wrapping_add(ns);
        match bucket_index(ns_to_units(ns)) {
            None => self.zero_count = self.zero_count.wrapping_add(1),
            Some(k) => {
                // `bucket_index` never returns more than BUCKETS - 1; `get_mut` keeps
                // the bound visible to the verifier without a panic path.
                if let Some(b) = self.buckets.get_mut(k) {
                    *b = b.wrapping_add(1);
                }
            }
        }
    }
}

/// Records one value in nanoseconds into a histogram that several CPUs update at
/// once (a map value shared by all CPUs), with atomic adds.
///
/// # Safety
/// `hist` must point to a live, 8-byte aligned `Histogram` that is only updated
/// atomically while it is shared.
#[inline(always)]
pub unsafe fn record_shared(hist: *mut Histogram, ns: u64) {
    // SAFETY: the caller's guarantees; every pointer is to a field of `hist`.
    unsafe {
        atomic_add_u64(&raw mut (*hist).sum_ns, ns);
        match bucket_index(ns_to_units(ns)) {
            None => atomic_add_u32(&raw mut (*hist).zero_count, 1),
            Some(k) if k < BUCKETS => {
                atomic_add_u32((&raw mut (*hist).buckets).cast::<u32>().add(k), 1)
            }
            Some(_) => {}
        }
    }
}

/// `*p += v`, atomically (relaxed). The BPF target has atomic adds but no
/// compare-and-swap, so core's atomic types offer no `fetch_add` there: the
/// intrinsic is used directly (a BPF `lock xadd`).
///
/// # Safety
/// `p` must be valid and aligned.
#[inline(always)]
pub unsafe fn atomic_add_u64(p: *mut u64, v: u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller's guarantee.
    unsafe {
        use core::intrinsics::{atomic_xadd, AtomicOrdering};
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v);
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller's guarantee.
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(p)
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
    }
}

/// `*p += v` on a `u32`, as [`atomic_add_u64`].
///
/// # Safety
/// `p` must be valid and aligned.
#[inline(always)]
pub unsafe fn atomic_add_u32(p: *mut u32, v: u32) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller's guarantee.
    unsafe {
        use core::intrinsics::{atomic_xadd, AtomicOrdering};
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, v);
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller's guarantee.
    unsafe {
        core::sync::atomic::AtomicU32::from_ptr(p)
            .fetch_add(v, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Converts nanoseconds to `2^-30 s` units: `ns * 2^30 / 10^9 = ns * 2^21 / 5^9`.
/// Exact up to truncation; larger inputs are clamped to 2^42 ns (73 minutes), far
/// above the last bucket, so the product cannot overflow.
#[inline(always)]
pub const fn ns_to_units(ns: u64) -> u64 {
    const MAX_NS: u64 = 1 << 42;
    let ns = if ns > MAX_NS { MAX_NS } else { ns };
    ns * 2_097_152 / 1_953_125
}

/// The bucket of a value in units, relative to `buckets[0]`; `None` for the zero bucket.
#[inline(always)]
pub fn bucket_index(units: u64) -> Option<usize> {
    if units <= 1 << MIN_OCTAVE {
        return None;
    }
    let octave = 63 - units.leading_zeros();
    if octave >= MAX_OCTAVE {
        return Some(BUCKETS - 1);
    }
    let mantissa = units << (63 - octave);
    let base = (octave - MIN_OCTAVE) as usize * SUB_BUCKETS;
    if mantissa == 1 << 63 {
        // An exact power of two is the upper bound of the bucket below it.
        return Some(base - 1);
    }
    // Binary search over the seven boundaries: three comparisons, constant indexes.
    let t = &THRESHOLDS;
    let sub = if mantissa < t[3] {
        if mantissa < t[1] {
            if mantissa < t[0] {
                0
            } else {
                1
            }
        } else if mantissa < t[2] {
            2
        } else {
            3
        }
    } else if mantissa < t[5] {
        if mantissa < t[4] {
            4
        } else {
            5
        }
    } else if mantissa < t[6] {
        6
    } else {
        7
    };
    Some(base + sub)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// `a^8` for a 64-bit `a`, as 512-bit little-endian limbs.
    fn pow8(a: u64) -> [u64; 8] {
        let mut acc = [0u64; 8];
        acc[0] = 1;
        for _ in 0..8 {
            let mut out = [0u64; 8];
            let mut carry = 0u128;
            for (i, limb) in acc.iter().enumerate() {
                let v = u128::from(*limb) * u128::from(a) + carry;
                out[i] = v as u64;
                carry = v >> 64;
            }
            acc = out;
        }
        acc
    }

    /// `2^bit` as 512-bit limbs.
    fn pow2(bit: u32) -> [u64; 8] {
        let mut out = [0u64; 8];
        out[(bit / 64) as usize] = 1 << (bit % 64);
        out
    }

    fn cmp(a: &[u64; 8], b: &[u64; 8]) -> core::cmp::Ordering {
        a.iter().rev().cmp(b.iter().rev())
    }

    #[test]
    fn thresholds_are_the_exact_ceilings() {
        // T_j = ceil(2^(63 + j/8))  <=>  (T_j - 1)^8 < 2^(504 + j) <= T_j^8
        for (i, &t) in THRESHOLDS.iter().enumerate() {
            let bound = pow2(504 + i as u32 + 1);
            assert_eq!(
                cmp(&pow8(t), &bound),
                core::cmp::Ordering::Greater,
                "T{}",
                i + 1
            );
            assert_eq!(
                cmp(&pow8(t - 1), &bound),
                core::cmp::Ordering::Less,
                "T{}",
                i + 1
            );
        }
    }

    /// Lower and upper bound of `buckets[k]`, in units.
    fn bounds(k: usize) -> (f64, f64) {
        let i = (k + MIN_OCTAVE as usize * SUB_BUCKETS) as f64;
        let base = 2f64.powf(1.0 / SUB_BUCKETS as f64);
        (base.powf(i), base.powf(i + 1.0))
    }

    #[test]
    fn every_value_lands_in_the_bucket_that_contains_it() {
        let mut v: u64 = 1;
        while v < 1 << 36 {
            for probe in [v, v + 1, v + v / 3, v + v / 2] {
                match bucket_index(probe) {
                    None => assert!(probe <= 1 << MIN_OCTAVE),
                    Some(k) if probe > 1 << MAX_OCTAVE => assert_eq!(k, BUCKETS - 1),
                    Some(k) => {
                        let (lo, hi) = bounds(k);
                        let p = probe as f64;
                        assert!(
                            p > lo * (1.0 - 1e-12) && p <= hi * (1.0 + 1e-12),
                            "{probe} in {k}"
                        );
                    }
                }
            }
            v = v * 17 / 16 + 1;
        }
    }

    #[test]
    fn powers_of_two_are_upper_bounds() {
        assert_eq!(bucket_index(1 << MIN_OCTAVE), None);
        assert_eq!(bucket_index((1 << MIN_OCTAVE) + 1), Some(0));
        assert_eq!(bucket_index(1 << 9), Some(SUB_BUCKETS - 1));
        assert_eq!(bucket_index((1 << 9) + 1), Some(SUB_BUCKETS));
        assert_eq!(bucket_index(1 << MAX_OCTAVE), Some(BUCKETS - 1));
        assert_eq!(bucket_index(u64::MAX), Some(BUCKETS - 1));
    }

    #[test]
    fn unit_conversion_is_exact() {
        assert_eq!(ns_to_units(1_000_000_000), 1 << 30);
        assert_eq!(ns_to_units(0), 0);
        assert_eq!(ns_to_units(u64::MAX), ns_to_units(1 << 42));
        // OTLP offset: buckets[0] starts at 2^-22 s.
        assert_eq!(OTLP_OFFSET, -22 * 8);
    }

    #[test]
    fn record_keeps_exact_sum_and_counts() {
        let mut h = Histogram::ZERO;
        h.record(100);
        h.record(1_000_000);
        h.record(u64::MAX / 2);
        assert_eq!(h.zero_count, 1);
        assert_eq!(h.buckets.iter().map(|&b| u64::from(b)).sum::<u64>(), 2);
        assert_eq!(h.buckets[BUCKETS - 1], 1);
        assert_eq!(h.sum_ns, 100 + 1_000_000 + u64::MAX / 2);
    }
}
