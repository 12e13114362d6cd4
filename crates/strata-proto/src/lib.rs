//! Generated wire types of Strata (`proto/strata/v1`).
//!
//! Boundary: this crate holds only generated code. Conversions to domain
//! types live next to the code that owns the domain type (server, client), so
//! nothing below the server or client layer depends on prost.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("strata.v1");
}

pub use v1::*;

/// The encoded `FileDescriptorSet` of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));
