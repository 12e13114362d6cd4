//! Building a batch from records.

use bytes::Bytes;
use strata_core::limits::{MAX_BATCH_BYTES, MAX_RECORDS_PER_BATCH, MAX_RECORD_BYTES};

use crate::error::BatchError;
use crate::header::{BATCH_HEADER_LEN, CONTROL_BIT, CRC_AT, CRC_START, LOG_OVERHEAD, MAGIC_V2, TRANSACTIONAL_BIT};
use crate::record::{ProducerFields, Record};
use crate::varint::{put_varint, put_varlong, varint_len, varlong_len};

/// Size of a length prefix. Lengths above `i32::MAX` cannot be encoded, but
/// their size is still computed (as a varlong) so a caller can see the record
/// is over every bound instead of getting a wrapped, small answer.
fn len_prefix_len(n: usize) -> usize {
    varlong_len(i64::try_from(n).unwrap_or(i64::MAX))
}

fn nullable_len(b: &Option<Bytes>) -> usize {
    match b {
        None => varint_len(-1),
        Some(b) => len_prefix_len(b.len()) + b.len(),
    }
}

/// Size of a record after its own length prefix: the value of that prefix.
/// This is the "record size" the MAX_RECORD_BYTES bound applies to.
fn record_body_len(record: &Record, offset_delta: i32, timestamp_delta: i64) -> usize {
    let headers: usize =
        record.headers.iter().map(|h| len_prefix_len(h.key.len()) + h.key.len() + nullable_len(&h.value)).sum();
    1 // attributes
        + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + nullable_len(&record.key)
        + nullable_len(&record.value)
        + len_prefix_len(record.headers.len())
        + headers
}

/// Bytes one record adds to a batch (exact), so a client can fill batches up
/// to a byte bound. A batch's size is [`BATCH_HEADER_LEN`](crate::BATCH_HEADER_LEN)
/// plus the sum of this over its records.
pub fn encoded_record_len(record: &Record, offset_delta: i32, timestamp_delta: i64) -> usize {
    let body = record_body_len(record, offset_delta, timestamp_delta);
    len_prefix_len(body) + body
}

fn put_nullable(buf: &mut Vec<u8>, b: &Option<Bytes>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            // Fits: the caller checked the record against MAX_RECORD_BYTES.
            put_varint(buf, b.len() as i32);
            buf.extend_from_slice(b);
        }
    }
}

fn put_record(buf: &mut Vec<u8>, record: &Record, body_len: usize, offset_delta: i32, timestamp_delta: i64) {
    let start = buf.len();
    put_varint(buf, body_len as i32);
    let body_start = buf.len();
    buf.push(0); // record attributes: unused in v2
    put_varlong(buf, timestamp_delta);
    put_varint(buf, offset_delta);
    put_nullable(buf, &record.key);
    put_nullable(buf, &record.value);
    put_varint(buf, record.headers.len() as i32);
    for h in &record.headers {
        put_varint(buf, h.key.len() as i32);
        buf.extend_from_slice(h.key.as_bytes());
        put_nullable(buf, &h.value);
    }
    debug_assert_eq!(buf.len() - body_start, body_len);
    debug_assert_eq!(buf.len() - start, encoded_record_len(record, offset_delta, timestamp_delta));
}

/// Encodes records into one batch with base offset 0 and offset deltas
/// `0..n-1`. The base timestamp is the first record's, the max timestamp the
/// largest. The producer fields go into the header as given; the partition
/// leader epoch is -1 until the leader stamps it.
///
/// Errors: empty input or a timestamp too far from the first to fit a delta
/// (Invalid); more than MAX_RECORDS_PER_BATCH records, a record over
/// MAX_RECORD_BYTES or a batch over MAX_BATCH_BYTES (TooLarge).
pub fn encode_batch(records: &[Record], producer: ProducerFields) -> Result<Bytes, BatchError> {
    encode_inner(records, producer, 0, true)
}

/// [`encode_batch`] for a transactional producer: the batch is marked as
/// part of the producer's open transaction (attribute bit 0x10), so
/// read_committed readers see it only once the transaction commits.
pub fn encode_transactional_batch(records: &[Record], producer: ProducerFields) -> Result<Bytes, BatchError> {
    encode_inner(records, producer, TRANSACTIONAL_BIT, true)
}

/// The version of the control record layout below (Kafka's, version 0).
const CONTROL_RECORD_VERSION: i16 = 0;

/// A transaction marker: a control batch (attribute bits 0x10 and 0x20) of
/// one record, in Kafka's layout. Its key is (version, type) with type 0
/// for abort and 1 for commit; its value is (version, coordinator epoch).
/// Only the partition state machine writes these, when it applies the
/// coordinator's marker; producers may not send them.
pub fn encode_control_batch(
    producer: ProducerFields,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Bytes {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&CONTROL_RECORD_VERSION.to_be_bytes());
    key.extend_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&CONTROL_RECORD_VERSION.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    let record = Record { key: Some(key.into()), value: Some(value.into()), headers: Vec::new(), timestamp_ms };
    encode_inner(&[record], producer, TRANSACTIONAL_BIT | CONTROL_BIT, true)
        .expect("one small record always fits a batch")
}

/// What a control record says: `Some(true)` commit, `Some(false)` abort,
/// `None` when the key is not a marker's.
pub fn control_record_commits(key: &[u8]) -> Option<bool> {
    match key {
        [0, 0, 0, 0] => Some(false),
        [0, 0, 0, 1] => Some(true),
        _ => None,
    }
}

/// `enforce_limits = false` exists so tests can build well-formed batches that
/// break the bounds and check that validation refuses them.
pub(crate) fn encode_inner(
    records: &[Record],
    producer: ProducerFields,
    attributes: i16,
    enforce_limits: bool,
) -> Result<Bytes, BatchError> {
    let first = records.first().ok_or_else(|| BatchError::Invalid("a batch needs at least one record".into()))?;
    if enforce_limits && records.len() > MAX_RECORDS_PER_BATCH {
        return Err(BatchError::TooLarge { what: "record count", size: records.len(), limit: MAX_RECORDS_PER_BATCH });
    }
    let count = i32::try_from(records.len())
        .map_err(|_| BatchError::Invalid(format!("{} records do not fit a batch", records.len())))?;

    // First pass: sizes and timestamp deltas, so every bound is checked before
    // any byte is written and the buffer is allocated once.
    let base_timestamp = first.timestamp_ms;
    let mut max_timestamp = base_timestamp;
    let mut plan = Vec::with_capacity(records.len());
    let mut total = BATCH_HEADER_LEN;
    for (i, record) in records.iter().enumerate() {
        let timestamp_delta = record.timestamp_ms.checked_sub(base_timestamp).ok_or_else(|| {
            BatchError::Invalid(format!(
                "record {i}: timestamp {} is too far from the first record's {base_timestamp}",
                record.timestamp_ms
            ))
        })?;
        let body = record_body_len(record, i as i32, timestamp_delta);
        if enforce_limits && body > MAX_RECORD_BYTES {
            return Err(BatchError::TooLarge { what: "record size in bytes", size: body, limit: MAX_RECORD_BYTES });
        }
        if body > i32::MAX as usize {
            return Err(BatchError::Invalid(format!("record {i}: {body} bytes do not fit a length field")));
        }
        total = total.saturating_add(len_prefix_len(body) + body);
        max_timestamp = max_timestamp.max(record.timestamp_ms);
        plan.push((body, timestamp_delta));
    }
    if enforce_limits && total > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge { what: "batch size in bytes", size: total, limit: MAX_BATCH_BYTES });
    }
    let batch_length = i32::try_from(total - LOG_OVERHEAD)
        .map_err(|_| BatchError::Invalid(format!("{total} bytes do not fit a batch length field")))?;

    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&0i64.to_be_bytes()); // baseOffset: the leader assigns it
    buf.extend_from_slice(&batch_length.to_be_bytes());
    buf.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch: the leader stamps it
    buf.push(MAGIC_V2 as u8);
    buf.extend_from_slice(&[0; 4]); // crc, filled in below
    buf.extend_from_slice(&attributes.to_be_bytes()); // no compression; transactional and control bits as asked
    buf.extend_from_slice(&(count - 1).to_be_bytes());
    buf.extend_from_slice(&base_timestamp.to_be_bytes());
    buf.extend_from_slice(&max_timestamp.to_be_bytes());
    buf.extend_from_slice(&producer.producer_id.to_be_bytes());
    buf.extend_from_slice(&producer.producer_epoch.to_be_bytes());
    buf.extend_from_slice(&producer.base_sequence.to_be_bytes());
    buf.extend_from_slice(&count.to_be_bytes());
    debug_assert_eq!(buf.len(), BATCH_HEADER_LEN);
    for (i, (record, &(body, timestamp_delta))) in records.iter().zip(&plan).enumerate() {
        put_record(&mut buf, record, body, i as i32, timestamp_delta);
    }
    debug_assert_eq!(buf.len(), total);
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Header;
    use crate::test_util::rec;

    #[test]
    fn crc32c_is_castagnoli() {
        // The standard check value of CRC-32C; plain CRC-32 gives 0xCBF43926.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn known_answer_single_record() {
        let record = Record {
            key: Some(Bytes::from_static(b"key")),
            value: Some(Bytes::from_static(b"value")),
            headers: vec![Header { key: "h".into(), value: Some(Bytes::from_static(b"x")) }],
            timestamp_ms: 1000,
        };
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            0, 0, 0, 0, 0, 0, 0, 0,             // baseOffset 0
            0, 0, 0, 68,                        // batchLength: 49 header bytes + 19 record bytes
            0xff, 0xff, 0xff, 0xff,             // partitionLeaderEpoch -1
            2,                                  // magic
            0x66, 0xbf, 0x83, 0x30,             // crc-32c, computed independently of this crate
            0, 0,                               // attributes
            0, 0, 0, 0,                         // lastOffsetDelta
            0, 0, 0, 0, 0, 0, 0x03, 0xe8,       // baseTimestamp 1000
            0, 0, 0, 0, 0, 0, 0x03, 0xe8,       // maxTimestamp 1000
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producerId -1
            0xff, 0xff,                         // producerEpoch -1
            0xff, 0xff, 0xff, 0xff,             // baseSequence -1
            0, 0, 0, 1,                         // recordCount
            0x24,                               // record length 18 (zigzag 36)
            0,                                  // record attributes
            0,                                  // timestampDelta 0
            0,                                  // offsetDelta 0
            0x06, b'k', b'e', b'y',             // key length 3
            0x0a, b'v', b'a', b'l', b'u', b'e', // value length 5
            0x02,                               // header count 1
            0x02, b'h',                         // header key length 1
            0x02, b'x',                         // header value length 1
        ];
        let got = encode_batch(std::slice::from_ref(&record), ProducerFields::default()).unwrap();
        assert_eq!(&got[..], &expected[..]);
        assert_eq!(encoded_record_len(&record, 0, 0), 19);
    }

    #[test]
    fn header_fields_follow_records_and_producer() {
        let records = [rec(Some("a"), Some("1"), 50), rec(None, None, 90), rec(Some("c"), None, 70)];
        let producer = ProducerFields { producer_id: 42, producer_epoch: 3, base_sequence: 17 };
        let b = encode_batch(&records, producer).unwrap();
        let h = crate::read_header(&b).unwrap();
        assert_eq!(h.base_timestamp, 50);
        assert_eq!(h.max_timestamp, 90);
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (42, 3, 17));
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.attributes, 0);
    }

    #[test]
    fn encoded_record_len_is_exact() {
        let big = Bytes::from(vec![7u8; 300]);
        let records = vec![
            rec(None, None, 0),
            Record { key: Some(big.clone()), value: Some(big.clone()), headers: vec![], timestamp_ms: -5_000_000 },
            Record {
                key: None,
                value: Some(Bytes::new()),
                headers: vec![
                    Header { key: String::new(), value: None },
                    Header { key: "k".repeat(200), value: Some(big.clone()) },
                ],
                timestamp_ms: 1 << 40,
            },
        ];
        let mut many = records.clone();
        for i in 0..200 {
            many.push(rec(Some("x"), Some("y"), i * 1000));
        }
        let b = encode_batch(&many, ProducerFields::default()).unwrap();
        let base = many[0].timestamp_ms;
        let sum: usize =
            many.iter().enumerate().map(|(i, r)| encoded_record_len(r, i as i32, r.timestamp_ms - base)).sum();
        assert_eq!(b.len(), BATCH_HEADER_LEN + sum);
    }

    #[test]
    fn refuses_empty_and_oversize_input() {
        assert!(matches!(encode_batch(&[], ProducerFields::default()), Err(BatchError::Invalid(_))));

        let too_many = vec![Record::default(); MAX_RECORDS_PER_BATCH + 1];
        let err = encode_batch(&too_many, ProducerFields::default()).unwrap_err();
        assert!(matches!(err, BatchError::TooLarge { what: "record count", .. }), "{err}");

        let huge = Record { value: Some(Bytes::from(vec![0u8; MAX_RECORD_BYTES])), ..Record::default() };
        let err = encode_batch(&[huge], ProducerFields::default()).unwrap_err();
        assert!(matches!(err, BatchError::TooLarge { what: "record size in bytes", .. }), "{err}");

        let half = Record { value: Some(Bytes::from(vec![0u8; MAX_BATCH_BYTES / 2])), ..Record::default() };
        let err = encode_batch(&[half.clone(), half], ProducerFields::default()).unwrap_err();
        assert!(matches!(err, BatchError::TooLarge { what: "batch size in bytes", .. }), "{err}");
        assert_eq!(err.code(), strata_core::ErrorCode::RecordTooLarge);

        // The largest record that is allowed still encodes.
        let value_len = MAX_RECORD_BYTES - 10;
        let ok = Record { value: Some(Bytes::from(vec![0u8; value_len])), ..Record::default() };
        assert!(encode_batch(&[ok], ProducerFields::default()).is_ok());
    }

    #[test]
    fn refuses_timestamp_delta_overflow() {
        let records = [rec(None, None, i64::MIN), rec(None, None, i64::MAX)];
        assert!(matches!(encode_batch(&records, ProducerFields::default()), Err(BatchError::Invalid(_))));
    }
}
