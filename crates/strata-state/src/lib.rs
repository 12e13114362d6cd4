//! Strata's replicated state machines as plain Rust.
//!
//! A Raft entry carries a [`Command`]; applying it to a state yields a new
//! state and the effects the storage layer must write. Nothing here does I/O,
//! reads a clock or draws a random number: every replica that applies the
//! same entries reaches the same state.
//!
//! Boundary: must not depend on tokio, RocksDB, openraft or prost.
//! Invariant: iteration that reaches state only goes over ordered maps.

pub mod group;
pub mod members;
pub mod metadata;
pub mod partition;
pub mod producer;
pub mod reassign;
pub mod txn;

use serde::{Deserialize, Serialize};

pub use metadata::{MetaCommand, MetaResponse, MetadataState};
pub use partition::{KeyIndex, KeyedRecord, PartitionCommand, PartitionEffect, PartitionResponse, PartitionState};
pub use producer::{BatchRecord, ProducerEntry, ProducerTable};

/// The payload of a normal Raft entry. One type serves every group so that
/// one Raft type configuration and one peer transport carry them all; a
/// group only ever sees the variant of its kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Meta(MetaCommand),
    Partition(PartitionCommand),
}

impl Command {
    /// "metadata" or "partition": the kind of group the command is for.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Meta(_) => "metadata",
            Command::Partition(_) => "partition",
        }
    }
}

/// What applying a [`Command`] answers to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Response {
    /// Blank and membership entries answer nothing.
    #[default]
    None,
    Meta(MetaResponse),
    Partition(PartitionResponse),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Meta(cmd) => write!(f, "meta:{cmd:?}"),
            Command::Partition(PartitionCommand::Append { batch, keys, .. }) => {
                write!(f, "append:{}b:{}k", batch.len(), keys.len())
            }
            Command::Partition(cmd) => write!(f, "partition:{cmd:?}"),
        }
    }
}
