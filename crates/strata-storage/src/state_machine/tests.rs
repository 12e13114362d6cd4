//! The stored layout of the metadata state: data dirs written before
//! consumer groups (or advertised addresses) existed still open, and the
//! groups and addresses survive a reopen and travel with a snapshot.

use std::collections::BTreeMap;

use futures::stream;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderId;
use openraft::{Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use serde::Serialize;
use strata_core::topic::TopicConfig;
use strata_state::group::{plan_heartbeat, GroupCommand, GroupResponse, HeartbeatRequest, OffsetCommit};
use strata_state::metadata::{NamedProducer, Topic, METADATA_GROUP_ID};
use strata_state::{MetaCommand, MetaResponse, PartitionCommand, PartitionState};

use super::*;

/// `MetadataState` as it was before consumer groups: the fields in the
/// same order, and nothing after them.
#[derive(Serialize)]
struct MetadataBeforeGroups {
    topics: BTreeMap<String, Topic>,
    next_topic_id: u64,
    next_group_id: u64,
    placement_cursor: u64,
    next_producer_id: u64,
    named_producers: BTreeMap<String, NamedProducer>,
}

/// `GroupState` as it was before consumer groups.
#[derive(Serialize)]
#[allow(dead_code)] // Partition is there for its place: it fixes the tags
enum GroupStateBeforeGroups {
    Metadata(MetadataBeforeGroups),
    Partition(PartitionState),
}

#[derive(Serialize)]
struct AppliedBeforeGroups {
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    state: GroupStateBeforeGroups,
}

#[derive(Serialize)]
struct SnapshotPayloadBeforeGroups {
    state: GroupStateBeforeGroups,
    producers: Vec<(i64, ProducerEntry)>,
}

fn log_id(index: u64) -> LogIdOf<TypeConfig> {
    LogId::new(LeaderId::new(1, 1), index)
}

fn meta_entry(index: u64, command: MetaCommand) -> <TypeConfig as openraft::RaftTypeConfig>::Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Command::Meta(command)) }
}

async fn apply(sm: &mut GroupStateMachine, entries: Vec<<TypeConfig as openraft::RaftTypeConfig>::Entry>) {
    sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None))))).await.unwrap();
}

fn metadata(sm: &GroupStateMachine) -> MetadataState {
    sm.subscribe().borrow().as_metadata().expect("the metadata group").clone()
}

/// A metadata state with a topic and a named producer, made by applying
/// commands (so it is one the code could have written).
fn topics_and_producers() -> MetadataState {
    let mut state = MetadataState::default();
    let created = state.apply(MetaCommand::CreateTopic {
        name: "orders".into(),
        partitions: 3,
        replication_factor: 1,
        config: TopicConfig::default(),
        nodes: vec![1],
        created_ms: 7,
    });
    assert!(matches!(created, MetaResponse::TopicCreated(_)));
    state.apply(MetaCommand::InitNamedProducer { name: "job".into() });
    state
}

fn before_groups(state: &MetadataState) -> GroupStateBeforeGroups {
    GroupStateBeforeGroups::Metadata(MetadataBeforeGroups {
        topics: state.topics.clone(),
        next_topic_id: state.next_topic_id,
        next_group_id: state.next_group_id,
        placement_cursor: state.placement_cursor,
        next_producer_id: state.next_producer_id,
        named_producers: state.named_producers.clone(),
    })
}

/// The commands of a first join of `member` to group `g` over topic
/// `orders`, then a commit of partition 0 by it.
fn join_and_commit(state: &MetadataState, member: &str) -> Vec<MetaCommand> {
    let request = HeartbeatRequest {
        group_id: "g".into(),
        member_id: String::new(),
        member_epoch: 0,
        instance_id: None,
        rebalance_timeout_ms: 0,
        subscribed_topics: Some(["orders".to_string()].into()),
        assignor: None,
        owned_partitions: None,
        client_id: "test".into(),
        client_host: "127.0.0.1".into(),
    };
    let plan = plan_heartbeat(&state.groups, &request, state, member, 10).expect("a join plans");
    let mut scratch = state.clone();
    let mut commands = Vec::new();
    for command in plan.commands.clone() {
        assert!(!matches!(
            scratch.apply(MetaCommand::Group(command.clone())),
            MetaResponse::Group(GroupResponse::Error { .. })
        ));
        commands.push(MetaCommand::Group(command));
    }
    let epoch = plan.answer(&scratch.groups).expect("joined").member_epoch;
    commands.push(MetaCommand::Group(GroupCommand::CommitOffsets {
        group_id: "g".into(),
        member_id: member.into(),
        member_epoch: epoch,
        offsets: vec![OffsetCommit { topic: "orders".into(), partition: 0, offset: 42, metadata: "m".into() }],
        commit_ms: 11,
    }));
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_state_written_before_groups_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let expected = topics_and_producers();
    assert!(expected.groups.groups.is_empty());
    let applied = postcard::to_allocvec(&AppliedBeforeGroups {
        last_applied: Some(log_id(2)),
        last_membership: StoredMembershipOf::<TypeConfig>::default(),
        state: before_groups(&expected),
    })
    .unwrap();
    let payload =
        postcard::to_allocvec(&SnapshotPayloadBeforeGroups { state: before_groups(&expected), producers: vec![] })
            .unwrap();
    let meta = SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(log_id(2)),
        last_membership: StoredMembershipOf::<TypeConfig>::default(),
    };
    {
        let store = Store::open(dir.path()).unwrap();
        let cf = store.db.cf_handle(CF_SM).unwrap();
        let stored = postcard::to_allocvec(&StoredSnapshot { meta: meta.clone(), data: payload.clone() }).unwrap();
        store.db.put_cf(&cf, keys::tag_key(METADATA_GROUP_ID, TAG_APPLIED), &applied).unwrap();
        store.db.put_cf(&cf, keys::tag_key(METADATA_GROUP_ID, TAG_SNAPSHOT), &stored).unwrap();
        store.db.flush_wal(true).unwrap();
    }

    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine(METADATA_GROUP_ID, GroupKind::Metadata).await.unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(2)));
    assert_eq!(metadata(&sm), expected, "the old applied state decodes, with no groups");
    let snapshot = sm.get_current_snapshot().await.unwrap().expect("the stored snapshot");
    assert_eq!(SnapshotPayload::decode(&snapshot.snapshot).unwrap().state, GroupState::Metadata(expected.clone()));

    // A snapshot in the old layout still installs on a replica.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path()).unwrap();
    let mut replica = other.state_machine(METADATA_GROUP_ID, GroupKind::Metadata).await.unwrap();
    replica.install_snapshot(&meta, payload).await.unwrap();
    assert_eq!(metadata(&replica), expected);

    // Groups applied on top of the old state are written in the new layout
    // and survive a reopen, topics and producers with them.
    let commands = join_and_commit(&expected, "m1");
    let entries = commands.into_iter().enumerate().map(|(i, c)| meta_entry(3 + i as u64, c)).collect();
    apply(&mut sm, entries).await;
    let with_groups = metadata(&sm);
    assert_eq!(with_groups.groups.groups["g"].committed("orders", 0).map(|c| c.offset), Some(42));
    drop(sm);
    store.sync().await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let sm = store.state_machine(METADATA_GROUP_ID, GroupKind::Metadata).await.unwrap();
    assert_eq!(metadata(&sm), with_groups);
    assert_eq!(metadata(&sm).topics, expected.topics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_the_metadata_group_carry_groups_and_offsets() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = Store::open(source_dir.path()).unwrap();
    let mut sm = source.state_machine(METADATA_GROUP_ID, GroupKind::Metadata).await.unwrap();
    let create = MetaCommand::CreateTopic {
        name: "orders".into(),
        partitions: 3,
        replication_factor: 1,
        config: TopicConfig::default(),
        nodes: vec![1],
        created_ms: 7,
    };
    apply(&mut sm, vec![meta_entry(1, create)]).await;
    let commands = join_and_commit(&metadata(&sm), "m1");
    let entries = commands.into_iter().enumerate().map(|(i, c)| meta_entry(2 + i as u64, c)).collect();
    apply(&mut sm, entries).await;
    let state = metadata(&sm);
    let group = &state.groups.groups["g"];
    assert_eq!(group.members.len(), 1);
    assert_eq!(group.members["m1"].assigned.len(), 3);

    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let target = Store::open(target_dir.path()).unwrap();
    let mut replica = target.state_machine(METADATA_GROUP_ID, GroupKind::Metadata).await.unwrap();
    replica.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(metadata(&replica), state, "members, assignments and offsets travel with the snapshot");
    drop(replica);
    target.sync().await.unwrap();
    drop(target);
    let target = Store::open(target_dir.path()).unwrap();
    let replica = target.state_machine(METADATA_GROUP_ID, GroupKind::Metadata).await.unwrap();
    assert_eq!(metadata(&replica), state, "and are stored with it");
}

fn partition_entry(index: u64, command: PartitionCommand) -> <TypeConfig as openraft::RaftTypeConfig>::Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(Command::Partition(command)) }
}

fn partition(sm: &GroupStateMachine) -> PartitionState {
    sm.subscribe().borrow().as_partition().expect("a partition group").clone()
}

fn transactional_append(producer_id: i64, producer_epoch: i16) -> PartitionCommand {
    let records = [strata_record::Record { value: Some("v".into()), ..Default::default() }];
    let producer = strata_record::ProducerFields { producer_id, producer_epoch, base_sequence: 0 };
    PartitionCommand::Append {
        batch: strata_record::encode_transactional_batch(&records, producer).unwrap().to_vec(),
        time_ms: 1,
        dedup_window_ms: 1000,
        producer_expiry_ms: 60_000,
        keys: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_aborted_transactions_survive_a_reopen_and_travel_with_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine(7, GroupKind::Partition).await.unwrap();
    let abort = PartitionCommand::Marker {
        producer_id: 5,
        producer_epoch: 1,
        decision: strata_state::txn::Decision::Abort,
        coordinator_epoch: 2,
        time_ms: 2,
    };
    let entries = vec![
        partition_entry(1, transactional_append(5, 0)),
        partition_entry(2, abort),
        partition_entry(3, transactional_append(6, 0)),
    ];
    apply(&mut sm, entries).await;
    let state = partition(&sm);
    assert_eq!((state.next_offset, state.last_stable_offset()), (3, 2), "producer 6 is open at offset 2");
    assert_eq!(state.txns.aborted.len(), 1);

    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path()).unwrap();
    let mut replica = other.state_machine(7, GroupKind::Partition).await.unwrap();
    replica.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(partition(&replica).txns, state.txns, "the transactions travel with the snapshot");

    drop(sm);
    store.sync().await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let sm = store.state_machine(7, GroupKind::Partition).await.unwrap();
    assert_eq!(partition(&sm), state, "and are stored with the state");
}

/// `GroupState` as it was stored before advertised addresses: layout 4,
/// `MetadataWithTxns`. The first four variants only fix the tags.
#[derive(Serialize)]
#[allow(dead_code)]
enum GroupStateBeforeNodes<'a> {
    Metadata(()),
    Partition(()),
    MetadataWithGroups(()),
    PartitionWithTxns(()),
    MetadataWithTxns(&'a MetadataState, &'a GroupsState, &'a TransactionsState),
    MetadataWithNodes(&'a MetadataState, &'a GroupsState, &'a TransactionsState, &'a BTreeMap<u64, String>),
}

#[derive(Serialize)]
struct AppliedBeforeNodes<'a> {
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    state: GroupStateBeforeNodes<'a>,
}

fn register(node_id: u64, advertised: &str) -> MetaCommand {
    MetaCommand::RegisterNode { node_id, advertised: advertised.into() }
}

#[test]
fn advertised_addresses_and_moves_survive_encoding_and_layouts_4_and_5_still_decode() {
    let mut state = topics_and_producers();
    for command in join_and_commit(&state, "m1") {
        state.apply(command);
    }
    state.apply(register(2, "127.0.0.1:17172"));
    state.apply(register(3, "node-3.example:7173"));
    assert_eq!(state.advertised.len(), 2);
    let moved = state.apply(MetaCommand::ReassignPartition {
        topic: "orders".into(),
        partition: 1,
        replicas: vec![2, 3],
        nodes: vec![1, 2, 3],
        now_ms: 9,
    });
    assert!(matches!(moved, MetaResponse::Reassignment { done: false, .. }), "{moved:?}");
    let drained = state.apply(MetaCommand::DrainNode { node_id: 3, drained: true, nodes: vec![1, 2, 3] });
    assert_eq!(drained, MetaResponse::Drained { nodes: vec![3] });
    let throttled = state.apply(MetaCommand::SetMoveThrottle { bytes_per_sec: Some(20 << 20) });
    assert_eq!(throttled, MetaResponse::MoveThrottle { bytes_per_sec: Some(20 << 20) });
    let bytes = postcard::to_allocvec(&GroupState::Metadata(state.clone())).unwrap();
    assert_eq!(bytes[0], 6, "written in layout 6, MetadataWithExtras");
    let decoded: GroupState = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(decoded, GroupState::Metadata(state.clone()), "moves, addresses, groups and topics come back");

    let layout_5 =
        GroupStateBeforeNodes::MetadataWithNodes(&state, &state.groups, &state.transactions, &state.advertised);
    let layout_5 = postcard::to_allocvec(&layout_5).unwrap();
    assert_eq!(layout_5[0], 5);
    let decoded: GroupState = postcard::from_bytes(&layout_5).unwrap();
    let expected = MetadataState {
        reassignments: Default::default(),
        drained: Default::default(),
        move_throttle_bytes_per_sec: None,
        ..state.clone()
    };
    assert_eq!(decoded, GroupState::Metadata(expected), "a layout 5 state decodes, with no moves or drains");
    let state = MetadataState {
        reassignments: Default::default(),
        drained: Default::default(),
        move_throttle_bytes_per_sec: None,
        ..state
    };

    let old = GroupStateBeforeNodes::MetadataWithTxns(&state, &state.groups, &state.transactions);
    let old_bytes = postcard::to_allocvec(&old).unwrap();
    assert_eq!(old_bytes[0], 4);
    let decoded: GroupState = postcard::from_bytes(&old_bytes).unwrap();
    let expected = MetadataState { advertised: BTreeMap::new(), ..state };
    assert_eq!(decoded, GroupState::Metadata(expected), "a layout 4 state decodes, with no addresses");
}

#[test]
fn extras_written_before_the_move_throttle_decode_without_one() {
    let mut state = topics_and_producers();
    state.apply(register(2, "127.0.0.1:17172"));
    state.apply(MetaCommand::DrainNode { node_id: 3, drained: true, nodes: vec![1, 2, 3] });
    // The extras as a node without the throttle wrote them.
    let extras = serde_json::json!({ "advertised": state.advertised, "reassignments": {}, "drained": [3] });
    let extras = serde_json::to_vec(&extras).unwrap();
    let old = StoredGroupStateRef::MetadataWithExtras(&state, &state.groups, &state.transactions, &extras);
    let decoded: GroupState = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
    assert_eq!(decoded, GroupState::Metadata(state.clone()), "everything else comes back; no throttle");
    let GroupState::Metadata(decoded) = decoded else { unreachable!() };
    assert_eq!(decoded.move_throttle_bytes_per_sec, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_4_data_dir_opens_and_then_keeps_registered_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = topics_and_producers();
    for command in join_and_commit(&old, "m1") {
        old.apply(command);
    }
    let applied = postcard::to_allocvec(&AppliedBeforeNodes {
        last_applied: Some(log_id(9)),
        last_membership: StoredMembershipOf::<TypeConfig>::default(),
        state: GroupStateBeforeNodes::MetadataWithTxns(&old, &old.groups, &old.transactions),
    })
    .unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let cf = store.db.cf_handle(CF_SM).unwrap();
        store.db.put_cf(&cf, keys::tag_key(METADATA_GROUP_ID, TAG_APPLIED), &applied).unwrap();
        store.db.flush_wal(true).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut sm = store.state_machine(METADATA_GROUP_ID, GroupKind::Metadata).await.unwrap();
    assert_eq!(metadata(&sm), old, "the layout 4 applied state opens as it was");

    apply(&mut sm, vec![meta_entry(10, register(1, "127.0.0.1:17171")), meta_entry(11, register(3, "[::1]:17173"))])
        .await;
    let registered = metadata(&sm);
    let expected = BTreeMap::from([(1, "127.0.0.1:17171".to_string()), (3, "[::1]:17173".to_string())]);
    assert_eq!(registered.advertised, expected);
    assert_eq!(registered.groups, old.groups);

    // They travel with a snapshot ...
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path()).unwrap();
    let mut replica = other.state_machine(METADATA_GROUP_ID, GroupKind::Metadata).await.unwrap();
    replica.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(metadata(&replica), registered);

    // ... and survive a reopen.
    drop(sm);
    store.sync().await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let sm = store.state_machine(METADATA_GROUP_ID, GroupKind::Metadata).await.unwrap();
    assert_eq!(metadata(&sm), registered);
}
