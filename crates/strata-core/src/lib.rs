//! Domain vocabulary shared by every Strata crate.
//!
//! Boundary: no I/O, no async runtime, no wire (prost) types. Everything here
//! is plain data and pure functions, so state machines may depend on it;
//! the one exception, `time::now_ms`, is for drivers and clients only.

pub mod error;
pub mod limits;
pub mod metrics;
pub mod throttle;
pub mod time;
pub mod topic;

pub use error::{ErrorCode, RetryClass};

/// The record header that carries a record's idempotency key. A record whose
/// key was stored on its partition within the topic's `dedup.window` is not
/// stored again; the produce answer gives the original offset.
pub const IDEMPOTENCY_KEY_HEADER: &str = "strata.idempotency-key";
