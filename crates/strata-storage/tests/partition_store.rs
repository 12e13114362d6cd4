//! The partition side of the store on a real RocksDB: applying appends
//! stores batches under dense offsets, state survives a reopen, retention
//! trims, snapshots carry the data to another store, group commit answers
//! every waiter, deleting a group removes its keys, and producer state and
//! idempotency keys survive a reopen, travel with a snapshot and expire,
//! and a command of the wrong kind stops the group instead of being skipped.

use futures::stream;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderId;
use openraft::{Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use strata_state::{Command, MetaCommand, PartitionCommand};
use strata_storage::{GroupKind, SnapshotPayload, Store};

mod common;
use common::{append, apply, entry, keyed, keys_held, partition, transfer, values, TestEntry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_get_dense_offsets_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut sm = store.state_machine(5, GroupKind::Partition).await.unwrap();
        apply(&mut sm, vec![append(1, &["a", "b"]), append(2, &["c"]), append(3, &["d", "e", "f"])]).await;
        let state = sm.subscribe().borrow().clone();
        assert_eq!(state.as_partition().unwrap().next_offset, 6);
        let reader = store.partition_reader(5);
        let all = reader.read(0, 6, 1 << 20).await.unwrap();
        assert_eq!(
            values(&all, 0),
            vec![(0, "a".into()), (1, "b".into()), (2, "c".into()), (3, "d".into()), (4, "e".into()), (5, "f".into())]
        );
        // From the middle of a batch: the batch holding the offset comes first.
        let middle = reader.read(4, 6, 1 << 20).await.unwrap();
        assert_eq!(values(&middle, 4), vec![(4, "e".into()), (5, "f".into())]);
        // The end offset bounds the read.
        assert_eq!(values(&reader.read(0, 2, 1 << 20).await.unwrap(), 0).len(), 2);
        // A tiny byte bound still returns one batch.
        assert_eq!(values(&reader.read(0, 6, 1).await.unwrap(), 0).len(), 2);
        // Another group's data stays separate.
        assert!(store.partition_reader(6).read(0, 100, 1 << 20).await.unwrap().is_empty());
        store.sync().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine(5, GroupKind::Partition).await.unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|id| id.index), Some(3));
    assert_eq!(sm.subscribe().borrow().as_partition().unwrap().next_offset, 6);
    assert_eq!(values(&store.partition_reader(5).read(0, 6, 1 << 20).await.unwrap(), 0).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_deletes_batches_below_the_new_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine(9, GroupKind::Partition).await.unwrap();
    apply(&mut sm, vec![append(1, &["a", "b"]), append(2, &["c"]), append(3, &["d"])]).await;
    let headers = store.partition_reader(9).scan_headers(|_| false, 100).await.unwrap();
    assert_eq!(headers.iter().map(|h| h.base_offset).collect::<Vec<_>>(), vec![0, 2, 3]);
    let trimmed = headers[0].size_bytes + headers[1].size_bytes;
    apply(&mut sm, vec![entry(4, PartitionCommand::Trim { new_log_start: 3, trimmed_bytes_total: trimmed })]).await;
    let state = sm.subscribe().borrow().as_partition().unwrap().clone();
    assert_eq!((state.log_start_offset, state.next_offset), (3, 4));
    assert_eq!(state.retained_bytes(), headers[2].size_bytes);
    assert_eq!(values(&store.partition_reader(9).read(0, 4, 1 << 20).await.unwrap(), 0), vec![(3, "d".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_moves_state_and_data_to_another_store() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = Store::open(source_dir.path()).unwrap();
    let target = Store::open(target_dir.path()).unwrap();
    let mut sm = source.state_machine(3, GroupKind::Partition).await.unwrap();
    apply(&mut sm, vec![append(1, &["x"]), append(2, &["y", "z"])]).await;
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut copy = target.state_machine(3, GroupKind::Partition).await.unwrap();
    transfer(&source, &target, &mut copy, 3, &snapshot).await;
    assert_eq!(copy.applied_state().await.unwrap().0, snapshot.meta.last_log_id);
    assert_eq!(copy.subscribe().borrow().as_partition().unwrap().next_offset, 3);
    let read = target.partition_reader(3).read(0, 3, 1 << 20).await.unwrap();
    assert_eq!(values(&read, 0), vec![(0, "x".into()), (1, "y".into()), (2, "z".into())]);
    let current = copy.get_current_snapshot().await.unwrap().expect("installed snapshot is current");
    assert_eq!(current.meta.last_log_id, snapshot.meta.last_log_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_answers_every_waiter_and_delete_group_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine(11, GroupKind::Partition).await.unwrap();
    apply(&mut sm, vec![append(1, &["a"])]).await;
    let before = store.group_commit_stats();
    let waits: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.sync().await })
        })
        .collect();
    for wait in waits {
        wait.await.unwrap().unwrap();
    }
    let after = store.group_commit_stats();
    assert_eq!(after.waiters - before.waiters, 200);
    assert!(after.fsyncs > before.fsyncs && after.fsyncs - before.fsyncs <= 200);
    drop(sm);
    store.delete_group(11).await.unwrap();
    assert!(store.partition_reader(11).read(0, 10, 1 << 20).await.unwrap().is_empty());
    let reopened = store.state_machine(11, GroupKind::Partition).await.unwrap();
    assert_eq!(reopened.subscribe().borrow().as_partition().unwrap().next_offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_and_idempotency_keys_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut sm = store.state_machine(4, GroupKind::Partition).await.unwrap();
        apply(&mut sm, vec![keyed(1, "a", 7, 0, 100)]).await;
        assert_eq!(partition(&sm).next_offset, 1);
        assert_eq!(keys_held(&store, 4).await, 1);
        store.sync().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine(4, GroupKind::Partition).await.unwrap();
    // The same key from another producer: remembered, not stored.
    apply(&mut sm, vec![keyed(2, "a", 8, 0, 200)]).await;
    // A retry of producer 7's batch (same sequence): recognised, not stored.
    apply(&mut sm, vec![keyed(3, "b", 7, 0, 300)]).await;
    let state = partition(&sm);
    assert_eq!((state.next_offset, state.producer_count), (1, 2));
    // Once the window (1 s from 100 ms) has passed, the key is stored again.
    apply(&mut sm, vec![keyed(4, "a", -1, 0, 1_200)]).await;
    assert_eq!(partition(&sm).next_offset, 2);
    let read = store.partition_reader(4).read(0, 2, 1 << 20).await.unwrap();
    assert_eq!(values(&read, 0), vec![(0, "a".into()), (1, "a".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_deleted_once_two_snapshots_have_passed_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine(6, GroupKind::Partition).await.unwrap();
    let entries: Vec<TestEntry> = (0..300).map(|i| keyed(i + 1, &format!("k{i}"), -1, 0, 10 + i)).collect();
    apply(&mut sm, entries).await;
    assert_eq!(keys_held(&store, 6).await, 300);
    // Long after the window, but no snapshot yet: nothing is deleted,
    // since a follower may still need the keys.
    apply(&mut sm, vec![keyed(301, "late", -1, 0, 10_000)]).await;
    assert_eq!(keys_held(&store, 6).await, 301);
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    apply(&mut sm, vec![keyed(302, "later", -1, 0, 10_001)]).await;
    assert_eq!(keys_held(&store, 6).await, 302, "one snapshot is not enough");
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    apply(&mut sm, vec![keyed(303, "last", -1, 0, 10_002)]).await;
    // The 300 old keys expired by 10 s; the three recent ones stay.
    assert_eq!(keys_held(&store, 6).await, 3);
    // An expired key is stored again, a live one is not.
    apply(&mut sm, vec![keyed(304, "k0", -1, 0, 10_003), keyed(305, "late", -1, 0, 10_004)]).await;
    assert_eq!(partition(&sm).next_offset, 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_carries_producers_and_keys_so_replicas_decide_alike() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = Store::open(source_dir.path()).unwrap();
    let target = Store::open(target_dir.path()).unwrap();
    let mut sm = source.state_machine(8, GroupKind::Partition).await.unwrap();
    apply(&mut sm, vec![keyed(1, "a", 7, 0, 100), keyed(2, "b", 7, 1, 110)]).await;
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let payload = SnapshotPayload::decode(&snapshot.snapshot).unwrap();
    assert_eq!(payload.producers.len(), 1);
    // A key stored after the snapshot must not travel with it.
    apply(&mut sm, vec![keyed(3, "c", -1, 0, 120)]).await;
    let mut copy = target.state_machine(8, GroupKind::Partition).await.unwrap();
    transfer(&source, &target, &mut copy, 8, &snapshot).await;
    assert_eq!(keys_held(&target, 8).await, 2, "a and b travel, c does not");
    // The same entries after the snapshot give the same result on both.
    let after = |i| vec![keyed(i, "c", -1, 0, 120), keyed(i + 1, "a", 9, 0, 130), keyed(i + 2, "z", 7, 1, 140)];
    apply(&mut copy, after(3)).await;
    apply(&mut sm, after(4)[1..].to_vec()).await;
    assert_eq!(partition(&copy).next_offset, 3, "c stored, a and the retry of producer 7 not");
    assert_eq!(partition(&copy).next_offset, partition(&sm).next_offset);
    assert_eq!(partition(&copy).producer_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_of_the_wrong_kind_stops_the_group_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut sm = store.state_machine(5, GroupKind::Partition).await.unwrap();
        apply(&mut sm, vec![append(1, &["a"])]).await;
        // A metadata command in a partition's log, behind a good append in
        // the same round: the round fails as a whole.
        let wrong = Entry {
            log_id: LogId::new(LeaderId::new(1, 1), 3),
            payload: EntryPayload::Normal(Command::Meta(MetaCommand::DeleteTopic { name: "t".into() })),
        };
        let round = vec![append(2, &["b"]), wrong];
        let error = sm.apply(stream::iter(round.into_iter().map(|e| Ok((e, None))))).await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains("holds a metadata command, but this is a partition group"), "{message}");
        assert!(message.contains("the group stops"), "{message}");
        store.sync().await.unwrap();
    }
    // Nothing of the failed round was stored: a reopened replica is where
    // the last good round left it, and meets the bad entry again.
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine(5, GroupKind::Partition).await.unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|id| id.index), Some(1));
    assert_eq!(sm.subscribe().borrow().as_partition().unwrap().next_offset, 1);
    assert_eq!(values(&store.partition_reader(5).read(0, 10, 1 << 20).await.unwrap(), 0).len(), 1);
}
