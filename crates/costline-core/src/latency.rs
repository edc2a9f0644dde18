//! A mergeable latency histogram: buckets 4 % wide on a log scale, stored sparsely as
//! `(bucket, count)` pairs. ClickHouse merges partial histograms with `sumMap` and reads
//! quantiles off the merged one, so p50/p95/p99 of any window and dimension set are within
//! 2 % of the true value, from any number of partial rollups.
//!
//! Bucket 0 holds 0 ms; bucket `b ≥ 1` holds `[1.04^(b−1), 1.04^b)` ms and reads back as its
//! geometric middle, `1.04^(b − 0.5)`. The same formula stands in the ClickHouse views.

use smallvec::SmallVec;

/// Growth factor between bucket bounds.
pub const BUCKET_BASE: f64 = 1.04;

/// Sparse histogram, sorted by bucket. Most rollup windows of a batch see one or two calls, so
/// two buckets are kept inline: no allocation of its own until a third.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: SmallVec<[(u16, u64); 2]>,
}

impl LatencyHistogram {
    pub fn bucket_of(latency_ms: u32) -> u16 {
        if latency_ms == 0 {
            return 0;
        }
        ((f64::from(latency_ms)).ln() / BUCKET_BASE.ln()).floor() as u16 + 1
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
