//! Client errors, split by where they arose (server, client, transport) and
//! classified by what the caller should do next.

use std::time::Duration;

use strata_core::{ErrorCode, RetryClass};
use strata_proto::v1 as proto;

/// Extra fields a server error may carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorDetails {
    /// NOT_LEADER: the leader the answering node knows.
    pub leader_id: Option<u64>,
    pub leader_address: Option<String>,
    /// OFFSET_OUT_OF_RANGE: the valid range is `[log_start_offset, high_watermark]`.
    pub log_start_offset: u64,
    pub high_watermark: u64,
    /// Back-off errors: how long the server asks us to wait, 0 when it did not say.
    pub retry_after_ms: u64,
}

/// Everything a client call can fail with.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a registered error code.
    #[error("{}: {message}", code.name())]
    Server { code: ErrorCode, message: String, details: ErrorDetails },

    /// The server answered with a code this client does not know (a newer
    /// server); the wire's retry class says what to do.
    #[error("{name} (code {code}): {message}")]
    UnknownServerCode { code: u32, name: String, message: String, retry: RetryClass },

    /// Found by the client without asking a partition leader: the metadata
    /// says the topic or partition does not exist, a record is too large, a
    /// batch could not be encoded. Never retried.
    #[error("{}: {message}", code.name())]
    Local { code: ErrorCode, message: String },

    /// The request did not get an answer from the node (connection refused or
    /// reset, or a gRPC-level failure). The outcome of a write is unknown.
    #[error("transport error talking to {address}: {status:?}: {message}")]
    Transport { address: String, status: tonic::Code, message: String },

    /// No answer within the request timeout. The outcome of a write is unknown.
    #[error("TIMEOUT: no answer from {address} within {timeout_ms} ms; the outcome is unknown")]
    Timeout { address: String, timeout_ms: u64 },

    /// The producer retried a batch until its delivery timeout ran out.
    #[error("TIMEOUT: not delivered within {timeout_ms} ms{}", last_error_suffix(.last_error))]
    DeliveryTimeout { timeout_ms: u64, last_error: Option<Box<ClientError>> },

    /// An answer could not be decoded (a corrupt or unexpected fetch answer).
    #[error("cannot decode the answer of {address}: {message}")]
    Decode { address: String, message: String },

    /// The caller passed something unusable (an empty bootstrap list, a bad address).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The producer's background task is gone; nothing more can be sent.
    #[error("the producer is closed")]
    Closed,
}

fn last_error_suffix(last_error: &Option<Box<ClientError>>) -> String {
    match last_error {
        Some(error) => format!(" (last error: {error})"),
        None => String::new(),
    }
}

impl ClientError {
    /// Converts a wire error; `None` for an absent error or code 0 (success).
    pub(crate) fn from_wire(error: Option<proto::Error>) -> Option<ClientError> {
        let error = error?;
        if error.code == 0 {
            return None;
        }
        let details = ErrorDetails {
            leader_id: (error.leader_id != 0).then_some(error.leader_id),
            leader_address: (!error.leader_address.is_empty()).then(|| error.leader_address.clone()),
            log_start_offset: error.log_start_offset,
            high_watermark: error.high_watermark,
            retry_after_ms: error.retry_after_ms,
        };
        Some(match ErrorCode::from_code(error.code) {
            Some(code) => ClientError::Server { code, message: error.message, details },
            None => ClientError::UnknownServerCode {
                code: error.code,
                retry: wire_retry_class(error.retry),
                name: error.name,
                message: error.message,
            },
        })
    }

    /// Converts a gRPC status of a call to `address` that had `timeout`.
    pub(crate) fn from_status(address: &str, status: tonic::Status, timeout: Duration) -> ClientError {
        match status.code() {
            tonic::Code::DeadlineExceeded => {
                ClientError::Timeout { address: address.to_string(), timeout_ms: timeout.as_millis() as u64 }
            }
            code => ClientError::Transport {
                address: address.to_string(),
                status: code,
                message: status.message().to_string(),
            },
        }
    }

    pub(crate) fn local(code: ErrorCode, message: impl Into<String>) -> ClientError {
        ClientError::Local { code, message: message.into() }
    }

    /// The registered code, when there is one. A client-side timeout maps to
    /// `TIMEOUT` because it means the same thing: the outcome is unknown.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } | ClientError::Local { code, .. } => Some(*code),
            ClientError::Timeout { .. } | ClientError::DeliveryTimeout { .. } => Some(ErrorCode::Timeout),
            _ => None,
        }
    }

    /// What a caller should do next.
    ///
    /// Transport errors refresh metadata because the usual cause is a node
    /// that went down, and with it possibly a partition leader; gRPC codes
    /// that mean the request itself is wrong are fatal.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            ClientError::Server { code, .. } => code.retry_class(),
            ClientError::UnknownServerCode { retry, .. } => *retry,
            ClientError::Timeout { .. } => RetryClass::Retry,
            ClientError::Transport { status, .. } => match status {
                tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::Aborted
                | tonic::Code::Internal => RetryClass::RefreshMetadata,
                _ => RetryClass::Fatal,
            },
            ClientError::Local { .. }
            | ClientError::DeliveryTimeout { .. }
            | ClientError::Decode { .. }
            | ClientError::InvalidArgument(_)
            | ClientError::Closed => RetryClass::Fatal,
        }
    }

    /// True when trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retry_class() != RetryClass::Fatal
    }

    /// True when the request may have taken effect although it failed (a
    /// write may have been stored).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::Timeout { .. } | ClientError::Transport { .. } | ClientError::DeliveryTimeout { .. }
        ) || self.code() == Some(ErrorCode::Timeout)
    }

    /// What the user should do about it, from the error code registry.
    pub fn help(&self) -> Option<&'static str> {
        match self {
            ClientError::Transport { .. } => {
                Some("check that the node is running and reachable (strata cluster status)")
            }
            _ => self.code().map(ErrorCode::help),
        }
    }

    /// The help text, unless the message already says it (servers often
    /// end their messages with it): for showing errors to people.
    pub fn hint(&self) -> Option<&'static str> {
        self.help().filter(|help| !self.to_string().contains(help))
    }

    /// The extra fields of a server error.
    pub fn details(&self) -> Option<&ErrorDetails> {
        match self {
            ClientError::Server { details, .. } => Some(details),
            _ => None,
        }
    }

    /// How long the server asked us to wait before retrying, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.details().filter(|d| d.retry_after_ms > 0).map(|d| Duration::from_millis(d.retry_after_ms))
    }

    /// NOT_LEADER's hint: the leader's id and address, when the node knew them.
    pub fn leader_hint(&self) -> Option<(u64, &str)> {
        match self {
            ClientError::Server { code: ErrorCode::NotLeader, details, .. } => {
                Some((details.leader_id?, details.leader_address.as_deref()?))
            }
            _ => None,
        }
    }
}

fn wire_retry_class(retry: i32) -> RetryClass {
    match proto::RetryClass::try_from(retry) {
        Ok(proto::RetryClass::Retry) => RetryClass::Retry,
        Ok(proto::RetryClass::RefreshMetadata) => RetryClass::RefreshMetadata,
        Ok(proto::RetryClass::BackOff) => RetryClass::BackOff,
        // An unknown code without a class: retrying blindly could loop forever.
        Ok(proto::RetryClass::Fatal) | Ok(proto::RetryClass::Unspecified) | Err(_) => RetryClass::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(code: u32) -> proto::Error {
        proto::Error { code, name: "X".into(), message: "what happened".into(), ..Default::default() }
    }

    #[test]
    fn absent_error_and_code_zero_are_success() {
        assert!(ClientError::from_wire(None).is_none());
        assert!(ClientError::from_wire(Some(wire(0))).is_none());
    }

    #[test]
    fn every_registered_code_maps_to_server_error_with_its_retry_class() {
        for &code in ErrorCode::ALL {
            let error = ClientError::from_wire(Some(wire(code.code()))).expect("an error");
            assert_eq!(error.code(), Some(code));
            assert_eq!(error.retry_class(), code.retry_class());
            assert_eq!(error.help(), Some(code.help()));
            assert_eq!(error.hint(), Some(code.help()), "the message does not repeat it");
            let shown = error.to_string();
            assert!(shown.starts_with(code.name()), "{shown}");
            assert!(shown.contains("what happened"), "{shown}");
        }
    }

    #[test]
    fn not_leader_carries_leader_hint() {
        let mut error = wire(ErrorCode::NotLeader.code());
        error.leader_id = 2;
        error.leader_address = "127.0.0.1:7272".into();
        let error = ClientError::from_wire(Some(error)).unwrap();
        assert_eq!(error.leader_hint(), Some((2, "127.0.0.1:7272")));
        assert_eq!(error.retry_class(), RetryClass::RefreshMetadata);

        // Leader 0 means unknown: no hint.
        let unknown = ClientError::from_wire(Some(wire(ErrorCode::NotLeader.code()))).unwrap();
        assert_eq!(unknown.leader_hint(), None);
    }

    #[test]
    fn offset_out_of_range_and_back_off_details_survive() {
        let mut error = wire(ErrorCode::OffsetOutOfRange.code());
        error.log_start_offset = 5;
        error.high_watermark = 9;
        let error = ClientError::from_wire(Some(error)).unwrap();
        let details = error.details().unwrap();
        assert_eq!((details.log_start_offset, details.high_watermark), (5, 9));
        assert!(!error.is_retryable());

        let mut busy = wire(ErrorCode::Busy.code());
        busy.retry_after_ms = 250;
        let busy = ClientError::from_wire(Some(busy)).unwrap();
        assert_eq!(busy.retry_after(), Some(Duration::from_millis(250)));
        assert_eq!(busy.retry_class(), RetryClass::BackOff);
    }

    #[test]
    fn unknown_codes_use_the_wire_retry_class() {
        let mut error = wire(9999);
        error.retry = proto::RetryClass::BackOff as i32;
        let mapped = ClientError::from_wire(Some(error)).unwrap();
        assert!(matches!(mapped, ClientError::UnknownServerCode { code: 9999, .. }));
        assert_eq!(mapped.retry_class(), RetryClass::BackOff);
        assert_eq!(mapped.code(), None);

        let unclassified = ClientError::from_wire(Some(wire(9998))).unwrap();
        assert_eq!(unclassified.retry_class(), RetryClass::Fatal);
    }

    #[test]
    fn transport_and_timeout_classes() {
        let timeout = Duration::from_secs(1);
        let unavailable = ClientError::from_status("a", tonic::Status::unavailable("refused"), timeout);
        assert_eq!(unavailable.retry_class(), RetryClass::RefreshMetadata);
        assert!(unavailable.is_outcome_unknown());
        assert_eq!(unavailable.code(), None);

        let deadline = ClientError::from_status("a", tonic::Status::deadline_exceeded("slow"), timeout);
        assert!(matches!(deadline, ClientError::Timeout { timeout_ms: 1000, .. }));
        assert_eq!(deadline.code(), Some(ErrorCode::Timeout));
        assert_eq!(deadline.retry_class(), RetryClass::Retry);

        let too_big = ClientError::from_status("a", tonic::Status::resource_exhausted("too big"), timeout);
        assert_eq!(too_big.retry_class(), RetryClass::Fatal);

        let local = ClientError::local(ErrorCode::UnknownTopic, "no topic 't'");
        assert_eq!(local.retry_class(), RetryClass::Fatal, "local errors are never retried");
        assert_eq!(local.to_string(), "UNKNOWN_TOPIC: no topic 't'");
        let repeated = ClientError::local(ErrorCode::UnknownTopic, ErrorCode::UnknownTopic.help());
        assert_eq!(repeated.hint(), None, "no hint that repeats the message");
    }

    #[test]
    fn delivery_timeout_names_the_last_error() {
        let last = ClientError::local(ErrorCode::LeaderNotAvailable, "election");
        let error = ClientError::DeliveryTimeout { timeout_ms: 120_000, last_error: Some(Box::new(last)) };
        assert_eq!(error.code(), Some(ErrorCode::Timeout));
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            "TIMEOUT: not delivered within 120000 ms (last error: LEADER_NOT_AVAILABLE: election)"
        );
    }
}
