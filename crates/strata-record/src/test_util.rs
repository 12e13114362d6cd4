//! Helpers shared by the unit tests.

use bytes::Bytes;

use crate::header::{CRC_AT, CRC_START};
use crate::record::{Header, ProducerFields, Record};

pub(crate) fn rec(key: Option<&str>, value: Option<&str>, timestamp_ms: i64) -> Record {
    Record {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Vec::new(),
        timestamp_ms,
    }
}

/// `n` records with keys, values and one header each, timestamps `ts0 + i`.
pub(crate) fn sample_records(n: usize, ts0: i64) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: vec![Header { key: "h".into(), value: Some(Bytes::from(format!("{i}"))) }],
            timestamp_ms: ts0 + i as i64,
        })
        .collect()
}

pub(crate) fn sample_batch(n: usize, ts0: i64) -> Bytes {
    crate::encode_batch(&sample_records(n, ts0), ProducerFields::default()).unwrap()
}

/// Recomputes the CRC after a test edits covered bytes, so the test reaches
/// the check it aims at instead of stopping at the CRC.
pub(crate) fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A tiny deterministic generator (xorshift64), so fuzz-style tests repeat.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
