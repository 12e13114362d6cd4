//! Lock-free metric primitives: counters and fixed-bucket histograms on
//! atomics, cheap enough to update on every request and fsync.
//!
//! They hold numbers only; rendering (the Prometheus text format) and
//! serving belong to the server. Living here lets the storage crate record
//! group-commit figures without depending on the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of every histogram: bucket `i` counts values up to
/// `first_bound << i`. 24 doublings span 16 µs to over two minutes for
/// latencies in microseconds, and 1 to 8 million for sizes.
pub const HISTOGRAM_BUCKETS: usize = 24;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with exponentially growing buckets (Prometheus style:
/// cumulative counts per upper bound, plus sum and count).
#[derive(Debug)]
pub struct Histogram {
    first_bound: u64,
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
    sum: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy of a histogram for rendering. Taken without a
/// lock, so a concurrent update may show in `count` but not yet in a bucket;
/// `cumulative` is made monotonic to keep scrapers happy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// (upper bound, count of values at or below it), ascending.
    pub cumulative: Vec<(u64, u64)>,
    pub sum: u64,
    pub count: u64,
}

impl Histogram {
    /// A histogram whose first bucket holds values up to `first_bound`
    /// (at least 1).
    pub const fn new(first_bound: u64) -> Histogram {
        assert!(first_bound >= 1);
        Histogram {
            first_bound,
            buckets: [const { AtomicU64::new(0) }; HISTOGRAM_BUCKETS],
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Index of the smallest bucket whose bound holds `value`, or
    /// `HISTOGRAM_BUCKETS` when it is above every bound (+Inf only).
    fn bucket_of(&self, value: u64) -> usize {
        let multiple = value.div_ceil(self.first_bound);
        if multiple <= 1 {
            0
        } else {
            // Smallest i with 2^i >= multiple; anything past the last bound
            // is the +Inf bucket.
            ((64 - (multiple - 1).leading_zeros()) as usize).min(HISTOGRAM_BUCKETS)
        }
    }

    pub fn observe(&self, value: u64) {
        let bucket = self.bucket_of(value);
        if bucket < HISTOGRAM_BUCKETS {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a duration in microseconds (the unit of latency histograms).
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(HISTOGRAM_BUCKETS);
        for (index, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push((self.first_bound << index, running));
        }
        let count = self.count.load(Ordering::Relaxed).max(running);
        HistogramSnapshot { cumulative, sum: self.sum.load(Ordering::Relaxed), count }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_smallest_bucket_that_holds_them() {
        let h = Histogram::new(16);
        assert_eq!(h.bucket_of(0), 0);
        assert_eq!(h.bucket_of(16), 0);
        assert_eq!(h.bucket_of(17), 1);
        assert_eq!(h.bucket_of(32), 1);
        assert_eq!(h.bucket_of(33), 2);
        assert_eq!(h.bucket_of(64), 2);
        assert_eq!(h.bucket_of(65), 3);
        assert_eq!(h.bucket_of(16 << 23), 23);
        assert_eq!(h.bucket_of((16 << 23) + 1), HISTOGRAM_BUCKETS);
        assert_eq!(h.bucket_of(u64::MAX), HISTOGRAM_BUCKETS);
    }

    #[test]
    fn snapshots_are_cumulative_with_sum_and_count() {
        let h = Histogram::new(1);
        for value in [1, 2, 3, 4, 1 << 30] {
            h.observe(value);
        }
        h.observe_duration(Duration::from_millis(1));
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 1 + 2 + 3 + 4 + (1 << 30) + 1000);
        assert_eq!(s.cumulative[0], (1, 1));
        assert_eq!(s.cumulative[1], (2, 2));
        assert_eq!(s.cumulative[2], (4, 4));
        assert_eq!(s.cumulative[10], (1024, 5));
        // The value above the last bound counts only in the total (+Inf).
        assert_eq!(s.cumulative.last().unwrap().1, 5);
        assert!(s.cumulative.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn counters_count() {
        static C: Counter = Counter::new();
        C.inc();
        C.add(4);
        assert_eq!(C.get(), 5);
    }
}
