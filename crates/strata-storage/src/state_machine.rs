//! openraft's state machine over the node's RocksDB, for one group, and the
//! read side of partition data.
//!
//! Applied state (last applied log id, membership, the group's state) is
//! written in the same RocksDB write as the effects of the entries, so a
//! restart finds them consistent. Those writes skip the WAL: they become
//! durable with the next memtable flush, the Raft log still holds every
//! entry past the last flushed state (the log is purged only behind a
//! flush, see `purger`), and openraft re-applies it. A built snapshot is
//! written the same way, so it is never durable ahead of the applies it
//! describes. A snapshot installed from the leader is logged and synced: it
//! replaces the state and its data whole.
//!
//! Snapshots are cheap: a snapshot holds the group's state (for a partition:
//! offsets and sizes, not records). A partition's record batches below the
//! snapshot's next offset are immutable, so the transport streams them from
//! `partition_data` when it sends the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use strata_state::group::GroupsState;
use strata_state::members::Members;
use strata_state::reassign::Reassignments;
use strata_state::txn::partition::PartitionTxns;
use strata_state::txn::TransactionsState;
use strata_state::{
    Command, KeyIndex, MetadataState, PartitionEffect, PartitionState, ProducerEntry, ProducerTable, Response,
};
use tokio::sync::watch;

use crate::keys::{self, TAG_APPLIED, TAG_KEY_COUNT, TAG_KEY_EXPIRY, TAG_PRODUCER, TAG_SNAPSHOT};
use crate::{blocking, decode_error, to_io, Store, TypeConfig, CF_DATA, CF_SM};
use strata_core::limits::IDEMPOTENCY_KEYS_EXPIRED_PER_APPLY;

/// Which state machine a group runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    Metadata,
    Partition,
}

/// The replicated state of one group.
///
/// Stored (in the applied state and in snapshots) as [`StoredGroupState`]:
/// a metadata state is written with its consumer groups, transactions and
/// advertised addresses beside it, and one written before any of these
/// existed decodes without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupState {
    Metadata(MetadataState),
    Partition(PartitionState),
}

/// The stored layout of a [`GroupState`]. postcard has no versioning: a
/// variant's index is its tag, so variants are only ever appended, and the
/// shape of an existing one never changes.
///
/// - 0 `Metadata`: a metadata state as data dirs written before consumer
///   groups hold it; it decodes with no groups and is no longer written.
/// - 1 `Partition`.
/// - 2 `MetadataWithGroups`: the metadata state (the same fields as 0:
///   `MetadataState::groups` is not part of its own encoding), then its
///   groups. Written before transactions existed.
/// - 3 `PartitionWithTxns`: the partition state (the fields of 1), then its
///   transactions. Every partition state is written this way now.
/// - 4 `MetadataWithTxns`: as 2, then the transactional ids. Written
///   before nodes advertised client addresses; decodes with none.
/// - 5 `MetadataWithNodes`: as 4, then the advertised client addresses
///   (`MetadataState::advertised`). Written before reassignments existed.
/// - 6 `MetadataWithExtras`: as 4, then [`MetadataExtras`] as JSON bytes:
///   the advertised addresses, the reassignments in progress, the drained
///   nodes and the move throttle. Every
///   metadata state is written this way now. JSON with defaults lets later
///   additions of small maps go into the extras without a new layout.
#[derive(Deserialize)]
enum StoredGroupState {
    Metadata(MetadataState),
    Partition(PartitionState),
    MetadataWithGroups(MetadataState, GroupsState),
    PartitionWithTxns(PartitionState, PartitionTxns),
    MetadataWithTxns(MetadataState, GroupsState, TransactionsState),
    MetadataWithNodes(MetadataState, GroupsState, TransactionsState, BTreeMap<u64, String>),
    MetadataWithExtras(MetadataState, GroupsState, TransactionsState, #[serde(with = "serde_bytes")] Vec<u8>),
}

/// The parts of the metadata state stored as JSON (layout 6). A missing
/// field decodes to its default, so a field added later needs no new
/// layout; a field is never renamed or given another meaning.
#[derive(Deserialize, Default)]
struct MetadataExtras {
    #[serde(default)]
    advertised: BTreeMap<u64, String>,
    #[serde(default)]
    reassignments: Reassignments,
    #[serde(default)]
    drained: BTreeSet<u64>,
    #[serde(default)]
    members: Members,
    move_throttle_bytes_per_sec: Option<u64>,
}

/// [`MetadataExtras`] over borrowed parts, for writing.
#[derive(Serialize)]
struct MetadataExtrasRef<'a> {
    advertised: &'a BTreeMap<u64, String>,
    reassignments: &'a Reassignments,
    drained: &'a BTreeSet<u64>,
    members: &'a Members,
    move_throttle_bytes_per_sec: Option<u64>,
}

/// [`StoredGroupState`] over borrowed parts, so that writing the state
/// after every apply does not copy it.
#[derive(Serialize)]
enum StoredGroupStateRef<'a> {
    // Never written; it keeps the tag of the layout before groups.
    #[allow(dead_code)]
    Metadata(&'a MetadataState),
    #[allow(dead_code)]
    Partition(&'a PartitionState),
    #[allow(dead_code)]
    MetadataWithGroups(&'a MetadataState, &'a GroupsState),
    PartitionWithTxns(&'a PartitionState, &'a PartitionTxns),
    #[allow(dead_code)]
    MetadataWithTxns(&'a MetadataState, &'a GroupsState, &'a TransactionsState),
    #[allow(dead_code)]
    MetadataWithNodes(&'a MetadataState, &'a GroupsState, &'a TransactionsState, &'a BTreeMap<u64, String>),
    MetadataWithExtras(
        &'a MetadataState,
        &'a GroupsState,
        &'a TransactionsState,
        #[serde(with = "serde_bytes")] &'a [u8],
    ),
}

impl Serialize for GroupState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            GroupState::Metadata(state) => {
                let extras = MetadataExtrasRef {
                    advertised: &state.advertised,
                    reassignments: &state.reassignments,
                    drained: &state.drained,
                    members: &state.members,
                    move_throttle_bytes_per_sec: state.move_throttle_bytes_per_sec,
                };
                let extras = serde_json::to_vec(&extras).map_err(serde::ser::Error::custom)?;
                StoredGroupStateRef::MetadataWithExtras(state, &state.groups, &state.transactions, &extras)
                    .serialize(serializer)
            }
            GroupState::Partition(state) => {
                StoredGroupStateRef::PartitionWithTxns(state, &state.txns).serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for GroupState {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<GroupState, D::Error> {
        Ok(match StoredGroupState::deserialize(deserializer)? {
            StoredGroupState::Metadata(state) => GroupState::Metadata(state),
            StoredGroupState::Partition(state) => GroupState::Partition(state),
            StoredGroupState::MetadataWithGroups(mut state, groups) => {
                state.groups = groups;
                GroupState::Metadata(state)
            }
            StoredGroupState::PartitionWithTxns(mut state, txns) => {
                state.txns = txns;
                GroupState::Partition(state)
            }
            StoredGroupState::MetadataWithTxns(mut state, groups, transactions) => {
                state.groups = groups;
                state.transactions = transactions;
                GroupState::Metadata(state)
            }
            StoredGroupState::MetadataWithNodes(mut state, groups, transactions, advertised) => {
                state.groups = groups;
                state.transactions = transactions;
                state.advertised = advertised;
                GroupState::Metadata(state)
            }
            StoredGroupState::MetadataWithExtras(mut state, groups, transactions, extras) => {
                let extras: MetadataExtras = serde_json::from_slice(&extras).map_err(serde::de::Error::custom)?;
                state.groups = groups;
                state.transactions = transactions;
                state.advertised = extras.advertised;
                state.reassignments = extras.reassignments;
                state.drained = extras.drained;
                state.members = extras.members;
                state.move_throttle_bytes_per_sec = extras.move_throttle_bytes_per_sec;
                GroupState::Metadata(state)
            }
        })
    }
}

impl GroupState {
    fn empty(kind: GroupKind) -> GroupState {
        match kind {
            GroupKind::Metadata => GroupState::Metadata(MetadataState::default()),
            GroupKind::Partition => GroupState::Partition(PartitionState::default()),
        }
    }

    /// An empty state of the same kind, held while the real one is away on
    /// a blocking thread.
    fn placeholder(&self) -> GroupState {
        match self {
            GroupState::Metadata(_) => GroupState::empty(GroupKind::Metadata),
            GroupState::Partition(_) => GroupState::empty(GroupKind::Partition),
        }
    }

    /// "metadata" or "partition", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            GroupState::Metadata(_) => "metadata",
            GroupState::Partition(_) => "partition",
        }
    }

    pub fn as_partition(&self) -> Option<&PartitionState> {
        match self {
            GroupState::Partition(state) => Some(state),
            GroupState::Metadata(_) => None,
        }
    }

    pub fn as_metadata(&self) -> Option<&MetadataState> {
        match self {
            GroupState::Metadata(state) => Some(state),
            GroupState::Partition(_) => None,
        }
    }
}

/// A partition's clock; 0 for the metadata group.
fn partition_clock(state: &GroupState) -> u64 {
    state.as_partition().map_or(0, |p| p.clock_ms)
}

fn decode_error_text(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt {what}"))
}

/// One apply round, run as blocking work: the state is moved in and
/// back out, and every effect goes into one RocksDB write.
struct ApplyRound {
    db: Arc<rocksdb::DB>,
    sequences: Arc<crate::Sequences>,
    key_cleanup: Arc<crate::snapshot_stream::KeyCleanup>,
    group_id: u64,
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    state: GroupState,
    producers: ProducerTable,
    /// Expired idempotency keys may be deleted up to this partition time.
    key_cleanup_bound_ms: u64,
    /// Rows in the group's key index.
    key_count: u64,
}

type Responders = Vec<(openraft::storage::ApplyResponder<TypeConfig>, Response)>;

impl ApplyRound {
    fn run(&mut self, items: Vec<EntryResponder<TypeConfig>>) -> io::Result<Responders> {
        let db = self.db.clone();
        let data_cf = db.cf_handle(CF_DATA).expect("column family exists");
        let sm_cf = db.cf_handle(CF_SM).expect("column family exists");
        let mut write = WriteBatch::default();
        let mut responders = Vec::new();
        let initial_key_count = self.key_count;
        let mut index = DbKeyIndex { db: &db, group_id: self.group_id, pending: BTreeMap::new() };
        for (entry, responder) in items {
            let response = match entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id), membership);
                    Response::None
                }
                EntryPayload::Normal(command) => match (&mut self.state, command) {
                    (GroupState::Metadata(state), Command::Meta(command)) => Response::Meta(state.apply(command)),
                    (GroupState::Partition(state), Command::Partition(command)) => {
                        let (response, effects) = state.apply(&mut self.producers, &mut index, command);
                        for effect in effects {
                            let group_id = self.group_id;
                            match effect {
                                PartitionEffect::Write { base_offset, batch } => {
                                    write.put_cf(&data_cf, keys::data_key(group_id, base_offset), batch)
                                }
                                PartitionEffect::DeleteBelow { offset } => write.delete_range_cf(
                                    &data_cf,
                                    keys::data_key(group_id, 0),
                                    keys::data_key(group_id, offset),
                                ),
                                PartitionEffect::PutProducer { producer_id, entry } => {
                                    let bytes =
                                        postcard::to_allocvec(&entry).map_err(|e| io::Error::other(e.to_string()))?;
                                    write.put_cf(&sm_cf, keys::producer_key(group_id, producer_id), bytes)
                                }
                                PartitionEffect::DeleteProducer { producer_id } => {
                                    write.delete_cf(&sm_cf, keys::producer_key(group_id, producer_id))
                                }
                                PartitionEffect::PutKey { key, offset, expires_ms } => {
                                    write.put_cf(
                                        &sm_cf,
                                        keys::idempotency_key(group_id, &key, offset),
                                        expires_ms.to_be_bytes(),
                                    );
                                    write.put_cf(&sm_cf, keys::expiry_key(group_id, expires_ms, offset, &key), []);
                                    index.pending.insert(key, (offset, expires_ms));
                                    self.key_count += 1;
                                }
                            }
                        }
                        Response::Partition(response)
                    }
                    (state, command) => {
                        // Only a bug in the proposer puts a command of the
                        // wrong kind in a group's log. Applying past it would
                        // answer a client as if its command had run, so the
                        // group stops here, on every replica alike, and this
                        // round's writes are dropped (nothing of it is
                        // stored). A restart meets the same entry again.
                        let message = format!(
                            "group {}: entry {} holds a {} command, but this is a {} group; \
                             the group stops (a proposer bug; report it with this line)",
                            self.group_id,
                            entry.log_id,
                            command.kind(),
                            state.kind(),
                        );
                        tracing::error!(group = self.group_id, %command, "{message}");
                        return Err(io::Error::new(io::ErrorKind::InvalidData, message));
                    }
                },
            };
            self.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responders.push((responder, response));
            }
        }
        if let GroupState::Partition(state) = &self.state {
            let bound = self.key_cleanup.bound(self.group_id, self.key_cleanup_bound_ms.min(state.clock_ms));
            let deleted = expire_keys(&db, self.group_id, bound, &mut write)?;
            let before = self.key_count;
            self.key_count = self.key_count.checked_sub(deleted).unwrap_or_else(|| {
                panic!("group {}: key count {before} is below the {deleted} keys expired", self.group_id)
            });
            if self.key_count != initial_key_count {
                write.put_cf(&sm_cf, keys::tag_key(self.group_id, TAG_KEY_COUNT), self.key_count.to_be_bytes());
            }
        }
        let applied = encode_applied(&self.last_applied, &self.last_membership, &self.state)?;
        write.put_cf(&sm_cf, keys::tag_key(self.group_id, TAG_APPLIED), applied);
        crate::write_unlogged(&db, &self.sequences, write)?;
        Ok(responders)
    }
}

/// Deletes idempotency keys that expired at or before `bound_ms`, at most
/// `IDEMPOTENCY_KEYS_EXPIRED_PER_APPLY` per call.
///
/// Why the bound is safe: a lookup treats a key as absent once the
/// partition clock reaches its expiry, and the clock never goes back, so a
/// key deleted here would never have been found again by this replica. The
/// caller also keeps `bound_ms` at or below the clock of the older of the
/// two latest snapshots, and at or below the clock of every snapshot being
/// sent (see `snapshot_stream::KeyCleanup`), so a follower that installs a
/// snapshot still receives every key that entries after that snapshot may
/// look up.
fn expire_keys(db: &rocksdb::DB, group_id: u64, bound_ms: u64, write: &mut WriteBatch) -> io::Result<u64> {
    let cf = db.cf_handle(CF_SM).expect("column family exists");
    let prefix = keys::tag_key(group_id, TAG_KEY_EXPIRY);
    let mut iter = db.raw_iterator_cf(&cf);
    iter.seek(prefix);
    let mut deleted = 0;
    while let Some(row) = iter.key() {
        if !row.starts_with(&prefix) || deleted >= IDEMPOTENCY_KEYS_EXPIRED_PER_APPLY {
            break;
        }
        let (expires, offset, key) = keys::parse_expiry_key(row).ok_or_else(|| decode_error_text("expiry row"))?;
        if expires > bound_ms {
            break;
        }
        write.delete_cf(&cf, keys::idempotency_key(group_id, key, offset));
        write.delete_cf(&cf, row);
        deleted += 1;
        iter.next();
    }
    iter.status().map_err(to_io)?;
    Ok(deleted as u64)
}

/// The key index on RocksDB, with the keys put earlier in the same round
/// (not yet written) in front of it.
struct DbKeyIndex<'a> {
    db: &'a rocksdb::DB,
    group_id: u64,
    pending: BTreeMap<Vec<u8>, (u64, u64)>,
}

impl KeyIndex for DbKeyIndex<'_> {
    fn lookup(&mut self, key: &[u8], below_offset: u64) -> Option<(u64, u64)> {
        if let Some(found) = self.pending.get(key).filter(|(offset, _)| *offset < below_offset) {
            return Some(*found);
        }
        // The newest row below `below_offset`: rows at or past it are not
        // this replica's yet (see `KeyIndex::lookup`).
        let newest = below_offset.checked_sub(1)?;
        let cf = self.db.cf_handle(CF_SM).expect("column family exists");
        let prefix = keys::idempotency_prefix(self.group_id, key);
        let mut iter = self.db.raw_iterator_cf(&cf);
        let mut last = prefix.clone();
        last.extend_from_slice(&newest.to_be_bytes());
        iter.seek_for_prev(&last);
        let (row, value) = (iter.key()?, iter.value()?);
        if !row.starts_with(&prefix) || row.len() != prefix.len() + 8 {
            return None;
        }
        let offset = u64::from_be_bytes(row[prefix.len()..].try_into().ok()?);
        let expires = u64::from_be_bytes(value.try_into().ok()?);
        Some((offset, expires))
    }
}

/// Encodes an `Applied` from borrowed parts, so writing it after every
/// apply does not copy the group's state.
fn encode_applied(
    last_applied: &Option<LogIdOf<TypeConfig>>,
    last_membership: &StoredMembershipOf<TypeConfig>,
    state: &GroupState,
) -> io::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct AppliedRef<'a> {
        last_applied: &'a Option<LogIdOf<TypeConfig>>,
        last_membership: &'a StoredMembershipOf<TypeConfig>,
        state: &'a GroupState,
    }
    postcard::to_allocvec(&AppliedRef { last_applied, last_membership, state })
        .map_err(|e| io::Error::other(e.to_string()))
}

/// What `state_machine/<group>/applied` holds (see `encode_applied`).
#[derive(Deserialize)]
struct Applied {
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    state: GroupState,
}

/// What `state_machine/<group>/snapshot` holds.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMetaOf<TypeConfig>,
    data: Vec<u8>,
}

/// The last log id of the group's stored snapshot. The state it describes
/// is durable whenever the snapshot is (an installed one is written with
/// it, a built one after the applies it covers), so after a restart no log
/// entry at or below it is ever needed again. Blocking work.
pub(crate) fn stored_snapshot_log_id(db: &rocksdb::DB, group_id: u64) -> io::Result<Option<LogIdOf<TypeConfig>>> {
    let cf = db.cf_handle(CF_SM).expect("column family exists");
    match db.get_pinned_cf(&cf, keys::tag_key(group_id, TAG_SNAPSHOT)).map_err(to_io)? {
        Some(bytes) => {
            let stored: StoredSnapshot = postcard::from_bytes(&bytes).map_err(|e| decode_error("snapshot", e))?;
            Ok(stored.meta.last_log_id)
        }
        None => Ok(None),
    }
}

/// The data of a snapshot: the group's state, and for a partition its
/// producer table. The partition's batches and idempotency keys travel
/// beside it (see `Store::read_snapshot_keys`).
#[derive(Serialize, Deserialize)]
pub struct SnapshotPayload {
    pub state: GroupState,
    pub producers: Vec<(i64, ProducerEntry)>,
}

impl SnapshotPayload {
    pub fn decode(bytes: &[u8]) -> io::Result<SnapshotPayload> {
        postcard::from_bytes(bytes).map_err(|e| decode_error("snapshot", e))
    }
}

pub struct GroupStateMachine {
    store: Store,
    group_id: u64,
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    state: GroupState,
    /// A partition's idempotent producers (empty for the metadata group).
    /// Persisted row by row under `TAG_PRODUCER`, not in the applied state,
    /// so an apply writes only the producers it changed.
    producers: ProducerTable,
    /// Partition clocks of the two latest snapshots, newest first. Expired
    /// idempotency keys are deleted only up to the older one: a snapshot
    /// being sent must still find every key that entries after it may look
    /// up (see `expire_keys`).
    snapshot_clocks_ms: [u64; 2],
    /// Rows in a partition's key index (0 for the metadata group), kept in
    /// step with them under `TAG_KEY_COUNT`.
    key_count: u64,
    /// The state after each apply, for readers (fetch, metadata, reconciler).
    published: watch::Sender<Arc<GroupState>>,
    /// Held by this state machine, its snapshot builders and its writes that
    /// may outlive the call that began them (see `liveness`).
    alive: Arc<()>,
}

impl GroupStateMachine {
    /// Dead once this state machine, its snapshot builders and their
    /// pending writes are all gone: after that nothing of this instance
    /// writes the group's rows, so deleting them is final.
    pub fn liveness(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.alive)
    }

    pub(crate) async fn open(store: Store, group_id: u64, kind: GroupKind) -> io::Result<GroupStateMachine> {
        let db = store.db.clone();
        let applied: Option<Applied> = blocking(move || {
            let cf = db.cf_handle(CF_SM).expect("column family exists");
            match db.get_pinned_cf(&cf, keys::tag_key(group_id, TAG_APPLIED)).map_err(to_io)? {
                Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(|e| decode_error("applied state", e)),
                None => Ok(None),
            }
        })
        .await?;
        let (last_applied, last_membership, state) = match applied {
            Some(a) => (a.last_applied, a.last_membership, a.state),
            None => (None, StoredMembershipOf::<TypeConfig>::default(), GroupState::empty(kind)),
        };
        let mut key_count = 0;
        if let Some(partition) = state.as_partition() {
            let (db, sequences, next_offset) = (store.db.clone(), store.sequences.clone(), partition.next_offset);
            key_count = blocking(move || {
                crate::snapshot_stream::recover_staging(&db, &sequences, group_id, next_offset)?;
                crate::snapshot_stream::key_count(&db, &sequences, group_id)
            })
            .await?;
        }
        let db = store.db.clone();
        let (producers, snapshot_clock_ms) = blocking(move || {
            let cf = db.cf_handle(CF_SM).expect("column family exists");
            let prefix = keys::tag_key(group_id, TAG_PRODUCER);
            let mut entries = Vec::new();
            let mut iter = db.raw_iterator_cf(&cf);
            iter.seek(prefix);
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if !key.starts_with(&prefix) {
                    break;
                }
                let id = i64::from_be_bytes(key[9..17].try_into().map_err(|_| decode_error_text("producer key"))?);
                let entry: ProducerEntry = postcard::from_bytes(value).map_err(|e| decode_error("producer", e))?;
                entries.push((id, entry));
                iter.next();
            }
            iter.status().map_err(to_io)?;
            let clock = match db.get_pinned_cf(&cf, keys::tag_key(group_id, TAG_SNAPSHOT)).map_err(to_io)? {
                Some(bytes) => {
                    let stored: StoredSnapshot =
                        postcard::from_bytes(&bytes).map_err(|e| decode_error("snapshot", e))?;
                    partition_clock(&SnapshotPayload::decode(&stored.data)?.state)
                }
                None => 0,
            };
            Ok((ProducerTable::from_entries(entries), clock))
        })
        .await?;
        let (published, _) = watch::channel(Arc::new(state.clone()));
        Ok(GroupStateMachine {
            store,
            group_id,
            last_applied,
            last_membership,
            state,
            producers,
            snapshot_clocks_ms: [snapshot_clock_ms; 2],
            key_count,
            published,
            alive: Arc::new(()),
        })
    }

    /// A receiver that sees the group's state after every apply.
    pub fn subscribe(&self) -> watch::Receiver<Arc<GroupState>> {
        self.published.subscribe()
    }

    fn applied_bytes(&self) -> io::Result<Vec<u8>> {
        encode_applied(&self.last_applied, &self.last_membership, &self.state)
    }
}

impl RaftStateMachine<TypeConfig> for GroupStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut items = Vec::new();
        while let Some(item) = entries.next().await {
            items.push(item?);
        }
        // Applying may read the key index, so the whole round runs as
        // blocking work (on this task, see `commit_round_io`) with the state
        // moved there and back.
        let placeholder = self.state.placeholder();
        let mut round = ApplyRound {
            db: self.store.db.clone(),
            sequences: self.store.sequences.clone(),
            key_cleanup: self.store.key_cleanup.clone(),
            group_id: self.group_id,
            last_applied: self.last_applied.take(),
            last_membership: self.last_membership.clone(),
            state: std::mem::replace(&mut self.state, placeholder),
            producers: std::mem::take(&mut self.producers),
            key_cleanup_bound_ms: self.snapshot_clocks_ms[1],
            key_count: self.key_count,
        };
        let (round, responders) = crate::commit_round_io(&self.store, move || {
            let responders = round.run(items)?;
            Ok((round, responders))
        })
        .await?;
        self.last_applied = round.last_applied;
        self.last_membership = round.last_membership;
        self.state = round.state;
        self.producers = round.producers;
        self.key_count = round.key_count;
        self.published.send_replace(Arc::new(self.state.clone()));
        for (responder, response) in responders {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_clocks_ms = [partition_clock(&self.state), self.snapshot_clocks_ms[0]];
        SnapshotBuilder {
            alive: self.alive.clone(),
            producers: self.producers.iter().map(|(id, entry)| (*id, entry.clone())).collect(),
            store: self.store.clone(),
            group_id: self.group_id,
            meta: SnapshotMetaOf::<TypeConfig> {
                last_log_id: self.last_applied,
                last_membership: self.last_membership.clone(),
            },
            state: self.state.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let SnapshotPayload { state, producers } = SnapshotPayload::decode(&snapshot)?;
        if std::mem::discriminant(&state) != std::mem::discriminant(&self.state) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot of another group kind"));
        }
        self.state = state;
        let clock = partition_clock(&self.state);
        self.snapshot_clocks_ms = [clock, clock];
        let mut producer_rows = Vec::with_capacity(producers.len());
        for (id, entry) in &producers {
            let bytes = postcard::to_allocvec(entry).map_err(|e| io::Error::other(e.to_string()))?;
            producer_rows.push((keys::producer_key(self.group_id, *id), bytes));
        }
        self.producers = ProducerTable::from_entries(producers);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        let applied = self.applied_bytes()?;
        let stored = postcard::to_allocvec(&StoredSnapshot { meta: meta.clone(), data: snapshot })
            .map_err(|e| io::Error::other(e.to_string()))?;
        let group_id = self.group_id;
        let log_start = self.state.as_partition().map(|p| p.log_start_offset);
        let (db, sequences) = (self.store.db.clone(), self.store.sequences.clone());
        let record = self.store.synced_wal.clone();
        let alive = self.alive.clone();
        let staged_file = self.store.staging_files.take(group_id);
        self.key_count = blocking(move || {
            let _alive = alive;
            let sm = db.cf_handle(CF_SM).expect("column family exists");
            let data = db.cf_handle(CF_DATA).expect("column family exists");
            let mut write = WriteBatch::default();
            let mut key_count = 0;
            if let Some(log_start) = log_start {
                // The rows a snapshot stream staged (none when openraft
                // restores a snapshot of this store's own at start-up).
                crate::snapshot_stream::move_staged(&db, &sequences, &record, group_id, staged_file)?;
                write.delete_cf(&sm, keys::tag_key(group_id, keys::TAG_INSTALLING));
                // Moved rows can repeat rows this replica had: count anew.
                key_count = crate::snapshot_stream::count_key_rows(&db, group_id)?;
                write.put_cf(&sm, keys::tag_key(group_id, TAG_KEY_COUNT), key_count.to_be_bytes());
                write.delete_range_cf(&data, keys::data_key(group_id, 0), keys::data_key(group_id, log_start));
            }
            write.delete_range_cf(
                &sm,
                keys::tag_key(group_id, TAG_PRODUCER),
                keys::tag_key(group_id, TAG_PRODUCER + 1),
            );
            for (key, value) in producer_rows {
                write.put_cf(&sm, key, value);
            }
            write.put_cf(&sm, keys::tag_key(group_id, TAG_APPLIED), applied);
            write.put_cf(&sm, keys::tag_key(group_id, TAG_SNAPSHOT), stored);
            crate::write_logged(&db, &sequences, write)?;
            crate::record_flush(&record, || db.flush_wal(true).map_err(to_io))?;
            Ok(key_count)
        })
        .await?;
        self.published.send_replace(Arc::new(self.state.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        let db = self.store.db.clone();
        let key = keys::tag_key(self.group_id, TAG_SNAPSHOT);
        let stored: Option<StoredSnapshot> = blocking(move || {
            let cf = db.cf_handle(CF_SM).expect("column family exists");
            match db.get_pinned_cf(&cf, key).map_err(to_io)? {
                Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(|e| decode_error("snapshot", e)),
                None => Ok(None),
            }
        })
        .await?;
        Ok(stored.map(|s| SnapshotOf::<TypeConfig, Vec<u8>> { meta: s.meta, snapshot: s.data }))
    }
}

pub struct SnapshotBuilder {
    /// The state machine's liveness token (see `GroupStateMachine::liveness`).
    alive: Arc<()>,
    store: Store,
    group_id: u64,
    meta: SnapshotMetaOf<TypeConfig>,
    state: GroupState,
    producers: Vec<(i64, ProducerEntry)>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let payload = SnapshotPayload { state: self.state.clone(), producers: std::mem::take(&mut self.producers) };
        let data = postcard::to_allocvec(&payload).map_err(|e| io::Error::other(e.to_string()))?;
        self.producers = payload.producers;
        let stored = postcard::to_allocvec(&StoredSnapshot { meta: self.meta.clone(), data: data.clone() })
            .map_err(|e| io::Error::other(e.to_string()))?;
        let (db, sequences) = (self.store.db.clone(), self.store.sequences.clone());
        let key = keys::tag_key(self.group_id, TAG_SNAPSHOT);
        let alive = self.alive.clone();
        blocking(move || {
            let _alive = alive;
            let cf = db.cf_handle(CF_SM).expect("column family exists");
            let mut write = WriteBatch::default();
            write.put_cf(&cf, key, stored);
            // Unlogged like the applies it describes, so it can never be
            // durable ahead of them (openraft would restore it on start).
            crate::write_unlogged(&db, &sequences, write)
        })
        .await?;
        Ok(SnapshotOf::<TypeConfig, Vec<u8>> { meta: self.meta.clone(), snapshot: data })
    }
}

/// Reads committed batches of one partition group.
#[derive(Clone)]
pub struct PartitionReader {
    store: Store,
    group_id: u64,
}

impl PartitionReader {
    pub(crate) fn new(store: Store, group_id: u64) -> PartitionReader {
        PartitionReader { store, group_id }
    }

    /// Concatenated batches that hold offsets at or after `offset` and start
    /// below `end_offset`, up to about `max_bytes` (at least one batch when
    /// any exists). The first batch may start before `offset`.
    pub async fn read(&self, offset: u64, end_offset: u64, max_bytes: usize) -> io::Result<Vec<u8>> {
        let db = self.store.db.clone();
        let group_id = self.group_id;
        blocking(move || {
            let cf = db.cf_handle(CF_DATA).expect("column family exists");
            let mut out = Vec::new();
            let mut iter = db.raw_iterator_cf(&cf);
            // The batch holding `offset` starts at or before it.
            iter.seek_for_prev(keys::data_key(group_id, offset));
            if !iter.valid() || keys::group_of(iter.key().expect("valid")) != group_id {
                iter.seek(keys::data_key(group_id, offset));
            }
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if keys::group_of(key) != group_id || keys::second_of(key) >= end_offset {
                    break;
                }
                let header = stored_header(value)?;
                if header.next_offset() > offset {
                    if !out.is_empty() && out.len() + value.len() > max_bytes {
                        break;
                    }
                    out.extend_from_slice(value);
                }
                iter.next();
            }
            iter.status().map_err(to_io)?;
            Ok(out)
        })
        .await
    }

    /// Batch headers from the start of the log, up to and including the
    /// first one for which `until` is true, and at most `limit` of them.
    pub async fn scan_headers<F>(&self, mut until: F, limit: usize) -> io::Result<Vec<BatchInfo>>
    where
        F: FnMut(&BatchInfo) -> bool + Send + 'static,
    {
        let db = self.store.db.clone();
        let group_id = self.group_id;
        blocking(move || {
            let cf = db.cf_handle(CF_DATA).expect("column family exists");
            let mut out = Vec::new();
            let mut iter = db.raw_iterator_cf(&cf);
            iter.seek(keys::data_key(group_id, 0));
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if keys::group_of(key) != group_id || out.len() >= limit {
                    break;
                }
                let header = stored_header(value)?;
                let info = BatchInfo {
                    base_offset: header.base_offset,
                    next_offset: header.next_offset(),
                    max_timestamp_ms: header.max_timestamp,
                    size_bytes: value.len() as u64,
                };
                let stop = until(&info);
                out.push(info);
                if stop {
                    break;
                }
                iter.next();
            }
            iter.status().map_err(to_io)?;
            Ok(out)
        })
        .await
    }
}

fn stored_header(batch: &[u8]) -> io::Result<strata_record::BatchHeader> {
    strata_record::read_header(batch)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("stored batch: {e}")))
}

/// The header facts of one stored batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    pub base_offset: u64,
    pub next_offset: u64,
    pub max_timestamp_ms: i64,
    pub size_bytes: u64,
}

#[cfg(test)]
mod tests;
