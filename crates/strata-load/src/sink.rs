//! What the load generator needs of a system.

use std::fmt::Display;
use std::future::Future;

use bytes::Bytes;

/// One producer's connection to a system under load: hands a record over
/// and gives a future of its acknowledgement. Each system has its own
/// (Strata in `strata bench` and the suite; etcd, RabbitMQ and NATS in the
/// suite).
pub trait Sink: Send + Sync + 'static {
    /// Resolves when the system acknowledged the record, or refused it.
    type Ack: Future<Output = Result<(), Self::Error>> + Send + 'static;
    /// Shown as the run's first error (with `{:#}`, so causes are kept).
    type Error: Display + Send + 'static;

    /// Hands record `id` (unique in the run; see [`crate::stamp::record_id`])
    /// over. Returns once the system (or the client's buffer) took it, so a
    /// full buffer slows the producer down.
    fn send(&self, id: u64, value: Bytes) -> impl Future<Output = Result<Self::Ack, Self::Error>> + Send;

    /// Sends whatever the client still holds back (a batching producer's
    /// open batches); returns when everything handed over is acknowledged
    /// or failed.
    fn flush(&self) -> impl Future<Output = ()> + Send;
}
