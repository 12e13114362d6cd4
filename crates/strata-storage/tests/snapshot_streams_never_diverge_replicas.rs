//! A partition snapshot stream, sent and received on real RocksDB stores:
//! what a stream stages stays apart from live state until its install, a
//! stream cut short or with a wrong trailer is never installed, the keys
//! travel even when retention trimmed every batch below the snapshot,
//! cleanup cannot delete keys a stream in progress still has to send, bad
//! rows from a peer are refused at the edge, and a crash at any point leaves
//! a replica that decides like the others.
#![cfg(feature = "fault-hooks")]

use openraft::storage::RaftStateMachine;
use openraft::RaftSnapshotBuilder;
use strata_state::PartitionCommand;
use strata_storage::{GroupKind, GroupStateMachine, KeyRow, Store, StreamError, StreamPart};

mod common;
use common::{append, apply, copy_dir, entry, keyed, keys_held, partition, stage, stream_parts, transfer, TestEntry};

const GROUP: u64 = 12;

/// Entries `from..=to`, each one record with key `k<i>` stored at offset
/// i - 1, stamped at `100 + i` ms (keys expire 1 s later).
fn keyed_entries(from: u64, to: u64) -> Vec<TestEntry> {
    (from..=to).map(|i| keyed(i, &format!("k{i}"), -1, 0, 100 + i)).collect()
}

async fn read_all(store: &Store, end: u64) -> Vec<u8> {
    store.partition_reader(GROUP).read(0, end, 1 << 20).await.unwrap()
}

/// A leader with `k1..=k10` applied and a snapshot of them, and a follower
/// that applied only the first three.
async fn leader_and_follower(dir: &std::path::Path) -> (Store, GroupStateMachine, Store, GroupStateMachine) {
    let leader = Store::open(&dir.join("leader")).unwrap();
    let follower = Store::open(&dir.join("follower")).unwrap();
    let mut leader_sm = leader.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    let mut follower_sm = follower.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    apply(&mut leader_sm, keyed_entries(1, 10)).await;
    apply(&mut follower_sm, keyed_entries(1, 3)).await;
    (leader, leader_sm, follower, follower_sm)
}

/// The follower applies the rest of the leader's log and must end up with
/// the same records at the same offsets, byte for byte.
async fn catch_up_and_compare(leader: &Store, follower: &Store, follower_sm: &mut GroupStateMachine) {
    apply(follower_sm, keyed_entries(4, 10)).await;
    assert_eq!(partition(follower_sm).next_offset, 10, "the follower dropped its own records as duplicates");
    assert_eq!(read_all(follower, 10).await, read_all(leader, 10).await);
    assert_eq!(follower.count_staged(GROUP).await.unwrap(), (0, 0));
    assert_eq!(keys_held(follower, GROUP).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_stream_whose_install_is_refused_never_reach_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, mut follower_sm) = leader_and_follower(dir.path()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let parts = stream_parts(&leader, GROUP, &snapshot.snapshot).await;
    let staged = stage(&follower, GROUP, &snapshot.snapshot, parts).await.unwrap();
    assert_eq!(follower.count_staged(GROUP).await.unwrap(), (10, 10));
    assert_eq!(keys_held(&follower, GROUP).await, 3, "staged keys are not live");
    // openraft refuses the install (stale vote, or not newer than what is
    // committed): the follower applies the same entries from the log.
    staged.release().await.unwrap();
    catch_up_and_compare(&leader, &follower, &mut follower_sm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rows_past_the_next_offset_are_never_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, mut follower_sm) = leader_and_follower(dir.path()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let parts = stream_parts(&leader, GROUP, &snapshot.snapshot).await;
    let staged = stage(&follower, GROUP, &snapshot.snapshot, parts).await.unwrap();
    // An install that moved its rows in and then failed: rows for offsets
    // 3..10 are in the key index while the follower's next offset is 3.
    follower.move_staged_for_test(GROUP).await.unwrap();
    assert_eq!(follower.count_idempotency_keys(GROUP).await.unwrap(), 10);
    staged.release().await.unwrap();
    catch_up_and_compare(&leader, &follower, &mut follower_sm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_staging_or_installing_leaves_a_replica_that_decides_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, follower_sm) = leader_and_follower(dir.path()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let parts = stream_parts(&leader, GROUP, &snapshot.snapshot).await;
    // The follower's own applies are durable; a crash keeps them.
    follower.flush_for_test().await.unwrap();
    drop(follower_sm);

    // Killed mid-stream: every body part staged, no trailer, no install.
    let staged = stage(&follower, GROUP, &snapshot.snapshot, parts[..parts.len() - 1].to_vec()).await;
    assert!(matches!(staged, Err(StreamError::NoTrailer)), "{staged:?}");
    let payload = strata_storage::SnapshotPayload::decode(&snapshot.snapshot).unwrap();
    let mut sink = follower.snapshot_sink(GROUP, &payload).await.unwrap();
    for part in parts.iter().take(parts.len() - 1).cloned() {
        sink.accept(part).await.unwrap();
    }
    copy_dir(&dir.path().join("follower"), &dir.path().join("mid-stream"));
    sink.discard().await.unwrap();
    {
        let crashed = Store::open(&dir.path().join("mid-stream")).unwrap();
        let mut sm = crashed.state_machine(GROUP, GroupKind::Partition).await.unwrap();
        assert_eq!(crashed.count_staged(GROUP).await.unwrap(), (0, 0), "staged rows are dropped at open");
        catch_up_and_compare(&leader, &crashed, &mut sm).await;
    }

    // Killed mid-install: the staged rows moved in, the state not written.
    let staged = stage(&follower, GROUP, &snapshot.snapshot, parts.clone()).await.unwrap();
    follower.move_staged_for_test(GROUP).await.unwrap();
    assert_eq!(follower.count_idempotency_keys(GROUP).await.unwrap(), 10, "moved rows sit past the next offset");
    copy_dir(&dir.path().join("follower"), &dir.path().join("mid-install"));
    staged.release().await.unwrap();
    let crashed = Store::open(&dir.path().join("mid-install")).unwrap();
    let mut sm = crashed.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    assert_eq!(partition(&sm).next_offset, 3);
    assert_eq!(keys_held(&crashed, GROUP).await, 3, "rows past the next offset are dropped");
    catch_up_and_compare(&leader, &crashed, &mut sm).await;
}

/// Files in a store's snapshot staging directory.
fn staging_files(store_dir: &std::path::Path) -> usize {
    std::fs::read_dir(store_dir.join("snapshot-staging")).unwrap().count()
}

/// A snapshot's batches reach the receiver's disk once: staged in a file
/// of their own, not through the WAL, which the install moves into the
/// store; they survive a restart right after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_batches_skip_the_wal_and_the_install_ingests_them() {
    const BATCHES: u64 = 16;
    const VALUE_BYTES: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let leader = Store::open(&dir.path().join("leader")).unwrap();
    let follower_dir = dir.path().join("follower");
    let follower = Store::open(&follower_dir).unwrap();
    let mut leader_sm = leader.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    let mut follower_sm = follower.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    let value = "v".repeat(VALUE_BYTES);
    apply(&mut leader_sm, (1..=BATCHES).map(|i| append(i, &[&value])).collect()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let parts = stream_parts(&leader, GROUP, &snapshot.snapshot).await;

    let wal_before = follower.engine_stats().await.unwrap().wal_bytes;
    let staged = stage(&follower, GROUP, &snapshot.snapshot, parts).await.unwrap();
    assert_eq!(follower.count_staged(GROUP).await.unwrap(), (BATCHES, 0));
    assert_eq!(staging_files(&follower_dir), 1, "the batches wait in one staging file");
    follower_sm.install_snapshot(&snapshot.meta, snapshot.snapshot.clone()).await.unwrap();
    staged.release().await.unwrap();
    let wal_written = follower.engine_stats().await.unwrap().wal_bytes - wal_before;
    assert!(
        wal_written < VALUE_BYTES as u64,
        "{wal_written} bytes went to the WAL for {BATCHES} batches of {VALUE_BYTES} bytes"
    );
    assert_eq!(staging_files(&follower_dir), 0, "the install took the file");
    assert_eq!(partition(&follower_sm).next_offset, BATCHES);
    let expected = read_all(&leader, BATCHES).await;
    assert_eq!(read_all(&follower, BATCHES).await, expected);

    drop(follower_sm);
    copy_dir(&follower_dir, &dir.path().join("killed"));
    let killed = Store::open(&dir.path().join("killed")).unwrap();
    let sm = killed.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    assert_eq!(partition(&sm).next_offset, BATCHES);
    assert_eq!(read_all(&killed, BATCHES).await, expected, "ingested rows are durable at once");
}

/// Appends entries to `log` and waits until they are durable.
async fn append_durably(log: &mut strata_storage::LogStore, entries: Vec<TestEntry>) {
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::type_config::TypeConfigExt;
    let (tx, rx) = strata_storage::TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_right_after_a_snapshot_install_starts_again() {
    use openraft::storage::RaftLogStorage;
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, mut follower_sm) = leader_and_follower(dir.path()).await;
    let mut log = follower.log_store(GROUP);
    // The follower's own log: entries 1..=3, applied, flushed and purged.
    append_durably(&mut log, keyed_entries(1, 3)).await;
    follower.flush_for_test().await.unwrap();
    log.purge(keyed_entries(3, 3)[0].log_id).await.unwrap();
    // It falls behind; the leader's log is gone, so it gets a snapshot (10).
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    transfer(&leader, &follower, &mut follower_sm, GROUP, &snapshot).await;
    // openraft purges the log the snapshot covers; with unlogged writes of
    // another group in memory the purge waits for the next flush.
    let mut other = follower.state_machine(GROUP + 1, GroupKind::Partition).await.unwrap();
    apply(&mut other, keyed_entries(1, 1)).await;
    log.purge(snapshot.meta.last_log_id.unwrap()).await.unwrap();
    // Entries after the snapshot arrive and are durable; then kill -9.
    append_durably(&mut log, keyed_entries(11, 12)).await;
    copy_dir(&dir.path().join("follower"), &dir.path().join("killed"));

    let store = Store::open(&dir.path().join("killed")).unwrap();
    let mut log = store.log_store(GROUP);
    let mut sm = store.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    let state = openraft::StorageHelper::new(&mut log, &mut sm)
        .with_id(2)
        .get_initial_state()
        .await
        .expect("the group starts again");
    assert_eq!(sm.applied_state().await.unwrap().0.map(|id| id.index), Some(10));
    assert!(state.log_ids.last().is_some_and(|id| id.index == 12), "the entries after the snapshot are there");
    drop(leader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_or_with_a_wrong_trailer_is_never_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, _follower_sm) = leader_and_follower(dir.path()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let parts = stream_parts(&leader, GROUP, &snapshot.snapshot).await;
    assert!(matches!(parts.last(), Some(StreamPart::Trailer(t)) if t.batch_count == 10 && t.key_row_count == 10));

    let cut = parts[..parts.len() - 1].to_vec();
    assert!(matches!(stage(&follower, GROUP, &snapshot.snapshot, cut).await, Err(StreamError::NoTrailer)));
    // A chunk lost in the middle: the trailer's counts and checksum differ.
    let mut lost = parts.clone();
    lost.retain(|p| !matches!(p, StreamPart::Keys(_)));
    assert!(matches!(stage(&follower, GROUP, &snapshot.snapshot, lost).await, Err(StreamError::TrailerMismatch(_))));
    // One changed byte in a batch.
    let mut flipped = parts.clone();
    if let StreamPart::Batches(batches) = &mut flipped[0] {
        let last = batches.len() - 1;
        batches[last] ^= 0x01;
    }
    assert!(matches!(stage(&follower, GROUP, &snapshot.snapshot, flipped).await, Err(StreamError::TrailerMismatch(_))));
    // Anything after the trailer.
    let mut after = parts.clone();
    after.push(parts[0].clone());
    assert!(matches!(stage(&follower, GROUP, &snapshot.snapshot, after).await, Err(StreamError::BadPart(_))));
    assert_eq!(follower.count_staged(GROUP).await.unwrap(), (0, 0), "refused streams leave nothing staged");
    assert_eq!(staging_files(&dir.path().join("follower")), 0, "refused streams leave no staging file");
    // The whole stream still installs.
    assert!(stage(&follower, GROUP, &snapshot.snapshot, parts).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_whose_batches_retention_trimmed_still_carries_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, mut follower_sm) = leader_and_follower(dir.path()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    // Retention trims the partition to its end after the snapshot was built.
    let bytes = partition(&leader_sm).appended_bytes_total;
    apply(&mut leader_sm, vec![entry(11, PartitionCommand::Trim { new_log_start: 10, trimmed_bytes_total: bytes })])
        .await;
    assert!(read_all(&leader, 10).await.is_empty());

    let parts = stream_parts(&leader, GROUP, &snapshot.snapshot).await;
    assert!(parts.iter().all(|p| !matches!(p, StreamPart::Batches(_))), "no batch is left to send");
    assert!(matches!(parts.last(), Some(StreamPart::Trailer(t)) if t.key_row_count == 10 && t.end_offset == 10));
    let staged = stage(&follower, GROUP, &snapshot.snapshot, parts).await.unwrap();
    follower_sm.install_snapshot(&snapshot.meta, snapshot.snapshot.clone()).await.unwrap();
    staged.release().await.unwrap();
    assert_eq!(keys_held(&follower, GROUP).await, 10);

    // The follower, now leader, sees every key again within the window:
    // nothing is stored a second time.
    apply(&mut follower_sm, (12..=21).map(|i| keyed(i, &format!("k{}", i - 11), -1, 0, 150)).collect()).await;
    assert_eq!(partition(&follower_sm).next_offset, 10, "re-sent keys were stored again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_a_stream_in_progress_needs_survive_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, mut follower_sm) = leader_and_follower(dir.path()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let payload = strata_storage::SnapshotPayload::decode(&snapshot.snapshot).unwrap();
    let mut source = leader.snapshot_source(GROUP, &payload).unwrap();
    let first = source.next_part().await.unwrap().unwrap();
    assert!(matches!(first, StreamPart::Batches(_)));

    // While the stream is in its batch phase, time passes every key's
    // expiry and two snapshots are built: cleanup would delete them all.
    let late = |i: u64| keyed(i, &format!("late{i}"), -1, 0, 50_000 + i);
    apply(&mut leader_sm, vec![late(11)]).await;
    leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    apply(&mut leader_sm, vec![late(12)]).await;
    leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    apply(&mut leader_sm, vec![late(13)]).await;
    assert_eq!(keys_held(&leader, GROUP).await, 13, "cleanup waits for the stream");

    let mut parts = vec![first];
    while let Some(part) = source.next_part().await.unwrap() {
        parts.push(part);
    }
    drop(source);
    assert!(matches!(parts.last(), Some(StreamPart::Trailer(t)) if t.key_row_count == 10));
    let staged = stage(&follower, GROUP, &snapshot.snapshot, parts).await.unwrap();
    follower_sm.install_snapshot(&snapshot.meta, snapshot.snapshot.clone()).await.unwrap();
    staged.release().await.unwrap();

    // Once the stream is over, cleanup goes on.
    apply(&mut leader_sm, vec![late(14)]).await;
    assert_eq!(keys_held(&leader, GROUP).await, 4);
    // A stream of the old snapshot can no longer start: its keys are gone.
    assert!(matches!(leader.snapshot_source(GROUP, &payload), Err(StreamError::KeysCleaned)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_from_a_peer_are_refused_at_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, mut follower_sm) = leader_and_follower(dir.path()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let parts = stream_parts(&leader, GROUP, &snapshot.snapshot).await;
    let row = |key: Vec<u8>, offset, expires_ms| StreamPart::Keys(vec![KeyRow { key, offset, expires_ms }]);
    let over = strata_core::limits::MAX_IDEMPOTENCY_KEY_BYTES + 1;
    for bad in [
        // 70,000 bytes: its length no longer fits the row's two bytes.
        row(vec![b'k'; 70_000], 1, 5_000),
        row(vec![b'k'; over], 1, 5_000),
        row(vec![], 1, 5_000),
        row(b"past-the-end".to_vec(), 10, 5_000),
        row(b"already-expired".to_vec(), 1, 1),
        StreamPart::Batches(vec![0xff; 40]),
    ] {
        let mut with_bad = vec![bad];
        with_bad.extend(parts.iter().cloned());
        let refused = stage(&follower, GROUP, &snapshot.snapshot, with_bad).await;
        assert!(matches!(refused, Err(StreamError::BadPart(_))), "{refused:?}");
        assert_eq!(follower.count_staged(GROUP).await.unwrap(), (0, 0));
    }
    // A batch sent twice (out of order) is refused too.
    let batches = parts.iter().find(|p| matches!(p, StreamPart::Batches(_))).unwrap().clone();
    let mut twice = vec![batches.clone(), batches];
    twice.extend(parts.iter().skip(1).cloned());
    assert!(matches!(stage(&follower, GROUP, &snapshot.snapshot, twice).await, Err(StreamError::BadPart(_))));

    // The good stream afterwards installs every key intact.
    transfer(&leader, &follower, &mut follower_sm, GROUP, &snapshot).await;
    assert_eq!(keys_held(&follower, GROUP).await, 10);
    assert_eq!(partition(&follower_sm).next_offset, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_rows_of_a_deleted_group_are_found_in_every_column_family() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, follower_sm) = leader_and_follower(dir.path()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let parts = stream_parts(&leader, GROUP, &snapshot.snapshot).await;
    drop(follower_sm);
    follower.delete_group(GROUP).await.unwrap();
    assert!(!follower.stored_groups().await.unwrap().contains(&GROUP));
    // A late snapshot chunk of keys lands after the delete (batches go to
    // a staging file, which the store drops at open, not to rows).
    let payload = strata_storage::SnapshotPayload::decode(&snapshot.snapshot).unwrap();
    let mut sink = follower.snapshot_sink(GROUP, &payload).await.unwrap();
    let keys = parts.iter().find(|p| matches!(p, StreamPart::Keys(_))).unwrap().clone();
    sink.accept(keys).await.unwrap();
    drop(sink);
    assert!(follower.stored_groups().await.unwrap().contains(&GROUP), "rows outside raft_state are found");
    follower.delete_group(GROUP).await.unwrap();
    assert!(!follower.stored_groups().await.unwrap().contains(&GROUP));
}

/// A small deterministic generator, so a failure names its case.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_parts_from_a_peer_never_panic_and_a_changed_byte_is_never_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, mut leader_sm, follower, _follower_sm) = leader_and_follower(dir.path()).await;
    let snapshot = leader_sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let parts = stream_parts(&leader, GROUP, &snapshot.snapshot).await;
    let StreamPart::Batches(batches) = &parts[0] else { panic!("batches first") };
    let mut gen = Gen(0x2545_f491_4f6c_dd1d);
    for case in 0..300 {
        let mut stream = parts.clone();
        match case % 3 {
            // One byte of the batches changed: refused, whatever it hits.
            0 => {
                let mut changed = batches.clone();
                let at = gen.next() as usize % changed.len();
                changed[at] ^= 1 << (gen.next() % 8);
                stream[0] = StreamPart::Batches(changed);
            }
            // Arbitrary bytes as batches.
            1 => {
                let len = gen.next() as usize % 200;
                stream[0] = StreamPart::Batches((0..len).map(|_| gen.next() as u8).collect());
            }
            // Arbitrary key rows.
            _ => {
                let rows = (0..1 + gen.next() % 4)
                    .map(|_| KeyRow {
                        key: (0..gen.next() % 300).map(|_| gen.next() as u8).collect(),
                        offset: gen.next() % 12,
                        expires_ms: gen.next() % 2_000,
                    })
                    .collect();
                stream.insert(1, StreamPart::Keys(rows));
            }
        }
        let result = stage(&follower, GROUP, &snapshot.snapshot, stream).await;
        assert!(result.is_err(), "case {case}: a changed stream was accepted");
        assert_eq!(follower.count_staged(GROUP).await.unwrap(), (0, 0), "case {case}");
    }
}
