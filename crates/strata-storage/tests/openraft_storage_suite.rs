//! openraft's own storage test suite, run against the real RocksDB store:
//! one group's log storage and a metadata state machine, each test on a
//! fresh database.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use strata_storage::{GroupKind, GroupStateMachine, LogStore, Store, TypeConfig};

mod common;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, GroupStateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, GroupStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open store");
        // A group id other than 0 checks that keys are prefixed correctly.
        let group = 42;
        let log = store.log_store(group);
        let state_machine = store.state_machine(group, GroupKind::Metadata).await.expect("state machine");
        Ok((dir, log, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_rocksdb() {
    Suite::test_all(RocksBuilder).await.expect("openraft storage suite");
}

/// Replication reads a follower's next message with
/// `limited_get_log_entries`: it must stop near the transport's byte bound
/// (a catch-up otherwise read up to 300 full batches for every 4 it sent),
/// yet always return at least one entry, and the whole range when the
/// entries are small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_read_stops_at_the_append_entries_byte_bound() {
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::type_config::TypeConfigExt;
    use openraft::RaftLogReader;
    use strata_core::limits::MAX_APPEND_ENTRIES_BYTES;
    use strata_record::{encode_batch, ProducerFields, Record};

    let entry = |index: u64, value_bytes: usize| {
        let record = Record { value: Some(vec![7u8; value_bytes].into()), ..Default::default() };
        let batch = encode_batch(&[record], ProducerFields::default()).unwrap().to_vec();
        common::entry(index, common::append_command(batch, vec![], 1))
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut log = store.log_store(3);
    // Entries 1..=10 of ~900 KiB each, then 11..=30 of 100 bytes.
    let big = 900 * 1024;
    let entries: Vec<_> = (1..=10).map(|i| entry(i, big)).chain((11..=30).map(|i| entry(i, 100))).collect();
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();

    let limited = log.limited_get_log_entries(1, 31).await.unwrap();
    let fit = MAX_APPEND_ENTRIES_BYTES / big;
    assert_eq!(limited.len(), fit, "as many ~900 KiB entries as fit in {MAX_APPEND_ENTRIES_BYTES} bytes");
    let bytes: usize = limited.iter().map(|e| postcard::to_allocvec(e).unwrap().len()).sum();
    assert!(bytes <= MAX_APPEND_ENTRIES_BYTES, "{bytes} bytes read");
    assert_eq!(limited.first().unwrap().log_id.index, 1, "from the first asked");

    let small = log.limited_get_log_entries(11, 31).await.unwrap();
    assert_eq!(small.len(), 20, "small entries all fit");

    let whole = log.try_get_log_entries(1..31).await.unwrap();
    assert_eq!(whole.len(), 30, "an unlimited read returns the whole range");
}
