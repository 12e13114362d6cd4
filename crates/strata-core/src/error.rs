//! The registry of error codes a user can see. Codes are stable: a retired
//! code is never reused. Each has a retry class telling a client what to do.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_PARTITIONS_PER_TOPIC, MAX_REPLICATION_FACTOR, MAX_TOPIC_NAME_LEN};

/// What a client should do after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryClass {
    /// Retry at once.
    Retry,
    /// Refresh metadata, then retry.
    RefreshMetadata,
    /// Wait, then retry.
    BackOff,
    /// Do not retry.
    Fatal,
}

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $name:literal, $retry:ident, $help:expr;)*) => {
        /// A stable, user-visible error code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode { $($variant,)* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn code(self) -> u32 { match self { $(ErrorCode::$variant => $code,)* } }
            pub fn name(self) -> &'static str { match self { $(ErrorCode::$variant => $name,)* } }
            pub fn retry_class(self) -> RetryClass { match self { $(ErrorCode::$variant => RetryClass::$retry,)* } }
            /// What the user should do about it. Texts that name a bound are
            /// built from the limits module once, so they never disagree.
            pub fn help(self) -> &'static str {
                static HELP: LazyLock<Vec<String>> = LazyLock::new(|| vec![$($help.to_string(),)*]);
                &HELP[self as usize]
            }
            pub fn from_code(code: u32) -> Option<ErrorCode> {
                match code { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    UnknownTopic = 1, "UNKNOWN_TOPIC", RefreshMetadata,
        "create the topic first (strata topic create) or check its name";
    UnknownPartition = 2, "UNKNOWN_PARTITION", Fatal,
        "use a partition below the topic's partition count (strata topic describe)";
    NotLeader = 3, "NOT_LEADER", RefreshMetadata,
        "send the request to the leader named in the error, or refresh metadata";
    LeaderNotAvailable = 4, "LEADER_NOT_AVAILABLE", BackOff,
        "an election is in progress or a majority of replicas is down; retry shortly";
    OffsetOutOfRange = 5, "OFFSET_OUT_OF_RANGE", Fatal,
        "fetch from an offset inside [log_start_offset, high_watermark]";
    RecordTooLarge = 6, "RECORD_TOO_LARGE", Fatal,
        "split the batch or the record; the limits are in ARCHITECTURE.md";
    CorruptBatch = 7, "CORRUPT_BATCH", Fatal,
        "the batch failed its CRC-32C or layout check; rebuild it from the records";
    InvalidTopicName = 8, "INVALID_TOPIC_NAME", Fatal,
        format!("use 1-{MAX_TOPIC_NAME_LEN} characters from [a-zA-Z0-9._-], not '.' or '..'");
    TopicAlreadyExists = 9, "TOPIC_ALREADY_EXISTS", Fatal,
        "pick another name or delete the existing topic";
    InvalidRequest = 10, "INVALID_REQUEST", Fatal,
        "the request is malformed; check the fields named in the message";
    InvalidConfig = 11, "INVALID_CONFIG", Fatal,
        "use a known topic config key with a valid value (see README)";
    InvalidReplicationFactor = 12, "INVALID_REPLICATION_FACTOR", Fatal,
        format!("use a replication factor between 1 and the number of nodes (at most {MAX_REPLICATION_FACTOR})");
    InvalidPartitions = 13, "INVALID_PARTITIONS", Fatal,
        format!("use a partition count between 1 and {MAX_PARTITIONS_PER_TOPIC}");
    Timeout = 14, "TIMEOUT", Retry,
        "the outcome is unknown; retry (idempotent producers make this safe)";
    Busy = 15, "BUSY", BackOff,
        "the node is at a bound; wait retry_after_ms and retry";
    Internal = 16, "INTERNAL", BackOff,
        "an unexpected server error; check the node's log and retry";
    ClusterUnavailable = 17, "CLUSTER_UNAVAILABLE", BackOff,
        "the metadata group has no leader; check that a majority of nodes runs";
    PartitionNotReady = 18, "PARTITION_NOT_READY", BackOff,
        "the partition's replicas are still starting; retry shortly";
    OutOfOrderSequence = 19, "OUT_OF_ORDER_SEQUENCE", Fatal,
        "an idempotent producer skipped a sequence number; the client restarts the partition's sequence";
    ProducerFenced = 20, "PRODUCER_FENCED", Fatal,
        "a newer instance of this producer (same name, newer epoch) is running; stop this one";
    UnsupportedFeature = 21, "UNSUPPORTED_FEATURE", Fatal,
        "the batch uses a Kafka feature Strata does not implement yet (compression, transactions, control batches, LogAppendTime); send uncompressed batches with attributes 0";
    LimitReached = 22, "LIMIT_REACHED", Fatal,
        "a bound of the cluster was reached (the message names it; the bounds are in ARCHITECTURE.md); delete unused topics, add nodes or narrow the request";
    UnknownMemberId = 23, "UNKNOWN_MEMBER_ID", Fatal,
        "the group no longer knows this member (it left or its session timed out); drop its partitions and rejoin with member epoch 0";
    FencedMemberEpoch = 24, "FENCED_MEMBER_EPOCH", Fatal,
        "the member's epoch is not the one the group knows; drop every partition and rejoin with member epoch 0";
    StaleMemberEpoch = 25, "STALE_MEMBER_EPOCH", RefreshMetadata,
        "the member does not own the partition at this epoch; heartbeat for the current assignment, then commit only partitions it still owns";
    GroupIdNotFound = 26, "GROUP_ID_NOT_FOUND", Fatal,
        "check the group id (strata group list); a group exists once a member joins or offsets are committed";
    InvalidGroupId = 27, "INVALID_GROUP_ID", Fatal,
        "use a group id of 1-249 bytes without control characters";
    GroupNotEmpty = 28, "GROUP_NOT_EMPTY", Fatal,
        "the group has members; stop them (or wait for their session timeout) and retry";
    UnsupportedAssignor = 29, "UNSUPPORTED_ASSIGNOR", Fatal,
        "name a known assignor: uniform (the default) or range";
    UnreleasedInstanceId = 30, "UNRELEASED_INSTANCE_ID", BackOff,
        "another live member uses this instance id; stop it, or wait for its session timeout, and retry";
    ConcurrentTransactions = 31, "CONCURRENT_TRANSACTIONS", BackOff,
        "the transactional id's previous transaction is still finishing; retry shortly";
    InvalidTxnState = 32, "INVALID_TXN_STATE", Fatal,
        "the request does not fit the transaction's state (e.g. a commit with nothing sent); abort and begin again";
    TransactionTimedOut = 33, "TRANSACTION_TIMED_OUT", Fatal,
        "the transaction ran past its transaction_timeout and was aborted; initialise the producer again and retry it, or raise the timeout";
    TransactionAborted = 34, "TRANSACTION_ABORTED", Fatal,
        "an operator aborted the transaction; initialise the producer again and retry it";
    TransactionalIdNotFound = 35, "TRANSACTIONAL_ID_NOT_FOUND", Fatal,
        "initialise the producer (InitProducerId with this transactional id) before using it";
    UnstableOffsetCommit = 36, "UNSTABLE_OFFSET_COMMIT", BackOff,
        "a transaction has staged an offset for this partition and has not ended yet; retry once it commits or aborts";
    ReassignmentInProgress = 37, "REASSIGNMENT_IN_PROGRESS", Fatal,
        "the partition is already moving to other replicas; wait until it is done (strata cluster status), then reassign it again";
    NodeIdInUse = 38, "NODE_ID_IN_USE", Fatal,
        "another running node of the cluster has this node id; give this node an unused id (strata cluster status lists the ids)";
    ClusterIdMismatch = 39, "CLUSTER_ID_MISMATCH", Fatal,
        "the node's data belongs to another cluster; point it at its own cluster, or give it an empty data dir to join this one";
    UnknownNode = 40, "UNKNOWN_NODE", Fatal,
        "the node id is not a node of this cluster; strata cluster status lists its nodes";
    UnsafeMembershipChange = 41, "UNSAFE_MEMBERSHIP_CHANGE", Fatal,
        "the change would leave a partition without enough replicas or the metadata group without a majority; add or start nodes first";
    NodeRemoved = 42, "NODE_REMOVED", Fatal,
        "this node was removed from the cluster; empty its data dir to join it again as a new node";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let mut codes = HashSet::new();
        let mut names = HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(codes.insert(code.code()), "duplicate code {}", code.code());
            assert!(names.insert(code.name()), "duplicate name {}", code.name());
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
            assert!(code.code() != 0, "0 means success on the wire");
        }
        assert_eq!(ErrorCode::from_code(0), None);
    }

    #[test]
    fn help_texts_follow_the_variants_and_name_the_bounds() {
        for &code in ErrorCode::ALL {
            assert!(!code.help().is_empty(), "{} has no help", code.name());
        }
        assert!(ErrorCode::UnknownTopic.help().starts_with("create the topic"));
        assert!(ErrorCode::LimitReached.help().starts_with("a bound of the cluster"));
        assert!(ErrorCode::InvalidTopicName.help().contains(&MAX_TOPIC_NAME_LEN.to_string()));
        assert!(ErrorCode::InvalidPartitions.help().contains(&MAX_PARTITIONS_PER_TOPIC.to_string()));
    }
}
