//! The registry of Raft groups running on this node.
use openraft::async_runtime::WatchReceiver;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use strata_storage::{GroupState, GroupStateMachine, PartitionReader, TypeConfig};
use tokio::sync::watch;

pub type GroupRaft = openraft::Raft<TypeConfig, GroupStateMachine>;

/// One running group: its Raft handle and a view of its applied state.
#[derive(Clone)]
pub struct GroupHandle {
    pub group_id: u64,
    pub raft: GroupRaft,
    pub state: watch::Receiver<Arc<GroupState>>,
    /// Partition groups only.
    pub reader: Option<PartitionReader>,
    /// The liveness of the group's log store and state machine: both dead
    /// once its Raft stopped and their last writes are done.
    pub storage: [std::sync::Weak<()>; 2],
    /// Leader changes of the group seen by this node (see `elections`).
    pub leader_changes: crate::elections::LeaderChanges,
}

impl GroupHandle {
    /// The leader this node currently knows, if any.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    pub fn is_leader(&self, node_id: u64) -> bool {
        self.leader() == Some(node_id)
    }
}

#[derive(Clone, Default)]
pub struct Groups {
    inner: Arc<RwLock<HashMap<u64, GroupHandle>>>,
}

impl Groups {
    pub fn get(&self, group_id: u64) -> Option<GroupHandle> {
        self.inner.read().expect("lock").get(&group_id).cloned()
    }

    pub fn raft(&self, group_id: u64) -> Option<GroupRaft> {
        self.get(group_id).map(|g| g.raft)
    }

    pub fn contains(&self, group_id: u64) -> bool {
        self.inner.read().expect("lock").contains_key(&group_id)
    }

    pub fn insert(&self, handle: GroupHandle) {
        self.inner.write().expect("lock").insert(handle.group_id, handle);
    }

    pub fn remove(&self, group_id: u64) -> Option<GroupHandle> {
        self.inner.write().expect("lock").remove(&group_id)
    }

    pub fn all(&self) -> Vec<GroupHandle> {
        let mut all: Vec<_> = self.inner.read().expect("lock").values().cloned().collect();
        all.sort_by_key(|g| g.group_id);
        all
    }
}
