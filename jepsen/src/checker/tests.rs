//! Hand-made histories: at least one per anomaly, and histories that must pass.

use serde_json::{json, Value};

use super::*;

/// Builds a history one entry at a time; each entry is 1 ms after the last.
#[derive(Default)]
struct H {
    ops: Vec<Op>,
    /// Added to every later entry's time (`wait`).
    later_ns: u64,
}

fn client(id: u64) -> Process {
    Process::Client(id)
}

impl H {
    fn push(&mut self, process: Process, kind: OpType, f: &str, value: Value, node: Option<u64>) -> u64 {
        let index = self.ops.len() as u64;
        self.ops.push(Op {
            index,
            time: (index + 1) * 1_000_000 + self.later_ns,
            process,
            kind,
            f: f.into(),
            value,
            node,
            error: None,
        });
        index
    }

    fn send(&mut self, p: u64, key: u64, value: u64, outcome: OpType, offset: Option<u64>) -> (u64, u64) {
        let invoke = self.push(client(p), OpType::Invoke, "send", json!({"key": key, "value": value}), None);
        let done_value = match offset {
            Some(o) => json!({"key": key, "value": value, "offset": o}),
            None => json!({"key": key, "value": value}),
        };
        let done = self.push(client(p), outcome, "send", done_value, None);
        (invoke, done)
    }

    fn send_ok(&mut self, p: u64, key: u64, value: u64, offset: u64) -> (u64, u64) {
        self.send(p, key, value, OpType::Ok, Some(offset))
    }

    fn poll(&mut self, p: u64, reads: &[(u64, u64, u64)]) -> u64 {
        self.poll_at(client(p), reads, None)
    }

    fn poll_at(&mut self, process: Process, reads: &[(u64, u64, u64)], node: Option<u64>) -> u64 {
        let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for &(key, offset, value) in reads {
            by_key.entry(key.to_string()).or_default().push(json!([offset, value]));
        }
        self.push(process.clone(), OpType::Invoke, "poll", Value::Null, node);
        self.push(process, OpType::Ok, "poll", json!(by_key), node)
    }

    fn assign(&mut self, p: u64, positions: &[(u64, u64)]) -> u64 {
        let keys: Vec<u64> = positions.iter().map(|(k, _)| *k).collect();
        let positions: BTreeMap<String, u64> = positions.iter().map(|(k, o)| (k.to_string(), *o)).collect();
        self.push(client(p), OpType::Invoke, "assign", json!({ "keys": keys }), None);
        self.push(client(p), OpType::Ok, "assign", json!({"keys": keys, "positions": positions}), None)
    }

    fn fault(&mut self, phase: &str, active: u64) -> u64 {
        self.push(Process::nemesis(), OpType::Info, "kill", json!({"phase": phase, "active": active}), None)
    }

    fn txn(&mut self, p: u64, outcome: OpType, done: Value) -> u64 {
        self.push(client(p), OpType::Invoke, "txn", json!({}), None);
        self.push(client(p), outcome, "txn", done, None)
    }

    fn check(&self) -> Verdict {
        check(&self.ops, &CheckOptions::default()).expect("well-formed history")
    }

    fn check_with(&self, options: CheckOptions) -> Verdict {
        check(&self.ops, &options).expect("well-formed history")
    }
}

fn names(verdict: &Verdict) -> Vec<&str> {
    verdict.anomalies.keys().map(String::as_str).collect()
}

/// Sends on two keys by two processes, consumers that read everything in
/// order, and a drain: the shape of a healthy run.
fn healthy() -> H {
    let mut h = H::default();
    h.assign(2, &[(0, 0), (1, 0)]);
    for v in 0..4 {
        h.send_ok(1, 0, v, v);
        h.send_ok(3, 1, v, v);
    }
    h.poll(2, &[(0, 0, 0), (0, 1, 1), (1, 0, 0)]);
    h.poll(2, &[(0, 2, 2), (0, 3, 3), (1, 1, 1), (1, 2, 2), (1, 3, 3)]);
    h
}

#[test]
fn a_healthy_history_is_valid() {
    let verdict = healthy().check();
    assert!(verdict.valid, "{}", verdict.summary());
    assert_eq!(verdict.stats.acknowledged_sends, 8);
    assert_eq!(verdict.stats.records_read, 8);
    assert_eq!(verdict.stats.keys, 2);
    assert_eq!(verdict.stats.completions["send"]["ok"], 8);
}

#[test]
fn an_empty_history_is_valid() {
    assert!(H::default().check().valid);
}

#[test]
fn an_acknowledged_send_missing_below_a_read_offset_is_lost() {
    let mut h = H::default();
    let (send_invoke, send_done) = h.send_ok(1, 0, 10, 0);
    h.send_ok(1, 0, 11, 1);
    let read = h.poll(2, &[(0, 1, 11)]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![LOST_WRITE]);
    let lost = &verdict.anomalies[LOST_WRITE][0];
    assert_eq!((lost.key, lost.offset, lost.value), (Some(0), Some(0), Some(10)));
    assert_eq!(lost.ops, vec![send_invoke, send_done, read]);
}

#[test]
fn an_acknowledged_send_never_reached_by_reads_is_unseen() {
    let mut h = H::default();
    h.send_ok(1, 0, 10, 0);
    let (_, done) = h.send_ok(1, 0, 11, 1);
    h.poll(2, &[(0, 0, 10)]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![UNSEEN]);
    assert_eq!(verdict.anomalies[UNSEEN][0].value, Some(11));
    assert!(verdict.anomalies[UNSEEN][0].ops.contains(&done));
}

#[test]
fn one_value_at_two_offsets_is_a_duplicate() {
    let mut h = H::default();
    h.send(1, 0, 10, OpType::Info, None);
    let (_, done) = h.send_ok(2, 0, 11, 1);
    let read = h.poll(3, &[(0, 0, 10), (0, 1, 11), (0, 2, 10)]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![DUPLICATE]);
    let duplicate = &verdict.anomalies[DUPLICATE][0];
    assert_eq!((duplicate.key, duplicate.value), (Some(0), Some(10)));
    assert_eq!(duplicate.ops, vec![read]);
    assert!(!verdict.anomalies[DUPLICATE].iter().any(|a| a.ops.contains(&done)));
}

#[test]
fn duplicates_are_reported_but_allowed_without_idempotence() {
    let mut h = H::default();
    h.send_ok(1, 0, 10, 0);
    h.poll(3, &[(0, 0, 10), (0, 1, 10)]);
    let verdict = h.check_with(CheckOptions { duplicates_fatal: false, ..CheckOptions::default() });
    assert!(verdict.valid, "{}", verdict.summary());
    assert_eq!(verdict.allowed[DUPLICATE].len(), 1);
}

#[test]
fn a_send_acknowledged_at_an_offset_that_reads_show_elsewhere_is_a_duplicate() {
    let mut h = H::default();
    h.send_ok(1, 0, 10, 5);
    h.poll(3, &[(0, 4, 10)]);
    let verdict = h.check();
    assert!(names(&verdict).contains(&DUPLICATE), "{}", verdict.summary());
}

#[test]
fn two_values_at_one_offset_are_inconsistent() {
    let mut h = H::default();
    let (_, first) = h.send_ok(1, 0, 10, 0);
    let read = h.poll(2, &[(0, 0, 11)]);
    h.send(3, 0, 11, OpType::Info, None);
    let verdict = h.check();
    assert!(names(&verdict).contains(&INCONSISTENT_OFFSETS), "{}", verdict.summary());
    let found = &verdict.anomalies[INCONSISTENT_OFFSETS][0];
    assert_eq!((found.key, found.offset), (Some(0), Some(0)));
    assert!(found.ops.contains(&first) && found.ops.contains(&read));
}

#[test]
fn reading_a_value_whose_send_failed_is_an_aborted_read() {
    let mut h = H::default();
    h.send_ok(3, 1, 0, 0);
    h.poll(4, &[(1, 0, 0)]);
    let (_, failed) = h.send(1, 0, 10, OpType::Fail, None);
    let read = h.poll(2, &[(0, 0, 10)]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![ABORTED_READ]);
    assert_eq!(verdict.anomalies[ABORTED_READ][0].ops, vec![failed - 1, failed, read]);
    assert_eq!(verdict.anomalies[ABORTED_READ].len(), 1);
}

#[test]
fn reading_a_value_whose_send_was_indeterminate_is_fine() {
    let mut h = healthy();
    h.send(1, 5, 10, OpType::Info, None);
    h.poll(2, &[(5, 0, 10)]);
    let verdict = h.check();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn reading_a_value_of_an_aborted_transaction_is_an_aborted_read() {
    let mut h = healthy();
    h.txn(1, OpType::Ok, json!({"ops": [["send", 5, 9, 0]]}));
    h.txn(1, OpType::Fail, json!({"ops": [["send", 5, 10]]}));
    h.poll(2, &[(5, 0, 9), (5, 1, 10)]);
    assert_eq!(names(&h.check()), vec![ABORTED_READ]);
}

#[test]
fn going_backwards_within_an_assignment_is_a_nonmonotonic_poll() {
    let mut h = H::default();
    h.assign(2, &[(0, 0)]);
    h.send_ok(1, 0, 10, 0);
    h.send_ok(1, 0, 11, 1);
    let first = h.poll(2, &[(0, 0, 10), (0, 1, 11)]);
    let second = h.poll(2, &[(0, 1, 11)]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![NONMONOTONIC_POLL]);
    assert_eq!(verdict.anomalies[NONMONOTONIC_POLL][0].ops, vec![first, second]);
}

#[test]
fn jumping_over_records_within_an_assignment_is_a_skipping_poll() {
    let mut h = H::default();
    h.assign(2, &[(0, 0)]);
    for v in 0..3 {
        h.send_ok(1, 0, v, v);
    }
    h.poll(2, &[(0, 0, 0)]);
    let skipping = h.poll(2, &[(0, 2, 2)]);
    h.poll(3, &[(0, 1, 1)]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![SKIPPING_POLL]);
    assert!(verdict.anomalies[SKIPPING_POLL][0].ops.contains(&skipping));
}

#[test]
fn the_first_read_of_an_assignment_must_start_at_its_position() {
    let mut h = H::default();
    h.send_ok(1, 0, 0, 0);
    h.send_ok(1, 0, 1, 1);
    h.assign(2, &[(0, 0)]);
    h.poll(2, &[(0, 1, 1)]);
    h.poll(3, &[(0, 0, 0)]);
    assert_eq!(names(&h.check()), vec![SKIPPING_POLL]);
}

#[test]
fn a_new_assignment_may_move_the_position() {
    let mut h = H::default();
    h.assign(2, &[(0, 0)]);
    for v in 0..3 {
        h.send_ok(1, 0, v, v);
    }
    h.poll(2, &[(0, 0, 0), (0, 1, 1), (0, 2, 2)]);
    h.assign(2, &[(0, 1)]);
    h.poll(2, &[(0, 1, 1)]);
    h.assign(2, &[(0, 3)]);
    let verdict = h.check();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn a_later_send_landing_before_an_earlier_one_is_a_nonmonotonic_send() {
    let mut h = H::default();
    let (_, earlier) = h.send_ok(1, 0, 10, 1);
    let (_, later) = h.send_ok(1, 0, 11, 0);
    h.poll(2, &[(0, 0, 11), (0, 1, 10)]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![NONMONOTONIC_SEND]);
    let found = &verdict.anomalies[NONMONOTONIC_SEND][0];
    assert!(found.ops.contains(&earlier) && found.ops.contains(&later));
}

#[test]
fn interleaved_sends_of_different_processes_are_not_nonmonotonic() {
    let mut h = H::default();
    h.send_ok(1, 0, 10, 1);
    h.send_ok(2, 0, 11, 0);
    h.poll(3, &[(0, 0, 11), (0, 1, 10)]);
    assert!(h.check().valid);
}

#[test]
fn a_transaction_reading_its_own_send_reads_uncommitted_data() {
    let mut h = H::default();
    h.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0], ["poll", {"0": [[0, 10]]}]]}));
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![UNCOMMITTED_READ]);
}

#[test]
fn reading_a_transactional_value_before_its_transaction_began_is_uncommitted() {
    let mut h = H::default();
    let read = h.poll(2, &[(0, 0, 10)]);
    let txn = h.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0]]}));
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![UNCOMMITTED_READ]);
    assert_eq!(verdict.anomalies[UNCOMMITTED_READ][0].ops, vec![txn - 1, txn, read]);
}

#[test]
fn reading_a_committed_transaction_is_fine() {
    let mut h = H::default();
    h.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0], ["send", 1, 20, 0]], "consumed": {}}));
    h.poll(2, &[(0, 0, 10), (1, 0, 20)]);
    let verdict = h.check();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn nodes_disagreeing_after_the_heal_is_divergence() {
    let mut h = H::default();
    h.fault("start", 1);
    h.fault("stop", 0);
    h.send_ok(1, 0, 10, 0);
    let a = h.poll_at(Process::Named("verify".into()), &[(0, 0, 10)], Some(1));
    // Not a consumer of its own: a second verify read from node 2 that disagrees.
    let b = h.poll_at(Process::Named("verify-2".into()), &[(0, 0, 11)], Some(2));
    let verdict = h.check();
    assert!(names(&verdict).contains(&DIVERGENCE), "{}", verdict.summary());
    assert_eq!(verdict.anomalies[DIVERGENCE][0].ops, vec![a, b]);
}

#[test]
fn nodes_agreeing_after_the_heal_is_fine() {
    let mut h = H::default();
    h.fault("start", 1);
    h.fault("stop", 0);
    h.send_ok(1, 0, 10, 0);
    h.send_ok(1, 0, 11, 1);
    h.poll_at(Process::Named("verify".into()), &[(0, 0, 10), (0, 1, 11)], Some(1));
    h.poll_at(Process::Named("verify-2".into()), &[(0, 0, 10)], Some(2));
    let verdict = h.check();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn one_input_consumed_by_two_committed_transactions_breaks_exactly_once() {
    let mut h = H::default();
    h.send_ok(1, 0, 10, 0);
    let first = h.txn(2, OpType::Ok, json!({"ops": [["send", 1, 100, 0]], "consumed": {"0": [0]}}));
    // The second one is indeterminate, but its output was read: it committed.
    let second = h.txn(3, OpType::Info, json!({"ops": [["send", 1, 101]], "consumed": {"0": [0]}}));
    h.poll(4, &[(0, 0, 10), (1, 0, 100), (1, 1, 101)]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![EXACTLY_ONCE]);
    assert_eq!(verdict.anomalies[EXACTLY_ONCE][0].ops, vec![first, second]);
}

#[test]
fn an_aborted_retry_of_a_consumed_input_keeps_exactly_once() {
    let mut h = H::default();
    h.send_ok(1, 0, 10, 0);
    h.txn(2, OpType::Fail, json!({"ops": [["send", 1, 100]], "consumed": {"0": [0]}}));
    h.txn(2, OpType::Ok, json!({"ops": [["send", 1, 101, 0]], "consumed": {"0": [0]}}));
    h.poll(4, &[(0, 0, 10), (1, 0, 101)]);
    let verdict = h.check();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn a_committed_offset_moving_back_is_an_offset_regression() {
    let mut h = H::default();
    h.push(client(1), OpType::Invoke, "commit", json!({"0": 5}), None);
    let first = h.push(client(1), OpType::Ok, "commit", json!({"0": 5}), None);
    h.push(client(2), OpType::Invoke, "commit", json!({"0": 3}), None);
    let second = h.push(client(2), OpType::Ok, "commit", json!({"0": 3}), None);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![OFFSET_REGRESSION]);
    assert_eq!(verdict.anomalies[OFFSET_REGRESSION][0].ops, vec![first, second]);
}

#[test]
fn committed_offsets_inside_transactions_are_checked_too() {
    let mut h = H::default();
    h.txn(1, OpType::Ok, json!({"ops": [], "commit": {"0": 7}}));
    h.txn(1, OpType::Ok, json!({"ops": [], "commit": {"0": 8}}));
    assert!(h.check().valid);
    h.txn(1, OpType::Ok, json!({"ops": [], "commit": {"0": 2}}));
    assert_eq!(names(&h.check()), vec![OFFSET_REGRESSION]);
}

#[test]
fn an_operation_kind_that_never_succeeds_fails_liveness() {
    let mut h = healthy();
    h.push(client(5), OpType::Invoke, "assign", json!({"keys": [0]}), None);
    h.push(client(5), OpType::Fail, "assign", json!({"keys": [0]}), None);
    // assign succeeded in `healthy`, so that is fine; poll never does here:
    let mut h2 = H::default();
    h2.send_ok(1, 0, 10, 0);
    h2.push(client(2), OpType::Invoke, "poll", Value::Null, None);
    h2.push(client(2), OpType::Fail, "poll", Value::Null, None);
    h2.poll_at(Process::Named("drain".into()), &[(0, 0, 10)], None);
    assert!(h.check().valid);
    let verdict = h2.check();
    assert_eq!(names(&verdict), vec![NEVER_SUCCEEDED]);
    assert!(verdict.anomalies[NEVER_SUCCEEDED][0].message.contains("'poll'"));
}

#[test]
fn writes_that_do_not_resume_after_the_heal_fail_liveness() {
    let mut h = H::default();
    h.send_ok(1, 0, 10, 0);
    h.fault("start", 1);
    let heal = h.fault("stop", 0);
    h.send(1, 0, 11, OpType::Info, None);
    h.poll(2, &[(0, 0, 10)]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![NO_RECOVERY]);
    assert_eq!(verdict.anomalies[NO_RECOVERY][0].ops, vec![heal]);
}

#[test]
fn writes_resuming_within_the_bound_pass_and_late_ones_do_not() {
    let mut h = H::default();
    h.fault("start", 1);
    h.fault("stop", 0);
    h.send_ok(1, 0, 10, 0);
    h.poll(2, &[(0, 0, 10)]);
    assert!(h.check().valid);
    // With a bound shorter than the time to the first acknowledgement (2 ms
    // after the heal at 1 ms steps), the same history fails.
    let strict = h.check_with(CheckOptions { recovery_bound_ns: 500_000, ..CheckOptions::default() });
    assert_eq!(names(&strict), vec![NO_RECOVERY]);
}

#[test]
fn a_short_fault_free_window_is_not_judged() {
    let mut h = H::default();
    h.fault("start", 1);
    h.fault("stop", 0);
    h.fault("start", 1);
    h.fault("stop", 0);
    h.send_ok(1, 0, 10, 0);
    h.poll(2, &[(0, 0, 10)]);
    // The first quiet window lasted 1 ms, shorter than the 3 ms bound: not
    // judged; the second one saw an acknowledgement 2 ms after its heal.
    let verdict = h.check_with(CheckOptions { recovery_bound_ns: 3_000_000, ..CheckOptions::default() });
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn malformed_histories_are_errors_not_verdicts() {
    let mut h = H::default();
    h.push(client(1), OpType::Ok, "send", json!({"key": 0, "value": 1, "offset": 0}), None);
    assert!(matches!(check(&h.ops, &CheckOptions::default()), Err(CheckError::Malformed { index: 0, .. })));

    let mut h = H::default();
    h.push(client(1), OpType::Invoke, "send", json!({"key": "zero", "value": 1}), None);
    assert!(check(&h.ops, &CheckOptions::default()).is_err());

    let mut h = H::default();
    h.push(client(1), OpType::Invoke, "send", json!({"key": 0, "value": 1}), None);
    h.push(client(1), OpType::Invoke, "send", json!({"key": 0, "value": 2}), None);
    assert!(check(&h.ops, &CheckOptions::default()).is_err());
}

#[test]
fn an_unfinished_operation_counts_as_indeterminate() {
    let mut h = healthy();
    h.push(client(9), OpType::Invoke, "send", json!({"key": 5, "value": 1}), None);
    h.poll(2, &[(5, 0, 1)]);
    let verdict = h.check();
    assert!(verdict.valid, "{}", verdict.summary());
    assert_eq!(verdict.stats.completions["send"]["info"], 1);
}

impl H {
    /// An acknowledged `keys` send: stamped `ts`, maybe a re-send.
    fn keyed_ok(&mut self, p: u64, key: u64, value: u64, ts: i64, resend: bool, offset: u64) -> u64 {
        let sent = json!({"key": key, "value": value, "ts": ts, "resend": resend});
        self.push(client(p), OpType::Invoke, "send", sent.clone(), None);
        let mut done = sent;
        done["offset"] = json!(offset);
        self.push(client(p), OpType::Ok, "send", done, None)
    }

    fn log_start(&mut self, key: u64, log_start: u64, at_ms: i64) -> u64 {
        let process = Process::Named("log-start".into());
        self.push(process.clone(), OpType::Invoke, "log-start", json!({"key": key}), None);
        let seen = json!({"key": key, "log_start": log_start, "high_watermark": log_start + 10, "at_ms": at_ms});
        self.push(process, OpType::Ok, "log-start", seen, None)
    }

    /// One node's copy of `key`: (base, next, length, digest) per batch.
    fn replica(&mut self, key: u64, node: u64, range: (u64, u64), batches: &[(u64, u64, u64, &str)]) -> u64 {
        let process = Process::Named("replicas".into());
        let batches: Vec<Value> = batches.iter().map(|&(b, n, l, d)| json!([b, n, l, d])).collect();
        self.push(process.clone(), OpType::Invoke, "replica-read", json!({"key": key, "node": node}), Some(node));
        let copy =
            json!({"key": key, "node": node, "log_start": range.0, "high_watermark": range.1, "batches": batches});
        self.push(process, OpType::Ok, "replica-read", copy, Some(node))
    }
}

fn with_retention(ms: u64) -> CheckOptions {
    CheckOptions { retention_ms: Some(ms), ..CheckOptions::default() }
}

#[test]
fn a_resend_answered_with_the_original_offset_is_fine() {
    let mut h = H::default();
    h.keyed_ok(1, 0, 10, 1_000, false, 0);
    h.keyed_ok(1, 0, 11, 1_000, false, 1);
    // Process 2 sends value 10 again: the original's offset, no new order.
    h.keyed_ok(2, 0, 10, 1_000, true, 0);
    h.keyed_ok(1, 0, 10, 1_000, true, 0);
    h.poll(3, &[(0, 0, 10), (0, 1, 11)]);
    let verdict = h.check();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn a_resend_stored_again_is_a_duplicate() {
    let mut h = H::default();
    h.keyed_ok(1, 0, 10, 1_000, false, 0);
    h.keyed_ok(2, 0, 10, 1_000, true, 1);
    h.poll(3, &[(0, 0, 10), (0, 1, 10)]);
    assert_eq!(names(&h.check()), vec![DUPLICATE]);
}

#[test]
fn records_trimmed_after_their_retention_are_neither_lost_nor_early() {
    let mut h = H::default();
    h.keyed_ok(1, 0, 10, 1_000, false, 0);
    h.keyed_ok(1, 0, 11, 1_000, false, 1);
    h.keyed_ok(1, 0, 12, 9_000, false, 2);
    h.log_start(0, 0, 5_000);
    // Offsets 0 and 1 (stamped 1000, retention 5000) gone at 6001 ms.
    h.log_start(0, 2, 6_001);
    h.poll(3, &[(0, 2, 12)]);
    let verdict = h.check_with(with_retention(5_000));
    assert!(verdict.valid, "{}", verdict.summary());
    assert_eq!(verdict.stats.trimmed_unread, 2);
    // Without the log start the same history has a lost write.
    let mut without = H::default();
    without.keyed_ok(1, 0, 10, 1_000, false, 0);
    without.keyed_ok(1, 0, 12, 9_000, false, 2);
    without.poll(3, &[(0, 2, 12)]);
    assert_eq!(names(&without.check_with(with_retention(5_000))), vec![LOST_WRITE]);
}

#[test]
fn a_record_trimmed_before_its_retention_is_an_early_deletion() {
    let mut h = H::default();
    let stored = h.keyed_ok(1, 0, 10, 1_000, false, 0);
    h.keyed_ok(1, 0, 11, 1_000, false, 1);
    let seen = h.log_start(0, 1, 5_999);
    h.poll(3, &[(0, 1, 11)]);
    let verdict = h.check_with(with_retention(5_000));
    assert_eq!(names(&verdict), vec![EARLY_DELETION]);
    let early = &verdict.anomalies[EARLY_DELETION][0];
    assert_eq!((early.key, early.offset, early.value), (Some(0), Some(0), Some(10)));
    assert!(early.ops.contains(&stored) && early.ops.contains(&seen), "{early:?}");
    // Without retention configured nothing is judged early.
    assert!(h.check().valid);
}

#[test]
fn replicas_holding_the_same_batches_agree() {
    let mut h = H::default();
    h.replica(0, 1, (0, 4), &[(0, 2, 90, "aa"), (2, 4, 90, "bb")]);
    // Node 2 trimmed the first batch already and lags by one batch: the
    // common range is 2..4.
    h.replica(0, 2, (2, 6), &[(2, 4, 90, "bb"), (4, 6, 90, "cc")]);
    let verdict = h.check();
    assert!(verdict.valid, "{}", verdict.summary());
    assert_eq!(verdict.stats.replica_batches_agreed, 1);
}

#[test]
fn replicas_storing_different_bytes_diverge() {
    let mut h = H::default();
    let one = h.replica(0, 1, (0, 4), &[(0, 2, 90, "aa"), (2, 4, 90, "bb")]);
    let two = h.replica(0, 2, (0, 4), &[(0, 2, 90, "aa"), (2, 4, 90, "XX")]);
    // Node 3 split the same offsets into other batches.
    let three = h.replica(0, 3, (0, 4), &[(0, 2, 90, "aa"), (2, 3, 45, "b1"), (3, 4, 45, "b2")]);
    let verdict = h.check();
    assert_eq!(names(&verdict), vec![DIVERGENCE]);
    let found: Vec<Option<u64>> = verdict.anomalies[DIVERGENCE].iter().map(|a| a.offset).collect();
    assert_eq!(found, vec![Some(2), Some(3)]);
    assert_eq!(verdict.anomalies[DIVERGENCE][0].ops, vec![one, two, three]);
}

// ---- consumer groups ----

/// The group settings of the hand-made group histories: 2 partitions, a
/// session timeout of 50 ms, convergence within 100 ms.
fn group_options() -> CheckOptions {
    CheckOptions {
        group: Some(GroupCheckOptions { keys: 2, session_timeout_ns: 50_000_000, convergence_bound_ns: 100_000_000 }),
        ..CheckOptions::default()
    }
}

/// How a heartbeat ends.
enum Answer<'a> {
    /// ok: the answered epoch and assignment.
    Ok(i64, &'a [u64]),
    /// FENCED_MEMBER_EPOCH
    Fenced,
    /// No answer.
    Lost,
}

fn member(p: u64) -> String {
    format!("m{p}")
}

impl H {
    /// Lets `ms` pass before the next entry.
    fn wait(&mut self, ms: u64) {
        self.later_ns += ms * 1_000_000;
    }

    /// A heartbeat of process `p` (member `m<p>`): a join when `epoch` is 0.
    /// Returns the index of its completion.
    fn beat(&mut self, p: u64, epoch: i64, owned: &[u64], answer: Answer<'_>) -> u64 {
        let invoke = json!({"member": member(p), "epoch": epoch, "owned": owned});
        self.push(client(p), OpType::Invoke, "subscribe", invoke.clone(), None);
        match answer {
            Answer::Ok(epoch, assignment) => self.push(
                client(p),
                OpType::Ok,
                "subscribe",
                json!({"member": member(p), "epoch": epoch, "assignment": assignment}),
                None,
            ),
            Answer::Fenced => {
                let mut value = invoke;
                value["fenced"] = json!(true);
                self.push(client(p), OpType::Fail, "subscribe", value, None)
            }
            Answer::Lost => self.push(client(p), OpType::Info, "subscribe", invoke, None),
        }
    }

    /// The member's offset fetch: where its reads of each key continue.
    fn positions(&mut self, p: u64, positions: &[(u64, u64)]) -> u64 {
        let keys: Vec<u64> = positions.iter().map(|(k, _)| *k).collect();
        let at: BTreeMap<String, u64> = positions.iter().map(|(k, o)| (k.to_string(), *o)).collect();
        self.push(client(p), OpType::Invoke, "offset-fetch", json!({"member": member(p), "keys": keys}), None);
        self.push(client(p), OpType::Ok, "offset-fetch", json!({"member": member(p), "positions": at}), None)
    }

    /// A member's poll returning `reads` (key, offset, value).
    fn member_poll(&mut self, p: u64, reads: &[(u64, u64, u64)]) -> u64 {
        let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for &(key, offset, value) in reads {
            by_key.entry(key.to_string()).or_default().push(json!([offset, value]));
        }
        self.push(client(p), OpType::Invoke, "poll", json!({"member": member(p)}), None);
        self.push(client(p), OpType::Ok, "poll", json!(by_key), None)
    }

    /// A member's commit at `epoch`, accepted for every offset given.
    fn member_commit(&mut self, p: u64, epoch: i64, offsets: &[(u64, u64)]) -> u64 {
        let offsets: BTreeMap<String, u64> = offsets.iter().map(|(k, o)| (k.to_string(), *o)).collect();
        let value = json!({"member": member(p), "epoch": epoch, "offsets": offsets});
        self.push(client(p), OpType::Invoke, "commit", value.clone(), None);
        let mut done = value;
        done["refused"] = json!({});
        self.push(client(p), OpType::Ok, "commit", done, None)
    }

    fn crash(&mut self, p: u64) {
        self.push(client(p), OpType::Invoke, "crash", json!({"member": member(p)}), None);
        self.push(client(p), OpType::Info, "crash", json!({"member": member(p)}), None);
    }

    /// The harness's description of the group: owner per key (None: none),
    /// with the given live members.
    fn describe(&mut self, owners: &[Option<u64>], live: &[u64]) -> u64 {
        let mut members: BTreeMap<String, Value> = BTreeMap::new();
        for (key, owner) in owners.iter().enumerate() {
            if let Some(p) = owner {
                let entry = members.entry(member(*p)).or_insert_with(|| json!({"partitions": [], "pending": []}));
                entry["partitions"].as_array_mut().unwrap().push(json!(key));
            }
        }
        let owner_map: BTreeMap<String, Option<String>> =
            owners.iter().enumerate().map(|(k, o)| (k.to_string(), o.map(member))).collect();
        let live: Vec<String> = live.iter().map(|&p| member(p)).collect();
        let process = Process::Named("group-check".into());
        self.push(process.clone(), OpType::Invoke, "describe-group", Value::Null, None);
        self.push(
            process,
            OpType::Ok,
            "describe-group",
            json!({"members": members, "owners": owner_map, "live": live}),
            None,
        )
    }

    fn final_committed(&mut self, offsets: &[(u64, u64)]) -> u64 {
        let offsets: BTreeMap<String, u64> = offsets.iter().map(|(k, o)| (k.to_string(), *o)).collect();
        let process = Process::Named("group-check".into());
        self.push(process.clone(), OpType::Invoke, "committed", json!({"keys": [0, 1]}), None);
        self.push(process, OpType::Ok, "committed", json!({"offsets": offsets}), None)
    }

    /// The final heal, then a write acknowledged and read (key 0 at
    /// `offset`), as writes resume after every heal of a run.
    fn heal(&mut self, offset: u64) {
        self.fault("stop", 0);
        self.send_ok(9, 0, 100 + offset, offset);
        self.poll_at(Process::Named("drain".into()), &[(0, offset, 100 + offset)], None);
    }

    fn check_group(&self) -> Verdict {
        self.check_with(group_options())
    }
}

/// Two members share two keys: m1 joins and gets both, m2 joins, m1 gives
/// up key 1 (revoked, committed, released), m2 gets it and reads on from
/// m1's committed offset. Then a heal, a converged description, and the
/// final committed offsets.
fn healthy_group() -> H {
    let mut h = H::default();
    for v in 0..4 {
        h.send_ok(9, 0, v, v);
        h.send_ok(9, 1, v, v);
    }
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.positions(1, &[(0, 0), (1, 0)]);
    h.member_poll(1, &[(0, 0, 0), (0, 1, 1), (1, 0, 0), (1, 1, 1)]);
    h.member_commit(1, 1, &[(0, 2), (1, 2)]);
    h.beat(2, 0, &[], Answer::Ok(0, &[]));
    // m1 learns that key 1 is revoked; it still owns it until it releases it.
    h.beat(1, 1, &[0, 1], Answer::Ok(1, &[0]));
    h.member_commit(1, 1, &[(1, 2)]);
    h.beat(1, 1, &[0], Answer::Ok(2, &[0]));
    h.beat(2, 0, &[], Answer::Ok(2, &[1]));
    h.positions(2, &[(1, 2)]);
    h.member_poll(2, &[(1, 2, 2), (1, 3, 3)]);
    h.member_commit(2, 2, &[(1, 4)]);
    h.member_poll(1, &[(0, 2, 2), (0, 3, 3)]);
    h.member_commit(1, 2, &[(0, 4)]);
    h.heal(4);
    h.describe(&[Some(1), Some(2)], &[1, 2]);
    h.final_committed(&[(0, 4), (1, 4)]);
    h
}

#[test]
fn a_healthy_group_history_is_valid() {
    let verdict = healthy_group().check_group();
    assert!(verdict.valid, "{}", verdict.summary());
    assert_eq!(verdict.stats.group["grants"], 3);
    // m2's join answered without an epoch is repeated: a second join.
    assert_eq!(verdict.stats.group["member_incarnations"], 3);
}

#[test]
fn a_group_history_needs_the_group_settings() {
    assert!(check(&healthy_group().ops, &CheckOptions::default()).is_err());
}

#[test]
fn a_grant_before_the_holder_released_is_double_ownership() {
    let mut h = H::default();
    let first = h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.beat(1, 1, &[0, 1], Answer::Ok(1, &[0]));
    // m2 is granted key 1 while m1 still lists it.
    let second = h.beat(2, 0, &[], Answer::Ok(2, &[1]));
    h.beat(1, 1, &[0], Answer::Ok(2, &[0]));
    let verdict = h.check_group();
    assert_eq!(names(&verdict), vec![DOUBLE_OWNERSHIP]);
    let found = &verdict.anomalies[DOUBLE_OWNERSHIP][0];
    assert_eq!(found.key, Some(1));
    assert!(found.ops.contains(&first) && found.ops.contains(&second), "{found:?}");
}

#[test]
fn a_grant_after_the_release_was_sent_is_not_double_ownership() {
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.beat(1, 1, &[0, 1], Answer::Ok(1, &[0]));
    // The release is sent; its answer is lost, and m2 is granted key 1.
    h.push(client(1), OpType::Invoke, "subscribe", json!({"member": "m1", "epoch": 1, "owned": [0]}), None);
    h.beat(2, 0, &[], Answer::Ok(2, &[1]));
    h.push(client(1), OpType::Info, "subscribe", json!({"member": "m1", "epoch": 1, "owned": [0]}), None);
    let verdict = h.check_group();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn a_crashed_holder_loses_its_partitions_only_after_its_session_timeout() {
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.crash(1);
    // 3 ms after m1's last heartbeat: far within its 50 ms session.
    h.beat(2, 0, &[], Answer::Ok(2, &[0]));
    assert_eq!(names(&h.check_group()), vec![DOUBLE_OWNERSHIP]);

    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.crash(1);
    h.wait(50);
    h.beat(2, 0, &[], Answer::Ok(2, &[0, 1]));
    let verdict = h.check_group();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn a_fenced_holder_is_excused_only_when_its_session_could_have_expired() {
    // m1's heartbeats go unanswered for a session, m2 takes over, and m1 is
    // then told it is fenced: fine.
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.beat(1, 1, &[0, 1], Answer::Lost);
    h.wait(50);
    h.beat(2, 0, &[], Answer::Ok(2, &[0, 1]));
    h.beat(1, 1, &[0, 1], Answer::Fenced);
    h.beat(1, 0, &[], Answer::Ok(2, &[]));
    let verdict = h.check_group();
    assert!(verdict.valid, "{}", verdict.summary());

    // But a successful heartbeat of m1 after the grant shows the leader
    // had not expired it: both owned the partitions.
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.wait(50);
    h.beat(2, 0, &[], Answer::Ok(2, &[0, 1]));
    h.beat(1, 1, &[0, 1], Answer::Ok(1, &[0, 1]));
    let verdict = h.check_group();
    assert_eq!(names(&verdict), vec![DOUBLE_OWNERSHIP]);
    assert_eq!(verdict.anomalies[DOUBLE_OWNERSHIP].len(), 2, "both keys");
}

#[test]
fn an_accepted_commit_of_a_partition_never_granted_is_by_a_non_owner() {
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0]));
    let commit = h.member_commit(1, 1, &[(0, 1), (1, 1)]);
    let verdict = h.check_group();
    assert_eq!(names(&verdict), vec![COMMIT_BY_NON_OWNER]);
    let found = &verdict.anomalies[COMMIT_BY_NON_OWNER];
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, Some(1));
    assert!(found[0].ops.contains(&commit));
}

#[test]
fn commits_while_revoking_are_fine_and_after_the_release_are_not() {
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.beat(1, 1, &[0, 1], Answer::Ok(1, &[0]));
    // Revoked but not yet released: still its own.
    h.member_commit(1, 1, &[(1, 3)]);
    assert!(h.check_group().valid);
    h.beat(1, 1, &[0], Answer::Ok(2, &[0]));
    h.member_commit(1, 2, &[(1, 4)]);
    assert_eq!(names(&h.check_group()), vec![COMMIT_BY_NON_OWNER]);
}

#[test]
fn a_commit_at_an_epoch_before_the_grant_is_by_a_non_owner() {
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0]));
    h.beat(1, 1, &[0], Answer::Ok(3, &[0, 1]));
    h.member_commit(1, 3, &[(1, 1)]);
    assert!(h.check_group().valid);
    h.member_commit(1, 2, &[(1, 2)]);
    assert_eq!(names(&h.check_group()), vec![COMMIT_BY_NON_OWNER]);
}

#[test]
fn an_accepted_commit_of_an_expired_member_is_by_a_non_owner() {
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0]));
    h.wait(50);
    h.beat(2, 0, &[], Answer::Ok(2, &[0]));
    // m1 never heard of it: its session was over, so the commit must be refused.
    h.member_commit(1, 1, &[(0, 5)]);
    assert_eq!(names(&h.check_group()), vec![COMMIT_BY_NON_OWNER]);
}

#[test]
fn reading_a_partition_after_releasing_it_is_a_poll_by_a_non_owner() {
    let mut h = H::default();
    h.send_ok(9, 1, 0, 0);
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.positions(1, &[(0, 0), (1, 0)]);
    h.beat(1, 1, &[0, 1], Answer::Ok(1, &[0]));
    h.beat(1, 1, &[0], Answer::Ok(2, &[0]));
    let poll = h.member_poll(1, &[(1, 0, 0)]);
    let verdict = h.check_group();
    assert_eq!(names(&verdict), vec![POLL_BY_NON_OWNER]);
    assert!(verdict.anomalies[POLL_BY_NON_OWNER][0].ops.contains(&poll));
}

#[test]
fn a_final_committed_offset_below_an_accepted_commit_is_an_offset_regression() {
    let mut h = H::default();
    for v in 0..5 {
        h.send_ok(9, 0, v, v);
    }
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.positions(1, &[(0, 0), (1, 0)]);
    h.member_poll(1, &[(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 3), (0, 4, 4)]);
    let commit = h.member_commit(1, 1, &[(0, 5)]);
    let read = h.final_committed(&[(0, 3)]);
    let verdict = h.check_group();
    assert_eq!(names(&verdict), vec![OFFSET_REGRESSION]);
    assert_eq!(verdict.anomalies[OFFSET_REGRESSION][0].ops, vec![commit, read]);
}

#[test]
fn accepted_member_commits_moving_back_are_an_offset_regression() {
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0]));
    h.member_commit(1, 1, &[(0, 5)]);
    h.member_commit(1, 1, &[(0, 2)]);
    assert_eq!(names(&h.check_group()), vec![OFFSET_REGRESSION]);
}

#[test]
fn refused_offsets_of_a_member_commit_are_not_committed() {
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0]));
    h.member_commit(1, 1, &[(0, 5)]);
    // Offset 2 of key 0 and key 1 were refused: neither a regression nor a
    // commit by a non-owner.
    let value = json!({"member": "m1", "epoch": 1, "offsets": {"0": 2, "1": 1}});
    h.push(client(1), OpType::Invoke, "commit", value, None);
    let done = json!({"member": "m1", "epoch": 1, "offsets": {}, "refused": {"0": "STALE_MEMBER_EPOCH", "1": "STALE_MEMBER_EPOCH"}});
    h.push(client(1), OpType::Ok, "commit", done, None);
    let verdict = h.check_group();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn an_acknowledged_record_below_the_committed_offset_that_no_member_read_is_unconsumed() {
    let mut h = H::default();
    let mut sends = Vec::new();
    for v in 0..4 {
        sends.push(h.send_ok(9, 0, v, v));
    }
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.positions(1, &[(0, 0)]);
    h.member_poll(1, &[(0, 0, 0), (0, 1, 1)]);
    // A second member reads from 3: offset 2 is skipped by the group.
    h.beat(2, 0, &[], Answer::Ok(0, &[]));
    h.beat(1, 1, &[0, 1], Answer::Ok(1, &[1]));
    h.beat(1, 1, &[1], Answer::Ok(2, &[1]));
    h.beat(2, 0, &[], Answer::Ok(2, &[0]));
    h.positions(2, &[(0, 3)]);
    h.member_poll(2, &[(0, 3, 3)]);
    h.member_commit(2, 2, &[(0, 4)]);
    // A drain that reads everything does not count: it is not a member.
    h.poll_at(Process::Named("drain".into()), &[(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 3)], None);
    let read = h.final_committed(&[(0, 4)]);
    let verdict = h.check_group();
    assert_eq!(names(&verdict), vec![UNCONSUMED]);
    let found = &verdict.anomalies[UNCONSUMED];
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].key, found[0].offset), (Some(0), Some(2)));
    assert!(found[0].ops.contains(&sends[2].1) && found[0].ops.contains(&read));
}

#[test]
fn a_group_that_does_not_converge_in_time_is_reported() {
    // Key 1 has no owner after the heal.
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0]));
    h.heal(0);
    h.describe(&[Some(1), None], &[1]);
    assert_eq!(names(&h.check_group()), vec![NOT_CONVERGED]);

    // Owned by a member that is not live (a crashed one).
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.heal(0);
    h.describe(&[Some(1), Some(1)], &[2]);
    assert_eq!(names(&h.check_group()), vec![NOT_CONVERGED]);

    // Converged, but only after the bound (100 ms).
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.heal(0);
    h.describe(&[Some(1), None], &[1]);
    h.wait(100);
    h.describe(&[Some(1), Some(1)], &[1]);
    assert_eq!(names(&h.check_group()), vec![NOT_CONVERGED]);

    // Converged in time after an unconverged look.
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.heal(0);
    h.describe(&[Some(1), None], &[1]);
    h.wait(50);
    h.describe(&[Some(1), Some(1)], &[1]);
    let verdict = h.check_group();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn a_partition_listed_by_two_members_is_not_converged() {
    let mut h = H::default();
    h.beat(1, 0, &[], Answer::Ok(1, &[0, 1]));
    h.heal(0);
    h.describe(&[Some(1), Some(1)], &[1, 2]);
    // m2 also lists key 1 (as pending revocation) in the description.
    let last = h.ops.len() - 1;
    h.ops[last].value["members"]["m2"] = json!({"partitions": [], "pending": [1]});
    assert_eq!(names(&h.check_group()), vec![NOT_CONVERGED]);
}

#[test]
fn a_reader_that_sees_part_of_a_committed_transaction_is_a_torn_transaction() {
    let mut h = H::default();
    let txn = h.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0], ["send", 1, 20, 0]]}));
    h.send_ok(3, 1, 21, 1);
    h.assign(2, &[(0, 0), (1, 0)]);
    h.poll(2, &[(0, 0, 10), (1, 1, 21)]);
    let verdict = h.check();
    assert!(names(&verdict).contains(&TORN_TRANSACTION), "{}", verdict.summary());
    assert!(verdict.anomalies[TORN_TRANSACTION][0].ops.contains(&(txn - 1)));

    let mut whole = H::default();
    whole.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0], ["send", 1, 20, 0]]}));
    whole.send_ok(3, 1, 21, 1);
    whole.assign(2, &[(0, 0), (1, 0)]);
    whole.poll(2, &[(0, 0, 10), (1, 0, 20), (1, 1, 21)]);
    let verdict = whole.check();
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn committed_transactions_that_read_each_other_are_a_g1c_cycle() {
    let mut h = H::default();
    let t1 = h.push(client(1), OpType::Invoke, "txn", json!({}), None);
    let t2 = h.push(client(2), OpType::Invoke, "txn", json!({}), None);
    h.push(client(1), OpType::Ok, "txn", json!({"ops": [["poll", {"1": [[0, 20]]}], ["send", 0, 10, 0]]}), None);
    h.push(client(2), OpType::Ok, "txn", json!({"ops": [["poll", {"0": [[0, 10]]}], ["send", 1, 20, 0]]}), None);
    let verdict = h.check_with(CheckOptions { sparse_reads: true, ..CheckOptions::default() });
    assert_eq!(verdict.anomalies[G1C][0].ops, vec![t1, t2], "{}", verdict.summary());

    // One way only: T2 read what T1 wrote.
    let mut chain = H::default();
    chain.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0]]}));
    chain.txn(2, OpType::Ok, json!({"ops": [["poll", {"0": [[0, 10]]}], ["send", 1, 20, 0]]}));
    chain.assign(3, &[(1, 0)]);
    chain.poll(3, &[(1, 0, 20)]);
    let verdict = chain.check_with(CheckOptions { sparse_reads: true, ..CheckOptions::default() });
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn a_committed_write_never_read_past_is_a_lost_committed_write() {
    let mut h = H::default();
    h.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0]]}));
    h.send_ok(3, 0, 11, 1);
    h.assign(2, &[(0, 0)]);
    h.poll(2, &[(0, 1, 11)]);
    let verdict = h.check_with(CheckOptions { sparse_reads: true, ..CheckOptions::default() });
    assert_eq!(names(&verdict), vec![LOST_COMMITTED_WRITE], "{}", verdict.summary());
}

#[test]
fn read_committed_readers_may_skip_offsets_when_reads_are_sparse() {
    let mut h = H::default();
    h.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0]]}));
    // Offset 1 is the marker, 2 an aborted record: never shown.
    h.txn(1, OpType::Fail, json!({"ops": [["send", 0, 11]]}));
    h.txn(1, OpType::Ok, json!({"ops": [["send", 0, 12, 4]]}));
    h.assign(2, &[(0, 0)]);
    h.poll(2, &[(0, 0, 10), (0, 4, 12)]);
    assert!(names(&h.check()).contains(&SKIPPING_POLL), "dense reads are expected by default");
    let verdict = h.check_with(CheckOptions { sparse_reads: true, ..CheckOptions::default() });
    assert!(verdict.valid, "{}", verdict.summary());
}

#[test]
fn a_transaction_open_past_its_timeout_and_the_bound_is_hanging() {
    let row = |age: u64| json!({"id": "jepsen-txn-0", "state": "ONGOING", "age_ms": age, "timeout_ms": 10_000});
    let mut h = H::default();
    h.push(Process::Named("txn-check".into()), OpType::Invoke, "txn-list", Value::Null, None);
    let list = json!({"transactions": [row(20_000), {"id": "done", "state": "COMPLETE_COMMIT", "age_ms": 0, "timeout_ms": 1}], "bound_ms": 15_000});
    h.push(Process::Named("txn-check".into()), OpType::Ok, "txn-list", list, None);
    assert!(h.check().valid, "within timeout + bound");
    let mut late = H::default();
    late.push(Process::Named("txn-check".into()), OpType::Invoke, "txn-list", Value::Null, None);
    let list = json!({"transactions": [row(25_001)], "bound_ms": 15_000});
    late.push(Process::Named("txn-check".into()), OpType::Ok, "txn-list", list, None);
    assert_eq!(names(&late.check()), vec![HANGING_TRANSACTION]);
}

#[test]
fn a_reader_that_started_past_a_record_of_a_transaction_is_not_torn() {
    // The reader's assignment starts at 1: the record at 0 was consumed by
    // someone before it (a committed offset), so it never had to read it.
    let mut h = H::default();
    h.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0], ["send", 0, 11, 1]]}));
    h.send_ok(3, 0, 12, 2);
    h.assign(2, &[(0, 1)]);
    h.poll(2, &[(0, 1, 11), (0, 2, 12)]);
    let verdict = h.check_with(CheckOptions { sparse_reads: true, ..CheckOptions::default() });
    assert!(!names(&verdict).contains(&TORN_TRANSACTION), "{}", verdict.summary());
    // From 0 it must read both.
    let mut torn = H::default();
    torn.txn(1, OpType::Ok, json!({"ops": [["send", 0, 10, 0], ["send", 0, 11, 1]]}));
    torn.send_ok(3, 0, 12, 2);
    torn.assign(2, &[(0, 0)]);
    torn.poll(2, &[(0, 1, 11), (0, 2, 12)]);
    let verdict = torn.check_with(CheckOptions { sparse_reads: true, ..CheckOptions::default() });
    assert!(names(&verdict).contains(&TORN_TRANSACTION), "{}", verdict.summary());
}
