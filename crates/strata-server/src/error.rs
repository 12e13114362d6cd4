//! Errors a request handler answers with, and their wire form.

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use strata_core::limits::BACKOFF_RETRY_AFTER_MS;
use strata_core::{ErrorCode, RetryClass};
use strata_proto::v1 as pb;
use strata_storage::TypeConfig;

#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub leader: Option<(u64, String)>,
    /// OFFSET_OUT_OF_RANGE: (log start, high watermark).
    pub range: Option<(u64, u64)>,
    pub retry_after_ms: u64,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let retry_after_ms = if code.retry_class() == RetryClass::BackOff { BACKOFF_RETRY_AFTER_MS } else { 0 };
        ApiError { code, message: message.into(), leader: None, range: None, retry_after_ms }
    }

    pub fn not_leader(leader: Option<(u64, String)>, what: &str) -> ApiError {
        let message = match &leader {
            Some((id, address)) => format!("this node does not lead {what}; node {id} at {address} does"),
            None => format!("this node does not lead {what} and knows no leader; refresh metadata and ask a replica"),
        };
        ApiError { leader, ..ApiError::new(ErrorCode::NotLeader, message) }
    }

    /// An error a peer answered with, as this node passes it on.
    pub fn from_proto(error: &pb::Error) -> ApiError {
        let code = ErrorCode::from_code(error.code).unwrap_or(ErrorCode::Internal);
        let leader = (error.leader_id != 0).then(|| (error.leader_id, error.leader_address.clone()));
        ApiError { leader, ..ApiError::new(code, error.message.clone()) }
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::Internal, message.to_string())
    }

    pub fn to_proto(&self) -> pb::Error {
        let retry = match self.code.retry_class() {
            RetryClass::Retry => pb::RetryClass::Retry,
            RetryClass::RefreshMetadata => pb::RetryClass::RefreshMetadata,
            RetryClass::BackOff => pb::RetryClass::BackOff,
            RetryClass::Fatal => pb::RetryClass::Fatal,
        };
        let (leader_id, leader_address) = self.leader.clone().unwrap_or_default();
        let (log_start_offset, high_watermark) = self.range.unwrap_or_default();
        pb::Error {
            code: self.code.code(),
            name: self.code.name().to_string(),
            message: format!("{}: {}", self.message, self.code.help()),
            retry: retry as i32,
            leader_id,
            leader_address,
            log_start_offset,
            high_watermark,
            retry_after_ms: self.retry_after_ms,
        }
    }

    fn from_forward(forward: &ForwardToLeader<TypeConfig>, what: &str) -> ApiError {
        match (forward.leader_id, &forward.leader_node) {
            (Some(id), Some(node)) => ApiError::not_leader(Some((id, node.addr.clone())), what),
            _ => ApiError::new(ErrorCode::LeaderNotAvailable, format!("{what} has no leader right now")),
        }
    }

    /// Maps a failed Raft write of the group named by `what`.
    pub fn from_write(err: RaftError<TypeConfig, ClientWriteError<TypeConfig>>, what: &str) -> ApiError {
        match err {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => ApiError::from_forward(&forward, what),
            RaftError::APIError(other) => ApiError::new(ErrorCode::LeaderNotAvailable, format!("{what}: {other}")),
            RaftError::Fatal(fatal) => {
                ApiError::new(ErrorCode::PartitionNotReady, format!("{what} is stopped: {fatal}"))
            }
        }
    }
}
