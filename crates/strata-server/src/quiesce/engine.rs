//! The quiescence engine: every rule of quiet groups (see the module doc in
//! `mod.rs`), as plain state and decisions.
//!
//! It never reads a clock, takes a lock, spawns a task or touches a Raft
//! handle. Each event carries the time (`now`) and whatever the rules need
//! of openraft's state as plain data (`LeaderView`, `FollowerView`, a
//! group's voters); each answer is a list of `Command`s for the driver
//! (`driver.rs`) to carry out, or the beat to send. The tests below run it
//! on a fake clock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use strata_proto::v1::{NodeBeat, QuietGroup};
use strata_state::metadata::METADATA_GROUP_ID;

use crate::network::incoming::RaftMessage;

/// Timing of quiescence, from the node's Raft settings.
#[derive(Clone, Copy, Debug)]
pub struct QuietTiming {
    /// A led group healthy this long goes quiet; `None` turns quiescence off.
    pub quiesce_after: Option<Duration>,
    /// How often beats go out (the heartbeat interval).
    pub beat_interval: Duration,
    /// A peer silent this long counts as down (the longest election timeout).
    pub peer_timeout: Duration,
}

/// What the driver must do to a group's Raft. Apply a list in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Start (`on`) or stop the group's ticker: its elections and heartbeats.
    Ticker { group: u64, on: bool },
    /// Send the group's heartbeats now: a woken leader refreshes its
    /// followers' leases at once instead of on its next tick.
    Heartbeat { group: u64 },
}

/// What the rules read of a group this node leads (openraft's metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderView {
    pub group_id: u64,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub voters: Vec<u64>,
    /// Per replication target: the index of its last matched entry (`None`
    /// before the first match).
    pub matched: Vec<(u64, Option<u64>)>,
}

/// What the rules read of a group this node follows when a peer lists it
/// as quiet (openraft's metrics); only for a group this node hosts as a
/// follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerView {
    pub leader: Option<u64>,
    pub term: u64,
}

/// A clock sample measured over a beat that echoes one of ours (see
/// `crate::clock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// The peer's wall clock now: its reading when it sent plus half the
    /// round trip.
    pub peer_wall_ms: i64,
    pub round_trip: Duration,
}

/// The answer to a beat received.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BeatOutcome {
    pub clock_sample: Option<ClockSample>,
    pub commands: Vec<Command>,
}

/// The answer to a write to a group that is quiet or being woken: the write
/// waits for a quorum acknowledgement newer than `woken_at`, up to a peer
/// timeout after it.
#[derive(Debug, PartialEq, Eq)]
pub struct WriteWake {
    pub woken_at: Instant,
    /// For the write that wakes the group: start its ticker and heartbeat.
    /// Empty for the writes that arrive while that one waits.
    pub commands: Vec<Command>,
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
    /// When the group was last seen unhealthy (or became led).
    active_at: Instant,
    /// Set while the group is listed in beats.
    announced_at: Option<Instant>,
    timers_off: bool,
    /// When a write to the quiet group last asked for a heartbeat (see
    /// `Engine::on_write`).
    woken_at: Option<Instant>,
    /// When the group last took a write.
    written_at: Option<Instant>,
    /// The group's voters as of the last check: the peers its beats go to.
    voters: Vec<u64>,
}

/// Decides the next step of a led group. `healthy` is true when its term
/// did not change since the last check, every follower's node beats (and
/// none restarted), and every follower has every entry or the group took a
/// write less than `peer_timeout` ago (its followers are catching up).
/// Writes alone never keep a group awake: a quiet group takes writes with
/// its timers off.
fn leader_step(led: &Led, healthy: bool, now: Instant, timing: &QuietTiming) -> LeaderStep {
    let Some(after) = timing.quiesce_after else { return LeaderStep::Awake };
    if !healthy || now.duration_since(led.active_at) < after {
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

/// The quiescence state of one node and the rules that move it.
pub struct Engine {
    node_id: u64,
    /// This process's identity in beats: a restarted node has a new one.
    incarnation: u64,
    timing: QuietTiming,
    /// Origin of the monotonic readings beats carry.
    origin: Instant,
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

impl Engine {
    /// `origin` is the zero of the monotonic readings in this node's beats.
    pub fn new(node_id: u64, incarnation: u64, timing: QuietTiming, origin: Instant) -> Engine {
        Engine {
            node_id,
            incarnation,
            timing,
            origin,
            peers: HashMap::new(),
            returned: HashSet::new(),
            led: HashMap::new(),
            following: HashMap::new(),
            waking: HashMap::new(),
            last_check: None,
        }
    }

    /// This process's monotonic clock in µs, never 0 (0 means "no beat").
    fn monotonic_us(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_micros() as u64 + 1
    }

    fn peer_alive(&self, peer: u64, now: Instant) -> bool {
        self.peers.get(&peer).is_some_and(|p| now.duration_since(p.last_heard) < self.timing.peer_timeout)
    }

    /// Groups this node leads that are listed as quiet (for metrics).
    pub fn quiet_led(&self) -> HashSet<u64> {
        self.led.iter().filter(|(_, led)| led.announced_at.is_some()).map(|(group, _)| *group).collect()
    }

    /// Groups whose timers are stopped on this node, led or followed.
    pub fn timers_off(&self) -> u64 {
        let led = self.led.values().filter(|led| led.timers_off).count();
        (led + self.following.len() + self.waking.len()) as u64
    }

    /// The beat for `peer` at `now`, with this node's wall clock reading:
    /// the quiet groups this node leads that `peer` replicates, and the echo
    /// of the peer's latest beat.
    pub fn beat_for(&self, peer: u64, now: Instant, wall_ms: u64) -> NodeBeat {
        let quiet = self
            .led
            .iter()
            .filter(|(_, led)| led.announced_at.is_some() && led.voters.contains(&peer))
            .map(|(group_id, led)| QuietGroup { group_id: *group_id, term: led.term })
            .collect();
        let echo = self.peers.get(&peer);
        NodeBeat {
            from_node: self.node_id,
            incarnation: self.incarnation,
            quiet,
            wall_ms,
            monotonic_us: self.monotonic_us(now),
            echo_monotonic_us: echo.map_or(0, |p| p.beat_monotonic_us),
            echo_incarnation: echo.map_or(0, |p| p.incarnation),
            echo_held_us: echo.map_or(0, |p| now.saturating_duration_since(p.beat_received_at).as_micros() as u64),
        }
    }

    /// A clock sample from a beat that echoes one of ours: the round trip
    /// (our monotonic time since our beat left, minus the time the peer
    /// held it) and the peer's wall clock now, its reading when it sent
    /// plus half the round trip. An echo of another incarnation of this
    /// node (a beat the previous process sent) measures nothing.
    fn clock_sample(&self, beat: &NodeBeat, now: Instant) -> Option<ClockSample> {
        if beat.echo_incarnation != self.incarnation || beat.echo_monotonic_us == 0 || beat.wall_ms == 0 {
            return None;
        }
        // (Held time and our readings are truncated to µs: a round trip
        // of a few µs may come out a µs below zero.)
        let rtt_us = self.monotonic_us(now).checked_sub(beat.echo_monotonic_us)?.saturating_sub(beat.echo_held_us);
        let peer_wall_ms = beat.wall_ms as i64 + (rtt_us / 2_000) as i64;
        Some(ClockSample { peer_wall_ms, round_trip: Duration::from_micros(rtt_us) })
    }

    /// A beat from a peer arrived at `now`. `follower_view` tells what this
    /// node knows of a group the beat lists as quiet; it is asked only for
    /// groups not already quiet here, and answers `None` for a group this
    /// node does not host as a follower.
    ///
    /// A peer counts as back (its quiet groups wake at the next check) at
    /// its first beat, after a silence of a peer timeout, and whenever its
    /// incarnation differs from the last one heard. Incarnations are not
    /// ordered, so a late beat of a peer's previous process counts as a
    /// change too: one needless wake, never a missed one.
    pub fn on_beat(
        &mut self,
        beat: &NodeBeat,
        now: Instant,
        mut follower_view: impl FnMut(u64) -> Option<FollowerView>,
    ) -> BeatOutcome {
        let from = beat.from_node;
        let listed: HashMap<u64, u64> = beat.quiet.iter().map(|q| (q.group_id, q.term)).collect();
        let back = match self.peers.get(&from) {
            None => true,
            Some(peer) => {
                peer.incarnation != beat.incarnation || now.duration_since(peer.last_heard) >= self.timing.peer_timeout
            }
        };
        if back {
            self.returned.insert(from);
        }
        let peer = Peer {
            last_heard: now,
            incarnation: beat.incarnation,
            beat_monotonic_us: beat.monotonic_us,
            beat_received_at: now,
        };
        self.peers.insert(from, peer);
        let clock_sample = self.clock_sample(beat, now);
        // Followed groups that this leader no longer lists wake up.
        let dropped: Vec<u64> = self
            .following
            .iter()
            .filter(|(group, leader)| **leader == from && !listed.contains_key(group))
            .map(|(group, _)| *group)
            .collect();
        // Not at once: the leader woke the group and sent a heartbeat,
        // which may still be on its way; timers started before it lands
        // would find the lease long expired and call an election.
        for group in dropped {
            self.following.remove(&group);
            tracing::debug!(group, leader = from, "leader no longer lists the group as quiet; timers on soon");
            self.waking.insert(group, now + self.timing.beat_interval * 2);
        }
        let mut commands = Vec::new();
        for (group, term) in listed {
            if self.following.contains_key(&group) {
                continue;
            }
            // Only the leader this node knows, in the term it knows, may
            // quiet it: a stale listing (an older term, a deposed leader)
            // does not.
            let follows = follower_view(group).is_some_and(|view| view.leader == Some(from) && view.term == term);
            if !follows {
                continue;
            }
            self.waking.remove(&group);
            self.following.insert(group, from);
            tracing::debug!(group, leader = from, term, "leader lists the group as quiet; timers off");
            commands.push(Command::Ticker { group, on: false });
        }
        BeatOutcome { clock_sample, commands }
    }

    /// A Raft message for `group` arrived from a peer. Votes and snapshots
    /// wake a quiet follower. Entries and heartbeats do not: a quiet leader
    /// takes writes with its timers off (and its timers run while it
    /// announces), and neither means anything is wrong. A follower whose
    /// leader really changed wakes by the vote it saw, or when the leader it
    /// follows stops listing the group or goes silent.
    pub fn on_raft_message(&mut self, group: u64, message: RaftMessage) -> Option<Command> {
        if matches!(message, RaftMessage::Heartbeat | RaftMessage::Entries) {
            return None;
        }
        // Non-short-circuit: both maps lose the group.
        let was_quiet = self.waking.remove(&group).is_some() | self.following.remove(&group).is_some();
        if !was_quiet {
            return None;
        }
        tracing::debug!(group, "raft message for a quiet group; timers on");
        Some(Command::Ticker { group, on: true })
    }

    /// A write to `group` at `now`; `lease_fresh` says whether the group's
    /// leader had a quorum acknowledgement recently (openraft's lease).
    /// Raft refuses writes from a leader without a fresh lease, and a quiet
    /// leader sends no heartbeats, so its lease runs out between writes. A
    /// write to a led group with its timers off and a stale lease sends one
    /// round of heartbeats (the timers stay off: the group stays quiet) and
    /// waits for the acknowledgement. Writes that arrive while it waits (up
    /// to a peer timeout) wait for it too: sent now, Raft would refuse them
    /// for the same expired lease. `None`: the write goes ahead.
    pub fn on_write(&mut self, group: u64, now: Instant, lease_fresh: bool) -> Option<WriteWake> {
        let led = self.led.get_mut(&group)?;
        led.written_at = Some(now);
        if !led.timers_off {
            return None;
        }
        match led.woken_at {
            Some(at) if now.duration_since(at) < self.timing.peer_timeout => {
                Some(WriteWake { woken_at: at, commands: Vec::new() })
            }
            _ if lease_fresh => None,
            _ => {
                led.woken_at = Some(now);
                tracing::debug!(group, "write to a quiet group; one heartbeat for the lease");
                Some(WriteWake { woken_at: now, commands: vec![Command::Heartbeat { group }] })
            }
        }
    }

    /// One check of this node's groups at `now` (every beat interval).
    /// `hosted` is every group running here, `led` what openraft says of
    /// those this node leads, and `voters_of` gives a hosted group's voters
    /// (asked only of quiet followed groups whose leader went silent). The
    /// commands put ticker changes before heartbeats.
    pub fn tick(
        &mut self,
        now: Instant,
        hosted: &[u64],
        led: Vec<LeaderView>,
        mut voters_of: impl FnMut(u64) -> Vec<u64>,
    ) -> Vec<Command> {
        let me = self.node_id;
        let timing = self.timing;
        let hosted: HashSet<u64> = hosted.iter().copied().filter(|g| *g != METADATA_GROUP_ID).collect();
        let mut tickers = Vec::new();
        let mut heartbeats = Vec::new();
        // This node itself stalled (paused, starved of CPU): its peers'
        // silence says nothing, since it was not listening. They get a
        // fresh timeout rather than a wave of elections.
        // Its quiet led groups wake up too: a new leader may have been
        // elected meanwhile, and only a heartbeat tells them.
        if self.last_check.is_some_and(|at| now.duration_since(at) >= timing.peer_timeout) {
            tracing::info!("no group check for a peer timeout; peers get a fresh timeout");
            let peers: Vec<u64> = self.peers.keys().copied().collect();
            self.peers.values_mut().for_each(|peer| peer.last_heard = now);
            self.returned.extend(peers);
        }
        self.last_check = Some(now);
        let returned = std::mem::take(&mut self.returned);
        let mut still_led = HashSet::new();
        for view in led {
            let group = view.group_id;
            if !hosted.contains(&group) {
                continue;
            }
            still_led.insert(group);
            let alive = view.voters.iter().filter(|id| **id != me).all(|id| self.peer_alive(*id, now));
            let peer_returned = view.voters.iter().any(|id| returned.contains(id));
            let matched_of = |id: u64| view.matched.iter().find(|(target, _)| *target == id).and_then(|(_, m)| *m);
            let matched = view.voters.iter().filter(|id| **id != me).all(|id| matched_of(*id) == view.last_log_index);
            let term = view.term;
            let led = self.led.entry(group).or_insert_with(|| Led {
                term,
                active_at: now,
                announced_at: None,
                timers_off: false,
                woken_at: None,
                written_at: None,
                voters: Vec::new(),
            });
            led.voters = view.voters;
            let catching_up = led.written_at.is_some_and(|at| now.duration_since(at) < timing.peer_timeout);
            let healthy = led.term == term && alive && !peer_returned && (matched || catching_up);
            if !healthy {
                led.term = term;
                led.active_at = now;
            }
            match leader_step(led, healthy, now, &timing) {
                LeaderStep::Awake => {
                    led.announced_at = None;
                    if led.timers_off {
                        led.timers_off = false;
                        tickers.push(Command::Ticker { group, on: true });
                        heartbeats.push(Command::Heartbeat { group });
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
                        tickers.push(Command::Ticker { group, on: false });
                    }
                }
            }
        }
        // Groups no longer led here: their timers must run.
        let gone: Vec<u64> = self.led.keys().filter(|g| !still_led.contains(g)).copied().collect();
        for group in gone {
            // (A group already quiet under its new leader stays quiet.)
            if self.led.remove(&group).is_some_and(|led| led.timers_off)
                && !self.following.contains_key(&group)
                && hosted.contains(&group)
            {
                tickers.push(Command::Ticker { group, on: true });
            }
        }
        // Followed quiet groups whose leader's node went silent.
        let silent: Vec<(u64, u64)> = self
            .following
            .iter()
            .filter(|(_, leader)| !self.peer_alive(**leader, now))
            .map(|(group, leader)| (*group, *leader))
            .collect();
        for (group, leader) in silent {
            self.following.remove(&group);
            if !hosted.contains(&group) {
                continue;
            }
            let at = now + wake_delay(me, leader, &voters_of(group), &timing);
            tracing::info!(group, leader, "leader's node is silent; quiet group wakes up");
            self.waking.insert(group, at);
        }
        let due: Vec<u64> = self.waking.iter().filter(|(_, at)| **at <= now).map(|(g, _)| *g).collect();
        for group in due {
            self.waking.remove(&group);
            if hosted.contains(&group) {
                tickers.push(Command::Ticker { group, on: true });
            }
        }
        // Groups that stopped running here (deleted, moved).
        self.following.retain(|group, _| hosted.contains(group));
        self.waking.retain(|group, _| hosted.contains(group));
        tickers.extend(heartbeats);
        tickers
    }
}

#[cfg(test)]
mod tests {
    //! Scenarios on a fake clock: a few nodes' engines exchange beats and
    //! run their checks every beat interval; the tests read the commands
    //! each engine gave, and when.

    use std::collections::BTreeMap;

    use super::*;

    /// The partition group of the scenarios, its leader's term and its last
    /// entry.
    const GROUP: u64 = 7;
    const TERM: u64 = 3;
    const LAST: u64 = 5;

    fn timing() -> QuietTiming {
        QuietTiming {
            quiesce_after: Some(Duration::from_secs(2)),
            beat_interval: Duration::from_millis(100),
            peer_timeout: Duration::from_secs(1),
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// One node: its engine and what its Raft groups would report.
    struct SimNode {
        engine: Engine,
        incarnation: u64,
        /// While false the node neither beats, hears beats nor checks
        /// (stopped, paused or partitioned away).
        up: bool,
        led: Vec<LeaderView>,
        follows: HashMap<u64, FollowerView>,
        hosted: Vec<u64>,
        voters: Vec<u64>,
        /// Each group's ticker as the commands left it (a Raft starts with
        /// its ticker on).
        ticking: HashMap<u64, bool>,
    }

    struct Sim {
        timing: QuietTiming,
        origin: Instant,
        now: Instant,
        nodes: BTreeMap<u64, SimNode>,
        /// Every command given: when, by which node.
        log: Vec<(Duration, u64, Command)>,
        next_incarnation: u64,
    }

    impl Sim {
        /// `voters` host GROUP and the metadata group; `leader` leads both
        /// in TERM with every entry on every follower.
        fn new(voters: &[u64], leader: u64) -> Sim {
            Sim::with_timing(voters, leader, timing())
        }

        fn with_timing(voters: &[u64], leader: u64, timing: QuietTiming) -> Sim {
            let origin = Instant::now();
            let mut sim =
                Sim { timing, origin, now: origin, nodes: BTreeMap::new(), log: Vec::new(), next_incarnation: 100 };
            for &id in voters {
                let view = |group_id| LeaderView {
                    group_id,
                    term: TERM,
                    last_log_index: Some(LAST),
                    voters: voters.to_vec(),
                    matched: voters.iter().filter(|v| **v != leader).map(|v| (*v, Some(LAST))).collect(),
                };
                let (led, follows) = if id == leader {
                    (vec![view(METADATA_GROUP_ID), view(GROUP)], HashMap::new())
                } else {
                    let follower = FollowerView { leader: Some(leader), term: TERM };
                    (Vec::new(), HashMap::from([(METADATA_GROUP_ID, follower), (GROUP, follower)]))
                };
                let node = SimNode {
                    engine: Engine::new(id, 0, timing, origin),
                    incarnation: 0,
                    up: true,
                    led,
                    follows,
                    hosted: vec![METADATA_GROUP_ID, GROUP],
                    voters: voters.to_vec(),
                    ticking: HashMap::new(),
                };
                sim.nodes.insert(id, node);
                sim.restart(id);
            }
            sim
        }

        /// Time since the start.
        fn at(&self) -> Duration {
            self.now - self.origin
        }

        fn node(&mut self, id: u64) -> &mut SimNode {
            self.nodes.get_mut(&id).expect("a node of the scenario")
        }

        /// The node's process starts again: a new engine, a new
        /// incarnation, every ticker on.
        fn restart(&mut self, id: u64) {
            self.next_incarnation += 1;
            let (timing, origin, incarnation) = (self.timing, self.now, self.next_incarnation);
            let node = self.node(id);
            node.engine = Engine::new(id, incarnation, timing, origin);
            node.incarnation = incarnation;
            node.ticking.clear();
        }

        fn record(&mut self, id: u64, commands: Vec<Command>) {
            let at = self.at();
            let node = self.node(id);
            for command in &commands {
                if let Command::Ticker { group, on } = *command {
                    node.ticking.insert(group, on);
                }
            }
            self.log.extend(commands.into_iter().map(|c| (at, id, c)));
        }

        /// The beat `from` sends `to` now.
        fn beat(&self, from: u64, to: u64) -> NodeBeat {
            let wall_ms = 1_700_000_000_000 + self.at().as_millis() as u64;
            self.nodes[&from].engine.beat_for(to, self.now, wall_ms)
        }

        /// `to` receives `beat` now.
        fn deliver(&mut self, to: u64, beat: &NodeBeat) -> BeatOutcome {
            let now = self.now;
            let node = self.node(to);
            let follows = node.follows.clone();
            let outcome = node.engine.on_beat(beat, now, |group| follows.get(&group).copied());
            self.record(to, outcome.commands.clone());
            outcome
        }

        /// One check of `id`, now.
        fn check(&mut self, id: u64) {
            let now = self.now;
            let node = self.node(id);
            let voters = node.voters.clone();
            let commands = node.engine.tick(now, &node.hosted, node.led.clone(), |_| voters.clone());
            self.record(id, commands);
        }

        /// One beat interval: every node that is up beats every other one
        /// that is up, then each checks its groups.
        fn step(&mut self) {
            let up: Vec<u64> = self.nodes.iter().filter(|(_, n)| n.up).map(|(id, _)| *id).collect();
            for &from in &up {
                for &to in up.iter().filter(|to| **to != from) {
                    let beat = self.beat(from, to);
                    self.deliver(to, &beat);
                }
            }
            for &id in &up {
                self.check(id);
            }
            self.now += self.timing.beat_interval;
        }

        /// Steps up to and including the step at `until` (since the start).
        fn run_until(&mut self, until: Duration) {
            while self.at() <= until {
                self.step();
            }
        }

        /// A Raft message for `group` reaches `id` now.
        fn message(&mut self, id: u64, group: u64, message: RaftMessage) -> Option<Command> {
            let command = self.node(id).engine.on_raft_message(group, message);
            self.record(id, command.into_iter().collect());
            command
        }

        /// A write to `group` on `id` now, whose leader's lease is stale.
        fn write(&mut self, id: u64, group: u64) -> Option<WriteWake> {
            let now = self.now;
            let wake = self.node(id).engine.on_write(group, now, false);
            if let Some(wake) = &wake {
                self.record(id, wake.commands.clone());
            }
            wake
        }

        /// When `id` gave `command`.
        fn when(&self, id: u64, command: Command) -> Vec<Duration> {
            self.log.iter().filter(|(_, node, c)| *node == id && *c == command).map(|(at, _, _)| *at).collect()
        }

        fn ticking(&self, id: u64, group: u64) -> bool {
            self.nodes[&id].ticking.get(&group).copied().unwrap_or(true)
        }

        fn lead(&mut self, id: u64, group: u64) -> &mut LeaderView {
            self.node(id).led.iter_mut().find(|v| v.group_id == group).expect("a led group")
        }
    }

    fn off(group: u64) -> Command {
        Command::Ticker { group, on: false }
    }

    fn on(group: u64) -> Command {
        Command::Ticker { group, on: true }
    }

    /// The commands the log holds for `group`, by anyone.
    fn commands_for(sim: &Sim, group: u64) -> Vec<(Duration, u64, Command)> {
        sim.log
            .iter()
            .filter(|(_, _, c)| match c {
                Command::Ticker { group: g, .. } | Command::Heartbeat { group: g } => *g == group,
            })
            .cloned()
            .collect()
    }

    #[test]
    fn a_leader_goes_quiet_in_two_steps_once_idle() {
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(1_900));
        assert!(sim.beat(1, 2).quiet.is_empty(), "idle for less than quiesce_after: not listed");
        assert!(sim.nodes[&1].engine.quiet_led().is_empty());
        // The first check (at 0) found its followers new; idle from there,
        // listed at 2 s, in the beats to the group's voters only.
        sim.run_until(ms(2_000));
        assert_eq!(sim.beat(1, 2).quiet, vec![QuietGroup { group_id: GROUP, term: TERM }]);
        assert!(sim.beat(1, 9).quiet.is_empty(), "node 9 does not replicate the group");
        assert_eq!(sim.nodes[&1].engine.quiet_led(), HashSet::from([GROUP]));
        // Its ticker stops one election timeout after the listing, when
        // every follower has heard it: the followers stop theirs at the
        // first beat that lists the group.
        sim.run_until(ms(10_000));
        assert_eq!(sim.when(1, off(GROUP)), vec![ms(3_000)]);
        assert_eq!(sim.when(2, off(GROUP)), vec![ms(2_100)]);
        assert_eq!(sim.when(3, off(GROUP)), vec![ms(2_100)]);
        // Then nothing more: no wake, no heartbeat.
        assert_eq!(commands_for(&sim, GROUP).len(), 3, "{:?}", sim.log);
        for id in [1, 2, 3] {
            assert!(!sim.ticking(id, GROUP));
            assert_eq!(sim.nodes[&id].engine.timers_off(), 1);
        }
        // The metadata group never goes quiet, however idle.
        assert!(commands_for(&sim, METADATA_GROUP_ID).is_empty());
        assert!(sim.beat(1, 2).quiet.iter().all(|q| q.group_id != METADATA_GROUP_ID));
    }

    #[test]
    fn a_leader_stays_awake_while_anything_is_not_quiet() {
        // A follower lacks an entry.
        let mut lagging = Sim::new(&[1, 2, 3], 1);
        lagging.lead(1, GROUP).matched = vec![(2, Some(LAST)), (3, Some(LAST - 1))];
        lagging.run_until(ms(10_000));
        assert!(lagging.log.is_empty(), "{:?}", lagging.log);
        // A follower's node never beats.
        let mut silent = Sim::new(&[1, 2, 3], 1);
        silent.node(3).up = false;
        silent.run_until(ms(10_000));
        assert!(silent.log.is_empty(), "{:?}", silent.log);
        // Quiescence is off.
        let mut off = Sim::with_timing(&[1, 2, 3], 1, QuietTiming { quiesce_after: None, ..timing() });
        off.run_until(ms(10_000));
        assert!(off.log.is_empty(), "{:?}", off.log);
        assert!(off.beat(1, 2).quiet.is_empty());
        // The log grows (entries that took no write through this node,
        // such as a new term's blank entry) and a follower stays behind.
        let mut behind = Sim::new(&[1, 2, 3], 1);
        for step in 1..100 {
            let view = behind.lead(1, GROUP);
            view.last_log_index = Some(LAST + step);
            view.matched = vec![(2, Some(LAST + step)), (3, Some(LAST + step - 1))];
            behind.step();
        }
        assert!(behind.log.is_empty(), "{:?}", behind.log);
    }

    #[test]
    fn a_busy_group_goes_quiet_while_its_followers_keep_up() {
        // A write every beat, each entry replicated by the next check, or
        // still catching up after the write: healthy, so quiet on the
        // usual schedule, writes or not.
        let mut sim = Sim::new(&[1, 2, 3], 1);
        for step in 1..=50 {
            sim.write(1, GROUP);
            let view = sim.lead(1, GROUP);
            view.last_log_index = Some(LAST + step);
            let behind = if step % 2 == 0 { 1 } else { 0 };
            view.matched = vec![(2, Some(LAST + step)), (3, Some(LAST + step - behind))];
            sim.step();
        }
        assert_eq!(sim.when(1, off(GROUP)), vec![ms(3_000)]);
        assert_eq!(sim.when(2, off(GROUP)), vec![ms(2_100)]);
        assert!(sim.when(1, on(GROUP)).is_empty() && sim.when(2, on(GROUP)).is_empty(), "{:?}", sim.log);
        assert_eq!(sim.beat(1, 2).quiet, vec![QuietGroup { group_id: GROUP, term: TERM }]);
        // A follower that falls behind and stays behind a peer timeout
        // after the last write wakes the group: ticker on, heartbeat now.
        let last = LAST + 51;
        let view = sim.lead(1, GROUP);
        view.last_log_index = Some(last);
        view.matched = vec![(2, Some(last)), (3, Some(last - 1))];
        let written = sim.at();
        sim.write(1, GROUP);
        let peer_timeout = timing().peer_timeout;
        sim.run_until(written + peer_timeout - ms(100));
        assert!(sim.when(1, on(GROUP)).is_empty(), "catching up for less than a peer timeout");
        sim.run_until(written + peer_timeout);
        assert_eq!(sim.when(1, on(GROUP)), vec![written + peer_timeout]);
    }

    #[test]
    fn a_follower_goes_quiet_for_its_leader_in_its_term_only() {
        let mut sim = Sim::new(&[1, 2, 3, 4], 1);
        // Node 3 knows a newer term; node 4 knows another leader.
        sim.node(3).follows.insert(GROUP, FollowerView { leader: Some(1), term: TERM + 1 });
        sim.node(4).follows.insert(GROUP, FollowerView { leader: Some(2), term: TERM });
        sim.run_until(ms(5_000));
        assert_eq!(sim.when(2, off(GROUP)), vec![ms(2_100)]);
        assert!(sim.when(3, off(GROUP)).is_empty(), "a listing in an older term");
        assert!(sim.when(4, off(GROUP)).is_empty(), "a listing by a node it does not follow");
        assert!(sim.ticking(3, GROUP) && sim.ticking(4, GROUP));
    }

    #[test]
    fn a_quiet_follower_wakes_on_votes_and_snapshots_but_not_on_heartbeats_or_entries() {
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(3_500));
        assert!(!sim.ticking(2, GROUP));
        // The leader's heartbeats (its timers run while it announces) do
        // not undo the quiet.
        assert_eq!(sim.message(2, GROUP, RaftMessage::Heartbeat), None);
        assert!(!sim.ticking(2, GROUP));
        // Nor do entries: a quiet leader takes writes with its timers off.
        assert_eq!(sim.message(2, GROUP, RaftMessage::Entries), None);
        assert!(!sim.ticking(2, GROUP));
        // Anything else wakes the group; the next beat (the group still
        // listed) quiets it again.
        for message in [RaftMessage::Vote, RaftMessage::PreVote, RaftMessage::Snapshot] {
            assert_eq!(sim.message(2, GROUP, message), Some(on(GROUP)), "{message:?}");
            assert_eq!(sim.message(2, GROUP, message), None, "{message:?}: already awake");
            sim.step();
            assert!(!sim.ticking(2, GROUP), "{message:?}");
        }
        // A message for a group that is not quiet changes nothing.
        assert_eq!(sim.message(2, METADATA_GROUP_ID, RaftMessage::Vote), None);
    }

    #[test]
    fn a_follower_wakes_two_beats_after_its_leader_stops_listing_the_group() {
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(4_900));
        // At 5 s an entry that no write here made (a blank entry, say)
        // finds node 3 behind: the leader wakes and heartbeats at once; its
        // beats stop listing the group from the next one (5.1 s). Node 3
        // catches up right after.
        let view = sim.lead(1, GROUP);
        view.last_log_index = Some(LAST + 1);
        view.matched = vec![(2, Some(LAST + 1)), (3, Some(LAST))];
        sim.step();
        sim.lead(1, GROUP).matched = vec![(2, Some(LAST + 1)), (3, Some(LAST + 1))];
        sim.run_until(ms(6_000));
        assert_eq!(sim.when(1, on(GROUP)), vec![ms(5_000)]);
        assert_eq!(sim.when(1, Command::Heartbeat { group: GROUP }), vec![ms(5_000)]);
        // Not at the beat: the leader's heartbeat may still be on its way,
        // and timers started before it lands would call an election.
        assert_eq!(sim.when(2, on(GROUP)), vec![ms(5_300)]);
        assert_eq!(sim.when(3, on(GROUP)), vec![ms(5_300)]);
        // Healthy again, the group goes quiet again: listed at 7 s, off at 8 s.
        sim.run_until(ms(10_000));
        assert_eq!(sim.when(1, off(GROUP)), vec![ms(3_000), ms(8_000)]);
        assert_eq!(sim.when(2, off(GROUP)), vec![ms(2_100), ms(7_100)]);
    }

    #[test]
    fn a_write_to_a_quiet_leader_renews_its_lease_and_leaves_it_quiet() {
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(3_500));
        assert!(!sim.ticking(1, GROUP));
        // Not led here, or not quiet: the write goes ahead.
        assert_eq!(sim.write(2, GROUP), None);
        assert_eq!(sim.write(1, METADATA_GROUP_ID), None);
        // The first write at 3.6 s, with a stale lease: one heartbeat round,
        // no ticker; the group stays listed.
        let woken_at = sim.now;
        let wake = sim.write(1, GROUP).expect("a quiet group renews its lease");
        assert_eq!(wake, WriteWake { woken_at, commands: vec![Command::Heartbeat { group: GROUP }] });
        assert!(!sim.ticking(1, GROUP));
        assert_eq!(sim.beat(1, 2).quiet, vec![QuietGroup { group_id: GROUP, term: TERM }]);
        // Writes while it waits for the quorum acknowledgement wait for it
        // too, up to a peer timeout after it asked. Later, a write with a
        // fresh lease goes ahead, and one with a stale lease asks again.
        let engine = &mut sim.node(1).engine;
        assert_eq!(engine.on_write(GROUP, woken_at + ms(999), false), Some(WriteWake { woken_at, commands: vec![] }));
        assert_eq!(engine.on_write(GROUP, woken_at + ms(1_000), true), None);
        let again = woken_at + ms(1_000);
        let heartbeat = vec![Command::Heartbeat { group: GROUP }];
        assert_eq!(engine.on_write(GROUP, again, false), Some(WriteWake { woken_at: again, commands: heartbeat }));
        // The entries reach the followers: nothing wakes, on any node.
        let view = sim.lead(1, GROUP);
        view.last_log_index = Some(LAST + 2);
        view.matched = vec![(2, Some(LAST + 2)), (3, Some(LAST + 2))];
        assert_eq!(sim.message(2, GROUP, RaftMessage::Entries), None);
        sim.run_until(ms(10_000));
        for id in [1, 2, 3] {
            assert!(sim.when(id, on(GROUP)).is_empty(), "{:?}", sim.log);
            assert!(!sim.ticking(id, GROUP));
        }
    }

    #[test]
    fn followers_of_a_silent_leader_wake_one_election_timeout_apart() {
        let mut sim = Sim::new(&[1, 2, 3, 4, 5], 3);
        sim.run_until(ms(3_500));
        for id in 1..=5 {
            assert!(!sim.ticking(id, GROUP), "node {id}");
        }
        // Node 3 (the leader) goes silent; its last beat left at 3.5 s.
        sim.node(3).up = false;
        sim.run_until(ms(10_000));
        // Its followers wake in id order, the first one peer timeout after
        // the last beat, the next ones one election timeout apart.
        assert_eq!(sim.when(1, on(GROUP)), vec![ms(4_500)]);
        assert_eq!(sim.when(2, on(GROUP)), vec![ms(5_500)]);
        assert_eq!(sim.when(4, on(GROUP)), vec![ms(6_500)]);
        assert_eq!(sim.when(5, on(GROUP)), vec![ms(7_500)]);
    }

    #[test]
    fn followers_wake_in_id_order_skipping_the_leader() {
        let timing = timing();
        let voters = [1, 2, 3, 4, 5];
        assert_eq!(wake_delay(1, 3, &voters, &timing), Duration::ZERO);
        assert_eq!(wake_delay(2, 3, &voters, &timing), timing.peer_timeout);
        assert_eq!(wake_delay(4, 3, &voters, &timing), timing.peer_timeout * 2);
        assert_eq!(wake_delay(5, 3, &voters, &timing), timing.peer_timeout * 3);
        assert_eq!(wake_delay(2, 1, &[1, 2, 3], &timing), Duration::ZERO);
        assert_eq!(wake_delay(3, 1, &[1, 2, 3], &timing), timing.peer_timeout);
    }

    #[test]
    fn a_node_that_missed_its_own_checks_gives_peers_a_fresh_timeout() {
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(3_500));
        assert!(!sim.ticking(2, GROUP));
        // Node 2 is paused from 3.6 s: it neither hears nor checks. (Its
        // peers notice: the leader wakes the group at 4.5 s.)
        sim.node(2).up = false;
        sim.run_until(ms(5_000));
        assert_eq!(sim.when(1, on(GROUP)), vec![ms(4_500)]);
        // Resumed at 5.1 s, it checks before it hears anyone: its leader's
        // silence says nothing, since node 2 was not listening. No wake.
        sim.check(2);
        assert!(!sim.ticking(2, GROUP));
        assert!(sim.when(2, on(GROUP)).is_empty());
        // A peer that stays silent after that fresh timeout is silent: it
        // wakes the group a peer timeout after the resume.
        let resumed = sim.at();
        for _ in 0..10 {
            sim.now += timing().beat_interval;
            sim.check(2);
        }
        assert_eq!(sim.when(2, on(GROUP)), vec![resumed + ms(1_000)]);
    }

    #[test]
    fn a_paused_peer_wakes_the_groups_it_replicates_and_a_short_gap_does_not() {
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(3_500));
        // Node 3's beats stop from 3.6 s and resume at 5.1 s.
        sim.node(3).up = false;
        sim.run_until(ms(5_000));
        sim.node(3).up = true;
        sim.run_until(ms(10_000));
        // Silent for a peer timeout: the leader wakes the group (and sends
        // heartbeats, which would reach node 3 when it resumes).
        assert_eq!(sim.when(1, on(GROUP)), vec![ms(4_500)]);
        assert_eq!(sim.when(1, Command::Heartbeat { group: GROUP }), vec![ms(4_500)]);
        // Back at 5.1 s: the group is idle from then, listed at 7.1 s, off
        // at 8.1 s.
        assert_eq!(sim.when(1, off(GROUP)), vec![ms(3_000), ms(8_100)]);

        // Beats missed for less than a peer timeout change nothing.
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(3_500));
        sim.node(3).up = false;
        sim.run_until(ms(4_300));
        sim.node(3).up = true;
        sim.run_until(ms(10_000));
        assert_eq!(commands_for(&sim, GROUP).len(), 3, "{:?}", sim.log);
    }

    #[test]
    fn a_restarted_peer_wakes_the_groups_it_replicates() {
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(3_500));
        // Node 2 restarts between two beats: no silence, a new incarnation.
        // Its Raft knows no leader until the leader's heartbeat arrives.
        sim.restart(2);
        sim.node(2).follows.insert(GROUP, FollowerView { leader: None, term: TERM });
        sim.step();
        sim.node(2).follows.insert(GROUP, FollowerView { leader: Some(1), term: TERM });
        sim.run_until(ms(10_000));
        // The leader wakes the group at once: the new process has lost the
        // quiet state and must hear heartbeats.
        assert_eq!(sim.when(1, on(GROUP)), vec![ms(3_600)]);
        assert_eq!(sim.when(1, Command::Heartbeat { group: GROUP }), vec![ms(3_600)]);
        // Quiet again later, on the new process too.
        assert_eq!(sim.when(1, off(GROUP)), vec![ms(3_000), ms(6_600)]);
        assert_eq!(sim.when(2, off(GROUP)), vec![ms(2_100), ms(5_700)]);
    }

    #[test]
    fn a_beat_from_an_old_incarnation_never_keeps_a_group_asleep() {
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(3_500));
        let stale = sim.beat(2, 1);
        sim.restart(2);
        sim.run_until(ms(7_000));
        assert_eq!(sim.when(1, off(GROUP)), vec![ms(3_000), ms(6_600)]);
        // A beat of node 2's previous process arrives late. Incarnations
        // are not ordered (a process's is made of its start time and pid),
        // so it counts as another restart: one needless wake, where
        // ignoring it could sleep through a real one.
        sim.deliver(1, &stale);
        sim.step();
        assert_eq!(sim.when(1, on(GROUP)), vec![ms(3_600), ms(7_100)]);

        // A late beat of the leader's previous process lists the group in
        // its old term; a follower that knows the new term keeps its
        // timers.
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(1_000));
        let mut stale = sim.beat(1, 2);
        stale.incarnation ^= 1;
        stale.quiet = vec![QuietGroup { group_id: GROUP, term: TERM }];
        sim.node(2).follows.insert(GROUP, FollowerView { leader: Some(1), term: TERM + 1 });
        assert!(sim.deliver(2, &stale).commands.is_empty());
        assert!(sim.ticking(2, GROUP));
    }

    #[test]
    fn a_quiet_leader_that_loses_the_group_starts_its_timers() {
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(3_500));
        assert!(!sim.ticking(1, GROUP));
        // Node 2 wins an election in the next term: node 1 no longer leads
        // the group and must time out like any follower again.
        let mut led = sim.node(1).led.clone();
        led.retain(|v| v.group_id == GROUP);
        led[0].term = TERM + 1;
        led[0].matched = vec![(1, Some(LAST)), (3, Some(LAST))];
        sim.node(1).led.retain(|v| v.group_id != GROUP);
        sim.node(2).led = led;
        for id in [1, 3] {
            sim.node(id).follows.insert(GROUP, FollowerView { leader: Some(2), term: TERM + 1 });
        }
        sim.step();
        assert_eq!(sim.when(1, on(GROUP)), vec![ms(3_600)]);
        // The new leader quiets the group in its turn.
        sim.run_until(ms(10_000));
        assert_eq!(sim.when(2, off(GROUP)), vec![ms(2_100), ms(6_600)]);
        assert_eq!(sim.when(1, off(GROUP)), vec![ms(3_000), ms(5_700)]);

        // A deposed leader that already follows the group quietly under
        // its new leader (the listing arrived first) keeps it quiet.
        let mut sim = Sim::new(&[1, 2, 3], 1);
        sim.run_until(ms(3_500));
        sim.node(1).led.retain(|v| v.group_id != GROUP);
        sim.node(1).follows.insert(GROUP, FollowerView { leader: Some(2), term: TERM + 1 });
        let mut listing = sim.beat(2, 1);
        listing.quiet = vec![QuietGroup { group_id: GROUP, term: TERM + 1 }];
        sim.deliver(1, &listing);
        sim.check(1);
        assert!(sim.when(1, on(GROUP)).is_empty());
        assert!(!sim.ticking(1, GROUP));
    }

    #[test]
    fn only_echoes_of_this_incarnation_measure_a_peers_clock() {
        let t0 = Instant::now();
        let mut one = Engine::new(1, 11, timing(), t0);
        let mut two = Engine::new(2, 22, timing(), t0 - ms(5_000));
        let nobody = |_| None;
        // Node 1's beat leaves at 0 and arrives at 10 ms; it echoes nothing.
        let beat = one.beat_for(2, t0, 1_000_000);
        assert_eq!(two.on_beat(&beat, t0 + ms(10), nobody).clock_sample, None);
        // Node 2 answers at 30 ms (held 20 ms); it arrives at 50 ms: a
        // 30 ms round trip, node 2's clock read at sending plus half of it.
        let answer = two.beat_for(1, t0 + ms(30), 2_000_000);
        assert_eq!(answer.echo_held_us, 20_000);
        let sample = one.on_beat(&answer, t0 + ms(50), nobody).clock_sample;
        assert_eq!(sample, Some(ClockSample { peer_wall_ms: 2_000_015, round_trip: ms(30) }));
        // The same echo reaching node 1's next process measures nothing:
        // its monotonic readings started elsewhere.
        let mut restarted = Engine::new(1, 12, timing(), t0 + ms(40));
        assert_eq!(restarted.on_beat(&answer, t0 + ms(50), nobody).clock_sample, None);
    }

    #[test]
    fn a_returning_peer_is_noticed_once() {
        let t0 = Instant::now();
        let mut engine = Engine::new(1, 1, timing(), t0);
        let beat = |incarnation| NodeBeat { from_node: 2, incarnation, ..Default::default() };
        engine.on_beat(&beat(7), t0, |_| None);
        assert!(engine.returned.remove(&2), "a first beat is a return");
        engine.on_beat(&beat(7), t0 + ms(900), |_| None);
        assert!(!engine.returned.contains(&2), "a steady peer is not");
        engine.on_beat(&beat(7), t0 + ms(1_900), |_| None);
        assert!(engine.returned.remove(&2), "a peer silent for a peer timeout is");
        engine.on_beat(&beat(8), t0 + ms(2_000), |_| None);
        assert!(engine.returned.contains(&2), "a restarted peer is");
        assert!(engine.peer_alive(2, t0 + ms(2_999)));
        assert!(!engine.peer_alive(2, t0 + ms(3_000)), "silent for a peer timeout");
        assert!(!engine.peer_alive(3, t0), "a peer never heard is down");
    }

    #[test]
    fn a_led_group_goes_quiet_in_two_steps_and_only_when_healthy() {
        let t0 = Instant::now();
        let timing = timing();
        let s = |d: u64| t0 + ms(d);
        let led = |active_at: Instant, announced_at: Option<Instant>| Led {
            term: 1,
            active_at,
            announced_at,
            timers_off: false,
            woken_at: None,
            written_at: None,
            voters: vec![1, 2, 3],
        };
        // Unhealthy, or healthy for less than quiesce_after: awake.
        assert_eq!(leader_step(&led(t0, None), false, s(5_000), &timing), LeaderStep::Awake);
        assert_eq!(leader_step(&led(t0, None), true, s(1_999), &timing), LeaderStep::Awake);
        // Healthy long enough: announced first, timers still running.
        assert_eq!(leader_step(&led(t0, None), true, s(2_000), &timing), LeaderStep::Announce);
        assert_eq!(leader_step(&led(t0, Some(s(2_000))), true, s(2_999), &timing), LeaderStep::Announce);
        // A full peer timeout after the announcement: timers off.
        assert_eq!(leader_step(&led(t0, Some(s(2_000))), true, s(3_000), &timing), LeaderStep::TimersOff);
        // Anything unhealthy wakes it, whatever step it had reached.
        assert_eq!(leader_step(&led(t0, Some(s(2_000))), false, s(9_000), &timing), LeaderStep::Awake);
        // Quiescence off: always awake.
        let off = QuietTiming { quiesce_after: None, ..timing };
        assert_eq!(leader_step(&led(t0, None), true, s(60_000), &off), LeaderStep::Awake);
    }
}
