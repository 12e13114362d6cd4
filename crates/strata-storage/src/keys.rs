//! Key encodings. Every key starts with the group id in big-endian so one
//! group's keys sort together and a range delete removes a group.

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
pub fn idempotency_prefix(group_id: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(11 + key.len() + 8);
    out.extend_from_slice(&tag_key(group_id, TAG_KEY));
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    out
}

pub fn idempotency_key(group_id: u64, key: &[u8], offset: u64) -> Vec<u8> {
    let mut out = idempotency_prefix(group_id, key);
    out.extend_from_slice(&offset.to_be_bytes());
    out
}

/// The key and offset of a key-index row.
pub fn parse_idempotency_key(row: &[u8]) -> Option<(&[u8], u64)> {
    let len = u16::from_be_bytes(row.get(9..11)?.try_into().ok()?) as usize;
    let key = row.get(11..11 + len)?;
    let offset = u64::from_be_bytes(row.get(11 + len..11 + len + 8)?.try_into().ok()?);
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
        let e = expiry_key(3, 1000, 9, b"order-1");
        assert_eq!(parse_expiry_key(&e), Some((1000, 9, &b"order-1"[..])));
        assert!(expiry_key(3, 999, 100, b"z") < e);
        assert_eq!(group_of(&e), 3);
    }
}
