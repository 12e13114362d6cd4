//! The test-only synced-WAL record (feature `fault-hooks`) lets a harness
//! emulate a power loss: after cutting the WAL to the record, everything the
//! store reported durable is still there and unsynced writes are gone.
#![cfg(feature = "fault-hooks")]

use strata_storage::synced_wal::drop_unsynced_writes;
use strata_storage::Store;

mod common;
use common::copy_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutting_the_wal_to_the_record_keeps_synced_writes_only() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let crashed = dir.path().join("crashed");
    let store = Store::open_recording_syncs(&live).unwrap();
    store.put_for_test(b"synced", b"1").await.unwrap();
    store.sync().await.unwrap();
    store.put_for_test(b"unsynced", b"2").await.unwrap();
    copy_dir(&live, &crashed);
    drop(store);

    let dropped = drop_unsynced_writes(&crashed).unwrap();
    assert!(dropped > 0, "the unsynced write was cut");
    let reopened = Store::open(&crashed).unwrap();
    assert_eq!(reopened.get_for_test(b"synced").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(reopened.get_for_test(b"unsynced").await.unwrap(), None);
}
