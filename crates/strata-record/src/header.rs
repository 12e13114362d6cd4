//! The fixed 61-byte batch header: field positions, parsing and the two
//! fields the leader rewrites.

use crate::error::BatchError;

/// Size of the fixed part of a v2 batch, before the first record.
pub const BATCH_HEADER_LEN: usize = 61;

// Field positions. The names follow Kafka's DefaultRecordBatch.
pub(crate) const BASE_OFFSET_AT: usize = 0;
pub(crate) const BATCH_LENGTH_AT: usize = 8;
pub(crate) const LEADER_EPOCH_AT: usize = 12;
pub(crate) const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
pub(crate) const ATTRIBUTES_AT: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_AT: usize = 23;
pub(crate) const BASE_TIMESTAMP_AT: usize = 27;
pub(crate) const MAX_TIMESTAMP_AT: usize = 35;
pub(crate) const PRODUCER_ID_AT: usize = 43;
pub(crate) const PRODUCER_EPOCH_AT: usize = 51;
pub(crate) const BASE_SEQUENCE_AT: usize = 53;
pub(crate) const RECORD_COUNT_AT: usize = 57;

/// baseOffset + batchLength: the bytes `batchLength` does not count.
pub(crate) const LOG_OVERHEAD: usize = BATCH_LENGTH_AT + 4;
/// The CRC covers from `attributes` to the end of the batch.
pub(crate) const CRC_START: usize = ATTRIBUTES_AT;
pub(crate) const MAGIC_V2: i8 = 2;
/// Low 3 bits of `attributes`: the compression codec, 0 = none.
pub(crate) const COMPRESSION_MASK: i16 = 0x07;
/// `attributes` bit 3: the timestamps are the broker's append time.
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 0x08;
/// `attributes` bit 4: the batch belongs to a transaction.
pub(crate) const TRANSACTIONAL_BIT: i16 = 0x10;
/// `attributes` bit 5: a control batch (transaction markers).
pub(crate) const CONTROL_BIT: i16 = 0x20;

const _: () = assert!(RECORD_COUNT_AT + 4 == BATCH_HEADER_LEN);

/// The parsed fixed header of one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub batch_length: u32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: u32,
}

impl BatchHeader {
    /// Bytes the whole batch occupies, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Part of a transaction (attribute bit 0x10).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// A control batch: a transaction marker (attribute bit 0x20).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// The offset right after this batch's last record.
    pub fn next_offset(&self) -> u64 {
        // Saturating: a hand-built header must not make this panic.
        self.base_offset.saturating_add_signed(i64::from(self.last_offset_delta) + 1)
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(array(bytes, at))
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(array(bytes, at))
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(array(bytes, at))
}

/// Parses the fixed header of the batch at the start of `bytes` without
/// checking the CRC or the magic byte; only the first
/// [`BATCH_HEADER_LEN`] bytes are needed, so a caller may read the header
/// before it has the rest of the batch.
///
/// Corrupt when `bytes` is shorter than a header or when a field that sizes or
/// numbers the batch is out of range: negative baseOffset (Kafka offsets are
/// non-negative i64), batchLength below the header's own size, negative
/// recordCount or lastOffsetDelta.
pub fn read_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < BATCH_HEADER_LEN {
        return Err(BatchError::corrupt(format!(
            "{} bytes are shorter than the {BATCH_HEADER_LEN}-byte batch header",
            bytes.len()
        )));
    }
    let base_offset = i64_at(bytes, BASE_OFFSET_AT);
    if base_offset < 0 {
        return Err(BatchError::corrupt(format!("base offset {base_offset} is negative")));
    }
    let batch_length = i32_at(bytes, BATCH_LENGTH_AT);
    let min_length = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;
    if batch_length < min_length {
        return Err(BatchError::corrupt(format!(
            "batch length {batch_length} is below the {min_length} bytes of the header after it"
        )));
    }
    let last_offset_delta = i32_at(bytes, LAST_OFFSET_DELTA_AT);
    if last_offset_delta < 0 {
        return Err(BatchError::corrupt(format!("last offset delta {last_offset_delta} is negative")));
    }
    let record_count = i32_at(bytes, RECORD_COUNT_AT);
    if record_count < 0 {
        return Err(BatchError::corrupt(format!("record count {record_count} is negative")));
    }
    Ok(BatchHeader {
        base_offset: base_offset as u64,
        batch_length: batch_length as u32,
        partition_leader_epoch: i32_at(bytes, LEADER_EPOCH_AT),
        magic: bytes[MAGIC_AT] as i8,
        crc: u32::from_be_bytes(array(bytes, CRC_AT)),
        attributes: i16_at(bytes, ATTRIBUTES_AT),
        last_offset_delta,
        base_timestamp: i64_at(bytes, BASE_TIMESTAMP_AT),
        max_timestamp: i64_at(bytes, MAX_TIMESTAMP_AT),
        producer_id: i64_at(bytes, PRODUCER_ID_AT),
        producer_epoch: i16_at(bytes, PRODUCER_EPOCH_AT),
        base_sequence: i32_at(bytes, BASE_SEQUENCE_AT),
        record_count: record_count as u32,
    })
}

fn assert_header_fits(batch: &[u8]) {
    assert!(
        batch.len() >= BATCH_HEADER_LEN,
        "batch of {} bytes is shorter than the {BATCH_HEADER_LEN}-byte header",
        batch.len()
    );
}

/// Overwrites baseOffset. It lies outside the CRC, so the batch stays valid;
/// this is how the leader assigns offsets without re-encoding.
///
/// Panics if `batch` is shorter than a header: callers hold a validated batch.
/// An offset above `i64::MAX` would make [`read_header`] refuse the batch.
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    assert_header_fits(batch);
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites partitionLeaderEpoch, which lies outside the CRC.
///
/// Panics if `batch` is shorter than a header.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert_header_fits(batch);
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Overwrites the producer id, epoch and base sequence and recomputes the
/// CRC (they lie inside it). A producer uses this to give an encoded batch
/// a new sequence without encoding its records again.
///
/// Panics if `batch` is shorter than a header.
pub fn set_producer_fields(batch: &mut [u8], producer: crate::ProducerFields) {
    assert_header_fits(batch);
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer.producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer.producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&producer.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::sample_batch;

    #[test]
    fn new_producer_fields_keep_the_batch_valid() {
        let mut batch = sample_batch(3, 100).to_vec();
        let fields = crate::ProducerFields { producer_id: 77, producer_epoch: 2, base_sequence: 40 };
        set_producer_fields(&mut batch, fields);
        let h = crate::validate_batch(&batch).unwrap();
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (77, 2, 40));
    }

    #[test]
    fn parses_fields_of_an_encoded_batch() {
        let batch = sample_batch(3, 100);
        let h = read_header(&batch).unwrap();
        assert_eq!(h.total_len(), batch.len());
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.magic, 2);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.next_offset(), 3);
        assert_eq!(h.base_timestamp, 100);
        assert_eq!(h.max_timestamp, 102);
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (-1, -1, -1));
        assert_eq!(h.partition_leader_epoch, -1);
        // Only the header is needed.
        assert_eq!(read_header(&batch[..BATCH_HEADER_LEN]).unwrap(), h);
    }

    #[test]
    fn rejects_short_and_inconsistent_headers() {
        let batch = sample_batch(1, 0).to_vec();
        assert!(matches!(read_header(&batch[..BATCH_HEADER_LEN - 1]), Err(BatchError::Corrupt(_))));
        assert!(matches!(read_header(&[]), Err(BatchError::Corrupt(_))));

        let mut b = batch.clone();
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&48i32.to_be_bytes());
        assert!(matches!(read_header(&b), Err(BatchError::Corrupt(_))));
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(read_header(&b), Err(BatchError::Corrupt(_))));

        let mut b = batch.clone();
        b[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(read_header(&b), Err(BatchError::Corrupt(_))));

        let mut b = batch.clone();
        b[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(read_header(&b), Err(BatchError::Corrupt(_))));

        let mut b = batch;
        set_base_offset(&mut b, u64::MAX);
        assert!(matches!(read_header(&b), Err(BatchError::Corrupt(_))));
    }

    #[test]
    fn setters_write_their_fields() {
        let mut b = sample_batch(2, 0).to_vec();
        set_base_offset(&mut b, 1234);
        set_partition_leader_epoch(&mut b, 7);
        let h = read_header(&b).unwrap();
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.next_offset(), 1236);
    }

    #[test]
    #[should_panic(expected = "shorter than")]
    fn set_base_offset_panics_on_short_input() {
        set_base_offset(&mut [0u8; 10], 1);
    }
}
