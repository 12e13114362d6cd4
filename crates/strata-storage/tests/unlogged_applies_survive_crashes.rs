//! State-machine writes skip the WAL (a record batch reaches the WAL once,
//! in its Raft entry). A crash takes the applied state back to the last
//! memtable flush, and the Raft log, purged only behind a flush, still
//! holds every entry needed to re-apply the rest.

use std::time::{Duration, Instant};

use futures::stream;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::LogIdOf;
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderId;
use openraft::{Entry, EntryPayload, LogId, RaftLogReader};
use strata_record::{encode_batch, ProducerFields, Record};
use strata_state::{Command, PartitionCommand};
use strata_storage::{GroupKind, GroupStateMachine, LogStore, Store, TypeConfig};

mod common;
use common::copy_dir;

type TestEntry = <TypeConfig as openraft::RaftTypeConfig>::Entry;

const GROUP: u64 = 5;

fn log_id(index: u64) -> LogIdOf<TypeConfig> {
    LogId::new(LeaderId::new(1, 1), index)
}

/// Entries 1..=count, each an append of two records.
fn appends(count: u64) -> Vec<TestEntry> {
    (1..=count)
        .map(|index| {
            let records: Vec<Record> = ["x", "y"]
                .iter()
                .map(|v| Record { value: Some(format!("{v}{index}").into_bytes().into()), ..Default::default() })
                .collect();
            let batch = encode_batch(&records, ProducerFields::default()).unwrap().to_vec();
            let command = PartitionCommand::Append {
                batch,
                time_ms: 1,
                dedup_window_ms: 1_000,
                producer_expiry_ms: 60_000,
                keys: vec![],
            };
            Entry { log_id: log_id(index), payload: EntryPayload::Normal(Command::Partition(command)) }
        })
        .collect()
}

/// Appends entries to the log and waits until the group commit made them durable.
async fn append_durably(log: &mut LogStore, entries: Vec<TestEntry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

async fn apply(sm: &mut GroupStateMachine, entries: Vec<TestEntry>) {
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None))))).await.unwrap();
}

async fn applied_index(sm: &mut GroupStateMachine) -> Option<u64> {
    sm.applied_state().await.unwrap().0.map(|id| id.index)
}

async fn next_offset(store: &Store, sm: &GroupStateMachine) -> u64 {
    let next = sm.subscribe().borrow().as_partition().unwrap().next_offset;
    let stored = store.partition_reader(GROUP).read(0, next, 1 << 20).await.unwrap();
    assert_eq!(strata_record::decode_records_from(&stored, 0).unwrap().len() as u64, next, "data matches the state");
    next
}

/// Opens the store in `dir`, with entries 1..=6 appended durably to the
/// group's log and applied (12 records).
async fn six_applied(dir: &std::path::Path) -> (Store, LogStore, GroupStateMachine) {
    let store = Store::open(dir).unwrap();
    let mut log = store.log_store(GROUP);
    let mut sm = store.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    append_durably(&mut log, appends(6)).await;
    apply(&mut sm, appends(6)).await;
    (store, log, sm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_a_flush_keeps_the_log_that_rebuilds_the_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
    let (store, _log, sm) = six_applied(&live).await;
    assert_eq!(next_offset(&store, &sm).await, 12);
    // A WAL sync after the unlogged applies: the durable-sequence marker it
    // advances must not count their sequence numbers, or the crashed copy
    // would be refused as a store that lost durable writes.
    store.sync().await.unwrap();
    copy_dir(&live, &crashed);

    // The applies never reached the WAL, so the crash took them back;
    // every entry that rebuilds them is still in the log.
    let store = Store::open(&crashed).unwrap();
    let mut log = store.log_store(GROUP);
    let mut sm = store.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    assert_eq!(applied_index(&mut sm).await, None, "applies skip the WAL");
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id.map(|id| id.index)), (None, Some(6)));
    let entries = log.try_get_log_entries(1..7).await.unwrap();
    apply(&mut sm, entries).await;
    assert_eq!(applied_index(&mut sm).await, Some(6));
    assert_eq!(next_offset(&store, &sm).await, 12, "re-applying the log restores every record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_purged_only_behind_a_flush_of_the_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (live, crashed) = (dir.path().join("live"), dir.path().join("crashed"));
    let (store, mut log, _sm) = six_applied(&live).await;
    // Purging needs the applies flushed first; the purge call returns at
    // once and the purger flushes, then purges.
    log.purge(log_id(4)).await.unwrap();
    // The first queued purge forces a flush at once (no flush happened
    // yet); the deadline only bounds a hung flush on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Until the purge is written, openraft's view (the log state) counts
        // the entries as purged while they are still stored.
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(4));
        if stored_indexes(&mut log).await == vec![5, 6] {
            break;
        }
        assert!(Instant::now() < deadline, "the purge was not carried out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.sync().await.unwrap();
    copy_dir(&live, &crashed);

    // Crashed after the purge: the flush that came first holds every apply
    // the purged entries described.
    let store = Store::open(&crashed).unwrap();
    let mut log = store.log_store(GROUP);
    let mut sm = store.state_machine(GROUP, GroupKind::Partition).await.unwrap();
    assert_eq!(applied_index(&mut sm).await, Some(6));
    assert_eq!(next_offset(&store, &sm).await, 12);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(4));
    assert_eq!(stored_indexes(&mut log).await, vec![5, 6]);
}

async fn stored_indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(0..7).await.unwrap().iter().map(|e| e.log_id.index).collect()
}
