//! The one error type of the crate and its mapping to user-visible codes.

use strata_core::ErrorCode;

/// Why a batch was refused or could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The batch, one of its records, or its record count is over a bound of
    /// `strata_core::limits`. `what` names the measured quantity and its unit.
    #[error("{what} is {size}, over the limit of {limit}")]
    TooLarge { what: &'static str, size: usize, limit: usize },
    /// The bytes do not form a well-formed v2 batch (layout, length or CRC).
    #[error("corrupt batch: {0}")]
    Corrupt(String),
    /// The batch is well-formed but asks for something we refuse (an empty
    /// batch).
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// The batch uses a Kafka feature Strata does not implement yet:
    /// compression, transactions, control batches, LogAppendTime.
    #[error("unsupported batch: {0}")]
    Unsupported(String),
}

impl BatchError {
    /// The stable code a client sees for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BatchError::TooLarge { .. } => ErrorCode::RecordTooLarge,
            BatchError::Corrupt(_) => ErrorCode::CorruptBatch,
            BatchError::Invalid(_) => ErrorCode::InvalidRequest,
            BatchError::Unsupported(_) => ErrorCode::UnsupportedFeature,
        }
    }

    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        BatchError::Corrupt(msg.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_per_variant() {
        let too_large = BatchError::TooLarge { what: "record size in bytes", size: 2, limit: 1 };
        assert_eq!(too_large.code(), ErrorCode::RecordTooLarge);
        assert_eq!(BatchError::Corrupt("x".into()).code(), ErrorCode::CorruptBatch);
        assert_eq!(BatchError::Invalid("x".into()).code(), ErrorCode::InvalidRequest);
        assert_eq!(BatchError::Unsupported("x".into()).code(), ErrorCode::UnsupportedFeature);
        assert_eq!(too_large.to_string(), "record size in bytes is 2, over the limit of 1");
    }
}
