//! The partition state machine: assigns offsets to appended batches, drops
//! retried batches of idempotent producers and records whose idempotency
//! key was stored within the topic's window, and moves the log start
//! forward for retention.
//!
//! Invariant: `log_start_offset <= next_offset`; offsets are assigned
//! densely from `next_offset` and never reused. The Raft log index of an
//! entry and the offsets of its records are different numbers; the only
//! translation between them happens in `apply`.
//! Invariant: time inside the machine is `clock_ms`, the largest leader
//! stamp applied so far; it never goes back, whatever the leaders' clocks do.
//! The clock rule (stamps come from strata-server's `clock`): a leader stamps
//! with cluster time, the median of the nodes' wall clocks, when a majority
//! of clocks agree on it; otherwise with cluster time capped at the larger
//! of (the partition clock as the leader last saw it change, or the last
//! trusted cluster time it saw) plus the monotonic time elapsed since plus
//! `CLOCK_SKEW_TOLERANCE_MS`. So one node's fast clock cannot move the
//! clock (and expire keys or producers early); a clock stale after an idle
//! period catches up to trusted cluster time.
//!
//! The idempotency-key index lives outside this crate (on disk, behind
//! [`KeyIndex`]); the producer table is in memory and its changes are
//! returned as effects so the storage layer can persist them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_core::ErrorCode;

use crate::producer::{BatchRecord, ProducerEntry, ProducerTable};
use crate::txn::partition::{MarkerOutcome, PartitionTxns};
use crate::txn::Decision;
use strata_record::sequence_after;

/// Where the original of a record that is a duplicate by key is.
#[derive(Clone, Copy)]
enum Original {
    /// Stored earlier, at this offset.
    Stored(u64),
    /// Earlier in the same batch, at this index.
    InBatch(u32),
}

/// A record of a batch that carries an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedRecord {
    /// Position of the record in the batch as sent.
    pub index: u32,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionCommand {
    /// Append one record batch (RecordBatch v2, validated by the leader
    /// before proposing). Its base offset field is overwritten on apply.
    /// Everything a replica needs to decide identically is in the command:
    /// the leader's clock and the windows in force when it proposed.
    Append {
        #[serde(with = "serde_bytes")]
        batch: Vec<u8>,
        /// The leader's cluster time at proposal, under the clock rule
        /// (module doc); never its raw wall clock.
        time_ms: u64,
        /// How long a key is remembered (the topic's `dedup.window`).
        dedup_window_ms: u64,
        /// How long an idle producer is remembered.
        producer_expiry_ms: u64,
        /// The batch's records that carry an idempotency key, by index.
        keys: Vec<KeyedRecord>,
    },
    /// Retention: drop every batch below `new_log_start` (a batch boundary
    /// chosen by the leader). `trimmed_bytes_total` is the number of bytes
    /// ever appended below `new_log_start`, so the command is idempotent and
    /// the retained size stays exact whatever order trims are applied in.
    Trim { new_log_start: u64, trimmed_bytes_total: u64 },
    /// The transaction coordinator's marker for `producer_id`'s
    /// transaction: a control batch is appended (unless this very marker
    /// was taken before) and the transaction is closed here, added to the
    /// aborted index when aborted. `producer_epoch` is the epoch the
    /// coordinator bumped to at the decision; `coordinator_epoch` is the
    /// metadata group's term that wrote it. Appended last: the variant
    /// index is its tag in stored log entries.
    Marker { producer_id: u64, producer_epoch: i16, decision: Decision, coordinator_epoch: u64, time_ms: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionResponse {
    Appended {
        /// Offset of the first stored record (the next offset when none was stored).
        base_offset: u64,
        /// Records stored.
        record_count: u32,
        /// Records not stored because their idempotency key was: (index in
        /// the batch, offset of the original).
        duplicates: Vec<(u32, u64)>,
        /// The whole batch was a retry of one already stored; the answer is
        /// the original one and nothing was stored now.
        duplicate_batch: bool,
    },
    Trimmed {
        log_start_offset: u64,
    },
    /// The batch was refused and changed nothing; `code` says why.
    Refused {
        code: ErrorCode,
        message: String,
    },
    /// The command changed nothing; the text says why.
    Rejected(String),
    /// A marker was taken: its control batch is at `offset`, or nowhere
    /// when the same marker was taken before.
    MarkerWritten {
        offset: Option<u64>,
    },
}

/// What the storage layer must write after an apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionEffect {
    /// Store `batch` (its base offset field already set) under `base_offset`.
    Write {
        base_offset: u64,
        batch: Vec<u8>,
    },
    /// Delete every stored batch with a base offset below `offset`.
    DeleteBelow {
        offset: u64,
    },
    /// Store the producer's entry (the table holds the same).
    PutProducer {
        producer_id: i64,
        entry: ProducerEntry,
    },
    DeleteProducer {
        producer_id: i64,
    },
    /// Remember `key` as stored at `offset` until `expires_ms`.
    PutKey {
        key: Vec<u8>,
        offset: u64,
        expires_ms: u64,
    },
}

/// The idempotency keys stored on a partition. `lookup` must see every
/// `PutKey` effect of earlier applies, including earlier entries of the
/// same apply round.
pub trait KeyIndex {
    /// The newest offset below `below_offset` stored for `key`, and when
    /// that entry expires. Rows at or past `below_offset` (the partition's
    /// next offset) are not this replica's yet: a snapshot stream or an
    /// install cut by a crash may have left them, and a record is never a
    /// duplicate of itself.
    fn lookup(&mut self, key: &[u8], below_offset: u64) -> Option<(u64, u64)>;
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Offset the next appended record gets; also the high watermark, since
    /// only committed entries are applied.
    pub next_offset: u64,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Bytes of every batch ever appended.
    pub appended_bytes_total: u64,
    /// Bytes of every batch dropped by retention.
    pub trimmed_bytes_total: u64,
    /// The largest leader time stamp applied.
    pub clock_ms: u64,
    /// Producers in the producer table (a copy of its size, for readers).
    pub producer_count: u64,
    /// Open transactions, the last stable offset and the aborted index.
    ///
    /// Not part of this struct's own encoding, which stays the layout data
    /// dirs written before transactions hold: strata-storage stores it
    /// beside the state (its `PartitionWithTxns` layout).
    #[serde(skip)]
    pub txns: PartitionTxns,
}

fn refused(code: ErrorCode, message: String) -> (PartitionResponse, Vec<PartitionEffect>) {
    (PartitionResponse::Refused { code, message }, Vec::new())
}

impl PartitionState {
    /// Bytes currently stored.
    pub fn retained_bytes(&self) -> u64 {
        self.appended_bytes_total - self.trimmed_bytes_total
    }

    /// The last stable offset: read_committed readers read below it.
    pub fn last_stable_offset(&self) -> u64 {
        self.txns.last_stable_offset(self.next_offset)
    }

    pub fn apply(
        &mut self,
        producers: &mut ProducerTable,
        keys: &mut dyn KeyIndex,
        command: PartitionCommand,
    ) -> (PartitionResponse, Vec<PartitionEffect>) {
        let result = match command {
            PartitionCommand::Append { batch, time_ms, dedup_window_ms, producer_expiry_ms, keys: keyed } => {
                self.clock_ms = self.clock_ms.max(time_ms);
                let mut effects: Vec<PartitionEffect> = producers
                    .expire(self.clock_ms.saturating_sub(producer_expiry_ms))
                    .into_iter()
                    .map(|producer_id| PartitionEffect::DeleteProducer { producer_id })
                    .collect();
                let (response, more) = self.append(producers, keys, batch, dedup_window_ms, keyed);
                effects.extend(more);
                self.producer_count = producers.len() as u64;
                (response, effects)
            }
            PartitionCommand::Trim { new_log_start, trimmed_bytes_total } => {
                if new_log_start <= self.log_start_offset {
                    (PartitionResponse::Rejected(format!("log already starts at {}", self.log_start_offset)), vec![])
                } else if new_log_start > self.next_offset || trimmed_bytes_total > self.appended_bytes_total {
                    (PartitionResponse::Rejected(format!("trim to {new_log_start} is past the log end")), vec![])
                } else if new_log_start > self.last_stable_offset() {
                    // An open transaction keeps its records until it ends.
                    let lso = self.last_stable_offset();
                    (
                        PartitionResponse::Rejected(format!("trim to {new_log_start} is past the stable offset {lso}")),
                        vec![],
                    )
                } else {
                    self.txns.trim(new_log_start);
                    self.log_start_offset = new_log_start;
                    self.trimmed_bytes_total = self.trimmed_bytes_total.max(trimmed_bytes_total);
                    (
                        PartitionResponse::Trimmed { log_start_offset: new_log_start },
                        vec![PartitionEffect::DeleteBelow { offset: new_log_start }],
                    )
                }
            }
            PartitionCommand::Marker { producer_id, producer_epoch, decision, coordinator_epoch, time_ms } => {
                self.clock_ms = self.clock_ms.max(time_ms);
                self.marker(producer_id, producer_epoch, decision, coordinator_epoch)
            }
        };
        debug_assert!(self.log_start_offset <= self.next_offset);
        debug_assert!(self.trimmed_bytes_total <= self.appended_bytes_total);
        result
    }

    fn marker(
        &mut self,
        producer_id: u64,
        producer_epoch: i16,
        decision: Decision,
        coordinator_epoch: u64,
    ) -> (PartitionResponse, Vec<PartitionEffect>) {
        let Ok(id) = i64::try_from(producer_id) else {
            return (PartitionResponse::Rejected(format!("producer id {producer_id} is out of range")), vec![]);
        };
        match self.txns.on_marker(producer_id, producer_epoch, decision, self.next_offset) {
            Err(error) => refused(error.code, error.message),
            Ok(MarkerOutcome::Repeated) => (PartitionResponse::MarkerWritten { offset: None }, vec![]),
            Ok(MarkerOutcome::Closed | MarkerOutcome::NothingOpen) => {
                let producer = strata_record::ProducerFields { producer_id: id, producer_epoch, base_sequence: -1 };
                let epoch = i32::try_from(coordinator_epoch).unwrap_or(i32::MAX);
                let timestamp = i64::try_from(self.clock_ms).unwrap_or(i64::MAX);
                let mut batch =
                    strata_record::encode_control_batch(producer, decision == Decision::Commit, epoch, timestamp)
                        .to_vec();
                let offset = self.next_offset;
                strata_record::set_base_offset(&mut batch, offset);
                self.next_offset += 1;
                self.appended_bytes_total += batch.len() as u64;
                (
                    PartitionResponse::MarkerWritten { offset: Some(offset) },
                    vec![PartitionEffect::Write { base_offset: offset, batch }],
                )
            }
        }
    }

    fn append(
        &mut self,
        producers: &mut ProducerTable,
        keys: &mut dyn KeyIndex,
        mut batch: Vec<u8>,
        dedup_window_ms: u64,
        keyed: Vec<KeyedRecord>,
    ) -> (PartitionResponse, Vec<PartitionEffect>) {
        let header = match strata_record::read_header(&batch) {
            Ok(header) => header,
            // The leader validated the batch; a bad one here means a bug
            // upstream, and it must not stop the group.
            Err(err) => return (PartitionResponse::Rejected(format!("unreadable batch: {err}")), vec![]),
        };
        if header.last_offset_delta < 0 || header.total_len() != batch.len() {
            return (PartitionResponse::Rejected("batch framing does not match its length".into()), vec![]);
        }
        let sent_count = header.last_offset_delta as u32 + 1;
        let producer_id = header.producer_id;
        let idempotent = producer_id >= 0;
        let transactional = header.is_transactional();
        if header.is_control() || (transactional && !idempotent) {
            // The leader refuses both before proposing.
            return (
                PartitionResponse::Rejected("a control batch, or a transactional one without producer".into()),
                vec![],
            );
        }
        let (epoch, first_sequence) = (header.producer_epoch, header.base_sequence);
        let last_sequence = sequence_after(first_sequence.max(0), sent_count - 1);
        let mut effects = Vec::new();

        // The test-only mutation `mutation-no-dedup` skips this check, so the
        // fault harness can prove it notices a server that stores retries.
        if idempotent && !cfg!(feature = "mutation-no-dedup") {
            match producers.get(producer_id) {
                Some(entry) if epoch < entry.epoch => {
                    return refused(
                        ErrorCode::ProducerFenced,
                        format!(
                            "producer {producer_id} has epoch {} on this partition; epoch {epoch} is fenced",
                            entry.epoch
                        ),
                    )
                }
                Some(entry) if epoch == entry.epoch => {
                    if let Some(done) = entry
                        .batches
                        .iter()
                        .find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
                    {
                        return (
                            PartitionResponse::Appended {
                                base_offset: done.base_offset,
                                record_count: done.record_count,
                                duplicates: done.duplicates.clone(),
                                duplicate_batch: true,
                            },
                            effects,
                        );
                    }
                    let expected = entry.last_sequence().map_or(0, |last| sequence_after(last, 1));
                    if first_sequence != expected {
                        return refused(
                            ErrorCode::OutOfOrderSequence,
                            format!(
                                "producer {producer_id} sent sequence {first_sequence}; {expected} was expected next"
                            ),
                        );
                    }
                }
                // A newer epoch, or a producer this partition does not know
                // (new, or expired): it must start at sequence 0. Accepting
                // any sequence would let a producer's second batch, arriving
                // first, be stored before its first.
                _ if first_sequence != 0 => {
                    return refused(
                        ErrorCode::OutOfOrderSequence,
                        format!(
                            "producer {producer_id} epoch {epoch} is new to this partition and must start at \
                             sequence 0, not {first_sequence}"
                        ),
                    )
                }
                _ => {
                    if producers.get(producer_id).is_none() {
                        if let Some(evicted) = producers.make_room() {
                            effects.push(PartitionEffect::DeleteProducer { producer_id: evicted });
                        }
                    }
                }
            }
        }

        if transactional {
            if let Err(error) = self.txns.check_data(producer_id as u64, epoch) {
                return refused(error.code, error.message);
            }
        }

        // Idempotency keys: a key stored within the window, or earlier in
        // this batch, makes its record a duplicate.
        let expires_ms = self.clock_ms.saturating_add(dedup_window_ms);
        let mut duplicates: Vec<(u32, Original)> = Vec::new();
        // Keys first seen in this batch, with their record's index. A map,
        // not a scan: a batch may hold up to 100,000 keyed records.
        let mut fresh: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
        for KeyedRecord { index, key } in keyed {
            if index >= sent_count {
                return (PartitionResponse::Rejected(format!("keyed record {index} is past the batch")), vec![]);
            }
            if let Some(&first) = fresh.get(&key) {
                duplicates.push((index, Original::InBatch(first)));
                continue;
            }
            match keys.lookup(&key, self.next_offset) {
                Some((offset, key_expires_ms)) if key_expires_ms > self.clock_ms => {
                    assert!(offset < self.next_offset, "key index answered offset {offset} at or past the log end");
                    duplicates.push((index, Original::Stored(offset)))
                }
                _ => {
                    fresh.insert(key, index);
                }
            }
        }
        duplicates.sort_unstable_by_key(|d| d.0);
        let base_offset = self.next_offset;
        let dropped = |index: u32| duplicates.binary_search_by_key(&index, |d| d.0).is_ok();
        // Offset of a stored record: base + its rank among stored records.
        let offset_of = |index: u32| base_offset + index as u64 - duplicates.partition_point(|d| d.0 < index) as u64;
        let resolved: Vec<(u32, u64)> = duplicates
            .iter()
            .map(|&(index, original)| match original {
                Original::Stored(offset) => (index, offset),
                Original::InBatch(first) => (index, offset_of(first)),
            })
            .collect();
        let record_count = sent_count - duplicates.len() as u32;

        if record_count > 0 {
            if !duplicates.is_empty() {
                batch = match without_records(&batch, &dropped) {
                    Ok(filtered) => filtered,
                    Err(err) => return (PartitionResponse::Rejected(format!("cannot rebuild batch: {err}")), vec![]),
                };
            }
            strata_record::set_base_offset(&mut batch, base_offset);
            if transactional {
                self.txns
                    .on_data(producer_id as u64, epoch, base_offset)
                    .expect("checked above, nothing changed since");
            }
            self.next_offset += record_count as u64;
            self.appended_bytes_total += batch.len() as u64;
            for (key, index) in fresh {
                effects.push(PartitionEffect::PutKey { key, offset: offset_of(index), expires_ms });
            }
            effects.push(PartitionEffect::Write { base_offset, batch });
        }
        if idempotent {
            let record =
                BatchRecord { first_sequence, last_sequence, base_offset, record_count, duplicates: resolved.clone() };
            let entry = producers.record(producer_id, epoch, record, self.clock_ms).clone();
            effects.push(PartitionEffect::PutProducer { producer_id, entry });
        }
        (
            PartitionResponse::Appended { base_offset, record_count, duplicates: resolved, duplicate_batch: false },
            effects,
        )
    }
}

/// The batch re-encoded without the records `drop` names, keeping the
/// producer fields and every other record as it was.
fn without_records(batch: &[u8], drop: &dyn Fn(u32) -> bool) -> Result<Vec<u8>, strata_record::BatchError> {
    let header = strata_record::read_header(batch)?;
    let records: Vec<strata_record::Record> = strata_record::decode_batch(batch)?
        .into_iter()
        .enumerate()
        .filter(|(index, _)| !drop(*index as u32))
        .map(|(_, r)| strata_record::Record {
            key: r.key,
            value: r.value,
            headers: r.headers,
            timestamp_ms: r.timestamp_ms,
        })
        .collect();
    let producer = strata_record::ProducerFields {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
    };
    Ok(strata_record::encode_batch(&records, producer)?.to_vec())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use strata_record::{decode_batch, encode_batch, read_header, Header, ProducerFields, Record};

    /// The key index as a map, applying `PutKey` effects like the store does.
    #[derive(Default)]
    struct MapIndex(BTreeMap<Vec<u8>, (u64, u64)>);

    impl KeyIndex for MapIndex {
        fn lookup(&mut self, key: &[u8], below_offset: u64) -> Option<(u64, u64)> {
            self.0.get(key).copied().filter(|(offset, _)| *offset < below_offset)
        }
    }

    struct Machine {
        state: PartitionState,
        producers: ProducerTable,
        keys: MapIndex,
    }

    impl Machine {
        fn new() -> Machine {
            Machine { state: PartitionState::default(), producers: ProducerTable::default(), keys: MapIndex::default() }
        }

        fn apply(&mut self, command: PartitionCommand) -> (PartitionResponse, Vec<PartitionEffect>) {
            let (response, effects) = self.state.apply(&mut self.producers, &mut self.keys, command);
            for effect in &effects {
                if let PartitionEffect::PutKey { key, offset, expires_ms } = effect {
                    self.keys.0.insert(key.clone(), (*offset, *expires_ms));
                }
            }
            (response, effects)
        }

        fn append(&mut self, batch: Vec<u8>, keys: Vec<KeyedRecord>, time_ms: u64) -> PartitionResponse {
            self.apply(append_command(batch, keys, time_ms)).0
        }
    }

    fn append_command(batch: Vec<u8>, keys: Vec<KeyedRecord>, time_ms: u64) -> PartitionCommand {
        PartitionCommand::Append { batch, time_ms, dedup_window_ms: 1000, producer_expiry_ms: 10_000, keys }
    }

    fn records(n: usize) -> Vec<Record> {
        (0..n).map(|i| Record { value: Some(format!("v{i}").into_bytes().into()), ..Default::default() }).collect()
    }

    fn batch(n: usize) -> Vec<u8> {
        encode_batch(&records(n), ProducerFields::default()).unwrap().to_vec()
    }

    fn idempotent(n: usize, producer_id: i64, epoch: i16, sequence: i32) -> Vec<u8> {
        let fields = ProducerFields { producer_id, producer_epoch: epoch, base_sequence: sequence };
        encode_batch(&records(n), fields).unwrap().to_vec()
    }

    fn appended(base_offset: u64, record_count: u32) -> PartitionResponse {
        PartitionResponse::Appended { base_offset, record_count, duplicates: vec![], duplicate_batch: false }
    }

    fn code_of(response: &PartitionResponse) -> Option<ErrorCode> {
        match response {
            PartitionResponse::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn offsets_are_dense_and_written_into_the_batch() {
        let mut m = Machine::new();
        let mut expected_base = 0;
        for n in [1, 3, 5] {
            let (response, effects) = m.apply(append_command(batch(n), vec![], 1));
            assert_eq!(response, appended(expected_base, n as u32));
            let [PartitionEffect::Write { base_offset, batch }] = effects.as_slice() else { panic!("{effects:?}") };
            assert_eq!(*base_offset, expected_base);
            assert_eq!(read_header(batch).unwrap().base_offset, expected_base);
            expected_base += n as u64;
        }
        assert_eq!(m.state.next_offset, 9);
        assert_eq!(m.state.retained_bytes(), m.state.appended_bytes_total);
    }

    #[test]
    fn a_retried_batch_answers_the_original_offset_and_stores_nothing() {
        let mut m = Machine::new();
        assert_eq!(m.append(idempotent(2, 7, 0, 0), vec![], 1), appended(0, 2));
        assert_eq!(m.append(idempotent(3, 7, 0, 2), vec![], 1), appended(2, 3));
        let before = m.state.clone();
        let (response, effects) = m.apply(append_command(idempotent(2, 7, 0, 0), vec![], 2));
        assert_eq!(
            response,
            PartitionResponse::Appended { base_offset: 0, record_count: 2, duplicates: vec![], duplicate_batch: true }
        );
        assert!(effects.is_empty());
        assert_eq!(m.state.next_offset, before.next_offset);
        // The next in sequence is accepted.
        assert_eq!(m.append(idempotent(1, 7, 0, 5), vec![], 3), appended(5, 1));
    }

    #[test]
    fn every_one_of_the_last_five_batches_is_recognised() {
        let mut m = Machine::new();
        for i in 0..7 {
            m.append(idempotent(1, 1, 0, i), vec![], 1);
        }
        for i in 2..7 {
            let response = m.append(idempotent(1, 1, 0, i), vec![], 1);
            assert!(
                matches!(response, PartitionResponse::Appended { duplicate_batch: true, base_offset, .. } if base_offset == i as u64)
            );
        }
        // Older than the last five: no answer to give, so out of order.
        assert_eq!(code_of(&m.append(idempotent(1, 1, 0, 1), vec![], 1)), Some(ErrorCode::OutOfOrderSequence));
        assert_eq!(m.state.next_offset, 7);
    }

    #[test]
    fn a_new_producer_must_start_at_sequence_zero() {
        let mut m = Machine::new();
        // Its second batch arriving first must not be stored first.
        assert_eq!(code_of(&m.append(idempotent(2, 5, 0, 2), vec![], 1)), Some(ErrorCode::OutOfOrderSequence));
        assert_eq!(m.append(idempotent(2, 5, 0, 0), vec![], 1), appended(0, 2));
        assert_eq!(m.append(idempotent(2, 5, 0, 2), vec![], 1), appended(2, 2));
    }

    #[test]
    fn a_gap_in_sequence_is_out_of_order_and_changes_nothing() {
        let mut m = Machine::new();
        m.append(idempotent(2, 3, 0, 0), vec![], 1);
        let before = (m.state.clone(), m.producers.clone());
        assert_eq!(code_of(&m.append(idempotent(1, 3, 0, 5), vec![], 1)), Some(ErrorCode::OutOfOrderSequence));
        assert_eq!((m.state.next_offset, &m.producers), (before.0.next_offset, &before.1));
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_new_epoch_starts_at_zero() {
        let mut m = Machine::new();
        m.append(idempotent(1, 4, 0, 0), vec![], 1);
        assert_eq!(m.append(idempotent(1, 4, 1, 0), vec![], 1), appended(1, 1));
        assert_eq!(code_of(&m.append(idempotent(1, 4, 0, 1), vec![], 1)), Some(ErrorCode::ProducerFenced));
        assert_eq!(code_of(&m.append(idempotent(1, 4, 2, 9), vec![], 1)), Some(ErrorCode::OutOfOrderSequence));
        assert_eq!(m.state.next_offset, 2);
    }

    #[test]
    fn idle_producers_expire_with_the_partition_clock() {
        let mut m = Machine::new();
        m.append(idempotent(1, 1, 0, 0), vec![], 1_000);
        m.append(idempotent(1, 2, 0, 0), vec![], 5_000);
        assert_eq!(m.state.producer_count, 2);
        // Expiry is 10 s: at 12 s producer 1 (last seen at 1 s) goes.
        let (_, effects) = m.apply(append_command(batch(1), vec![], 12_000));
        assert!(effects.contains(&PartitionEffect::DeleteProducer { producer_id: 1 }));
        assert_eq!(m.state.producer_count, 1);
        // A clock that goes back does not bring it back or expire more.
        m.apply(append_command(batch(1), vec![], 2_000));
        assert_eq!(m.state.clock_ms, 12_000);
        assert_eq!(m.state.producer_count, 1);
        // The expired producer is new again: it must start over at 0.
        assert_eq!(code_of(&m.append(idempotent(1, 1, 0, 40), vec![], 12_000)), Some(ErrorCode::OutOfOrderSequence));
        assert_eq!(m.append(idempotent(1, 1, 0, 0), vec![], 12_000), appended(4, 1));
    }

    fn keyed_records(keys: &[&str]) -> (Vec<u8>, Vec<KeyedRecord>) {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Record {
                value: Some(format!("v{i}").into_bytes().into()),
                headers: vec![Header {
                    key: strata_core::IDEMPOTENCY_KEY_HEADER.into(),
                    value: Some(k.as_bytes().to_vec().into()),
                }],
                ..Default::default()
            })
            .collect();
        let keyed =
            keys.iter().enumerate().map(|(i, k)| KeyedRecord { index: i as u32, key: k.as_bytes().to_vec() }).collect();
        (encode_batch(&records, ProducerFields::default()).unwrap().to_vec(), keyed)
    }

    #[test]
    fn a_key_seen_in_the_window_is_not_stored_again() {
        let mut m = Machine::new();
        let (b, k) = keyed_records(&["a", "b"]);
        assert_eq!(m.append(b, k, 100), appended(0, 2));
        // "b" again, and a new "c": only "c" is stored, "b" answers offset 1.
        let (b, k) = keyed_records(&["b", "c"]);
        let (response, effects) = m.apply(append_command(b, k, 600));
        assert_eq!(
            response,
            PartitionResponse::Appended {
                base_offset: 2,
                record_count: 1,
                duplicates: vec![(0, 1)],
                duplicate_batch: false
            }
        );
        let stored = effects
            .iter()
            .find_map(|e| match e {
                PartitionEffect::Write { batch, .. } => Some(decode_batch(batch).unwrap()),
                _ => None,
            })
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].offset, 2);
        assert_eq!(stored[0].value.as_deref(), Some(&b"v1"[..]));
        // Every key a duplicate: nothing stored, nothing written.
        let (b, k) = keyed_records(&["a", "c"]);
        let (response, effects) = m.apply(append_command(b, k, 700));
        assert_eq!(
            response,
            PartitionResponse::Appended {
                base_offset: 3,
                record_count: 0,
                duplicates: vec![(0, 0), (1, 2)],
                duplicate_batch: false
            }
        );
        assert!(effects.is_empty());
        // After the window (1 s from 100 ms) "a" is stored again.
        let (b, k) = keyed_records(&["a"]);
        assert_eq!(m.append(b, k, 1_100), appended(3, 1));
    }

    #[test]
    fn a_key_twice_in_one_batch_is_stored_once() {
        let mut m = Machine::new();
        let (b, k) = keyed_records(&["x", "y", "x"]);
        assert_eq!(
            m.append(b, k, 1),
            PartitionResponse::Appended {
                base_offset: 0,
                record_count: 2,
                duplicates: vec![(2, 0)],
                duplicate_batch: false
            }
        );
        assert_eq!(m.state.next_offset, 2);
    }

    #[test]
    fn a_retried_batch_with_key_duplicates_gets_the_same_answer() {
        let mut m = Machine::new();
        let (b, k) = keyed_records(&["k1"]);
        m.append(b, k, 1);
        let make = || {
            let records: Vec<Record> = ["k1", "k2"]
                .iter()
                .map(|key| Record {
                    value: Some(b"v".to_vec().into()),
                    headers: vec![Header {
                        key: strata_core::IDEMPOTENCY_KEY_HEADER.into(),
                        value: Some(key.as_bytes().to_vec().into()),
                    }],
                    ..Default::default()
                })
                .collect();
            let fields = ProducerFields { producer_id: 9, producer_epoch: 0, base_sequence: 0 };
            let keyed =
                vec![KeyedRecord { index: 0, key: b"k1".to_vec() }, KeyedRecord { index: 1, key: b"k2".to_vec() }];
            (encode_batch(&records, fields).unwrap().to_vec(), keyed)
        };
        let (b, k) = make();
        let first = m.append(b, k, 2);
        assert_eq!(
            first,
            PartitionResponse::Appended {
                base_offset: 1,
                record_count: 1,
                duplicates: vec![(0, 0)],
                duplicate_batch: false
            }
        );
        let (b, k) = make();
        let PartitionResponse::Appended { base_offset, record_count, duplicates, duplicate_batch } = m.append(b, k, 3)
        else {
            panic!()
        };
        assert!(duplicate_batch);
        assert_eq!((base_offset, record_count, duplicates), (1, 1, vec![(0, 0)]));
        assert_eq!(m.state.next_offset, 2);
    }

    #[test]
    fn trims_are_idempotent_and_bounded_by_the_log() {
        let mut m = Machine::new();
        for _ in 0..4 {
            m.append(batch(2), vec![], 1);
        }
        let one = m.state.appended_bytes_total / 4;
        let (response, effects) = m.apply(PartitionCommand::Trim { new_log_start: 4, trimmed_bytes_total: 2 * one });
        assert_eq!(response, PartitionResponse::Trimmed { log_start_offset: 4 });
        assert_eq!(effects, vec![PartitionEffect::DeleteBelow { offset: 4 }]);
        assert_eq!(m.state.retained_bytes(), 2 * one);
        // The same trim again, or an older one, changes nothing.
        let snapshot = m.state.clone();
        for (new_log_start, bytes) in [(4, 2 * one), (2, one), (9, 4 * one)] {
            let (response, _) = m.apply(PartitionCommand::Trim { new_log_start, trimmed_bytes_total: bytes });
            assert!(matches!(response, PartitionResponse::Rejected(_)));
        }
        assert_eq!(m.state, snapshot);
        // Up to the end is allowed: an empty log keeps its next offset.
        m.apply(PartitionCommand::Trim { new_log_start: 8, trimmed_bytes_total: 4 * one });
        assert_eq!((m.state.log_start_offset, m.state.next_offset, m.state.retained_bytes()), (8, 8, 0));
    }

    #[test]
    fn a_bad_batch_is_rejected_and_changes_nothing() {
        let mut m = Machine::new();
        let mut b = batch(2);
        b.truncate(b.len() - 1);
        let (response, effects) = m.apply(append_command(b, vec![], 1));
        assert!(matches!(response, PartitionResponse::Rejected(_)));
        assert!(effects.is_empty());
        assert_eq!(m.state.next_offset, 0);
    }

    fn transactional(n: usize, producer_id: i64, epoch: i16, sequence: i32) -> Vec<u8> {
        let fields = ProducerFields { producer_id, producer_epoch: epoch, base_sequence: sequence };
        strata_record::encode_transactional_batch(&records(n), fields).unwrap().to_vec()
    }

    fn marker(producer_id: u64, producer_epoch: i16, decision: Decision) -> PartitionCommand {
        PartitionCommand::Marker { producer_id, producer_epoch, decision, coordinator_epoch: 4, time_ms: 2 }
    }

    #[test]
    fn a_transaction_holds_the_stable_offset_until_its_marker_and_retention_waits() {
        let mut m = Machine::new();
        assert_eq!(m.append(batch(2), vec![], 1), appended(0, 2));
        assert_eq!(m.append(transactional(3, 7, 0, 0), vec![], 1), appended(2, 3));
        assert_eq!(m.append(batch(1), vec![], 1), appended(5, 1));
        assert_eq!((m.state.next_offset, m.state.last_stable_offset()), (6, 2));
        let (response, _) = m.apply(PartitionCommand::Trim { new_log_start: 5, trimmed_bytes_total: 0 });
        assert!(matches!(response, PartitionResponse::Rejected(_)), "retention never passes the LSO: {response:?}");
        let (response, effects) = m.apply(marker(7, 1, Decision::Commit));
        assert_eq!(response, PartitionResponse::MarkerWritten { offset: Some(6) });
        let [PartitionEffect::Write { base_offset: 6, batch }] = effects.as_slice() else { panic!("{effects:?}") };
        let header = read_header(batch).unwrap();
        assert!(header.is_control() && header.base_offset == 6 && header.producer_id == 7);
        assert_eq!((m.state.next_offset, m.state.last_stable_offset()), (7, 7));
        // A resumed coordinator writes the same marker again: nothing new.
        assert_eq!(
            m.apply(marker(7, 1, Decision::Commit)),
            (PartitionResponse::MarkerWritten { offset: None }, vec![])
        );
        // A late send of the finished transaction is refused; the next one
        // (at the marker's epoch, from sequence 0) is taken.
        assert_eq!(code_of(&m.append(transactional(1, 7, 0, 3), vec![], 3)), Some(ErrorCode::ProducerFenced));
        assert_eq!(m.append(transactional(1, 7, 1, 0), vec![], 3), appended(7, 1));
        let (response, _) = m.apply(marker(7, 2, Decision::Abort));
        assert_eq!(response, PartitionResponse::MarkerWritten { offset: Some(8) });
        assert!(!m.state.txns.visible(Some(7), 7, false, 9), "aborted");
        assert!(m.state.txns.visible(Some(7), 2, false, 9), "committed");
        let stale = m.apply(marker(7, 1, Decision::Commit)).0;
        assert_eq!(code_of(&stale), Some(ErrorCode::InvalidTxnState));
        let (response, _) = m.apply(PartitionCommand::Trim { new_log_start: 9, trimmed_bytes_total: 0 });
        assert_eq!(response, PartitionResponse::Trimmed { log_start_offset: 9 });
        assert!(m.state.txns.aborted.is_empty(), "the aborted index forgets what retention deleted");
    }

    #[test]
    fn producers_cannot_append_control_batches_or_transactions_without_an_id() {
        let mut m = Machine::new();
        let marker = strata_record::encode_control_batch(ProducerFields::default(), true, 0, 0).to_vec();
        assert!(matches!(m.append(marker, vec![], 1), PartitionResponse::Rejected(_)));
        let anonymous = strata_record::encode_transactional_batch(&records(1), ProducerFields::default()).unwrap();
        assert!(matches!(m.append(anonymous.to_vec(), vec![], 1), PartitionResponse::Rejected(_)));
        assert_eq!(m.state.next_offset, 0);
    }
}
