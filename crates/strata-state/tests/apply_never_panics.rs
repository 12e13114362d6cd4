//! The produce path's last step, fuzzed: `PartitionState::apply` on Append
//! commands with arbitrary batch bytes, arbitrary idempotency keys (indexes
//! out of range included) and arbitrary clocks and windows never panics, and
//! a command it refuses or rejects changes nothing. A leader validates a
//! batch before proposing it, but every replica applies what the log holds,
//! so apply must stand on its own.
//!
//! The case count is bounded so the test runs in a few seconds in CI.

use std::collections::BTreeMap;

use proptest::prelude::*;
use strata_record::{encode_batch, ProducerFields, Record};
use strata_state::{
    KeyIndex, KeyedRecord, PartitionCommand, PartitionEffect, PartitionResponse, PartitionState, ProducerTable,
};

/// The key index as a map, applying `PutKey` effects as the store does.
#[derive(Default)]
struct MapIndex(BTreeMap<Vec<u8>, (u64, u64)>);

impl KeyIndex for MapIndex {
    fn lookup(&mut self, key: &[u8], below_offset: u64) -> Option<(u64, u64)> {
        self.0.get(key).copied().filter(|(offset, _)| *offset < below_offset)
    }
}

#[derive(Clone, Debug)]
struct Append {
    batch: Vec<u8>,
    time_ms: u64,
    dedup_window_ms: u64,
    producer_expiry_ms: u64,
    keys: Vec<KeyedRecord>,
}

fn valid_batch() -> impl Strategy<Value = Vec<u8>> {
    (1usize..6, prop_oneof![Just(-1i64), 0i64..3, any::<i64>()], any::<i16>(), any::<i32>()).prop_map(
        |(n, producer_id, producer_epoch, base_sequence)| {
            let records: Vec<Record> =
                (0..n).map(|i| Record { value: Some(vec![i as u8].into()), ..Default::default() }).collect();
            let producer = ProducerFields { producer_id, producer_epoch, base_sequence };
            encode_batch(&records, producer).unwrap().to_vec()
        },
    )
}

fn batch_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Arbitrary bytes.
        proptest::collection::vec(any::<u8>(), 0..200),
        // Valid batches, some with bytes flipped or cut.
        valid_batch(),
        (valid_batch(), any::<usize>(), any::<u8>()).prop_map(|(mut b, at, x)| {
            let at = at % b.len();
            b[at] ^= x | 1;
            b
        }),
        (valid_batch(), any::<usize>()).prop_map(|(mut b, len)| {
            b.truncate(len % b.len());
            b
        }),
    ]
}

fn append() -> impl Strategy<Value = Append> {
    let key = (prop_oneof![0u32..8, any::<u32>()], proptest::collection::vec(any::<u8>(), 0..4))
        .prop_map(|(index, key)| KeyedRecord { index, key });
    let clock = prop_oneof![0u64..10_000, Just(u64::MAX), any::<u64>()];
    (batch_bytes(), clock.clone(), clock.clone(), clock, proptest::collection::vec(key, 0..4)).prop_map(
        |(batch, time_ms, dedup_window_ms, producer_expiry_ms, keys)| Append {
            batch,
            time_ms,
            dedup_window_ms,
            producer_expiry_ms,
            keys,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn appends_of_arbitrary_bytes_never_panic(appends in proptest::collection::vec(append(), 1..8)) {
        let mut state = PartitionState::default();
        let mut producers = ProducerTable::default();
        let mut keys = MapIndex::default();
        for a in appends {
            let before = state.clone();
            let command = PartitionCommand::Append {
                batch: a.batch,
                time_ms: a.time_ms,
                dedup_window_ms: a.dedup_window_ms,
                producer_expiry_ms: a.producer_expiry_ms,
                keys: a.keys,
            };
            let (response, effects) = state.apply(&mut producers, &mut keys, command);
            match response {
                PartitionResponse::Appended { base_offset, record_count, duplicate_batch, .. } => {
                    if duplicate_batch {
                        prop_assert_eq!(state.next_offset, before.next_offset);
                    } else if record_count > 0 {
                        prop_assert_eq!(base_offset, before.next_offset);
                        prop_assert!(state.next_offset >= before.next_offset + u64::from(record_count));
                    }
                }
                PartitionResponse::Refused { .. } | PartitionResponse::Rejected(_) => {
                    // The clock may move (it stamps every applied entry);
                    // nothing stored or counted may.
                    prop_assert_eq!(state.next_offset, before.next_offset);
                    prop_assert_eq!(state.appended_bytes_total, before.appended_bytes_total);
                    let wrote = effects.iter().any(|e| matches!(e, PartitionEffect::Write { .. }));
                    prop_assert!(!wrote, "a refused append wrote a batch");
                }
                PartitionResponse::Trimmed { .. } | PartitionResponse::MarkerWritten { .. } => {
                    prop_assert!(false, "an append answered {:?}", response)
                }
            }
            for effect in effects {
                if let PartitionEffect::PutKey { key, offset, expires_ms } = effect {
                    keys.0.insert(key, (offset, expires_ms));
                }
            }
        }
    }
}
