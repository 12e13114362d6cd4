//! openraft's state machine over the node's RocksDB, for one group, and the
//! read side of partition data.
//!
//! Applied state (last applied log id, membership, the group's state) is
//! written in the same RocksDB write as the effects of the entries, so a
//! restart finds them consistent. Those writes are not synced: the Raft log
//! still holds every entry past the last durable state (the log is purged
//! only after a sync, see `LogStore::purge`), and openraft re-applies it.
//!
//! Snapshots are cheap: a snapshot holds the group's state (for a partition:
//! offsets and sizes, not records). A partition's record batches below the
//! snapshot's next offset are immutable, so the transport streams them from
//! `partition_data` when it sends the snapshot.

use std::io;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use strata_state::{Command, MetadataState, PartitionEffect, PartitionState, Response};
use tokio::sync::watch;

use crate::keys::{self, TAG_APPLIED, TAG_SNAPSHOT};
use crate::{blocking, decode_error, to_io, Store, TypeConfig, CF_DATA, CF_SM};

/// Which state machine a group runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    Metadata,
    Partition,
}

/// The replicated state of one group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupState {
    Metadata(MetadataState),
    Partition(PartitionState),
}

impl GroupState {
    fn empty(kind: GroupKind) -> GroupState {
        match kind {
            GroupKind::Metadata => GroupState::Metadata(MetadataState::default()),
            GroupKind::Partition => GroupState::Partition(PartitionState::default()),
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

/// What `state_machine/<group>/applied` holds.
#[derive(Serialize, Deserialize)]
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

pub struct GroupStateMachine {
    store: Store,
    group_id: u64,
    last_applied: Option<LogIdOf<TypeConfig>>,
    last_membership: StoredMembershipOf<TypeConfig>,
    state: GroupState,
    /// The state after each apply, for readers (fetch, metadata, reconciler).
    published: watch::Sender<Arc<GroupState>>,
}

impl GroupStateMachine {
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
        let (published, _) = watch::channel(Arc::new(state.clone()));
        Ok(GroupStateMachine { store, group_id, last_applied, last_membership, state, published })
    }

    /// A receiver that sees the group's state after every apply.
    pub fn subscribe(&self) -> watch::Receiver<Arc<GroupState>> {
        self.published.subscribe()
    }

    fn applied_bytes(&self) -> io::Result<Vec<u8>> {
        postcard::to_allocvec(&Applied {
            last_applied: self.last_applied.clone(),
            last_membership: self.last_membership.clone(),
            state: self.state.clone(),
        })
        .map_err(|e| io::Error::other(e.to_string()))
    }
}

impl RaftStateMachine<TypeConfig> for GroupStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        Ok((self.last_applied.clone(), self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut write = WriteBatch::default();
        let mut responders = Vec::new();
        {
            let db = &self.store.db;
            let data_cf = db.cf_handle(CF_DATA).expect("column family exists");
            while let Some(item) = entries.next().await {
                let (entry, responder) = item?;
                let response = match entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Membership(membership) => {
                        self.last_membership =
                            StoredMembershipOf::<TypeConfig>::new(Some(entry.log_id.clone()), membership);
                        Response::None
                    }
                    EntryPayload::Normal(command) => match (&mut self.state, command) {
                        (GroupState::Metadata(state), Command::Meta(command)) => Response::Meta(state.apply(command)),
                        (GroupState::Partition(state), Command::Partition(command)) => {
                            let (response, effect) = state.apply(command);
                            match effect {
                                Some(PartitionEffect::Write { base_offset, batch }) => {
                                    write.put_cf(&data_cf, keys::data_key(self.group_id, base_offset), batch)
                                }
                                Some(PartitionEffect::DeleteBelow { offset }) => write.delete_range_cf(
                                    &data_cf,
                                    keys::data_key(self.group_id, 0),
                                    keys::data_key(self.group_id, offset),
                                ),
                                None => {}
                            }
                            Response::Partition(response)
                        }
                        (_, command) => {
                            // A command of the wrong kind can only come from a
                            // bug in the proposer; every replica refuses it alike.
                            tracing::error!(group = self.group_id, %command, "command of the wrong kind for this group");
                            Response::None
                        }
                    },
                };
                self.last_applied = Some(entry.log_id);
                if let Some(responder) = responder {
                    responders.push((responder, response));
                }
            }
        }
        let applied = self.applied_bytes()?;
        let sm_key = keys::tag_key(self.group_id, TAG_APPLIED);
        let db = self.store.db.clone();
        blocking(move || {
            let cf = db.cf_handle(CF_SM).expect("column family exists");
            write.put_cf(&cf, sm_key, applied);
            db.write(write).map_err(to_io)
        })
        .await?;
        self.published.send_replace(Arc::new(self.state.clone()));
        for (responder, response) in responders {
            responder.send(response);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            group_id: self.group_id,
            meta: SnapshotMetaOf::<TypeConfig> {
                last_log_id: self.last_applied.clone(),
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
        let state: GroupState = postcard::from_bytes(&snapshot).map_err(|e| decode_error("snapshot", e))?;
        if std::mem::discriminant(&state) != std::mem::discriminant(&self.state) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "snapshot of another group kind"));
        }
        self.state = state;
        self.last_applied = meta.last_log_id.clone();
        self.last_membership = meta.last_membership.clone();
        let applied = self.applied_bytes()?;
        let stored = postcard::to_allocvec(&StoredSnapshot { meta: meta.clone(), data: snapshot })
            .map_err(|e| io::Error::other(e.to_string()))?;
        let group_id = self.group_id;
        let log_start = self.state.as_partition().map(|p| p.log_start_offset);
        let db = self.store.db.clone();
        blocking(move || {
            let sm = db.cf_handle(CF_SM).expect("column family exists");
            let data = db.cf_handle(CF_DATA).expect("column family exists");
            let mut write = WriteBatch::default();
            if let Some(log_start) = log_start {
                write.delete_range_cf(&data, keys::data_key(group_id, 0), keys::data_key(group_id, log_start));
            }
            write.put_cf(&sm, keys::tag_key(group_id, TAG_APPLIED), applied);
            write.put_cf(&sm, keys::tag_key(group_id, TAG_SNAPSHOT), stored);
            db.write(write).map_err(to_io)?;
            db.flush_wal(true).map_err(to_io)
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
    store: Store,
    group_id: u64,
    meta: SnapshotMetaOf<TypeConfig>,
    state: GroupState,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let data = postcard::to_allocvec(&self.state).map_err(|e| io::Error::other(e.to_string()))?;
        let stored = postcard::to_allocvec(&StoredSnapshot { meta: self.meta.clone(), data: data.clone() })
            .map_err(|e| io::Error::other(e.to_string()))?;
        let db = self.store.db.clone();
        let key = keys::tag_key(self.group_id, TAG_SNAPSHOT);
        blocking(move || {
            let cf = db.cf_handle(CF_SM).expect("column family exists");
            db.put_cf(&cf, key, stored).map_err(to_io)
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
