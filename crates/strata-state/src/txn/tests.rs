use proptest::prelude::*;

use super::*;

/// Producer ids drawn as the metadata state would: a counter.
struct Ids(u64);

impl Ids {
    fn allocate(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

struct Harness {
    state: TransactionsState,
    ids: Ids,
}

impl Harness {
    fn new() -> Harness {
        Harness { state: TransactionsState::default(), ids: Ids(100) }
    }

    fn apply(&mut self, command: TxnCommand) -> TxnResponse {
        let before = self.state.clone();
        let ids = &mut self.ids;
        let response = self.state.apply(command, &mut || ids.allocate());
        if matches!(response, TxnResponse::Error(_)) {
            assert_eq!(self.state, before, "a refusal changed the state");
        }
        self.state.check_invariants();
        response
    }

    fn init(&mut self, id: &str) -> (u64, i16) {
        match self.apply(TxnCommand::InitProducer { transactional_id: id.into(), timeout_ms: 1000, now_ms: 0 }) {
            TxnResponse::Producer { producer_id, producer_epoch } => (producer_id, producer_epoch),
            other => panic!("{other:?}"),
        }
    }

    fn add(&mut self, id: &str, producer: (u64, i16), partition: u32, now_ms: u64) -> TxnResponse {
        self.apply(TxnCommand::AddPartitions {
            transactional_id: id.into(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            partitions: [("t".to_string(), partition)].into(),
            now_ms,
        })
    }

    fn end(&mut self, id: &str, producer: (u64, i16), decision: Decision) -> TxnResponse {
        self.apply(TxnCommand::End {
            transactional_id: id.into(),
            producer_id: producer.0,
            producer_epoch: producer.1,
            decision,
            now_ms: 5,
        })
    }

    fn complete(&mut self, id: &str) -> TxnResponse {
        let epoch = self.state.transactions[id].producer_epoch;
        self.apply(TxnCommand::Complete { transactional_id: id.into(), producer_epoch: epoch, now_ms: 6 })
    }

    fn txn(&self, id: &str) -> &Transaction {
        &self.state.transactions[id]
    }
}

fn code(response: TxnResponse) -> ErrorCode {
    match response {
        TxnResponse::Error(error) => error.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn offsets(offset: u64) -> BTreeMap<TopicPartition, StagedOffset> {
    [(("in".to_string(), 0), StagedOffset { offset, metadata: String::new() })].into()
}

#[test]
fn a_commit_prepares_with_a_new_epoch_completes_and_hands_out_its_offsets() {
    let mut h = Harness::new();
    let producer = h.init("job");
    assert_eq!(h.add("job", producer, 0, 1), TxnResponse::Added);
    assert_eq!(h.txn("job").status, TxnStatus::Ongoing);
    let staged = h.apply(TxnCommand::AddOffsets {
        transactional_id: "job".into(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        group_id: "g".into(),
        member_id: "m".into(),
        member_epoch: 1,
        offsets: offsets(7),
        now_ms: 2,
    });
    assert_eq!(staged, TxnResponse::Added);
    let ended = h.end("job", producer, Decision::Commit);
    let next = (producer.0, producer.1 + 1);
    assert_eq!(ended, TxnResponse::Ended { producer_id: next.0, producer_epoch: next.1, decision: Decision::Commit });
    assert_eq!(h.txn("job").status, TxnStatus::PrepareCommit);
    // The old epoch names the finished transaction: a late produce of it is refused.
    assert_eq!(code(h.add("job", producer, 1, 3)), ErrorCode::ProducerFenced);
    // An EndTxn retried after its answer was lost gets the same answer.
    assert_eq!(h.end("job", producer, Decision::Commit), ended);
    // Preparing: nothing new joins until the markers are written.
    assert_eq!(code(h.add("job", next, 1, 3)), ErrorCode::ConcurrentTransactions);
    let TxnResponse::Completed { decision, offsets: stored } = h.complete("job") else { panic!() };
    assert_eq!(decision, Decision::Commit);
    assert_eq!(stored, BTreeMap::from([("g".to_string(), offsets(7))]));
    assert_eq!(h.txn("job").status, TxnStatus::CompleteCommit);
    // The next transaction runs at the new epoch.
    assert_eq!(h.add("job", next, 1, 7), TxnResponse::Added);
    assert_eq!(h.txn("job").started_ms, 7);
}

#[test]
fn an_abort_drops_the_staged_offsets() {
    let mut h = Harness::new();
    let producer = h.init("job");
    h.apply(TxnCommand::AddOffsets {
        transactional_id: "job".into(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        group_id: "g".into(),
        member_id: "m".into(),
        member_epoch: 1,
        offsets: offsets(3),
        now_ms: 1,
    });
    assert!(matches!(h.end("job", producer, Decision::Abort), TxnResponse::Ended { decision: Decision::Abort, .. }));
    assert_eq!(h.complete("job"), TxnResponse::Completed { decision: Decision::Abort, offsets: BTreeMap::new() });
    // Markers of that transaction written again (a new leader resuming) are stale.
    let epoch = h.txn("job").producer_epoch;
    let again = TxnCommand::Complete { transactional_id: "job".into(), producer_epoch: epoch, now_ms: 9 };
    assert_eq!(code(h.apply(again)), ErrorCode::InvalidTxnState);
}

#[test]
fn a_new_instance_fences_the_old_one_and_aborts_what_it_left_open() {
    let mut h = Harness::new();
    let old = h.init("job");
    h.add("job", old, 0, 1);
    let init = TxnCommand::InitProducer { transactional_id: "job".into(), timeout_ms: 1000, now_ms: 2 };
    assert_eq!(h.apply(init.clone()), TxnResponse::Pending);
    assert_eq!(h.txn("job").status, TxnStatus::PrepareAbort);
    assert_eq!(h.apply(init.clone()), TxnResponse::Pending, "still finishing");
    assert_eq!(code(h.add("job", old, 1, 3)), ErrorCode::ProducerFenced, "the zombie's sends are refused");
    assert_eq!(code(h.end("job", old, Decision::Commit)), ErrorCode::ProducerFenced);
    h.complete("job");
    let new = match h.apply(init) {
        TxnResponse::Producer { producer_id, producer_epoch } => (producer_id, producer_epoch),
        other => panic!("{other:?}"),
    };
    assert_eq!(new, (old.0, old.1 + 2), "one bump for the abort, one for the init");
    assert_eq!(code(h.add("job", old, 1, 3)), ErrorCode::ProducerFenced);
    assert_eq!(h.add("job", new, 1, 3), TxnResponse::Added);
}

#[test]
fn a_timed_out_transaction_is_aborted_and_its_producer_told_why() {
    let mut h = Harness::new();
    let producer = h.init("job");
    h.add("job", producer, 0, 100);
    let abort = |now_ms| TxnCommand::Abort {
        transactional_id: "job".into(),
        producer_epoch: producer.1,
        reason: AbortReason::TimedOut,
        now_ms,
    };
    assert_eq!(h.state.needing_work(1099).len(), 0);
    assert_eq!(code(h.apply(abort(1099))), ErrorCode::InvalidTxnState, "not expired yet");
    assert_eq!(h.state.needing_work(1100).len(), 1);
    assert_eq!(h.apply(abort(1100)), TxnResponse::Aborting { producer_epoch: producer.1 + 1 });
    assert_eq!(code(h.add("job", producer, 1, 1200)), ErrorCode::TransactionTimedOut);
    assert_eq!(code(h.end("job", producer, Decision::Commit)), ErrorCode::TransactionTimedOut);
    assert_eq!(h.state.needing_work(1200).len(), 1, "preparing: the markers are still due");
    h.complete("job");
    assert!(h.state.needing_work(1_000_000).is_empty());
    // An admin abort says so too.
    let producer = h.init("job");
    h.add("job", producer, 0, 2000);
    let admin = TxnCommand::Abort {
        transactional_id: "job".into(),
        producer_epoch: producer.1,
        reason: AbortReason::Admin,
        now_ms: 2001,
    };
    assert!(matches!(h.apply(admin), TxnResponse::Aborting { .. }));
    assert_eq!(code(h.add("job", producer, 1, 2002)), ErrorCode::TransactionAborted);
}

#[test]
fn bad_input_is_refused_with_its_code() {
    let mut h = Harness::new();
    let init = |id: &str, timeout_ms| TxnCommand::InitProducer { transactional_id: id.into(), timeout_ms, now_ms: 0 };
    assert_eq!(code(h.apply(init("", 1000))), ErrorCode::InvalidRequest);
    assert_eq!(code(h.apply(init(&"x".repeat(MAX_TRANSACTIONAL_ID_LEN + 1), 1000))), ErrorCode::InvalidRequest);
    assert_eq!(code(h.apply(init("job", MAX_TRANSACTION_TIMEOUT_MS + 1))), ErrorCode::InvalidRequest);
    assert_eq!(code(h.apply(init("job", 0))), ErrorCode::InvalidRequest);
    assert_eq!(code(h.add("nobody", (1, 0), 0, 0)), ErrorCode::TransactionalIdNotFound);
    let producer = h.init("job");
    assert_eq!(code(h.end("job", producer, Decision::Commit)), ErrorCode::InvalidTxnState, "commit without begin");
    assert!(matches!(h.end("job", producer, Decision::Abort), TxnResponse::Ended { .. }), "nothing to abort");
    assert_eq!(code(h.add("job", (producer.0, producer.1 + 5), 0, 0)), ErrorCode::InvalidRequest, "a future epoch");
    assert_eq!(code(h.add("job", (producer.0 + 50, 0), 0, 0)), ErrorCode::InvalidRequest, "an id never given");
    let too_many: BTreeSet<TopicPartition> =
        (0..=MAX_PARTITIONS_PER_TRANSACTION as u32).map(|p| ("t".to_string(), p)).collect();
    let add = TxnCommand::AddPartitions {
        transactional_id: "job".into(),
        producer_id: producer.0,
        producer_epoch: producer.1,
        partitions: too_many,
        now_ms: 0,
    };
    assert_eq!(code(h.apply(add)), ErrorCode::LimitReached);
    h.add("job", producer, 0, 0);
    h.end("job", producer, Decision::Commit);
    let next = (producer.0, producer.1 + 1);
    assert_eq!(code(h.end("job", next, Decision::Abort)), ErrorCode::InvalidTxnState, "already decided");
}

#[test]
fn epochs_used_up_move_to_a_fresh_producer_id() {
    let mut h = Harness::new();
    let producer = h.init("job");
    h.state.transactions.get_mut("job").unwrap().producer_epoch = i16::MAX - 1;
    let at_max_minus_one = (producer.0, i16::MAX - 1);
    h.add("job", at_max_minus_one, 0, 0);
    let ended = h.end("job", at_max_minus_one, Decision::Commit);
    assert_eq!(
        ended,
        TxnResponse::Ended { producer_id: producer.0, producer_epoch: i16::MAX, decision: Decision::Commit }
    );
    h.complete("job");
    let at_max = (producer.0, i16::MAX);
    h.add("job", at_max, 0, 1);
    let TxnResponse::Ended { producer_id, producer_epoch, .. } = h.end("job", at_max, Decision::Commit) else {
        panic!()
    };
    assert!(producer_id > producer.0 && producer_epoch == 0, "a fresh id: {producer_id}/{producer_epoch}");
    // The retry of that EndTxn is still recognised, and the old id is fenced.
    assert!(matches!(h.end("job", at_max, Decision::Commit), TxnResponse::Ended { producer_epoch: 0, .. }));
    h.complete("job");
    assert_eq!(code(h.add("job", at_max, 0, 2)), ErrorCode::ProducerFenced);
    assert_eq!(h.add("job", (producer_id, 0), 0, 2), TxnResponse::Added);
}

/// Whose producer id and epoch a generated command carries, resolved
/// against the state when it is applied: mostly the current producer, so
/// that sequences reach commits, also older and made-up ones.
#[derive(Clone, Debug)]
enum Who {
    Current,
    /// One epoch before the current one.
    Older,
    Made(u64, i16),
}

#[derive(Clone, Debug)]
enum Step {
    Init {
        id: String,
        now_ms: u64,
    },
    Add {
        id: String,
        who: Who,
        partition: u32,
        now_ms: u64,
    },
    Offsets {
        id: String,
        who: Who,
        offset: u64,
        now_ms: u64,
    },
    End {
        id: String,
        who: Who,
        decision: Decision,
        now_ms: u64,
    },
    /// Markers written; `stale` uses an epoch one below the current.
    Complete {
        id: String,
        stale: bool,
        now_ms: u64,
    },
    Abort {
        id: String,
        stale: bool,
        reason: AbortReason,
        now_ms: u64,
    },
}

fn resolve(h: &Harness, id: &str, who: &Who) -> (u64, i16) {
    let current = h.state.transactions.get(id).map_or((1, 0), |t| (t.producer_id, t.producer_epoch));
    match who {
        Who::Current => current,
        Who::Older => (current.0, current.1.saturating_sub(1)),
        Who::Made(producer_id, epoch) => (*producer_id, *epoch),
    }
}

fn epoch_of(h: &Harness, id: &str, stale: bool) -> i16 {
    let epoch = h.state.transactions.get(id).map_or(0, |t| t.producer_epoch);
    if stale {
        epoch.saturating_sub(1)
    } else {
        epoch
    }
}

fn to_command(h: &Harness, step: &Step) -> TxnCommand {
    match step.clone() {
        Step::Init { id, now_ms } => TxnCommand::InitProducer { transactional_id: id, timeout_ms: 1000, now_ms },
        Step::Add { id, who, partition, now_ms } => {
            let (producer_id, producer_epoch) = resolve(h, &id, &who);
            TxnCommand::AddPartitions {
                transactional_id: id,
                producer_id,
                producer_epoch,
                partitions: [("t".to_string(), partition)].into(),
                now_ms,
            }
        }
        Step::Offsets { id, who, offset, now_ms } => {
            let (producer_id, producer_epoch) = resolve(h, &id, &who);
            TxnCommand::AddOffsets {
                transactional_id: id,
                producer_id,
                producer_epoch,
                group_id: "g".into(),
                member_id: "m".into(),
                member_epoch: 1,
                offsets: offsets(offset),
                now_ms,
            }
        }
        Step::End { id, who, decision, now_ms } => {
            let (producer_id, producer_epoch) = resolve(h, &id, &who);
            TxnCommand::End { transactional_id: id, producer_id, producer_epoch, decision, now_ms }
        }
        Step::Complete { id, stale, now_ms } => {
            let producer_epoch = epoch_of(h, &id, stale);
            TxnCommand::Complete { transactional_id: id, producer_epoch, now_ms }
        }
        Step::Abort { id, stale, reason, now_ms } => {
            let producer_epoch = epoch_of(h, &id, stale);
            TxnCommand::Abort { transactional_id: id, producer_epoch, reason, now_ms }
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    let id = prop::sample::select(vec!["a", "b"]).prop_map(str::to_string);
    let who = prop_oneof![
        6 => Just(Who::Current),
        1 => Just(Who::Older),
        1 => (100u64..104, 0i16..4).prop_map(|(p, e)| Who::Made(p, e)),
    ];
    let now = 0u64..3000;
    let decision = prop::bool::ANY.prop_map(|c| if c { Decision::Commit } else { Decision::Abort });
    let reason = prop::sample::select(vec![AbortReason::TimedOut, AbortReason::Admin]);
    let stale = prop::bool::weighted(0.2);
    prop_oneof![
        (id.clone(), now.clone()).prop_map(|(id, now_ms)| Step::Init { id, now_ms }),
        (id.clone(), who.clone(), 0u32..3, now.clone()).prop_map(|(id, who, partition, now_ms)| Step::Add {
            id,
            who,
            partition,
            now_ms
        }),
        (id.clone(), who.clone(), 0u64..50, now.clone()).prop_map(|(id, who, offset, now_ms)| Step::Offsets {
            id,
            who,
            offset,
            now_ms
        }),
        (id.clone(), who, decision, now.clone()).prop_map(|(id, who, decision, now_ms)| Step::End {
            id,
            who,
            decision,
            now_ms
        }),
        (id.clone(), stale, now.clone()).prop_map(|(id, stale, now_ms)| Step::Complete { id, stale, now_ms }),
        (id, stale, reason, now).prop_map(|(id, stale, reason, now_ms)| Step::Abort { id, stale, reason, now_ms }),
    ]
}

type Staged = BTreeMap<String, BTreeMap<String, BTreeMap<TopicPartition, StagedOffset>>>;

/// Applies `steps`, checking on the way (besides the harness's checks: a
/// refusal changes nothing, the invariants hold) that the producer of an
/// id never goes back and that a completed commit hands out exactly the
/// offsets staged since its transaction began, an abort none. Returns the
/// responses, for the coverage check.
fn run(steps: &[Step]) -> Result<Vec<TxnResponse>, TestCaseError> {
    let mut h = Harness::new();
    let mut staged = Staged::new();
    let mut responses = Vec::new();
    for step in steps {
        let command = to_command(&h, step);
        let before = h.state.transactions.clone();
        let response = h.apply(command.clone());
        for (id, txn) in &h.state.transactions {
            if let Some(old) = before.get(id) {
                prop_assert!(
                    (txn.producer_id, txn.producer_epoch) >= (old.producer_id, old.producer_epoch)
                        || txn.producer_epoch == 0 && txn.producer_id > old.producer_id
                );
            }
        }
        match (&command, &response) {
            (TxnCommand::AddOffsets { transactional_id, group_id, offsets, .. }, TxnResponse::Added) => {
                let group = staged.entry(transactional_id.clone()).or_default().entry(group_id.clone()).or_default();
                group.extend(offsets.clone());
            }
            (TxnCommand::Complete { transactional_id, .. }, TxnResponse::Completed { decision, offsets }) => {
                let expected = staged.remove(transactional_id).unwrap_or_default();
                match decision {
                    Decision::Commit => prop_assert_eq!(offsets, &expected),
                    Decision::Abort => prop_assert!(offsets.is_empty()),
                }
            }
            _ => {}
        }
        for (id, txn) in &h.state.transactions {
            if txn.status.is_idle() {
                prop_assert!(staged.remove(id).is_none_or(|s| s.is_empty()), "{id} went idle with offsets staged");
            }
        }
        responses.push(response);
    }
    Ok(responses)
}

proptest! {
    #[test]
    fn random_sequences_keep_the_invariants(steps in prop::collection::vec(step(), 1..80)) {
        run(&steps)?;
    }
}

/// The generator reaches what the property is about: commits that hand
/// out offsets, aborts, timeouts, fencing and stale markers.
#[test]
fn random_sequences_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..256 {
        let steps = prop::collection::vec(step(), 1..80).new_tree(&mut runner).unwrap().current();
        for response in run(&steps).unwrap() {
            seen.insert(match response {
                TxnResponse::Completed { decision: Decision::Commit, offsets } if !offsets.is_empty() => {
                    "commit with offsets".to_string()
                }
                TxnResponse::Completed { decision, .. } => format!("completed {decision:?}"),
                TxnResponse::Error(error) => format!("{:?}", error.code),
                TxnResponse::Pending => "pending".to_string(),
                TxnResponse::Aborting { .. } => "aborting".to_string(),
                _ => continue,
            });
        }
    }
    for outcome in [
        "commit with offsets",
        "completed Abort",
        "pending",
        "aborting",
        "ProducerFenced",
        "ConcurrentTransactions",
        "InvalidTxnState",
        "TransactionTimedOut",
    ] {
        assert!(seen.contains(outcome), "never reached {outcome}: {seen:?}");
    }
}
