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
//! The schedule, stamping and latency summary are `strata-load`'s, which
//! the benchmark suite (`scripts/bench`) uses too; this file holds the
//! flags, the Strata sink and consumers, and what is printed.
//!
//! Exits 0 only when no record failed.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use futures::future::{FutureExt, Map};
use serde::Serialize;
use strata_client::{
    Acks, Client, ClientError, Consumer, ConsumerConfig, DeliveryFuture, GroupConsumer, GroupConsumerConfig,
    GroupState, OffsetReset, OffsetSpec, Producer, ProducerConfig, Record, RecordMetadata, StartOffset, TopicMetadata,
};
use strata_core::limits;
use strata_load::{stamp, Load, Meter, Percentiles, Rates, Schedule, Stamp};

use crate::produce::AcksArg;
use crate::topic::explain;

/// How long one consumer poll waits; bounds how late the end of the run is noticed.
const POLL_WAIT: Duration = Duration::from_millis(200);

/// How often the progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How long the topic may take to have a serving leader on every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a `--group` may take to give every partition to a member: a
/// few heartbeat intervals normally; a previous run's members that did not
/// leave hold partitions until their session times out (45 s by default).
const GROUP_READY_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// Make the consumers members of this consumer group: the group assigns
    /// the partitions (they start at the end of those without a committed
    /// offset) and they commit what they read. The load starts once the
    /// group is stable with every partition owned.
    #[arg(long, value_name = "GROUP", requires = "consumers")]
    pub group: Option<String>,
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
    /// The consumer group the consumers are members of, if any.
    group: Option<String>,
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

/// What the consumers and the end of the run share.
struct Readers {
    /// Records the consumers have read, warm-up included: they stop once
    /// they have read every record acknowledged after the producers finished.
    consumed_total: AtomicU64,
    producers_done: tokio::sync::watch::Sender<bool>,
}

/// A producer of the bench topic as the load generator's sink.
struct StrataSink {
    producer: Producer,
    topic: String,
}

/// A delivery settled: acknowledged, or failed with the CLI's explanation.
fn settled(delivery: Result<RecordMetadata, ClientError>) -> anyhow::Result<()> {
    delivery.map(drop).map_err(explain)
}

impl strata_load::Sink for StrataSink {
    type Ack = Map<DeliveryFuture, fn(Result<RecordMetadata, ClientError>) -> anyhow::Result<()>>;
    type Error = anyhow::Error;

    async fn send(&self, _id: u64, value: Bytes) -> anyhow::Result<Self::Ack> {
        let record = Record { value: Some(value), ..Default::default() };
        let delivery = self.producer.send(&self.topic, record).await.map_err(explain)?;
        Ok(delivery.map(settled as fn(_) -> _))
    }

    async fn flush(&self) {
        self.producer.flush().await;
    }
}

fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.producers >= 1, "--producers must be at least 1");
    anyhow::ensure!(
        args.record_size >= Stamp::Time.bytes(),
        "--record-size must be at least {} bytes: each value starts with its send time",
        Stamp::Time.bytes()
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

/// A bench consumer: one with partitions of its own, or a group member.
enum Reader {
    Assigned(Consumer),
    Member(GroupConsumer),
}

impl Reader {
    async fn poll(&mut self) -> Result<Vec<strata_client::ConsumedRecord>, ClientError> {
        match self {
            Reader::Assigned(consumer) => consumer.poll(POLL_WAIT).await,
            Reader::Member(consumer) => consumer.poll(POLL_WAIT).await,
        }
    }

    /// A member leaves its group (committing what it read).
    async fn close(self) -> Result<(), ClientError> {
        match self {
            Reader::Assigned(_) => Ok(()),
            Reader::Member(consumer) => consumer.close().await,
        }
    }
}

/// Group members, polled until the group is stable with every partition
/// owned by a member that started reading it. Until then no record is
/// sent, so members starting at the end miss nothing.
async fn join_group(
    bootstrap: &[String],
    admin: &Client,
    group: &str,
    topic: &TopicMetadata,
    members: u32,
) -> anyhow::Result<Vec<Reader>> {
    let mut consumers = Vec::new();
    for index in 0..members {
        let client = Client::connect(bootstrap).map_err(explain)?;
        let config = GroupConsumerConfig {
            client_id: format!("strata-bench-{index}"),
            auto_offset_reset: OffsetReset::Latest,
            ..GroupConsumerConfig::default()
        };
        let mut consumer = GroupConsumer::new(client, group, config);
        consumer.subscribe(&[topic.name.as_str()]).map_err(explain)?;
        consumers.push(consumer);
    }
    let deadline = Instant::now() + GROUP_READY_TIMEOUT;
    loop {
        for consumer in &mut consumers {
            // Only following the group here: no record is sent yet.
            consumer.poll(Duration::from_millis(50)).await.map_err(explain)?;
        }
        let started: usize = consumers.iter().map(|c| c.assignment().values().map(|p| p.len()).sum::<usize>()).sum();
        if started == topic.partition_count() as usize {
            let group = admin.describe_group(group).await.map_err(explain)?;
            if group.state == GroupState::Stable {
                return Ok(consumers.into_iter().map(Reader::Member).collect());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "group {group} did not assign every partition within {GROUP_READY_TIMEOUT:?}; see `strata group describe {group}`"
        );
    }
}

/// One consumer: reads its share of the partitions from their end and
/// records end-to-end latency.
async fn consume_loop(
    mut consumer: Reader,
    meter: Arc<Meter>,
    readers: Arc<Readers>,
    drain_deadline: Instant,
) -> Result<(), strata_client::ClientError> {
    let producers_done = readers.producers_done.subscribe();
    loop {
        if Instant::now() >= drain_deadline {
            return consumer.close().await;
        }
        if *producers_done.borrow() && readers.consumed_total.load(Ordering::Relaxed) >= meter.acked_total() {
            return consumer.close().await;
        }
        let records = consumer.poll().await?;
        if records.is_empty() {
            continue;
        }
        readers.consumed_total.fetch_add(records.len() as u64, Ordering::Relaxed);
        meter.received(records.iter().filter_map(|record| record.value.as_deref().and_then(stamp::sent_at)));
    }
}

/// Prints one progress line per second on stderr until `stop` fires.
async fn progress(
    meter: Arc<Meter>,
    record_size: usize,
    consumers: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval_at((Instant::now() + PROGRESS_EVERY).into(), PROGRESS_EVERY);
    let mut last = Instant::now();
    let clock = meter.clock();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = Instant::now();
        let seconds = now.duration_since(last).as_secs_f64().max(1e-9);
        last = now;
        let interval = meter.take_interval();
        let mut line = format!(
            "[{:6.1}s {}] produced {:>9.0} rec/s {:>8.2} MB/s  p99 {:>8.2} ms  outstanding {:>7}  errors {}",
            now.duration_since(clock.start).as_secs_f64(),
            clock.phase(now).name(),
            interval.acked as f64 / seconds,
            (interval.acked as f64 * record_size as f64) / seconds / 1e6,
            interval.p99_ms,
            meter.outstanding(),
            interval.errors,
        );
        if consumers {
            line.push_str(&format!("  consumed {:>9.0} rec/s", interval.consumed as f64 / seconds));
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
        group: args.group.clone(),
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
    if let Some(group) = &args.group {
        consumers = join_group(bootstrap, &admin, group, &topic, args.consumers).await?;
    } else {
        for index in 0..args.consumers {
            let client = Client::connect(bootstrap).map_err(explain)?;
            let mut consumer = Consumer::with_config(client, ConsumerConfig::default());
            for partition in (0..topic.partition_count()).filter(|p| p % args.consumers == index) {
                consumer.assign(&topic.name, partition, StartOffset::Latest).await.map_err(explain)?;
            }
            consumers.push(Reader::Assigned(consumer));
        }
    }

    let load = Load::start(Schedule {
        producers: args.producers as usize,
        rate_per_sec: (args.rate > 0).then_some(args.rate as f64),
        max_outstanding: (args.max_outstanding > 0).then_some(args.max_outstanding as usize),
        record_size: args.record_size,
        stamp: Stamp::Time,
        lead_in: Duration::ZERO,
        warmup: args.warmup,
        duration: args.duration,
        drain: args.drain_timeout,
        track_acks: false,
    });
    let meter = load.meter().clone();
    let drain_deadline = load.clock().drain_deadline;
    let (producers_done, _) = tokio::sync::watch::channel(false);
    let readers = Arc::new(Readers { consumed_total: AtomicU64::new(0), producers_done });
    let (stop_progress, progress_stop) = tokio::sync::watch::channel(false);
    let progress_task = tokio::spawn(progress(meter.clone(), args.record_size, args.consumers > 0, progress_stop));

    let consumer_tasks: Vec<_> = consumers
        .into_iter()
        .map(|consumer| tokio::spawn(consume_loop(consumer, meter.clone(), readers.clone(), drain_deadline)))
        .collect();
    let mut sinks = Vec::new();
    for _ in 0..args.producers {
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
        sinks.push(StrataSink { producer, topic: args.topic.clone() });
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let interrupted = tokio::select! {
        _ = load.run(sinks) => false,
        _ = &mut ctrl_c => true,
    };
    let _ = readers.producers_done.send(true);
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

    if let Some(error) = consume_error {
        meter.fail(explain(error));
    }
    // Records still outstanding at the drain deadline count as failed.
    let outcome = load.outcome();
    let seconds = args.duration.as_secs_f64();
    let throughput = |records: u64, latency_ms: Percentiles| {
        let Rates { records_per_sec, mb_per_sec } = Rates::of(records, args.record_size, seconds);
        Throughput { records, bytes: records * args.record_size as u64, records_per_sec, mb_per_sec, latency_ms }
    };
    let summary = Summary {
        settings,
        produce: throughput(outcome.acked_in_window, outcome.produce_latency_ms),
        consume: (args.consumers > 0).then(|| throughput(outcome.consumed_in_window, outcome.end_to_end_latency_ms)),
        errors: outcome.errors,
        unsent: outcome.unsent,
        first_error: outcome.first_error,
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
