//! Validating and decoding batches, and walking concatenated batches.
//!
//! One record walker serves both validation and decoding so the two cannot
//! disagree about what a well-formed batch is: a batch `validate_batch`
//! accepts always decodes.

use std::iter::FusedIterator;

use bytes::Bytes;
use strata_core::limits::{MAX_BATCH_BYTES, MAX_RECORDS_PER_BATCH, MAX_RECORD_BYTES};

use crate::error::BatchError;
use crate::header::{
    read_header, BatchHeader, BATCH_HEADER_LEN, COMPRESSION_MASK, CONTROL_BIT, CRC_START, MAGIC_V2, TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
};
use crate::record::{Header, StoredRecord};
use crate::varint::Reader;

/// The smallest encoded record: length, attributes, timestampDelta,
/// offsetDelta, keyLength, valueLength and headerCount, one byte each. Bounds
/// how many records the remaining bytes could hold before we allocate.
const MIN_RECORD_LEN: usize = 7;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A batch from a producer: the size bounds apply and offset deltas must
    /// be exactly 0, 1, 2, ..
    Validate,
    /// A stored batch: it passed validation when written, and the bounds may
    /// have changed since, so only the structure is checked. Offset deltas
    /// need only increase, which keeps compacted batches readable later.
    Decode,
}

/// A record as found in the bytes, borrowing them.
struct RawRecord<'a> {
    offset: u64,
    timestamp_ms: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// Checks everything about a batch except its records.
fn check_frame(bytes: &[u8], mode: Mode) -> Result<BatchHeader, BatchError> {
    if mode == Mode::Validate && bytes.len() > MAX_BATCH_BYTES {
        return Err(BatchError::TooLarge { what: "batch size in bytes", size: bytes.len(), limit: MAX_BATCH_BYTES });
    }
    let h = read_header(bytes)?;
    if h.total_len() > bytes.len() {
        return Err(BatchError::corrupt(format!(
            "batch length field says {} bytes but only {} are present",
            h.total_len(),
            bytes.len()
        )));
    }
    if h.total_len() < bytes.len() {
        return Err(BatchError::corrupt(format!(
            "{} trailing bytes after the batch's {} bytes",
            bytes.len() - h.total_len(),
            h.total_len()
        )));
    }
    // The magic decides the layout of everything after it, so it is checked
    // before the CRC, whose position depends on it.
    if h.magic != MAGIC_V2 {
        return Err(BatchError::corrupt(format!("magic byte is {}, only 2 (record batch v2) is supported", h.magic)));
    }
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    if crc != h.crc {
        return Err(BatchError::corrupt(format!(
            "crc-32c mismatch: header says {:#010x}, contents give {crc:#010x}",
            h.crc
        )));
    }
    let compression = h.attributes & COMPRESSION_MASK;
    if compression != 0 {
        return Err(BatchError::Unsupported(format!(
            "compressed batches are not supported yet (compression type {compression})"
        )));
    }
    if mode == Mode::Validate {
        check_attributes(h.attributes)?;
        if h.record_count == 0 {
            return Err(BatchError::Invalid("a batch needs at least one record".into()));
        }
        if h.record_count as usize > MAX_RECORDS_PER_BATCH {
            return Err(BatchError::TooLarge {
                what: "record count",
                size: h.record_count as usize,
                limit: MAX_RECORDS_PER_BATCH,
            });
        }
        if i64::from(h.last_offset_delta) != i64::from(h.record_count) - 1 {
            return Err(BatchError::corrupt(format!(
                "last offset delta is {} but the batch holds {} records",
                h.last_offset_delta, h.record_count
            )));
        }
    } else if h.record_count > 0 && h.last_offset_delta < h.record_count as i32 - 1 {
        // Deltas are distinct and non-negative, so n records need a last delta of at least n-1.
        return Err(BatchError::corrupt(format!(
            "last offset delta {} is too small for {} records",
            h.last_offset_delta, h.record_count
        )));
    }
    Ok(h)
}

/// Refuses every attribute bit besides compression (checked before) and
/// the transactional bit: Strata implements none of them for producers,
/// and storing them as sent would make Kafka decoders read the batch
/// differently from how Strata stored it (control batches hidden,
/// timestamps replaced by the append time). A transactional batch is
/// allowed here; the server checks that its producer is transactional.
/// Control batches are written by the partition itself, never sent. Only
/// producer input is checked; batches stored before this check stay
/// readable.
fn check_attributes(attributes: i16) -> Result<(), BatchError> {
    const NAMED: [(i16, &str); 2] = [
        (TIMESTAMP_TYPE_BIT, "LogAppendTime timestamps (attribute bit 0x08)"),
        (CONTROL_BIT, "control batches (attribute bit 0x20)"),
    ];
    let refused = attributes & !TRANSACTIONAL_BIT;
    if refused == 0 {
        return Ok(());
    }
    let mut what: Vec<String> =
        NAMED.iter().filter(|(bit, _)| refused & bit != 0).map(|(_, name)| (*name).to_string()).collect();
    let known = NAMED.iter().fold(COMPRESSION_MASK | TRANSACTIONAL_BIT, |mask, (bit, _)| mask | bit);
    let other = attributes & !known;
    if other != 0 {
        what.push(format!("attribute bits {:#x}", other as u16));
    }
    Err(BatchError::Unsupported(format!(
        "{} are not supported; send batches with attributes 0 (CreateTime timestamps), or 0x10 from a \
         transactional producer",
        what.join(", ")
    )))
}

fn nullable<'a>(r: &mut Reader<'a>, what: &str) -> Result<Option<&'a [u8]>, String> {
    let len = r.varint().map_err(|e| format!("{what} length: {e}"))?;
    match len {
        -1 => Ok(None),
        n if n < 0 => Err(format!("{what} length {n} is negative")),
        n => r.take(n as usize).map(Some).map_err(|e| format!("{what}: {e}")),
    }
}

/// Parses one record body (after its length prefix); the body must be used up
/// exactly. Returns the raw deltas alongside the fields.
fn parse_body(body: &[u8]) -> Result<(i64, i32, RawRecord<'_>), String> {
    let mut r = Reader::new(body);
    // Record attributes are unused in v2; Kafka ignores them, so do we.
    r.u8().map_err(|e| format!("attributes: {e}"))?;
    let timestamp_delta = r.varlong().map_err(|e| format!("timestamp delta: {e}"))?;
    let offset_delta = r.varint().map_err(|e| format!("offset delta: {e}"))?;
    let key = nullable(&mut r, "key")?;
    let value = nullable(&mut r, "value")?;
    let header_count = r.varint().map_err(|e| format!("header count: {e}"))?;
    if header_count < 0 {
        return Err(format!("header count {header_count} is negative"));
    }
    // Each header takes at least two bytes, which caps the allocation.
    let mut headers = Vec::with_capacity((header_count as usize).min(r.remaining() / 2));
    for j in 0..header_count {
        let key_len = r.varint().map_err(|e| format!("header {j} key length: {e}"))?;
        if key_len < 0 {
            return Err(format!("header {j} key length {key_len} is negative"));
        }
        let key = r.take(key_len as usize).map_err(|e| format!("header {j} key: {e}"))?;
        let key = std::str::from_utf8(key).map_err(|_| format!("header {j} key is not valid utf-8"))?;
        let value = nullable(&mut r, &format!("header {j} value"))?;
        headers.push((key, value));
    }
    if !r.is_empty() {
        return Err(format!("{} bytes left over after the record's fields", r.remaining()));
    }
    Ok((timestamp_delta, offset_delta, RawRecord { offset: 0, timestamp_ms: 0, key, value, headers }))
}

/// Walks the records of a batch whose frame `check_frame` accepted, handing
/// each to `sink` with its absolute offset and timestamp.
fn for_each_record<'a>(
    bytes: &'a [u8],
    h: &BatchHeader,
    mode: Mode,
    mut sink: impl FnMut(RawRecord<'a>),
) -> Result<(), BatchError> {
    let mut r = Reader::new(&bytes[BATCH_HEADER_LEN..]);
    let count = h.record_count as usize;
    let mut prev_delta: i64 = -1;
    for i in 0..count {
        if r.is_empty() {
            return Err(BatchError::corrupt(format!("batch ends after {i} of {count} records")));
        }
        let len = r.varint().map_err(|e| BatchError::corrupt(format!("record {i} length: {e}")))?;
        if len < 0 {
            return Err(BatchError::corrupt(format!("record {i} length {len} is negative")));
        }
        let len = len as usize;
        if mode == Mode::Validate && len > MAX_RECORD_BYTES {
            return Err(BatchError::TooLarge { what: "record size in bytes", size: len, limit: MAX_RECORD_BYTES });
        }
        let body = r.take(len).map_err(|e| BatchError::corrupt(format!("record {i} is truncated: {e}")))?;
        let (timestamp_delta, offset_delta, mut raw) =
            parse_body(body).map_err(|e| BatchError::corrupt(format!("record {i}: {e}")))?;

        let delta = i64::from(offset_delta);
        let delta_ok = match mode {
            Mode::Validate => delta == i as i64,
            Mode::Decode => delta > prev_delta && delta <= i64::from(h.last_offset_delta),
        };
        if !delta_ok {
            return Err(BatchError::corrupt(format!(
                "record {i} has offset delta {offset_delta} after {prev_delta} (last offset delta {})",
                h.last_offset_delta
            )));
        }
        prev_delta = delta;
        // Cannot overflow: base_offset <= i64::MAX (read_header) and 0 <= delta <= i32::MAX.
        raw.offset = h.base_offset + delta as u64;
        raw.timestamp_ms = h.base_timestamp.checked_add(timestamp_delta).ok_or_else(|| {
            BatchError::corrupt(format!(
                "record {i} timestamp delta {timestamp_delta} overflows base timestamp {}",
                h.base_timestamp
            ))
        })?;
        sink(raw);
    }
    if !r.is_empty() {
        return Err(BatchError::corrupt(format!("{} trailing bytes after the last record", r.remaining())));
    }
    Ok(())
}

/// Full check of a batch as received from a producer: exactly one batch
/// filling `bytes`; length fields consistent; magic 2; CRC-32C matches; no
/// compression and no other attribute bit but the transactional one
/// (LogAppendTime, control: see [`BatchError::Unsupported`]); at least one record; every record decodes and uses exactly its
/// length; offset deltas are 0, 1, 2, .. in order; the record count matches
/// and lastOffsetDelta = count - 1; no trailing bytes; the batch is at most
/// MAX_BATCH_BYTES, holds at most MAX_RECORDS_PER_BATCH records and no record
/// (its length field) is over MAX_RECORD_BYTES; header keys are valid UTF-8.
///
/// Record attributes are not checked (unused in v2, ignored as Kafka does).
/// Returns the parsed header.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = check_frame(bytes, Mode::Validate)?;
    for_each_record(bytes, &h, Mode::Validate, |_| {})?;
    Ok(h)
}

/// A record's index in its batch and the value of the header asked for.
pub type HeaderHit<'a> = (u32, Option<&'a [u8]>);

/// [`validate_batch`], also returning, for every record that has a header
/// named `header_name`, the record's index and that header's value (the
/// first such header of the record). One pass over the records.
pub fn validate_batch_with_header<'a>(
    bytes: &'a [u8],
    header_name: &str,
) -> Result<(BatchHeader, Vec<HeaderHit<'a>>), BatchError> {
    let h = check_frame(bytes, Mode::Validate)?;
    let mut found = Vec::new();
    let mut index = 0u32;
    for_each_record(bytes, &h, Mode::Validate, |raw| {
        if let Some((_, value)) = raw.headers.iter().find(|(key, _)| *key == header_name) {
            found.push((index, *value));
        }
        index += 1;
    })?;
    Ok((h, found))
}

fn decode_into(batch: &[u8], min_offset: u64, out: &mut Vec<StoredRecord>) -> Result<(), BatchError> {
    let h = check_frame(batch, Mode::Decode)?;
    // Never reserve more than the bytes could hold, whatever the count says.
    let room = (batch.len() - BATCH_HEADER_LEN) / MIN_RECORD_LEN;
    out.reserve((h.record_count as usize).min(room));
    let opt = |b: Option<&[u8]>| b.map(Bytes::copy_from_slice);
    for_each_record(batch, &h, Mode::Decode, |raw| {
        if raw.offset < min_offset {
            return;
        }
        out.push(StoredRecord {
            offset: raw.offset,
            timestamp_ms: raw.timestamp_ms,
            key: opt(raw.key),
            value: opt(raw.value),
            headers: raw.headers.into_iter().map(|(k, v)| Header { key: k.to_owned(), value: opt(v) }).collect(),
        });
    })
}

/// Decodes every record of one batch (`batch` must be exactly one batch),
/// checking the magic, the CRC and the layout, with absolute offsets
/// `base_offset + delta` and timestamps `base_timestamp + delta`.
///
/// The size bounds are not applied: the batch was bounded when it was
/// written, and stored data must stay readable if the bounds shrink.
pub fn decode_batch(batch: &[u8]) -> Result<Vec<StoredRecord>, BatchError> {
    let mut out = Vec::new();
    decode_into(batch, 0, &mut out)?;
    Ok(out)
}

/// Decodes concatenated batches, dropping records with offset < `min_offset`.
/// Batches that end at or before `min_offset` are skipped without being
/// decoded or CRC-checked. Any bad batch, including a truncated last one,
/// fails the whole call.
pub fn decode_records_from(bytes: &[u8], min_offset: u64) -> Result<Vec<StoredRecord>, BatchError> {
    let mut out = Vec::new();
    for item in BatchIter::new(bytes) {
        let (h, batch) = item?;
        if h.next_offset() <= min_offset {
            continue;
        }
        decode_into(batch, min_offset, &mut out)?;
    }
    Ok(out)
}

/// Iterates over concatenated batches (a fetch answer), yielding each batch's
/// header and bytes. It only frames: the CRC and records are left to
/// [`decode_batch`]. A truncated or unreadable batch is yielded as an error,
/// after which the iterator ends.
#[derive(Clone, Debug)]
pub struct BatchIter<'a> {
    rest: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BatchIter { rest: bytes, position: 0, failed: false }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let at = self.position;
        let result = read_header(self.rest)
            .map_err(|e| match e {
                BatchError::Corrupt(msg) => BatchError::corrupt(format!("batch at byte {at}: {msg}")),
                other => other,
            })
            .and_then(|h| {
                if h.total_len() > self.rest.len() {
                    Err(BatchError::corrupt(format!(
                        "batch at byte {at} is truncated: it needs {} bytes, {} are present",
                        h.total_len(),
                        self.rest.len()
                    )))
                } else {
                    Ok(h)
                }
            });
        match result {
            Ok(h) => {
                let (batch, rest) = self.rest.split_at(h.total_len());
                self.rest = rest;
                self.position += batch.len();
                Some(Ok((h, batch)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for BatchIter<'_> {}

#[cfg(test)]
mod tests;
