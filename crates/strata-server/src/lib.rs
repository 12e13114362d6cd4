//! A Strata node: the gRPC services for clients and peers, the Raft groups
//! the node hosts (the metadata group and its partition replicas), the
//! reconciler that follows the metadata state, and retention.
//!
//! Boundary: the only crate besides the client that speaks the wire format
//! (prost types); state machines and storage see domain types only.

mod advertise;
mod backpressure;
mod clock;
pub mod config;
mod coordinator;
mod elections;
mod error;
mod faults;
mod group_api;
mod groups;
mod leader_call;
mod leaders;
mod membership;
pub mod metrics;
mod network;
mod node;
mod quiesce;
mod reassign;
mod reconcile;
mod retention;
mod sequencer;
mod service;
mod startup;
mod transactions;

pub use config::{FileConfig, NodeConfig};
pub use startup::{run, StartError};
