//! Calls that must reach a partition's leader from another node (the
//! transaction coordinator's markers, the move driver's reconfigure): the
//! leader this node knows first, then each replica, following a
//! NOT_LEADER's hint once.

use std::future::Future;

use strata_core::ErrorCode;

use crate::error::ApiError;
use crate::node::Node;

/// Calls `call(target)` on the candidates in turn until one answers `Ok`:
/// the leader this node knows of `group_id` first, then `replicas`, and a
/// leader a NOT_LEADER answer names (once). The last error otherwise.
pub(crate) async fn on_partition_leader<F, Fut>(
    node: &Node,
    group_id: u64,
    replicas: &[u64],
    mut call: F,
) -> Result<(), ApiError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), ApiError>>,
{
    let known = node.groups.get(group_id).and_then(|g| g.leader());
    let mut candidates: Vec<u64> = known.into_iter().collect();
    for replica in replicas {
        if !candidates.contains(replica) {
            candidates.push(*replica);
        }
    }
    let mut last = ApiError::new(ErrorCode::LeaderNotAvailable, "no replica of the partition answered");
    let mut hinted = false;
    let mut index = 0;
    while index < candidates.len() {
        let target = candidates[index];
        index += 1;
        let Err(error) = call(target).await else { return Ok(()) };
        if error.code == ErrorCode::NotLeader && !hinted {
            if let Some((leader, _)) = error.leader.clone() {
                hinted = true;
                candidates.insert(index, leader);
            }
        }
        last = error;
    }
    Err(last)
}
