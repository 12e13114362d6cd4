//! Where retention trims a partition, as logic: from the partition's state,
//! its batch headers (oldest first), the time cutoff and the byte bound.
//! No I/O; `node.rs` reads the headers and proposes the `Trim`.

use strata_state::PartitionState;
use strata_storage::BatchInfo;

/// The topic's retention as it applies now.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Batches whose newest record is older than this (cluster time minus
    /// `retention.ms`) go; `None` when there is no time bound, or cluster
    /// time is not trusted (time-based retention then waits).
    pub cutoff_ms: Option<i64>,
    /// `retention.bytes`, if set.
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// Whether a batch may go, given the bytes already chosen to go before
    /// it. Batches go oldest first, while expired or while the partition is
    /// over its byte bound.
    pub fn expendable(&self, state: &PartitionState, info: &BatchInfo, removed_bytes: u64) -> bool {
        let excess = self.max_bytes.map_or(0, |b| state.retained_bytes().saturating_sub(b));
        self.cutoff_ms.is_some_and(|c| info.max_timestamp_ms < c) || removed_bytes < excess
    }
}

/// The `Trim` to propose: (new log start, bytes trimmed in all), or `None`
/// when nothing goes. The new log start is a batch boundary at or below the
/// partition's last stable offset (an open transaction keeps its records
/// until it ends); the scan stops at the first batch to keep.
pub fn trim_point(state: &PartitionState, headers: &[BatchInfo], retention: Retention) -> Option<(u64, u64)> {
    let stable = state.last_stable_offset();
    let mut new_start = state.log_start_offset;
    let mut trimmed = state.trimmed_bytes_total;
    let mut removed = 0u64;
    for info in headers.iter().filter(|info| info.base_offset >= state.log_start_offset) {
        if !retention.expendable(state, info, removed) || info.next_offset > stable {
            break;
        }
        new_start = info.next_offset;
        trimmed += info.size_bytes;
        removed += info.size_bytes;
    }
    (new_start > state.log_start_offset).then_some((new_start, trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches of 10 records and 100 bytes each, the i-th newest at i s.
    fn partition(batches: u64) -> (PartitionState, Vec<BatchInfo>) {
        let headers: Vec<BatchInfo> = (0..batches)
            .map(|i| BatchInfo {
                base_offset: i * 10,
                next_offset: i * 10 + 10,
                max_timestamp_ms: (i as i64 + 1) * 1_000,
                size_bytes: 100,
            })
            .collect();
        let state = PartitionState {
            next_offset: batches * 10,
            appended_bytes_total: batches * 100,
            ..PartitionState::default()
        };
        (state, headers)
    }

    #[test]
    fn retention_ms_trims_batches_whose_newest_record_is_older_than_the_cutoff() {
        let (state, headers) = partition(5);
        let by_time = |cutoff_ms| Retention { cutoff_ms: Some(cutoff_ms), max_bytes: None };
        assert_eq!(trim_point(&state, &headers, by_time(3_500)), Some((30, 300)));
        assert_eq!(trim_point(&state, &headers, by_time(1_000)), None, "the first batch's newest is at 1 s");
        assert_eq!(trim_point(&state, &headers, by_time(10_000)), Some((50, 500)), "everything, up to the end");
    }

    #[test]
    fn retention_bytes_trims_the_oldest_until_the_partition_fits() {
        let (state, headers) = partition(5);
        let by_bytes = |max_bytes| Retention { cutoff_ms: None, max_bytes: Some(max_bytes) };
        assert_eq!(trim_point(&state, &headers, by_bytes(250)), Some((30, 300)), "250 bytes keep two batches");
        assert_eq!(trim_point(&state, &headers, by_bytes(500)), None);
        assert_eq!(trim_point(&state, &headers, by_bytes(1)), Some((50, 500)));
    }

    #[test]
    fn both_bounds_trim_whichever_reaches_further() {
        let (state, headers) = partition(5);
        let both = |cutoff_ms, max_bytes| Retention { cutoff_ms: Some(cutoff_ms), max_bytes: Some(max_bytes) };
        assert_eq!(trim_point(&state, &headers, both(2_500, 400)), Some((20, 200)), "time reaches further");
        assert_eq!(trim_point(&state, &headers, both(1_500, 200)), Some((30, 300)), "bytes reach further");
    }

    #[test]
    fn a_trimmed_partition_moves_on_from_its_log_start_and_totals() {
        let (mut state, headers) = partition(5);
        state.log_start_offset = 20;
        state.trimmed_bytes_total = 200;
        let retention = Retention { cutoff_ms: Some(4_500), max_bytes: None };
        // Headers below the log start (a stale read) do not count again.
        assert_eq!(trim_point(&state, &headers, retention), Some((40, 400)));
        assert_eq!(trim_point(&state, &headers[2..], retention), Some((40, 400)));
    }

    #[test]
    fn retention_stops_at_an_open_transaction() {
        let (mut state, headers) = partition(5);
        state.txns.on_data(7, 0, 20).unwrap();
        let everything = Retention { cutoff_ms: Some(i64::MAX), max_bytes: None };
        assert_eq!(trim_point(&state, &headers, everything).map(|t| t.0), Some(20), "the batches before it go");
    }

    #[test]
    fn no_time_bound_while_cluster_time_is_not_trusted() {
        let (state, headers) = partition(5);
        assert_eq!(trim_point(&state, &headers, Retention { cutoff_ms: None, max_bytes: None }), None);
    }
}
