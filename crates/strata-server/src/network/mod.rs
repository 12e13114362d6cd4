//! The peer transport: every Raft group of this node talks to its peers
//! through two gRPC channels (two HTTP/2 connections, each over its own
//! TCP connection) per peer node, its two lanes; each message names its
//! group. Nodes also send each other one liveness beat per heartbeat
//! interval (see `crate::quiesce`).
//!
//! Lanes: the control lane carries what keeps leaders in place and
//! elections short (heartbeat batches, Vote, PreVote, TransferLeader, node
//! beats), the data lane everything else (AppendEntries with entries,
//! snapshot streams, client requests forwarded to a leader). A 4 MiB
//! AppendEntries or a snapshot stream fills its own connection's socket
//! buffers and HTTP/2 flow-control windows, never the control lane's.
//!
//! On the receiving side nothing is shared between the lanes either: the
//! gRPC server (tonic) runs every call on a task of its own, sets no
//! concurrent-stream limit, and `TransportService` holds no lock or
//! semaphore across a call. What a control message can still wait for is
//! its own group's Raft core, which handles that group's messages one at a
//! time (openraft's design), and, for a vote, its synced write to the
//! store: one RocksDB WAL, whose writes and fsyncs are serialised with the
//! data appends' group commit (`strata_storage`). A heartbeat batch is answered once every heartbeat in it is,
//! so one busy group's core delays the answer (not the delivery) of the
//! others in its batch (see `incoming.rs`).
//!
//! Layout:
//! - `outgoing.rs`: what this node sends. `PeerChannels` (each peer's two
//!   channels, by `Lane`), `Router` (openraft-multi's `GroupRouter`: Raft messages of
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
