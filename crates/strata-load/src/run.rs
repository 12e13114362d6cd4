//! Driving the producers of a run: one task that sends on the schedule and
//! one that waits for acknowledgements, per producer.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::meter::{Meter, Outcome};
use crate::schedule::{Clock, Next, Schedule};
use crate::sink::Sink;
use crate::stamp::{record_id, Filler};

/// Acknowledgements queued between a producer's sending task and its
/// collector. The window of outstanding records or the sink's buffer bounds
/// memory; this only keeps the hand-over from growing without bound if the
/// collector falls behind.
const ACKS_AHEAD: usize = 65_536;

/// Distance in the filler pool between the starts of consecutive values: a
/// prime, so values of any size start at ever different places.
const FILLER_STRIDE_BYTES: usize = 61;

/// One run: its schedule, its clock (fixed when the run is made) and its meter.
pub struct Load {
    schedule: Arc<Schedule>,
    meter: Arc<Meter>,
}

/// A record handed over, on its way to the collector.
struct Handed<A> {
    intended: Instant,
    id: u64,
    ack: A,
    /// Its place in the window of outstanding records, freed when it completes.
    permit: Option<OwnedSemaphorePermit>,
}

impl Load {
    /// Fixes the clock: the schedule starts `schedule.lead_in` from now.
    pub fn start(schedule: Schedule) -> Load {
        assert!(schedule.producers >= 1, "a run needs a producer");
        assert!(schedule.max_outstanding != Some(0), "a window of 0 outstanding records never sends");
        assert!(schedule.rate_per_sec.is_none_or(|rate| rate > 0.0), "an open-loop rate must be positive");
        let clock = Clock::new(&schedule);
        let meter = Arc::new(Meter::new(clock, schedule.track_acks));
        Load { schedule: Arc::new(schedule), meter }
    }

    pub fn clock(&self) -> Clock {
        self.meter.clock()
    }

    /// The run's tallies, for readers of the records and progress lines.
    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// Drives one producer per sink until the schedule is sent and
    /// acknowledged, or the drain deadline passes.
    pub async fn run<S: Sink>(&self, sinks: Vec<S>) {
        assert_eq!(sinks.len(), self.schedule.producers, "one sink per producer");
        let drain_deadline = self.clock().drain_deadline;
        let mut tasks = Vec::new();
        for (index, sink) in sinks.into_iter().enumerate() {
            let (handed, to_collect) = mpsc::channel(ACKS_AHEAD);
            let sender = tokio::spawn(produce(index, sink, self.schedule.clone(), self.meter.clone(), handed));
            let collector = tokio::spawn(collect(to_collect, self.meter.clone()));
            tasks.push((sender, collector));
        }
        // Bounded by the drain deadline: a dead system must not keep the run
        // waiting for its client's own timeouts.
        for (sender, collector) in tasks {
            let _ = tokio::time::timeout_at(drain_deadline.into(), sender).await;
            let _ = tokio::time::timeout_at(drain_deadline.into(), collector).await;
        }
    }

    /// What the run measured; records still outstanding count as failed.
    pub fn outcome(&self) -> Outcome {
        self.meter.outcome()
    }
}

/// One producer's sending loop, open or closed loop.
async fn produce<S: Sink>(
    index: usize,
    sink: S,
    schedule: Arc<Schedule>,
    meter: Arc<Meter>,
    handed: mpsc::Sender<Handed<S::Ack>>,
) {
    let filler = Filler::new(index as u64 + 1);
    let window = schedule.max_outstanding.map(|records| Arc::new(Semaphore::new(records)));
    let rate = schedule.rate_per_producer();
    let clock = meter.clock();
    let mut sequence: u64 = 0;
    loop {
        let intended = match clock.next(sequence, rate, Instant::now()) {
            Next::At(intended) => intended,
            Next::Done => break,
            Next::GiveUp { unsent } => {
                meter.gave_up(unsent);
                break;
            }
        };
        if rate.is_some() {
            tokio::time::sleep_until(intended.into()).await;
        }
        // The window bounds outstanding records in both modes; in open loop
        // a full window delays sending, and the delay shows in the latency
        // because it counts from `intended`.
        let permit = match &window {
            Some(window) => Some(window.clone().acquire_owned().await.expect("the window is never closed")),
            None => None,
        };
        // In closed loop a record is sent when the window has room: its
        // latency counts from then, not from before the wait for an earlier
        // record's acknowledgement.
        let intended = if rate.is_none() { Instant::now() } else { intended };
        let id = record_id(index, sequence);
        let offset = sequence as usize * FILLER_STRIDE_BYTES;
        let value = filler.value(schedule.stamp, clock.unix_ns(intended), id, schedule.record_size, offset);
        sequence += 1;
        match sink.send(id, value).await {
            Ok(ack) => {
                meter.handed_over();
                if handed.send(Handed { intended, id, ack, permit }).await.is_err() {
                    break;
                }
            }
            Err(error) => meter.fail(error),
        }
    }
    drop(handed);
    let _ = tokio::time::timeout_at(clock.drain_deadline.into(), sink.flush()).await;
}

/// Waits for one producer's acknowledgements, each timed as it arrives,
/// not when the sending loop would get round to it.
async fn collect<A, E>(mut handed: mpsc::Receiver<Handed<A>>, meter: Arc<Meter>)
where
    A: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            next = handed.recv(), if open => match next {
                Some(Handed { intended, id, ack, permit }) => pending.push(async move {
                    let outcome = ack.await;
                    drop(permit);
                    (intended, id, outcome)
                }),
                None => open = false,
            },
            Some((intended, id, outcome)) = pending.next(), if !pending.is_empty() => {
                meter.completed(intended, id, outcome);
            }
            else => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use futures::future::{ready, Ready};

    use super::*;
    use crate::stamp::{id_of, sent_at, Stamp};

    /// Values a [`Kept`] keeps; a closed-loop run sends many more.
    const KEPT_VALUES: usize = 1000;

    /// A sink that acknowledges at once, refuses record 3, and keeps the
    /// first values it was given.
    #[derive(Default, Clone)]
    struct Kept {
        values: Arc<Mutex<Vec<(u64, Bytes)>>>,
        sent: Arc<std::sync::atomic::AtomicU64>,
    }

    impl Sink for Kept {
        type Ack = Ready<Result<(), String>>;
        type Error = String;

        async fn send(&self, id: u64, value: Bytes) -> Result<Self::Ack, String> {
            self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut values = self.values.lock().unwrap();
            if values.len() < KEPT_VALUES {
                values.push((id, value));
            }
            Ok(ready(if [record_id(0, 3), record_id(1, 3)].contains(&id) {
                Err("refused".to_string())
            } else {
                Ok(())
            }))
        }

        async fn flush(&self) {}
    }

    fn schedule(rate_per_sec: Option<f64>) -> Schedule {
        Schedule {
            producers: 2,
            rate_per_sec,
            max_outstanding: Some(4),
            record_size: 64,
            stamp: Stamp::TimeAndId,
            lead_in: Duration::from_millis(10),
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            drain: Duration::from_secs(5),
            track_acks: true,
        }
    }

    #[tokio::test]
    async fn open_loop_sends_the_schedule_and_counts_every_record() {
        let sinks = vec![Kept::default(), Kept::default()];
        let load = Load::start(schedule(Some(200.0)));
        load.run(sinks.clone()).await;
        let outcome = load.outcome();
        // 100 records/s per producer for 0.4 s: 40 each.
        for (index, sink) in sinks.iter().enumerate() {
            let values = sink.values.lock().unwrap();
            assert_eq!(values.len(), 40);
            for (sequence, (id, value)) in values.iter().enumerate() {
                assert_eq!(*id, record_id(index, sequence as u64));
                assert_eq!(id_of(value), Some(*id));
                assert_eq!(value.len(), 64);
                // Stamped with the intended send time of its place in the schedule.
                let intended = load.clock().intended(sequence as u64, 100.0);
                assert_eq!(sent_at(value), Some(load.clock().unix_ns(intended)));
            }
        }
        // Record 3 of each producer was refused.
        assert_eq!(outcome.errors, 2);
        assert_eq!(outcome.first_error.as_deref(), Some("refused"));
        assert_eq!(outcome.acked_total, 78);
        assert_eq!(outcome.acked_ids.len(), 78);
        assert_eq!(outcome.unsent, 0);
        assert!(outcome.acked_in_window > 0 && outcome.acked_in_window <= 60, "{outcome:?}");
        assert_eq!(load.meter().outstanding(), 0);
    }

    #[tokio::test]
    async fn closed_loop_sends_until_the_window_ends() {
        let sinks = vec![Kept::default(), Kept::default()];
        let mut schedule = schedule(None);
        schedule.track_acks = false;
        let load = Load::start(schedule);
        load.run(sinks.clone()).await;
        let outcome = load.outcome();
        assert!(Instant::now() >= load.clock().window_end);
        assert!(outcome.acked_in_window > 0);
        assert!(outcome.produce_latency_ms.count > 0);
        let sent: u64 = sinks.iter().map(|s| s.sent.load(std::sync::atomic::Ordering::Relaxed)).sum();
        assert_eq!(outcome.acked_total + outcome.errors, sent);
        assert_eq!(outcome.errors, 2, "record 3 of each producer");
    }
}
