//! Record batches in Kafka's RecordBatch v2 layout: encoding, validation and
//! decoding.
//!
//! A batch is the unit Strata replicates and stores: one producer request
//! carries one batch, the leader checks it with [`validate_batch`], stamps its
//! offset with [`set_base_offset`] and appends the bytes unchanged. Fetch
//! answers are concatenated batches, walked with [`BatchIter`] and turned into
//! records with [`decode_batch`] or [`decode_records_from`].
//!
//! Invariants:
//! - The byte layout is exactly Kafka's RecordBatch v2 (magic 2), big-endian,
//!   with a CRC-32C (Castagnoli) over everything from `attributes` to the end.
//!   `baseOffset` and `partitionLeaderEpoch` lie outside the CRC, so the leader
//!   can rewrite them without recomputing it.
//! - Offset deltas inside a batch are `0, 1, 2, ..`; a record's offset is
//!   `baseOffset + offsetDelta`.
//! - Compressed batches (non-zero low 3 bits of `attributes`) are rejected,
//!   and a producer's batch must have no other `attributes` bit either
//!   (LogAppendTime, transactional, control): Strata implements none yet.
//! - Untrusted input never panics and never makes us allocate more than the
//!   input could describe: every defect is a [`BatchError`].
//!
//! No I/O, no async: plain functions over byte slices.

mod decode;
mod encode;
mod error;
mod header;
mod record;
mod varint;

#[cfg(test)]
mod test_util;

pub use bytes::Bytes;
pub use decode::{decode_batch, decode_records_from, validate_batch, validate_batch_with_header, BatchIter};
pub use encode::{
    control_record_commits, encode_batch, encode_control_batch, encode_transactional_batch, encoded_record_len,
};
pub use error::BatchError;
pub use header::{
    read_header, set_base_offset, set_partition_leader_epoch, set_producer_fields, BatchHeader, BATCH_HEADER_LEN,
};
pub use record::{sequence_after, Header, ProducerFields, Record, StoredRecord};
