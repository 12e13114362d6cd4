//! Key encodings. Every key starts with the group id in big-endian so one
//! group's keys sort together and a range delete removes a group.

use strata_core::limits::MAX_IDEMPOTENCY_KEY_BYTES;

// Key lengths are stored in two bytes.
const _: () = assert!(MAX_IDEMPOTENCY_KEY_BYTES <= u16::MAX as usize);

pub const TAG_VOTE: u8 = 1;
pub const TAG_COMMITTED: u8 = 2;
pub const TAG_PURGED: u8 = 3;
pub const TAG_APPLIED: u8 = 1;
pub const TAG_SNAPSHOT: u8 = 2;
/// `state_machine`: group, 3, producer id → postcard `ProducerEntry`.
pub const TAG_PRODUCER: u8 = 3;
/// `state_machine`: group, 4, key length (u16), key, offset → expiry (ms, u64).
pub const TAG_KEY: u8 = 4;
/// `state_machine`: group, 5, expiry (ms), offset, key → empty. Orders the
/// idempotency keys by expiry so cleanup never scans live keys.
pub const TAG_KEY_EXPIRY: u8 = 5;
/// `state_machine`: group, 6, base offset → record batch received in a
/// snapshot stream and not installed yet, written by versions before
/// batches were staged in SST files (`sst_staging`); dropped at open.
pub const TAG_STAGED_BATCH: u8 = 6;
/// `state_machine`: group, 7, key length (u16), key, offset → expiry: an
/// idempotency key received in a snapshot stream and not installed yet.
pub const TAG_STAGED_KEY: u8 = 7;
/// `state_machine`: group, 8 → empty while an install moves staged rows in;
/// a store that opens with it set finishes the cleanup of the cut install.
pub const TAG_INSTALLING: u8 = 8;
/// `state_machine`: group, 9 → how many key-index rows the group holds
/// (u64), written with every change to them, so stats never scan the keys.
pub const TAG_KEY_COUNT: u8 = 9;

pub fn group_range(group_id: u64) -> (Vec<u8>, Vec<u8>) {
    let start = group_id.to_be_bytes().to_vec();
    let end = match group_id.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        // Longer than any key of the last group, and above all of them.
        None => vec![0xff; 17],
    };
    (start, end)
}

pub fn group_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[..8].try_into().expect("keys start with a group id"))
}

fn pair(group_id: u64, second: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group_id.to_be_bytes());
    key[8..].copy_from_slice(&second.to_be_bytes());
    key
}

pub fn log_key(group_id: u64, index: u64) -> [u8; 16] {
    pair(group_id, index)
}

pub fn data_key(group_id: u64, base_offset: u64) -> [u8; 16] {
    pair(group_id, base_offset)
}

pub fn second_of(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[8..16].try_into().expect("16-byte key"))
}

pub fn tag_key(group_id: u64, tag: u8) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&group_id.to_be_bytes());
    key[8] = tag;
    key
}

pub fn producer_key(group_id: u64, producer_id: i64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..9].copy_from_slice(&tag_key(group_id, TAG_PRODUCER));
    key[9..].copy_from_slice(&producer_id.to_be_bytes());
    key
}

/// Prefix of every row of `key` in the key index; the offset follows.
///
/// Keys are at most `MAX_IDEMPOTENCY_KEY_BYTES` long: the service checks
/// keys from producers and the snapshot receiver checks keys from peers
/// before any reaches here, so a longer one is a bug, not bad input.
pub fn idempotency_prefix(group_id: u64, key: &[u8]) -> Vec<u8> {
    key_row_prefix(group_id, TAG_KEY, key)
}

pub fn idempotency_key(group_id: u64, key: &[u8], offset: u64) -> Vec<u8> {
    let mut out = idempotency_prefix(group_id, key);
    out.extend_from_slice(&offset.to_be_bytes());
    out
}

/// A key-index row as staged by a snapshot stream (same layout, own tag).
pub fn staged_key(group_id: u64, key: &[u8], offset: u64) -> Vec<u8> {
    let mut out = key_row_prefix(group_id, TAG_STAGED_KEY, key);
    out.extend_from_slice(&offset.to_be_bytes());
    out
}

fn key_row_prefix(group_id: u64, tag: u8, key: &[u8]) -> Vec<u8> {
    assert!(
        !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES,
        "idempotency key of {} bytes reached the key index unchecked",
        key.len()
    );
    let mut out = Vec::with_capacity(11 + key.len() + 8);
    out.extend_from_slice(&tag_key(group_id, tag));
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The key and offset of a key-index row (live or staged). `None` for a
/// row that is not exactly tag, length, key and offset.
pub fn parse_idempotency_key(row: &[u8]) -> Option<(&[u8], u64)> {
    let len = u16::from_be_bytes(row.get(9..11)?.try_into().ok()?) as usize;
    let key = row.get(11..11 + len)?;
    let offset = u64::from_be_bytes(row.get(11 + len..11 + len + 8)?.try_into().ok()?);
    if row.len() != 11 + len + 8 || key.is_empty() || len > MAX_IDEMPOTENCY_KEY_BYTES {
        return None;
    }
    Some((key, offset))
}

pub fn expiry_key(group_id: u64, expires_ms: u64, offset: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + key.len());
    out.extend_from_slice(&tag_key(group_id, TAG_KEY_EXPIRY));
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The expiry, offset and key of an expiry-index row.
pub fn parse_expiry_key(row: &[u8]) -> Option<(u64, u64, &[u8])> {
    let expires = u64::from_be_bytes(row.get(9..17)?.try_into().ok()?);
    let offset = u64::from_be_bytes(row.get(17..25)?.try_into().ok()?);
    Some((expires, offset, row.get(25..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_group_sort_by_index_and_stay_inside_its_range() {
        let (start, end) = group_range(7);
        let a = log_key(7, 1);
        let b = log_key(7, 256);
        assert!(a.as_slice() < b.as_slice());
        assert!(start.as_slice() <= a.as_slice() && b.as_slice() < end.as_slice());
        assert!(log_key(8, 0).as_slice() >= end.as_slice());
        assert!(log_key(6, u64::MAX).as_slice() < start.as_slice());
        assert_eq!(group_of(&b), 7);
        assert_eq!(second_of(&b), 256);
        let (_, last_end) = group_range(u64::MAX);
        assert!(log_key(u64::MAX, u64::MAX).as_slice() < last_end.as_slice());
    }

    #[test]
    fn key_index_rows_round_trip_and_sort_by_key_then_offset() {
        let a = idempotency_key(3, b"order-1", 5);
        let b = idempotency_key(3, b"order-1", 9);
        let c = idempotency_key(3, b"order-10", 1);
        assert!(a < b && b < c, "rows of one key are contiguous, newest last");
        assert!(b.starts_with(&idempotency_prefix(3, b"order-1")));
        assert!(!c.starts_with(&idempotency_prefix(3, b"order-1")));
        assert_eq!(parse_idempotency_key(&b), Some((&b"order-1"[..], 9)));
        assert_eq!(parse_idempotency_key(&staged_key(3, b"order-1", 9)), Some((&b"order-1"[..], 9)));
        let e = expiry_key(3, 1000, 9, b"order-1");
        assert_eq!(parse_expiry_key(&e), Some((1000, 9, &b"order-1"[..])));
        assert!(expiry_key(3, 999, 100, b"z") < e);
        assert_eq!(group_of(&e), 3);
    }

    #[test]
    fn a_malformed_key_row_does_not_parse() {
        let row = idempotency_key(3, b"abc", 9);
        assert_eq!(parse_idempotency_key(&row[..row.len() - 1]), None, "cut short");
        let mut longer = row.clone();
        longer.push(0);
        assert_eq!(parse_idempotency_key(&longer), None, "trailing bytes");
        let mut empty = tag_key(3, TAG_KEY).to_vec();
        empty.extend_from_slice(&0u16.to_be_bytes());
        empty.extend_from_slice(&9u64.to_be_bytes());
        assert_eq!(parse_idempotency_key(&empty), None, "empty key");
    }

    #[test]
    #[should_panic(expected = "reached the key index unchecked")]
    fn a_key_over_the_bound_is_never_truncated_into_a_row() {
        idempotency_key(3, &vec![b'k'; MAX_IDEMPOTENCY_KEY_BYTES + 1], 0);
    }
}
