//! Which partition a record goes to.
//!
//! Records with a key go to `(murmur2(key) & 0x7fffffff) % partitions`, the
//! hash and formula of Kafka's default partitioner, so a key lands on the same
//! partition number in Strata as in Kafka and stays there as long as the
//! partition count does not change. Records without a key are spread
//! round-robin by the producer.

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

#[cfg(test)]
mod tests {
    use super::*;

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
