//! The RPCs that change who belongs to the cluster: `Join` (a node
//! registering at start), `AddVoter` and `RemoveNode` (the operator's),
//! each served by the metadata leader and forwarded there once (see
//! `crate::membership`).

use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{is_forwarded, StrataService};

impl StrataService {
    pub(super) async fn join_inner(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let to_serve = request.clone();
        let local = async {
            let joined = crate::membership::serve_join(&self.node, to_serve).await?;
            Ok(pb::JoinResponse {
                error: None,
                cluster_id: joined.cluster_id,
                membership: joined.status.name().to_string(),
                peers: joined.peers.into_iter().collect(),
            })
        };
        let forward = |mut peer: StrataClient<Channel>| async move { peer.join(Self::forwarded(request)).await };
        self.on_coordinator(forwarded, |a: &mut pb::JoinResponse, e| a.error = e, local, forward).await
    }

    pub(super) async fn add_voter_inner(
        &self,
        request: Request<pb::AddVoterRequest>,
    ) -> Result<Response<pb::AddVoterResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let voters = crate::membership::add_voter(&self.node, request.node_id).await?;
            Ok(pb::AddVoterResponse { error: None, voters })
        };
        let forward = |mut peer: StrataClient<Channel>| async move { peer.add_voter(Self::forwarded(request)).await };
        self.on_coordinator(forwarded, |a: &mut pb::AddVoterResponse, e| a.error = e, local, forward).await
    }

    pub(super) async fn remove_node_inner(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let request = request.into_inner();
        let local = async {
            let (remaining_replicas, removed) = crate::membership::remove_node(&self.node, request.node_id).await?;
            Ok(pb::RemoveNodeResponse { error: None, remaining_replicas, removed })
        };
        let forward = |mut peer: StrataClient<Channel>| async move { peer.remove_node(Self::forwarded(request)).await };
        self.on_coordinator(forwarded, |a: &mut pb::RemoveNodeResponse, e| a.error = e, local, forward).await
    }
}
