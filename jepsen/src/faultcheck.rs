//! The checks of the Docker fault test (`strata-docker-faults`, driven by
//! `scripts/docker-faults.sh`): pure functions from what the load recorded
//! (each record's acknowledgement and when it arrived), what was read back,
//! and when each fault started, to a verdict.
//!
//! - [`check_records`]: every acknowledged record is stored at the offset
//!   its acknowledgement named (none lost, none moved), none twice, nothing
//!   stored that the load did not send.
//! - [`fault_gaps`]: after each fault, the longest time any partition went
//!   without an acknowledgement, checked against the fault's bound. A
//!   window ends where the next fault starts, so a stall still going on
//!   then would be split between two faults: each report also says how
//!   long the partition that had waited longest had been waiting when its
//!   fault started (`stalled_at_start_ms`; the script starts a fault only
//!   once every partition is acknowledged again, so this stays small).
//!
//! Times are wall-clock milliseconds since the Unix epoch: the script notes
//! fault starts with `date +%s%3N` on the same machine the load runs on.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// A fault, as the script notes it when the fault starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub name: String,
    /// When the fault started (ms since the Unix epoch).
    pub start_ms: i64,
    /// The longest acknowledgement gap allowed after it, ms; `None`: reported only.
    pub bound_ms: Option<u64>,
}

/// Parses the fault file: one fault a line, `START_MS NAME BOUND_MS`, where
/// BOUND_MS is `-` for a fault that is only reported. Blank lines and lines
/// starting with `#` are skipped. The faults come back in start order.
pub fn parse_faults(text: &str) -> Result<Vec<Fault>, String> {
    let mut faults = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad =
            |what: &str| format!("fault file line {}: {what}: '{line}' (want 'START_MS NAME BOUND_MS|-')", index + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [start, name, bound] = fields[..] else {
            return Err(bad("not three fields"));
        };
        let start_ms = start.parse::<i64>().map_err(|_| bad("the start is not a number of ms"))?;
        let bound_ms = match bound {
            "-" => None,
            ms => Some(ms.parse::<u64>().map_err(|_| bad("the bound is neither '-' nor a number of ms"))?),
        };
        faults.push(Fault { name: name.to_string(), start_ms, bound_ms });
    }
    faults.sort_by_key(|f| f.start_ms);
    Ok(faults)
}

/// The longest stretch without an acknowledgement on one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub partition: u32,
    /// When the stretch began: the window's start or an acknowledgement.
    pub from_ms: i64,
    /// When it ended: an acknowledgement or the window's end.
    pub until_ms: i64,
}

impl Gap {
    pub fn ms(&self) -> u64 {
        (self.until_ms - self.from_ms).max(0) as u64
    }
}

/// The longest gap in `[from_ms, until_ms]` over all partitions, counting
/// the stretches from `from_ms` to a partition's first acknowledgement and
/// from its last one to `until_ms`: a partition with no acknowledgement in
/// the window has a gap of the whole window. `acks` holds each partition's
/// acknowledgement times in ascending order; every partition of the topic
/// must have an entry. `None` when there are no partitions.
pub fn longest_gap(acks: &BTreeMap<u32, Vec<i64>>, from_ms: i64, until_ms: i64) -> Option<Gap> {
    let mut longest: Option<Gap> = None;
    for (&partition, times) in acks {
        let first = times.partition_point(|&t| t <= from_ms);
        let last = times.partition_point(|&t| t < until_ms);
        let inside = times.get(first..last).unwrap_or_default();
        let mut previous = from_ms;
        for &at in inside.iter().chain(std::iter::once(&until_ms)) {
            let gap = Gap { partition, from_ms: previous, until_ms: at };
            if longest.is_none_or(|l| gap.ms() > l.ms()) {
                longest = Some(gap);
            }
            previous = at;
        }
    }
    longest
}

/// What the summary says about one fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultReport {
    pub name: String,
    /// When it started (ms since the Unix epoch).
    pub start_ms: i64,
    /// How long its window lasted: until the next fault, or the end of the load.
    pub window_ms: u64,
    /// The longest time a partition went without an acknowledgement in the window.
    pub longest_ack_gap_ms: u64,
    /// That partition.
    pub gap_partition: Option<u32>,
    /// When that gap began, ms after the fault's start.
    pub gap_began_after_ms: Option<i64>,
    /// How long, at the fault's start, the partition that had gone longest
    /// without an acknowledgement had been waiting; `None` when some
    /// partition had none yet.
    pub stalled_at_start_ms: Option<u64>,
    pub bound_ms: Option<u64>,
    /// False when the gap exceeds the bound, or the fault started after the
    /// load ended (nothing measured it).
    pub ok: bool,
}

/// The longest any partition had gone without an acknowledgement at
/// `at_ms`; `None` when some partition had none by then (or there are no
/// partitions). `acks` as for [`longest_gap`].
pub fn stalled_at(acks: &BTreeMap<u32, Vec<i64>>, at_ms: i64) -> Option<u64> {
    let mut longest: Option<u64> = None;
    for times in acks.values() {
        let before = times.partition_point(|&t| t <= at_ms);
        let last = *times.get(before.checked_sub(1)?)?;
        let waited = (at_ms - last).max(0) as u64;
        longest = Some(longest.map_or(waited, |l| l.max(waited)));
    }
    longest
}

/// Each fault's longest acknowledgement gap, in its window: from its start
/// to the next fault's start, the last one to `load_end_ms` (when the load
/// stopped sending).
pub fn fault_gaps(faults: &[Fault], acks: &BTreeMap<u32, Vec<i64>>, load_end_ms: i64) -> Vec<FaultReport> {
    faults
        .iter()
        .enumerate()
        .map(|(index, fault)| {
            let until_ms = faults.get(index + 1).map_or(load_end_ms, |next| next.start_ms).min(load_end_ms);
            let covered = fault.start_ms < load_end_ms;
            let gap = if covered { longest_gap(acks, fault.start_ms, until_ms) } else { None };
            let longest_ack_gap_ms = gap.map_or(0, |g| g.ms());
            FaultReport {
                name: fault.name.clone(),
                start_ms: fault.start_ms,
                window_ms: (until_ms - fault.start_ms).max(0) as u64,
                longest_ack_gap_ms,
                gap_partition: gap.map(|g| g.partition),
                gap_began_after_ms: gap.map(|g| g.from_ms - fault.start_ms),
                stalled_at_start_ms: stalled_at(acks, fault.start_ms),
                bound_ms: fault.bound_ms,
                ok: covered && gap.is_some() && fault.bound_ms.is_none_or(|bound| longest_ack_gap_ms <= bound),
            }
        })
        .collect()
}

/// One record the load sent: its number (the record's value, in decimal),
/// the partition it went to, and its acknowledgement, if one came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub number: u64,
    pub partition: u32,
    /// The acknowledged offset and when the acknowledgement arrived (ms
    /// since the Unix epoch); `None` when the record failed or no answer came.
    pub ack: Option<(u64, i64)>,
}

/// One record read back: where it is, and its number (`None` when its
/// value is not a decimal number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub partition: u32,
    pub offset: u64,
    pub number: Option<u64>,
}

/// Examples kept per anomaly in the summary: enough to start looking.
const EXAMPLES: usize = 10;

/// The verdict on the records: counts, and a few examples of each anomaly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordCheck {
    pub sent: u64,
    pub acknowledged: u64,
    /// Sent but never acknowledged (failed, or no answer before the load's end).
    pub unacknowledged: u64,
    /// Of those, the ones stored anyway (allowed: the outcome was unknown).
    pub unacknowledged_stored: u64,
    pub read: u64,
    /// Acknowledged and found nowhere.
    pub lost: u64,
    pub lost_examples: Vec<u64>,
    /// Acknowledged at one offset, found only elsewhere: (number, acknowledged, found).
    pub misplaced: u64,
    pub misplaced_examples: Vec<(u64, u64, u64)>,
    /// Stored more than once.
    pub duplicated: u64,
    pub duplicated_examples: Vec<u64>,
    /// Stored but never sent to that partition by this load: (partition, offset).
    pub unexpected: u64,
    pub unexpected_examples: Vec<(u32, u64)>,
}

impl RecordCheck {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.misplaced == 0 && self.duplicated == 0 && self.unexpected == 0
    }
}

fn note<T>(count: &mut u64, examples: &mut Vec<T>, example: T) {
    *count += 1;
    if examples.len() < EXAMPLES {
        examples.push(example);
    }
}

/// Compares what was sent with what was read back.
pub fn check_records(sent: &[Sent], stored: &[Stored]) -> RecordCheck {
    let mut check = RecordCheck { sent: sent.len() as u64, read: stored.len() as u64, ..RecordCheck::default() };
    let partition_of: HashMap<u64, u32> = sent.iter().map(|s| (s.number, s.partition)).collect();
    // Where each number sent was found (in the partition it was sent to).
    let mut found: HashMap<u64, Vec<u64>> = HashMap::new();
    for record in stored {
        match record.number {
            Some(number) if partition_of.get(&number) == Some(&record.partition) => {
                found.entry(number).or_default().push(record.offset)
            }
            _ => note(&mut check.unexpected, &mut check.unexpected_examples, (record.partition, record.offset)),
        }
    }
    for record in sent {
        let offsets = found.get(&record.number).map(Vec::as_slice).unwrap_or_default();
        if offsets.len() > 1 {
            note(&mut check.duplicated, &mut check.duplicated_examples, record.number);
        }
        match record.ack {
            Some((acked, _)) => {
                check.acknowledged += 1;
                match offsets.first() {
                    None => note(&mut check.lost, &mut check.lost_examples, record.number),
                    Some(&first) if !offsets.contains(&acked) => {
                        note(&mut check.misplaced, &mut check.misplaced_examples, (record.number, acked, first))
                    }
                    Some(_) => {}
                }
            }
            None => {
                check.unacknowledged += 1;
                if !offsets.is_empty() {
                    check.unacknowledged_stored += 1;
                }
            }
        }
    }
    check
}

/// Each partition's acknowledgement times, ascending; every partition in
/// `0..partitions` has an entry.
pub fn ack_times(sent: &[Sent], partitions: u32) -> BTreeMap<u32, Vec<i64>> {
    let mut acks: BTreeMap<u32, Vec<i64>> = (0..partitions).map(|p| (p, Vec::new())).collect();
    for record in sent {
        if let Some((_, at)) = record.ack {
            acks.entry(record.partition).or_default().push(at);
        }
    }
    for times in acks.values_mut() {
        times.sort_unstable();
    }
    acks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(entries: &[(u32, &[i64])]) -> BTreeMap<u32, Vec<i64>> {
        entries.iter().map(|(p, times)| (*p, times.to_vec())).collect()
    }

    #[test]
    fn faults_parse_in_start_order_and_bad_lines_are_named() {
        let text = "# start name bound\n2000 partition-strata-3 -\n\n1000 kill-strata-2 3000\n";
        let faults = parse_faults(text).unwrap();
        assert_eq!(
            faults,
            vec![
                Fault { name: "kill-strata-2".into(), start_ms: 1000, bound_ms: Some(3000) },
                Fault { name: "partition-strata-3".into(), start_ms: 2000, bound_ms: None },
            ]
        );
        assert!(parse_faults("1000 kill").unwrap_err().contains("line 1"));
        assert!(parse_faults("x kill 3000").unwrap_err().contains("start"));
        assert!(parse_faults("\n1000 kill 3s").unwrap_err().contains("line 2"));
    }

    #[test]
    fn the_longest_gap_counts_the_window_edges_and_every_partition() {
        // Partition 1 stalls from 1100 to 2900; partition 0 never does.
        let acks = times(&[(0, &[900, 1050, 1200, 1400, 1600]), (1, &[950, 1100, 2900, 3000])]);
        let gap = longest_gap(&acks, 1000, 3100).unwrap();
        assert_eq!(gap, Gap { partition: 1, from_ms: 1100, until_ms: 2900 });
        // The stretch from partition 0's last acknowledgement to the window's end.
        let gap = longest_gap(&acks, 1000, 4000).unwrap();
        assert_eq!(gap, Gap { partition: 0, from_ms: 1600, until_ms: 4000 });
        // From the window's start to the first acknowledgement in it.
        let gap = longest_gap(&acks, 1150, 2950).unwrap();
        assert_eq!(gap, Gap { partition: 1, from_ms: 1150, until_ms: 2900 });
        // A partition with no acknowledgement at all is stalled for the whole window.
        let gap = longest_gap(&times(&[(0, &[10, 20, 30]), (1, &[])]), 0, 40).unwrap();
        assert_eq!((gap.partition, gap.ms()), (1, 40));
        assert_eq!(longest_gap(&BTreeMap::new(), 0, 10), None);
    }

    #[test]
    fn each_fault_is_measured_until_the_next_and_held_to_its_bound() {
        let faults = parse_faults("1000 kill-a 3000\n5000 partition-b -\n9000 kill-c 3000\n20000 late -").unwrap();
        // Partition 0 stalls 1000-4500 after kill-a (3.5 s > 3 s) and 5000-8000 after partition-b.
        let acks = times(&[
            (0, &[500, 4500, 4900, 8000, 8500, 9100, 9200, 9900]),
            (1, &[600, 1500, 2500, 4000, 5100, 9000, 9800]),
        ]);
        let reports = fault_gaps(&faults, &acks, 10_000);
        let summary: Vec<(&str, u64, Option<u32>, bool)> =
            reports.iter().map(|r| (r.name.as_str(), r.longest_ack_gap_ms, r.gap_partition, r.ok)).collect();
        assert_eq!(
            summary,
            vec![
                ("kill-a", 3500, Some(0), false),
                ("partition-b", 3900, Some(1), true),
                ("kill-c", 800, Some(1), true),
                // Started after the load ended: nothing measured it.
                ("late", 0, None, false),
            ]
        );
        assert_eq!(reports[0].window_ms, 4000);
        assert_eq!(reports[0].gap_began_after_ms, Some(0));
        assert_eq!(reports[1].gap_began_after_ms, Some(100));
        // E.g. at 5000 partition 0 was last acknowledged at 4900, partition 1 at 4000.
        let stalled: Vec<Option<u64>> = reports.iter().map(|r| r.stalled_at_start_ms).collect();
        assert_eq!(stalled, vec![Some(500), Some(1000), Some(500), Some(10_200)]);
    }

    #[test]
    fn the_stall_at_a_moment_is_the_longest_wait_of_any_partition() {
        let acks = times(&[(0, &[100, 200, 300]), (1, &[150, 260])]);
        // At 300 partition 0 was acknowledged just then, partition 1 last at 260.
        assert_eq!(stalled_at(&acks, 300), Some(40));
        assert_eq!(stalled_at(&acks, 1000), Some(740));
        // Before partition 1's first acknowledgement: unknown.
        assert_eq!(stalled_at(&acks, 120), None);
        assert_eq!(stalled_at(&BTreeMap::new(), 10), None);
    }

    fn sent(number: u64, partition: u32, ack: Option<u64>) -> Sent {
        Sent { number, partition, ack: ack.map(|offset| (offset, 0)) }
    }

    fn stored(partition: u32, offset: u64, number: u64) -> Stored {
        Stored { partition, offset, number: Some(number) }
    }

    #[test]
    fn records_all_where_acknowledged_pass() {
        let sent = [sent(0, 0, Some(0)), sent(1, 1, Some(0)), sent(2, 0, None), sent(3, 0, Some(2))];
        let stored = [stored(0, 0, 0), stored(1, 0, 1), stored(0, 1, 2), stored(0, 2, 3)];
        let check = check_records(&sent, &stored);
        assert!(check.ok(), "{check:?}");
        assert_eq!((check.acknowledged, check.unacknowledged, check.unacknowledged_stored), (3, 1, 1));
    }

    #[test]
    fn every_anomaly_is_found() {
        let sent =
            [sent(0, 0, Some(0)), sent(1, 0, Some(1)), sent(2, 0, Some(2)), sent(3, 1, Some(0)), sent(4, 1, None)];
        let stored = [
            stored(0, 0, 0),
            // 1 is lost; 2 was acknowledged at 2 but sits at 1.
            stored(0, 1, 2),
            // 3 is stored twice.
            stored(1, 0, 3),
            stored(1, 1, 3),
            // 4 belongs to partition 1, and 99 was never sent.
            stored(0, 2, 4),
            stored(1, 2, 99),
            Stored { partition: 1, offset: 3, number: None },
        ];
        let check = check_records(&sent, &stored);
        assert!(!check.ok());
        assert_eq!(check.lost_examples, vec![1]);
        assert_eq!(check.misplaced_examples, vec![(2, 2, 1)]);
        assert_eq!(check.duplicated_examples, vec![3]);
        assert_eq!(check.unexpected_examples, vec![(0, 2), (1, 2), (1, 3)]);
        assert_eq!((check.unacknowledged, check.unacknowledged_stored), (1, 0));
    }

    #[test]
    fn ack_times_cover_every_partition_in_order() {
        let sent = [
            Sent { number: 0, partition: 1, ack: Some((0, 30)) },
            Sent { number: 1, partition: 1, ack: Some((1, 20)) },
            Sent { number: 2, partition: 0, ack: None },
        ];
        assert_eq!(ack_times(&sent, 3), times(&[(0, &[]), (1, &[20, 30]), (2, &[])]));
    }
}
