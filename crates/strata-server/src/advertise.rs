//! Registers this node's advertised client address (`advertise`) in the
//! metadata group, so that every node hands it out to clients.
//!
//! A background task for the node's life: whenever the address stored in
//! the metadata state for this node differs from its own (nothing stored
//! counts as its peer address, so a node left at the default writes
//! nothing), it proposes `MetaCommand::RegisterNode`, on this node when it
//! leads the metadata group, else through the leader's `RegisterNode` RPC,
//! and retries with a doubling back-off until the entry is written. Peers
//! never use these addresses: Raft and forwarding use peer addresses
//! (`initial_cluster`, or the `peer_address` a joined node registered).

use strata_core::limits::{ADVERTISE_RETRY_BACKOFF_MAX, ADVERTISE_RETRY_BACKOFF_MIN, FORWARD_TIMEOUT};
use strata_proto::v1 as pb;
use strata_proto::v1::strata_client::StrataClient;
use strata_state::{MetaCommand, MetaResponse};
use strata_storage::GroupState;

use crate::coordinator::{propose_meta, CoordinatorError};
use crate::node::Node;

/// Failed attempts between two warnings: the first failures are usual
/// while the cluster forms (no metadata leader yet), so they are logged at
/// debug; at the back-off's 5 s ceiling this warns about once a minute.
const WARN_EVERY_ATTEMPTS: u32 = 12;

/// Keeps this node's advertised address registered; runs until aborted at
/// shutdown.
pub(crate) async fn run(node: Node) {
    let me = node.node_id();
    let wanted = node.config.advertise.clone();
    let peer_address = node.peers.address(me).unwrap_or_default();
    // The address the metadata state gives clients for this node.
    let differs = move |state: &GroupState| {
        let stored = state.as_metadata().and_then(|m| m.advertised.get(&me).cloned());
        stored.unwrap_or_else(|| peer_address.clone()) != wanted
    };
    let mut state = node.metadata().state.clone();
    loop {
        if state.wait_for(|s| differs(s)).await.is_err() {
            return; // The metadata group is gone: the node is stopping.
        }
        register(&node).await;
        // Applied here too before looking again, so one change is one entry.
        if state.wait_for(|s| !differs(s)).await.is_err() {
            return;
        }
    }
}

/// Proposes the registration until it is written.
async fn register(node: &Node) {
    let advertised = node.config.advertise.clone();
    let mut backoff = ADVERTISE_RETRY_BACKOFF_MIN;
    let mut attempts = 0u32;
    loop {
        match register_once(node, &advertised).await {
            Ok(()) => {
                tracing::info!(node = node.node_id(), %advertised, "advertised client address registered");
                return;
            }
            Err(message) => {
                attempts += 1;
                if attempts.is_multiple_of(WARN_EVERY_ATTEMPTS) {
                    tracing::warn!(%advertised, attempts, error = %message, "advertised address not registered yet, retrying");
                } else {
                    tracing::debug!(%advertised, attempts, error = %message, "advertised address not registered yet");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ADVERTISE_RETRY_BACKOFF_MAX);
            }
        }
    }
}

/// One attempt: here when this node leads the metadata group, else at the
/// leader it knows (which forwards once more if leadership just moved).
async fn register_once(node: &Node, advertised: &str) -> Result<(), String> {
    let command = MetaCommand::RegisterNode { node_id: node.node_id(), advertised: advertised.to_string() };
    let leader = match propose_meta(node, command).await {
        Ok(MetaResponse::NodeRegistered) => return Ok(()),
        Ok(MetaResponse::Error { code, message }) => return Err(format!("{}: {message}", code.name())),
        Ok(other) => return Err(format!("unexpected answer {other:?}")),
        Err(CoordinatorError::Api(error)) => return Err(format!("{}: {}", error.code.name(), error.message)),
        Err(CoordinatorError::Forward(leader)) => leader,
    };
    let channel = node.peers.channel(leader).map_err(|e| format!("metadata leader node {leader}: {e}"))?;
    let mut request =
        tonic::Request::new(pb::RegisterNodeRequest { node_id: node.node_id(), advertised: advertised.to_string() });
    request.set_timeout(FORWARD_TIMEOUT);
    let answer = StrataClient::new(channel)
        .register_node(request)
        .await
        .map_err(|status| format!("metadata leader node {leader}: {}", status.message()))?
        .into_inner();
    match answer.error {
        Some(error) if error.code != 0 => {
            Err(format!("metadata leader node {leader}: {}: {}", error.name, error.message))
        }
        _ => Ok(()),
    }
}
