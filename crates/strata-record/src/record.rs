//! The record types callers build batches from and decode batches into.

use bytes::Bytes;

/// One record header. Kafka allows a null value but not a null key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A record as a producer hands it over, before it has an offset.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    pub timestamp_ms: i64,
}

/// A record read back from the log, with its absolute offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// The idempotent-producer fields of a batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Default for ProducerFields {
    /// All -1: Kafka's encoding of "no idempotent producer".
    fn default() -> Self {
        ProducerFields { producer_id: -1, producer_epoch: -1, base_sequence: -1 }
    }
}

/// The sequence number `count` records after `sequence`; sequences wrap
/// from `i32::MAX` to 0, as Kafka's do. Producers and partitions both use
/// it, so they agree on every wrap.
pub fn sequence_after(sequence: i32, count: u32) -> i32 {
    ((i64::from(sequence) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

#[cfg(test)]
mod tests {
    use super::sequence_after;

    #[test]
    fn sequences_wrap_to_zero() {
        assert_eq!(sequence_after(5, 3), 8);
        assert_eq!(sequence_after(i32::MAX, 1), 0);
        assert_eq!(sequence_after(i32::MAX - 1, 3), 1);
    }
}
