//! The partition state machine: assigns offsets to appended batches and
//! moves the log start forward for retention.
//!
//! Invariant: `log_start_offset <= next_offset`; offsets are assigned
//! densely from `next_offset` and never reused. The Raft log index of an
//! entry and the offsets of its records are different numbers; the only
//! translation between them happens in `apply`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionCommand {
    /// Append one record batch (RecordBatch v2, validated by the leader
    /// before proposing). Its base offset field is overwritten on apply.
    Append {
        #[serde(with = "serde_bytes")]
        batch: Vec<u8>,
    },
    /// Retention: drop every batch below `new_log_start` (a batch boundary
    /// chosen by the leader). `trimmed_bytes_total` is the number of bytes
    /// ever appended below `new_log_start`, so the command is idempotent and
    /// the retained size stays exact whatever order trims are applied in.
    Trim { new_log_start: u64, trimmed_bytes_total: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionResponse {
    Appended {
        base_offset: u64,
        record_count: u32,
    },
    Trimmed {
        log_start_offset: u64,
    },
    /// The command changed nothing; the text says why.
    Rejected(String),
}

/// What the storage layer must write after an apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionEffect {
    /// Store `batch` (its base offset field already set) under `base_offset`.
    Write { base_offset: u64, batch: Vec<u8> },
    /// Delete every stored batch with a base offset below `offset`.
    DeleteBelow { offset: u64 },
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
}

impl PartitionState {
    /// Bytes currently stored.
    pub fn retained_bytes(&self) -> u64 {
        self.appended_bytes_total - self.trimmed_bytes_total
    }

    pub fn apply(&mut self, command: PartitionCommand) -> (PartitionResponse, Option<PartitionEffect>) {
        let result = match command {
            PartitionCommand::Append { mut batch } => {
                let header = match strata_record::read_header(&batch) {
                    Ok(header) => header,
                    // The leader validated the batch; a bad one here means a
                    // bug upstream, and it must not stop the group.
                    Err(err) => return (PartitionResponse::Rejected(format!("unreadable batch: {err}")), None),
                };
                if header.last_offset_delta < 0 || header.total_len() != batch.len() {
                    return (PartitionResponse::Rejected("batch framing does not match its length".into()), None);
                }
                let record_count = header.last_offset_delta as u32 + 1;
                let base_offset = self.next_offset;
                strata_record::set_base_offset(&mut batch, base_offset);
                self.next_offset += record_count as u64;
                self.appended_bytes_total += batch.len() as u64;
                (
                    PartitionResponse::Appended { base_offset, record_count },
                    Some(PartitionEffect::Write { base_offset, batch }),
                )
            }
            PartitionCommand::Trim { new_log_start, trimmed_bytes_total } => {
                if new_log_start <= self.log_start_offset {
                    (PartitionResponse::Rejected(format!("log already starts at {}", self.log_start_offset)), None)
                } else if new_log_start > self.next_offset || trimmed_bytes_total > self.appended_bytes_total {
                    (PartitionResponse::Rejected(format!("trim to {new_log_start} is past the log end")), None)
                } else {
                    self.log_start_offset = new_log_start;
                    self.trimmed_bytes_total = self.trimmed_bytes_total.max(trimmed_bytes_total);
                    (
                        PartitionResponse::Trimmed { log_start_offset: new_log_start },
                        Some(PartitionEffect::DeleteBelow { offset: new_log_start }),
                    )
                }
            }
        };
        debug_assert!(self.log_start_offset <= self.next_offset);
        debug_assert!(self.trimmed_bytes_total <= self.appended_bytes_total);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_record::{encode_batch, read_header, ProducerFields, Record};

    fn batch(n: usize) -> Vec<u8> {
        let records: Vec<Record> =
            (0..n).map(|i| Record { value: Some(format!("v{i}").into_bytes().into()), ..Default::default() }).collect();
        encode_batch(&records, ProducerFields::default()).unwrap().to_vec()
    }

    #[test]
    fn offsets_are_dense_and_written_into_the_batch() {
        let mut state = PartitionState::default();
        let mut expected_base = 0;
        for n in [1, 3, 5] {
            let (response, effect) = state.apply(PartitionCommand::Append { batch: batch(n) });
            assert_eq!(response, PartitionResponse::Appended { base_offset: expected_base, record_count: n as u32 });
            let Some(PartitionEffect::Write { base_offset, batch }) = effect else { panic!("no write") };
            assert_eq!(base_offset, expected_base);
            assert_eq!(read_header(&batch).unwrap().base_offset, expected_base);
            expected_base += n as u64;
        }
        assert_eq!(state.next_offset, 9);
        assert_eq!(state.retained_bytes(), state.appended_bytes_total);
    }

    #[test]
    fn a_garbage_batch_is_rejected_and_changes_nothing() {
        let mut state = PartitionState::default();
        let before = state.clone();
        let (response, effect) = state.apply(PartitionCommand::Append { batch: vec![1, 2, 3] });
        assert!(matches!(response, PartitionResponse::Rejected(_)));
        assert!(effect.is_none());
        assert_eq!(state, before);
    }

    #[test]
    fn trim_is_idempotent_and_bounded_by_the_log_end() {
        let mut state = PartitionState::default();
        for _ in 0..4 {
            state.apply(PartitionCommand::Append { batch: batch(2) });
        }
        let one = state.appended_bytes_total / 4;
        let (response, effect) = state.apply(PartitionCommand::Trim { new_log_start: 4, trimmed_bytes_total: 2 * one });
        assert_eq!(response, PartitionResponse::Trimmed { log_start_offset: 4 });
        assert_eq!(effect, Some(PartitionEffect::DeleteBelow { offset: 4 }));
        assert_eq!(state.retained_bytes(), 2 * one);
        // The same trim again, or an older one, changes nothing.
        let snapshot = state.clone();
        assert!(matches!(
            state.apply(PartitionCommand::Trim { new_log_start: 4, trimmed_bytes_total: 2 * one }).0,
            PartitionResponse::Rejected(_)
        ));
        assert!(matches!(
            state.apply(PartitionCommand::Trim { new_log_start: 2, trimmed_bytes_total: one }).0,
            PartitionResponse::Rejected(_)
        ));
        // Past the end is refused.
        assert!(matches!(
            state.apply(PartitionCommand::Trim { new_log_start: 9, trimmed_bytes_total: 4 * one }).0,
            PartitionResponse::Rejected(_)
        ));
        assert_eq!(state, snapshot);
        // Up to the end is allowed: an empty log keeps its next offset.
        state.apply(PartitionCommand::Trim { new_log_start: 8, trimmed_bytes_total: 4 * one });
        assert_eq!((state.log_start_offset, state.next_offset, state.retained_bytes()), (8, 8, 0));
    }
}
