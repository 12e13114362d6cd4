//! Key encodings. Every key starts with the group id in big-endian so one
//! group's keys sort together and a range delete removes a group.

pub const TAG_VOTE: u8 = 1;
pub const TAG_COMMITTED: u8 = 2;
pub const TAG_PURGED: u8 = 3;
pub const TAG_APPLIED: u8 = 1;
pub const TAG_SNAPSHOT: u8 = 2;

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
}
