//! Elections and leader changes over a stretch of a run, from the Strata
//! nodes' metrics (`strata_raft_elections_total`,
//! `strata_leader_changes_total`, `strata_metadata_leader_changes_total`):
//! one scrape of every node before, one after, and the difference.
//!
//! Elections are summed over the nodes: each node counts the ones it
//! started. Leader changes are counted once per partition: every replica
//! sees a partition's changes, so the figure is, per partition (and for
//! the metadata group), the largest increase any node saw, summed over
//! partitions. A node that restarted in between (its counters back at 0)
//! adds nothing.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use crate::systems::{self, Cluster};

/// What every node's metrics said at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    /// Per node (in scrape order; a node that did not answer is `None`).
    nodes: Vec<Option<NodeCounts>>,
}

/// One node's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeCounts {
    /// Summed over group kinds.
    elections: f64,
    /// By series labels (`topic="t",partition="0"`, or `metadata` for the
    /// metadata group).
    leader_changes: BTreeMap<String, f64>,
}

/// Elections and leader changes between two snapshots.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Leadership {
    /// Elections started, summed over the nodes.
    pub elections: u64,
    /// Leader changes, counted once per partition (the largest increase any
    /// node saw) and summed over partitions and the metadata group.
    pub leader_changes: u64,
    /// Partitions (and the metadata group) with at least one leader change.
    pub partitions_with_changes: u64,
    /// Time between the two snapshots, s.
    pub window_secs: f64,
    pub elections_per_minute: f64,
    /// Nodes that answered both scrapes, of those scraped.
    pub nodes_counted: usize,
    /// The leader changes by series (`topic="t",partition="0"`, or
    /// `metadata`), those with any.
    pub changes_by_series: BTreeMap<String, u64>,
    /// Of `leader_changes`, those in the topic the workload wrote to, when
    /// the caller named it (`for_topic`): every workload makes a topic of
    /// its own, and the others' changes happen in earlier workloads' idle
    /// topics (the preferred-leader balancer hands their leaders back
    /// `leader_balance_delay` after each was made) or the metadata group.
    pub workload_topic_leader_changes: Option<u64>,
}

const ELECTIONS: &str = "strata_raft_elections_total";
const LEADER_CHANGES: &str = "strata_leader_changes_total";
const METADATA_LEADER_CHANGES: &str = "strata_metadata_leader_changes_total";

/// The counters of one metrics page (Prometheus text format).
pub fn parse(page: &str) -> NodeCounts {
    let mut counts = NodeCounts::default();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            ELECTIONS => counts.elections += value,
            LEADER_CHANGES => {
                counts.leader_changes.insert(labels.to_string(), value);
            }
            METADATA_LEADER_CHANGES => {
                counts.leader_changes.insert("metadata".to_string(), value);
            }
            _ => {}
        }
    }
    counts
}

/// Scrapes every node of `cluster` (Strata's; others have no metrics).
pub async fn snapshot(cluster: &Cluster) -> Snapshot {
    let mut nodes = Vec::new();
    for address in &cluster.metrics {
        nodes.push(systems::scrape(address).await.ok().map(|page| parse(&page)));
    }
    Snapshot { at: Instant::now(), nodes }
}

impl Snapshot {
    /// What happened since `before`; `None` when no node answered both.
    pub fn since(&self, before: &Snapshot) -> Option<Leadership> {
        let pairs: Vec<(&NodeCounts, &NodeCounts)> =
            before.nodes.iter().zip(&self.nodes).filter_map(|(b, a)| Some((b.as_ref()?, a.as_ref()?))).collect();
        if pairs.is_empty() {
            return None;
        }
        // A counter lower than before means the node restarted: nothing
        // from it can be told apart, so it adds nothing.
        let grew = |before: f64, after: f64| (after - before).max(0.0);
        let elections: f64 = pairs.iter().map(|(b, a)| grew(b.elections, a.elections)).sum();
        let mut changes: BTreeMap<&str, f64> = BTreeMap::new();
        for (b, a) in &pairs {
            for (series, after) in &a.leader_changes {
                let before = b.leader_changes.get(series).copied().unwrap_or(0.0);
                let entry = changes.entry(series.as_str()).or_default();
                *entry = entry.max(grew(before, *after));
            }
        }
        let window_secs = self.at.duration_since(before.at).as_secs_f64();
        Some(Leadership {
            elections: elections as u64,
            leader_changes: changes.values().sum::<f64>() as u64,
            partitions_with_changes: changes.values().filter(|n| **n > 0.0).count() as u64,
            window_secs,
            elections_per_minute: if window_secs > 0.0 { elections * 60.0 / window_secs } else { 0.0 },
            nodes_counted: pairs.len(),
            changes_by_series: changes
                .iter()
                .filter(|(_, n)| **n > 0.0)
                .map(|(series, n)| (series.to_string(), *n as u64))
                .collect(),
            workload_topic_leader_changes: None,
        })
    }
}

impl Leadership {
    /// Counts apart the leader changes in `topic` (the workload's own).
    pub fn for_topic(mut self, topic: &str) -> Leadership {
        let prefix = format!("topic=\"{topic}\",");
        let own = self.changes_by_series.iter().filter(|(series, _)| series.starts_with(&prefix)).map(|(_, n)| n);
        self.workload_topic_leader_changes = Some(own.sum());
        self
    }

    /// One line for the Markdown report.
    pub fn describe(&self) -> String {
        let own =
            self.workload_topic_leader_changes.map_or(String::new(), |n| format!(" ({n} in the workload's topic)"));
        format!(
            "{} elections ({:.1}/min), {} leader changes{own} over {} partitions, in {:.0} s ({} nodes counted)",
            self.elections,
            self.elections_per_minute,
            self.leader_changes,
            self.partitions_with_changes,
            self.window_secs,
            self.nodes_counted
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn node(page: &str) -> Option<NodeCounts> {
        Some(parse(page))
    }

    #[test]
    fn pages_parse_into_elections_and_changes_by_partition() {
        let page = "# HELP strata_raft_elections_total Elections.\n\
                    # TYPE strata_raft_elections_total counter\n\
                    strata_raft_elections_total{kind=\"metadata\"} 1\n\
                    strata_raft_elections_total{kind=\"partition\"} 4\n\
                    strata_metadata_leader_changes_total 2\n\
                    strata_leader_changes_total{topic=\"w5\",partition=\"0\"} 3\n\
                    strata_leader_changes_total_other 9\n\
                    strata_partitions_led 7\n";
        let counts = parse(page);
        assert_eq!(counts.elections, 5.0);
        assert_eq!(counts.leader_changes.len(), 2);
        assert_eq!(counts.leader_changes["topic=\"w5\",partition=\"0\""], 3.0);
        assert_eq!(counts.leader_changes["metadata"], 2.0);
    }

    #[test]
    fn changes_count_once_per_partition_and_elections_per_node() {
        let start = Instant::now();
        let p = |partition: u32, n: u32| {
            format!("strata_leader_changes_total{{topic=\"t\",partition=\"{partition}\"}} {n}\n")
        };
        let e = |n: u32| format!("strata_raft_elections_total{{kind=\"partition\"}} {n}\n");
        let before = Snapshot {
            at: start,
            nodes: vec![node(&(e(1) + &p(0, 0) + &p(1, 0))), node(&(e(1) + &p(0, 0) + &p(1, 0))), None],
        };
        let after = Snapshot {
            at: start + Duration::from_secs(30),
            nodes: vec![
                // Node 1 saw partition 0 change twice, node 2 once; node 2
                // also started both elections.
                node(&(e(1) + &p(0, 2) + &p(1, 0))),
                node(&(e(3) + &p(0, 1) + &p(1, 0) + &p(2, 1))),
                node(&e(9)),
            ],
        };
        let got = after.since(&before).unwrap();
        assert_eq!(got.elections, 2, "node 3 did not answer before: not counted");
        assert_eq!(got.leader_changes, 3, "partition 0 twice (max over nodes), partition 2 once (new)");
        assert_eq!(got.partitions_with_changes, 2);
        assert_eq!(got.elections_per_minute, 4.0);
        assert_eq!(got.nodes_counted, 2);
        let own = got.clone().for_topic("t").workload_topic_leader_changes;
        assert_eq!(own, Some(3), "both changed partitions are in topic t");
        assert_eq!(got.for_topic("other").workload_topic_leader_changes, Some(0));
        // A restarted node (counters back to 0) adds nothing.
        let restarted = Snapshot { at: after.at, nodes: vec![node(&e(0)), node(&e(1)), None] };
        assert_eq!(restarted.since(&before).unwrap().elections, 0);
        assert_eq!(Snapshot { at: start, nodes: vec![None] }.since(&before), None);
    }
}
