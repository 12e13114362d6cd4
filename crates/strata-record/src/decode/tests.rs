use super::*;
use crate::encode::encode_inner;
use crate::header::{
    set_base_offset, set_partition_leader_epoch, ATTRIBUTES_AT, BATCH_LENGTH_AT, LAST_OFFSET_DELTA_AT, MAGIC_AT,
    RECORD_COUNT_AT,
};
use crate::record::{ProducerFields, Record};
use crate::test_util::{fix_crc, rec, sample_batch, sample_records, XorShift};
use crate::{encode_batch, encoded_record_len};

fn put_i32(b: &mut [u8], at: usize, v: i32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn corrupt_msg(r: Result<BatchHeader, BatchError>) -> String {
    match r {
        Err(BatchError::Corrupt(m)) => m,
        other => panic!("expected a corrupt-batch error, got {other:?}"),
    }
}

fn assert_same(stored: &StoredRecord, original: &Record, offset: u64) {
    assert_eq!(stored.offset, offset);
    assert_eq!(stored.timestamp_ms, original.timestamp_ms);
    assert_eq!(stored.key, original.key);
    assert_eq!(stored.value, original.value);
    assert_eq!(stored.headers, original.headers);
}

fn varied_records() -> Vec<Record> {
    let mut records = vec![
        rec(Some("k"), Some("v"), 1_700_000_000_000),
        rec(None, Some("null key"), 1_700_000_000_005),
        rec(Some("null value"), None, 1_699_999_999_000), // before the base: negative delta
        rec(None, None, 1_800_000_000_000),
        Record {
            key: Some(Bytes::new()),
            value: Some(Bytes::from(vec![0u8, 255, 1, 254])),
            headers: vec![
                Header { key: "trace-id".into(), value: Some(Bytes::from_static(b"abc")) },
                Header { key: String::new(), value: None },
                Header { key: "ünïcødé".into(), value: Some(Bytes::new()) },
            ],
            timestamp_ms: 0,
        },
    ];
    for i in 0..1000 {
        records.push(Record {
            key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
            value: (i % 5 != 0).then(|| Bytes::from(vec![i as u8; i % 200])),
            headers: (0..i % 4)
                .map(|j| Header { key: format!("h{j}"), value: Some(Bytes::from(vec![j as u8])) })
                .collect(),
            timestamp_ms: 1_700_000_000_000 + (i as i64) * 37,
        });
    }
    records
}

#[test]
fn round_trip_varied_records() {
    let records = varied_records();
    let producer = ProducerFields { producer_id: 9, producer_epoch: 1, base_sequence: 100 };
    let batch = encode_batch(&records, producer).unwrap();
    let h = validate_batch(&batch).unwrap();
    assert_eq!(h.record_count as usize, records.len());
    assert_eq!(h.max_timestamp, 1_800_000_000_000);
    let decoded = decode_batch(&batch).unwrap();
    assert_eq!(decoded.len(), records.len());
    for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
        assert_same(d, r, i as u64);
    }
}

#[test]
fn round_trip_extreme_timestamps() {
    let records = [rec(None, None, i64::MIN / 2), rec(None, None, i64::MAX / 2), rec(None, None, -1)];
    let batch = encode_batch(&records, ProducerFields::default()).unwrap();
    validate_batch(&batch).unwrap();
    let decoded = decode_batch(&batch).unwrap();
    for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
        assert_same(d, r, i as u64);
    }
}

#[test]
fn validate_accepts_fresh_batch() {
    let batch = sample_batch(5, 10);
    let h = validate_batch(&batch).unwrap();
    assert_eq!(h, read_header(&batch).unwrap());
}

#[test]
fn validate_rejects_attribute_bits_strata_does_not_implement() {
    // LogAppendTime, control, and all three known bits at once.
    for bits in [0x08i16, 0x20, 0x38] {
        let mut b = sample_batch(2, 0).to_vec();
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&bits.to_be_bytes());
        fix_crc(&mut b);
        let err = validate_batch(&b).unwrap_err();
        assert!(matches!(err, BatchError::Unsupported(_)), "{bits:#x}: {err:?}");
        assert_eq!(err.code(), strata_core::ErrorCode::UnsupportedFeature);
        assert_eq!(validate_batch_with_header(&b, "h").unwrap_err(), err);
        // Stored batches written before this check stay readable.
        assert_eq!(decode_batch(&b).unwrap().len(), 2);
    }
    let names = |bits: i16| {
        let mut b = sample_batch(1, 0).to_vec();
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&bits.to_be_bytes());
        fix_crc(&mut b);
        validate_batch(&b).unwrap_err().to_string()
    };
    assert!(names(0x08).contains("LogAppendTime"), "{}", names(0x08));
    assert!(names(0x20).contains("control"), "{}", names(0x20));
    assert!(
        names(0x30).contains(": control batches (attribute bit 0x20) are"),
        "only the control bit: {}",
        names(0x30)
    );
    // Bits above the ones Kafka defines (0x40 is the delete-horizon flag of
    // compacted batches, the rest unused) are refused too.
    assert!(names(0x40).contains("0x40"), "{}", names(0x40));
    assert!(names(i16::MIN).contains("0x8000"), "{}", names(i16::MIN));
}

#[test]
fn transactional_batches_are_accepted_and_markers_decode() {
    let producer = ProducerFields { producer_id: 9, producer_epoch: 3, base_sequence: 0 };
    let records = vec![crate::Record { value: Some(Bytes::from_static(b"v")), ..Default::default() }];
    let batch = crate::encode_transactional_batch(&records, producer).unwrap();
    let h = validate_batch(&batch).unwrap();
    assert!(h.is_transactional() && !h.is_control());
    let marker = crate::encode_control_batch(producer, true, 7, 1000);
    let h = read_header(&marker).unwrap();
    assert!(h.is_transactional() && h.is_control());
    assert_eq!((h.producer_id, h.producer_epoch), (9, 3));
    assert!(matches!(validate_batch(&marker), Err(BatchError::Unsupported(_))), "producers may not send markers");
    let [record] = decode_batch(&marker).unwrap().try_into().unwrap();
    assert_eq!(crate::control_record_commits(&record.key.unwrap()), Some(true));
    assert_eq!(record.value.unwrap().as_ref(), &[0, 0, 0, 0, 0, 7]);
    let abort = decode_batch(&crate::encode_control_batch(producer, false, 7, 1000)).unwrap();
    assert_eq!(crate::control_record_commits(abort[0].key.as_ref().unwrap()), Some(false));
    assert_eq!(crate::control_record_commits(b"nope"), None);
}

#[test]
fn validate_rejects_flipped_payload_bit() {
    let batch = sample_batch(3, 0);
    for at in [ATTRIBUTES_AT, RECORD_COUNT_AT + 2, batch.len() / 2, batch.len() - 1] {
        let mut b = batch.to_vec();
        b[at] ^= 0x08;
        let msg = corrupt_msg(validate_batch(&b));
        assert!(msg.contains("crc-32c mismatch"), "{msg}");
        assert!(matches!(decode_batch(&b), Err(BatchError::Corrupt(_))));
    }
}

#[test]
fn validate_rejects_wrong_magic() {
    for magic in [0u8, 1, 3, 0xff] {
        let mut b = sample_batch(2, 0).to_vec();
        b[MAGIC_AT] = magic;
        let msg = corrupt_msg(validate_batch(&b));
        assert!(msg.contains("magic"), "{msg}");
        assert!(decode_batch(&b).is_err());
    }
}

#[test]
fn validate_rejects_length_field_mismatch() {
    let batch = sample_batch(2, 0);
    let len = (batch.len() - 12) as i32;
    for wrong in [len + 1, len - 1, len + 1000, 49, i32::MAX] {
        let mut b = batch.to_vec();
        put_i32(&mut b, BATCH_LENGTH_AT, wrong);
        corrupt_msg(validate_batch(&b));
        assert!(decode_batch(&b).is_err());
    }
}

#[test]
fn validate_rejects_trailing_bytes() {
    let mut b = sample_batch(2, 0).to_vec();
    b.push(0);
    let msg = corrupt_msg(validate_batch(&b));
    assert!(msg.contains("trailing"), "{msg}");

    // Trailing bytes inside the batch, after the last record, under a valid CRC.
    let mut b = sample_batch(2, 0).to_vec();
    b.extend_from_slice(&[0, 0]);
    let len = (b.len() - 12) as i32;
    put_i32(&mut b, BATCH_LENGTH_AT, len);
    fix_crc(&mut b);
    let msg = corrupt_msg(validate_batch(&b));
    assert!(msg.contains("trailing bytes after the last record"), "{msg}");
    assert!(decode_batch(&b).is_err());
}

#[test]
fn validate_rejects_truncated_record() {
    let mut b = sample_batch(3, 0).to_vec();
    b.pop();
    let len = (b.len() - 12) as i32;
    put_i32(&mut b, BATCH_LENGTH_AT, len);
    fix_crc(&mut b);
    let msg = corrupt_msg(validate_batch(&b));
    assert!(msg.contains("record 2 is truncated"), "{msg}");
    assert!(decode_batch(&b).is_err());
}

#[test]
fn validate_rejects_wrong_record_count() {
    let batch = sample_batch(3, 0);
    // Count alone changed: disagrees with lastOffsetDelta.
    let mut b = batch.to_vec();
    put_i32(&mut b, RECORD_COUNT_AT, 4);
    fix_crc(&mut b);
    assert!(corrupt_msg(validate_batch(&b)).contains("last offset delta"));

    // Count and lastOffsetDelta both claim a fourth record that is not there.
    put_i32(&mut b, LAST_OFFSET_DELTA_AT, 3);
    fix_crc(&mut b);
    let msg = corrupt_msg(validate_batch(&b));
    assert!(msg.contains("batch ends after 3 of 4 records"), "{msg}");
    assert!(decode_batch(&b).is_err());

    // Count and lastOffsetDelta claim fewer records than there are.
    let mut b = batch.to_vec();
    put_i32(&mut b, RECORD_COUNT_AT, 2);
    put_i32(&mut b, LAST_OFFSET_DELTA_AT, 1);
    fix_crc(&mut b);
    assert!(corrupt_msg(validate_batch(&b)).contains("trailing"));
    assert!(decode_batch(&b).is_err());
}

#[test]
fn validate_rejects_non_sequential_offset_delta() {
    let records = sample_records(3, 0);
    let batch = encode_batch(&records, ProducerFields::default()).unwrap();
    // Record 1's fields: length, attributes, timestampDelta (1 byte here), offsetDelta.
    let record1 = BATCH_HEADER_LEN + encoded_record_len(&records[0], 0, 0);
    let delta_at = record1 + 3;
    assert_eq!(batch[delta_at], 2, "zigzag of offset delta 1");
    for bad in [0u8 /* 0: repeats */, 4 /* 2: skips */, 1 /* -1 */] {
        let mut b = batch.to_vec();
        b[delta_at] = bad;
        fix_crc(&mut b);
        let msg = corrupt_msg(validate_batch(&b));
        assert!(msg.contains("offset delta"), "{msg}");
    }
    // Decoding also refuses deltas that do not increase or pass lastOffsetDelta.
    for bad in [0u8, 1, 6 /* 3 > lastOffsetDelta 2 */] {
        let mut b = batch.to_vec();
        b[delta_at] = bad;
        fix_crc(&mut b);
        assert!(matches!(decode_batch(&b), Err(BatchError::Corrupt(_))), "delta byte {bad}");
    }
    // A gap (compaction) is readable, but not acceptable from a producer.
    let mut b = batch.to_vec();
    b[delta_at] = 2 * 5; // offset delta 5
    put_i32(&mut b, LAST_OFFSET_DELTA_AT, 9);
    b[delta_at + encoded_record_len(&records[1], 1, 1)] = 2 * 9;
    fix_crc(&mut b);
    assert!(validate_batch(&b).is_err());
    let offsets: Vec<u64> = decode_batch(&b).unwrap().iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0, 5, 9]);
}

#[test]
fn validate_rejects_compression() {
    for codec in 1..=7i16 {
        let mut b = sample_batch(2, 0).to_vec();
        b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&codec.to_be_bytes());
        fix_crc(&mut b);
        let err = validate_batch(&b).unwrap_err();
        assert!(matches!(err, BatchError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains("compressed batches are not supported yet"), "{err}");
        assert_eq!(err.code(), strata_core::ErrorCode::UnsupportedFeature);
        assert_eq!(decode_batch(&b).unwrap_err(), err);
    }
}

#[test]
fn validate_rejects_oversize() {
    // A well-formed batch over MAX_BATCH_BYTES.
    let half = Record { value: Some(Bytes::from(vec![1u8; MAX_BATCH_BYTES / 2])), ..Record::default() };
    let b = encode_inner(&[half.clone(), half], ProducerFields::default(), 0, false).unwrap();
    let err = validate_batch(&b).unwrap_err();
    assert!(matches!(err, BatchError::TooLarge { what: "batch size in bytes", .. }), "{err:?}");
    assert_eq!(err.code(), strata_core::ErrorCode::RecordTooLarge);
    // Stored data stays readable whatever the bounds.
    assert_eq!(decode_batch(&b).unwrap().len(), 2);

    // One record over MAX_RECORD_BYTES in a batch under MAX_BATCH_BYTES.
    let big = Record { value: Some(Bytes::from(vec![1u8; MAX_RECORD_BYTES])), ..Record::default() };
    let b = encode_inner(&[big], ProducerFields::default(), 0, false).unwrap();
    assert!(b.len() <= MAX_BATCH_BYTES);
    let err = validate_batch(&b).unwrap_err();
    assert!(matches!(err, BatchError::TooLarge { what: "record size in bytes", .. }), "{err:?}");

    // More than MAX_RECORDS_PER_BATCH records in a batch under MAX_BATCH_BYTES.
    let many = vec![Record::default(); MAX_RECORDS_PER_BATCH + 1];
    let b = encode_inner(&many, ProducerFields::default(), 0, false).unwrap();
    assert!(b.len() <= MAX_BATCH_BYTES);
    let err = validate_batch(&b).unwrap_err();
    assert!(matches!(err, BatchError::TooLarge { what: "record count", .. }), "{err:?}");
}

#[test]
fn validate_rejects_bad_record_fields() {
    let records = vec![Record {
        key: Some(Bytes::from_static(b"k")),
        value: None,
        headers: vec![Header { key: "h".into(), value: None }],
        timestamp_ms: 0,
    }];
    let batch = encode_batch(&records, ProducerFields::default()).unwrap();
    // len, attrs, ts, offset, keyLen(2), 'k', valueLen(1), headerCount(2), headerKeyLen(2), 'h', headerValueLen(1)
    let r = BATCH_HEADER_LEN;
    assert_eq!(&batch[r + 4..], [2, b'k', 1, 2, 2, b'h', 1]);
    let cases: [(usize, u8, &str); 6] = [
        (r + 9, 0xff, "utf-8"),               // header key byte
        (r + 4, 3, "key length -2"),          // key length -2
        (r + 8, 3, "header 0 key length -2"), // header key length -2
        (r + 7, 4, "header 1"),               // header count 2, second header missing
        (r + 7, 1, "header count -1"),        // header count -1
        (r, 2 * 20, "record 0 is truncated"), // record length 20 > remaining
    ];
    for (at, byte, want) in cases {
        let mut b = batch.to_vec();
        b[at] = byte;
        fix_crc(&mut b);
        let msg = corrupt_msg(validate_batch(&b));
        assert!(msg.contains(want), "byte {at} = {byte}: {msg}");
        assert!(decode_batch(&b).is_err());
    }
}

#[test]
fn empty_batch_is_invalid_from_a_producer_but_decodes_empty() {
    let mut b = sample_batch(1, 0).to_vec();
    b.truncate(BATCH_HEADER_LEN);
    put_i32(&mut b, BATCH_LENGTH_AT, (BATCH_HEADER_LEN - 12) as i32);
    put_i32(&mut b, RECORD_COUNT_AT, 0);
    fix_crc(&mut b);
    assert!(matches!(validate_batch(&b), Err(BatchError::Invalid(_))));
    assert_eq!(decode_batch(&b).unwrap(), Vec::new());
}

#[test]
fn set_base_offset_keeps_crc_and_shifts_offsets() {
    let records = sample_records(4, 500);
    let mut b = encode_batch(&records, ProducerFields::default()).unwrap().to_vec();
    set_base_offset(&mut b, 1_000_000);
    set_partition_leader_epoch(&mut b, 12);
    let h = validate_batch(&b).unwrap();
    assert_eq!((h.base_offset, h.partition_leader_epoch, h.next_offset()), (1_000_000, 12, 1_000_004));
    let decoded = decode_batch(&b).unwrap();
    for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
        assert_same(d, r, 1_000_000 + i as u64);
    }
}

/// Three batches at offsets 0 (3 records), 3 (2 records) and 5 (4 records).
fn three_batches() -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut batches = Vec::new();
    let mut base = 0u64;
    for n in [3usize, 2, 4] {
        let mut b = sample_batch(n, base as i64 * 10).to_vec();
        set_base_offset(&mut b, base);
        base += n as u64;
        batches.push(b);
    }
    let all = batches.concat();
    (batches, all)
}

#[test]
fn batch_iter_walks_concatenated_batches() {
    let (batches, all) = three_batches();
    let items: Vec<_> = BatchIter::new(&all).collect::<Result<_, _>>().unwrap();
    assert_eq!(items.len(), 3);
    for ((h, bytes), original) in items.iter().zip(&batches) {
        assert_eq!(*bytes, &original[..]);
        assert_eq!(*h, read_header(original).unwrap());
    }
    assert_eq!(items.iter().map(|(h, _)| h.base_offset).collect::<Vec<_>>(), [0, 3, 5]);
    assert_eq!(BatchIter::new(&[]).count(), 0);
}

#[test]
fn batch_iter_reports_truncated_tail() {
    let (_, all) = three_batches();
    // Cut inside the last batch's records: two good batches, then an error.
    // Cut inside the first batch's header: an error at once.
    for (len, good) in [(all.len() - 1, 2), (30, 0)] {
        let mut it = BatchIter::new(&all[..len]);
        let items: Vec<_> = it.by_ref().collect();
        assert!(items[..good].iter().all(|i| i.is_ok()));
        assert!(matches!(items[good], Err(BatchError::Corrupt(_))), "{:?}", items[good]);
        assert_eq!(items.len(), good + 1, "the iterator stops after an error");
        assert!(it.next().is_none());
    }
    let (batches, all) = three_batches();
    let two = batches[0].len() + batches[1].len();
    let tail = &all[..two + 10];
    let items: Vec<_> = BatchIter::new(tail).collect();
    assert_eq!(items.len(), 3);
    let err = items[2].as_ref().unwrap_err().to_string();
    assert!(err.contains(&format!("batch at byte {two}")), "{err}");
    assert!(decode_records_from(tail, 0).is_err());
}

#[test]
fn decode_records_from_filters_by_offset() {
    let (_, all) = three_batches();
    let offsets = |min| decode_records_from(&all, min).unwrap().iter().map(|r| r.offset).collect::<Vec<_>>();
    assert_eq!(offsets(0), (0..9).collect::<Vec<_>>());
    assert_eq!(offsets(4), (4..9).collect::<Vec<_>>());
    assert_eq!(offsets(5), (5..9).collect::<Vec<_>>());
    assert_eq!(offsets(8), [8]);
    assert_eq!(offsets(9), Vec::<u64>::new());
    assert_eq!(offsets(u64::MAX), Vec::<u64>::new());
    let all_records = decode_records_from(&all, 0).unwrap();
    assert_eq!(all_records[4].key.as_deref(), Some(&b"key-1"[..]));
    assert_eq!(all_records[4].timestamp_ms, 31);
    assert_eq!(decode_records_from(&[], 0).unwrap(), Vec::new());

    // A corrupt batch fails the call only if it has to be decoded.
    let (batches, mut all) = three_batches();
    all[batches[0].len() - 1] ^= 1;
    assert!(decode_records_from(&all, 0).is_err());
    assert_eq!(decode_records_from(&all, 3).unwrap().len(), 6);
}

fn exercise(bytes: &[u8]) -> bool {
    let _ = read_header(bytes);
    let validated = validate_batch(bytes);
    let decoded = decode_batch(bytes);
    if let Ok(h) = &validated {
        // What validation accepts always decodes, to the announced count.
        let records = decoded.as_ref().expect("a validated batch decodes");
        assert_eq!(records.len(), h.record_count as usize);
    }
    if let Ok(records) = &decoded {
        let h = read_header(bytes).unwrap();
        assert!(records.iter().all(|r| r.offset >= h.base_offset && r.offset < h.next_offset()));
    }
    for (_, b) in BatchIter::new(bytes).take(10_000).flatten() {
        let _ = decode_batch(b);
    }
    let _ = decode_records_from(bytes, 2);
    validated.is_ok()
}

#[test]
fn arbitrary_input_never_panics() {
    let mut rng = XorShift::new(0x5eed_1234_abcd_0001);

    // Random byte strings, half of them behind a plausible header with a valid
    // CRC so the record parser sees garbage too, not only the frame checks.
    for i in 0..4000 {
        let len = rng.below(if i % 2 == 0 { 80 } else { 400 });
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 1 && b.len() >= BATCH_HEADER_LEN {
            b[..8].fill(0);
            put_i32(&mut b, BATCH_LENGTH_AT, (len - 12) as i32);
            b[MAGIC_AT] = 2;
            b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].fill(0);
            put_i32(&mut b, LAST_OFFSET_DELTA_AT, rng.below(8) as i32);
            put_i32(&mut b, RECORD_COUNT_AT, rng.below(8) as i32);
            fix_crc(&mut b);
        }
        exercise(&b);
    }

    // Mutated valid batches.
    let bases: Vec<Vec<u8>> = vec![
        sample_batch(1, 0).to_vec(),
        sample_batch(6, -3).to_vec(),
        encode_batch(&varied_records()[..12], ProducerFields::default()).unwrap().to_vec(),
    ];
    let mut accepted = 0;
    for i in 0..6000 {
        let mut b = bases[i % bases.len()].clone();
        for _ in 0..1 + rng.below(3) {
            match rng.below(7) {
                0 => {
                    let at = rng.below(b.len());
                    b[at] ^= 1 << rng.below(8);
                }
                1 => {
                    let at = rng.below(b.len());
                    b[at] = rng.next() as u8;
                }
                2 => {
                    // Extreme varint-like bytes in the record area.
                    let at = BATCH_HEADER_LEN + rng.below(b.len().saturating_sub(BATCH_HEADER_LEN));
                    if at < b.len() {
                        b[at] = [0x80, 0xff, 0x7f, 0x01, 0x00][rng.below(5)];
                    }
                }
                3 => b.truncate(rng.below(b.len() + 1)),
                4 => {
                    let at = rng.below(b.len() + 1);
                    b.insert(at, rng.next() as u8);
                }
                5 => {
                    let at = rng.below(b.len() + 1);
                    if at < b.len() {
                        b.remove(at);
                    }
                }
                _ => {
                    // A huge or negative count.
                    if b.len() >= BATCH_HEADER_LEN {
                        let v = [i32::MAX, i32::MIN, -1, 1 << 20][rng.below(4)];
                        put_i32(&mut b, [RECORD_COUNT_AT, LAST_OFFSET_DELTA_AT][rng.below(2)], v);
                    }
                }
            }
            if b.is_empty() {
                break;
            }
        }
        // Most of the time repair the frame so mutations reach the records.
        if b.len() >= BATCH_HEADER_LEN && rng.below(4) != 0 {
            let len = (b.len() - 12) as i32;
            put_i32(&mut b, BATCH_LENGTH_AT, len);
            fix_crc(&mut b);
        }
        if exercise(&b) {
            accepted += 1;
        }
        // Concatenations with a valid batch in front.
        let mut joined = bases[0].clone();
        joined.extend_from_slice(&b);
        exercise(&joined);
    }
    // Sanity: some mutations (e.g. inside a value) keep the batch valid, so
    // the repair step above really reaches the record checks.
    assert!(accepted > 0);
}

#[test]
fn validate_with_header_finds_each_records_first_matching_header() {
    let header = |key: &str, value: &[u8]| Header { key: key.into(), value: Some(value.to_vec().into()) };
    let records = vec![
        Record { headers: vec![header("other", b"x"), header("id", b"a"), header("id", b"b")], ..Default::default() },
        Record::default(),
        Record { headers: vec![Header { key: "id".into(), value: None }], ..Default::default() },
    ];
    let batch = encode_batch(&records, ProducerFields::default()).unwrap();
    let (h, found) = validate_batch_with_header(&batch, "id").unwrap();
    assert_eq!(h.record_count, 3);
    assert_eq!(found, vec![(0, Some(&b"a"[..])), (2, None)]);
    let mut bad = batch.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(validate_batch_with_header(&bad, "id").is_err(), "the CRC is still checked");
}
