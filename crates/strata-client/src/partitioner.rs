//! Which partition a record goes to.
//!
//! Records with a key go to `(murmur2(key) & 0x7fffffff) % partitions`, the
//! hash and formula of Kafka's default partitioner, so a key lands on the same
//! partition number in Strata as in Kafka and stays there as long as the
//! partition count does not change. Records without a key go to one
//! partition at a time, for about one batch, then to the next
//! ([`StickyPartitions`]).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// MurmurHash2 (32-bit) with Kafka's seed `0x9747b28c`, as Kafka's
/// `Utils.murmur2` computes it (reading 4-byte blocks little-endian).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a keyed record among `partitions` (which must be > 0).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Partitions for records without a key, per topic: each stays on one
/// partition until a batch's worth of bytes went there or `linger` passed
/// since it started (its batch is then on its way), then moves to the next.
///
/// Spreading such records one by one would cut every batch into one record
/// per partition: a producer sending 500 records/s over 6 partitions with
/// 5 ms linger makes ~500 requests a second instead of ~200, and every request
/// costs the cluster a Raft entry, a replication round and a wake-up on each
/// replica. Over a few batches the partitions still get even shares (the
/// idea of Kafka's sticky partitioner). Each producer starts at a random
/// partition, so producers started together do not move in step.
pub(crate) struct StickyPartitions {
    max_batch_bytes: usize,
    linger: Duration,
    start: u32,
    topics: HashMap<String, Stick>,
}

struct Stick {
    partition: u32,
    since: Instant,
    bytes: usize,
}

impl StickyPartitions {
    pub(crate) fn new(max_batch_bytes: usize, linger: Duration) -> Self {
        let start = RandomState::new().hash_one(0u8) as u32;
        StickyPartitions { max_batch_bytes, linger, start, topics: HashMap::new() }
    }

    /// The partition (of `partitions`, > 0) for a keyless record of
    /// `record_bytes` sent to `topic` at `now`.
    pub(crate) fn choose(&mut self, topic: &str, partitions: u32, record_bytes: usize, now: Instant) -> u32 {
        assert!(partitions > 0, "a topic has at least one partition");
        if !self.topics.contains_key(topic) {
            let first = Stick { partition: self.start % partitions, since: now, bytes: 0 };
            self.topics.insert(topic.to_string(), first);
        }
        let stick = self.topics.get_mut(topic).expect("inserted above");
        let batch_full = stick.bytes + record_bytes > self.max_batch_bytes;
        let batch_sent = now.saturating_duration_since(stick.since) >= self.linger;
        if stick.bytes > 0 && (batch_full || batch_sent) {
            *stick = Stick { partition: stick.partition.wrapping_add(1), since: now, bytes: 0 };
        }
        stick.bytes += record_bytes;
        // The partition count may have grown since the stick began.
        stick.partition % partitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyless_records_stay_on_a_partition_for_one_batch() {
        let linger = Duration::from_millis(5);
        let mut sticky = StickyPartitions::new(10_000, linger);
        let t0 = Instant::now();
        let first = sticky.choose("t", 6, 1_000, t0);
        // Ten 1,000-byte records fill the batch; the eleventh moves on.
        for _ in 1..10 {
            assert_eq!(sticky.choose("t", 6, 1_000, t0), first);
        }
        let second = sticky.choose("t", 6, 1_000, t0);
        assert_eq!(second, (first + 1) % 6);
        // Once linger has passed, the batch is sent: the next record moves on.
        assert_eq!(sticky.choose("t", 6, 10, t0 + linger / 2), second);
        assert_eq!(sticky.choose("t", 6, 10, t0 + linger), (second + 1) % 6);
        // Topics stick independently.
        let other = sticky.choose("u", 6, 1_000, t0);
        assert!(other < 6);
    }

    #[test]
    fn keyless_records_spread_evenly_over_batches() {
        let mut sticky = StickyPartitions::new(4_096, Duration::from_millis(5));
        let t0 = Instant::now();
        let mut counts = [0u32; 6];
        for i in 0..6_000u64 {
            // 1 KiB records at 1,000/s: a batch of 4 records or 5 ms each.
            counts[sticky.choose("t", 6, 1_024, t0 + Duration::from_millis(i)) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == 1_000), "{counts:?}");
        // Without linger every record is its own batch: plain round-robin.
        let mut sticky = StickyPartitions::new(4_096, Duration::ZERO);
        let picks: Vec<u32> = (0..4).map(|_| sticky.choose("t", 4, 1, t0)).collect();
        assert_eq!(picks.iter().map(|p| (p + 4 - picks[0]) % 4).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's own test vectors for Utils.murmur2 (signed 32-bit results).
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input) as i32, *expected, "murmur2({:?})", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn keys_map_to_fixed_partitions() {
        // Pinned answers: changing the partitioner would move keys between
        // partitions and break per-key order across a client upgrade.
        assert_eq!(partition_for_key(b"foobar", 12), (0x7fff_ffff & (-790332482i32 as u32)) % 12);
        assert_eq!(partition_for_key(b"abc", 3), 479470107 % 3);
        assert_eq!(partition_for_key(b"", 1), 0);
        for key in [&b"user-1"[..], b"user-2", b"", b"\x00\xff"] {
            let p = partition_for_key(key, 7);
            assert!(p < 7);
            assert_eq!(p, partition_for_key(key, 7), "stable");
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let partitions = 12u32;
        let keys = 12_000;
        let mut counts = vec![0u32; partitions as usize];
        for i in 0..keys {
            counts[partition_for_key(format!("key-{i}").as_bytes(), partitions) as usize] += 1;
        }
        let expected = keys / partitions;
        for (partition, &count) in counts.iter().enumerate() {
            // Within 15% of an even share; a broken hash (say, one using
            // only the length) would pile keys onto few partitions.
            assert!(
                count.abs_diff(expected) * 100 <= expected * 15,
                "partition {partition} got {count} of {keys} keys: {counts:?}"
            );
        }
    }
}
