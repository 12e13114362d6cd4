//! The peer transport: every Raft group of this node talks to its peers
//! through one gRPC channel (one HTTP/2 connection) per peer node; each
//! message names its group. Nodes also send each other one liveness beat
//! per heartbeat interval over the same channels (see `crate::quiesce`).
//!
//! Layout:
//! - `outgoing.rs`: what this node sends. `PeerChannels` (the channel to
//!   each peer), `Router` (openraft-multi's `GroupRouter`: Raft messages of
//!   every group, heartbeats batched per peer, snapshot streams) and
//!   `GroupNetworkFactory` (one group's Raft network), and beats.
//! - `throttle.rs`: `MoveThrottle`, which paces what `outgoing` sends to
//!   the replicas joining a partition (partition moves' `--throttle`).
//! - `incoming.rs`: what peers send here. `TransportService`, the
//!   `RaftTransport` gRPC service, which delivers messages to the groups and
//!   reports beats and message kinds to a `PeerTraffic` listener.
//!
//! Neither side knows of quiescence: it uses `outgoing` to send beats and
//! listens to `incoming` as its `PeerTraffic`.

pub mod incoming;
pub mod outgoing;
pub mod throttle;

pub use incoming::{ClusterCheck, TransportService, VoteGate};
pub use outgoing::{ClusterId, GroupNetworkFactory, PeerChannels, Router};

/// The wire form of a Raft call's answer (postcard): the group's answer,
/// or the text of its Raft's error. Both sides must agree on it, so it
/// stays a `String` error rather than a typed one.
type WireResult<T> = Result<T, String>;
