//! The move throttle on the outgoing side: paces what this node sends to
//! replicas that are joining a partition (a move's new replicas), so a
//! partition move copies at most the cluster's `--throttle` rate from this
//! node, whatever the number of moves it leads.
//!
//! What is paced: the bytes of AppendEntries that carry entries and of
//! snapshot chunks, sent for group G to node N while the metadata state
//! has a reassignment of G that names N in `to` and not in `from`, until
//! the group's leader has found N caught up (`caught_up`, before the
//! voters change: from then on N is a live replica).
//! Heartbeats, votes and everything sent to the replicas a partition
//! already had are never paced: the live replicas' traffic (and so the
//! clients' commits) does not wait for the copy.
//!
//! One token bucket per node (`TokenBucket`): a message takes its bytes
//! from it whole, going into debt when the bucket holds less, and waits
//! until the debt is paid before it is sent; messages behind it wait for
//! theirs on top. So messages are never split, the bucket never needs to
//! hold a whole message, and the rate holds over any stretch longer than
//! one message. The bucket's clock is passed in, so its arithmetic is
//! tested without sleeping.
//!
//! The rate and the joining replicas follow the metadata state
//! (`MoveThrottle::follow`, called by the reassignment driver on every
//! node whenever the state changes). A change of the rate wakes every
//! waiting message, which then goes out at once: a rate change is rare
//! and made by an operator, and letting at most one message per move
//! through early keeps a throttle that was turned off from holding a copy
//! back for the old rate's wait.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use strata_core::limits::MOVE_THROTTLE_BURST;
use strata_state::MetadataState;
use tokio::sync::watch;

use crate::metrics::METRICS;

/// A token bucket over bytes with debt (see the module documentation).
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    bytes_per_sec: u64,
    /// Most tokens it holds: MOVE_THROTTLE_BURST at the rate.
    capacity: f64,
    /// Negative while in debt.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket at `bytes_per_sec` (more than 0).
    pub(crate) fn new(bytes_per_sec: u64, now: Instant) -> TokenBucket {
        assert!(bytes_per_sec > 0, "a token bucket needs a rate");
        let capacity = bytes_per_sec as f64 * MOVE_THROTTLE_BURST.as_secs_f64();
        TokenBucket { bytes_per_sec, capacity, tokens: capacity, updated: now }
    }

    pub(crate) fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Takes `bytes` at time `now` and answers how long their sender must
    /// wait before sending them: zero while the bucket holds them, else
    /// until it has refilled to no debt (this message's and that of the
    /// messages that took their bytes before it).
    pub(crate) fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        // A clock reading older than the last one (callers read it before
        // taking the lock) adds nothing.
        let elapsed = now.saturating_duration_since(self.updated);
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.bytes_per_sec as f64).min(self.capacity);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            // Measured from `updated`, the bucket's own latest reading.
            let wait = Duration::from_secs_f64(-self.tokens / self.bytes_per_sec as f64);
            (self.updated + wait).saturating_duration_since(now)
        }
    }
}

/// This node's move throttle; cheap to clone.
#[derive(Clone)]
pub struct MoveThrottle {
    inner: Arc<Inner>,
}

struct Inner {
    /// Whether any group has a joining replica: the common case (nothing
    /// moves) costs one atomic load per message.
    moving: AtomicBool,
    /// Per moving group, the nodes joining it.
    joining: RwLock<BTreeMap<u64, BTreeSet<u64>>>,
    /// (group, node) pairs of `joining` whose copy is done.
    caught_up: RwLock<BTreeSet<(u64, u64)>>,
    /// `None` when moves are not throttled.
    bucket: Mutex<Option<TokenBucket>>,
    /// Bumped on every change of the rate, to wake waiting messages.
    rate_changed: watch::Sender<u64>,
}

impl Default for MoveThrottle {
    fn default() -> MoveThrottle {
        MoveThrottle {
            inner: Arc::new(Inner {
                moving: AtomicBool::new(false),
                joining: RwLock::default(),
                caught_up: RwLock::default(),
                bucket: Mutex::new(None),
                rate_changed: watch::Sender::new(0),
            }),
        }
    }
}

impl MoveThrottle {
    /// Takes the rate and the joining replicas from the metadata state.
    pub(crate) fn follow(&self, state: &MetadataState) {
        let joining: BTreeMap<u64, BTreeSet<u64>> = state
            .reassignments
            .iter()
            .map(|(group, r)| (*group, r.to.iter().filter(|n| !r.from.contains(n)).copied().collect()))
            .filter(|(_, nodes): &(u64, BTreeSet<u64>)| !nodes.is_empty())
            .collect();
        self.set(state.move_throttle_bytes_per_sec, joining);
    }

    fn set(&self, bytes_per_sec: Option<u64>, joining: BTreeMap<u64, BTreeSet<u64>>) {
        {
            let mut current = self.inner.joining.write().expect("joining replicas");
            if *current != joining {
                self.inner.moving.store(!joining.is_empty(), Ordering::Release);
                // A move that ended (or never had this node) forgets its marks.
                self.inner
                    .caught_up
                    .write()
                    .expect("caught-up replicas")
                    .retain(|(group, node)| joining.get(group).is_some_and(|n| n.contains(node)));
                *current = joining;
            }
        }
        let mut bucket = self.inner.bucket.lock().expect("move bucket");
        if bucket.as_ref().map(TokenBucket::bytes_per_sec) != bytes_per_sec {
            *bucket = bytes_per_sec.filter(|rate| *rate > 0).map(|rate| TokenBucket::new(rate, Instant::now()));
            self.inner.rate_changed.send_modify(|generation| *generation += 1);
            tracing::info!(bytes_per_sec, "move throttle changed");
        }
    }

    /// Marks `node` as caught up in group `group_id` (see the module
    /// documentation): nothing more to it is paced while this move lasts.
    /// A node that is not joining the group is left alone.
    pub(crate) fn caught_up(&self, group_id: u64, node: u64) {
        let joining = self.inner.joining.read().expect("joining replicas");
        if joining.get(&group_id).is_some_and(|n| n.contains(&node)) {
            self.inner.caught_up.write().expect("caught-up replicas").insert((group_id, node));
        }
    }

    /// Whether `target` is joining group `group_id` and still catching up.
    pub(crate) fn is_joining(&self, group_id: u64, target: u64) -> bool {
        self.inner.moving.load(Ordering::Acquire)
            && self.inner.joining.read().expect("joining replicas").get(&group_id).is_some_and(|n| n.contains(&target))
            && !self.inner.caught_up.read().expect("caught-up replicas").contains(&(group_id, target))
    }

    /// Called before sending `bytes` of group `group_id`'s data to
    /// `target`: counts them when `target` is joining the group and, when
    /// moves are throttled, waits for their turn.
    pub(crate) async fn pace(&self, group_id: u64, target: u64, bytes: usize) {
        if !self.is_joining(group_id, target) {
            return;
        }
        METRICS.move_sent_bytes.add(bytes as u64);
        let mut rate_changed = self.inner.rate_changed.subscribe();
        let wait = match self.inner.bucket.lock().expect("move bucket").as_mut() {
            Some(bucket) => bucket.take(bytes as u64, Instant::now()),
            None => return,
        };
        if wait.is_zero() {
            return;
        }
        let started = Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = rate_changed.changed() => {}
        }
        METRICS.move_throttle_wait_us.add(started.elapsed().as_micros() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = 1_000_000;

    /// Equal within a microsecond (the bucket counts in floating point).
    #[track_caller]
    fn assert_near(wait: Duration, expected: Duration) {
        let gap = wait.abs_diff(expected);
        assert!(gap <= Duration::from_micros(1), "waited {wait:?}, expected {expected:?}");
    }

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_paces_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(RATE, t0);
        // A tenth of a second's worth goes at once.
        assert_eq!(bucket.take(100_000, t0), Duration::ZERO);
        // The next 500 kB wait half a second for their bytes; the 250 kB
        // after them wait behind them too.
        assert_near(bucket.take(500_000, t0), Duration::from_millis(500));
        assert_near(bucket.take(250_000, t0), Duration::from_millis(750));
        // Once that time has passed, the debt is paid and nothing is left.
        assert_near(bucket.take(1, t0 + Duration::from_millis(750)), Duration::from_micros(1));
    }

    #[test]
    fn a_message_larger_than_the_bucket_goes_whole_after_its_bytes_refilled() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(RATE, t0);
        assert_eq!(bucket.take(100_000, t0), Duration::ZERO);
        // 4 MB, forty times what the bucket holds: one message, sent once
        // the rate has paid for it.
        let first = bucket.take(4_000_000, t0);
        assert_near(first, Duration::from_secs(4));
        // A sender that waited its turn finds the bucket empty, not in debt.
        assert_near(bucket.take(0, t0 + first), Duration::ZERO);
    }

    #[test]
    fn an_idle_bucket_refills_only_to_its_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(RATE, t0);
        assert_eq!(bucket.take(100_000, t0), Duration::ZERO);
        // An hour idle buys a tenth of a second, not an hour.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(bucket.take(100_000, later), Duration::ZERO);
        assert_near(bucket.take(100_000, later), Duration::from_millis(100));
    }

    #[test]
    fn over_a_long_run_senders_that_wait_as_told_keep_to_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(RATE, t0);
        let mut now = t0;
        let mut sent = 0u64;
        // Messages of uneven sizes, each sent as soon as it may be.
        for i in 0..2000u64 {
            let bytes = 1_000 + (i * 7919) % 600_000;
            now += bucket.take(bytes, now);
            sent += bytes;
        }
        let elapsed = now.duration_since(t0).as_secs_f64();
        let rate = sent as f64 / elapsed;
        // The burst is the only excess, and it is small next to the run.
        let burst = RATE as f64 * MOVE_THROTTLE_BURST.as_secs_f64();
        assert!(rate <= RATE as f64 + burst / elapsed + 1.0, "{rate} B/s over {elapsed} s");
        assert!(rate >= RATE as f64 * 0.99, "{rate} B/s over {elapsed} s");
    }

    #[test]
    fn a_clock_reading_from_before_the_last_one_adds_nothing() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(RATE, t0 + Duration::from_secs(1));
        assert_eq!(bucket.take(100_000, t0 + Duration::from_secs(1)), Duration::ZERO);
        // Read before the bucket's latest reading: no refill, and the wait
        // counts from the latest reading.
        assert_near(bucket.take(100_000, t0), Duration::from_millis(1100));
    }

    fn moving(group: u64, from: &[u64], to: &[u64]) -> MetadataState {
        let mut state = MetadataState::default();
        state.reassignments.insert(
            group,
            strata_state::reassign::Reassignment {
                topic: "t".into(),
                partition: 0,
                from: from.to_vec(),
                to: to.to_vec(),
                started_ms: 0,
            },
        );
        state
    }

    #[test]
    fn only_replicas_joining_a_moving_group_are_paced() {
        let throttle = MoveThrottle::default();
        assert!(!throttle.is_joining(5, 4));
        throttle.follow(&moving(5, &[1, 2, 3], &[4, 2, 3]));
        assert!(throttle.is_joining(5, 4), "node 4 joins group 5");
        // Caught up: live from then on, also after the state is followed again.
        throttle.caught_up(5, 2);
        throttle.caught_up(5, 4);
        throttle.follow(&moving(5, &[1, 2, 3], &[4, 2, 3]));
        assert!(!throttle.is_joining(5, 4), "node 4 caught up");
        // The next move of the group that adds node 4 paces it again.
        throttle.follow(&MetadataState::default());
        throttle.follow(&moving(5, &[1, 2, 3], &[4, 2, 3]));
        assert!(throttle.is_joining(5, 4), "a new move forgets the old mark");
        for (group, node) in [(5, 1), (5, 2), (5, 3), (6, 4)] {
            assert!(!throttle.is_joining(group, node), "group {group} to node {node} is live traffic");
        }
        // An order-only or shrinking move has nobody joining.
        throttle.follow(&moving(5, &[1, 2, 3], &[2, 3]));
        assert!(!throttle.is_joining(5, 4));
        assert!(!throttle.inner.moving.load(Ordering::Acquire));
        throttle.follow(&MetadataState::default());
        assert!(!throttle.is_joining(5, 4), "the move ended");
    }

    #[tokio::test]
    async fn a_rate_change_wakes_a_waiting_message() {
        let throttle = MoveThrottle::default();
        let mut state = moving(5, &[1], &[2]);
        state.move_throttle_bytes_per_sec = Some(256 * 1024);
        throttle.follow(&state);
        // Far more than the bucket holds: it would wait about 40 s at this
        // rate.
        let waiting = tokio::spawn({
            let throttle = throttle.clone();
            async move { throttle.pace(5, 2, 10 << 20).await }
        });
        // Until it has taken its bytes (the bucket is in debt).
        let in_debt = || throttle.inner.bucket.lock().unwrap().as_ref().is_some_and(|b| b.tokens < 0.0);
        tokio::time::timeout(Duration::from_secs(10), async {
            while !in_debt() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the message takes its bytes");
        state.move_throttle_bytes_per_sec = None;
        // Off: the waiting message goes (the deadline only bounds a broken
        // implementation; it is not a measurement).
        throttle.follow(&state);
        tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("woken by the change").unwrap();
    }
}
