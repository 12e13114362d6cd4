//! Elections and leader changes, counted from what openraft publishes.
//!
//! Every group started on this node gets a small task that watches its
//! Raft's server metrics (`Raft::server_metrics`: vote, server state,
//! current leader; published only when one of them changes, so a busy
//! group's appends do not wake the task) and feeds each reading to a
//! [`Tracker`], the plain logic below. What it counts:
//!
//! - An election: this node campaigned, i.e. a reading shows its vote for
//!   itself in a term newer than every term seen before, as a Candidate
//!   (or as a Leader of that new term, when the campaign was won before
//!   openraft published again). A pre-vote round changes neither the vote
//!   nor the state, so it is never counted; a pre-vote that goes on to a
//!   real election counts once, as that election. A node that restarts and
//!   finds its own committed vote in its store has not campaigned: the
//!   jump from openraft's initial term 0 to the stored term is not counted
//!   unless it shows a Candidate.
//! - A leader change: a reading shows a known leader whose (term, leader)
//!   differs from the last known one. The first leader the task sees is
//!   where it starts, not a change; a stretch without a leader (an election
//!   in progress) that ends with the same leader in the same term is not a
//!   change either; the same node elected again in a new term is.
//!
//! Readings coalesce (a watch keeps only the latest value), so both counts
//! are lower bounds: two campaigns or two leaders between two readings
//! count once. They happen seconds apart, readings microseconds apart.
//!
//! Elections go to the process-wide `METRICS` by group kind, so they
//! outlive a group that moves away; a group's leader changes live in its
//! `GroupHandle` and leave the metrics with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::vote::RaftLeaderId;
use openraft::ServerState;
use strata_storage::GroupKind;

use crate::groups::GroupRaft;
use crate::metrics::METRICS;

/// What one reading of a group's server metrics says of leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The term of this node's vote.
    pub term: u64,
    /// The node this node's vote is for.
    pub voted_for: u64,
    /// This node is campaigning (openraft's `Candidate`).
    pub candidate: bool,
    /// This node leads the group.
    pub leader: bool,
    /// The leader this node knows, if any.
    pub current_leader: Option<u64>,
}

/// What one reading adds to the counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counted {
    pub election: bool,
    pub leader_change: bool,
}

/// The counting rules of the module documentation, for one group.
#[derive(Debug)]
pub(crate) struct Tracker {
    me: u64,
    /// The highest term of any reading so far.
    highest_term: u64,
    /// The last known (term, leader).
    last_leader: Option<(u64, u64)>,
}

impl Tracker {
    /// Starts from `first`, which counts nothing: it is whatever the group
    /// was when this node began to watch it.
    pub fn new(me: u64, first: Reading) -> Tracker {
        Tracker { me, highest_term: first.term, last_leader: first.current_leader.map(|l| (first.term, l)) }
    }

    pub fn observe(&mut self, reading: Reading) -> Counted {
        let new_term = reading.term > self.highest_term;
        // Term 0 is openraft's initial reading, before the core has loaded
        // the stored vote: only a Candidate shows a campaign after it.
        let campaigned = reading.candidate || (reading.leader && self.highest_term > 0);
        let election = new_term && reading.voted_for == self.me && campaigned;
        self.highest_term = self.highest_term.max(reading.term);
        let mut leader_change = false;
        if let Some(leader) = reading.current_leader {
            let known = (reading.term, leader);
            leader_change = self.last_leader.is_some_and(|last| last != known);
            self.last_leader = Some(known);
        }
        Counted { election, leader_change }
    }
}

/// A group's leader changes seen by this node (see the module
/// documentation); shared by its handle and its watcher.
pub type LeaderChanges = Arc<AtomicU64>;

/// The reading of openraft's server metrics.
fn reading(metrics: &openraft::metrics::RaftServerMetrics<strata_storage::TypeConfig>) -> Reading {
    let leader_id = metrics.vote.leader_id();
    Reading {
        term: leader_id.term(),
        voted_for: *leader_id.node_id(),
        candidate: metrics.state == ServerState::Candidate,
        leader: metrics.state == ServerState::Leader,
        current_leader: metrics.current_leader,
    }
}

/// Counts `raft`'s elections (into `METRICS` by `kind`) and leader changes
/// (into `changes`) until the Raft stops: its core drops the metrics'
/// sender then, which ends the task.
pub(crate) fn watch(me: u64, kind: GroupKind, raft: &GroupRaft, changes: LeaderChanges) {
    let mut receiver = raft.server_metrics();
    let elections = match kind {
        GroupKind::Metadata => &METRICS.elections_metadata,
        GroupKind::Partition => &METRICS.elections_partition,
    };
    tokio::spawn(async move {
        let mut tracker = Tracker::new(me, reading(&receiver.borrow_watched()));
        while receiver.changed().await.is_ok() {
            let counted = tracker.observe(reading(&receiver.borrow_watched()));
            if counted.election {
                elections.inc();
            }
            if counted.leader_change {
                changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u64 = 1;

    fn follower(term: u64, leader: Option<u64>) -> Reading {
        Reading { term, voted_for: leader.unwrap_or(2), candidate: false, leader: false, current_leader: leader }
    }

    fn candidate(term: u64) -> Reading {
        Reading { term, voted_for: ME, candidate: true, leader: false, current_leader: None }
    }

    fn leading(term: u64) -> Reading {
        Reading { term, voted_for: ME, candidate: false, leader: true, current_leader: Some(ME) }
    }

    /// Feeds `readings` after `first`; the elections and leader changes counted.
    fn count(first: Reading, readings: &[Reading]) -> (u32, u32) {
        let mut tracker = Tracker::new(ME, first);
        readings.iter().fold((0, 0), |(e, l), r| {
            let c = tracker.observe(*r);
            (e + c.election as u32, l + c.leader_change as u32)
        })
    }

    #[test]
    fn a_won_campaign_is_one_election_and_one_leader_change() {
        let steady = follower(3, Some(2));
        assert_eq!(count(steady, &[follower(3, None), candidate(4), leading(4), leading(4)]), (1, 1));
        // Won before openraft published the Candidate reading.
        assert_eq!(count(steady, &[leading(4)]), (1, 1));
        // Campaigns in two terms, lost to node 3 in the second.
        assert_eq!(count(steady, &[candidate(4), candidate(5), follower(5, Some(3))]), (2, 1));
    }

    #[test]
    fn another_nodes_election_is_a_leader_change_only() {
        let steady = follower(3, Some(2));
        assert_eq!(count(steady, &[follower(3, None), follower(4, None), follower(4, Some(3))]), (0, 1));
        // Node 2 elected again in a new term: a change of leadership.
        assert_eq!(count(steady, &[follower(4, Some(2))]), (0, 1));
        // No leader for a while, then the same one in the same term: none.
        assert_eq!(count(steady, &[follower(3, None), follower(3, Some(2))]), (0, 0));
    }

    #[test]
    fn a_pre_vote_changes_nothing_and_counts_nothing() {
        // A pre-vote round leaves the vote and the state as they were: the
        // readings openraft may publish meanwhile are the steady one.
        let steady = follower(3, Some(2));
        assert_eq!(count(steady, &[steady, steady]), (0, 0));
    }

    #[test]
    fn the_first_leader_seen_is_a_start_not_a_change() {
        let fresh = Reading { term: 0, voted_for: ME, candidate: false, leader: false, current_leader: None };
        assert_eq!(count(fresh, &[follower(1, Some(2))]), (0, 0));
        // The preferred leader of a new partition campaigns at once.
        assert_eq!(count(fresh, &[candidate(1), leading(1)]), (1, 0));
    }

    #[test]
    fn a_restart_into_a_stored_vote_is_not_an_election() {
        let initial = Reading { term: 0, voted_for: ME, candidate: false, leader: false, current_leader: None };
        // The store held this node's committed vote of term 5: openraft
        // resumes leading without a campaign.
        assert_eq!(count(initial, &[leading(5)]), (0, 0));
        let stored_follower = Reading { term: 5, voted_for: ME, candidate: false, leader: false, current_leader: None };
        assert_eq!(count(initial, &[stored_follower, candidate(6)]), (1, 0));
    }
}
