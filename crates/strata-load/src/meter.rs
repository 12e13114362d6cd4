//! What every task of a run reports into: producers' acknowledgements,
//! failures, and (from the caller's readers) received stamps.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::schedule::Clock;
use crate::summary::{latency_histogram, quantile_ms, record_latency, Percentiles};

/// The tallies of one run. One lock, taken once per acknowledgement (and
/// once per batch of received records).
pub struct Meter {
    clock: Clock,
    track_acks: bool,
    tally: Mutex<Tally>,
    /// Every record acknowledged, warm-up included.
    acked_total: AtomicU64,
    /// Records handed to a sink and not yet acknowledged or failed.
    outstanding: AtomicU64,
}

struct Tally {
    /// Send (or intended send) to acknowledgement, of records intended in the window.
    produce_latency: Histogram<u64>,
    /// Intended send to receipt, of received records stamped in the window.
    end_to_end_latency: Histogram<u64>,
    acked_in_window: u64,
    consumed_in_window: u64,
    /// Since the last [`Meter::take_interval`].
    interval_latency: Histogram<u64>,
    interval_acked: u64,
    interval_consumed: u64,
    errors: u64,
    unsent: u64,
    first_error: Option<String>,
    last_ack_in_window: Option<Instant>,
    max_ack_gap: Duration,
    acked_ids: Vec<u64>,
}

/// What happened since the previous interval (for a progress line).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub acked: u64,
    pub consumed: u64,
    /// Produce latency p99 of the interval, ms (0 when nothing was acknowledged).
    pub p99_ms: f64,
    /// Failed records of the whole run so far.
    pub errors: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Acknowledgements that arrived inside the window.
    pub acked_in_window: u64,
    /// Latency of acknowledged records whose intended send time is inside the window.
    pub produce_latency_ms: Percentiles,
    /// Records the caller's readers received inside the window.
    pub consumed_in_window: u64,
    /// Intended send to receipt, of received records stamped inside the window.
    pub end_to_end_latency_ms: Percentiles,
    /// Every record acknowledged, warm-up included.
    pub acked_total: u64,
    /// Records that failed, those still outstanding at the end included.
    pub errors: u64,
    /// Records of the open-loop schedule given up at the drain deadline.
    pub unsent: u64,
    pub first_error: Option<String>,
    /// Longest time between two consecutive acknowledgements inside the window.
    pub max_ack_gap: Duration,
    /// Ids of the acknowledged records, when the schedule tracks them.
    pub acked_ids: Vec<u64>,
}

impl Meter {
    pub fn new(clock: Clock, track_acks: bool) -> Meter {
        Meter {
            clock,
            track_acks,
            tally: Mutex::new(Tally {
                produce_latency: latency_histogram(),
                end_to_end_latency: latency_histogram(),
                acked_in_window: 0,
                consumed_in_window: 0,
                interval_latency: latency_histogram(),
                interval_acked: 0,
                interval_consumed: 0,
                errors: 0,
                unsent: 0,
                first_error: None,
                last_ack_in_window: None,
                max_ack_gap: Duration::ZERO,
                acked_ids: Vec::new(),
            }),
            acked_total: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().expect("no task panics while it holds the tally")
    }

    pub fn acked_total(&self) -> u64 {
        self.acked_total.load(Ordering::Relaxed)
    }

    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts one failed record; the first failure's message is kept.
    pub fn fail(&self, error: impl Display) {
        self.tally().fail(error);
    }

    pub(crate) fn handed_over(&self) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn gave_up(&self, unsent: u64) {
        self.tally().unsent += unsent;
    }

    /// Record `id`, intended to go out at `intended`, completed now.
    pub(crate) fn completed(&self, intended: Instant, id: u64, outcome: Result<(), impl Display>) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut tally = self.tally();
        if let Err(error) = outcome {
            tally.fail(error);
            return;
        }
        self.acked_total.fetch_add(1, Ordering::Relaxed);
        let latency = now.saturating_duration_since(intended);
        if self.clock.in_window(intended) {
            record_latency(&mut tally.produce_latency, latency);
        }
        if self.clock.in_window(now) {
            tally.acked_in_window += 1;
            if let Some(last) = tally.last_ack_in_window {
                tally.max_ack_gap = tally.max_ack_gap.max(now - last);
            }
            tally.last_ack_in_window = Some(now);
        }
        record_latency(&mut tally.interval_latency, latency);
        tally.interval_acked += 1;
        if self.track_acks {
            tally.acked_ids.push(id);
        }
    }

    /// Records received just now by a reader, given by their stamps'
    /// intended send times (nanoseconds since the Unix epoch; see
    /// [`crate::stamp::sent_at`]).
    pub fn received(&self, stamps: impl IntoIterator<Item = u64>) {
        let now = Instant::now();
        let now_unix_ns = self.clock.unix_ns(now);
        let received_in_window = self.clock.in_window(now);
        let mut tally = self.tally();
        for stamp in stamps {
            if self.clock.unix_ns_in_window(stamp) {
                record_latency(&mut tally.end_to_end_latency, Duration::from_nanos(now_unix_ns.saturating_sub(stamp)));
            }
            if received_in_window {
                tally.consumed_in_window += 1;
            }
            tally.interval_consumed += 1;
        }
    }

    /// What happened since the previous call, and starts a new interval.
    pub fn take_interval(&self) -> Interval {
        let mut tally = self.tally();
        let interval = Interval {
            acked: tally.interval_acked,
            consumed: tally.interval_consumed,
            p99_ms: quantile_ms(&tally.interval_latency, 0.99),
            errors: tally.errors,
        };
        tally.interval_latency.reset();
        tally.interval_acked = 0;
        tally.interval_consumed = 0;
        interval
    }

    /// The figures so far; records still outstanding count as failed.
    pub fn outcome(&self) -> Outcome {
        let tally = self.tally();
        let unfinished = self.outstanding();
        let mut first_error = tally.first_error.clone();
        if unfinished > 0 {
            first_error.get_or_insert_with(|| format!("{unfinished} records were not acknowledged in time"));
        }
        Outcome {
            acked_in_window: tally.acked_in_window,
            produce_latency_ms: Percentiles::of(&tally.produce_latency),
            consumed_in_window: tally.consumed_in_window,
            end_to_end_latency_ms: Percentiles::of(&tally.end_to_end_latency),
            acked_total: self.acked_total(),
            errors: tally.errors + unfinished,
            unsent: tally.unsent,
            first_error,
            max_ack_gap: tally.max_ack_gap,
            acked_ids: tally.acked_ids.clone(),
        }
    }
}

impl Tally {
    fn fail(&mut self, error: impl Display) {
        self.errors += 1;
        // `{:#}` keeps the causes of an error that has them (anyhow's chain).
        self.first_error.get_or_insert_with(|| format!("{error:#}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;
    use crate::stamp::Stamp;

    /// A meter whose window is open now: no lead-in or warm-up, 60 s long.
    fn open_meter(track_acks: bool) -> Meter {
        let schedule = Schedule {
            producers: 1,
            rate_per_sec: None,
            max_outstanding: None,
            record_size: 16,
            stamp: Stamp::Time,
            lead_in: Duration::ZERO,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(60),
            drain: Duration::from_secs(1),
            track_acks,
        };
        Meter::new(Clock::new(&schedule), track_acks)
    }

    #[test]
    fn acknowledgements_count_and_failures_keep_the_first_message() {
        let meter = open_meter(true);
        let sent = Instant::now();
        for id in 0..3 {
            meter.handed_over();
            meter.completed(sent, id, Ok::<(), &str>(()));
        }
        meter.handed_over();
        meter.completed(sent, 9, Err("refused"));
        meter.fail("second");
        meter.handed_over();
        let outcome = meter.outcome();
        assert_eq!(outcome.acked_total, 3);
        assert_eq!(outcome.acked_in_window, 3);
        assert_eq!(outcome.produce_latency_ms.count, 3);
        assert_eq!(outcome.acked_ids, vec![0, 1, 2]);
        // Two failures and one record still outstanding.
        assert_eq!(outcome.errors, 3);
        assert_eq!(outcome.first_error.as_deref(), Some("refused"));
        let interval = meter.take_interval();
        assert_eq!((interval.acked, interval.errors), (3, 2));
        assert_eq!(meter.take_interval().acked, 0, "an interval starts afresh");
    }

    #[test]
    fn outstanding_records_at_the_end_are_failures() {
        let meter = open_meter(false);
        meter.handed_over();
        meter.handed_over();
        let outcome = meter.outcome();
        assert_eq!(outcome.errors, 2);
        assert_eq!(outcome.first_error.as_deref(), Some("2 records were not acknowledged in time"));
        assert!(outcome.acked_ids.is_empty());
    }

    #[test]
    fn received_stamps_give_end_to_end_latency() {
        let meter = open_meter(false);
        let clock = meter.clock();
        let stamped = clock.unix_ns(clock.window_start);
        // Before the window: counted as received, but no latency.
        meter.received([stamped, stamped, clock.start_unix_ns.saturating_sub(1)]);
        let outcome = meter.outcome();
        assert_eq!(outcome.consumed_in_window, 3);
        assert_eq!(outcome.end_to_end_latency_ms.count, 2);
        assert!(outcome.end_to_end_latency_ms.max < 60_000.0);
        assert_eq!(meter.take_interval().consumed, 3);
    }
}
