//! Record values: a stamp (intended send time, and the record id where
//! asked for), then random filler; and reading the stamp back.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the intended send time (nanoseconds since the Unix epoch, little endian).
pub const TIME_BYTES: usize = 8;

/// Bytes of the record id that follows the time in [`Stamp::TimeAndId`].
pub const ID_BYTES: usize = 8;

/// Bits of a record id that number a producer's records; the producer's
/// index sits above them. 2^40 records is more than any producer sends in
/// a run (a trillion), and leaves 2^24 producers.
const SEQUENCE_BITS: u32 = 40;

/// Size of the random pool values are cut from. Random bytes keep any
/// compression in the systems (LZ4 in Strata's store) from making them look
/// better than real, varied data would.
const FILLER_POOL_BYTES: usize = 64 * 1024;

/// What a value starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// The intended send time only (`strata bench`: its smallest record is
    /// 8 bytes, and it reads only the time back).
    Time,
    /// The intended send time, then the record id (the suite reads ids back
    /// to find acknowledged records that were lost).
    TimeAndId,
}

impl Stamp {
    /// Bytes the stamp takes at the start of a value.
    pub const fn bytes(self) -> usize {
        match self {
            Stamp::Time => TIME_BYTES,
            Stamp::TimeAndId => TIME_BYTES + ID_BYTES,
        }
    }
}

/// The id of record `sequence` of producer `producer`: unique in a run.
pub fn record_id(producer: usize, sequence: u64) -> u64 {
    debug_assert!(sequence < 1 << SEQUENCE_BITS, "sequence {sequence} overflows into the producer bits");
    ((producer as u64) << SEQUENCE_BITS) | sequence
}

/// The intended send time (nanoseconds since the Unix epoch) a value starts with.
pub fn sent_at(value: &[u8]) -> Option<u64> {
    value.get(..TIME_BYTES).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// The record id of a value stamped with [`Stamp::TimeAndId`].
pub fn id_of(value: &[u8]) -> Option<u64> {
    value.get(TIME_BYTES..TIME_BYTES + ID_BYTES).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// A pool of random bytes that values are cut from, one per producer.
pub struct Filler {
    pool: Vec<u8>,
}

impl Filler {
    /// Random bytes from a small xorshift generator: cheap, and seeded per
    /// producer so producers do not send identical values.
    pub fn new(seed: u64) -> Filler {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let pool = (0..FILLER_POOL_BYTES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        Filler { pool }
    }

    /// A value of `size` bytes (at least the stamp): the stamp, then filler
    /// from `offset` in the pool, wrapping around its end.
    pub fn value(&self, stamp: Stamp, intended_unix_ns: u64, id: u64, size: usize, offset: usize) -> Bytes {
        let size = size.max(stamp.bytes());
        let mut value = BytesMut::with_capacity(size);
        value.put_u64_le(intended_unix_ns);
        if stamp == Stamp::TimeAndId {
            value.put_u64_le(id);
        }
        let mut remaining = size - stamp.bytes();
        let mut at = offset % self.pool.len();
        while remaining > 0 {
            let take = remaining.min(self.pool.len() - at);
            value.put_slice(&self.pool[at..at + take]);
            remaining -= take;
            at = 0;
        }
        value.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let filler = Filler::new(1);
        let id = record_id(3, 7);
        let value = filler.value(Stamp::TimeAndId, 123_456_789, id, 1024, 65_000);
        assert_eq!(value.len(), 1024);
        assert_eq!(sent_at(&value), Some(123_456_789));
        assert_eq!(id_of(&value), Some(id));
        assert_eq!(id >> SEQUENCE_BITS, 3);
        assert_eq!(id & ((1 << SEQUENCE_BITS) - 1), 7);
        // The time-only stamp leaves the bytes after the time to the filler.
        let value = filler.value(Stamp::Time, 42, id, 1024, 0);
        assert_eq!(sent_at(&value), Some(42));
        assert_eq!(&value[TIME_BYTES..TIME_BYTES + 16], &filler.pool[..16]);
    }

    #[test]
    fn sizes_are_exact_and_never_below_the_stamp() {
        let filler = Filler::new(1);
        // Wrapping around the end of the pool keeps the size exact.
        assert_eq!(filler.value(Stamp::Time, 1, 0, 100_000, 3).len(), 100_000);
        assert_eq!(filler.value(Stamp::Time, 1, 0, TIME_BYTES, 3).len(), TIME_BYTES);
        assert_eq!(filler.value(Stamp::TimeAndId, 1, 2, 4, 0).len(), Stamp::TimeAndId.bytes());
        assert_eq!(sent_at(b"short"), None);
        assert_eq!(id_of(b"only-eight-plus"), None);
    }

    #[test]
    fn filler_is_random_and_differs_per_producer() {
        let (one, two) = (Filler::new(1), Filler::new(2));
        assert_ne!(one.pool[..64], two.pool[..64]);
        assert!(one.pool.iter().any(|b| *b != one.pool[0]));
        // Consecutive records start at different places in the pool.
        let first = one.value(Stamp::Time, 0, 0, 64, 0);
        let second = one.value(Stamp::Time, 0, 0, 64, 61);
        assert_ne!(first[TIME_BYTES..], second[TIME_BYTES..]);
    }
}
