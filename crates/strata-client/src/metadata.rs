//! Domain types of the cluster's metadata and status, and their conversion
//! from the wire. Node id 0 on the wire means "unknown"; here it is `None`.

use std::collections::BTreeMap;

use strata_proto::v1 as proto;

use crate::ClientError;

/// A node's id; ids start at 1.
pub type NodeId = u64;

/// What the client knows of the cluster: nodes, topics and leaders.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Node id to address (`host:port`).
    pub nodes: BTreeMap<NodeId, String>,
    pub topics: BTreeMap<String, TopicMetadata>,
    /// Leader of the metadata group, `None` when unknown.
    pub metadata_leader: Option<NodeId>,
}

impl ClusterMetadata {
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.get(name)
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionMetadata> {
        self.topic(topic)?.partition(partition)
    }

    pub fn node_address(&self, id: NodeId) -> Option<&str> {
        self.nodes.get(&id).map(String::as_str)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    /// Sorted by partition number; partition `i` is at index `i`.
    pub partitions: Vec<PartitionMetadata>,
    pub configs: BTreeMap<String, String>,
}

impl TopicMetadata {
    pub fn partition(&self, partition: u32) -> Option<&PartitionMetadata> {
        self.partitions.iter().find(|p| p.partition == partition)
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The replication factor, read from the first partition (all
    /// partitions of a topic are created with the same one).
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: u32,
    /// `None` while no leader is known.
    pub leader: Option<NodeId>,
    /// Replica node ids, preferred leader first.
    pub replicas: Vec<NodeId>,
}

/// A topic with the offsets of each partition, as `describe_topic` answers.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicDescription {
    pub name: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PartitionDescription {
    pub partition: u32,
    pub leader: Option<NodeId>,
    pub replicas: Vec<NodeId>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    /// Set when the serving node could not ask the leader; the offsets are then 0.
    pub error: Option<String>,
    /// Idempotent producers the partition remembers.
    pub producer_count: u64,
    /// Idempotency keys the partition's leader holds.
    pub idempotency_keys: u64,
}

/// The cluster's health as the answering node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeStatus>,
    pub metadata_leader: Option<NodeId>,
    /// True when the metadata group has a leader confirmed by a quorum.
    pub metadata_available: bool,
    /// What the node knows about the metadata group, most useful when it is unavailable.
    pub metadata_detail: String,
    /// Partitions moving to other replicas.
    pub reassignments: Vec<Reassignment>,
    /// Drawn when the cluster formed; empty before.
    pub cluster_id: String,
    /// The most bytes per second each node sends to the replicas joining
    /// a partition (`--throttle`); `None` when moves are not throttled.
    pub move_throttle_bytes_per_sec: Option<u64>,
}

/// A partition on its way to other replicas (`strata partition reassign`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: u32,
    pub from: Vec<NodeId>,
    pub to: Vec<NodeId>,
    /// How long it has been moving, ms.
    pub age_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub address: String,
    pub alive: bool,
    pub partitions_led: u32,
    pub partitions_hosted: u32,
    /// Why the node is not alive, when known.
    pub error: Option<String>,
    /// The node's wall clock minus cluster time (the median of the nodes'
    /// clocks), ms, as the node estimates it; `None` while it cannot tell.
    pub clock_offset_ms: Option<i64>,
    /// Drained of leadership (`strata node drain`).
    pub drained: bool,
    /// Partitions the node leads with a voter out of sync.
    pub partitions_under_replicated: u32,
    /// "active", "rebuilding" (back with an empty data dir, being caught
    /// up), "removing", or "" (not registered yet).
    pub membership: String,
    /// "voter", "learner" or "": the node's place in the metadata group.
    pub metadata_role: String,
    /// Partition replicas the metadata state places on the node.
    pub partitions_assigned: u32,
}

pub(crate) fn node_id(id: u64) -> Option<NodeId> {
    (id != 0).then_some(id)
}

impl From<proto::PartitionMetadata> for PartitionMetadata {
    fn from(p: proto::PartitionMetadata) -> Self {
        PartitionMetadata { partition: p.partition, leader: node_id(p.leader), replicas: p.replicas }
    }
}

impl From<proto::TopicMetadata> for TopicMetadata {
    fn from(t: proto::TopicMetadata) -> Self {
        let mut partitions: Vec<PartitionMetadata> = t.partitions.into_iter().map(Into::into).collect();
        partitions.sort_by_key(|p| p.partition);
        TopicMetadata { name: t.name, partitions, configs: t.configs.into_iter().collect() }
    }
}

impl From<proto::MetadataResponse> for ClusterMetadata {
    fn from(m: proto::MetadataResponse) -> Self {
        ClusterMetadata {
            nodes: m.nodes.into_iter().map(|n| (n.id, n.address)).collect(),
            topics: m.topics.into_iter().map(|t| (t.name.clone(), t.into())).collect(),
            metadata_leader: node_id(m.metadata_leader),
        }
    }
}

impl From<proto::DescribeTopicResponse> for TopicDescription {
    fn from(d: proto::DescribeTopicResponse) -> Self {
        let mut partitions: Vec<PartitionDescription> = d
            .partitions
            .into_iter()
            .map(|p| PartitionDescription {
                partition: p.partition,
                leader: node_id(p.leader),
                replicas: p.replicas,
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                error: ClientError::from_wire(p.error).map(|e| e.to_string()),
                producer_count: p.producer_count,
                idempotency_keys: p.idempotency_keys,
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        TopicDescription { name: d.name, configs: d.configs.into_iter().collect(), partitions }
    }
}

impl From<proto::ClusterStatusResponse> for ClusterStatus {
    fn from(s: proto::ClusterStatusResponse) -> Self {
        let mut nodes: Vec<NodeStatus> = s
            .nodes
            .into_iter()
            .map(|n| NodeStatus {
                id: n.id,
                address: n.address,
                alive: n.alive,
                partitions_led: n.partitions_led,
                partitions_hosted: n.partitions_hosted,
                error: (!n.error.is_empty()).then_some(n.error),
                clock_offset_ms: n.clock_known.then_some(n.clock_offset_ms),
                drained: n.drained,
                partitions_under_replicated: n.partitions_under_replicated,
                membership: n.membership,
                metadata_role: n.metadata_role,
                partitions_assigned: n.partitions_assigned,
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        ClusterStatus {
            nodes,
            metadata_leader: node_id(s.metadata_leader),
            metadata_available: s.metadata_available,
            metadata_detail: s.metadata_detail,
            reassignments: s
                .reassignments
                .into_iter()
                .map(|r| Reassignment {
                    topic: r.topic,
                    partition: r.partition,
                    from: r.from,
                    to: r.to,
                    age_ms: r.age_ms,
                })
                .collect(),
            cluster_id: s.cluster_id,
            move_throttle_bytes_per_sec: (s.move_throttle_bytes_per_sec > 0).then_some(s.move_throttle_bytes_per_sec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_zero_is_unknown_and_partitions_are_sorted() {
        let wire = proto::MetadataResponse {
            error: None,
            nodes: vec![proto::Node { id: 1, address: "a:1".into() }, proto::Node { id: 2, address: "b:2".into() }],
            topics: vec![proto::TopicMetadata {
                name: "t".into(),
                partitions: vec![
                    proto::PartitionMetadata { partition: 1, leader: 0, replicas: vec![2, 1], group_id: 9 },
                    proto::PartitionMetadata { partition: 0, leader: 2, replicas: vec![1, 2], group_id: 8 },
                ],
                configs: [("retention.ms".to_string(), "-1".to_string())].into_iter().collect(),
            }],
            metadata_leader: 0,
        };
        let metadata = ClusterMetadata::from(wire);
        assert_eq!(metadata.metadata_leader, None);
        assert_eq!(metadata.node_address(2), Some("b:2"));
        let topic = metadata.topic("t").unwrap();
        assert_eq!(topic.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(topic.partition(0).unwrap().leader, Some(2));
        assert_eq!(topic.partition(1).unwrap().leader, None);
        assert_eq!(topic.replication_factor(), 2);
        assert_eq!(topic.configs.get("retention.ms").map(String::as_str), Some("-1"));
    }
}
