//! Helpers shared by the storage tests: entries to apply, and copies of a
//! live database as a crash leaves it.
#![allow(dead_code)] // each test file uses some of them

use std::fs;
use std::path::Path;

use futures::stream;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderId;
use openraft::{Entry, EntryPayload, LogId};
use strata_record::{decode_records_from, encode_batch, Header, ProducerFields, Record};
use strata_state::{Command, KeyedRecord, PartitionCommand};
use strata_storage::{GroupStateMachine, SnapshotPayload, StagedSnapshot, Store, StreamError, StreamPart, TypeConfig};

/// Copies a live database directory as a crash would leave it (the page
/// cache holds every written byte; the copy reads them).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

pub type TestEntry = <TypeConfig as openraft::RaftTypeConfig>::Entry;

pub fn entry(index: u64, command: PartitionCommand) -> TestEntry {
    Entry { log_id: LogId::new(LeaderId::new(1, 1), index), payload: EntryPayload::Normal(Command::Partition(command)) }
}

pub fn append(index: u64, values: &[&str]) -> TestEntry {
    let records: Vec<Record> =
        values.iter().map(|v| Record { value: Some(v.as_bytes().to_vec().into()), ..Default::default() }).collect();
    let batch = encode_batch(&records, ProducerFields::default()).unwrap().to_vec();
    entry(index, append_command(batch, vec![], 1))
}

pub fn append_command(batch: Vec<u8>, keys: Vec<KeyedRecord>, time_ms: u64) -> PartitionCommand {
    PartitionCommand::Append { batch, time_ms, dedup_window_ms: 1_000, producer_expiry_ms: 60_000, keys }
}

/// An append of one record with idempotency key `key`, from producer
/// `producer_id` at `sequence` (or no producer when negative).
pub fn keyed(index: u64, key: &str, producer_id: i64, sequence: i32, time_ms: u64) -> TestEntry {
    let record = Record {
        value: Some(key.as_bytes().to_vec().into()),
        headers: vec![Header {
            key: strata_core::IDEMPOTENCY_KEY_HEADER.into(),
            value: Some(key.as_bytes().to_vec().into()),
        }],
        ..Default::default()
    };
    let fields = if producer_id >= 0 {
        ProducerFields { producer_id, producer_epoch: 0, base_sequence: sequence }
    } else {
        ProducerFields::default()
    };
    let batch = encode_batch(&[record], fields).unwrap().to_vec();
    entry(index, append_command(batch, vec![KeyedRecord { index: 0, key: key.as_bytes().to_vec() }], time_ms))
}

pub async fn apply(sm: &mut GroupStateMachine, entries: Vec<TestEntry>) {
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None))))).await.unwrap();
}

pub fn values(bytes: &[u8], from: u64) -> Vec<(u64, String)> {
    decode_records_from(bytes, from)
        .unwrap()
        .into_iter()
        .map(|r| (r.offset, String::from_utf8(r.value.unwrap().to_vec()).unwrap()))
        .collect()
}

pub fn partition(sm: &GroupStateMachine) -> strata_state::PartitionState {
    sm.subscribe().borrow().as_partition().unwrap().clone()
}

/// Every part of the stream of `snapshot` (data of a snapshot `source` built).
pub async fn stream_parts(source: &Store, group: u64, snapshot: &[u8]) -> Vec<StreamPart> {
    let payload = SnapshotPayload::decode(snapshot).unwrap();
    let mut stream = source.snapshot_source(group, &payload).unwrap();
    let mut parts = Vec::new();
    while let Some(part) = stream.next_part().await.unwrap() {
        parts.push(part);
    }
    parts
}

/// Stages `parts` on `target` as its snapshot receiver does.
pub async fn stage(
    target: &Store,
    group: u64,
    snapshot: &[u8],
    parts: Vec<StreamPart>,
) -> Result<StagedSnapshot, StreamError> {
    let payload = SnapshotPayload::decode(snapshot).unwrap();
    let mut sink = target.snapshot_sink(group, &payload).await.unwrap();
    for part in parts {
        if let Err(error) = sink.accept(part).await {
            sink.discard().await.unwrap();
            return Err(error);
        }
    }
    sink.finish().await
}

/// Streams the snapshot from `source` to `target` and installs it there.
pub async fn transfer(
    source: &Store,
    target: &Store,
    copy: &mut GroupStateMachine,
    group: u64,
    snapshot: &TestSnapshot,
) {
    let parts = stream_parts(source, group, &snapshot.snapshot).await;
    let staged = stage(target, group, &snapshot.snapshot, parts).await.unwrap();
    copy.install_snapshot(&snapshot.meta, snapshot.snapshot.clone()).await.unwrap();
    staged.release().await.unwrap();
}

pub type TestSnapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;

/// The idempotency keys a partition holds, by scan, after checking that the
/// count kept for stats says the same.
pub async fn keys_held(store: &Store, group: u64) -> u64 {
    let scanned = store.count_idempotency_keys(group).await.unwrap();
    assert_eq!(store.idempotency_key_count(group).await.unwrap(), scanned, "the kept key count drifted");
    scanned
}
