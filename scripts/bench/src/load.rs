//! The suite's side of the load generator (`strata-load`, shared with
//! `strata bench`): a workload's settings and figures as the report
//! records them, and one run of it against a system's sinks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use strata_load::{Load, Meter, Outcome, Percentiles, Rates, Schedule, Sink, Stamp};

/// From fixing the clock to the first intended send: time for every
/// producer's task to start, so the first records are not late by that.
const LEAD_IN: Duration = Duration::from_millis(50);

/// How often a run with readers looks whether they have received every
/// acknowledged record yet: small beside any latency worth reporting.
const CATCH_UP_POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Debug, Serialize)]
pub struct LoadSpec {
    pub producers: usize,
    /// Records per second in total (open loop); `None` is closed loop at max rate.
    pub rate: Option<f64>,
    /// Most records one producer has outstanding (handed over, not acknowledged).
    pub window: usize,
    pub record_size: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    /// How long after the window outstanding records may still complete.
    pub drain_secs: f64,
    /// Keep every acknowledged record id and ack time (for W7's checks).
    #[serde(skip)]
    pub track_acks: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadResult {
    /// Offered records/s (open loop), or null at max rate.
    pub offered_rate: Option<f64>,
    /// Acknowledgements that arrived inside the measured window.
    pub records: u64,
    pub records_per_sec: f64,
    /// Megabytes (10^6 bytes) of record values per second.
    pub mb_per_sec: f64,
    /// Latency (send or intended send to acknowledgement) of records whose
    /// intended send time is inside the window.
    pub latency_ms: Percentiles,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Every record acknowledged, warm-up included.
    pub acked_total: u64,
    /// Longest time between two consecutive acknowledgements inside the window.
    pub max_ack_gap_ms: f64,
    #[serde(skip)]
    pub acked_ids: Vec<u64>,
    /// What the readers received (G3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume: Option<ConsumeResult>,
}

/// What the readers of a run received.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConsumeResult {
    /// Records received inside the measured window.
    pub records: u64,
    pub records_per_sec: f64,
    /// From a record's stamp (its intended send time) to its receipt, of
    /// records stamped inside the window.
    pub end_to_end_latency_ms: Percentiles,
    /// Every record received, warm-up and drain included.
    pub received_total: u64,
    /// Acknowledged records not received by the end of the drain (0 when
    /// every one was; more were received than acknowledged if negative).
    pub missing: i64,
}

/// The readers' side of a run: the run's meter once its clock is fixed,
/// and how many records they received since.
#[derive(Default)]
pub struct Readers {
    meter: OnceLock<Arc<Meter>>,
    received: AtomicU64,
}

impl Readers {
    /// Records just received, by their values. Records received before the
    /// run's clock is fixed are not the run's and do not count.
    pub fn received<'a>(&self, values: impl IntoIterator<Item = &'a [u8]>) {
        let Some(meter) = self.meter.get() else { return };
        let stamps: Vec<u64> = values.into_iter().filter_map(strata_load::stamp::sent_at).collect();
        self.received.fetch_add(stamps.len() as u64, Ordering::Relaxed);
        meter.received(stamps);
    }

    pub fn received_total(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl LoadSpec {
    fn schedule(&self) -> Schedule {
        Schedule {
            producers: self.producers,
            rate_per_sec: self.rate,
            max_outstanding: Some(self.window.max(1)),
            record_size: self.record_size,
            // The id lets W7 find acknowledged records that were lost.
            stamp: Stamp::TimeAndId,
            lead_in: LEAD_IN,
            warmup: Duration::from_secs_f64(self.warmup_secs),
            duration: Duration::from_secs_f64(self.duration_secs),
            drain: Duration::from_secs_f64(self.drain_secs),
            track_acks: self.track_acks,
        }
    }
}

/// Runs one load against `sinks` (one per producer) and returns what it
/// measured. `at_a_third`, if given, runs (on a blocking thread) a third
/// into the measured window: W7 kills a leader there.
pub async fn run<S: Sink>(sinks: Vec<S>, spec: &LoadSpec, at_a_third: Option<Box<dyn FnOnce() + Send>>) -> LoadResult {
    let load = Load::start(spec.schedule());
    let clock = load.clock();
    let hook = at_a_third.map(|hook| {
        tokio::spawn(async move {
            let at = clock.window_start + (clock.window_end - clock.window_start) / 3;
            tokio::time::sleep_until(at.into()).await;
            tokio::task::spawn_blocking(hook).await.ok();
        })
    });
    load.run(sinks).await;
    if let Some(hook) = hook {
        hook.abort();
    }
    result_of(load.outcome(), spec)
}

/// Runs one load against `sinks` while readers (the caller's tasks) report
/// what they receive to `readers`; ends once they have received every
/// acknowledged record, or `spec.drain_secs` after the producers finished.
pub async fn run_with_readers<S: Sink>(sinks: Vec<S>, spec: &LoadSpec, readers: &Readers) -> LoadResult {
    let load = Load::start(spec.schedule());
    let _ = readers.meter.set(load.meter().clone());
    load.run(sinks).await;
    let deadline = Instant::now() + Duration::from_secs_f64(spec.drain_secs);
    while readers.received_total() < load.meter().acked_total() && Instant::now() < deadline {
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
    let outcome = load.outcome();
    let received_total = readers.received_total();
    let consume = ConsumeResult {
        records: outcome.consumed_in_window,
        records_per_sec: outcome.consumed_in_window as f64 / spec.duration_secs,
        end_to_end_latency_ms: outcome.end_to_end_latency_ms,
        received_total,
        missing: outcome.acked_total as i64 - received_total as i64,
    };
    LoadResult { consume: Some(consume), ..result_of(outcome, spec) }
}

fn result_of(outcome: Outcome, spec: &LoadSpec) -> LoadResult {
    let Rates { records_per_sec, mb_per_sec } =
        Rates::of(outcome.acked_in_window, spec.record_size, spec.duration_secs);
    LoadResult {
        offered_rate: spec.rate,
        records: outcome.acked_in_window,
        records_per_sec,
        mb_per_sec,
        latency_ms: outcome.produce_latency_ms,
        errors: outcome.errors,
        first_error: outcome.first_error,
        acked_total: outcome.acked_total,
        max_ack_gap_ms: outcome.max_ack_gap.as_secs_f64() * 1000.0,
        acked_ids: outcome.acked_ids,
        consume: None,
    }
}
