//! Domain vocabulary shared by every Strata crate.
//!
//! Boundary: no I/O, no async runtime, no wire (prost) types. Everything here
//! is plain data and pure functions, so state machines may depend on it.

pub mod error;
pub mod limits;
pub mod metrics;
pub mod topic;

pub use error::{ErrorCode, RetryClass};
