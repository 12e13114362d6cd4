//! `strata bench`: produce (and optionally consume) load against any
//! cluster and report throughput and latency, like Kafka's producer perf
//! test or `nats bench`.
//!
//! Two ways to offer load:
//! - max rate (`--rate 0`, the default): every producer sends as fast as
//!   its buffer (or `--max-outstanding`) lets it; latency is measured from
//!   the moment `send` was called.
//! - fixed rate (`--rate N`): open loop. Record `i` of a producer has an
//!   intended send time `start + i / rate`, and its latency is measured from
//!   that intended time, not from when it was actually sent. A cluster that
//!   stalls therefore shows the whole stall in the percentiles instead of
//!   hiding it by slowing the sender down (coordinated omission).
//!
//! A run has a warm-up, then a measured window of `--duration`. Latencies
//! are recorded (HdrHistogram, microsecond resolution) for records whose
//! intended send time falls in the window; throughput counts the
//! acknowledgements that arrive inside the window. Each record value starts
//! with its intended send time in nanoseconds since the Unix epoch, so
//! consumers (`--consumers N`) measure end-to-end latency from the same
//! origin.
//!
//! Exits 0 only when no record failed.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use strata_client::{
    Acks, Client, Consumer, ConsumerConfig, DeliveryFuture, OffsetSpec, Producer, ProducerConfig, Record, StartOffset,
    TopicMetadata,
};
use strata_core::limits;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::produce::AcksArg;
use crate::topic::explain;

/// Bytes at the start of every value that carry the intended send time.
const STAMP_BYTES: usize = 8;

/// Size of the random pool record values are cut from. Random bytes keep
/// compression (LZ4 in the store) from making the benchmark look better
/// than real, varied data would.
const FILLER_POOL_BYTES: usize = 64 * 1024;

/// Largest latency the histograms hold (an hour, in microseconds); larger
/// values are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Records queued between a producer's sending loop and its acknowledgement
/// collector. The producer's own buffer bounds memory; this only keeps the
/// hand-over from growing without bound if the collector falls behind.
const DELIVERIES_AHEAD: usize = 65_536;

/// How long one consumer poll waits; bounds how late the end of the run is noticed.
const POLL_WAIT: Duration = Duration::from_millis(200);

/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How long the topic may take to have a serving leader on every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Topic to write to; created with --partitions and --replication-factor
    /// when it does not exist.
    #[arg(long, default_value = "strata-bench")]
    pub topic: String,
    /// Partitions of the topic when the bench creates it.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replicas per partition when the bench creates the topic [default: min(3, number of nodes)].
    #[arg(long)]
    pub replication_factor: Option<u32>,
    /// Size of each record's value in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Producers, each with its own client connections and batching.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Consumers reading the topic from its end, for end-to-end latency;
    /// partitions are split among them.
    #[arg(long, default_value_t = 0)]
    pub consumers: u32,
    /// Records per second offered in total (open loop, split evenly among
    /// producers); 0 sends as fast as the cluster accepts.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Most records one producer has sent but not yet seen acknowledged; 0
    /// leaves only the producer's buffer as the bound. 1 with --linger 0
    /// measures one request at a time.
    #[arg(long, default_value_t = 0)]
    pub max_outstanding: u32,
    /// How long the measured window lasts, e.g. 30s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the measured window, not counted, e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// How long a producer waits to fill a batch, e.g. 5ms or 0s.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub linger: Duration,
    /// Bound on one batch in bytes.
    #[arg(long, default_value_t = limits::DEFAULT_CLIENT_BATCH_BYTES)]
    pub batch_bytes: usize,
    /// Most produce requests in flight per partition and producer.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// When a record counts as written: all, leader or none.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// Produce without the idempotent producer (it is on by default with
    /// --acks all, and off with leader or none, which it does not support).
    #[arg(long)]
    pub no_idempotence: bool,
    /// After the window, how long to wait for outstanding records before
    /// counting them as failed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("'{text}' is not a duration such as 10s or 5ms: {e}"))
}

/// The settings as printed beside the numbers, so results carry their context.
#[derive(Serialize, Clone, Debug)]
struct Settings {
    topic: String,
    partitions: u32,
    replication_factor: usize,
    record_size_bytes: usize,
    producers: u32,
    consumers: u32,
    /// 0 means max rate.
    rate_records_per_sec: u64,
    max_outstanding: u32,
    acks: &'static str,
    idempotence: bool,
    linger_ms: f64,
    batch_bytes: usize,
    max_in_flight: usize,
    warmup_secs: f64,
    duration_secs: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq)]
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
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Serialize, Debug)]
struct Throughput {
    /// Records acknowledged (produce) or received (consume) inside the window.
    records: u64,
    /// Value bytes of those records.
    bytes: u64,
    records_per_sec: f64,
    /// Megabytes (10^6 bytes) of record values per second.
    mb_per_sec: f64,
    /// Latency of records whose intended send time is inside the window.
    latency_ms: Percentiles,
}

#[derive(Serialize, Debug)]
struct Summary {
    settings: Settings,
    produce: Throughput,
    /// Present when the run had consumers: end-to-end latency.
    consume: Option<Throughput>,
    /// Records that failed (the cluster refused them or they timed out).
    errors: u64,
    /// Records of the open-loop schedule still unsent when the drain timeout ended the run.
    unsent: u64,
    first_error: Option<String>,
}

/// Time origins shared by every task of one run.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    start_unix_ns: u64,
    window_start: Instant,
    window_end: Instant,
}

impl Clock {
    fn new(warmup: Duration, duration: Duration) -> Clock {
        let start = Instant::now();
        let start_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Clock { start, start_unix_ns, window_start: start + warmup, window_end: start + warmup + duration }
    }

    fn unix_ns(&self, at: Instant) -> u64 {
        self.start_unix_ns + at.saturating_duration_since(self.start).as_nanos() as u64
    }

    fn now_unix_ns(&self) -> u64 {
        self.unix_ns(Instant::now())
    }

    fn in_window(&self, at: Instant) -> bool {
        at >= self.window_start && at < self.window_end
    }

    fn unix_ns_in_window(&self, unix_ns: u64) -> bool {
        unix_ns >= self.unix_ns(self.window_start) && unix_ns < self.unix_ns(self.window_end)
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// What every task reports into; one lock, taken once per record.
struct Recorder {
    produce_latency: Histogram<u64>,
    e2e_latency: Histogram<u64>,
    produced_in_window: u64,
    consumed_in_window: u64,
    /// Since the last progress line.
    interval_latency: Histogram<u64>,
    interval_produced: u64,
    interval_consumed: u64,
    errors: u64,
    unsent: u64,
    first_error: Option<String>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            produce_latency: new_histogram(),
            e2e_latency: new_histogram(),
            produced_in_window: 0,
            consumed_in_window: 0,
            interval_latency: new_histogram(),
            interval_produced: 0,
            interval_consumed: 0,
            errors: 0,
            unsent: 0,
            first_error: None,
        }
    }

    fn fail(&mut self, error: impl std::fmt::Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| error.to_string());
    }
}

struct Shared {
    clock: Clock,
    recorder: Mutex<Recorder>,
    /// Every record acknowledged, warm-up included: consumers stop once
    /// they have read this many after the producers finished.
    acked_total: AtomicU64,
    consumed_total: AtomicU64,
    /// Records sent but not yet acknowledged or failed, for the progress line.
    outstanding: AtomicU64,
    producers_done: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder.lock().expect("recorder lock")
    }
}

/// The value of a record: its intended send time, then random filler.
fn record_value(intended_unix_ns: u64, size: usize, pool: &[u8], offset: usize) -> Bytes {
    let mut value = BytesMut::with_capacity(size);
    value.put_u64_le(intended_unix_ns);
    let mut remaining = size - STAMP_BYTES;
    let mut at = offset % pool.len();
    while remaining > 0 {
        let take = remaining.min(pool.len() - at);
        value.put_slice(&pool[at..at + take]);
        remaining -= take;
        at = 0;
    }
    value.freeze()
}

/// The intended send time stored at the start of a bench record's value.
fn stamp_of(value: &[u8]) -> Option<u64> {
    value.get(..STAMP_BYTES).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Random bytes from a small xorshift generator: cheap, seeded per producer.
fn filler_pool(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..FILLER_POOL_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Intended send time of record `index` of an open-loop schedule.
fn intended_at(start: Instant, index: u64, rate_per_sec: f64) -> Instant {
    start + Duration::from_secs_f64(index as f64 / rate_per_sec)
}

fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.producers >= 1, "--producers must be at least 1");
    anyhow::ensure!(
        args.record_size >= STAMP_BYTES,
        "--record-size must be at least {STAMP_BYTES} bytes: each value starts with its send time"
    );
    anyhow::ensure!(
        args.record_size <= limits::MAX_RECORD_BYTES - 64,
        "--record-size must stay below the record limit of {} bytes",
        limits::MAX_RECORD_BYTES
    );
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be more than 0");
    anyhow::ensure!(args.partitions >= 1, "--partitions must be at least 1");
    Ok(())
}

/// Finds the topic, creating it when missing, and waits until every
/// partition has a leader that serves.
async fn ensure_topic(client: &Client, args: &BenchArgs) -> anyhow::Result<TopicMetadata> {
    let topic = match client.topic_metadata(&args.topic).await {
        Ok(topic) => topic,
        Err(error) if error.code() == Some(strata_client::ErrorCode::UnknownTopic) => {
            let replication_factor = match args.replication_factor {
                Some(rf) => rf,
                None => client.metadata().await.map_err(explain)?.nodes.len().clamp(1, 3) as u32,
            };
            match client.create_topic(&args.topic, args.partitions, replication_factor, Default::default()).await {
                Ok(topic) => topic,
                // Another bench created it meanwhile: use theirs.
                Err(error) if error.code() == Some(strata_client::ErrorCode::TopicAlreadyExists) => {
                    client.refresh_metadata().await.map_err(explain)?;
                    client.topic_metadata(&args.topic).await.map_err(explain)?
                }
                Err(error) => return Err(explain(error)).context("creating the bench topic"),
            }
        }
        Err(error) => return Err(explain(error)),
    };
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    for partition in 0..topic.partition_count() {
        loop {
            match client.list_offsets(&topic.name, partition, OffsetSpec::Latest).await {
                Ok(_) => break,
                // A node that has not applied the creation yet answers
                // UNKNOWN_TOPIC: look again until the deadline.
                Err(error)
                    if (error.is_retryable() || error.code() == Some(strata_client::ErrorCode::UnknownTopic))
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = client.refresh_metadata().await;
                }
                Err(error) => {
                    return Err(explain(error)).with_context(|| format!("partition {partition} is not serving"))
                }
            }
        }
    }
    Ok(topic)
}

struct Delivery {
    intended: Instant,
    future: DeliveryFuture,
    _permit: Option<OwnedSemaphorePermit>,
}

/// One producer's sending loop: max rate or an open-loop schedule.
async fn produce_loop(
    index: u32,
    producer: Producer,
    args: Arc<BenchArgs>,
    shared: Arc<Shared>,
    deliveries: mpsc::Sender<Delivery>,
    drain_deadline: Instant,
) {
    let pool = filler_pool(index as u64 + 1);
    let window = Arc::new(Semaphore::new(match args.max_outstanding {
        0 => Semaphore::MAX_PERMITS,
        n => n as usize,
    }));
    let rate = (args.rate > 0).then(|| args.rate as f64 / args.producers as f64);
    let clock = shared.clock;
    let mut sequence: u64 = 0;
    loop {
        let intended = match rate {
            Some(rate) => {
                let intended = intended_at(clock.start, sequence, rate);
                if intended >= clock.window_end {
                    break;
                }
                if Instant::now() >= drain_deadline {
                    // The cluster fell so far behind that the schedule could
                    // not be sent in time: count what is left.
                    let left = ((clock.window_end - clock.start).as_secs_f64() * rate).ceil() as u64;
                    shared.recorder().unsent += left.saturating_sub(sequence);
                    break;
                }
                tokio::time::sleep_until(intended.into()).await;
                intended
            }
            None => {
                let now = Instant::now();
                if now >= clock.window_end {
                    break;
                }
                now
            }
        };
        let permit = if args.max_outstanding == 0 {
            None
        } else {
            Some(window.clone().acquire_owned().await.expect("the window semaphore is never closed"))
        };
        // At max rate (closed loop) a record is sent when the window has
        // room: its latency counts from then, not from before the wait for
        // an earlier record's acknowledgement.
        let intended = if rate.is_none() { Instant::now() } else { intended };
        let value = record_value(clock.unix_ns(intended), args.record_size, &pool, (sequence as usize) * 61);
        let record = Record { value: Some(value), ..Default::default() };
        sequence += 1;
        match producer.send(&args.topic, record).await {
            Ok(future) => {
                shared.outstanding.fetch_add(1, Ordering::Relaxed);
                if deliveries.send(Delivery { intended, future, _permit: permit }).await.is_err() {
                    break;
                }
            }
            Err(error) => shared.recorder().fail(explain(error)),
        }
    }
    producer.flush().await;
}

/// Waits for the acknowledgements of one producer and records them.
async fn collect_acks(mut deliveries: mpsc::Receiver<Delivery>, shared: Arc<Shared>) {
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    loop {
        tokio::select! {
            delivery = deliveries.recv(), if open => match delivery {
                Some(Delivery { intended, future, _permit }) => {
                    pending.push(async move {
                        let outcome = future.await;
                        drop(_permit);
                        (intended, outcome)
                    });
                }
                None => open = false,
            },
            Some((intended, outcome)) = pending.next(), if !pending.is_empty() => {
                let now = Instant::now();
                shared.outstanding.fetch_sub(1, Ordering::Relaxed);
                let clock = shared.clock;
                let mut recorder = shared.recorder();
                match outcome {
                    Ok(_) => {
                        shared.acked_total.fetch_add(1, Ordering::Relaxed);
                        let latency_us = now.saturating_duration_since(intended).as_micros() as u64;
                        if clock.in_window(intended) {
                            recorder.produce_latency.saturating_record(latency_us.max(1));
                        }
                        if clock.in_window(now) {
                            recorder.produced_in_window += 1;
                        }
                        recorder.interval_latency.saturating_record(latency_us.max(1));
                        recorder.interval_produced += 1;
                    }
                    Err(error) => recorder.fail(explain(error)),
                }
            }
            else => return,
        }
    }
}

/// One consumer: reads its share of the partitions from their end and
/// records end-to-end latency.
async fn consume_loop(
    mut consumer: Consumer,
    shared: Arc<Shared>,
    drain_deadline: Instant,
) -> Result<(), strata_client::ClientError> {
    let clock = shared.clock;
    let producers_done = shared.producers_done.subscribe();
    loop {
        if Instant::now() >= drain_deadline {
            return Ok(());
        }
        if *producers_done.borrow()
            && shared.consumed_total.load(Ordering::Relaxed) >= shared.acked_total.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        let records = consumer.poll(POLL_WAIT).await?;
        if records.is_empty() {
            continue;
        }
        let now = Instant::now();
        let now_ns = clock.now_unix_ns();
        shared.consumed_total.fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut recorder = shared.recorder();
        for record in &records {
            let Some(stamp) = record.value.as_deref().and_then(stamp_of) else { continue };
            if clock.unix_ns_in_window(stamp) {
                let latency_us = now_ns.saturating_sub(stamp) / 1000;
                recorder.e2e_latency.saturating_record(latency_us.max(1));
            }
            if clock.in_window(now) {
                recorder.consumed_in_window += 1;
            }
            recorder.interval_consumed += 1;
        }
    }
}

/// Prints one progress line per second on stderr until `stop` fires.
async fn progress(
    shared: Arc<Shared>,
    record_size: usize,
    consumers: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval_at((Instant::now() + PROGRESS_EVERY).into(), PROGRESS_EVERY);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        let seconds = now.duration_since(last).as_secs_f64().max(1e-9);
        last = now;
        let (produced, consumed, p99_ms, errors) = {
            let mut recorder = shared.recorder();
            let p99 = recorder.interval_latency.value_at_quantile(0.99) as f64 / 1000.0;
            let out = (recorder.interval_produced, recorder.interval_consumed, p99, recorder.errors);
            recorder.interval_latency.reset();
            recorder.interval_produced = 0;
            recorder.interval_consumed = 0;
            out
        };
        let clock = shared.clock;
        let phase = if now < clock.window_start {
            "warm-up"
        } else if now < clock.window_end {
            "measure"
        } else {
            "drain"
        };
        let mut line = format!(
            "[{:6.1}s {phase}] produced {:>9.0} rec/s {:>8.2} MB/s  p99 {:>8.2} ms  outstanding {:>7}  errors {errors}",
            now.duration_since(clock.start).as_secs_f64(),
            produced as f64 / seconds,
            (produced as f64 * record_size as f64) / seconds / 1e6,
            p99_ms,
            shared.outstanding.load(Ordering::Relaxed),
        );
        if consumers {
            line.push_str(&format!("  consumed {:>9.0} rec/s", consumed as f64 / seconds));
        }
        let mut err = std::io::stderr().lock();
        let _ = if tty { write!(err, "\r\x1b[K{line}") } else { writeln!(err, "{line}") };
        let _ = err.flush();
    }
    if tty {
        let _ = writeln!(std::io::stderr());
    }
}

/// Whether the producers are idempotent: by default, when acks=all allows it.
fn idempotent(args: &BenchArgs) -> bool {
    !args.no_idempotence && args.acks == AcksArg::All
}

fn acks_name(acks: AcksArg) -> &'static str {
    match acks {
        AcksArg::All => "all",
        AcksArg::Leader => "leader",
        AcksArg::NoAcks => "none",
    }
}

pub async fn run(args: BenchArgs, bootstrap: &[String], json: bool) -> anyhow::Result<ExitCode> {
    check_args(&args)?;
    let admin = Client::connect(bootstrap).map_err(explain)?;
    let topic = ensure_topic(&admin, &args).await?;
    let settings = Settings {
        topic: topic.name.clone(),
        partitions: topic.partition_count(),
        replication_factor: topic.replication_factor(),
        record_size_bytes: args.record_size,
        producers: args.producers,
        consumers: args.consumers,
        rate_records_per_sec: args.rate,
        max_outstanding: args.max_outstanding,
        acks: acks_name(args.acks),
        idempotence: idempotent(&args),
        linger_ms: args.linger.as_secs_f64() * 1000.0,
        batch_bytes: args.batch_bytes,
        max_in_flight: args.max_in_flight,
        warmup_secs: args.warmup.as_secs_f64(),
        duration_secs: args.duration.as_secs_f64(),
    };
    if !json {
        eprintln!(
            "strata bench: topic {} ({} partitions, RF {}), {} producer(s), {} consumer(s), {}-byte records, {}, acks {}, linger {} ms, {} s after {} s warm-up",
            settings.topic,
            settings.partitions,
            settings.replication_factor,
            settings.producers,
            settings.consumers,
            settings.record_size_bytes,
            if args.rate == 0 { "max rate".to_string() } else { format!("{} records/s offered", args.rate) },
            settings.acks,
            settings.linger_ms,
            settings.duration_secs,
            settings.warmup_secs,
        );
    }

    // Consumers start at the end of each partition before any record is sent.
    let mut consumers = Vec::new();
    for index in 0..args.consumers {
        let client = Client::connect(bootstrap).map_err(explain)?;
        let mut consumer = Consumer::with_config(client, ConsumerConfig::default());
        for partition in (0..topic.partition_count()).filter(|p| p % args.consumers == index) {
            consumer.assign(&topic.name, partition, StartOffset::Latest).await.map_err(explain)?;
        }
        consumers.push(consumer);
    }

    let (producers_done, _) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        clock: Clock::new(args.warmup, args.duration),
        recorder: Mutex::new(Recorder::new()),
        acked_total: AtomicU64::new(0),
        consumed_total: AtomicU64::new(0),
        outstanding: AtomicU64::new(0),
        producers_done,
    });
    let drain_deadline = shared.clock.window_end + args.drain_timeout;
    let args = Arc::new(args);
    let (stop_progress, progress_stop) = tokio::sync::watch::channel(false);
    let progress_task = tokio::spawn(progress(shared.clone(), args.record_size, args.consumers > 0, progress_stop));

    let consumer_tasks: Vec<_> = consumers
        .into_iter()
        .map(|consumer| tokio::spawn(consume_loop(consumer, shared.clone(), drain_deadline)))
        .collect();
    let mut producer_tasks = Vec::new();
    for index in 0..args.producers {
        let client = Client::connect(bootstrap).map_err(explain)?;
        let config = ProducerConfig {
            linger: args.linger,
            max_batch_bytes: args.batch_bytes,
            max_in_flight: args.max_in_flight,
            acks: match args.acks {
                AcksArg::All => Acks::All,
                AcksArg::Leader => Acks::Leader,
                AcksArg::NoAcks => Acks::None,
            },
            idempotence: idempotent(&args),
            ..Default::default()
        };
        let producer = Producer::new(client, config).map_err(explain)?;
        let (tx, rx) = mpsc::channel(DELIVERIES_AHEAD);
        let sender = tokio::spawn(produce_loop(index, producer, args.clone(), shared.clone(), tx, drain_deadline));
        let collector = tokio::spawn(collect_acks(rx, shared.clone()));
        producer_tasks.push((sender, collector));
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let producers = async {
        // Bounded by the drain deadline: a dead cluster must not keep the
        // bench waiting for the producers' own delivery timeout.
        for (sender, collector) in producer_tasks {
            let _ = tokio::time::timeout_at(drain_deadline.into(), sender).await;
            let _ = tokio::time::timeout_at(drain_deadline.into(), collector).await;
        }
    };
    let interrupted = tokio::select! {
        _ = producers => false,
        _ = &mut ctrl_c => true,
    };
    let _ = shared.producers_done.send(true);
    let mut consume_error = None;
    if !interrupted {
        for task in consumer_tasks {
            if let Ok(Err(error)) = task.await {
                consume_error.get_or_insert(error);
            }
        }
    }
    let _ = stop_progress.send(true);
    let _ = progress_task.await;
    anyhow::ensure!(!interrupted, "interrupted");

    let summary = {
        let mut recorder = shared.recorder();
        if let Some(error) = consume_error {
            recorder.fail(explain(error));
        }
        // Records still outstanding at the drain deadline never completed.
        let lost = shared.outstanding.load(Ordering::Relaxed);
        if lost > 0 {
            recorder.errors += lost;
            recorder.first_error.get_or_insert_with(|| format!("{lost} records were not acknowledged in time"));
        }
        let seconds = args.duration.as_secs_f64();
        let throughput = |records: u64, latency: &Histogram<u64>| {
            let bytes = records * args.record_size as u64;
            Throughput {
                records,
                bytes,
                records_per_sec: records as f64 / seconds,
                mb_per_sec: bytes as f64 / seconds / 1e6,
                latency_ms: Percentiles::of(latency),
            }
        };
        Summary {
            settings,
            produce: throughput(recorder.produced_in_window, &recorder.produce_latency),
            consume: (args.consumers > 0).then(|| throughput(recorder.consumed_in_window, &recorder.e2e_latency)),
            errors: recorder.errors,
            unsent: recorder.unsent,
            first_error: recorder.first_error.clone(),
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary).expect("plain data serialises"));
    } else {
        print_summary(&summary);
    }
    Ok(if summary.errors == 0 && summary.unsent == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_summary(summary: &Summary) {
    let line = |name: &str, t: &Throughput| {
        println!(
            "{name}: {} records in {} s: {:.1} records/s, {:.2} MB/s",
            t.records, summary.settings.duration_secs, t.records_per_sec, t.mb_per_sec
        );
        let l = &t.latency_ms;
        println!(
            "  latency ms: p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3}, {} samples)",
            l.p50, l.p95, l.p99, l.p999, l.max, l.mean, l.count
        );
    };
    line("produce (send to ack)", &summary.produce);
    if let Some(consume) = &summary.consume {
        line("consume (send to receive)", consume);
    }
    println!("errors: {}, unsent: {}", summary.errors, summary.unsent);
    if let Some(error) = &summary.first_error {
        println!("first error: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_their_send_time_and_random_filler() {
        let pool = filler_pool(1);
        let value = record_value(123_456_789, 1024, &pool, 65_000);
        assert_eq!(value.len(), 1024);
        assert_eq!(stamp_of(&value), Some(123_456_789));
        // Wrapping around the end of the pool keeps the size exact.
        assert_eq!(record_value(1, 100_000, &pool, 3).len(), 100_000);
        assert_eq!(stamp_of(b"short"), None);
        // Filler of two producers differs, and is not one repeated byte.
        assert_ne!(filler_pool(1)[..64], filler_pool(2)[..64]);
        assert!(pool.iter().any(|b| *b != pool[0]));
    }

    #[test]
    fn open_loop_schedule_spaces_records_evenly() {
        let start = Instant::now();
        assert_eq!(intended_at(start, 0, 1000.0), start);
        assert_eq!(intended_at(start, 1500, 1000.0), start + Duration::from_millis(1500));
    }

    #[test]
    fn percentiles_are_ordered_and_in_milliseconds() {
        let mut histogram = new_histogram();
        for us in 1..=10_000u64 {
            histogram.record(us).unwrap();
        }
        let p = Percentiles::of(&histogram);
        assert_eq!(p.count, 10_000);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!(p.p50 <= p.p95 && p.p95 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
        assert!((p.max - 10.0).abs() < 0.01);
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn the_window_follows_the_warmup() {
        let clock = Clock::new(Duration::from_secs(1), Duration::from_secs(2));
        assert!(!clock.in_window(clock.start));
        assert!(clock.in_window(clock.start + Duration::from_millis(1500)));
        assert!(!clock.in_window(clock.window_end));
        assert!(clock.unix_ns_in_window(clock.unix_ns(clock.window_start)));
        assert!(!clock.unix_ns_in_window(clock.start_unix_ns));
    }
}
