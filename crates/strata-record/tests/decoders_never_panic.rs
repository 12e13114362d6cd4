//! Property-based fuzzing of every decoder that takes bytes from clients or
//! peers: random bytes, and valid batches mutated by bit flips, byte
//! changes, truncations, insertions and length fields set to extremes.
//!
//! Properties: nothing panics; what `validate_batch` accepts decodes, to
//! the record count it announced; `validate_batch_with_header` agrees with
//! `validate_batch`; decoded offsets lie inside the batch's range; an
//! unmutated batch decodes to the records it was built from.
//!
//! The case count is bounded so the test runs in a few seconds in CI; set
//! PROPTEST_CASES to run longer locally.

use bytes::Bytes;
use proptest::prelude::*;
use strata_record::{
    decode_batch, decode_records_from, encode_batch, read_header, validate_batch, validate_batch_with_header,
    BatchIter, Header, ProducerFields, Record, BATCH_HEADER_LEN,
};

// Field positions of the v2 header (Kafka's DefaultRecordBatch).
const BATCH_LENGTH_AT: usize = 8;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORD_COUNT_AT: usize = 57;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
    b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

fn put_i32(b: &mut [u8], at: usize, v: i32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Runs every decoder on `bytes` and checks the properties; returns whether
/// validation accepted it.
fn exercise(bytes: &[u8]) -> bool {
    let header = read_header(bytes);
    let validated = validate_batch(bytes);
    let with_header = validate_batch_with_header(bytes, "h");
    assert_eq!(validated.is_ok(), with_header.is_ok(), "the two validators disagree");
    if let (Ok(a), Ok((b, _))) = (&validated, &with_header) {
        assert_eq!(a, b);
    }
    let decoded = decode_batch(bytes);
    if let Ok(h) = &validated {
        let records = decoded.as_ref().expect("a batch validation accepts decodes");
        assert_eq!(records.len(), h.record_count as usize);
        assert_eq!(header.as_ref().ok(), Some(h));
    }
    if let Ok(records) = &decoded {
        let h = header.expect("a decoded batch has a header");
        assert!(records.iter().all(|r| r.offset >= h.base_offset && r.offset < h.next_offset()));
    }
    let mut framed = 0;
    for item in BatchIter::new(bytes) {
        match item {
            Ok((h, batch)) => {
                assert_eq!(batch.len(), h.total_len());
                framed += batch.len();
                let _ = decode_batch(batch);
            }
            Err(_) => break,
        }
    }
    assert!(framed <= bytes.len());
    for min_offset in [0, 1, 3, u64::MAX] {
        if let Ok(records) = decode_records_from(bytes, min_offset) {
            assert!(records.iter().all(|r| r.offset >= min_offset));
        }
    }
    validated.is_ok()
}

fn bytes_up_to(n: usize) -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from))
}

fn record() -> impl Strategy<Value = Record> {
    let header = ("[a-z]{0,4}", bytes_up_to(8)).prop_map(|(key, value)| Header { key, value });
    (bytes_up_to(12), bytes_up_to(40), proptest::collection::vec(header, 0..3), any::<i32>())
        .prop_map(|(key, value, headers, ts)| Record { key, value, headers, timestamp_ms: i64::from(ts) })
}

fn batch() -> impl Strategy<Value = (Vec<Record>, Vec<u8>)> {
    (proptest::collection::vec(record(), 1..8), any::<i64>(), any::<i16>(), any::<i32>()).prop_map(
        |(records, id, epoch, seq)| {
            let producer = ProducerFields { producer_id: id, producer_epoch: epoch, base_sequence: seq };
            let bytes = encode_batch(&records, producer).expect("small records encode").to_vec();
            (records, bytes)
        },
    )
}

/// Varints for a length field: extremes and values just past the bytes.
const EXTREME_VARINTS: &[&[u8]] = &[
    &[0xfe, 0xff, 0xff, 0xff, 0x0f], // i32::MAX
    &[0xff, 0xff, 0xff, 0xff, 0x0f], // i32::MIN
    &[0x01],                         // -1
    &[0x03],                         // -2
    &[0x80, 0x80, 0x80, 0x80, 0x10], // overflows 32 bits
    &[0xff, 0xff, 0xff, 0xff, 0xff], // runs on
    &[0x80],                         // truncated
    &[0xfe, 0x0f],                   // 1023
];

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        value: u8,
    },
    Remove {
        at: usize,
    },
    /// batchLength, lastOffsetDelta or recordCount set to an extreme.
    HeaderField {
        field: usize,
        value: i32,
    },
    /// A varint in the record area replaced by an extreme one.
    Varint {
        at: usize,
        which: usize,
    },
    /// Attribute bits (compression, timestamp type, transactional, control).
    Attributes {
        value: i16,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme =
        prop_oneof![Just(i32::MAX), Just(i32::MIN), Just(-1), Just(0), Just(1 << 20), Just(100_001), any::<i32>()];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Insert { at, value }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        (0usize..3, extreme).prop_map(|(field, value)| Mutation::HeaderField { field, value }),
        (any::<usize>(), 0..EXTREME_VARINTS.len()).prop_map(|(at, which)| Mutation::Varint { at, which }),
        any::<i16>().prop_map(|value| Mutation::Attributes { value }),
    ]
}

fn mutate(b: &mut Vec<u8>, m: &Mutation) {
    let len = b.len();
    match *m {
        Mutation::FlipBit { at, bit } if len > 0 => b[at % len] ^= 1 << bit,
        Mutation::SetByte { at, value } if len > 0 => b[at % len] = value,
        Mutation::Truncate { len: to } => b.truncate(to % (len + 1)),
        Mutation::Insert { at, value } => b.insert(at % (len + 1), value),
        Mutation::Remove { at } if len > 0 => {
            b.remove(at % len);
        }
        Mutation::HeaderField { field, value } if len >= BATCH_HEADER_LEN => {
            put_i32(b, [BATCH_LENGTH_AT, LAST_OFFSET_DELTA_AT, RECORD_COUNT_AT][field], value)
        }
        Mutation::Varint { at, which } if len > BATCH_HEADER_LEN => {
            // The first record's length, or any position after the header.
            let at = if at % 4 == 0 { BATCH_HEADER_LEN } else { BATCH_HEADER_LEN + at % (len - BATCH_HEADER_LEN) };
            let v = EXTREME_VARINTS[which];
            let end = (at + v.len()).min(len);
            b.splice(at..end, v.iter().copied());
        }
        Mutation::Attributes { value } if len >= BATCH_HEADER_LEN => {
            b[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&value.to_be_bytes())
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(config(16_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        exercise(&bytes);
    }

    /// Random bytes behind a plausible header with a correct length and
    /// CRC, so the record parser sees garbage, not only the frame checks.
    #[test]
    fn random_records_behind_a_valid_frame_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        count in 0i32..10,
        delta in 0i32..10,
    ) {
        let mut b = vec![0u8; BATCH_HEADER_LEN];
        b.extend_from_slice(&body);
        let length = (b.len() - 12) as i32;
        put_i32(&mut b, BATCH_LENGTH_AT, length);
        b[16] = 2;
        put_i32(&mut b, LAST_OFFSET_DELTA_AT, delta);
        put_i32(&mut b, RECORD_COUNT_AT, count);
        fix_crc(&mut b);
        exercise(&b);
    }

    #[test]
    fn valid_batches_round_trip((records, bytes) in batch()) {
        prop_assert!(exercise(&bytes));
        let decoded = decode_batch(&bytes).unwrap();
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (stored, sent)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(stored.offset, i as u64);
            prop_assert_eq!(&stored.key, &sent.key);
            prop_assert_eq!(&stored.value, &sent.value);
            prop_assert_eq!(&stored.headers, &sent.headers);
            prop_assert_eq!(stored.timestamp_ms, sent.timestamp_ms);
        }
    }

    #[test]
    fn mutated_batches_never_panic(
        (_, bytes) in batch(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        repair in any::<bool>(),
    ) {
        let mut b = bytes.clone();
        for m in &mutations {
            mutate(&mut b, m);
        }
        // Half the time repair the length and CRC so the mutation reaches
        // the record checks instead of stopping at the frame.
        if repair && b.len() >= BATCH_HEADER_LEN {
            let length = (b.len() - 12) as i32;
            put_i32(&mut b, BATCH_LENGTH_AT, length);
            fix_crc(&mut b);
        }
        exercise(&b);
        // The same bytes after a valid batch, as in a fetch answer.
        let mut joined = bytes;
        joined.extend_from_slice(&b);
        exercise(&joined);
    }
}
