//! The RPCs that place replicas and leaders: `ReassignPartition` and
//! `DrainNode` (recorded by the metadata leader, forwarded there like a
//! topic create) and the internal `ReconfigurePartition` (served by a
//! partition's leader; see `reassign`). `ReassignPartition` and `Rebalance`
//! may also set the cluster's move throttle, before the moves they record.

use strata_core::ErrorCode;
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use strata_state::{MetaCommand, MetaResponse};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{err, is_forwarded, StrataService};
use crate::coordinator::CoordinatorError;
use crate::error::ApiError;

/// The throttle a request sets: `None` when it sets none, `Some(None)` to
/// turn it off (rate 0 on the wire).
fn throttle_of(set: bool, bytes_per_sec: u64) -> Option<Option<u64>> {
    set.then_some((bytes_per_sec > 0).then_some(bytes_per_sec))
}

impl StrataService {
    pub(super) async fn reassign_partition_inner(
        &self,
        request: Request<pb::ReassignPartitionRequest>,
    ) -> Result<Response<pb::ReassignPartitionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        if let Some(bytes_per_sec) = throttle_of(request.set_move_throttle, request.move_throttle_bytes_per_sec) {
            // Set on the metadata leader before the move is recorded; when
            // another node leads, the whole request goes there.
            let set = crate::reassign::set_move_throttle(&self.node, bytes_per_sec);
            let set_error = |a: &mut pb::ReassignPartitionResponse, e| a.error = e;
            match set.await {
                Ok(()) => {}
                Err(CoordinatorError::Forward(leader)) if !forwarded => {
                    return match self.peer(leader) {
                        Ok(mut peer) => peer.reassign_partition(Self::forwarded(request)).await,
                        Err(error) => err(error, set_error),
                    };
                }
                Err(CoordinatorError::Forward(leader)) => {
                    let moving = format!("metadata leadership is moving (to node {leader})");
                    return err(ApiError::new(ErrorCode::ClusterUnavailable, moving), set_error);
                }
                Err(CoordinatorError::Api(error)) => return err(error, set_error),
            }
        }
        let command = MetaCommand::ReassignPartition {
            topic: request.topic.clone(),
            partition: request.partition,
            replicas: request.replicas.clone(),
            nodes: self.voters(),
            now_ms: self.node.clock.now().ms,
        };
        self.write_metadata(
            command,
            forwarded,
            |a: &mut pb::ReassignPartitionResponse, e| a.error = e,
            |mut peer| async move { peer.reassign_partition(Self::forwarded(request)).await },
            |response| match response {
                MetaResponse::Reassignment { from, to, done, .. } => {
                    Some(pb::ReassignPartitionResponse { error: None, from, to, done })
                }
                _ => None,
            },
        )
        .await
    }

    pub(super) async fn drain_node_inner(
        &self,
        request: Request<pb::DrainNodeRequest>,
    ) -> Result<Response<pb::DrainNodeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let command =
            MetaCommand::DrainNode { node_id: request.node_id, drained: request.drained, nodes: self.voters() };
        self.write_metadata(
            command,
            forwarded,
            |a: &mut pb::DrainNodeResponse, e| a.error = e,
            |mut peer| async move { peer.drain_node(Self::forwarded(request)).await },
            |response| match response {
                MetaResponse::Drained { nodes } => Some(pb::DrainNodeResponse { error: None, drained: nodes }),
                _ => None,
            },
        )
        .await
    }

    pub(super) async fn rebalance_inner(
        &self,
        request: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let nodes = self.voters();
        let local = async {
            let throttle = throttle_of(request.set_move_throttle, request.move_throttle_bytes_per_sec);
            let moves = crate::reassign::rebalance(&self.node, &nodes, request.dry_run, throttle).await?;
            Ok(pb::RebalanceResponse {
                error: None,
                moves: moves
                    .into_iter()
                    .map(|m| pb::PlannedMove { topic: m.topic, partition: m.partition, from: m.from, to: m.to })
                    .collect(),
            })
        };
        let forward = |mut peer: StrataClient<Channel>| async move { peer.rebalance(Self::forwarded(request)).await };
        self.on_coordinator(forwarded, |a: &mut pb::RebalanceResponse, e| a.error = e, local, forward).await
    }

    pub(super) async fn reconfigure_partition_inner(
        &self,
        request: pb::ReconfigurePartitionRequest,
    ) -> Result<Response<pb::ReconfigurePartitionResponse>, Status> {
        let done = if request.rebuild_node != 0 {
            match self.node.groups.get(request.group_id).filter(|_| request.rebuild_node == self.node.node_id()) {
                Some(handle) => crate::membership::wait_own_copy_caught_up(&self.node, &handle).await,
                None => Err(ApiError::new(
                    ErrorCode::PartitionNotReady,
                    format!("node {} does not run group {} (yet)", self.node.node_id(), request.group_id),
                )),
            }
        } else {
            crate::reassign::reconfigure(&self.node, request.group_id, &request.replicas).await
        };
        match done {
            Ok(()) => Ok(Response::new(pb::ReconfigurePartitionResponse { error: None })),
            Err(error) => err(error, |a: &mut pb::ReconfigurePartitionResponse, e| a.error = e),
        }
    }

    /// The cluster's move throttle as this node's metadata state has it
    /// (0: off).
    pub(super) fn move_throttle_status(&self) -> u64 {
        self.node.metadata_state().move_throttle_bytes_per_sec.unwrap_or(0)
    }

    /// The moves in progress, as this node's metadata state has them.
    pub(super) fn reassignment_statuses(&self) -> Vec<pb::ReassignmentStatus> {
        let now_ms = self.node.clock.now().ms;
        self.node
            .metadata_state()
            .reassignments
            .values()
            .map(|r| pb::ReassignmentStatus {
                topic: r.topic.clone(),
                partition: r.partition,
                from: r.from.clone(),
                to: r.to.clone(),
                age_ms: now_ms.saturating_sub(r.started_ms),
            })
            .collect()
    }
}
