//! The Rust client of Strata: metadata cache and leader routing, a batching
//! producer, a consumer that reads assigned partitions by offset, and the
//! admin calls.
//!
//! Code map:
//! - [`Client`] (`client.rs`): a cheap-to-clone handle holding one lazily
//!   connected gRPC channel per node address and the metadata cache. It routes
//!   partition requests (produce, fetch, list offsets) to the leader and
//!   follows `NOT_LEADER` hints; admin calls go to any node.
//! - [`ClientError`] (`error.rs`): what went wrong and, through
//!   [`ClientError::retry_class`], what a caller should do next.
//! - [`Producer`] (`producer.rs`) with the pure [`accumulator`] that decides
//!   batching, in-flight limits and retry order; [`partitioner`] maps keys to
//!   partitions.
//! - [`Consumer`] (`consumer.rs`): long-poll fetches per assigned partition.
//! - Consumer group calls on [`Client`] (`group.rs`): the member heartbeat,
//!   offset commit and fetch, and the group admin calls, in domain types.
//! - [`GroupConsumer`] (`group_consumer.rs`): a member of a consumer group,
//!   heartbeating in the background and reading what the group assigns it,
//!   with auto-commit, seek, pause and resume.
//!
//! Invariants:
//! - Records of one partition are sent in the order `send` accepted them, and
//!   a retried batch is never overtaken by a batch sent after its failure (see
//!   [`accumulator`] for the exact guarantee).
//! - Every request has a deadline and every queue a bound: the producer's
//!   unsent records are bounded in bytes (`ProducerConfig::buffer_bytes`) and
//!   `send` waits when the bound is reached.
//! - A consumer never returns a record at or above the high watermark it was
//!   served with, and its position only moves past records it returned.
//!
//! Boundary: this crate is the only client-side code that sees prost types;
//! its public API speaks domain types (`strata_record::Record`, the structs
//! in `metadata.rs`). It must never depend on the server, storage or Raft
//! crates.

pub mod accumulator;
mod client;
mod consumer;
mod error;
mod group;
mod group_consumer;
mod metadata;
pub mod partitioner;
mod producer;
mod transaction;

pub use client::{
    Client, ClientConfig, FetchAnswer, IsolationLevel, ListedOffset, OffsetSpec, ProduceAnswer, ProducerId, ReplicaCopy,
};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartOffset};
pub use error::{ClientError, ErrorDetails};
pub use group::{
    CommitResult, CommittedOffset, FetchedOffset, GroupDescription, GroupHeartbeat, GroupHeartbeatAnswer, GroupListing,
    GroupMemberDescription, GroupPartitionDescription, GroupState, MemberState, OffsetToCommit, TopicPartitions,
    JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH,
};
pub use group_consumer::{GroupConsumer, GroupConsumerConfig, GroupEvent, OffsetReset, PendingCommit};
pub use metadata::{
    ClusterMetadata, ClusterStatus, NodeId, NodeStatus, PartitionDescription, PartitionMetadata, Reassignment,
    TopicDescription, TopicMetadata,
};
pub use producer::{Acks, DeliveryFuture, Producer, ProducerConfig, RecordMetadata};
pub use strata_core::throttle::ThrottleRate;
/// Milliseconds since the Unix epoch by this machine's wall clock (what
/// the producer stamps records with).
pub use strata_core::time::now_ms;
pub use strata_core::{ErrorCode, RetryClass, IDEMPOTENCY_KEY_HEADER};
pub use strata_record::{Bytes, Header, Record};
pub use transaction::{TransactionDescription, TransactionError, TransactionalConfig, TransactionalProducer};

/// Kafka RecordBatch v2, for callers of [`Client::produce_batch`] that build
/// batches themselves and of [`Client::read_replica`] that read them.
pub mod batch {
    pub use strata_record::{
        decode_records_from, encode_batch, encode_transactional_batch, read_header, BatchHeader, ProducerFields,
    };
}
