//! Cluster time: this node's wall clock corrected by what its peers' clocks
//! say, so that one node whose clock runs fast or slow cannot stamp its
//! error into replicated state (a partition's clock, retention).
//!
//! Peers' offsets are measured over the node beats (see `quiesce`), NTP
//! style: a beat carries its sender's wall clock and echoes the latest
//! beat it received back, so the receiver of the echo knows the round trip
//! on its own monotonic clock and estimates the peer's wall clock at
//! receipt as the peer's reading plus half the round trip. Per peer the
//! estimate is the sample with the smallest round trip among the last few
//! (the one whose half round trip error is smallest). Samples are kept
//! against this node's monotonic clock, so a step of its own wall clock
//! shows in its offset at the next reading.
//!
//! Cluster time is the wall clock plus the median of {0 (this node)} and
//! the offsets of the peers heard recently: one skewed node in three is
//! outvoted. It is *trusted* when a majority of the cluster's nodes (this
//! one included) agree with it within `CLOCK_SKEW_TOLERANCE_MS`; a single
//! node is its own majority.
//!
//! The clock rule (also in ARCHITECTURE.md and the partition state
//! machine): a leader stamps a replicated command with
//!
//! - the cluster time when it is trusted (this moves a stale partition
//!   clock forward, for instance after a long idle period);
//! - otherwise the cluster time, but at most `B + CLOCK_SKEW_TOLERANCE_MS`,
//!   where `B` is the larger of (a) the partition's clock as this node last
//!   saw it change plus the monotonic time elapsed since, and (b) the last
//!   trusted cluster time this node saw plus the monotonic time elapsed
//!   since. Without trust a stamp can therefore not run ahead of real
//!   elapsed time, whatever the wall clock does.
//!
//! The state machine keeps `clock = max(clock, stamp)`, so the clock never
//! goes back either. A node that has not trusted cluster time once since it
//! started, and whose stamp the cap would hold below cluster time, first
//! waits up to `CLOCK_TRUST_WAIT` for its peers' beats.
//!
//! Everything here but [`ClusterClock`] is pure (times are arguments), so
//! the rules are unit-tested with made-up times.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_core::limits::{
    CLOCK_PEER_FRESH, CLOCK_SAMPLES_KEPT, CLOCK_SAMPLE_MAX_RTT, CLOCK_SKEW_TOLERANCE_MS, CLOCK_TRUST_WAIT,
    CLOCK_WARN_INTERVAL,
};
use tokio::sync::watch;

use crate::node::local_wall_ms;

/// One measurement of a peer's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The peer's wall clock minus this node's monotonic clock (ms since
    /// the `ClusterClock` was made). Against the monotonic clock, not this
    /// node's wall clock, so that a step of this node's wall clock shows in
    /// its offset at once instead of after the old samples age out.
    pub monotonic_offset_ms: i64,
    /// Round trip of the exchange, on this node's monotonic clock.
    pub rtt: Duration,
    /// When it was taken (this node's monotonic clock).
    pub at: Instant,
}

/// The recent samples of one peer.
#[derive(Clone, Debug, Default)]
pub struct PeerClock {
    samples: VecDeque<Sample>,
}

impl PeerClock {
    /// Adds a sample; samples with a round trip over `CLOCK_SAMPLE_MAX_RTT`
    /// say too little (their error is half the round trip) and are dropped.
    pub fn add(&mut self, sample: Sample) {
        if sample.rtt > CLOCK_SAMPLE_MAX_RTT {
            return;
        }
        if self.samples.len() == CLOCK_SAMPLES_KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The peer's offset: the sample with the smallest round trip among the
    /// kept ones, if the newest is younger than `CLOCK_PEER_FRESH`.
    pub fn estimate(&self, now: Instant) -> Option<Sample> {
        let newest = self.samples.back()?;
        if now.saturating_duration_since(newest.at) >= CLOCK_PEER_FRESH {
            return None;
        }
        self.samples.iter().min_by_key(|s| s.rtt).copied()
    }
}

/// The offset to add to this node's wall clock to get cluster time: the
/// median of 0 (this node) and the peers' offsets. With an even count the
/// lower of the two middle values: an early clock only keeps keys and data
/// longer, a late one loses them.
pub fn cluster_offset_ms(peer_offsets: &[i64]) -> i64 {
    let mut all: Vec<i64> = Vec::with_capacity(peer_offsets.len() + 1);
    all.push(0);
    all.extend_from_slice(peer_offsets);
    all.sort_unstable();
    all[(all.len() - 1) / 2]
}

/// Whether cluster time (at `cluster_offset` from this node's wall clock)
/// is backed by a majority of the `cluster_size` nodes: this node and its
/// fresh peers whose clocks are within the tolerance of it.
pub fn is_trusted(peer_offsets: &[i64], cluster_offset: i64, cluster_size: usize) -> bool {
    let near = |offset: i64| offset.abs_diff(cluster_offset) <= CLOCK_SKEW_TOLERANCE_MS;
    let agreeing = near(0) as usize + peer_offsets.iter().filter(|o| near(**o)).count();
    agreeing > cluster_size / 2
}

/// A time this node saw at a moment of its monotonic clock; it bounds
/// later times by the monotonic time elapsed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub time_ms: u64,
    pub at: Instant,
}

impl Seen {
    fn bound_ms(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.at).as_millis() as u64;
        self.time_ms.saturating_add(elapsed).saturating_add(CLOCK_SKEW_TOLERANCE_MS)
    }
}

/// The stamp for a replicated command (the clock rule in the module doc).
/// `partition` is the partition clock as this node last saw it change,
/// `anchor` the last trusted cluster time it saw.
pub fn stamp_ms(cluster_ms: u64, trusted: bool, partition: Seen, anchor: Option<Seen>, now: Instant) -> u64 {
    if trusted {
        return cluster_ms;
    }
    let bound = partition.bound_ms(now).max(anchor.map_or(0, |a| a.bound_ms(now)));
    cluster_ms.min(bound)
}

/// Cluster time as this node sees it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterNow {
    /// Cluster time, ms since the Unix epoch.
    pub ms: u64,
    /// This node's wall clock minus cluster time, ms: how far off it is.
    pub local_offset_ms: i64,
    pub trusted: bool,
    /// Peers whose offset is known and fresh.
    pub fresh_peers: usize,
}

fn cluster_now_at(wall_ms: u64, offsets: &[i64], cluster_size: usize) -> ClusterNow {
    let offset = cluster_offset_ms(offsets);
    ClusterNow {
        ms: (wall_ms as i64).saturating_add(offset).max(0) as u64,
        local_offset_ms: -offset,
        trusted: is_trusted(offsets, offset, cluster_size),
        fresh_peers: offsets.len(),
    }
}

#[derive(Default)]
struct Inner {
    peers: HashMap<u64, PeerClock>,
    /// Per partition group: its clock as last seen changing here.
    partitions: HashMap<u64, Seen>,
    /// The last trusted cluster time seen.
    anchor: Option<Seen>,
    last_warning: Option<Instant>,
}

/// This node's view of cluster time; cheap to clone.
#[derive(Clone)]
pub struct ClusterClock {
    /// The nodes of the cluster (it grows and shrinks: `set_cluster_size`).
    cluster_size: Arc<std::sync::atomic::AtomicUsize>,
    /// Origin of the monotonic readings samples are kept against.
    origin: Instant,
    inner: Arc<Mutex<Inner>>,
    /// Whether cluster time was trusted when last computed.
    trusted: Arc<watch::Sender<bool>>,
}

impl ClusterClock {
    /// The cluster has `size` nodes now (a node joined or left).
    pub fn set_cluster_size(&self, size: usize) {
        self.cluster_size.store(size.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn new(cluster_size: usize) -> ClusterClock {
        ClusterClock {
            cluster_size: Arc::new(std::sync::atomic::AtomicUsize::new(cluster_size)),
            origin: Instant::now(),
            inner: Arc::default(),
            trusted: Arc::new(watch::channel(false).0),
        }
    }

    fn monotonic_ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.origin).as_millis() as i64
    }

    /// A measurement from a beat exchange: `peer`'s wall clock is
    /// `peer_wall_ms` now, give or take half of `rtt`.
    pub fn record(&self, peer: u64, peer_wall_ms: i64, rtt: Duration) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("lock");
        let monotonic_offset_ms = peer_wall_ms - self.monotonic_ms(now);
        inner.peers.entry(peer).or_default().add(Sample { monotonic_offset_ms, rtt, at: now });
        let seen = self.now_locked(&mut inner, now);
        if seen.local_offset_ms.unsigned_abs() > CLOCK_SKEW_TOLERANCE_MS
            && inner.last_warning.is_none_or(|at| now.duration_since(at) >= CLOCK_WARN_INTERVAL)
        {
            inner.last_warning = Some(now);
            tracing::warn!(
                offset_ms = seen.local_offset_ms,
                fresh_peers = seen.fresh_peers,
                trusted = seen.trusted,
                "this node's wall clock is off from cluster time; stamps and retention use cluster time, fix the \
                 node's time sync"
            );
        }
    }

    fn now_locked(&self, inner: &mut Inner, now: Instant) -> ClusterNow {
        self.now_at(inner, now, local_wall_ms())
    }

    fn now_at(&self, inner: &mut Inner, now: Instant, wall_ms: u64) -> ClusterNow {
        // Each peer's wall clock now, by the monotonic time since its
        // sample, minus this node's wall clock now.
        let since_origin = self.monotonic_ms(now);
        let offsets: Vec<i64> = inner
            .peers
            .values()
            .filter_map(|p| p.estimate(now))
            .map(|s| s.monotonic_offset_ms + since_origin - wall_ms as i64)
            .collect();
        let size = self.cluster_size.load(std::sync::atomic::Ordering::Relaxed);
        let seen = cluster_now_at(wall_ms, &offsets, size);
        if seen.trusted {
            inner.anchor = Some(Seen { time_ms: seen.ms, at: now });
        }
        self.trusted.send_if_modified(|trusted| std::mem::replace(trusted, seen.trusted) != seen.trusted);
        seen
    }

    /// Cluster time now.
    pub fn now(&self) -> ClusterNow {
        let mut inner = self.inner.lock().expect("lock");
        self.now_locked(&mut inner, Instant::now())
    }

    /// The time stamp for a command proposed to partition `group`, whose
    /// applied clock is `partition_clock_ms` (the clock rule).
    ///
    /// A node that has never trusted cluster time since it started (it has
    /// not heard its peers yet) and whose stamp the rule would hold below
    /// cluster time first waits up to `CLOCK_TRUST_WAIT` for trust: a stamp
    /// held to a stale partition clock gives the keys stored with it an
    /// expiry that the next trusted stamp would pass at once.
    pub async fn stamp(&self, group: u64, partition_clock_ms: u64) -> u64 {
        let (stamp, wait) = self.stamp_now(group, partition_clock_ms);
        if !wait {
            return stamp;
        }
        let mut trusted = self.trusted.subscribe();
        let _ = tokio::time::timeout(CLOCK_TRUST_WAIT, trusted.wait_for(|t| *t)).await;
        self.stamp_now(group, partition_clock_ms).0
    }

    /// The stamp now, and whether it is worth waiting for trust.
    fn stamp_now(&self, group: u64, partition_clock_ms: u64) -> (u64, bool) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("lock");
        let cluster = self.now_locked(&mut inner, now);
        let partition = *inner
            .partitions
            .entry(group)
            .and_modify(|seen| {
                if partition_clock_ms > seen.time_ms {
                    *seen = Seen { time_ms: partition_clock_ms, at: now };
                }
            })
            .or_insert(Seen { time_ms: partition_clock_ms, at: now });
        let stamp = stamp_ms(cluster.ms, cluster.trusted, partition, inner.anchor, now);
        (stamp, stamp < cluster.ms && inner.anchor.is_none())
    }

    /// Forgets partitions this node no longer hosts.
    pub fn retain_partitions(&self, hosted: impl Fn(u64) -> bool) {
        self.inner.lock().expect("lock").partitions.retain(|group, _| hosted(*group));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: u64 = CLOCK_SKEW_TOLERANCE_MS;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_estimate_is_the_sample_with_the_smallest_round_trip() {
        let t0 = Instant::now();
        let mut peer = PeerClock::default();
        assert_eq!(peer.estimate(t0), None, "no sample, no estimate");
        // A slow exchange (queued behind other traffic) is off by up to
        // half its round trip; the fast one wins.
        peer.add(Sample { monotonic_offset_ms: 400, rtt: ms(300), at: t0 });
        peer.add(Sample { monotonic_offset_ms: 1_002, rtt: ms(2), at: t0 + ms(100) });
        peer.add(Sample { monotonic_offset_ms: 1_200, rtt: ms(80), at: t0 + ms(200) });
        assert_eq!(peer.estimate(t0 + ms(200)).map(|s| s.monotonic_offset_ms), Some(1_002));
        // Too slow to say anything: dropped.
        peer.add(Sample { monotonic_offset_ms: -50_000, rtt: CLOCK_SAMPLE_MAX_RTT + ms(1), at: t0 + ms(300) });
        assert_eq!(peer.estimate(t0 + ms(300)).map(|s| s.monotonic_offset_ms), Some(1_002));
    }

    #[test]
    fn old_samples_leave_and_a_silent_peer_goes_stale() {
        let t0 = Instant::now();
        let mut peer = PeerClock::default();
        peer.add(Sample { monotonic_offset_ms: 0, rtt: ms(1), at: t0 });
        // The clock jumps by a minute: once the good old sample has left
        // the window, the estimate follows.
        for i in 1..=CLOCK_SAMPLES_KEPT as u64 {
            peer.add(Sample { monotonic_offset_ms: 60_000, rtt: ms(5), at: t0 + ms(100 * i) });
        }
        let last = t0 + ms(100 * CLOCK_SAMPLES_KEPT as u64);
        assert_eq!(peer.estimate(last).map(|s| s.monotonic_offset_ms), Some(60_000));
        assert!(peer.estimate(last + CLOCK_PEER_FRESH - ms(1)).is_some());
        assert_eq!(peer.estimate(last + CLOCK_PEER_FRESH), None, "not heard for too long");
    }

    #[test]
    fn the_median_outvotes_one_skewed_clock() {
        const DAY: i64 = 24 * 3600 * 1000;
        // Alone: its own clock.
        assert_eq!(cluster_offset_ms(&[]), 0);
        // Three nodes, a peer a day ahead: this node's clock stands.
        assert_eq!(cluster_offset_ms(&[DAY, 3]), 3);
        // This node is the one a day ahead: both peers see it so.
        assert_eq!(cluster_offset_ms(&[-DAY, -DAY + 5]), -DAY + 5);
        // Two nodes: the earlier clock of the two.
        assert_eq!(cluster_offset_ms(&[DAY]), 0);
        assert_eq!(cluster_offset_ms(&[-DAY]), -DAY);
        // Five nodes, two skewed opposite ways.
        assert_eq!(cluster_offset_ms(&[DAY, -DAY, 10, -10]), 0);
    }

    #[test]
    fn trust_needs_a_majority_within_the_tolerance() {
        const DAY: i64 = 24 * 3600 * 1000;
        let tol = TOL as i64;
        assert!(is_trusted(&[], 0, 1), "a single node is its own majority");
        assert!(!is_trusted(&[], 0, 3), "no peer heard yet");
        assert!(is_trusted(&[DAY, tol], 0, 3));
        assert!(is_trusted(&[-DAY, -DAY + 5], -DAY, 3), "the skewed node itself trusts the others");
        assert!(!is_trusted(&[DAY, -DAY], 0, 3), "three clocks, no two agree");
        assert!(!is_trusted(&[tol + 1], 0, 3));
        assert!(!is_trusted(&[0], 0, 4), "two of four is no majority");
    }

    #[test]
    fn cluster_time_corrects_this_nodes_clock() {
        const DAY: i64 = 24 * 3600 * 1000;
        let wall = 10 * DAY as u64;
        let now = cluster_now_at(wall, &[-DAY, -DAY], 3);
        assert_eq!(now, ClusterNow { ms: wall - DAY as u64, local_offset_ms: DAY, trusted: true, fresh_peers: 2 });
        let alone = cluster_now_at(wall, &[], 3);
        assert_eq!((alone.ms, alone.trusted), (wall, false));
    }

    #[test]
    fn a_trusted_cluster_time_is_the_stamp_even_after_a_long_idle() {
        let t0 = Instant::now();
        // The partition was last stamped a day ago: it catches up at once.
        let day_old = Seen { time_ms: 1_000, at: t0 };
        assert_eq!(stamp_ms(86_401_000, true, day_old, None, t0), 86_401_000);
    }

    #[test]
    fn without_trust_a_stamp_runs_no_faster_than_the_monotonic_clock() {
        let t0 = Instant::now();
        let seen = Seen { time_ms: 50_000, at: t0 };
        // A wall clock a day ahead moves the partition clock by the
        // elapsed time plus the tolerance, no more.
        assert_eq!(stamp_ms(50_000 + 86_400_000, false, seen, None, t0 + ms(300)), 50_300 + TOL);
        // A clock behind the bound is taken as it is (the state machine
        // keeps the larger clock).
        assert_eq!(stamp_ms(40_000, false, seen, None, t0 + ms(300)), 40_000);
        // The last trusted time this node saw also bounds: a partition
        // whose clock is stale (idle) catches up to it.
        let anchor = Seen { time_ms: 900_000, at: t0 };
        assert_eq!(stamp_ms(10_000_000, false, seen, Some(anchor), t0 + ms(500)), 900_500 + TOL);
        assert_eq!(stamp_ms(900_100, false, seen, Some(anchor), t0 + ms(500)), 900_100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_whose_clock_jumps_stamps_the_bound_until_peers_outvote_it() {
        let clock = ClusterClock::new(3);
        let wall = local_wall_ms();
        // No peer heard: untrusted; a partition clock a day behind the
        // wall clock (this node jumped ahead) is held to it plus the
        // tolerance and the (tiny) elapsed time, after waiting for trust.
        let behind = wall - 86_400_000;
        let waited = tokio::time::Instant::now();
        let stamp = clock.stamp(7, behind).await;
        assert_eq!(waited.elapsed(), CLOCK_TRUST_WAIT);
        assert!(stamp >= behind && stamp <= behind + TOL + 1_000, "{stamp} vs {behind}");
        // Both peers see this node a day ahead: cluster time is a day back, trusted.
        clock.record(2, wall as i64 - 86_400_000, ms(1));
        clock.record(3, wall as i64 - 86_400_000, ms(1));
        let now = clock.now();
        assert!(now.trusted);
        // The wall clock moved on between `wall` and this reading (by a
        // millisecond or more on a busy machine): the offset is a day, to
        // within the time that passed.
        assert!(now.local_offset_ms.abs_diff(86_400_000) <= 1_000, "{now:?}");
        let stamp = clock.stamp(7, behind).await;
        assert!(stamp.abs_diff(behind) <= 1_000, "{stamp} vs {behind}");
    }

    #[test]
    fn a_step_of_this_nodes_wall_clock_shows_at_once() {
        let clock = ClusterClock::new(3);
        let wall = local_wall_ms();
        clock.record(2, wall as i64, ms(1));
        clock.record(3, wall as i64 + 2, ms(1));
        // This node's wall clock steps an hour ahead (NTP step, libfaketime):
        // the peers' samples were kept against the monotonic clock, so the
        // very next reading outvotes the step.
        let mut inner = clock.inner.lock().unwrap();
        let now = clock.now_at(&mut inner, Instant::now(), wall + 3_600_000);
        assert!(now.trusted);
        assert!(now.local_offset_ms.abs_diff(3_600_000) <= 1_000, "{now:?}");
        assert!(now.ms.abs_diff(wall) <= 1_000, "{now:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stamp_before_any_trust_waits_for_the_peers() {
        let clock = ClusterClock::new(3);
        // A new partition (clock 0) on a node that has heard no peer yet.
        let stamping = tokio::spawn({
            let clock = clock.clone();
            async move { clock.stamp(1, 0).await }
        });
        tokio::time::sleep(CLOCK_TRUST_WAIT / 2).await;
        assert!(!stamping.is_finished(), "no trust yet: it waits");
        clock.record(2, local_wall_ms() as i64, ms(1));
        let stamp = stamping.await.unwrap();
        assert!(stamp.abs_diff(local_wall_ms()) <= 1_000, "cluster time, not 1970: {stamp}");
        // Trusted once: later stamps never wait, even while untrusted (the
        // last trusted time bounds them).
        let untrusted = ClusterClock { cluster_size: Arc::new(5.into()), ..clock.clone() };
        let waited = tokio::time::Instant::now();
        untrusted.stamp(1, 0).await;
        assert_eq!(waited.elapsed(), Duration::ZERO);
    }
}
