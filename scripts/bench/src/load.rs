//! The one load generator used for every system: producers that hand
//! records to a [`Sink`] at a fixed rate (open loop, latency from the
//! intended send time, so stalls are not hidden) or as fast as a window of
//! outstanding records allows (closed loop), with HdrHistogram latencies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, Semaphore};

use crate::systems::{AckFuture, Sink};

/// Bytes at the start of each value: intended send time (ns since the Unix
/// epoch) and a record id (producer << 40 | sequence).
pub const HEADER_BYTES: usize = 16;

/// Size of the random pool values are cut from: random bytes keep any
/// compression in the systems from flattering them.
const POOL_BYTES: usize = 64 * 1024;

/// Acknowledgement futures queued between a producer and its collector.
const ACKS_AHEAD: usize = 65_536;

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

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
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
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.5)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
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
}

struct Recorder {
    latency: Histogram<u64>,
    in_window: u64,
    acked_total: u64,
    errors: u64,
    first_error: Option<String>,
    last_ack: Option<Instant>,
    max_gap: Duration,
    acked_ids: Vec<u64>,
}

fn pool(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..POOL_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A record value: intended send time, id, then random filler.
pub fn value(intended_unix_ns: u64, id: u64, size: usize, pool: &[u8], offset: usize) -> Bytes {
    let size = size.max(HEADER_BYTES);
    let mut out = BytesMut::with_capacity(size);
    out.put_u64_le(intended_unix_ns);
    out.put_u64_le(id);
    let mut remaining = size - HEADER_BYTES;
    let mut at = offset % pool.len();
    while remaining > 0 {
        let take = remaining.min(pool.len() - at);
        out.put_slice(&pool[at..at + take]);
        remaining -= take;
        at = 0;
    }
    out.freeze()
}

/// The id written by [`value`], if the bytes are long enough.
pub fn id_of(bytes: &[u8]) -> Option<u64> {
    bytes.get(8..16).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Runs one load against `sinks` (one per producer) and returns what it measured.
pub async fn run(sinks: Vec<Sink>, spec: &LoadSpec, on_window: Option<Box<dyn FnOnce() + Send>>) -> LoadResult {
    let start = Instant::now() + Duration::from_millis(50);
    let start_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64) + 50_000_000;
    let window_start = start + Duration::from_secs_f64(spec.warmup_secs);
    let window_end = window_start + Duration::from_secs_f64(spec.duration_secs);
    let drain_deadline = window_end + Duration::from_secs_f64(spec.drain_secs);
    let recorder = Arc::new(Mutex::new(Recorder {
        latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        in_window: 0,
        acked_total: 0,
        errors: 0,
        first_error: None,
        last_ack: None,
        max_gap: Duration::ZERO,
        acked_ids: Vec::new(),
    }));
    let per_producer_rate = spec.rate.map(|r| r / spec.producers as f64);

    // A caller hook a third into the window (W7 kills a leader there).
    let hook = on_window.map(|hook| {
        tokio::spawn(async move {
            tokio::time::sleep_until((window_start + (window_end - window_start) / 3).into()).await;
            tokio::task::spawn_blocking(hook).await.ok();
        })
    });

    let outstanding = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (index, sink) in sinks.into_iter().enumerate() {
        let recorder = recorder.clone();
        let spec = spec.clone();
        let outstanding = outstanding.clone();
        tasks.push(tokio::spawn(async move {
            let pool = pool(index as u64 + 1);
            let window = Arc::new(Semaphore::new(spec.window.max(1)));
            // Acknowledgements are awaited on a task of their own, so each is
            // timed when it arrives, not when the sending loop looks.
            let (tx, mut rx) = mpsc::channel::<BoxFuture<'static, ()>>(ACKS_AHEAD);
            let collector = tokio::spawn(async move {
                let mut pending = FuturesUnordered::new();
                let mut open = true;
                loop {
                    tokio::select! {
                        next = rx.recv(), if open => match next {
                            Some(ack) => pending.push(ack),
                            None => open = false,
                        },
                        Some(()) = pending.next(), if !pending.is_empty() => {}
                        else => return,
                    }
                }
            });
            let mut sequence: u64 = 0;
            let unix_ns = |at: Instant| start_unix_ns + at.saturating_duration_since(start).as_nanos() as u64;
            loop {
                let intended = match per_producer_rate {
                    Some(rate) => {
                        let at = start + Duration::from_secs_f64(sequence as f64 / rate);
                        if at >= window_end || Instant::now() >= drain_deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => {
                        let now = Instant::now();
                        if now >= window_end {
                            break;
                        }
                        now
                    }
                };
                // The window bounds outstanding records in both modes; in
                // open loop a full window delays sending, and the delay
                // shows in the latency because it is measured from `intended`.
                let permit = window.clone().acquire_owned().await.expect("never closed");
                // At max rate (closed loop) a record is sent when the window
                // has room: its latency counts from then, not from before
                // the wait for an earlier record's acknowledgement.
                let intended = if per_producer_rate.is_none() { Instant::now() } else { intended };
                let id = ((index as u64) << 40) | sequence;
                let record = value(unix_ns(intended), id, spec.record_size, &pool, sequence as usize * 61);
                sequence += 1;
                match sink.send(id, record).await {
                    Ok(ack) => {
                        outstanding.fetch_add(1, Ordering::Relaxed);
                        let done = complete(
                            ack,
                            Sent { intended, id, window_start, window_end, track: spec.track_acks },
                            permit,
                            recorder.clone(),
                            outstanding.clone(),
                        );
                        if tx.send(Box::pin(done)).await.is_err() {
                            break;
                        }
                    }
                    Err(error) => {
                        let mut r = recorder.lock().expect("recorder");
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
            drop(tx);
            let _ = tokio::time::timeout_at(drain_deadline.into(), sink.flush()).await;
            let _ = tokio::time::timeout_at(drain_deadline.into(), collector).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    if let Some(hook) = hook {
        hook.abort();
    }
    let mut r = recorder.lock().expect("recorder");
    let unfinished = outstanding.load(Ordering::Relaxed);
    if unfinished > 0 {
        r.errors += unfinished;
        r.first_error.get_or_insert_with(|| format!("{unfinished} records unacknowledged at the drain deadline"));
    }
    LoadResult {
        offered_rate: spec.rate,
        records: r.in_window,
        records_per_sec: r.in_window as f64 / spec.duration_secs,
        mb_per_sec: r.in_window as f64 * spec.record_size as f64 / spec.duration_secs / 1e6,
        latency_ms: Percentiles::of(&r.latency),
        errors: r.errors,
        first_error: r.first_error.clone(),
        acked_total: r.acked_total,
        max_ack_gap_ms: r.max_gap.as_secs_f64() * 1000.0,
        acked_ids: r.acked_ids.clone(),
    }
}

/// What the collector needs to know of a sent record.
struct Sent {
    intended: Instant,
    id: u64,
    window_start: Instant,
    window_end: Instant,
    track: bool,
}

async fn complete(
    ack: AckFuture,
    sent: Sent,
    permit: tokio::sync::OwnedSemaphorePermit,
    recorder: Arc<Mutex<Recorder>>,
    outstanding: Arc<std::sync::atomic::AtomicU64>,
) {
    let outcome = ack.await;
    drop(permit);
    outstanding.fetch_sub(1, Ordering::Relaxed);
    let now = Instant::now();
    let mut r = recorder.lock().expect("recorder");
    match outcome {
        Ok(()) => {
            r.acked_total += 1;
            if sent.intended >= sent.window_start && sent.intended < sent.window_end {
                let us = now.saturating_duration_since(sent.intended).as_micros() as u64;
                r.latency.saturating_record(us.max(1));
            }
            if now >= sent.window_start && now < sent.window_end {
                r.in_window += 1;
                if let Some(last) = r.last_ack {
                    r.max_gap = r.max_gap.max(now - last);
                }
                r.last_ack = Some(now);
            }
            if sent.track {
                r.acked_ids.push(sent.id);
            }
        }
        Err(error) => {
            r.errors += 1;
            r.first_error.get_or_insert_with(|| format!("{error:#}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_time_and_id() {
        let pool = pool(3);
        let v = value(42, 7, 1024, &pool, 65_000);
        assert_eq!(v.len(), 1024);
        assert_eq!(u64::from_le_bytes(v[..8].try_into().unwrap()), 42);
        assert_eq!(id_of(&v), Some(7));
        assert_eq!(value(1, 2, 4, &pool, 0).len(), HEADER_BYTES, "short sizes still carry the header");
    }
}
