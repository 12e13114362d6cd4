//! The RPCs that place replicas and leaders: `ReassignPartition` and
//! `DrainNode` (recorded by the metadata leader, forwarded there like a
//! topic create) and the internal `ReconfigurePartition` (served by a
//! partition's leader; see `reassign`).

use strata_core::ErrorCode;
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use strata_state::{MetaCommand, MetaResponse};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{err, is_forwarded, StrataService};
use crate::error::ApiError;

impl StrataService {
    pub(super) async fn reassign_partition_inner(
        &self,
        request: Request<pb::ReassignPartitionRequest>,
    ) -> Result<Response<pb::ReassignPartitionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
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
            let moves = crate::reassign::rebalance(&self.node, &nodes, request.dry_run).await?;
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
