//! T1, the transactional read-process-write workload (issue 15,
//! "Performance"), on Strata only (no peer has transactions):
//! - an input topic of 2 partitions is preloaded with 1 KiB records;
//! - the transactional loop: one `GroupConsumer` (auto-commit off, from the
//!   earliest offset) and one `TransactionalProducer`; per transaction it
//!   takes 100 input records, sends each one's key and value to a 2-partition
//!   output topic (partitions in turn, so every transaction writes both),
//!   stages the input offsets after the batch (`send_offsets_for`, which
//!   sends the buffered outputs at the same time and returns once both
//!   are stored) and commits;
//! - the baseline: the same loop over the same input records (a group of
//!   its own, from the earliest offset again) with an idempotent acks=all
//!   `Producer`, every delivery awaited, then `commit_offsets` of the same
//!   offsets (at-least-once);
//! - sequential single-record acks=all produces on a fresh topic, before
//!   the transactional loop and again after the baseline: the latency the
//!   commit is compared with.
//!
//! The order is fixed: preload, single produces, transactional loop,
//! baseline, single produces. Whatever background work the preload leaves
//! (flushes, compactions) falls on the transactional loop rather than on
//! the baseline it is compared with, and the commit is compared with the
//! lower of the two single-produce p50s: both choices make the targets
//! harder to meet, not easier.
//!
//! Each loop runs one batch at a time, for the mode's warm-up and window.
//! A batch counts for throughput when its commit is answered inside the
//! window, and for latency when it was begun inside it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_client::{
    Client, ConsumedRecord, GroupConsumer, GroupConsumerConfig, OffsetReset, Producer, ProducerConfig, Record,
    TransactionError, TransactionalConfig, TransactionalProducer,
};
use strata_load::summary::{latency_histogram, record_latency};
use strata_load::{Filler, Percentiles, Stamp};

use crate::args::Timing;
use crate::phases::resources;
use crate::procs;
use crate::report::{LoopResult, SingleProduceResult, TxnResult};
use crate::systems::{self, Cluster};

/// Input records per transaction, and topic sizes: issue 15's workload
/// (100 records per transaction, outputs to 2 partitions), over 2 input
/// partitions so that a transaction's offsets cover more than one.
pub const T1_RECORDS_PER_TXN: usize = 100;
pub const T1_INPUT_PARTITIONS: u32 = 2;
pub const T1_OUTPUT_PARTITIONS: u32 = 2;
/// 1 KiB records, as W1-W3 and G3.
pub const T1_RECORD_SIZE: usize = 1024;

const T1_INPUT: &str = "t1-in";
const T1_TRANSACTIONAL_ID: &str = "t1";

/// The preload is sized for loops of up to this many input records/s over
/// warm-up plus window. Each batch waits for two replicated writes one
/// after the other (its outputs, then its commit); one acks=all write took
/// 1.5-3 ms p50 in the runs so far, so a loop does at most about 100 / 3 ms
/// = 33,000 records/s here. The baseline reached 21,375 records/s in the
/// quick run of 2026-11-30 03:57 and used the 20,000/s preload up; 35,000
/// covers the bound, and the full mode's preload (805,000 records of
/// 1 KiB) stays under a gigabyte. Should a loop still run out, its window
/// ends there and the report says so: the rate stays right, over a shorter
/// window.
pub const T1_PRELOAD_RATE: f64 = 35_000.0;
/// Preload records awaited at most at once: enough to keep the producer's
/// batches full, bounded so the futures do not pile up.
const T1_PRELOAD_OUTSTANDING: usize = 8192;
/// How long the preload may take (the full mode's 805,000 records at a
/// few thousand records/s, with room; it took 1.1 s for 120,000 here).
const T1_PRELOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Seed of the preload's random values (G3's producers use 1-4).
const T1_FILLER_SEED: u64 = 15;
/// Distance in the filler pool between consecutive values, as the load
/// generator does: a prime, so values start at ever different places.
const T1_FILLER_STRIDE: usize = 61;

/// How long a loop's consumer may take to join and return its first records.
const T1_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one poll waits for records while the buffer is short.
const T1_POLL_WAIT: Duration = Duration::from_millis(100);
/// A loop fails when no input record arrives for this long while the
/// input is not used up.
const T1_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Sequential single-record produces measured: 200 in quick mode, 500
/// otherwise (a p50 of a few hundred samples moves by well under the
/// run-to-run noise), after T1_SINGLE_UNMEASURED that open connections and
/// get the producer's id.
fn single_produces(quick: bool) -> usize {
    if quick {
        200
    } else {
        500
    }
}
const T1_SINGLE_UNMEASURED: usize = 20;

/// Records to preload for a mode: T1_PRELOAD_RATE over warm-up plus
/// window, rounded up to whole batches in every input partition.
pub fn input_records(timing: &Timing) -> u64 {
    let wanted = (T1_PRELOAD_RATE * (timing.warmup_secs + timing.duration_secs)).ceil() as u64;
    let unit = (T1_RECORDS_PER_TXN as u64) * u64::from(T1_INPUT_PARTITIONS);
    wanted.div_ceil(unit) * unit
}

/// How T1's loop writes its outputs and commits what it consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Transactional,
    /// The baseline: no transactions, at-least-once.
    Plain,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Transactional => "transactional",
            Mode::Plain => "baseline",
        }
    }

    fn output(self) -> &'static str {
        match self {
            Mode::Transactional => "t1-out-txn",
            Mode::Plain => "t1-out-plain",
        }
    }

    fn group(self) -> &'static str {
        match self {
            Mode::Transactional => "t1-txn",
            Mode::Plain => "t1-plain",
        }
    }

    pub fn how(self) -> &'static str {
        match self {
            Mode::Transactional => "TransactionalProducer: begin, 100 send_to, send_offsets_for (sends them), commit",
            Mode::Plain => "idempotent acks=all Producer: 100 send_to, flush, every delivery awaited; commit_offsets",
        }
    }
}

/// The output partition of a batch's `index`-th record: in turn, so every
/// batch writes to every output partition.
fn output_partition(index: usize) -> u32 {
    (index % T1_OUTPUT_PARTITIONS as usize) as u32
}

/// The "process" step: the output of an input record is its key and value.
fn output_record(input: &ConsumedRecord) -> Record {
    Record { key: input.key.clone(), value: input.value.clone(), ..Default::default() }
}

/// The loop's input: what the consumer returned and the loop did not take
/// yet, and per partition the offset after the last record taken.
struct Input {
    buffer: VecDeque<ConsumedRecord>,
    taken_up_to: BTreeMap<(String, u32), u64>,
    returned: u64,
    total: u64,
}

impl Input {
    fn new(total: u64) -> Input {
        Input { buffer: VecDeque::new(), taken_up_to: BTreeMap::new(), returned: 0, total }
    }

    /// Adds what a poll returned.
    fn extend(&mut self, records: Vec<ConsumedRecord>) {
        self.returned += records.len() as u64;
        self.buffer.extend(records);
    }

    /// Whether the consumer has returned every preloaded record.
    fn used_up(&self) -> bool {
        self.returned >= self.total
    }

    /// Polls until `want` records are buffered; false when the input is
    /// used up first.
    async fn fill(&mut self, consumer: &mut GroupConsumer, want: usize, stall: Duration) -> anyhow::Result<bool> {
        let mut progress = Instant::now();
        while self.buffer.len() < want {
            if self.used_up() {
                return Ok(false);
            }
            let records = consumer.poll(T1_POLL_WAIT).await.context("poll the input")?;
            if records.is_empty() {
                anyhow::ensure!(
                    progress.elapsed() < stall,
                    "no input record for {stall:?} ({} of {} returned)",
                    self.returned,
                    self.total
                );
                continue;
            }
            progress = Instant::now();
            self.extend(records);
        }
        Ok(true)
    }

    /// Takes the next `count` records (or fewer, if fewer are buffered).
    fn take(&mut self, count: usize) -> Vec<ConsumedRecord> {
        let batch: Vec<ConsumedRecord> = self.buffer.drain(..count.min(self.buffer.len())).collect();
        for record in &batch {
            let next = self.taken_up_to.entry((record.topic.clone(), record.partition)).or_default();
            *next = (*next).max(record.offset + 1);
        }
        batch
    }

    /// The offsets a commit after the records taken so far stores: for
    /// every input partition read from, the offset after its last record
    /// taken (as `send_offsets` would send for every assigned partition).
    fn offsets(&self) -> Vec<(String, u32, u64)> {
        self.taken_up_to.iter().map(|((topic, partition), offset)| (topic.clone(), *partition, *offset)).collect()
    }
}

/// When a batch's phases ended.
#[derive(Clone, Copy, Debug)]
struct Phases {
    began: Instant,
    flushed: Instant,
    done: Instant,
}

/// A loop's measured window.
#[derive(Clone, Copy, Debug)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }
}

/// What a loop measured.
struct Tally {
    window: Window,
    flush: Vec<Duration>,
    commit: Vec<Duration>,
    batch: Vec<Duration>,
    batches: u64,
    records: u64,
    /// Every record processed, warm-up included (server cost per record).
    records_total: u64,
    failures: u64,
    first_error: Option<String>,
    ran_out_at: Option<Instant>,
}

impl Tally {
    fn new(window: Window) -> Tally {
        Tally {
            window,
            flush: Vec::new(),
            commit: Vec::new(),
            batch: Vec::new(),
            batches: 0,
            records: 0,
            records_total: 0,
            failures: 0,
            first_error: None,
            ran_out_at: None,
        }
    }

    /// A batch of `records` input records committed.
    fn committed(&mut self, phases: Phases, records: usize) {
        self.records_total += records as u64;
        if self.window.contains(phases.began) {
            self.flush.push(phases.flushed - phases.began);
            self.commit.push(phases.done - phases.flushed);
            self.batch.push(phases.done - phases.began);
        }
        if self.window.contains(phases.done) {
            self.batches += 1;
            self.records += records as u64;
        }
    }

    fn failed(&mut self, error: impl std::fmt::Display) {
        self.failures += 1;
        self.first_error.get_or_insert_with(|| error.to_string());
    }

    /// The input was used up at `at`: the window ends there.
    fn ran_out(&mut self, at: Instant) {
        self.ran_out_at.get_or_insert(at);
    }

    /// The window the rates are over, in seconds (0 when the input ran out
    /// before it began).
    fn measured_secs(&self) -> f64 {
        let end = self.ran_out_at.map_or(self.window.end, |at| at.min(self.window.end));
        end.saturating_duration_since(self.window.measure_from).as_secs_f64()
    }

    fn result(&self, how: &str) -> LoopResult {
        let measured_secs = self.measured_secs();
        let per_sec = |count: u64| if measured_secs > 0.0 { count as f64 / measured_secs } else { 0.0 };
        LoopResult {
            how: how.to_string(),
            batches: self.batches,
            records: self.records,
            measured_secs,
            input_exhausted: self.ran_out_at.is_some_and(|at| at < self.window.end),
            batches_per_sec: per_sec(self.batches),
            records_per_sec: per_sec(self.records),
            flush_ms: percentiles(&self.flush),
            commit_ms: percentiles(&self.commit),
            batch_ms: percentiles(&self.batch),
            failures: self.failures,
            first_error: self.first_error.clone(),
            resources: Default::default(),
        }
    }
}

/// HdrHistogram percentiles of some durations, as the load generator reports them.
fn percentiles(samples: &[Duration]) -> Percentiles {
    let mut histogram = latency_histogram();
    for sample in samples {
        record_latency(&mut histogram, *sample);
    }
    Percentiles::of(&histogram)
}

/// T1 on a Strata cluster of its own. Never fails as a whole: a part that
/// could not be measured says why in `errors`.
pub async fn t1(cluster: &Cluster, timing: &Timing, quick: bool) -> TxnResult {
    let mut result = TxnResult {
        records_per_txn: T1_RECORDS_PER_TXN,
        input_partitions: T1_INPUT_PARTITIONS,
        output_partitions: T1_OUTPUT_PARTITIONS,
        record_size: T1_RECORD_SIZE,
        input_records: input_records(timing),
        warmup_secs: timing.warmup_secs,
        duration_secs: timing.duration_secs,
        ..Default::default()
    };
    match preload(cluster, result.input_records).await {
        Ok(secs) => {
            result.preload_secs = secs;
            eprintln!(
                "  T1: preloaded {} records in {secs:.1} s ({:.0}/s)",
                result.input_records,
                result.input_records as f64 / secs.max(1e-9)
            );
        }
        Err(error) => {
            result.errors.push(format!("T1 preload: {error:#}"));
            return result;
        }
    }
    let count = single_produces(quick);
    match single_produce(cluster, "t1-single-before", "before the loops", count).await {
        Ok(single) => result.single_produce.push(single),
        Err(error) => result.errors.push(format!("T1 single produce before the loops: {error:#}")),
    }
    for mode in [Mode::Transactional, Mode::Plain] {
        match run_loop(cluster, mode, timing, result.input_records).await {
            Ok(outcome) => {
                eprintln!(
                    "  T1 {:<13} {:>6.1} batches/s {:>8.0} rec/s  flush p50 {:.2} ms  commit p50 {:.2} ms p99 {:.2} ms  batch p50 {:.2} ms p99 {:.2} ms  run again {}{}",
                    mode.name(),
                    outcome.batches_per_sec,
                    outcome.records_per_sec,
                    outcome.flush_ms.p50,
                    outcome.commit_ms.p50,
                    outcome.commit_ms.p99,
                    outcome.batch_ms.p50,
                    outcome.batch_ms.p99,
                    outcome.failures,
                    if outcome.input_exhausted { " (input ran out)" } else { "" }
                );
                match mode {
                    Mode::Transactional => result.transactional = Some(outcome),
                    Mode::Plain => result.baseline = Some(outcome),
                }
            }
            Err(error) => result.errors.push(format!("T1 {}: {error:#}", mode.name())),
        }
    }
    match single_produce(cluster, "t1-single-after", "after the loops", count).await {
        Ok(single) => result.single_produce.push(single),
        Err(error) => result.errors.push(format!("T1 single produce after the loops: {error:#}")),
    }
    for single in &result.single_produce {
        eprintln!(
            "  T1 one acks=all produce {}: p50 {:.2} ms, p99 {:.2} ms ({} produces)",
            single.when, single.latency_ms.p50, single.latency_ms.p99, single.latency_ms.count
        );
    }
    result
}

/// Creates the input topic and writes `records` records of T1_RECORD_SIZE
/// to its partitions in turn; the seconds that took.
async fn preload(cluster: &Cluster, records: u64) -> anyhow::Result<f64> {
    systems::create_topic(cluster, T1_INPUT, T1_INPUT_PARTITIONS).await.context("create the input topic")?;
    let producer = Producer::new(Client::connect(&cluster.endpoints)?, ProducerConfig::default())?;
    let filler = Filler::new(T1_FILLER_SEED);
    let started = Instant::now();
    let write = async {
        let mut outstanding = VecDeque::new();
        for index in 0..records {
            let value = filler.value(Stamp::TimeAndId, 0, index, T1_RECORD_SIZE, index as usize * T1_FILLER_STRIDE);
            let partition = (index % u64::from(T1_INPUT_PARTITIONS)) as u32;
            let record = Record { value: Some(value), ..Default::default() };
            outstanding.push_back(producer.send_to(T1_INPUT, partition, record).await?);
            if outstanding.len() >= T1_PRELOAD_OUTSTANDING {
                outstanding.pop_front().expect("not empty").await?;
            }
        }
        producer.flush().await;
        for delivery in outstanding {
            delivery.await?;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(T1_PRELOAD_TIMEOUT, write)
        .await
        .map_err(|_| anyhow::anyhow!("not done within {T1_PRELOAD_TIMEOUT:?}"))??;
    let secs = started.elapsed().as_secs_f64();
    let client = Client::connect(&cluster.endpoints)?;
    let mut stored = 0;
    for partition in 0..T1_INPUT_PARTITIONS {
        let end = client.list_offsets(T1_INPUT, partition, strata_client::OffsetSpec::Latest).await?;
        stored += end.high_watermark;
    }
    anyhow::ensure!(stored == records, "the input holds {stored} records, not {records}");
    Ok(secs)
}

/// `count` sequential acks=all produces of one record each to a fresh
/// 1-partition topic, after T1_SINGLE_UNMEASURED unmeasured ones.
async fn single_produce(
    cluster: &Cluster,
    topic: &str,
    when: &str,
    count: usize,
) -> anyhow::Result<SingleProduceResult> {
    systems::create_topic(cluster, topic, 1).await.with_context(|| format!("create {topic}"))?;
    let config = ProducerConfig { linger: Duration::ZERO, ..Default::default() };
    let producer = Producer::new(Client::connect(&cluster.endpoints)?, config)?;
    let filler = Filler::new(T1_FILLER_SEED + 1);
    let mut samples = Vec::with_capacity(count);
    for index in 0..T1_SINGLE_UNMEASURED + count {
        let value = filler.value(Stamp::TimeAndId, 0, index as u64, T1_RECORD_SIZE, index * T1_FILLER_STRIDE);
        let sent = Instant::now();
        producer.send_to(topic, 0, Record { value: Some(value), ..Default::default() }).await?.await?;
        if index >= T1_SINGLE_UNMEASURED {
            samples.push(sent.elapsed());
        }
    }
    Ok(SingleProduceResult {
        when: when.to_string(),
        unmeasured: T1_SINGLE_UNMEASURED,
        record_size: T1_RECORD_SIZE,
        latency_ms: percentiles(&samples),
    })
}

/// What writes a loop's outputs.
enum Writer {
    Transactional(Box<TransactionalProducer>),
    Plain(Producer),
}

/// Why a batch failed: run it again, or stop the loop.
enum Failure {
    Again(anyhow::Error),
    Stop(anyhow::Error),
}

/// One transaction: the batch's outputs, the offsets after it, commit.
async fn transactional_batch(
    producer: &mut TransactionalProducer,
    consumer: &GroupConsumer,
    batch: &[ConsumedRecord],
    offsets: &[(String, u32, u64)],
) -> Result<Phases, TransactionError> {
    let began = Instant::now();
    producer.begin()?;
    for (index, record) in batch.iter().enumerate() {
        producer.send_to(Mode::Transactional.output(), output_partition(index), output_record(record))?;
    }
    // Stores the outputs and stages the offsets at once.
    producer.send_offsets_for(consumer.group_id(), &consumer.member_id(), consumer.member_epoch(), offsets).await?;
    let flushed = Instant::now();
    producer.commit().await?;
    Ok(Phases { began, flushed, done: Instant::now() })
}

/// One batch without a transaction: the outputs, every delivery, then the
/// offsets after it.
async fn plain_batch(
    producer: &Producer,
    consumer: &mut GroupConsumer,
    batch: &[ConsumedRecord],
    offsets: &[(String, u32, u64)],
) -> anyhow::Result<Phases> {
    let began = Instant::now();
    let mut deliveries = Vec::with_capacity(batch.len());
    for (index, record) in batch.iter().enumerate() {
        deliveries.push(producer.send_to(Mode::Plain.output(), output_partition(index), output_record(record)).await?);
    }
    producer.flush().await;
    for delivery in deliveries {
        delivery.await.context("deliver an output")?;
    }
    let flushed = Instant::now();
    consumer.commit_offsets(offsets).await.context("commit the offsets")?;
    Ok(Phases { began, flushed, done: Instant::now() })
}

impl Writer {
    async fn run(
        &mut self,
        consumer: &mut GroupConsumer,
        batch: &[ConsumedRecord],
        offsets: &[(String, u32, u64)],
    ) -> Result<Phases, Failure> {
        match self {
            Writer::Transactional(producer) => match transactional_batch(producer, consumer, batch, offsets).await {
                Ok(phases) => Ok(phases),
                Err(error) if error.is_fatal() => Err(Failure::Stop(error.into())),
                Err(error) => match producer.abort().await {
                    Ok(()) => Err(Failure::Again(error.into())),
                    Err(abort) if abort.is_fatal() => Err(Failure::Stop(anyhow::Error::from(abort).context("abort"))),
                    // The next begin fails while this transaction is open,
                    // and is aborted again.
                    Err(abort) => Err(Failure::Again(anyhow::anyhow!("{error}; then the abort failed: {abort}"))),
                },
            },
            Writer::Plain(producer) => plain_batch(producer, consumer, batch, offsets).await.map_err(Failure::Again),
        }
    }
}

/// One loop of T1 over the preloaded input, from its earliest offset.
async fn run_loop(cluster: &Cluster, mode: Mode, timing: &Timing, input_records: u64) -> anyhow::Result<LoopResult> {
    systems::create_topic(cluster, mode.output(), T1_OUTPUT_PARTITIONS).await.context("create the output topic")?;
    let client = Client::connect(&cluster.endpoints)?;
    let mut writer = match mode {
        Mode::Transactional => {
            let config = TransactionalConfig::new(T1_TRANSACTIONAL_ID);
            Writer::Transactional(Box::new(TransactionalProducer::init(client.clone(), config).await?))
        }
        Mode::Plain => {
            let config = ProducerConfig { acks: strata_client::Acks::All, idempotence: true, ..Default::default() };
            Writer::Plain(Producer::new(client.clone(), config)?)
        }
    };
    let config =
        GroupConsumerConfig { auto_commit: false, auto_offset_reset: OffsetReset::Earliest, ..Default::default() };
    let mut consumer = GroupConsumer::new(client, mode.group(), config);
    consumer.subscribe(&[T1_INPUT])?;
    let mut input = Input::new(input_records);
    let ready = input.fill(&mut consumer, 1, T1_READY_TIMEOUT).await.context("the consumer's first records")?;
    anyhow::ensure!(ready, "the input is empty");

    let measure_from = Instant::now() + Duration::from_secs_f64(timing.warmup_secs);
    let window = Window { measure_from, end: measure_from + Duration::from_secs_f64(timing.duration_secs) };
    let mut tally = Tally::new(window);
    let pids = cluster.pids();
    let before: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();
    'batches: while Instant::now() < window.end {
        if !input.fill(&mut consumer, T1_RECORDS_PER_TXN, T1_STALL_TIMEOUT).await? {
            tally.ran_out(Instant::now());
            break;
        }
        let batch = input.take(T1_RECORDS_PER_TXN);
        let offsets = input.offsets();
        // A failed batch is run again until it commits (the window bounds it).
        loop {
            match writer.run(&mut consumer, &batch, &offsets).await {
                Ok(phases) => {
                    tally.committed(phases, batch.len());
                    break;
                }
                Err(Failure::Stop(error)) => return Err(error),
                Err(Failure::Again(error)) => {
                    tally.failed(format!("{error:#}"));
                    if Instant::now() >= window.end {
                        break 'batches;
                    }
                }
            }
        }
    }
    let after: Vec<procs::Usage> = pids.iter().map(|pid| procs::usage(*pid)).collect();
    anyhow::ensure!(
        tally.measured_secs() > 0.0,
        "the input ({input_records} records) ran out during the warm-up: raise T1_PRELOAD_RATE"
    );
    if let Err(error) = consumer.close().await {
        tally.failed(format!("close the consumer: {error}"));
    }
    let mut result = tally.result(mode.how());
    result.resources = resources(&before, &after, tally.records_total, T1_RECORD_SIZE);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: u32, offset: u64) -> ConsumedRecord {
        ConsumedRecord {
            topic: T1_INPUT.to_string(),
            partition,
            offset,
            timestamp_ms: 0,
            key: None,
            value: Some(vec![1u8; 4].into()),
            headers: vec![],
        }
    }

    #[test]
    fn the_preload_covers_the_window_in_whole_batches() {
        let quick = input_records(&Timing::of(true));
        let full = input_records(&Timing::of(false));
        // 35,000 records/s over 1 s + 5 s and 3 s + 20 s.
        assert_eq!((quick, full), (210_000, 805_000));
        let unit = T1_RECORDS_PER_TXN as u64 * u64::from(T1_INPUT_PARTITIONS);
        let odd = Timing { warmup_secs: 0.0, duration_secs: 0.005, drain_secs: 0.0 };
        assert_eq!(input_records(&odd), unit);
    }

    #[test]
    fn every_batch_writes_every_output_partition() {
        let partitions: std::collections::BTreeSet<u32> = (0..T1_RECORDS_PER_TXN).map(output_partition).collect();
        assert_eq!(partitions.len(), T1_OUTPUT_PARTITIONS as usize);
        let out = output_record(&record(1, 7));
        assert_eq!(out.value.as_deref(), Some(&[1u8; 4][..]));
    }

    #[test]
    fn offsets_are_after_the_last_record_taken_of_each_partition() {
        let mut input = Input::new(6);
        input.extend(vec![record(0, 0), record(0, 1), record(1, 0), record(0, 2)]);
        assert!(!input.used_up());
        let batch = input.take(3);
        assert_eq!(batch.len(), 3);
        let topic = T1_INPUT.to_string();
        assert_eq!(input.offsets(), vec![(topic.clone(), 0, 2), (topic.clone(), 1, 1)]);
        // Records returned but not taken are not committed.
        assert_eq!(input.take(5).len(), 1);
        assert_eq!(input.offsets(), vec![(topic.clone(), 0, 3), (topic, 1, 1)]);
        input.extend(vec![record(1, 1), record(1, 2)]);
        assert!(input.used_up());
    }

    fn phases(start: Instant, began_ms: u64, flush_ms: u64, commit_ms: u64) -> Phases {
        let began = start + Duration::from_millis(began_ms);
        let flushed = began + Duration::from_millis(flush_ms);
        Phases { began, flushed, done: flushed + Duration::from_millis(commit_ms) }
    }

    #[test]
    fn batches_count_for_rates_by_their_commit_and_for_latency_by_their_begin() {
        let start = Instant::now();
        let window = Window { measure_from: start + Duration::from_secs(1), end: start + Duration::from_secs(3) };
        let mut tally = Tally::new(window);
        // Begun in the warm-up, committed inside: counted, not timed.
        tally.committed(phases(start, 985, 5, 10), 100);
        tally.committed(phases(start, 990, 5, 10), 100);
        // Inside.
        tally.committed(phases(start, 1500, 4, 6), 100);
        tally.committed(phases(start, 2000, 8, 12), 100);
        // Begun inside, committed after the end: timed, not counted.
        tally.committed(phases(start, 2995, 4, 6), 100);
        tally.failed("aborted");
        tally.failed("aborted again");
        let result = tally.result(Mode::Transactional.how());
        assert_eq!((result.batches, result.records, tally.records_total), (4, 400, 500));
        assert_eq!(result.measured_secs, 2.0);
        assert!(!result.input_exhausted);
        assert_eq!((result.batches_per_sec, result.records_per_sec), (2.0, 200.0));
        // HdrHistogram keeps 3 significant digits: within 0.1 %.
        let near = |a: f64, b: f64| (a - b).abs() <= b * 1e-3;
        assert_eq!(result.commit_ms.count, 3);
        assert!(near(result.commit_ms.p50, 6.0) && near(result.commit_ms.max, 12.0), "{:?}", result.commit_ms);
        assert!(near(result.flush_ms.p50, 4.0) && near(result.batch_ms.max, 20.0), "{result:?}");
        assert_eq!((result.failures, result.first_error.as_deref()), (2, Some("aborted")));
    }

    #[test]
    fn a_loop_that_runs_out_of_input_is_measured_up_to_then() {
        let start = Instant::now();
        let window = Window { measure_from: start + Duration::from_secs(1), end: start + Duration::from_secs(5) };
        let mut tally = Tally::new(window);
        tally.committed(phases(start, 1200, 10, 10), 100);
        tally.ran_out(start + Duration::from_millis(1500));
        let result = tally.result("x");
        assert!(result.input_exhausted);
        assert_eq!(result.measured_secs, 0.5);
        assert_eq!(result.records_per_sec, 200.0);
        // Out during the warm-up: nothing measured.
        let mut early = Tally::new(window);
        early.ran_out(start);
        assert_eq!(early.measured_secs(), 0.0);
        assert_eq!(early.result("x").records_per_sec, 0.0);
    }
}
