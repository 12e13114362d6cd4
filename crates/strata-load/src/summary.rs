//! Latency histograms and what is reported of them.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Smallest latency a histogram tells apart, in microseconds: its unit.
/// Loopback round trips take tens of microseconds, so finer would only cost
/// memory; a latency under 1 µs is recorded as 1 µs.
pub const LATENCY_MIN_US: u64 = 1;

/// Largest latency a histogram holds, in microseconds (an hour): longer
/// than any run's drain, so only a clock jump reaches it. Larger values are
/// clamped to it rather than dropped, so they still count.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Significant decimal digits kept: every recorded value is within 0.1 %,
/// far finer than run-to-run noise, in under 200 KiB per histogram.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram, in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_MIN_US, LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS)
        .expect("the latency bounds are valid")
}

/// Records one latency, clamped into the histogram's bounds.
pub fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record((latency.as_micros() as u64).max(LATENCY_MIN_US));
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a histogram in microseconds; all 0 when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: quantile_ms(histogram, 0.50),
            p95: quantile_ms(histogram, 0.95),
            p99: quantile_ms(histogram, 0.99),
            p999: quantile_ms(histogram, 0.999),
            max: histogram.max() as f64 / 1000.0,
        }
    }
}

/// One quantile of a histogram in microseconds, in milliseconds (0 when empty).
pub fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// Throughput of a measured window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub records_per_sec: f64,
    /// Megabytes (10^6 bytes) of record values per second.
    pub mb_per_sec: f64,
}

impl Rates {
    /// `records` values of `record_size` bytes in `window_secs` seconds.
    pub fn of(records: u64, record_size: usize, window_secs: f64) -> Rates {
        Rates {
            records_per_sec: records as f64 / window_secs,
            mb_per_sec: records as f64 * record_size as f64 / window_secs / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_milliseconds() {
        let mut histogram = latency_histogram();
        for us in 1..=10_000u64 {
            record_latency(&mut histogram, Duration::from_micros(us));
        }
        let p = Percentiles::of(&histogram);
        assert_eq!(p.count, 10_000);
        assert!((p.mean - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.01, "{p:?}");
        assert!(p.p50 <= p.p95 && p.p95 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
        assert!((p.max - 10.0).abs() < 0.01);
        assert_eq!(Percentiles::of(&latency_histogram()), Percentiles::default());
    }

    #[test]
    fn latencies_outside_the_bounds_are_clamped_not_dropped() {
        let mut histogram = latency_histogram();
        record_latency(&mut histogram, Duration::from_nanos(10));
        record_latency(&mut histogram, Duration::from_secs(2 * 3600));
        assert_eq!(histogram.len(), 2);
        assert_eq!(histogram.min(), LATENCY_MIN_US);
        assert!(histogram.max() >= LATENCY_MAX_US && histogram.max() <= LATENCY_MAX_US + LATENCY_MAX_US / 1000);
    }

    #[test]
    fn rates_are_per_second_of_the_window() {
        let rates = Rates::of(20_000, 1024, 10.0);
        assert_eq!(rates.records_per_sec, 2000.0);
        assert!((rates.mb_per_sec - 2.048).abs() < 1e-9);
    }
}
