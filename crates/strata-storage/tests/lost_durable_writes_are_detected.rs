//! A store whose files lost writes it had made durable (a truncated or
//! damaged WAL) refuses to open, so Raft never runs on a log that went back.

use std::fs;
use std::path::Path;

use strata_storage::Store;

mod common;
use common::copy_dir;

fn newest_wal(dir: &Path) -> std::path::PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a WAL file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_wal_is_refused_and_an_intact_one_opens() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let store = Store::open(&live).unwrap();
    // Writes that go through the group commit (each a synced delete).
    for i in 0..50u64 {
        store.delete_group(1000 + i).await.unwrap();
    }
    store.sync().await.unwrap();
    let intact = dir.path().join("intact");
    let damaged = dir.path().join("damaged");
    copy_dir(&live, &intact);
    copy_dir(&live, &damaged);
    drop(store);

    assert!(Store::open(&intact).is_ok(), "a crash that kept every synced byte opens");
    let wal = newest_wal(&damaged);
    let len = fs::metadata(&wal).unwrap().len();
    fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len / 2).unwrap();
    let error = Store::open(&damaged).err().expect("a store that lost durable writes is refused");
    // No advice to wipe and rejoin under the same id (a double vote).
    assert!(error.to_string().contains("Keep this node stopped"), "{error}");
    assert!(!error.to_string().contains("rejoins as an empty replica"), "{error}");
}
