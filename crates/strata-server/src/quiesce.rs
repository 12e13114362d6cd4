//! Quiet groups: an idle partition group stops its Raft timers, so a node
//! with a thousand idle partitions does almost nothing.
//!
//! Every Raft group runs its own ticker (five ticks per heartbeat interval)
//! and its leader sends heartbeats; with 1,000 groups per node that is tens
//! of thousands of wake-ups a second for no data. Instead each node sends one
//! liveness beat per peer per heartbeat interval (`NodeBeat`), and:
//!
//! - A leader whose group has taken no new entry for `quiesce_after`, whose
//!   followers have every entry and whose followers' nodes are all beating,
//!   lists the group as quiet in its beats. One election timeout later (so
//!   every follower has seen the list while heartbeats still flowed) it
//!   stops the group's ticker: no more heartbeats.
//! - A follower that sees a group listed by the node it knows as the
//!   group's leader, in the term it knows, stops its own ticker: it does not
//!   start an election while that leader's node keeps beating.
//! - Anything that is not quiet wakes the group again: a new entry (the
//!   leader's check sees the log grow, the follower receives entries), a
//!   vote request, a follower node that stops beating or restarts, the
//!   leader no longer listing the group. A follower whose leader's node
//!   stops beating for `peer_timeout` starts its ticker, the first surviving
//!   replica at once and the others one election timeout apart, so they do
//!   not split the vote.
//!
//! Stopping timers never affects safety (Raft's safety does not rest on
//! timing); what this module must get right is liveness, and every way back
//! to running timers above is driven by a beat or its absence. The metadata
//! group never goes quiet.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;
use strata_proto::v1::{NodeBeat, QuietGroup};
use strata_state::metadata::METADATA_GROUP_ID;

use crate::clock::ClusterClock;
use crate::groups::{GroupHandle, Groups};
use crate::network::incoming::{PeerTraffic, RaftMessage};
use crate::network::outgoing::PeerChannels;
use crate::node::local_wall_ms;

/// Timing of quiescence, from the node's Raft settings.
#[derive(Clone, Copy, Debug)]
pub struct QuietTiming {
    /// A led group idle this long goes quiet; `None` turns quiescence off.
    pub quiesce_after: Option<Duration>,
    /// How often beats go out (the heartbeat interval).
    pub beat_interval: Duration,
    /// A peer silent this long counts as down (the longest election timeout).
    pub peer_timeout: Duration,
}

/// What the leader side of a group should do after one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaderStep {
    /// Busy or not safe to quiet: timers run (wake it if it was quiet).
    Awake,
    /// Idle: list it in beats, timers still running.
    Announce,
    /// Listed for a full election timeout: stop its timers.
    TimersOff,
}

/// The leader-side state of one led group.
#[derive(Clone, Debug)]
struct Led {
    term: u64,
    last_log_index: Option<u64>,
    /// When the group was last seen busy (or became led).
    active_at: Instant,
    /// Set while the group is listed in beats.
    announced_at: Option<Instant>,
    timers_off: bool,
    /// When a write last woke the group (see `wake_for_write`).
    woken_at: Option<Instant>,
    /// The group's voters as of the last check: the peers its beats go to.
    voters: Vec<u64>,
}

/// Decides the next step of a led group. `idle` is true when nothing
/// changed since the last check, every follower has every entry and every
/// follower's node beats.
fn leader_step(led: &Led, idle: bool, now: Instant, timing: &QuietTiming) -> LeaderStep {
    let Some(after) = timing.quiesce_after else { return LeaderStep::Awake };
    if !idle || now.duration_since(led.active_at) < after {
        return LeaderStep::Awake;
    }
    match led.announced_at {
        Some(at) if now.duration_since(at) >= timing.peer_timeout => LeaderStep::TimersOff,
        _ => LeaderStep::Announce,
    }
}

/// When a follower of a group whose leader's node went silent should start
/// its timers: the first surviving replica (by id) at once, the next one
/// election timeout later, and so on.
fn wake_delay(me: u64, leader: u64, voters: &[u64], timing: &QuietTiming) -> Duration {
    let rank = voters.iter().filter(|id| **id != leader && **id < me).count() as u32;
    timing.peer_timeout * rank
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    last_heard: Instant,
    incarnation: u64,
    /// The latest beat from the peer, for the echo in beats to it (clock
    /// estimation): its monotonic reading and when it arrived here.
    beat_monotonic_us: u64,
    beat_received_at: Instant,
}

#[derive(Default)]
struct State {
    peers: HashMap<u64, Peer>,
    /// Peers that came back (first beat after silence, or a new process):
    /// quiet groups they replicate wake up so they hear heartbeats at once.
    returned: HashSet<u64>,
    led: HashMap<u64, Led>,
    /// Quiet groups this node follows: group -> leader node.
    following: HashMap<u64, u64>,
    /// Followed groups waiting to start their timers (see `wake_delay`).
    waking: HashMap<u64, Instant>,
    last_check: Option<Instant>,
}

/// Quiescence of this node's groups; cheap to clone.
#[derive(Clone)]
pub struct Quiescence {
    node_id: u64,
    incarnation: u64,
    timing: QuietTiming,
    state: Arc<Mutex<State>>,
    /// Peers' clock offsets, measured over the beats.
    clock: ClusterClock,
    /// Origin of the monotonic readings beats carry.
    started: Instant,
}

impl Quiescence {
    pub fn new(node_id: u64, timing: QuietTiming, clock: ClusterClock) -> Quiescence {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let incarnation = (nanos as u64) ^ ((std::process::id() as u64) << 32);
        Quiescence { node_id, incarnation, timing, state: Arc::default(), clock, started: Instant::now() }
    }

    /// This process's monotonic clock in µs, never 0 (0 means "no beat").
    fn monotonic_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64 + 1
    }

    fn peer_alive(&self, state: &State, peer: u64, now: Instant) -> bool {
        state.peers.get(&peer).is_some_and(|p| now.duration_since(p.last_heard) < self.timing.peer_timeout)
    }

    /// Groups this node leads that are listed as quiet (for metrics).
    pub fn quiet_led(&self) -> HashSet<u64> {
        let state = self.state.lock().expect("lock");
        state.led.iter().filter(|(_, led)| led.announced_at.is_some()).map(|(group, _)| *group).collect()
    }

    /// Groups whose timers are stopped on this node, led or followed.
    pub fn timers_off(&self) -> u64 {
        let state = self.state.lock().expect("lock");
        let led = state.led.values().filter(|led| led.timers_off).count();
        (led + state.following.len() + state.waking.len()) as u64
    }

    /// The beat for `peer`: the quiet groups this node leads that `peer`
    /// replicates.
    fn beat_for(&self, peer: u64) -> NodeBeat {
        let state = self.state.lock().expect("lock");
        let quiet = state
            .led
            .iter()
            .filter(|(_, led)| led.announced_at.is_some() && led.voters.contains(&peer))
            .map(|(group_id, led)| QuietGroup { group_id: *group_id, term: led.term })
            .collect();
        let now = Instant::now();
        let echo = state.peers.get(&peer);
        NodeBeat {
            from_node: self.node_id,
            incarnation: self.incarnation,
            quiet,
            wall_ms: local_wall_ms(),
            monotonic_us: self.monotonic_us(now),
            echo_monotonic_us: echo.map_or(0, |p| p.beat_monotonic_us),
            echo_incarnation: echo.map_or(0, |p| p.incarnation),
            echo_held_us: echo.map_or(0, |p| now.saturating_duration_since(p.beat_received_at).as_micros() as u64),
        }
    }

    /// A clock sample from a beat that echoes one of ours: the round trip
    /// (our monotonic time since our beat left, minus the time the peer
    /// held it) and the peer's wall clock now, its reading when it sent
    /// plus half the round trip.
    fn clock_sample(&self, beat: &NodeBeat, now: Instant) -> Option<(i64, Duration)> {
        if beat.echo_incarnation != self.incarnation || beat.echo_monotonic_us == 0 || beat.wall_ms == 0 {
            return None;
        }
        // (Held time and our readings are truncated to µs: a round trip
        // of a few µs may come out a µs below zero.)
        let rtt_us = self.monotonic_us(now).checked_sub(beat.echo_monotonic_us)?.saturating_sub(beat.echo_held_us);
        let peer_wall_ms = beat.wall_ms as i64 + (rtt_us / 2_000) as i64;
        Some((peer_wall_ms, Duration::from_micros(rtt_us)))
    }

    /// Handles a beat from a peer.
    pub fn on_beat(&self, beat: &NodeBeat, groups: &Groups) {
        let now = Instant::now();
        let from = beat.from_node;
        let listed: HashMap<u64, u64> = beat.quiet.iter().map(|q| (q.group_id, q.term)).collect();
        let mut to_quiet = Vec::new();
        {
            let mut state = self.state.lock().expect("lock");
            let back = match state.peers.get(&from) {
                None => true,
                Some(peer) => {
                    peer.incarnation != beat.incarnation
                        || now.duration_since(peer.last_heard) >= self.timing.peer_timeout
                }
            };
            if back {
                state.returned.insert(from);
            }
            let peer = Peer {
                last_heard: now,
                incarnation: beat.incarnation,
                beat_monotonic_us: beat.monotonic_us,
                beat_received_at: now,
            };
            state.peers.insert(from, peer);
            if let Some((peer_wall_ms, rtt)) = self.clock_sample(beat, now) {
                self.clock.record(from, peer_wall_ms, rtt);
            }
            // Followed groups that this leader no longer lists wake up.
            let dropped: Vec<u64> = state
                .following
                .iter()
                .filter(|(group, leader)| **leader == from && !listed.contains_key(group))
                .map(|(group, _)| *group)
                .collect();
            // Not at once: the leader woke the group and sent a heartbeat,
            // which may still be on its way; timers started before it
            // lands would find the lease long expired and call an election.
            for group in dropped {
                state.following.remove(&group);
                tracing::debug!(group, leader = from, "leader no longer lists the group as quiet; timers on soon");
                state.waking.insert(group, now + self.timing.beat_interval * 2);
            }
            for (group, term) in &listed {
                if state.following.contains_key(group) {
                    continue;
                }
                to_quiet.push((*group, *term));
            }
        }
        for (group, term) in to_quiet {
            let Some(handle) = groups.get(group) else { continue };
            let follows = {
                let receiver = handle.raft.metrics();
                let metrics = receiver.borrow_watched();
                metrics.state == ServerState::Follower
                    && metrics.current_leader == Some(from)
                    && metrics.current_term == term
            };
            if !follows {
                continue;
            }
            let mut state = self.state.lock().expect("lock");
            state.waking.remove(&group);
            state.following.insert(group, from);
            tracing::debug!(group, leader = from, term, "leader lists the group as quiet; timers off");
            handle.raft.runtime_config().tick(false);
        }
    }

    /// A Raft message for `group` arrived from a peer. Entries and votes wake
    /// a quiet follower; an empty heartbeat does not (the leader's timers run
    /// while it announces, and those heartbeats must not undo the quiet).
    pub fn on_raft_message(&self, group: u64, wakes: bool, groups: &Groups) {
        if !wakes {
            return;
        }
        let was_quiet = {
            let mut state = self.state.lock().expect("lock");
            // Non-short-circuit: both maps lose the group.
            state.waking.remove(&group).is_some() | state.following.remove(&group).is_some()
        };
        if was_quiet {
            tracing::debug!(group, "raft message for a quiet group; timers on");
            if let Some(handle) = groups.get(group) {
                handle.raft.runtime_config().tick(true);
            }
        }
    }

    /// Readies a group this node leads for a write. Raft refuses writes
    /// from a leader without a fresh quorum acknowledgement (its lease), and
    /// a quiet leader sends no heartbeats, so its lease runs out: a quiet
    /// group starts its timers, sends a heartbeat at once and waits (up to
    /// a peer timeout) for the acknowledgement. Free for a group that is
    /// not quiet.
    pub async fn wake_for_write(&self, handle: &GroupHandle) {
        let now = Instant::now();
        // (first writer to wake the group, when it was woken)
        let (first, woken_at) = {
            let mut state = self.state.lock().expect("lock");
            match state.led.get_mut(&handle.group_id) {
                Some(led) if led.timers_off => {
                    led.timers_off = false;
                    led.announced_at = None;
                    led.active_at = now;
                    led.woken_at = Some(now);
                    (true, now)
                }
                // Writes that arrive while the first one waits for the
                // acknowledgement wait for it too: sent now, Raft would
                // refuse them for the same expired lease.
                Some(led) => match led.woken_at {
                    Some(at) if now.duration_since(at) < self.timing.peer_timeout => (false, at),
                    _ => return,
                },
                None => return,
            }
        };
        if first {
            tracing::debug!(group = handle.group_id, "write to a quiet group; timers on");
            handle.raft.runtime_config().tick(true);
            let _ = handle.raft.trigger().heartbeat().await;
        }
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
        let me = self.node_id;
        let handles: Vec<GroupHandle> = groups.all().into_iter().filter(|h| h.group_id != METADATA_GROUP_ID).collect();
        let mut heartbeat_now = Vec::new();
        let mut set_timers: Vec<(GroupHandle, bool)> = Vec::new();
        {
            let mut state = self.state.lock().expect("lock");
            // This node itself stalled (paused, starved of CPU): its peers'
            // silence says nothing, since it was not listening. They get a
            // fresh timeout rather than a wave of elections.
            // Its quiet led groups wake up too: a new leader may have been
            // elected meanwhile, and only a heartbeat tells them.
            if state.last_check.is_some_and(|at| now.duration_since(at) >= self.timing.peer_timeout) {
                tracing::info!("no group check for a peer timeout; peers get a fresh timeout");
                let peers: Vec<u64> = state.peers.keys().copied().collect();
                state.peers.values_mut().for_each(|peer| peer.last_heard = now);
                state.returned.extend(peers);
            }
            state.last_check = Some(now);
            let returned = std::mem::take(&mut state.returned);
            let mut still_led = HashSet::new();
            for handle in &handles {
                let group = handle.group_id;
                let Some(view) = leader_view(handle, me) else { continue };
                still_led.insert(group);
                let alive = view.voters.iter().filter(|id| **id != me).all(|id| self.peer_alive(&state, *id, now));
                let peer_returned = view.voters.iter().any(|id| returned.contains(id));
                let (term, last, matched) = (view.term, view.last_log_index, view.all_matched);
                let led = state.led.entry(group).or_insert_with(|| Led {
                    term,
                    last_log_index: last,
                    active_at: now,
                    announced_at: None,
                    timers_off: false,
                    woken_at: None,
                    voters: Vec::new(),
                });
                led.voters = view.voters;
                let idle = led.term == term && led.last_log_index == last && matched && alive && !peer_returned;
                if !idle {
                    led.term = term;
                    led.last_log_index = last;
                    led.active_at = now;
                }
                match leader_step(led, idle, now, &self.timing) {
                    LeaderStep::Awake => {
                        led.announced_at = None;
                        if led.timers_off {
                            led.timers_off = false;
                            set_timers.push((handle.clone(), true));
                            heartbeat_now.push(handle.clone());
                        }
                    }
                    LeaderStep::Announce => {
                        if led.announced_at.is_none() {
                            tracing::debug!(group, term, "led group is idle; listed as quiet");
                        }
                        led.announced_at.get_or_insert(now);
                    }
                    LeaderStep::TimersOff => {
                        if !led.timers_off {
                            led.timers_off = true;
                            set_timers.push((handle.clone(), false));
                        }
                    }
                }
            }
            // Groups no longer led here: their timers must run.
            let gone: Vec<u64> = state.led.keys().filter(|g| !still_led.contains(g)).copied().collect();
            for group in gone {
                // (A group already quiet under its new leader stays quiet.)
                if state.led.remove(&group).is_some_and(|led| led.timers_off) && !state.following.contains_key(&group) {
                    if let Some(handle) = handles.iter().find(|h| h.group_id == group) {
                        set_timers.push((handle.clone(), true));
                    }
                }
            }
            // Followed quiet groups whose leader's node went silent.
            let silent: Vec<(u64, u64)> = state
                .following
                .iter()
                .filter(|(_, leader)| !self.peer_alive(&state, **leader, now))
                .map(|(group, leader)| (*group, *leader))
                .collect();
            for (group, leader) in silent {
                state.following.remove(&group);
                let Some(handle) = handles.iter().find(|h| h.group_id == group) else { continue };
                let voters = voters(handle);
                let at = now + wake_delay(me, leader, &voters, &self.timing);
                tracing::info!(group, leader, "leader's node is silent; quiet group wakes up");
                state.waking.insert(group, at);
            }
            let due: Vec<u64> = state.waking.iter().filter(|(_, at)| **at <= now).map(|(g, _)| *g).collect();
            for group in due {
                state.waking.remove(&group);
                if let Some(handle) = handles.iter().find(|h| h.group_id == group) {
                    set_timers.push((handle.clone(), true));
                }
            }
            // Groups that stopped running here (deleted, moved).
            let hosted: HashSet<u64> = handles.iter().map(|h| h.group_id).collect();
            state.following.retain(|group, _| hosted.contains(group));
            state.waking.retain(|group, _| hosted.contains(group));
        }
        for (handle, on) in set_timers {
            tracing::debug!(group = handle.group_id, on, "group check sets timers");
            handle.raft.runtime_config().tick(on);
        }
        // A woken leader refreshes its followers' leases at once.
        for handle in heartbeat_now {
            let _ = handle.raft.trigger().heartbeat().await;
        }
    }
}

/// Quiescence hears peers' traffic from the transport's incoming side.
impl PeerTraffic for Quiescence {
    async fn beat(&self, beat: &NodeBeat, groups: &Groups) {
        self.on_beat(beat, groups)
    }

    async fn raft_message(&self, group_id: u64, message: RaftMessage, groups: &Groups) {
        // Entries, votes and snapshots wake a quiet follower; a bare
        // heartbeat does not.
        self.on_raft_message(group_id, message != RaftMessage::Heartbeat, groups)
    }
}

/// What the leader side needs of a group's Raft metrics; `None` when this
/// node does not lead it.
struct LeaderView {
    term: u64,
    last_log_index: Option<u64>,
    voters: Vec<u64>,
    /// Every follower has every entry of the log.
    all_matched: bool,
}

fn leader_view(handle: &GroupHandle, me: u64) -> Option<LeaderView> {
    let receiver = handle.raft.metrics();
    let metrics = receiver.borrow_watched();
    if metrics.state != ServerState::Leader {
        return None;
    }
    let voters: Vec<u64> = metrics.membership_config.voter_ids().collect();
    let last_log_index = metrics.last_log_index;
    let all_matched = voters.iter().filter(|id| **id != me).all(|id| {
        let matched = metrics.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index);
        matched == last_log_index
    });
    Some(LeaderView { term: metrics.current_term, last_log_index, voters, all_matched })
}

fn voters(handle: &GroupHandle) -> Vec<u64> {
    handle.raft.metrics().borrow_watched().membership_config.voter_ids().collect()
}

/// Sends this node's beats to every peer and checks its groups, every beat
/// interval, until aborted. Runs even with quiescence off: the beats are
/// what lets peers wake their quiet groups.
pub async fn run(quiescence: Quiescence, groups: Groups, peers: PeerChannels) {
    let me = quiescence.node_id;
    let interval = quiescence.timing.beat_interval;
    // Dropped (aborting the senders) when this task is aborted.
    let mut senders = tokio::task::JoinSet::new();
    for (peer, _) in peers.addresses().into_iter().filter(|(id, _)| *id != me) {
        let quiescence = quiescence.clone();
        let peers = peers.clone();
        senders.spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                // A beat later than the peer timeout is worthless; one that
                // fails is simply missed, as a silent peer's would be.
                let _ = peers.send_beat(peer, quiescence.beat_for(peer), quiescence.timing.peer_timeout).await;
            }
        });
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        quiescence.check(&groups).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> QuietTiming {
        QuietTiming {
            quiesce_after: Some(Duration::from_secs(2)),
            beat_interval: Duration::from_millis(100),
            peer_timeout: Duration::from_secs(1),
        }
    }

    fn led(active_at: Instant, announced_at: Option<Instant>) -> Led {
        Led {
            term: 1,
            last_log_index: Some(5),
            active_at,
            announced_at,
            timers_off: false,
            woken_at: None,
            voters: vec![1, 2, 3],
        }
    }

    #[test]
    fn a_led_group_goes_quiet_in_two_steps_and_only_when_idle() {
        let t0 = Instant::now();
        let timing = timing();
        let s = |d: u64| t0 + Duration::from_millis(d);
        // Busy, or idle for less than quiesce_after: awake.
        assert_eq!(leader_step(&led(t0, None), false, s(5_000), &timing), LeaderStep::Awake);
        assert_eq!(leader_step(&led(t0, None), true, s(1_999), &timing), LeaderStep::Awake);
        // Idle long enough: announced first, timers still running.
        assert_eq!(leader_step(&led(t0, None), true, s(2_000), &timing), LeaderStep::Announce);
        assert_eq!(leader_step(&led(t0, Some(s(2_000))), true, s(2_999), &timing), LeaderStep::Announce);
        // A full peer timeout after the announcement: timers off.
        assert_eq!(leader_step(&led(t0, Some(s(2_000))), true, s(3_000), &timing), LeaderStep::TimersOff);
        // Any activity wakes it, whatever step it had reached.
        assert_eq!(leader_step(&led(t0, Some(s(2_000))), false, s(9_000), &timing), LeaderStep::Awake);
        // Quiescence off: always awake.
        let off = QuietTiming { quiesce_after: None, ..timing };
        assert_eq!(leader_step(&led(t0, None), true, s(60_000), &off), LeaderStep::Awake);
    }

    #[test]
    fn followers_of_a_silent_leader_wake_one_election_timeout_apart() {
        let timing = timing();
        let voters = [1, 2, 3, 4, 5];
        assert_eq!(wake_delay(1, 3, &voters, &timing), Duration::ZERO);
        assert_eq!(wake_delay(2, 3, &voters, &timing), timing.peer_timeout);
        assert_eq!(wake_delay(4, 3, &voters, &timing), timing.peer_timeout * 2);
        assert_eq!(wake_delay(5, 3, &voters, &timing), timing.peer_timeout * 3);
        // The leader itself is not counted: with leader 1, node 2 goes first.
        assert_eq!(wake_delay(2, 1, &[1, 2, 3], &timing), Duration::ZERO);
        assert_eq!(wake_delay(3, 1, &[1, 2, 3], &timing), timing.peer_timeout);
    }

    #[test]
    fn beats_both_ways_measure_a_peers_clock() {
        let (clock_1, clock_2) = (ClusterClock::new(3), ClusterClock::new(3));
        let q1 = Quiescence::new(1, timing(), clock_1.clone());
        let q2 = Quiescence::new(2, timing(), clock_2.clone());
        let groups = Groups::default();
        // A beat that echoes nothing yet measures nothing.
        q2.on_beat(&q1.beat_for(2), &groups);
        assert_eq!(clock_2.now().fresh_peers, 0);
        // Node 2's beat echoes node 1's: node 1 knows the round trip.
        q1.on_beat(&q2.beat_for(1), &groups);
        let seen = clock_1.now();
        assert_eq!(seen.fresh_peers, 1);
        assert!(seen.trusted, "two of three clocks agree");
        assert!(seen.local_offset_ms.abs() <= 1, "one process, one clock: {seen:?}");
        // An echo of another incarnation of node 1 is ignored.
        let mut stale = q2.beat_for(1);
        stale.echo_incarnation ^= 1;
        let other = ClusterClock::new(3);
        Quiescence::new(1, timing(), other.clone()).on_beat(&stale, &groups);
        assert_eq!(other.now().fresh_peers, 0);
    }

    #[test]
    fn a_returning_peer_is_noticed_once() {
        let q = Quiescence::new(1, timing(), ClusterClock::new(3));
        let groups = Groups::default();
        let beat = |incarnation| NodeBeat { from_node: 2, incarnation, ..Default::default() };
        q.on_beat(&beat(7), &groups);
        assert!(q.state.lock().unwrap().returned.remove(&2), "a first beat is a return");
        q.on_beat(&beat(7), &groups);
        assert!(!q.state.lock().unwrap().returned.contains(&2), "a steady peer is not");
        q.on_beat(&beat(8), &groups);
        assert!(q.state.lock().unwrap().returned.contains(&2), "a restarted peer is");
        assert!(q.peer_alive(&q.state.lock().unwrap(), 2, Instant::now()));
        assert!(!q.peer_alive(&q.state.lock().unwrap(), 3, Instant::now()), "a peer never heard is down");
    }
}
