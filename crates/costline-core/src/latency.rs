//! A mergeable latency histogram: buckets 4 % wide on a log scale, stored sparsely as
//! `(bucket, count)` pairs. ClickHouse merges partial histograms with `sumMap` and reads
//! quantiles off the merged one, so p50/p95/p99 of any window and dimension set are within
//! 2 % of the true value, from any number of partial rollups.
//!
//! Bucket 0 holds 0 ms; bucket `b ≥ 1` holds `[1.04^(b−1), 1.04^b)` ms and reads back as its
//! geometric middle, `1.04^(b − 0.5)`. The same formula stands in the ClickHouse views.
//!
//! Buckets are found through a table rather than a logarithm per call (the histogram records
//! every counted attempt): the table is built from the formula itself, so both give the same
//! bucket for every latency, and partial histograms of any version merge.

use std::sync::LazyLock;

use smallvec::SmallVec;

/// Growth factor between bucket bounds.
pub const BUCKET_BASE: f64 = 1.04;

/// Sparse histogram, sorted by bucket. Most rollup windows of a batch see one or two calls, so
/// two buckets are kept inline: no allocation of its own until a third.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: SmallVec<[(u16, u64); 2]>,
}

/// The bucket of `latency_ms` by definition: `⌊ln(ms) / ln(1.04)⌋ + 1`, 0 for 0 ms.
fn bucket_by_formula(latency_ms: u32) -> u16 {
    if latency_ms == 0 {
        return 0;
    }
    ((f64::from(latency_ms)).ln() / BUCKET_BASE.ln()).floor() as u16 + 1
}

/// Mantissa bits that pick a table entry within an octave: 32 slices of an octave are each
/// narrower than a bucket (2^(1/32) < 1.04), so a slice holds at most one bucket bound.
const SLICE_BITS: u32 = 5;

/// One slice of an octave: the bucket of its lowest latency, and the highest latency in that
/// bucket (`u32::MAX` if the slice holds no bound: no latency is above it).
#[derive(Clone, Copy)]
struct Slice {
    bucket: u16,
    last_in_bucket: u32,
}

/// Entry `(e << 5) | m`: the latencies in `[2^e·(1 + m/32), 2^e·(1 + (m+1)/32))`, which as an
/// `f64` have exponent `e` and top mantissa bits `m`.
static SLICES: LazyLock<Box<[Slice]>> = LazyLock::new(|| {
    // 32 octaves hold every u32.
    (0..32usize << SLICE_BITS)
        .map(|i| {
            let (octave, part) = ((i >> SLICE_BITS) as i32, (i & ((1 << SLICE_BITS) - 1)) as f64);
            let bound = |part: f64| (2f64.powi(octave) * (1.0 + part / f64::from(1u32 << SLICE_BITS))).ceil();
            let (low, high) = (bound(part), bound(part + 1.0) - 1.0);
            if low > high || low > f64::from(u32::MAX) {
                return Slice { bucket: 0, last_in_bucket: u32::MAX };
            }
            let (low, high) = (low as u32, high.min(f64::from(u32::MAX)) as u32);
            let bucket = bucket_by_formula(low);
            // The last latency of the slice in its first bucket, by bisection (the formula grows
            // with the latency).
            let last_in_bucket = if bucket_by_formula(high) == bucket {
                u32::MAX
            } else {
                let (mut same, mut next) = (low, high);
                while next - same > 1 {
                    let mid = same + (next - same) / 2;
                    if bucket_by_formula(mid) == bucket {
                        same = mid;
                    } else {
                        next = mid;
                    }
                }
                same
            };
            Slice { bucket, last_in_bucket }
        })
        .collect()
});

impl LatencyHistogram {
    pub fn bucket_of(latency_ms: u32) -> u16 {
        if latency_ms == 0 {
            return 0;
        }
        // Exponent and top mantissa bits of the latency as an f64 (exact: it is a u32 ≥ 1).
        let index = (f64::from(latency_ms).to_bits() >> (52 - SLICE_BITS)) - (1023 << SLICE_BITS);
        let slice = SLICES[index as usize];
        slice.bucket + u16::from(latency_ms > slice.last_in_bucket)
    }

    /// The value a bucket reads back as, in ms.
    pub fn bucket_value(bucket: u16) -> f64 {
        if bucket == 0 {
            0.0
        } else {
            BUCKET_BASE.powf(f64::from(bucket) - 0.5)
        }
    }

    pub fn record(&mut self, latency_ms: u32) {
        self.add(Self::bucket_of(latency_ms), 1);
    }

    fn add(&mut self, bucket: u16, count: u64) {
        match self.buckets.binary_search_by_key(&bucket, |&(b, _)| b) {
            Ok(i) => self.buckets[i].1 += count,
            Err(i) => self.buckets.insert(i, (bucket, count)),
        }
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for &(bucket, count) in &other.buckets {
            self.add(bucket, count);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|&(_, c)| c).sum()
    }

    /// The value of the first bucket whose cumulative count reaches `q` of the total.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count() as f64;
        let mut cumulative = 0u64;
        self.buckets.iter().find_map(|&(bucket, count)| {
            cumulative += count;
            (cumulative as f64 >= q * total).then(|| Self::bucket_value(bucket))
        })
    }

    pub fn buckets(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.buckets.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_values_are_within_two_percent() {
        for ms in [1u32, 2, 7, 99, 100, 101, 1234, 65_000, 86_400_000] {
            let v = LatencyHistogram::bucket_value(LatencyHistogram::bucket_of(ms));
            let err = (v - f64::from(ms)).abs() / f64::from(ms);
            assert!(err <= 0.0201, "{ms} ms reads back as {v}");
        }
        assert_eq!(LatencyHistogram::bucket_of(0), 0);
        assert_eq!(LatencyHistogram::bucket_value(0), 0.0);
    }

    #[test]
    fn the_table_gives_the_formula_s_bucket_for_every_latency() {
        for ms in 0..=1u32 << 21 {
            assert_eq!(LatencyHistogram::bucket_of(ms), bucket_by_formula(ms), "{ms} ms");
        }
        // Every bucket bound and its neighbours, up to u32::MAX.
        let mut bucket = bucket_by_formula(1 << 21);
        let mut ms = 1u32 << 21;
        while let Some(next) =
            (ms..=u32::MAX).step_by(1 << 10).chain([u32::MAX]).find(|&m| bucket_by_formula(m) > bucket)
        {
            let first = (next.saturating_sub(1 << 10)..=next).find(|&m| bucket_by_formula(m) > bucket).unwrap();
            for m in [first - 1, first, first + 1] {
                assert_eq!(LatencyHistogram::bucket_of(m), bucket_by_formula(m), "{m} ms");
            }
            (bucket, ms) = (bucket_by_formula(first), first);
        }
        assert_eq!(LatencyHistogram::bucket_of(u32::MAX), bucket_by_formula(u32::MAX));
        assert_eq!(bucket, bucket_by_formula(u32::MAX));
    }

    #[test]
    fn merged_quantiles_equal_whole_quantiles() {
        let mut whole = LatencyHistogram::default();
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        for ms in 1..=1000u32 {
            whole.record(ms);
            if ms % 3 == 0 {
                a.record(ms)
            } else {
                b.record(ms)
            }
        }
        a.merge(&b);
        assert_eq!(a, whole);
        let p95 = whole.quantile(0.95).unwrap();
        assert!((p95 - 950.0).abs() / 950.0 < 0.03, "p95 = {p95}");
        assert_eq!(whole.count(), 1000);
    }
}
