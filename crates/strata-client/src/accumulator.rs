//! The producer's batching and sending decisions as plain data: no clock, no
//! I/O, no async. The producer's task feeds it records, completions and the
//! current instant, and sends what [`Accumulator::drain_ready`] hands out.
//!
//! Batching: records of one partition join the open batch until it would
//! exceed `max_batch_bytes` (computed exactly with
//! `strata_record::encoded_record_len`) or hold `MAX_RECORDS_PER_BATCH`
//! records; a full batch is ready at once, an open one when `linger` has
//! passed since its first record, or at once while a flush is pending.
//!
//! Ordering and retries (per partition):
//! - Batches are sent in creation order, at most `max_in_flight` at a time.
//! - When a batch fails with a retryable error it goes back to its place in
//!   the queue (by sequence number) and the partition enters *retry mode*:
//!   nothing more is sent until every in-flight batch has answered, then
//!   queued batches are sent one at a time, oldest first, after the back-off.
//!   Pipelining resumes once no retried batch is left in the queue. So a
//!   retried batch is never overtaken by a batch sent after its failure, and
//!   retried batches keep their relative order.
//! - A later batch that was already in flight when an earlier one failed
//!   could be stored first; the idempotent producer prevents that: the
//!   server refuses a batch whose sequence does not follow the last stored
//!   one (OUT_OF_ORDER_SEQUENCE), and the producer requeues it behind its
//!   predecessor. Without idempotence, order is strict only with
//!   `max_in_flight = 1`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_core::{limits, RetryClass};
use strata_record::{encoded_record_len, Record, BATCH_HEADER_LEN};

use crate::ClientError;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

/// A batch waiting to be sent, in flight, or waiting for a retry.
#[derive(Debug)]
pub struct PendingBatch<C> {
    pub tp: TopicPartition,
    /// Creation order within the partition; a retried batch returns to its
    /// place in the queue by it.
    pub sequence: u64,
    /// The records, until the sender encodes them (then it may clear them).
    pub records: Vec<Record>,
    /// One per record, in record order.
    pub completions: Vec<C>,
    /// Exact encoded size of the batch with its records.
    pub size_bytes: usize,
    /// When the first record arrived: linger and delivery timeout count from here.
    pub created_at: Instant,
    /// No more records join a closed batch.
    pub closed: bool,
    /// How many times the batch was handed out for sending.
    pub attempts: u32,
    /// The encoded batch, kept across retries so a retry resends the same bytes.
    pub encoded: Option<Bytes>,
    /// Why the last attempt failed.
    pub last_error: Option<ClientError>,
    /// Producer id, epoch and base sequence given at the first send (idempotent
    /// producers only); a retry keeps them so the server recognises it.
    pub stamp: Option<strata_record::ProducerFields>,
    /// At its last send an earlier batch of the partition was unfinished,
    /// so the partition may have seen this one first.
    pub sent_behind: bool,
}

impl<C> PendingBatch<C> {
    fn new(tp: TopicPartition, sequence: u64, now: Instant) -> Self {
        PendingBatch {
            tp,
            sequence,
            records: Vec::new(),
            completions: Vec::new(),
            size_bytes: BATCH_HEADER_LEN,
            created_at: now,
            closed: false,
            attempts: 0,
            encoded: None,
            last_error: None,
            stamp: None,
            sent_behind: false,
        }
    }

    /// Number of records (the records themselves may have been cleared).
    pub fn len(&self) -> usize {
        self.completions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.completions.is_empty()
    }

    /// Encoded size `record` would add as the next record of this batch.
    /// The batch's base timestamp is its first record's (as `encode_batch`
    /// does), so this is exact.
    fn record_len(&self, record: &Record) -> usize {
        let timestamp_delta = match self.records.first() {
            Some(first) => record.timestamp_ms.saturating_sub(first.timestamp_ms),
            None => 0,
        };
        encoded_record_len(record, self.records.len() as i32, timestamp_delta)
    }

    fn push(&mut self, record: Record, completion: C, record_len: usize) {
        self.records.push(record);
        self.completions.push(completion);
        self.size_bytes += record_len;
    }
}

struct PartitionState<C> {
    /// Ordered by sequence; only the last may be open.
    queue: VecDeque<PendingBatch<C>>,
    in_flight: usize,
    /// Sequences of batches handed out and not finished (in flight or
    /// waiting for a retry). A batch is sent only if it is fewer than
    /// `max_in_flight` batches after the oldest of them: the partition
    /// remembers a producer's last 5 batches, so a retry of the oldest
    /// unfinished batch must still find it there, even when answers arrive
    /// out of order (they do: requests share an HTTP/2 connection).
    unfinished: BTreeSet<u64>,
    retrying: bool,
    backoff_until: Option<Instant>,
    next_sequence: u64,
}

impl<C> PartitionState<C> {
    fn new() -> Self {
        PartitionState {
            queue: VecDeque::new(),
            in_flight: 0,
            unfinished: BTreeSet::new(),
            retrying: false,
            backoff_until: None,
            next_sequence: 0,
        }
    }

    fn send_limit(&self, max_in_flight: usize) -> usize {
        if self.retrying {
            1
        } else {
            max_in_flight
        }
    }

    /// Leaves retry mode once nothing is in flight and no retried batch waits.
    fn settle(&mut self) {
        if self.retrying && self.in_flight == 0 && !self.queue.iter().any(|b| b.attempts > 0) {
            self.retrying = false;
        }
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight == 0
    }
}

/// Bounds and timings of an [`Accumulator`].
#[derive(Clone, Copy, Debug)]
pub struct AccumulatorConfig {
    pub max_batch_bytes: usize,
    pub linger: Duration,
    pub max_in_flight: usize,
    pub delivery_timeout: Duration,
}

/// Per-partition queues of batches. `C` is what the caller attaches to each
/// record to report its outcome.
pub struct Accumulator<C> {
    config: AccumulatorConfig,
    /// A BTreeMap so partitions are served in a fixed order.
    partitions: BTreeMap<TopicPartition, PartitionState<C>>,
}

impl<C> Accumulator<C> {
    pub fn new(config: AccumulatorConfig) -> Self {
        assert!(config.max_in_flight >= 1, "max_in_flight must be at least 1");
        assert!(config.max_batch_bytes > BATCH_HEADER_LEN, "max_batch_bytes must exceed the batch header");
        Accumulator { config, partitions: BTreeMap::new() }
    }

    /// Adds a record to its partition's open batch, or starts a new batch
    /// when it would not fit. A record larger than `max_batch_bytes` gets a
    /// batch of its own (the caller bounds records by `MAX_RECORD_BYTES`).
    pub fn append(&mut self, tp: TopicPartition, record: Record, completion: C, now: Instant) {
        let max_batch_bytes = self.config.max_batch_bytes;
        let state = self.partitions.entry(tp.clone()).or_insert_with(PartitionState::new);
        if let Some(open) = state.queue.back_mut().filter(|b| !b.closed) {
            let record_len = open.record_len(&record);
            if open.size_bytes + record_len <= max_batch_bytes && open.len() < limits::MAX_RECORDS_PER_BATCH {
                open.push(record, completion, record_len);
                open.closed = open.size_bytes >= max_batch_bytes || open.len() >= limits::MAX_RECORDS_PER_BATCH;
                return;
            }
            open.closed = true;
        }
        let mut batch = PendingBatch::new(tp, state.next_sequence, now);
        state.next_sequence += 1;
        let record_len = batch.record_len(&record);
        batch.push(record, completion, record_len);
        batch.closed = batch.size_bytes >= max_batch_bytes;
        state.queue.push_back(batch);
    }

    /// Hands out every batch that may be sent now, marking it in flight.
    /// With `flush`, open batches are ready without waiting for linger.
    pub fn drain_ready(&mut self, now: Instant, flush: bool) -> Vec<PendingBatch<C>> {
        let mut ready = Vec::new();
        for state in self.partitions.values_mut() {
            if state.backoff_until.is_some_and(|until| now < until) {
                continue;
            }
            while state.in_flight < state.send_limit(self.config.max_in_flight) {
                let Some(head) = state.queue.front() else {
                    break;
                };
                if !(head.closed || flush || now >= head.created_at + self.config.linger) {
                    break;
                }
                let oldest = state.unfinished.first().copied().unwrap_or(head.sequence);
                if head.sequence >= oldest + self.config.max_in_flight as u64 {
                    break;
                }
                let mut batch = state.queue.pop_front().expect("head exists");
                state.unfinished.insert(batch.sequence);
                batch.closed = true;
                batch.attempts += 1;
                state.in_flight += 1;
                ready.push(batch);
            }
        }
        ready
    }

    /// The in-flight batch `sequence` of `tp` is finished (delivered, or
    /// failed for good).
    pub fn complete(&mut self, tp: &TopicPartition, sequence: u64) {
        let state = self.partitions.get_mut(tp).expect("a completed batch belongs to a known partition");
        assert!(state.in_flight > 0, "completed a batch of {tp:?} that was not in flight");
        state.in_flight -= 1;
        state.unfinished.remove(&sequence);
        // A back-off in force stays: it may be what the server asked for.
        state.settle();
        if state.is_idle() {
            self.partitions.remove(tp);
        }
    }

    /// An in-flight batch failed with a retryable error: it goes back to its
    /// place in the queue, to be sent again at `retry_at` at the earliest.
    pub fn requeue(&mut self, batch: PendingBatch<C>, retry_at: Instant) {
        let state = self.partitions.get_mut(&batch.tp).expect("a requeued batch belongs to a known partition");
        assert!(state.in_flight > 0, "requeued a batch of {:?} that was not in flight", batch.tp);
        assert!(batch.attempts > 0, "a requeued batch has been sent");
        state.in_flight -= 1;
        state.retrying = true;
        state.backoff_until = Some(state.backoff_until.map_or(retry_at, |until| until.max(retry_at)));
        let at = state.queue.iter().position(|b| b.sequence > batch.sequence).unwrap_or(state.queue.len());
        debug_assert!(state.queue.iter().all(|b| b.sequence != batch.sequence));
        state.queue.insert(at, batch);
    }

    /// Lifts a back-off of `tp` (a requeue waiting for something other than
    /// time, such as a new producer id).
    pub fn resume(&mut self, tp: &TopicPartition) {
        if let Some(state) = self.partitions.get_mut(tp) {
            state.backoff_until = None;
        }
    }

    /// Removes and returns the queued (not in-flight) batches whose delivery
    /// timeout has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<PendingBatch<C>> {
        let timeout = self.config.delivery_timeout;
        let mut expired = Vec::new();
        for state in self.partitions.values_mut() {
            if state.queue.iter().all(|b| now < b.created_at + timeout) {
                continue;
            }
            let (gone, kept): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut state.queue).into_iter().partition(|b| now >= b.created_at + timeout);
            state.queue = kept;
            for batch in &gone {
                state.unfinished.remove(&batch.sequence);
            }
            expired.extend(gone);
            state.settle();
        }
        self.partitions.retain(|_, state| !state.is_idle());
        expired
    }

    /// The next instant at which `drain_ready` or `expire` may have work
    /// without any new input; `None` when only a completion can unblock.
    pub fn next_wakeup(&self, now: Instant, flush: bool) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut consider = |at: Instant| earliest = Some(earliest.map_or(at, |e| e.min(at)));
        for state in self.partitions.values() {
            if let Some(oldest) = state.queue.iter().map(|b| b.created_at).min() {
                consider(oldest + self.config.delivery_timeout);
            }
            let Some(head) = state.queue.front() else {
                continue;
            };
            if state.in_flight >= state.send_limit(self.config.max_in_flight) {
                continue;
            }
            if state.unfinished.first().is_some_and(|oldest| head.sequence >= oldest + self.config.max_in_flight as u64)
            {
                continue;
            }
            let mut at = if head.closed || flush { now } else { head.created_at + self.config.linger };
            if let Some(until) = state.backoff_until {
                at = at.max(until);
            }
            consider(at);
        }
        earliest
    }

    /// True when no batch is queued or in flight.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    pub fn in_flight(&self, tp: &TopicPartition) -> usize {
        self.partitions.get(tp).map_or(0, |s| s.in_flight)
    }

    pub fn queued_batches(&self, tp: &TopicPartition) -> usize {
        self.partitions.get(tp).map_or(0, |s| s.queue.len())
    }
}

/// How long to wait before retrying a batch that failed with an error of
/// `class` on its `attempts`-th send; `None` means do not retry.
///
/// `RETRY` errors (a timeout) are retried at once the first time; otherwise
/// the wait doubles from `base` per attempt up to `max`, and a back-off error
/// waits at least what the server asked for.
pub fn retry_delay(
    class: RetryClass,
    attempts: u32,
    retry_after: Option<Duration>,
    base: Duration,
    max: Duration,
) -> Option<Duration> {
    let exponential = |n: u32| base.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(max);
    match class {
        RetryClass::Fatal => None,
        RetryClass::Retry if attempts <= 1 => Some(Duration::ZERO),
        RetryClass::Retry => Some(exponential(attempts - 1)),
        RetryClass::RefreshMetadata => Some(exponential(attempts)),
        RetryClass::BackOff => Some(exponential(attempts).max(retry_after.unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use strata_record::{encode_batch, ProducerFields};

    const LINGER: Duration = Duration::from_millis(5);

    fn config(max_batch_bytes: usize, max_in_flight: usize) -> AccumulatorConfig {
        AccumulatorConfig { max_batch_bytes, linger: LINGER, max_in_flight, delivery_timeout: Duration::from_secs(120) }
    }

    fn tp(partition: u32) -> TopicPartition {
        TopicPartition { topic: "t".into(), partition }
    }

    fn record(value_len: usize) -> Record {
        Record {
            value: Some(Bytes::from(vec![b'x'; value_len])),
            timestamp_ms: 1_700_000_000_000,
            ..Default::default()
        }
    }

    /// Record ids of a batch, to check order.
    fn ids(batch: &PendingBatch<u32>) -> Vec<u32> {
        batch.completions.clone()
    }

    #[test]
    fn size_estimate_matches_encoded_batch() {
        let mut acc = Accumulator::new(config(1 << 20, 5));
        let now = Instant::now();
        for i in 0..50u32 {
            let mut r = record(i as usize * 3);
            r.key = (i % 2 == 0).then(|| Bytes::from(format!("key-{i}")));
            r.timestamp_ms += i as i64 * 7;
            acc.append(tp(0), r, i, now);
        }
        let batches = acc.drain_ready(now, true);
        assert_eq!(batches.len(), 1);
        let encoded = encode_batch(&batches[0].records, ProducerFields::default()).unwrap();
        assert_eq!(batches[0].size_bytes, encoded.len());
    }

    #[test]
    fn batches_close_by_bytes_and_full_batches_skip_linger() {
        let record_len = encoded_record_len(&record(100), 1, 0);
        // Room for a bit more than three records of this size.
        let max_batch_bytes = BATCH_HEADER_LEN + record_len * 3 + 10;
        let mut acc = Accumulator::new(config(max_batch_bytes, 5));
        let now = Instant::now();
        for i in 0..7 {
            acc.append(tp(0), record(100), i, now);
        }
        assert_eq!(acc.queued_batches(&tp(0)), 3);
        // Two full batches go at once; the third waits for linger.
        let ready = acc.drain_ready(now, false);
        assert_eq!(ready.iter().map(ids).collect::<Vec<_>>(), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        assert!(ready.iter().all(|b| b.size_bytes <= max_batch_bytes));
        assert!(acc.drain_ready(now + LINGER / 2, false).is_empty());
        assert_eq!(acc.next_wakeup(now, false), Some(now + LINGER));
        let late = acc.drain_ready(now + LINGER, false);
        assert_eq!(late.iter().map(ids).collect::<Vec<_>>(), vec![vec![6]]);
    }

    #[test]
    fn oversized_record_gets_its_own_batch() {
        let mut acc = Accumulator::new(config(1000, 5));
        let now = Instant::now();
        acc.append(tp(0), record(10), 0, now);
        acc.append(tp(0), record(5000), 1, now);
        acc.append(tp(0), record(10), 2, now);
        let ready = acc.drain_ready(now, true);
        assert_eq!(ready.iter().map(ids).collect::<Vec<_>>(), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn flush_sends_open_batches_at_once() {
        let mut acc = Accumulator::new(config(1 << 20, 5));
        let now = Instant::now();
        acc.append(tp(0), record(1), 0, now);
        acc.append(tp(1), record(1), 1, now);
        assert!(acc.drain_ready(now, false).is_empty());
        assert_eq!(acc.next_wakeup(now, true), Some(now));
        assert_eq!(acc.drain_ready(now, true).len(), 2);
    }

    #[test]
    fn linger_counts_from_the_first_record() {
        let mut acc = Accumulator::new(config(1 << 20, 5));
        let start = Instant::now();
        acc.append(tp(0), record(1), 0, start);
        acc.append(tp(0), record(1), 1, start + LINGER - Duration::from_millis(1));
        let ready = acc.drain_ready(start + LINGER, false);
        assert_eq!(ready.iter().map(ids).collect::<Vec<_>>(), vec![vec![0, 1]]);
    }

    #[test]
    fn in_flight_is_bounded_per_partition() {
        let mut acc = Accumulator::new(config(BATCH_HEADER_LEN + 1, 2));
        let now = Instant::now();
        for i in 0..5 {
            acc.append(tp(0), record(10), i, now); // each record fills a batch
        }
        acc.append(tp(1), record(10), 100, now);
        let first = acc.drain_ready(now, false);
        assert_eq!(first.iter().map(ids).collect::<Vec<_>>(), vec![vec![0], vec![1], vec![100]]);
        assert_eq!(acc.in_flight(&tp(0)), 2);
        assert_eq!(acc.next_wakeup(now, false), Some(now + Duration::from_secs(120)), "only expiry is pending");
        assert!(acc.drain_ready(now, false).is_empty());
        acc.complete(&tp(0), 0);
        assert_eq!(acc.drain_ready(now, false).iter().map(ids).collect::<Vec<_>>(), vec![vec![2]]);
    }

    #[test]
    fn the_window_counts_from_the_oldest_unfinished_batch() {
        let mut acc = Accumulator::new(config(BATCH_HEADER_LEN + 1, 3));
        let now = Instant::now();
        for i in 0..6 {
            acc.append(tp(0), record(10), i, now);
        }
        let sent = acc.drain_ready(now, false);
        assert_eq!(sent.len(), 3);
        // Batches 1 and 2 answer before 0: still no room for 3, which
        // would be more than 3 batches after the unanswered 0.
        acc.complete(&tp(0), 2);
        acc.complete(&tp(0), 1);
        assert!(acc.drain_ready(now, false).is_empty());
        assert_eq!(acc.next_wakeup(now, false), Some(now + Duration::from_secs(120)), "only expiry is pending");
        acc.complete(&tp(0), 0);
        assert_eq!(acc.drain_ready(now, false).iter().map(ids).collect::<Vec<_>>(), vec![vec![3], vec![4], vec![5]]);
    }

    #[test]
    fn retry_mode_keeps_order_and_sends_one_at_a_time() {
        let mut acc = Accumulator::new(config(BATCH_HEADER_LEN + 1, 3));
        let now = Instant::now();
        for i in 0..6 {
            acc.append(tp(0), record(10), i, now);
        }
        let mut sent = acc.drain_ready(now, false);
        assert_eq!(sent.len(), 3);
        let (c, b, a) = (sent.pop().unwrap(), sent.pop().unwrap(), sent.pop().unwrap());

        // C fails first, then A; B succeeds. Nothing new is sent meanwhile.
        let retry_at = now + Duration::from_millis(100);
        acc.requeue(c, retry_at);
        assert!(acc.drain_ready(retry_at, false).is_empty(), "A and B still in flight");
        acc.requeue(a, retry_at);
        assert!(acc.drain_ready(retry_at, false).is_empty(), "B still in flight");
        acc.complete(&b.tp, b.sequence);

        // Back-off is honoured, then A alone, then C alone, then pipelining.
        assert!(acc.drain_ready(now, false).is_empty(), "backing off");
        assert_eq!(acc.next_wakeup(now, false), Some(retry_at));
        let again = acc.drain_ready(retry_at, false);
        assert_eq!(again.iter().map(ids).collect::<Vec<_>>(), vec![vec![0]]);
        assert_eq!(again[0].attempts, 2);
        acc.complete(&tp(0), 0);
        let again = acc.drain_ready(retry_at, false);
        assert_eq!(again.iter().map(ids).collect::<Vec<_>>(), vec![vec![2]]);
        acc.complete(&tp(0), 2);
        let rest = acc.drain_ready(retry_at, false);
        assert_eq!(rest.iter().map(ids).collect::<Vec<_>>(), vec![vec![3], vec![4], vec![5]]);
    }

    #[test]
    fn a_retried_batch_that_fails_again_blocks_later_ones() {
        let mut acc = Accumulator::new(config(BATCH_HEADER_LEN + 1, 5));
        let now = Instant::now();
        for i in 0..3 {
            acc.append(tp(0), record(10), i, now);
        }
        let mut sent = acc.drain_ready(now, false);
        let rest: Vec<_> = sent.drain(1..).collect();
        let first = sent.pop().unwrap();
        acc.requeue(first, now);
        for b in rest {
            acc.complete(&b.tp, b.sequence);
        }
        let retry = acc.drain_ready(now, false).pop().unwrap();
        acc.append(tp(0), record(10), 3, now);
        acc.requeue(retry, now);
        let again = acc.drain_ready(now, false);
        assert_eq!(again.iter().map(ids).collect::<Vec<_>>(), vec![vec![0]], "record 3 waits behind 0");
    }

    #[test]
    fn expiry_removes_only_queued_batches() {
        let mut acc = Accumulator::new(config(BATCH_HEADER_LEN + 1, 1));
        let now = Instant::now();
        acc.append(tp(0), record(10), 0, now);
        acc.append(tp(0), record(10), 1, now);
        let in_flight = acc.drain_ready(now, false);
        assert_eq!(in_flight.len(), 1);
        assert!(acc.expire(now + Duration::from_secs(119)).is_empty());
        let expired = acc.expire(now + Duration::from_secs(120));
        assert_eq!(expired.iter().map(ids).collect::<Vec<_>>(), vec![vec![1]]);
        assert!(!acc.is_empty(), "batch 0 is still in flight");
        acc.complete(&tp(0), 0);
        assert!(acc.is_empty());
    }

    #[test]
    fn retry_delays_by_class() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let delay = |class, attempts, after| retry_delay(class, attempts, after, base, max);
        assert_eq!(delay(RetryClass::Fatal, 1, None), None);
        assert_eq!(delay(RetryClass::Retry, 1, None), Some(Duration::ZERO));
        assert_eq!(delay(RetryClass::Retry, 2, None), Some(base));
        assert_eq!(delay(RetryClass::RefreshMetadata, 1, None), Some(base));
        assert_eq!(delay(RetryClass::RefreshMetadata, 3, None), Some(base * 4));
        assert_eq!(delay(RetryClass::RefreshMetadata, 30, None), Some(max));
        assert_eq!(delay(RetryClass::BackOff, 1, Some(Duration::from_millis(750))), Some(Duration::from_millis(750)));
        assert_eq!(delay(RetryClass::BackOff, 3, Some(Duration::from_millis(10))), Some(base * 4));
    }
}
