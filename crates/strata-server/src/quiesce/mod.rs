//! Quiet groups: an idle partition group stops its Raft timers, so a node
//! with a thousand idle partitions does almost nothing.
//!
//! Every Raft group runs its own ticker (five ticks per heartbeat interval)
//! and its leader sends heartbeats; with 1,000 groups per node that is tens
//! of thousands of wake-ups a second for no data. Instead each node sends one
//! liveness beat per peer per heartbeat interval (`NodeBeat`), and:
//!
//! - A leader whose group has been healthy for `quiesce_after` (same term,
//!   followers' nodes all beating, followers holding every entry or the
//!   last write younger than a peer timeout) lists the group as quiet in
//!   its beats. One election timeout later (so every follower has seen the
//!   list while heartbeats still flowed) it stops the group's ticker: no
//!   more ticks or heartbeats. Writes alone never keep a group awake: with
//!   a thousand partitions each written every few seconds, awake groups
//!   (fifty ticks a second each) were what saturated the nodes.
//! - A follower that sees a group listed by the node it knows as the
//!   group's leader, in the term it knows, stops its own ticker: it does not
//!   start an election while that leader's node keeps beating.
//! - A quiet group takes writes with its timers off: when the leader's last
//!   quorum acknowledgement is older than half a lease, the write sends one
//!   heartbeat round and waits for it (openraft refuses writes without a
//!   lease); entries reaching a quiet follower leave it quiet.
//! - What is not healthy wakes the group again: a follower still behind a
//!   peer timeout after the last write, a new term, a vote request, a
//!   follower node that stops beating or restarts, the leader no longer
//!   listing the group. A follower whose leader's node
//!   stops beating for `peer_timeout` starts its ticker, the first surviving
//!   replica at once and the others one election timeout apart, so they do
//!   not split the vote.
//!
//! Stopping timers never affects safety (Raft's safety does not rest on
//! timing); what this module must get right is liveness, and every way back
//! to running timers above is driven by a beat or its absence. The metadata
//! group never goes quiet.
//!
//! Layout:
//! - `engine.rs`: the rules, as a sans-IO state machine. Events go in (a
//!   beat received, a Raft message seen, a write, a periodic check with the
//!   time and what openraft's metrics say of the groups this node leads);
//!   commands come out (start or stop a group's ticker, send its heartbeats
//!   now) along with the beat to send each peer. No clock, lock, task or
//!   Raft handle inside: its tests drive it with a fake clock.
//! - `driver.rs`: the thin async side. It holds the engine under a mutex,
//!   reads openraft's metrics into the engine's views, applies its commands
//!   to the groups' Raft handles, sends the beats (through
//!   `network::outgoing`) and hears peers' traffic (as the
//!   `network::incoming::PeerTraffic` the transport reports to).
//!
//! Dependencies run one way: this module uses `network`; `network` knows
//! nothing of quiescence.

mod driver;
mod engine;

pub use driver::{run, Quiescence};
pub use engine::QuietTiming;
