//! Preferred-leader balancing: each partition's first replica is its
//! preferred leader, and placement spreads those over the nodes. Failovers
//! (and elections that the highest node id wins ties of) pile leadership up
//! on some nodes; this task, on every node, hands a partition it has led
//! for `leader_balance_delay` back to its preferred leader once that node
//! is a voter and has every entry this leader has (so the transfer costs
//! no catch-up and no unavailability beyond one election round).
//!
//! Decisions are `should_hand_over`'s (pure, unit-tested); the loop reads
//! Raft metrics and calls openraft's `transfer_leader`.
//!
//! Invariant: a partition moving to other replicas is left alone (its
//! leader is busy changing the membership).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use strata_core::limits::LEADER_BALANCE_INTERVAL;

use crate::node::Node;

/// What the balancer knows of one group this node leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Led {
    /// The partition's preferred leader (its first replica).
    pub preferred: u64,
    /// How long this node has led it in the current term.
    pub led_for: Duration,
    /// The preferred leader is a voter of the group.
    pub preferred_votes: bool,
    /// The preferred leader's matched log index and this leader's last.
    pub preferred_matched: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The partition is moving to other replicas.
    pub moving: bool,
}

/// Whether node `me` should hand the group to its preferred leader now.
pub(crate) fn should_hand_over(me: u64, led: &Led, delay: Duration) -> bool {
    led.preferred != me
        && !led.moving
        && led.led_for >= delay
        && led.preferred_votes
        && led.last_log_index.is_some()
        && led.preferred_matched == led.last_log_index
}

/// The balancer (see the module documentation); runs for the node's life
/// when `leader_balance_delay` is set.
pub(crate) async fn run(node: Node) {
    let Some(delay) = node.config.leader_balance_delay else { return };
    let me = node.node_id();
    // Group → (term, when this node was first seen leading it in that term).
    let mut leading_since: HashMap<u64, (u64, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(LEADER_BALANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = node.metadata_state();
        let mut leading = HashMap::new();
        for (group, (topic, partition, assignment)) in state.assignments() {
            let Some(&preferred) = assignment.replicas.first() else { continue };
            let Some(handle) = node.groups.get(group) else { continue };
            let metrics = handle.raft.metrics().borrow_watched().clone();
            if metrics.current_leader != Some(me) {
                continue;
            }
            let term = metrics.current_term;
            let since = match leading_since.get(&group) {
                Some((seen_term, at)) if *seen_term == term => *at,
                _ => Instant::now(),
            };
            leading.insert(group, (term, since));
            let led = Led {
                preferred,
                led_for: since.elapsed(),
                preferred_votes: metrics.membership_config.membership().voter_ids().any(|v| v == preferred),
                preferred_matched: metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&preferred).cloned().flatten())
                    .map(|log_id| log_id.index()),
                last_log_index: metrics.last_log_index,
                moving: state.reassignments.contains_key(&group),
            };
            if should_hand_over(me, &led, delay) {
                tracing::info!(topic = %topic.name, partition, to = preferred, "handing leadership to the preferred leader");
                if let Err(error) = handle.raft.trigger().transfer_leader(preferred).await {
                    tracing::warn!(group, %error, "leadership transfer not started");
                }
            }
        }
        leading_since = leading;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led() -> Led {
        Led {
            preferred: 1,
            led_for: Duration::from_secs(60),
            preferred_votes: true,
            preferred_matched: Some(10),
            last_log_index: Some(10),
            moving: false,
        }
    }

    #[test]
    fn hands_over_only_to_a_caught_up_voter_after_the_delay() {
        let delay = Duration::from_secs(30);
        assert!(should_hand_over(2, &led(), delay));
        assert!(!should_hand_over(1, &led(), delay), "the preferred leader keeps it");
        assert!(!should_hand_over(2, &Led { led_for: Duration::from_secs(29), ..led() }, delay), "too soon");
        assert!(!should_hand_over(2, &Led { preferred_matched: Some(9), ..led() }, delay), "behind");
        assert!(!should_hand_over(2, &Led { preferred_matched: None, ..led() }, delay), "unknown progress");
        assert!(!should_hand_over(2, &Led { preferred_votes: false, ..led() }, delay), "a learner");
        assert!(!should_hand_over(2, &Led { moving: true, ..led() }, delay), "mid-move");
    }
}
