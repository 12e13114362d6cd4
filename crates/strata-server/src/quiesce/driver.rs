//! The async side of quiescence: the engine (`engine.rs`) under a mutex,
//! fed with the time and openraft's metrics, its commands carried out on
//! the groups' Raft handles, its beats sent every beat interval.
//!
//! Nothing here decides anything: every rule is the engine's. The mutex is
//! never held across an await.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;
use strata_proto::v1::NodeBeat;

use super::engine::{Command, Engine, FollowerView, LeaderView, QuietTiming};
use crate::clock::ClusterClock;
use crate::groups::{GroupHandle, Groups};
use crate::network::incoming::{PeerTraffic, RaftMessage};
use crate::network::outgoing::PeerChannels;
use crate::node::local_wall_ms;

/// Quiescence of this node's groups; cheap to clone.
#[derive(Clone)]
pub struct Quiescence {
    node_id: u64,
    timing: QuietTiming,
    engine: Arc<Mutex<Engine>>,
    /// Peers' clock offsets, measured over the beats.
    clock: ClusterClock,
}

impl Quiescence {
    pub fn new(node_id: u64, timing: QuietTiming, clock: ClusterClock) -> Quiescence {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let incarnation = (nanos as u64) ^ ((std::process::id() as u64) << 32);
        let engine = Engine::new(node_id, incarnation, timing, Instant::now());
        Quiescence { node_id, timing, engine: Arc::new(Mutex::new(engine)), clock }
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().expect("lock")
    }

    /// Groups this node leads that are listed as quiet (for metrics).
    pub fn quiet_led(&self) -> HashSet<u64> {
        self.engine().quiet_led()
    }

    /// Groups whose timers are stopped on this node, led or followed.
    pub fn timers_off(&self) -> u64 {
        self.engine().timers_off()
    }

    /// The beat for `peer`, now.
    fn beat_for(&self, peer: u64) -> NodeBeat {
        self.engine().beat_for(peer, Instant::now(), local_wall_ms())
    }

    /// Handles a beat from a peer.
    pub async fn on_beat(&self, beat: &NodeBeat, groups: &Groups) {
        let outcome = self.engine().on_beat(beat, Instant::now(), |group| follower_view(groups, group));
        if let Some(sample) = outcome.clock_sample {
            self.clock.record(beat.from_node, sample.peer_wall_ms, sample.round_trip);
        }
        apply(&outcome.commands, |group| groups.get(group)).await;
    }

    /// A Raft message for `group` arrived from a peer.
    pub async fn on_raft_message(&self, group: u64, message: RaftMessage, groups: &Groups) {
        let command = self.engine().on_raft_message(group, message);
        if let Some(command) = command {
            apply(&[command], |group| groups.get(group)).await;
        }
    }

    /// Readies a group this node leads for a write: a quiet group whose
    /// lease is stale sends a heartbeat at once and waits (up to a peer
    /// timeout) for a quorum acknowledgement, and stays quiet (see
    /// `Engine::on_write`). Free for a group that is not quiet, or whose
    /// last acknowledgement is recent.
    pub async fn ready_for_write(&self, handle: &GroupHandle) {
        let now = Instant::now();
        // Fresh: acknowledged within half a lease, so that the write lands
        // well inside it.
        let lease_fresh = handle
            .raft
            .metrics()
            .borrow_watched()
            .last_quorum_acked
            .as_ref()
            .is_some_and(|at| (**at).elapsed() < self.timing.peer_timeout / 2);
        let Some(wake) = self.engine().on_write(handle.group_id, now, lease_fresh) else { return };
        apply(&wake.commands, |group| (group == handle.group_id).then(|| handle.clone())).await;
        let woken_at = wake.woken_at;
        // A write refused anyway comes back as a retryable error.
        let _ = handle
            .raft
            .wait(Some(self.timing.peer_timeout.saturating_sub(now.duration_since(woken_at))))
            .metrics(
                |m| m.last_quorum_acked.as_ref().is_some_and(|at| (**at).elapsed() < woken_at.elapsed()),
                "a quorum acknowledgement after waking",
            )
            .await;
    }

    /// One pass over this node's groups (every beat interval).
    pub async fn check(&self, groups: &Groups) {
        let now = Instant::now();
        let handles = groups.all();
        let hosted: Vec<u64> = handles.iter().map(|h| h.group_id).collect();
        // By id: a node hosts up to thousands of groups, and the engine asks
        // for some of them by id on every pass.
        let by_id: std::collections::HashMap<u64, &GroupHandle> = handles.iter().map(|h| (h.group_id, h)).collect();
        let handle = |group: u64| by_id.get(&group).copied();
        let commands = {
            let led = handles.iter().filter_map(leader_view).collect();
            let voters_of = |group| handle(group).map(voters).unwrap_or_default();
            self.engine().tick(now, &hosted, led, voters_of)
        };
        apply(&commands, |group| handle(group).cloned()).await;
    }
}

impl PeerTraffic for Quiescence {
    async fn beat(&self, beat: &NodeBeat, groups: &Groups) {
        self.on_beat(beat, groups).await
    }

    async fn raft_message(&self, group_id: u64, message: RaftMessage, groups: &Groups) {
        self.on_raft_message(group_id, message, groups).await
    }
}

/// Carries out the engine's commands, in order, on the groups `handle`
/// finds (a group gone meanwhile is skipped).
async fn apply(commands: &[Command], handle: impl Fn(u64) -> Option<GroupHandle>) {
    for command in commands {
        match *command {
            Command::Ticker { group, on } => {
                let Some(handle) = handle(group) else { continue };
                tracing::debug!(group, on, "quiescence sets timers");
                handle.raft.runtime_config().tick(on);
            }
            Command::Heartbeat { group } => {
                let Some(handle) = handle(group) else { continue };
                let _ = handle.raft.trigger().heartbeat().await;
            }
        }
    }
}

/// What the engine needs of a group this node leads; `None` when it does
/// not lead it.
fn leader_view(handle: &GroupHandle) -> Option<LeaderView> {
    let receiver = handle.raft.metrics();
    let metrics = receiver.borrow_watched();
    if metrics.state != ServerState::Leader {
        return None;
    }
    let matched = metrics
        .replication
        .as_ref()
        .map(|targets| targets.iter().map(|(id, log_id)| (*id, log_id.as_ref().map(|l| l.index))).collect())
        .unwrap_or_default();
    Some(LeaderView {
        group_id: handle.group_id,
        term: metrics.current_term,
        last_log_index: metrics.last_log_index,
        voters: metrics.membership_config.voter_ids().collect(),
        matched,
    })
}

/// What the engine needs of a group a peer lists as quiet; `None` unless
/// this node hosts it as a follower.
fn follower_view(groups: &Groups, group: u64) -> Option<FollowerView> {
    let handle = groups.get(group)?;
    let receiver = handle.raft.metrics();
    let metrics = receiver.borrow_watched();
    (metrics.state == ServerState::Follower)
        .then_some(FollowerView { leader: metrics.current_leader, term: metrics.current_term })
}

fn voters(handle: &GroupHandle) -> Vec<u64> {
    handle.raft.metrics().borrow_watched().membership_config.voter_ids().collect()
}

/// Sends this node's beats to every peer and checks its groups, every beat
/// interval, until aborted. Runs even with quiescence off: the beats are
/// what lets peers wake their quiet groups. The peers are looked up again
/// every interval: a node that joins gets beats from its first interval,
/// and a removed one stops getting them.
pub async fn run(quiescence: Quiescence, groups: Groups, peers: PeerChannels) {
    let me = quiescence.node_id;
    let interval = quiescence.timing.beat_interval;
    // Dropped (aborting the senders) when this task is aborted.
    let mut senders = tokio::task::JoinSet::new();
    let mut beating: HashMap<u64, tokio::task::AbortHandle> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let known: HashSet<u64> = peers.addresses().into_keys().filter(|id| *id != me).collect();
        beating.retain(|peer, sender| {
            let keep = known.contains(peer);
            if !keep {
                sender.abort();
            }
            keep
        });
        for peer in known {
            if beating.contains_key(&peer) {
                continue;
            }
            let (quiescence, peers) = (quiescence.clone(), peers.clone());
            let sender = senders.spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    // A beat later than the peer timeout is worthless; one that
                    // fails is simply missed, as a silent peer's would be.
                    let _ = peers.send_beat(peer, quiescence.beat_for(peer), quiescence.timing.peer_timeout).await;
                }
            });
            beating.insert(peer, sender);
        }
        // Reap the senders aborted above.
        while senders.try_join_next().is_some() {}
        quiescence.check(&groups).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn timing() -> QuietTiming {
        QuietTiming {
            quiesce_after: Some(Duration::from_secs(2)),
            beat_interval: Duration::from_millis(100),
            peer_timeout: Duration::from_secs(1),
        }
    }

    /// The clock samples the engine measures reach the node's cluster clock.
    #[tokio::test]
    async fn beats_both_ways_measure_a_peers_clock() {
        let (clock_1, clock_2) = (ClusterClock::new(3), ClusterClock::new(3));
        let q1 = Quiescence::new(1, timing(), clock_1.clone());
        let q2 = Quiescence::new(2, timing(), clock_2.clone());
        let groups = Groups::default();
        // A beat that echoes nothing yet measures nothing.
        q2.on_beat(&q1.beat_for(2), &groups).await;
        assert_eq!(clock_2.now().fresh_peers, 0);
        // Node 2's beat echoes node 1's: node 1 knows the round trip.
        q1.on_beat(&q2.beat_for(1), &groups).await;
        let seen = clock_1.now();
        assert_eq!(seen.fresh_peers, 1);
        assert!(seen.trusted, "two of three clocks agree");
        assert!(seen.local_offset_ms.abs() <= 1, "one process, one clock: {seen:?}");
        // An echo of another incarnation of node 1 is ignored.
        let mut stale = q2.beat_for(1);
        stale.echo_incarnation ^= 1;
        let other = ClusterClock::new(3);
        Quiescence::new(1, timing(), other.clone()).on_beat(&stale, &groups).await;
        assert_eq!(other.now().fresh_peers, 0);
    }
}
