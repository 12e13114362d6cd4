//! A consumer of explicitly assigned partitions, reading by offset.
//!
//! Each assigned partition has a cursor (its position: the next offset to
//! return) and at most one fetch in flight. A fetch is a long poll at the
//! partition's leader; a fetch still waiting when `poll` returns stays in
//! flight and is collected by the next `poll`, so no partition is starved by
//! busier ones and no request is thrown away. Retryable errors (leader moving,
//! partition starting, transport) back the partition off for 50-200 ms and
//! are retried on later polls; fatal ones (e.g. OFFSET_OUT_OF_RANGE) are
//! returned by `poll`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use strata_core::ErrorCode;
use strata_record::{decode_records_from, BatchIter, Header};

use crate::accumulator::TopicPartition;
use crate::client::{retry_wait, FetchAnswer, IsolationLevel, ListedOffset, OffsetSpec};
use crate::{Client, ClientError};

/// Where a newly assigned partition starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOffset {
    Offset(u64),
    /// The log start offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// The first offset at or after this time (ms since the Unix epoch).
    Timestamp(i64),
}

/// A record as a consumer returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Settings of a [`Consumer`].
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Soft bound on one fetch answer; at least one batch is returned.
    pub max_bytes: u32,
    /// Which records to read: by default only those of committed
    /// transactions (and those outside any).
    pub isolation: IsolationLevel,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig { max_bytes: 1024 * 1024, isolation: IsolationLevel::ReadCommitted }
    }
}

/// After this many consecutive retryable failures of one partition, each
/// further one is logged as a warning: the user should learn that a
/// partition is stuck rather than see silence.
const WARN_AFTER_FAILURES: u32 = 20;

struct Cursor {
    /// The next offset to return.
    position: u64,
    high_watermark: Option<u64>,
    log_start_offset: Option<u64>,
    /// Bumped by `assign` and `seek`, so answers to older fetches are ignored.
    generation: u64,
    fetching: bool,
    backoff_until: Option<Instant>,
    failures: u32,
    /// Paused by the caller: no fetch is started for it.
    paused: bool,
}

struct FetchOutcome {
    tp: TopicPartition,
    generation: u64,
    offset: u64,
    result: Result<FetchAnswer, ClientError>,
}

fn from_listed(listed: ListedOffset) -> (u64, Option<u64>, Option<u64>) {
    (listed.offset, Some(listed.high_watermark), Some(listed.log_start_offset))
}

type FetchFuture = Pin<Box<dyn Future<Output = FetchOutcome> + Send>>;

/// Reads assigned partitions by offset.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    cursors: BTreeMap<TopicPartition, Cursor>,
    fetches: FuturesUnordered<FetchFuture>,
    next_generation: u64,
    /// Records collected in the same round as an error; the next poll returns them.
    buffered: Vec<ConsumedRecord>,
    /// Partitions whose position was refused as OFFSET_OUT_OF_RANGE (e.g.
    /// below the log start after retention), for the caller to reset.
    out_of_range: Vec<TopicPartition>,
}

impl Consumer {
    pub fn new(client: Client) -> Consumer {
        Consumer::with_config(client, ConsumerConfig::default())
    }

    pub fn with_config(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            cursors: BTreeMap::new(),
            fetches: FuturesUnordered::new(),
            next_generation: 0,
            buffered: Vec::new(),
            out_of_range: Vec::new(),
        }
    }

    /// Starts reading a partition at `start` (resolved now, at the leader)
    /// and returns the starting offset. Assigning an assigned partition again
    /// moves its position.
    pub async fn assign(&mut self, topic: &str, partition: u32, start: StartOffset) -> Result<u64, ClientError> {
        let mut partitions = self.client.topic_metadata(topic).await?.partition_count();
        if partition >= partitions {
            // The topic may have grown since the cache was filled (a group
            // member is given the partitions an alter added).
            partitions = self.client.refreshed_partition_count(topic).await?;
        }
        if partition >= partitions {
            return Err(ClientError::local(
                ErrorCode::UnknownPartition,
                format!("topic '{topic}' has {partitions} partitions, no partition {partition}"),
            ));
        }
        let listed = |spec| self.client.list_offsets(topic, partition, spec);
        let (position, high_watermark, log_start_offset) = match start {
            StartOffset::Offset(offset) => (offset, None, None),
            StartOffset::Earliest => from_listed(listed(OffsetSpec::Earliest).await?),
            StartOffset::Latest => from_listed(listed(OffsetSpec::Latest).await?),
            StartOffset::Timestamp(ms) => from_listed(listed(OffsetSpec::Timestamp(ms)).await?),
        };
        self.next_generation += 1;
        let cursor = Cursor {
            position,
            high_watermark,
            log_start_offset,
            generation: self.next_generation,
            fetching: false,
            backoff_until: None,
            failures: 0,
            paused: false,
        };
        self.cursors.insert(TopicPartition { topic: topic.to_string(), partition }, cursor);
        Ok(position)
    }

    /// Stops reading a partition. Records of it collected but not yet
    /// returned are dropped with it.
    pub fn unassign(&mut self, topic: &str, partition: u32) {
        self.cursors.remove(&TopicPartition { topic: topic.to_string(), partition });
        self.buffered.retain(|r| !(r.topic == topic && r.partition == partition));
    }

    /// Stops fetching an assigned partition but keeps its position: `poll`
    /// returns nothing of it until [`Consumer::resume`]. Records of it
    /// collected but not yet returned are given back (the position moves
    /// back to the first of them). Returns false when it is not assigned.
    pub fn pause(&mut self, topic: &str, partition: u32) -> bool {
        let Some(cursor) = self.cursors.get_mut(&TopicPartition { topic: topic.to_string(), partition }) else {
            return false;
        };
        let first_unreturned =
            self.buffered.iter().filter(|r| r.topic == topic && r.partition == partition).map(|r| r.offset).min();
        self.buffered.retain(|r| !(r.topic == topic && r.partition == partition));
        if let Some(offset) = first_unreturned {
            cursor.position = offset;
        }
        // An answer to a fetch in flight is ignored: it was asked for before
        // the pause, and taking it would move the position.
        self.next_generation += 1;
        cursor.generation = self.next_generation;
        cursor.fetching = false;
        cursor.paused = true;
        true
    }

    /// Fetches a paused partition again from its position. Returns false
    /// when it is not assigned.
    pub fn resume(&mut self, topic: &str, partition: u32) -> bool {
        let Some(cursor) = self.cursors.get_mut(&TopicPartition { topic: topic.to_string(), partition }) else {
            return false;
        };
        cursor.paused = false;
        true
    }

    /// The partitions whose position a fetch found out of range since the
    /// last call, as (topic, partition); `poll` returned OFFSET_OUT_OF_RANGE
    /// for them. Each stays where it is until assigned or sought again.
    pub fn take_out_of_range(&mut self) -> Vec<(String, u32)> {
        std::mem::take(&mut self.out_of_range).into_iter().map(|tp| (tp.topic, tp.partition)).collect()
    }

    /// True when the partition is assigned and paused.
    pub fn is_paused(&self, topic: &str, partition: u32) -> bool {
        self.cursor(topic, partition).is_some_and(|c| c.paused)
    }

    /// Moves the position of an assigned partition. Returns false when the
    /// partition is not assigned.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> bool {
        let Some(cursor) = self.cursors.get_mut(&TopicPartition { topic: topic.to_string(), partition }) else {
            return false;
        };
        self.next_generation += 1;
        cursor.generation = self.next_generation;
        cursor.position = offset;
        cursor.fetching = false;
        cursor.backoff_until = None;
        self.buffered.retain(|r| !(r.topic == topic && r.partition == partition));
        true
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.cursors.keys().map(|tp| (tp.topic.clone(), tp.partition)).collect()
    }

    /// The next offset `poll` will return for the partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.cursor(topic, partition).map(|c| c.position)
    }

    /// The partition's high watermark as last seen by this consumer.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.cursor(topic, partition)?.high_watermark
    }

    /// The partition's log start offset as last seen by this consumer.
    pub fn log_start_offset(&self, topic: &str, partition: u32) -> Option<u64> {
        self.cursor(topic, partition)?.log_start_offset
    }

    fn cursor(&self, topic: &str, partition: u32) -> Option<&Cursor> {
        self.cursors.get(&TopicPartition { topic: topic.to_string(), partition })
    }

    /// Waits up to `max_wait` for records of the assigned partitions and
    /// returns those that arrived (possibly none). Records of one partition
    /// come in offset order, each at most once per position.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, ClientError> {
        if !self.buffered.is_empty() {
            return Ok(std::mem::take(&mut self.buffered));
        }
        let deadline = Instant::now() + max_wait;
        loop {
            self.start_fetches(deadline);
            if self.fetches.is_empty() {
                // Nothing to wait for but back-offs (or no assignment at all).
                let wake = self.cursors.values().filter_map(|c| c.backoff_until).min().unwrap_or(deadline);
                tokio::time::sleep_until(wake.min(deadline).into()).await;
                if Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                continue;
            }
            let outcome = match tokio::time::timeout_at(deadline.into(), self.fetches.next()).await {
                Err(_elapsed) => return Ok(Vec::new()),
                Ok(None) => continue,
                Ok(Some(outcome)) => outcome,
            };
            let mut records = Vec::new();
            let mut error = None;
            self.absorb(outcome, &mut records, &mut error);
            // Take the answers that are already here too, without waiting.
            while let Some(Some(outcome)) = self.fetches.next().now_or_never() {
                self.absorb(outcome, &mut records, &mut error);
            }
            if let Some(error) = error {
                self.buffered = records;
                return Err(error);
            }
            if !records.is_empty() {
                return Ok(records);
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    fn start_fetches(&mut self, deadline: Instant) {
        let now = Instant::now();
        let wait = deadline.saturating_duration_since(now);
        for (tp, cursor) in &mut self.cursors {
            if cursor.paused || cursor.fetching || cursor.backoff_until.is_some_and(|until| now < until) {
                continue;
            }
            cursor.fetching = true;
            let (client, tp, generation, offset) =
                (self.client.clone(), tp.clone(), cursor.generation, cursor.position);
            let (max_bytes, isolation) = (self.config.max_bytes, self.config.isolation);
            self.fetches.push(Box::pin(async move {
                let result = client.fetch_isolated(&tp.topic, tp.partition, offset, max_bytes, wait, isolation).await;
                FetchOutcome { tp, generation, offset, result }
            }));
        }
    }

    fn absorb(&mut self, outcome: FetchOutcome, records: &mut Vec<ConsumedRecord>, error: &mut Option<ClientError>) {
        let Some(cursor) = self.cursors.get_mut(&outcome.tp) else {
            return; // unassigned meanwhile
        };
        if cursor.generation != outcome.generation {
            return; // answer to a fetch from before a seek
        }
        cursor.fetching = false;
        debug_assert_eq!(cursor.position, outcome.offset, "only this fetch moves the position");
        let answer = match outcome.result {
            Ok(answer) => answer,
            Err(failure) => {
                cursor.failures += 1;
                cursor.backoff_until = Some(Instant::now() + retry_wait(failure.retry_after()));
                if failure.is_retryable() {
                    if cursor.failures >= WARN_AFTER_FAILURES {
                        tracing::warn!(topic = %outcome.tp.topic, partition = outcome.tp.partition,
                            failures = cursor.failures, error = %failure, "fetch keeps failing, retrying");
                    } else {
                        tracing::debug!(topic = %outcome.tp.topic, partition = outcome.tp.partition,
                            error = %failure, "fetch failed, retrying");
                    }
                } else {
                    if failure.code() == Some(ErrorCode::OffsetOutOfRange) && !self.out_of_range.contains(&outcome.tp) {
                        self.out_of_range.push(outcome.tp.clone());
                    }
                    if error.is_none() {
                        *error = Some(failure);
                    }
                }
                return;
            }
        };
        cursor.failures = 0;
        cursor.high_watermark = Some(answer.high_watermark);
        cursor.log_start_offset = Some(answer.log_start_offset);
        let stored = match decode_records_from(&answer.records, outcome.offset) {
            Ok(stored) => stored,
            Err(decode_error) => {
                if error.is_none() {
                    *error = Some(ClientError::Decode {
                        address: format!("leader of {}/{}", outcome.tp.topic, outcome.tp.partition),
                        message: format!("{} ({})", decode_error, decode_error.code().name()),
                    });
                }
                return;
            }
        };
        let before = records.len();
        for record in stored {
            if record.offset < cursor.position {
                continue;
            }
            if record.offset >= answer.high_watermark {
                break; // not committed yet: never shown
            }
            cursor.position = record.offset + 1;
            records.push(ConsumedRecord {
                topic: outcome.tp.topic.clone(),
                partition: outcome.tp.partition,
                offset: record.offset,
                timestamp_ms: record.timestamp_ms,
                key: record.key,
                value: record.value,
                headers: record.headers,
            });
        }
        // Step past what the answer covered without a record for us
        // (batches below the position, or batches the server left out:
        // markers, aborted transactions), or we would fetch them forever.
        let mut end = answer.next_offset;
        if records.len() == before {
            let last = BatchIter::new(&answer.records).filter_map(Result::ok).map(|(h, _)| h.next_offset()).max();
            end = end.max(last.unwrap_or(0));
        }
        if end > cursor.position {
            cursor.position = end.min(answer.high_watermark).max(cursor.position);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_record::{encode_batch, set_base_offset, ProducerFields, Record};

    fn batch_at(base_offset: u64, values: &[&str]) -> Vec<u8> {
        let records: Vec<Record> = values
            .iter()
            .map(|v| Record { value: Some(Bytes::from(v.to_string())), timestamp_ms: 1000, ..Default::default() })
            .collect();
        let mut bytes = encode_batch(&records, ProducerFields::default()).unwrap().to_vec();
        set_base_offset(&mut bytes, base_offset);
        bytes
    }

    fn consumer_with_cursor(position: u64) -> (Consumer, TopicPartition) {
        let client = Client::connect(&["127.0.0.1:1".to_string()]).unwrap();
        let mut consumer = Consumer::new(client);
        consumer.next_generation = 1;
        let tp = TopicPartition { topic: "t".into(), partition: 0 };
        consumer.cursors.insert(
            tp.clone(),
            Cursor {
                position,
                high_watermark: None,
                log_start_offset: None,
                generation: 1,
                fetching: true,
                backoff_until: None,
                failures: 0,
                paused: false,
            },
        );
        (consumer, tp)
    }

    fn answer(tp: &TopicPartition, offset: u64, bytes: Vec<u8>, high_watermark: u64) -> FetchOutcome {
        FetchOutcome {
            tp: tp.clone(),
            generation: 1,
            offset,
            result: Ok(FetchAnswer {
                records: Bytes::from(bytes),
                high_watermark,
                log_start_offset: 0,
                last_stable_offset: high_watermark,
                next_offset: 0,
            }),
        }
    }

    #[test]
    fn records_below_position_and_at_or_above_high_watermark_are_skipped() {
        let (mut consumer, tp) = consumer_with_cursor(11);
        let mut bytes = batch_at(10, &["a", "b", "c"]);
        bytes.extend(batch_at(13, &["d", "e"]));
        let (mut records, mut error) = (Vec::new(), None);
        consumer.absorb(answer(&tp, 11, bytes, 14), &mut records, &mut error);
        assert!(error.is_none());
        let got: Vec<(u64, &[u8])> = records.iter().map(|r| (r.offset, r.value.as_deref().unwrap())).collect();
        assert_eq!(got, vec![(11, &b"b"[..]), (12, b"c"), (13, b"d")]);
        assert_eq!(consumer.position("t", 0), Some(14));
        assert_eq!(consumer.high_watermark("t", 0), Some(14));
    }

    #[test]
    fn answers_from_before_a_seek_are_ignored() {
        let (mut consumer, tp) = consumer_with_cursor(0);
        assert!(consumer.seek("t", 0, 5));
        let (mut records, mut error) = (Vec::new(), None);
        consumer.absorb(answer(&tp, 0, batch_at(0, &["a"]), 1), &mut records, &mut error);
        assert!(records.is_empty());
        assert_eq!(consumer.position("t", 0), Some(5));
        assert!(!consumer.seek("t", 1, 0), "partition 1 is not assigned");
    }

    #[test]
    fn retryable_errors_back_off_and_fatal_ones_surface() {
        let (mut consumer, tp) = consumer_with_cursor(0);
        let failed = |code: ErrorCode| FetchOutcome {
            tp: tp.clone(),
            generation: 1,
            offset: 0,
            result: Err(ClientError::Server { code, message: "m".into(), details: Default::default() }),
        };
        let (mut records, mut error) = (Vec::new(), None);
        consumer.absorb(failed(ErrorCode::LeaderNotAvailable), &mut records, &mut error);
        assert!(error.is_none());
        let cursor = consumer.cursors.get(&tp).unwrap();
        assert!(!cursor.fetching && cursor.backoff_until.is_some());

        consumer.cursors.get_mut(&tp).unwrap().fetching = true;
        consumer.absorb(failed(ErrorCode::OffsetOutOfRange), &mut records, &mut error);
        assert_eq!(error.and_then(|e| e.code()), Some(ErrorCode::OffsetOutOfRange));
        assert_eq!(consumer.position("t", 0), Some(0));
        assert_eq!(consumer.take_out_of_range(), vec![("t".to_string(), 0)]);
        assert!(consumer.take_out_of_range().is_empty());
    }

    #[test]
    fn a_pause_gives_back_unreturned_records_and_ignores_the_fetch_in_flight() {
        let (mut consumer, tp) = consumer_with_cursor(0);
        let (mut records, mut error) = (Vec::new(), None);
        consumer.absorb(answer(&tp, 0, batch_at(0, &["a", "b", "c"]), 3), &mut records, &mut error);
        assert_eq!(consumer.position("t", 0), Some(3));
        // As after a poll that failed elsewhere: collected, not returned.
        consumer.buffered = records;
        consumer.cursors.get_mut(&tp).unwrap().fetching = true;
        assert!(consumer.pause("t", 0));
        assert!(consumer.buffered.is_empty() && consumer.is_paused("t", 0));
        assert_eq!(consumer.position("t", 0), Some(0), "the unreturned records are read again");
        let (mut late, mut error) = (Vec::new(), None);
        consumer.absorb(answer(&tp, 0, batch_at(0, &["a"]), 1), &mut late, &mut error);
        assert!(late.is_empty(), "the answer to the fetch from before the pause is dropped");
        consumer.start_fetches(Instant::now() + Duration::from_millis(10));
        assert!(consumer.fetches.is_empty(), "a paused partition is not fetched");
        assert!(consumer.resume("t", 0) && !consumer.is_paused("t", 0));
        assert!(!consumer.pause("t", 9) && !consumer.resume("t", 9), "not assigned");
    }

    #[test]
    fn corrupt_answers_are_decode_errors() {
        let (mut consumer, tp) = consumer_with_cursor(0);
        let mut bytes = batch_at(0, &["a", "b"]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // breaks the CRC
        let (mut records, mut error) = (Vec::new(), None);
        consumer.absorb(answer(&tp, 0, bytes, 2), &mut records, &mut error);
        assert!(matches!(error, Some(ClientError::Decode { .. })), "{error:?}");
        assert!(records.is_empty());
        assert_eq!(consumer.position("t", 0), Some(0));
    }

    #[tokio::test]
    async fn poll_without_assignment_waits_and_returns_nothing() {
        let client = Client::connect(&["127.0.0.1:1".to_string()]).unwrap();
        let mut consumer = Consumer::new(client);
        let started = Instant::now();
        assert!(consumer.poll(Duration::from_millis(30)).await.unwrap().is_empty());
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
