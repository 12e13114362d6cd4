//! The one load generator of `strata bench` and the benchmark suite
//! (`scripts/bench`).
//!
//! A run has producers, each driving one [`Sink`] (one implementation per
//! system: Strata, etcd, RabbitMQ, NATS). A [`Schedule`] says how load is
//! offered:
//! - open loop (a fixed rate): record `i` of a producer has an intended send
//!   time `start + i / rate`, and its latency counts from that instant, not
//!   from when it actually went out, so a stalled system shows the whole
//!   stall in the percentiles instead of hiding it by slowing the sender
//!   (coordinated omission);
//! - closed loop (max rate): a record goes out as soon as the window of
//!   outstanding records has room, and its latency counts from then.
//!
//! A run has a lead-in, a warm-up, a measured window and a drain. Latencies
//! (HdrHistogram, microseconds, see [`summary`]) count the records whose
//! intended send time is inside the window; throughput counts the
//! acknowledgements that arrive inside it. Every value starts with a
//! [`Stamp`]: its intended send time (nanoseconds since the Unix epoch) and,
//! where asked for, its record id, so that readers can measure end-to-end
//! latency from the same origin and check which records are stored.
//!
//! Boundary: nothing of Strata below it (no client, wire, storage or Raft);
//! the suite builds it beside the peers' clients in a workspace of its own.

mod meter;
mod run;
pub mod schedule;
mod sink;
pub mod stamp;
pub mod summary;

pub use meter::{Interval, Meter, Outcome};
pub use run::Load;
pub use schedule::{Clock, Next, Phase, Schedule};
pub use sink::Sink;
pub use stamp::{Filler, Stamp};
pub use summary::{Percentiles, Rates};
