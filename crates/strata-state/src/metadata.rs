//! The metadata state machine: topics, their configs and partition
//! assignments, named producers, and the consumer groups (see [`crate::group`],
//! applied here through [`MetaCommand::Group`]). Node addresses live in the
//! metadata group's Raft membership, not here; commands that need the node
//! list carry it. What is here is the client address each node advertises
//! (`MetaCommand::RegisterNode`), when it differs from its peer address.
//!
//! Invariant: group ids are allocated from a counter and never reused, so a
//! topic deleted and created again never meets the old topic's data.
//! Invariant: every replica set names distinct nodes, and its first entry is
//! the preferred leader.
//! Invariant: every advertised address belongs to a node id in
//! 1..=MAX_NODES and is a valid HOST:PORT (`check_advertised_address`).
//! Invariant: a create never takes the cluster past MAX_TOPICS topics,
//! MAX_PARTITIONS partitions, or a node past MAX_PARTITION_REPLICAS_PER_NODE
//! replicas (topics created before these checks may exceed them); nor
//! does a topic alter, which only ever adds partitions.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strata_core::limits::{
    MAX_ADVERTISED_ADDRESS_LEN, MAX_NAMED_PRODUCERS, MAX_NODES, MAX_PARTITIONS, MAX_PARTITIONS_PER_TOPIC,
    MAX_PARTITION_REPLICAS_PER_NODE, MAX_PRODUCER_NAME_LEN, MAX_REPLICATION_FACTOR, MAX_TOPICS, PRODUCER_ID_BLOCK,
};
use strata_core::throttle::ThrottleRate;
use strata_core::topic::{validate_topic_name, TopicConfig};
use strata_core::ErrorCode;

use crate::group::{CommittedOffset, ConsumerGroup, GroupCommand, GroupResponse, GroupsState};
use crate::members::{Joined, Members};
use crate::reassign::Reassignments;
use crate::txn::{StagedOffset, TopicPartition, TransactionsState, TxnCommand, TxnError, TxnResponse};

/// Group id of the metadata group; partition groups count up from 1.
pub const METADATA_GROUP_ID: u64 = 0;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
        /// Voter node ids at proposal time, sorted; replicas are placed on them.
        nodes: Vec<u64>,
        /// Leader's clock at proposal, for display only.
        created_ms: u64,
    },
    DeleteTopic {
        name: String,
    },
    /// Hands out `count` fresh producer ids to the proposing node.
    AllocateProducerIds {
        count: u64,
    },
    /// Starts (or restarts) the producer named `name`: the same id with the
    /// next epoch, which fences every older instance.
    InitNamedProducer {
        name: String,
    },
    /// A consumer group transition, planned by the metadata leader (see
    /// `group::planner`). The variant index is its tag in stored log
    /// entries, so new variants are only appended.
    Group(GroupCommand),
    /// A transaction coordinator transition (see [`crate::txn`]). Offsets
    /// are checked against their group before they are staged, and a
    /// commit's staged offsets are stored in their groups when it
    /// completes, in the same entry.
    Txn(TxnCommand),
    /// Node `node_id` tells clients to reach it at `advertised` (HOST:PORT)
    /// from now on; peers keep using its `initial_cluster` address.
    /// Proposed by the node itself when the stored address is not its own.
    RegisterNode {
        node_id: u64,
        advertised: String,
    },
    /// Starts moving `topic`/`partition` to `replicas` (see
    /// [`crate::reassign`]); `nodes` are the cluster's nodes at proposal.
    ReassignPartition {
        topic: String,
        partition: u32,
        replicas: Vec<u64>,
        nodes: Vec<u64>,
        now_ms: u64,
    },
    /// The partition group's voters are `replicas` now: the assignment
    /// follows and its reassignment ends.
    CompleteReassignment {
        group_id: u64,
        replicas: Vec<u64>,
    },
    /// Drains node `node_id` (`strata node drain`: no partition or metadata
    /// leadership stays on it or goes to it) or ends that (`drained` false);
    /// `nodes` are the cluster's nodes at proposal.
    DrainNode {
        node_id: u64,
        drained: bool,
        nodes: Vec<u64>,
    },
    /// Grows topic `name` to `partitions` partitions and/or changes its
    /// config; both or neither change (see `apply_alter_topic`).
    AlterTopic {
        name: String,
        /// The new partition count: 0 or the current count leaves it as it
        /// is, fewer is refused (a count only grows). New partitions get
        /// the topic's replication factor (the largest of its partitions')
        /// and are placed as a create places them.
        partitions: u32,
        /// `key=value` settings applied over the topic's current config and
        /// validated as a create's are; keys not named keep their value.
        configs: BTreeMap<String, String>,
        /// Voter node ids at proposal time; new replicas are placed on them.
        nodes: Vec<u64>,
    },
    /// Sets the cluster's id (drawn by the first metadata leader); ignored
    /// once one is set (see [`crate::members`]).
    FormCluster {
        cluster_id: String,
    },
    /// Node `node_id` registers at start: its peer address and its store's
    /// id (a new store id for a known node means its data was lost);
    /// `cluster_id` is the one its store holds, empty for a new store.
    JoinNode {
        node_id: u64,
        peer: String,
        store_id: u64,
        cluster_id: String,
    },
    /// Group `group_id` has rebuilding node `node_id` back as a voter.
    GroupRebuilt {
        node_id: u64,
        store_id: u64,
        group_id: u64,
    },
    /// Starts decommissioning `node_id` (`strata cluster remove-node`):
    /// `nodes` are the cluster's nodes, `metadata_voters` the metadata
    /// group's voters and `live` the nodes heard from lately, at proposal.
    RemoveNode {
        node_id: u64,
        nodes: Vec<u64>,
        metadata_voters: Vec<u64>,
        live: Vec<u64>,
        now_ms: u64,
    },
    /// The removing node holds nothing and left the metadata group.
    NodeRemoved {
        node_id: u64,
    },
    /// Sets the rate at which every node sends partition moves' data to
    /// the replicas joining a partition (`--throttle`), or clears it
    /// (`None`); a rate below MIN_MOVE_THROTTLE_BYTES_PER_SEC is refused.
    SetMoveThrottle {
        bytes_per_sec: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    TopicCreated(Topic),
    TopicDeleted(Topic),
    /// Producer ids `first .. first + count`.
    ProducerIds {
        first: u64,
        count: u64,
    },
    Producer {
        producer_id: u64,
        epoch: i16,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// The answer of a [`MetaCommand::Group`], errors included.
    Group(GroupResponse),
    /// The answer of a [`MetaCommand::Txn`], errors included.
    Txn(TxnResponse),
    /// The answer of a [`MetaCommand::RegisterNode`] that was stored.
    NodeRegistered,
    /// The answer of `ReassignPartition` and `CompleteReassignment`:
    /// `done` when the partition's replicas are `to` now.
    Reassignment {
        group_id: u64,
        from: Vec<u64>,
        to: Vec<u64>,
        done: bool,
    },
    /// The answer of a [`MetaCommand::DrainNode`]: the drained nodes now.
    Drained {
        nodes: Vec<u64>,
    },
    /// The answer of a [`MetaCommand::AlterTopic`]: the topic after it.
    TopicAltered(Topic),
    /// The answer of [`MetaCommand::FormCluster`]: the cluster's id.
    ClusterFormed {
        cluster_id: String,
    },
    /// The answer of `JoinNode` and `GroupRebuilt`.
    Joined(Joined),
    /// The answer of `RemoveNode` and `NodeRemoved`.
    NodeRemoval {
        node_id: u64,
        /// Partitions still on the node.
        remaining_replicas: u64,
        /// The node is forgotten.
        removed: bool,
    },
    /// The answer of a [`MetaCommand::SetMoveThrottle`]: the rate now.
    MoveThrottle {
        bytes_per_sec: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    pub group_id: u64,
    /// Node ids; the first is the preferred leader.
    pub replicas: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub id: u64,
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionAssignment>,
    pub created_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub topics: BTreeMap<String, Topic>,
    pub next_topic_id: u64,
    pub next_group_id: u64,
    /// Rotates the starting node of replica sets so replicas and preferred
    /// leaders spread evenly over nodes across topics.
    pub placement_cursor: u64,
    /// The next producer id never handed out.
    pub next_producer_id: u64,
    /// Named producers: their id and current epoch.
    pub named_producers: BTreeMap<String, NamedProducer>,
    /// Consumer groups and their committed offsets.
    ///
    /// Not part of this struct's own encoding, which stays the layout data
    /// dirs written before groups existed hold: strata-storage stores the
    /// groups beside it (its `GroupState::Metadata` layout), and a state
    /// decoded on its own has no groups.
    #[serde(skip)]
    pub groups: GroupsState,
    /// Transactional ids and their transactions; stored beside the state
    /// like the groups (strata-storage's `MetadataWithTxns` layout).
    #[serde(skip)]
    pub transactions: TransactionsState,
    /// The client address each node advertises (node id -> HOST:PORT),
    /// for the nodes that registered one; clients reach the others at
    /// their peer address. Stored beside the state like the groups
    /// (strata-storage's `MetadataWithNodes` layout).
    #[serde(skip)]
    pub advertised: BTreeMap<u64, String>,
    /// Partitions moving to other replicas ([`crate::reassign`]); stored
    /// beside the state (strata-storage's `MetadataWithExtras` layout).
    #[serde(skip)]
    pub reassignments: Reassignments,
    /// Nodes drained of leadership (`strata node drain`): the leaders'
    /// balancer moves every leadership off them and none onto them. Stored
    /// like the reassignments.
    #[serde(skip)]
    pub drained: BTreeSet<u64>,
    /// The cluster's id and nodes ([`crate::members`]); stored like the
    /// reassignments.
    #[serde(skip)]
    pub members: Members,
    /// The most bytes per second each node sends to the replicas joining
    /// the partitions it leads (`--throttle`); `None`: moves are not
    /// throttled. Stored like the reassignments.
    #[serde(skip)]
    pub move_throttle_bytes_per_sec: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedProducer {
    pub producer_id: u64,
    pub epoch: i16,
}

impl Default for MetadataState {
    fn default() -> Self {
        MetadataState {
            topics: BTreeMap::new(),
            next_topic_id: 1,
            next_group_id: METADATA_GROUP_ID + 1,
            placement_cursor: 0,
            next_producer_id: 1,
            named_producers: BTreeMap::new(),
            groups: GroupsState::default(),
            transactions: TransactionsState::default(),
            advertised: BTreeMap::new(),
            reassignments: Reassignments::new(),
            drained: BTreeSet::new(),
            members: Members::default(),
            move_throttle_bytes_per_sec: None,
        }
    }
}

/// Checks an advertised client address: HOST:PORT, the host a DNS name
/// (letters, digits, `-`, `.`, `_`), an IPv4 address or a bracketed IPv6
/// address, the port 1 to 65535, at most MAX_ADVERTISED_ADDRESS_LEN bytes.
/// The error says what is wrong, for a message that names the key.
pub fn check_advertised_address(address: &str) -> Result<(), String> {
    if address.len() > MAX_ADVERTISED_ADDRESS_LEN {
        return Err(format!("is {} bytes long; the limit is {MAX_ADVERTISED_ADDRESS_LEN}", address.len()));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("has no port; give HOST:PORT, e.g. 127.0.0.1:7171".into());
    };
    match port.parse::<u16>() {
        Ok(0) => return Err("has port 0; give the port clients connect to".into()),
        Ok(_) => {}
        Err(_) => return Err(format!("has port '{port}', not a number from 1 to 65535")),
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
    };
    if !host_ok {
        return Err(format!(
            "has host '{host}', which is not a host name, an IPv4 address or a bracketed IPv6 address ([::1])"
        ));
    }
    Ok(())
}

/// A replica set names at least one node and no node twice.
fn assert_replica_set(topic: &str, index: usize, replicas: &[u64]) {
    let mut nodes = replicas.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    assert!(
        !nodes.is_empty() && nodes.len() == replicas.len(),
        "metadata invariant broken: partition {index} of topic '{topic}' has replica set {replicas:?} (empty or a node twice)"
    );
}

fn error(code: ErrorCode, message: impl Into<String>) -> MetaResponse {
    MetaResponse::Error { code, message: message.into() }
}

impl MetadataState {
    /// Every partition assignment, keyed by group id.
    pub fn assignments(&self) -> BTreeMap<u64, (&Topic, u32, &PartitionAssignment)> {
        let mut out = BTreeMap::new();
        for topic in self.topics.values() {
            for (index, assignment) in topic.partitions.iter().enumerate() {
                out.insert(assignment.group_id, (topic, index as u32, assignment));
            }
        }
        out
    }

    /// How many partition replicas each node hosts.
    pub fn replicas_per_node(&self) -> BTreeMap<u64, usize> {
        let mut out = BTreeMap::new();
        for replica in self.topics.values().flat_map(|t| &t.partitions).flat_map(|a| &a.replicas) {
            *out.entry(*replica).or_insert(0) += 1;
        }
        out
    }

    /// Applies one command. A command that breaks an invariant of the
    /// module header (which only a bug can make) panics with the broken
    /// rule, which stops the metadata group on every replica alike instead
    /// of storing a state that later decisions would build on.
    pub fn apply(&mut self, command: MetaCommand) -> MetaResponse {
        let first_fresh_group = self.next_group_id;
        let response = self.apply_unchecked(command);
        match &response {
            MetaResponse::TopicCreated(topic) => self.assert_new_topic(topic),
            MetaResponse::TopicAltered(topic) => self.assert_added_partitions(topic, first_fresh_group),
            _ => {}
        }
        // The full check walks every assignment: cheap next to the
        // serialisation of the state that follows each apply, but only run
        // where tests are (debug builds); releases check the new topic.
        #[cfg(debug_assertions)]
        self.assert_invariants();
        response
    }

    /// The invariants of a topic just created: fresh group ids, one per
    /// partition, and replica sets of distinct nodes.
    fn assert_new_topic(&self, topic: &Topic) {
        let first = self.next_group_id - topic.partitions.len() as u64;
        for (index, assignment) in topic.partitions.iter().enumerate() {
            assert_eq!(
                assignment.group_id,
                first + index as u64,
                "metadata invariant broken: partition {index} of topic '{}' got group id {}, not the fresh id {}",
                topic.name,
                assignment.group_id,
                first + index as u64
            );
            assert_replica_set(&topic.name, index, &assignment.replicas);
        }
    }

    /// The invariants of a topic just altered: the partitions it gained are
    /// its last ones, with the fresh group ids from `first_fresh_group` on,
    /// one per partition, and replica sets of distinct nodes.
    fn assert_added_partitions(&self, topic: &Topic, first_fresh_group: u64) {
        let added = (self.next_group_id - first_fresh_group) as usize;
        assert!(
            added <= topic.partitions.len(),
            "metadata invariant broken: topic '{}' gained {added} partitions but has {}",
            topic.name,
            topic.partitions.len()
        );
        let first_index = topic.partitions.len() - added;
        for (offset, assignment) in topic.partitions[first_index..].iter().enumerate() {
            let index = first_index + offset;
            assert_eq!(
                assignment.group_id,
                first_fresh_group + offset as u64,
                "metadata invariant broken: partition {index} of topic '{}' got group id {}, not the fresh id {}",
                topic.name,
                assignment.group_id,
                first_fresh_group + offset as u64
            );
            assert_replica_set(&topic.name, index, &assignment.replicas);
        }
    }

    /// Replica sets for `count` new partitions of `replication_factor`
    /// replicas over `nodes` (sorted, distinct, at least
    /// `replication_factor` of them): node `placement_cursor + i` leads the
    /// i-th and the next nodes in turn follow, and group ids count up from
    /// `next_group_id`. Refused with LIMIT_REACHED when the cluster would go
    /// past MAX_PARTITIONS or a node past MAX_PARTITION_REPLICAS_PER_NODE
    /// (counting from `hosted`, the replicas each node hosts now);
    /// `advice` says what to do instead. Changes nothing:
    /// `take_placement` moves the counters on once the command is accepted.
    fn place(
        &self,
        count: u32,
        replication_factor: u32,
        nodes: &[u64],
        hosted: BTreeMap<u64, usize>,
        verb: &str,
        advice: &str,
    ) -> Result<Vec<PartitionAssignment>, MetaResponse> {
        let existing: usize = self.topics.values().map(|t| t.partitions.len()).sum();
        if existing + count as usize > MAX_PARTITIONS {
            return Err(error(
                ErrorCode::LimitReached,
                format!(
                    "the cluster has {existing} partitions and the limit is {MAX_PARTITIONS}; \
                     {verb} at most {} more or delete unused topics",
                    MAX_PARTITIONS.saturating_sub(existing)
                ),
            ));
        }
        let assignments: Vec<PartitionAssignment> = (0..count as u64)
            .map(|index| {
                let start = (self.placement_cursor + index) as usize;
                let replicas = (0..replication_factor as usize).map(|r| nodes[(start + r) % nodes.len()]).collect();
                let group_id = self.next_group_id + index;
                PartitionAssignment { group_id, replicas }
            })
            .collect();
        // The reconciler starts no more than this many replicas on a
        // node; a partition past it would never become ready.
        let mut per_node = hosted;
        for replica in assignments.iter().flat_map(|a| &a.replicas) {
            *per_node.entry(*replica).or_insert(0) += 1;
        }
        if let Some((node, count)) = per_node.iter().find(|(_, count)| **count > MAX_PARTITION_REPLICAS_PER_NODE) {
            return Err(error(
                ErrorCode::LimitReached,
                format!(
                    "node {node} would host {count} partition replicas, over the limit of \
                     {MAX_PARTITION_REPLICAS_PER_NODE} per node; {advice}"
                ),
            ));
        }
        Ok(assignments)
    }

    /// Moves the placement counters past `count` partitions placed over
    /// `node_count` nodes by `place`.
    fn take_placement(&mut self, count: u32, node_count: usize) {
        self.placement_cursor = (self.placement_cursor + count as u64) % node_count as u64;
        self.next_group_id += count as u64;
    }

    /// Checks every invariant of the module header, and the counters that
    /// keep them: panics naming the first broken one.
    pub fn assert_invariants(&self) {
        let mut group_ids = std::collections::BTreeSet::new();
        let mut topic_ids = std::collections::BTreeSet::new();
        for (name, topic) in &self.topics {
            assert_eq!(name, &topic.name, "metadata invariant broken: topic '{}' is filed under '{name}'", topic.name);
            assert!(
                topic.id < self.next_topic_id && topic_ids.insert(topic.id),
                "metadata invariant broken: topic '{name}' has id {} (reused, or not below the next id {})",
                topic.id,
                self.next_topic_id
            );
            for (index, assignment) in topic.partitions.iter().enumerate() {
                assert!(
                    assignment.group_id != METADATA_GROUP_ID
                        && assignment.group_id < self.next_group_id
                        && group_ids.insert(assignment.group_id),
                    "metadata invariant broken: partition {index} of topic '{name}' has group id {} \
                     (the metadata group's, a reused one, or not below the next id {})",
                    assignment.group_id,
                    self.next_group_id
                );
                assert_replica_set(name, index, &assignment.replicas);
            }
        }
        for (name, producer) in &self.named_producers {
            assert!(
                producer.producer_id < self.next_producer_id,
                "metadata invariant broken: named producer '{name}' has id {}, not below the next id {}",
                producer.producer_id,
                self.next_producer_id
            );
        }
        for txn in self.transactions.transactions.values() {
            assert!(
                txn.producer_id < self.next_producer_id,
                "metadata invariant broken: transactional id '{}' has producer id {}, not below the next id {}",
                txn.transactional_id,
                txn.producer_id,
                self.next_producer_id
            );
        }
        for (node_id, address) in &self.advertised {
            assert!(
                (1..=MAX_NODES).contains(node_id) && check_advertised_address(address).is_ok(),
                "metadata invariant broken: node {node_id} advertises '{address}' (a node id out of range or not HOST:PORT)"
            );
        }
        self.assert_reassignments();
        self.assert_members();
        self.transactions.check_invariants();
    }

    fn apply_unchecked(&mut self, command: MetaCommand) -> MetaResponse {
        match command {
            MetaCommand::CreateTopic { name, partitions, replication_factor, config, nodes, created_ms } => {
                if let Err(problem) = validate_topic_name(&name) {
                    return error(ErrorCode::InvalidTopicName, problem.to_string());
                }
                if self.topics.contains_key(&name) {
                    return error(ErrorCode::TopicAlreadyExists, format!("topic '{name}' already exists"));
                }
                if partitions == 0 || partitions > MAX_PARTITIONS_PER_TOPIC {
                    return error(
                        ErrorCode::InvalidPartitions,
                        format!("{partitions} partitions asked; use 1 to {MAX_PARTITIONS_PER_TOPIC}"),
                    );
                }
                let mut nodes = nodes;
                nodes.sort_unstable();
                nodes.dedup();
                // A node being removed gets no new replica.
                nodes.retain(|n| self.members.placeable(*n));
                if replication_factor == 0
                    || replication_factor > MAX_REPLICATION_FACTOR
                    || replication_factor as usize > nodes.len()
                {
                    return error(
                        ErrorCode::InvalidReplicationFactor,
                        format!(
                            "replication factor {replication_factor} asked; the cluster has {} nodes up to place replicas on (strata cluster status), the limit is {MAX_REPLICATION_FACTOR}",
                            nodes.len()
                        ),
                    );
                }
                if self.topics.len() >= MAX_TOPICS {
                    return error(
                        ErrorCode::LimitReached,
                        format!("the cluster has {MAX_TOPICS} topics, the limit; delete unused topics first"),
                    );
                }
                let assignments = match self.place(
                    partitions,
                    replication_factor,
                    &nodes,
                    self.replicas_per_node(),
                    "create",
                    "create fewer partitions, use a lower replication factor, delete unused topics or add nodes",
                ) {
                    Ok(assignments) => assignments,
                    Err(refused) => return refused,
                };
                self.take_placement(partitions, nodes.len());
                let topic =
                    Topic { id: self.next_topic_id, name: name.clone(), config, partitions: assignments, created_ms };
                self.next_topic_id += 1;
                self.topics.insert(name, topic.clone());
                MetaResponse::TopicCreated(topic)
            }
            MetaCommand::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(topic) => {
                    let groups: Vec<u64> = topic.partitions.iter().map(|a| a.group_id).collect();
                    self.drop_reassignments_of(&groups);
                    MetaResponse::TopicDeleted(topic)
                }
                None => error(ErrorCode::UnknownTopic, format!("topic '{name}' does not exist")),
            },
            MetaCommand::AllocateProducerIds { count } => {
                let count = count.clamp(1, PRODUCER_ID_BLOCK);
                let first = self.next_producer_id;
                self.next_producer_id += count;
                MetaResponse::ProducerIds { first, count }
            }
            MetaCommand::InitNamedProducer { name } => {
                if name.is_empty() || name.len() > MAX_PRODUCER_NAME_LEN {
                    return error(
                        ErrorCode::InvalidRequest,
                        format!("producer name must have 1 to {MAX_PRODUCER_NAME_LEN} bytes"),
                    );
                }
                let next = match self.named_producers.get(&name) {
                    Some(p) if p.epoch < i16::MAX => NamedProducer { producer_id: p.producer_id, epoch: p.epoch + 1 },
                    Some(_) | None => {
                        if !self.named_producers.contains_key(&name)
                            && self.named_producers.len() >= MAX_NAMED_PRODUCERS
                        {
                            return error(
                                ErrorCode::InvalidRequest,
                                format!(
                                    "the cluster has {MAX_NAMED_PRODUCERS} named producers, the limit; reuse names"
                                ),
                            );
                        }
                        // A new name, or epochs used up: a fresh id at epoch 0.
                        let producer_id = self.next_producer_id;
                        self.next_producer_id += 1;
                        NamedProducer { producer_id, epoch: 0 }
                    }
                };
                self.named_producers.insert(name, next.clone());
                MetaResponse::Producer { producer_id: next.producer_id, epoch: next.epoch }
            }
            MetaCommand::Group(command) => MetaResponse::Group(self.groups.apply(command)),
            MetaCommand::Txn(command) => MetaResponse::Txn(self.apply_txn(command)),
            MetaCommand::RegisterNode { node_id, advertised } => {
                if node_id == 0 || node_id > MAX_NODES {
                    return error(
                        ErrorCode::InvalidRequest,
                        format!("node id {node_id} is out of range; use 1 to {MAX_NODES}"),
                    );
                }
                if let Err(problem) = check_advertised_address(&advertised) {
                    return error(
                        ErrorCode::InvalidRequest,
                        format!("node {node_id}: advertised address '{advertised}' {problem}"),
                    );
                }
                self.advertised.insert(node_id, advertised);
                MetaResponse::NodeRegistered
            }
            MetaCommand::ReassignPartition { topic, partition, replicas, nodes, now_ms } => {
                self.reassign(&topic, partition, replicas, &nodes, now_ms)
            }
            MetaCommand::CompleteReassignment { group_id, replicas } => self.complete_reassignment(group_id, replicas),
            MetaCommand::DrainNode { node_id, drained, nodes } => {
                if !nodes.contains(&node_id) {
                    return error(
                        ErrorCode::InvalidRequest,
                        format!("node {node_id} is not in the cluster (its nodes are {nodes:?}); name one that is"),
                    );
                }
                if drained {
                    self.drained.insert(node_id);
                } else {
                    self.drained.remove(&node_id);
                }
                MetaResponse::Drained { nodes: self.drained.iter().copied().collect() }
            }
            MetaCommand::AlterTopic { name, partitions, configs, nodes } => {
                self.apply_alter_topic(name, partitions, configs, nodes)
            }
            MetaCommand::FormCluster { cluster_id } => self.form_cluster(cluster_id),
            MetaCommand::JoinNode { node_id, peer, store_id, cluster_id } => {
                self.join_node(node_id, peer, store_id, cluster_id)
            }
            MetaCommand::GroupRebuilt { node_id, store_id, group_id } => {
                self.group_rebuilt(node_id, store_id, group_id)
            }
            MetaCommand::RemoveNode { node_id, nodes, metadata_voters, live, now_ms } => {
                self.remove_node(node_id, &nodes, &metadata_voters, &live, now_ms)
            }
            MetaCommand::NodeRemoved { node_id } => self.node_removed(node_id),
            MetaCommand::SetMoveThrottle { bytes_per_sec } => match ThrottleRate::from_stored(bytes_per_sec) {
                Ok(rate) => {
                    self.move_throttle_bytes_per_sec = rate.bytes_per_sec();
                    MetaResponse::MoveThrottle { bytes_per_sec: self.move_throttle_bytes_per_sec }
                }
                Err(refused) => error(ErrorCode::InvalidRequest, refused.to_string()),
            },
        }
    }

    /// Grows a topic and/or changes its config: everything is checked
    /// before anything changes, so a refused alter changes nothing. A
    /// partition count equal to the current one (or 0) leaves the
    /// partitions as they are, so a retried alter whose first attempt was
    /// applied succeeds again; an alter that names neither partitions nor
    /// configs is refused as empty.
    fn apply_alter_topic(
        &mut self,
        name: String,
        partitions: u32,
        configs: BTreeMap<String, String>,
        nodes: Vec<u64>,
    ) -> MetaResponse {
        let Some(topic) = self.topics.get(&name) else {
            return error(ErrorCode::UnknownTopic, format!("topic '{name}' does not exist"));
        };
        if partitions == 0 && configs.is_empty() {
            return error(
                ErrorCode::InvalidRequest,
                format!("the alter of topic '{name}' changes nothing; give a new partition count or configs"),
            );
        }
        let current = topic.partitions.len() as u32;
        if partitions != 0 && partitions < current {
            return error(
                ErrorCode::InvalidPartitions,
                format!(
                    "topic '{name}' has {current} partitions and a partition count can only grow; \
                     give more than {current} (records are placed by key over the partitions, so \
                     removing one would lose or move them)"
                ),
            );
        }
        if partitions > MAX_PARTITIONS_PER_TOPIC {
            return error(
                ErrorCode::InvalidPartitions,
                format!("{partitions} partitions asked; use {current} to {MAX_PARTITIONS_PER_TOPIC}"),
            );
        }
        let config = match topic.config.with_settings(&configs) {
            Ok(config) => config,
            Err(problem) => return error(ErrorCode::InvalidConfig, problem.to_string()),
        };
        let added = partitions.saturating_sub(current);
        let mut assignments = Vec::new();
        let mut nodes = nodes;
        nodes.sort_unstable();
        nodes.dedup();
        nodes.retain(|n| self.members.placeable(*n));
        if added > 0 {
            // The topic's replication factor: the largest of its
            // partitions' (a reassignment may have changed some), so no
            // new partition is less durable than an old one.
            let replication_factor = topic.partitions.iter().map(|p| p.replicas.len()).max().unwrap_or(1) as u32;
            if replication_factor as usize > nodes.len() {
                return error(
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "topic '{name}' has replication factor {replication_factor} and the cluster has {} \
                         nodes; add nodes before adding partitions",
                        nodes.len()
                    ),
                );
            }
            assignments = match self.place(
                added,
                replication_factor,
                &nodes,
                // A node also runs the replicas partitions are moving to.
                self.replicas_per_node_with_moves(),
                "add",
                "add fewer partitions, delete unused topics or add nodes",
            ) {
                Ok(assignments) => assignments,
                Err(refused) => return refused,
            };
            self.take_placement(added, nodes.len());
        }
        let topic = self.topics.get_mut(&name).expect("looked up above");
        topic.partitions.extend(assignments);
        topic.config = config;
        MetaResponse::TopicAltered(topic.clone())
    }

    fn apply_txn(&mut self, command: TxnCommand) -> TxnResponse {
        if let TxnCommand::AddOffsets { group_id, member_id, member_epoch, offsets, .. } = &command {
            if let Err(error) = self.check_transactional_offsets(group_id, member_id, *member_epoch, offsets) {
                return TxnResponse::Error(error);
            }
        }
        let now_ms = match &command {
            TxnCommand::Complete { now_ms, .. } => *now_ms,
            _ => 0,
        };
        let next_producer_id = &mut self.next_producer_id;
        let mut allocate = || {
            let id = *next_producer_id;
            *next_producer_id += 1;
            id
        };
        let response = self.transactions.apply(command, &mut allocate);
        if let TxnResponse::Completed { offsets, .. } = &response {
            for (group_id, staged) in offsets {
                self.store_transactional_offsets(group_id, staged, now_ms);
            }
        }
        response
    }

    /// Offsets a transaction may stage for `group_id`: fenced as an
    /// ordinary commit of `member_id` at `member_epoch` is (the member owns
    /// each partition at an epoch no newer than the commit's), or, with an
    /// empty member id, for a group without members.
    fn check_transactional_offsets(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &BTreeMap<TopicPartition, StagedOffset>,
    ) -> Result<(), TxnError> {
        let refuse = |code: ErrorCode, message: String| Err(TxnError { code, message });
        if let Err(error) = crate::group::validate_group_id(group_id) {
            return refuse(error.code, error.message);
        }
        for (topic, partition) in offsets.keys() {
            match self.topics.get(topic) {
                None => return refuse(ErrorCode::UnknownTopic, format!("topic '{topic}' does not exist")),
                Some(t) if *partition as usize >= t.partitions.len() => {
                    return refuse(
                        ErrorCode::UnknownPartition,
                        format!("topic '{topic}' has {} partitions; {partition} does not exist", t.partitions.len()),
                    )
                }
                Some(_) => {}
            }
        }
        let group = self.groups.groups.get(group_id);
        if member_id.is_empty() {
            return match group {
                Some(group) if !group.members.is_empty() => refuse(
                    ErrorCode::UnknownMemberId,
                    format!(
                        "group '{group_id}' has members: send the offsets with the member id and epoch of the \
                         consumer that read them"
                    ),
                ),
                _ => Ok(()),
            };
        }
        let Some(group) = group else {
            return refuse(
                ErrorCode::GroupIdNotFound,
                format!("group '{group_id}' does not exist; its consumer must join it before sending offsets"),
            );
        };
        for (topic, partition) in offsets.keys() {
            if let Err(error) = group.check_commit(member_id, member_epoch, topic, *partition) {
                return refuse(error.code, error.message);
            }
        }
        Ok(())
    }

    /// Stores a committed transaction's offsets in their group (created
    /// when an operator deleted it meanwhile, so the offsets are not lost).
    fn store_transactional_offsets(
        &mut self,
        group_id: &str,
        staged: &BTreeMap<TopicPartition, StagedOffset>,
        commit_ms: u64,
    ) {
        let group =
            self.groups.groups.entry(group_id.to_string()).or_insert_with(|| ConsumerGroup::new(group_id.to_string()));
        for ((topic, partition), offset) in staged {
            let committed = CommittedOffset { offset: offset.offset, metadata: offset.metadata.clone(), commit_ms };
            group.offsets.entry(topic.clone()).or_default().insert(*partition, committed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_move_throttle_is_set_cleared_and_bounded() {
        let mut state = MetadataState::default();
        let set = |bytes_per_sec| MetaCommand::SetMoveThrottle { bytes_per_sec };
        assert_eq!(state.apply(set(Some(20 << 20))), MetaResponse::MoveThrottle { bytes_per_sec: Some(20 << 20) });
        assert_eq!(state.move_throttle_bytes_per_sec, Some(20 << 20));
        // Below the lowest rate (0 included: off is None): refused, unchanged.
        for refused in [0, 1024] {
            let MetaResponse::Error { code, message } = state.apply(set(Some(refused))) else { panic!("{refused}") };
            assert_eq!(code, ErrorCode::InvalidRequest);
            assert!(message.contains("below the lowest"), "{message}");
            assert_eq!(state.move_throttle_bytes_per_sec, Some(20 << 20));
        }
        assert_eq!(state.apply(set(None)), MetaResponse::MoveThrottle { bytes_per_sec: None });
        assert_eq!(state.move_throttle_bytes_per_sec, None);
    }

    #[test]
    #[should_panic(expected = "metadata invariant broken: partition 0 of topic 'b' has group id 1")]
    fn a_reused_group_id_is_caught() {
        let mut state = MetadataState::default();
        state.apply(create("a", 1, 1, &[1]));
        let mut copy = state.topics["a"].clone();
        copy.name = "b".into();
        copy.id = 2;
        state.next_topic_id = 3;
        state.topics.insert("b".into(), copy);
        state.assert_invariants();
    }

    #[test]
    #[should_panic(expected = "has replica set [2, 2]")]
    fn a_replica_set_naming_a_node_twice_is_caught() {
        let mut state = MetadataState::default();
        state.apply(create("a", 1, 2, &[1, 2]));
        state.topics.get_mut("a").unwrap().partitions[0].replicas = vec![2, 2];
        state.assert_invariants();
    }

    fn command() -> impl Strategy<Value = MetaCommand> {
        let name = "[a-c]";
        prop_oneof![
            (name, 0u32..4, 0u32..4, proptest::collection::vec(1u64..5, 0..5))
                .prop_map(|(n, p, rf, nodes)| create(&n, p, rf, &nodes)),
            name.prop_map(|n| MetaCommand::DeleteTopic { name: n }),
            (0u64..3000).prop_map(|count| MetaCommand::AllocateProducerIds { count }),
            name.prop_map(|n| MetaCommand::InitNamedProducer { name: n }),
            (0u64..5, "[a-z0-9.:]{0,12}")
                .prop_map(|(node_id, advertised)| MetaCommand::RegisterNode { node_id, advertised }),
            (name, 0u32..3, proptest::collection::vec(1u64..6, 0..5)).prop_map(|(topic, partition, replicas)| {
                MetaCommand::ReassignPartition { topic, partition, replicas, nodes: vec![1, 2, 3, 4], now_ms: 0 }
            }),
            (0u64..6, proptest::collection::vec(1u64..6, 0..5))
                .prop_map(|(group_id, replicas)| MetaCommand::CompleteReassignment { group_id, replicas }),
            (0u64..6, proptest::bool::ANY).prop_map(|(node_id, drained)| MetaCommand::DrainNode {
                node_id,
                drained,
                nodes: vec![1, 2, 3]
            }),
            (
                name,
                0u32..6,
                proptest::collection::btree_map(
                    "retention\\.ms|retention\\.bytes|dedup\\.window|nope",
                    "-1|0|5|10m|x",
                    0..3
                ),
                proptest::collection::vec(1u64..5, 0..5)
            )
                .prop_map(|(n, partitions, configs, nodes)| MetaCommand::AlterTopic {
                    name: n,
                    partitions,
                    configs,
                    nodes
                }),
            proptest::option::of(prop_oneof![Just(0u64), Just(1024), Just(256 * 1024), Just(20 << 20)])
                .prop_map(|bytes_per_sec| MetaCommand::SetMoveThrottle { bytes_per_sec }),
            (1u64..6, 1u64..4).prop_map(|(node_id, store_id)| MetaCommand::JoinNode {
                node_id,
                peer: format!("n{node_id}:7171"),
                store_id,
                cluster_id: String::new(),
            }),
            (1u64..6, 1u64..4, 0u64..20).prop_map(|(node_id, store_id, group_id)| MetaCommand::GroupRebuilt {
                node_id,
                store_id,
                group_id
            }),
            (1u64..6, proptest::collection::vec(1u64..5, 1..4)).prop_map(|(node_id, live)| MetaCommand::RemoveNode {
                node_id,
                nodes: vec![1, 2, 3, 4],
                metadata_voters: vec![1, 2, 3],
                live,
                now_ms: 0,
            }),
            (1u64..6).prop_map(|node_id| MetaCommand::NodeRemoved { node_id }),
        ]
    }

    proptest! {
        /// Whatever commands arrive, valid or not, the invariants hold
        /// after each (apply checks them in debug builds and would panic),
        /// a refused command changes nothing, and an alter never takes a
        /// partition away or changes an existing one.
        #[test]
        fn any_command_sequence_keeps_the_invariants(commands in proptest::collection::vec(command(), 1..40)) {
            let mut state = MetadataState::default();
            for command in commands {
                let before = state.clone();
                let altered = match &command {
                    MetaCommand::AlterTopic { name, .. } => Some(name.clone()),
                    _ => None,
                };
                let response = state.apply(command);
                state.assert_invariants();
                if let MetaResponse::Error { .. } = response {
                    prop_assert_eq!(&state, &before);
                }
                if let (Some(name), MetaResponse::TopicAltered(topic)) = (altered, &response) {
                    let old = &before.topics[&name];
                    prop_assert_eq!(&topic.partitions[..old.partitions.len()], &old.partitions[..]);
                    prop_assert_eq!(&state.topics[&name], topic);
                }
            }
        }
    }

    fn alter(name: &str, partitions: u32, configs: &[(&str, &str)], nodes: &[u64]) -> MetaCommand {
        MetaCommand::AlterTopic {
            name: name.into(),
            partitions,
            configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            nodes: nodes.to_vec(),
        }
    }

    #[test]
    fn an_alter_adds_partitions_placed_like_a_create_with_fresh_group_ids() {
        let mut state = MetadataState::default();
        let MetaResponse::TopicCreated(created) = state.apply(create("a", 2, 2, &[1, 2, 3])) else { panic!() };
        state.apply(create("b", 1, 1, &[1, 2, 3]));
        let (cursor, next_group) = (state.placement_cursor, state.next_group_id);
        let MetaResponse::TopicAltered(topic) = state.apply(alter("a", 5, &[], &[3, 2, 1])) else { panic!() };
        assert_eq!(topic.partitions.len(), 5);
        assert_eq!(&topic.partitions[..2], &created.partitions[..], "existing partitions stay as they were");
        let groups: Vec<u64> = topic.partitions[2..].iter().map(|p| p.group_id).collect();
        assert_eq!(groups, vec![next_group, next_group + 1, next_group + 2], "fresh ids, after topic b's");
        for (i, p) in topic.partitions[2..].iter().enumerate() {
            // The same rotation a create uses: leader at the cursor, then the next nodes.
            let start = (cursor as usize + i) % 3;
            assert_eq!(p.replicas, vec![[1, 2, 3][start], [1, 2, 3][(start + 1) % 3]], "partition {}", i + 2);
        }
        assert_eq!(state.placement_cursor, (cursor + 3) % 3);
        assert_eq!(state.next_group_id, next_group + 3);
        assert_eq!(state.topics["a"], topic);
        assert_eq!(topic.config, created.config, "no config named: the config stays");
    }

    #[test]
    fn an_alter_changes_only_the_configs_it_names_and_may_grow_at_once() {
        let mut state = MetadataState::default();
        let config = TopicConfig { retention_bytes: Some(1000), ..TopicConfig::default() };
        state.apply(MetaCommand::CreateTopic {
            name: "a".into(),
            partitions: 1,
            replication_factor: 1,
            config,
            nodes: vec![1],
            created_ms: 0,
        });
        let MetaResponse::TopicAltered(topic) = state.apply(alter("a", 0, &[("retention.ms", "1h")], &[1])) else {
            panic!()
        };
        assert_eq!(topic.config.retention_ms, Some(3_600_000));
        assert_eq!(topic.config.retention_bytes, Some(1000), "not named: kept, not reset to the default");
        assert_eq!(topic.partitions.len(), 1, "0 partitions: unchanged");
        let MetaResponse::TopicAltered(topic) =
            state.apply(alter("a", 3, &[("retention.ms", "-1"), ("dedup.window", "10m")], &[1]))
        else {
            panic!()
        };
        assert_eq!(
            (topic.partitions.len(), topic.config.retention_ms, topic.config.dedup_window_ms),
            (3, None, 600_000)
        );
        // The current count again is no change: a retried alter succeeds.
        let before = state.clone();
        assert_eq!(state.apply(alter("a", 3, &[], &[1])), MetaResponse::TopicAltered(topic.clone()));
        assert_eq!(state.topics, before.topics);
        assert_eq!(state.next_group_id, before.next_group_id);
    }

    #[test]
    fn bad_alters_are_refused_and_change_nothing() {
        let mut state = MetadataState::default();
        state.apply(create("a", 3, 3, &[1, 2, 3]));
        let before = state.clone();
        let cases = [
            (alter("zz", 4, &[], &[1, 2, 3]), ErrorCode::UnknownTopic, "does not exist"),
            (alter("a", 2, &[], &[1, 2, 3]), ErrorCode::InvalidPartitions, "can only grow"),
            (alter("a", 1, &[("retention.ms", "1h")], &[1, 2, 3]), ErrorCode::InvalidPartitions, "can only grow"),
            (alter("a", MAX_PARTITIONS_PER_TOPIC + 1, &[], &[1, 2, 3]), ErrorCode::InvalidPartitions, "use 3 to"),
            (alter("a", 0, &[], &[1, 2, 3]), ErrorCode::InvalidRequest, "changes nothing"),
            (alter("a", 5, &[("nope", "1")], &[1, 2, 3]), ErrorCode::InvalidConfig, "unknown topic config 'nope'"),
            (alter("a", 5, &[("retention.ms", "soon")], &[1, 2, 3]), ErrorCode::InvalidConfig, "retention.ms=soon"),
            (alter("a", 0, &[("dedup.window", "-1")], &[1, 2, 3]), ErrorCode::InvalidConfig, "must be bounded"),
            (alter("a", 4, &[], &[1, 2]), ErrorCode::InvalidReplicationFactor, "replication factor 3"),
            (alter("a", 4, &[], &[]), ErrorCode::InvalidReplicationFactor, "0 nodes"),
        ];
        for (command, expected, says) in cases {
            let (code, message) = code_of(state.apply(command));
            assert_eq!(code, expected, "{message}");
            assert!(message.contains(says), "{message} should say {says}");
        }
        assert_eq!(state, before, "a refused alter changes nothing, its valid half included");
    }

    #[test]
    fn alters_past_the_replicas_a_node_may_host_are_refused() {
        let mut state = MetadataState::default();
        let per_topic = MAX_PARTITIONS_PER_TOPIC;
        for i in 0..MAX_PARTITION_REPLICAS_PER_NODE / per_topic as usize - 1 {
            state.apply(create(&format!("t{i}"), per_topic, 1, &[1]));
        }
        state.apply(create("grow", 1, 1, &[1]));
        state.apply(create("other", 1, 1, &[1]));
        // Node 1 hosts 3,074 replicas: 1,022 more fit, 1,023 do not.
        let before = state.clone();
        let (code, message) = code_of(state.apply(alter("grow", per_topic, &[("retention.ms", "1h")], &[1])));
        assert_eq!(code, ErrorCode::LimitReached);
        assert!(message.contains("node 1 would host 4097 partition replicas"), "{message}");
        assert!(message.contains("add fewer partitions"), "{message}");
        assert_eq!(state, before, "nothing changes, the config included");
        assert!(matches!(state.apply(alter("grow", per_topic - 1, &[], &[1])), MetaResponse::TopicAltered(_)));
        assert_eq!(state.replicas_per_node()[&1], MAX_PARTITION_REPLICAS_PER_NODE);
    }

    fn move_to(topic: &str, partition: u32, replicas: &[u64], nodes: &[u64]) -> MetaCommand {
        MetaCommand::ReassignPartition {
            topic: topic.into(),
            partition,
            replicas: replicas.to_vec(),
            nodes: nodes.to_vec(),
            now_ms: 0,
        }
    }

    #[test]
    fn an_alter_after_reassignments_takes_the_largest_replication_factor_and_counts_moves() {
        let mut state = MetadataState::default();
        state.apply(create("a", 2, 2, &[1, 2, 3]));
        // Partition 1 moved to 3 replicas: new partitions get 3 as well.
        state.apply(move_to("a", 1, &[1, 2, 3], &[1, 2, 3]));
        let done = MetaCommand::CompleteReassignment {
            group_id: state.topics["a"].partitions[1].group_id,
            replicas: vec![1, 2, 3],
        };
        assert!(matches!(state.apply(done), MetaResponse::Reassignment { done: true, .. }));
        let MetaResponse::TopicAltered(topic) = state.apply(alter("a", 4, &[], &[1, 2, 3])) else { panic!() };
        assert_eq!(topic.partitions[2..].iter().map(|p| p.replicas.len()).collect::<Vec<_>>(), vec![3, 3]);

        // Node 1 hosts 4,095 replicas and gains one by a move in progress:
        // a partition more there is past its bound.
        let mut state = MetadataState::default();
        let per_topic = MAX_PARTITIONS_PER_TOPIC;
        for i in 0..3 {
            state.apply(create(&format!("t{i}"), per_topic, 1, &[1]));
        }
        state.apply(create("full", per_topic - 1, 1, &[1]));
        state.apply(create("elsewhere", 1, 1, &[2]));
        assert!(matches!(state.apply(move_to("elsewhere", 0, &[1], &[1, 2])), MetaResponse::Reassignment { .. }));
        let before = state.clone();
        let (code, message) = code_of(state.apply(alter("full", per_topic, &[], &[1])));
        assert_eq!(code, ErrorCode::LimitReached, "{message}");
        assert!(message.contains("node 1 would host 4097 partition replicas"), "{message}");
        assert_eq!(state, before);
    }

    #[test]
    fn alters_past_the_cluster_partition_bound_are_refused() {
        let mut state = MetadataState::default();
        let nodes: Vec<u64> = (1..=64).collect();
        let per_topic = MAX_PARTITIONS_PER_TOPIC;
        for i in 0..MAX_PARTITIONS / per_topic as usize - 1 {
            state.apply(create(&format!("t{i}"), per_topic, 1, &nodes));
        }
        state.apply(create("grow", 1, 1, &nodes));
        state.apply(create("other", 1, 1, &nodes));
        let before = state.clone();
        let (code, message) = code_of(state.apply(alter("grow", per_topic, &[], &nodes)));
        assert_eq!(code, ErrorCode::LimitReached);
        assert!(message.contains(&format!("limit is {MAX_PARTITIONS}; add at most 1022 more")), "{message}");
        assert_eq!(state, before);
        assert!(matches!(state.apply(alter("grow", per_topic - 1, &[], &nodes)), MetaResponse::TopicAltered(_)));
    }

    fn create(name: &str, partitions: u32, rf: u32, nodes: &[u64]) -> MetaCommand {
        MetaCommand::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            config: TopicConfig::default(),
            nodes: nodes.to_vec(),
            created_ms: 0,
        }
    }

    #[test]
    fn replicas_and_preferred_leaders_spread_evenly() {
        let mut state = MetadataState::default();
        let MetaResponse::TopicCreated(topic) = state.apply(create("a", 6, 2, &[3, 1, 2])) else { panic!() };
        let mut replica_count = BTreeMap::new();
        let mut leader_count = BTreeMap::new();
        for p in &topic.partitions {
            assert_eq!(p.replicas.len(), 2);
            assert_ne!(p.replicas[0], p.replicas[1]);
            *leader_count.entry(p.replicas[0]).or_insert(0) += 1;
            for r in &p.replicas {
                *replica_count.entry(*r).or_insert(0) += 1;
            }
        }
        assert_eq!(leader_count.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(replica_count.values().copied().collect::<Vec<_>>(), vec![4, 4, 4]);
        let groups: Vec<u64> = topic.partitions.iter().map(|p| p.group_id).collect();
        assert_eq!(groups, (1..=6).collect::<Vec<_>>());
    }

    #[test]
    fn group_ids_are_never_reused_after_delete() {
        let mut state = MetadataState::default();
        state.apply(create("a", 2, 1, &[1]));
        assert!(matches!(state.apply(MetaCommand::DeleteTopic { name: "a".into() }), MetaResponse::TopicDeleted(_)));
        let MetaResponse::TopicCreated(topic) = state.apply(create("a", 2, 1, &[1])) else { panic!() };
        assert_eq!(topic.partitions[0].group_id, 3);
        assert_eq!(topic.id, 2);
    }

    #[test]
    fn producer_ids_come_in_disjoint_blocks_and_names_bump_epochs() {
        let mut state = MetadataState::default();
        let a = state.apply(MetaCommand::AllocateProducerIds { count: 10 });
        let b = state.apply(MetaCommand::AllocateProducerIds { count: u64::MAX });
        assert_eq!(a, MetaResponse::ProducerIds { first: 1, count: 10 });
        assert_eq!(b, MetaResponse::ProducerIds { first: 11, count: PRODUCER_ID_BLOCK });
        let first = state.apply(MetaCommand::InitNamedProducer { name: "job".into() });
        let MetaResponse::Producer { producer_id, epoch: 0 } = first else { panic!("{first:?}") };
        assert_eq!(producer_id, 11 + PRODUCER_ID_BLOCK);
        let again = state.apply(MetaCommand::InitNamedProducer { name: "job".into() });
        assert_eq!(again, MetaResponse::Producer { producer_id, epoch: 1 });
        // Epochs used up: a fresh id.
        state.named_producers.get_mut("job").unwrap().epoch = i16::MAX;
        let fresh = state.apply(MetaCommand::InitNamedProducer { name: "job".into() });
        assert_eq!(fresh, MetaResponse::Producer { producer_id: producer_id + 1, epoch: 0 });
        assert!(matches!(
            state.apply(MetaCommand::InitNamedProducer { name: String::new() }),
            MetaResponse::Error { code: ErrorCode::InvalidRequest, .. }
        ));
    }

    #[test]
    fn group_commands_reach_the_groups_and_refusals_change_nothing() {
        use crate::group::{plan_heartbeat, GroupCommand, GroupResponse, HeartbeatRequest};
        let mut state = MetadataState::default();
        state.apply(create("t", 2, 1, &[1]));
        let join = HeartbeatRequest {
            group_id: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            instance_id: None,
            rebalance_timeout_ms: 0,
            subscribed_topics: Some(["t".to_string()].into()),
            assignor: None,
            owned_partitions: None,
            client_id: "c".into(),
            client_host: "h".into(),
        };
        // The metadata state is the planner's view of topics.
        let plan = plan_heartbeat(&state.groups, &join, &state, "m1", 5).expect("a join plans");
        assert!(!plan.commands.is_empty());
        for command in plan.commands.clone() {
            match state.apply(MetaCommand::Group(command)) {
                MetaResponse::Group(GroupResponse::Error { code, message }) => panic!("{code:?}: {message}"),
                MetaResponse::Group(_) => {}
                other => panic!("a group command answered {other:?}"),
            }
        }
        let answer = plan.answer(&state.groups).expect("the member is there");
        assert_eq!((answer.member_id.as_str(), answer.assignment.len()), ("m1", 2));
        // A refused group command leaves the whole metadata state as it was.
        let before = state.clone();
        match state.apply(MetaCommand::Group(GroupCommand::DeleteGroup { group_id: "g".into() })) {
            MetaResponse::Group(GroupResponse::Error { code, .. }) => assert_eq!(code, ErrorCode::GroupNotEmpty),
            other => panic!("expected GROUP_NOT_EMPTY, got {other:?}"),
        }
        assert_eq!(state, before);
    }

    #[test]
    fn bad_creates_are_refused_and_change_nothing() {
        let mut state = MetadataState::default();
        state.apply(create("a", 1, 1, &[1, 2, 3]));
        let before = state.clone();
        let cases = [
            (create("a", 1, 1, &[1]), ErrorCode::TopicAlreadyExists),
            (create("bad/name", 1, 1, &[1]), ErrorCode::InvalidTopicName),
            (create("b", 0, 1, &[1]), ErrorCode::InvalidPartitions),
            (create("b", 5000, 1, &[1]), ErrorCode::InvalidPartitions),
            (create("b", 1, 4, &[1, 2, 3]), ErrorCode::InvalidReplicationFactor),
            (create("b", 1, 0, &[1, 2, 3]), ErrorCode::InvalidReplicationFactor),
            (MetaCommand::DeleteTopic { name: "zz".into() }, ErrorCode::UnknownTopic),
        ];
        for (command, expected) in cases {
            match state.apply(command) {
                MetaResponse::Error { code, .. } => assert_eq!(code, expected),
                other => panic!("expected {expected:?}, got {other:?}"),
            }
        }
        assert_eq!(state, before);
    }

    fn code_of(response: MetaResponse) -> (ErrorCode, String) {
        match response {
            MetaResponse::Error { code, message } => (code, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn creates_past_the_replicas_a_node_may_host_are_refused() {
        let mut state = MetadataState::default();
        let per_topic = MAX_PARTITIONS_PER_TOPIC as usize;
        let full_topics = MAX_PARTITION_REPLICAS_PER_NODE / per_topic;
        for i in 0..full_topics {
            assert!(matches!(
                state.apply(create(&format!("t{i}"), per_topic as u32, 1, &[1])),
                MetaResponse::TopicCreated(_)
            ));
        }
        assert_eq!(state.replicas_per_node()[&1], MAX_PARTITION_REPLICAS_PER_NODE);
        let before = state.clone();
        let (code, message) = code_of(state.apply(create("more", 1, 1, &[1])));
        assert_eq!(code, ErrorCode::LimitReached);
        assert!(message.contains("node 1 would host 4097 partition replicas"), "{message}");
        assert!(message.contains("add nodes"), "{message}");
        assert_eq!(state, before, "a refused create changes nothing");
        // RF 2 over nodes 1 and 2 still puts a replica on node 1: refused.
        assert_eq!(code_of(state.apply(create("more", 1, 2, &[1, 2]))).0, ErrorCode::LimitReached);
        // A replica set that avoids node 1 fits.
        assert!(matches!(state.apply(create("more", 1, 1, &[2])), MetaResponse::TopicCreated(_)));
        // Deleting a topic makes room again.
        state.apply(MetaCommand::DeleteTopic { name: "t0".into() });
        assert!(matches!(state.apply(create("again", 3, 1, &[1])), MetaResponse::TopicCreated(_)));
    }

    #[test]
    fn creates_past_the_cluster_partition_bound_are_refused() {
        let mut state = MetadataState::default();
        let nodes: Vec<u64> = (1..=64).collect();
        let per_topic = MAX_PARTITIONS_PER_TOPIC;
        let full_topics = MAX_PARTITIONS / per_topic as usize;
        for i in 0..full_topics {
            assert!(matches!(
                state.apply(create(&format!("t{i}"), per_topic, 1, &nodes)),
                MetaResponse::TopicCreated(_)
            ));
        }
        let before = state.clone();
        let (code, message) = code_of(state.apply(create("one-more", 1, 1, &nodes)));
        assert_eq!(code, ErrorCode::LimitReached);
        assert!(message.contains(&format!("limit is {MAX_PARTITIONS}")), "{message}");
        assert_eq!(state, before);
    }

    #[test]
    fn creates_past_the_topic_bound_are_refused() {
        let mut state = MetadataState::default();
        // Filled directly: applying 10,000 creates one by one adds nothing
        // to what this test checks and is slow in a debug build.
        let MetaResponse::TopicCreated(template) = state.apply(create("t", 1, 1, &[1, 2, 3])) else { panic!() };
        for i in 1..MAX_TOPICS {
            let name = format!("t{i}");
            let mut topic = template.clone();
            topic.name = name.clone();
            topic.id = state.next_topic_id;
            state.next_topic_id += 1;
            topic.partitions[0] =
                PartitionAssignment { group_id: state.next_group_id, replicas: vec![1 + i as u64 % 3] };
            state.next_group_id += 1;
            state.topics.insert(name, topic);
        }
        let before = state.clone();
        let (code, message) = code_of(state.apply(create("last", 1, 1, &[1, 2, 3])));
        assert_eq!(code, ErrorCode::LimitReached);
        assert!(message.contains(&format!("{MAX_TOPICS} topics")), "{message}");
        assert_eq!(state, before);
        state.apply(MetaCommand::DeleteTopic { name: "t5".into() });
        assert!(matches!(state.apply(create("last", 1, 1, &[1, 2, 3])), MetaResponse::TopicCreated(_)));
    }

    /// Joins one member to group "g" on `topic` and settles it, as the
    /// coordinator would: it owns every partition at its returned epoch.
    fn join_member(state: &mut MetadataState, topic: &str) -> (String, i32) {
        use crate::group::{plan_heartbeat, Assignment, HeartbeatRequest};
        let mut member_id = String::new();
        let mut epoch = 0;
        let mut owned = Assignment::new();
        for _ in 0..5 {
            let request = HeartbeatRequest {
                group_id: "g".into(),
                member_id: member_id.clone(),
                member_epoch: epoch,
                instance_id: None,
                rebalance_timeout_ms: 0,
                subscribed_topics: Some([topic.to_string()].into()),
                assignor: None,
                owned_partitions: Some(owned.clone()),
                client_id: "test".into(),
                client_host: "127.0.0.1".into(),
            };
            let plan = plan_heartbeat(&state.groups, &request, &*state, "member-1", 0).unwrap();
            for command in plan.commands.clone() {
                if state.groups.groups.is_empty() {
                    state.apply(MetaCommand::Group(GroupCommand::ConfigureGroup {
                        group_id: "g".into(),
                        session_timeout_ms: 10_000,
                        heartbeat_interval_ms: 1_000,
                    }));
                }
                assert!(!matches!(
                    state.apply(MetaCommand::Group(command)),
                    MetaResponse::Group(GroupResponse::Error { .. })
                ));
            }
            let answer = plan.answer(&state.groups).unwrap();
            (member_id, epoch, owned) = (answer.member_id, answer.member_epoch, answer.assignment);
        }
        assert!(!owned.is_empty(), "the member owns its partitions");
        (member_id, epoch)
    }

    fn txn(state: &mut MetadataState, command: TxnCommand) -> TxnResponse {
        let MetaResponse::Txn(response) = state.apply(MetaCommand::Txn(command)) else { panic!() };
        response
    }

    fn staged(offset: u64) -> BTreeMap<TopicPartition, StagedOffset> {
        BTreeMap::from([(("in".to_string(), 0), StagedOffset { offset, metadata: String::new() })])
    }

    #[test]
    fn transactional_offsets_are_fenced_like_commits_and_stored_only_when_committed() {
        use crate::txn::Decision;
        let mut state = MetadataState::default();
        state.apply(create("in", 1, 1, &[1]));
        let (member_id, epoch) = join_member(&mut state, "in");
        let init = TxnCommand::InitProducer { transactional_id: "job".into(), timeout_ms: 60_000, now_ms: 0 };
        let TxnResponse::Producer { producer_id, producer_epoch } = txn(&mut state, init) else { panic!() };
        assert!(producer_id < state.next_producer_id, "the id comes from the shared counter");
        let add = |member_id: &str, member_epoch: i32, group_id: &str| TxnCommand::AddOffsets {
            transactional_id: "job".into(),
            producer_id,
            producer_epoch,
            group_id: group_id.into(),
            member_id: member_id.into(),
            member_epoch,
            offsets: staged(5),
            now_ms: 1,
        };
        let before = state.clone();
        for (command, code) in [
            (add("stranger", epoch, "g"), ErrorCode::UnknownMemberId),
            (add(&member_id, epoch + 1, "g"), ErrorCode::FencedMemberEpoch),
            (add("", -1, "g"), ErrorCode::UnknownMemberId),
            (add(&member_id, epoch, "other"), ErrorCode::GroupIdNotFound),
        ] {
            let TxnResponse::Error(error) = txn(&mut state, command) else { panic!() };
            assert_eq!(error.code, code, "{}", error.message);
            assert_eq!(state, before, "a refusal changes nothing");
        }
        assert_eq!(txn(&mut state, add(&member_id, epoch, "g")), TxnResponse::Added);
        assert!(state.transactions.has_pending_offset("g", "in", 0));
        assert!(state.groups.groups["g"].committed("in", 0).is_none(), "staged, not visible");
        let end = TxnCommand::End {
            transactional_id: "job".into(),
            producer_id,
            producer_epoch,
            decision: Decision::Commit,
            now_ms: 2,
        };
        let TxnResponse::Ended { producer_epoch: bumped, .. } = txn(&mut state, end) else { panic!() };
        assert!(state.groups.groups["g"].committed("in", 0).is_none(), "decided, markers not yet written");
        let complete = TxnCommand::Complete { transactional_id: "job".into(), producer_epoch: bumped, now_ms: 3 };
        assert!(matches!(txn(&mut state, complete), TxnResponse::Completed { decision: Decision::Commit, .. }));
        assert_eq!(state.groups.groups["g"].committed("in", 0).map(|c| (c.offset, c.commit_ms)), Some((5, 3)));
        assert!(!state.transactions.has_pending_offset("g", "in", 0));
    }

    #[test]
    fn nodes_register_their_advertised_addresses_and_bad_ones_change_nothing() {
        let mut state = MetadataState::default();
        let register =
            |node_id: u64, advertised: &str| MetaCommand::RegisterNode { node_id, advertised: advertised.into() };
        assert_eq!(state.apply(register(2, "127.0.0.1:7172")), MetaResponse::NodeRegistered);
        assert_eq!(state.apply(register(3, "strata-3.example.com:17173")), MetaResponse::NodeRegistered);
        assert_eq!(state.apply(register(2, "[::1]:7272")), MetaResponse::NodeRegistered, "a node may move");
        assert_eq!(
            state.advertised,
            BTreeMap::from([(2, "[::1]:7272".to_string()), (3, "strata-3.example.com:17173".to_string())])
        );
        let before = state.clone();
        let too_long = format!("{}:1", "a".repeat(MAX_ADVERTISED_ADDRESS_LEN));
        for (command, says) in [
            (register(0, "127.0.0.1:7171"), "out of range"),
            (register(MAX_NODES + 1, "127.0.0.1:7171"), "out of range"),
            (register(1, "127.0.0.1"), "no port"),
            (register(1, "127.0.0.1:0"), "port 0"),
            (register(1, "127.0.0.1:70000"), "not a number"),
            (register(1, ":7171"), "host ''"),
            (register(1, "http://a:7171"), "host 'http"),
            (register(1, "::1:7171"), "host '::1'"),
            (register(1, "[nope]:7171"), "host '[nope]'"),
            (register(1, &too_long), "the limit is"),
        ] {
            let (code, message) = code_of(state.apply(command));
            assert_eq!(code, ErrorCode::InvalidRequest);
            assert!(message.contains(says), "{message} should say {says}");
        }
        assert_eq!(state, before, "a refused registration changes nothing");
    }
}
