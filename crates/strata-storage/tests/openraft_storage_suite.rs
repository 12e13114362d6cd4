//! openraft's own storage test suite, run against the real RocksDB store:
//! one group's log storage and a metadata state machine, each test on a
//! fresh database.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use strata_storage::{GroupKind, GroupStateMachine, LogStore, Store, TypeConfig};

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
