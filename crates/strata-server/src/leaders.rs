//! Leadership placement: preferred leaders and drained nodes.
//!
//! - Preferred-leader balancing: each partition's first replica is its
//!   preferred leader, and placement spreads those over the nodes.
//!   Failovers pile leadership up on some nodes (a new partition starts
//!   on its preferred leader, see `node::Node::start_group`); this task, on every node, hands a
//!   partition it has led for `leader_balance_delay` back to its preferred
//!   leader once that node is a voter and has every entry this leader has
//!   (so the transfer costs no catch-up and no unavailability beyond one
//!   election round).
//! - Drained nodes (`strata node drain`, before a restart): a drained node
//!   hands every partition it leads, and the metadata group, to the first
//!   caught-up voter that is not drained, at once; no leadership is handed
//!   to a drained node, and a partition whose preferred leader is drained
//!   prefers its next replica.
//!
//! Decisions are `hand_over_to`'s (pure, unit-tested); the loop reads Raft
//! metrics every LEADER_BALANCE_INTERVAL and calls openraft's
//! `transfer_leader`.
//!
//! Invariant: a partition moving to other replicas is left alone (its
//! leader is busy changing the membership).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use strata_core::limits::LEADER_BALANCE_INTERVAL;
use strata_state::metadata::METADATA_GROUP_ID;

use crate::groups::GroupHandle;
use crate::node::Node;

/// What the balancer knows of one group this node leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Led {
    /// The replicas in order of preference (the assignment's order; the
    /// first is the preferred leader). Empty for the metadata group, which
    /// has no preferred leader.
    pub replicas: Vec<u64>,
    /// Nodes drained of leadership (`strata node drain`).
    pub drained: BTreeSet<u64>,
    /// How long this node has led the group in the current term.
    pub led_for: Duration,
    pub voters: BTreeSet<u64>,
    /// Each follower's matched log index, as far as this leader knows.
    pub matched: BTreeMap<u64, u64>,
    pub last_log_index: Option<u64>,
    /// The partition is moving to other replicas.
    pub moving: bool,
}

/// The node `me` should hand the group to now, if any: a drained leader
/// hands it at once to the first replica (else voter) that is not drained
/// and has every entry; any other leader hands it, after `delay`, to the
/// first replica that is not drained, once that one has every entry.
/// `delay` `None`: only drained leaders hand over.
pub(crate) fn hand_over_to(me: u64, led: &Led, delay: Option<Duration>) -> Option<u64> {
    if led.moving {
        return None;
    }
    let last = led.last_log_index?;
    let ready = |node: &u64| {
        *node != me && led.voters.contains(node) && !led.drained.contains(node) && led.matched.get(node) == Some(&last)
    };
    if led.drained.contains(&me) {
        return led.replicas.iter().chain(&led.voters).find(|n| ready(n)).copied();
    }
    let preferred = led.replicas.iter().find(|n| !led.drained.contains(n))?;
    let due = delay.is_some_and(|delay| led.led_for >= delay);
    (*preferred != me && due && ready(preferred)).then_some(*preferred)
}

/// The balancer (see the module documentation); runs for the node's life.
pub(crate) async fn run(node: Node) {
    let delay = node.config.leader_balance_delay;
    let me = node.node_id();
    // Group → (term, when this node was first seen leading it in that term).
    let mut leading_since: HashMap<u64, (u64, Instant)> = HashMap::new();
    let mut tick = tokio::time::interval(LEADER_BALANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = node.metadata_state();
        let mut leading = HashMap::new();
        let mut groups: Vec<(u64, String, Vec<u64>, bool)> = state
            .assignments()
            .into_iter()
            .map(|(group, (topic, partition, a))| {
                let moving = state.reassignments.contains_key(&group);
                (group, format!("{}/{partition}", topic.name), a.replicas.clone(), moving)
            })
            .collect();
        groups.push((METADATA_GROUP_ID, "the metadata group".to_string(), Vec::new(), false));
        for (group, what, replicas, moving) in groups {
            let Some(handle) = node.groups.get(group) else { continue };
            let Some(led) = led_view(&handle, me, replicas, &state.drained, moving, &leading_since) else { continue };
            leading.insert(group, (handle.raft.metrics().borrow_watched().current_term, Instant::now() - led.led_for));
            if let Some(to) = hand_over_to(me, &led, delay) {
                tracing::info!(group = %what, to, drained = state.drained.contains(&me), "handing leadership over");
                if let Err(error) = handle.raft.trigger().transfer_leader(to).await {
                    tracing::warn!(group = %what, %error, "leadership transfer not started");
                }
            }
        }
        leading_since = leading;
    }
}

/// The balancer's view of a group this node leads; `None` when it does not.
fn led_view(
    handle: &GroupHandle,
    me: u64,
    replicas: Vec<u64>,
    drained: &BTreeSet<u64>,
    moving: bool,
    leading_since: &HashMap<u64, (u64, Instant)>,
) -> Option<Led> {
    let metrics = handle.raft.metrics().borrow_watched().clone();
    if metrics.current_leader != Some(me) {
        return None;
    }
    let since = match leading_since.get(&handle.group_id) {
        Some((term, at)) if *term == metrics.current_term => *at,
        _ => Instant::now(),
    };
    let matched = metrics
        .replication
        .as_ref()
        .map(|r| r.iter().filter_map(|(node, log_id)| Some((*node, log_id.as_ref()?.index()))).collect())
        .unwrap_or_default();
    Some(Led {
        replicas,
        drained: drained.clone(),
        led_for: since.elapsed(),
        voters: metrics.membership_config.membership().voter_ids().collect(),
        matched,
        last_log_index: metrics.last_log_index,
        moving,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led() -> Led {
        Led {
            replicas: vec![1, 2, 3],
            drained: BTreeSet::new(),
            led_for: Duration::from_secs(60),
            voters: BTreeSet::from([1, 2, 3]),
            matched: BTreeMap::from([(1, 10), (3, 10)]),
            last_log_index: Some(10),
            moving: false,
        }
    }

    const DELAY: Option<Duration> = Some(Duration::from_secs(30));

    #[test]
    fn hands_over_only_to_a_caught_up_voter_after_the_delay() {
        assert_eq!(hand_over_to(2, &led(), DELAY), Some(1));
        assert_eq!(hand_over_to(1, &led(), DELAY), None, "the preferred leader keeps it");
        assert_eq!(hand_over_to(2, &Led { led_for: Duration::from_secs(29), ..led() }, DELAY), None, "too soon");
        assert_eq!(hand_over_to(2, &led(), None), None, "balancing is off");
        let behind = Led { matched: BTreeMap::from([(1, 9)]), ..led() };
        assert_eq!(hand_over_to(2, &behind, DELAY), None, "behind");
        assert_eq!(hand_over_to(2, &Led { matched: BTreeMap::new(), ..led() }, DELAY), None, "unknown progress");
        assert_eq!(hand_over_to(2, &Led { voters: BTreeSet::from([2, 3]), ..led() }, DELAY), None, "a learner");
        assert_eq!(hand_over_to(2, &Led { moving: true, ..led() }, DELAY), None, "mid-move");
    }

    #[test]
    fn a_drained_node_hands_over_at_once_and_gets_nothing() {
        let drained = |nodes: &[u64]| nodes.iter().copied().collect::<BTreeSet<u64>>();
        // Node 1 drained: node 2 keeps the partition it leads (its next
        // preference), and never hands it to node 1.
        assert_eq!(hand_over_to(2, &Led { drained: drained(&[1]), ..led() }, DELAY), None);
        // Node 2 drained and leading: to the first caught-up replica at once,
        // whatever the delay.
        let fresh = Led { drained: drained(&[2]), led_for: Duration::ZERO, ..led() };
        assert_eq!(hand_over_to(2, &fresh, None), Some(1));
        let one_behind = Led { matched: BTreeMap::from([(1, 9), (3, 10)]), ..fresh.clone() };
        assert_eq!(hand_over_to(2, &one_behind, None), Some(3));
        assert_eq!(
            hand_over_to(2, &Led { drained: drained(&[1, 2, 3]), ..fresh.clone() }, None),
            None,
            "nowhere to go"
        );
        // The metadata group: no replicas order, any caught-up voter.
        let metadata = Led { replicas: Vec::new(), ..fresh };
        assert_eq!(hand_over_to(2, &metadata, None), Some(1));
        assert_eq!(hand_over_to(1, &Led { drained: BTreeSet::new(), ..metadata }, DELAY), None);
    }
}
