#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::*;
use crate::checkpoint::{Checkpoint, SequenceNumber};
use crate::lease::{LeaseKey, WorkerId};
use crate::testing::memory_store::{LeaseEvent, LeaseOp};
use crate::testing::recording::{Delivery, DeliveryOutcome, LifecycleEvent, LifecycleKind};
use crate::testing::sim::record::ChangeKind;

const LEASE_DURATION: Duration = Duration::from_secs(10);

/// A hand-built scenario: records, a log (entries in order) and a lease history.
struct Scenario {
    t0: Instant,
    written: Vec<SimRecord>,
    /// Sequence number → index in `written`.
    by_seq: HashMap<u128, usize>,
    trimmed: Vec<SimRecord>,
    entries: Vec<LogEntry>,
    history: Vec<LeaseEvent>,
    parents: Vec<(ShardId, Vec<ShardId>)>,
}

fn w(id: &str) -> Option<WorkerId> {
    Some(WorkerId::new(id))
}

fn at(n: u128) -> Checkpoint {
    Checkpoint::At(SequenceNumber::from_u128(n))
}

use DeliveryOutcome::{Failed, Processed};

impl Scenario {
    fn new() -> Self {
        Self {
            t0: Instant::now(),
            written: Vec::new(),
            by_seq: HashMap::new(),
            trimmed: Vec::new(),
            entries: Vec::new(),
            history: Vec::new(),
            parents: Vec::new(),
        }
    }

    fn time(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn write(&mut self, shard: &str, seq: u128, key: &str, version: u64) {
        self.by_seq.insert(seq, self.written.len());
        self.written.push(SimRecord {
            sequence_number: SequenceNumber::from_u128(seq),
            shard_id: ShardId::new(shard),
            key: key.to_owned(),
            kind: ChangeKind::Modify,
            version,
            created_at: SystemTime::UNIX_EPOCH,
        });
    }

    fn trim(&mut self, seq: u128) {
        self.trimmed.push(self.written[self.by_seq[&seq]].clone());
    }

    fn deliver(&mut self, worker: &str, shard: &str, seqs: &[u128], secs: f64, outcome: DeliveryOutcome) {
        for &seq in seqs {
            let sequence_number = SequenceNumber::from_u128(seq);
            let found = self.by_seq.get(&seq).map(|&i| &self.written[i]);
            let (key, version) = found.map_or(("?".to_owned(), None), |r| (r.key.clone(), Some(r.version)));
            self.entries.push(LogEntry::Delivery(Delivery {
                worker: WorkerId::new(worker),
                shard_id: ShardId::new(shard),
                sequence_number,
                key,
                version,
                at: self.time(secs),
                outcome,
                lane: 0,
                finished: self.time(secs),
            }));
        }
    }

    fn event(&mut self, worker: &str, shard: &str, secs: f64, kind: LifecycleKind) {
        self.entries.push(LogEntry::Lifecycle(LifecycleEvent {
            worker: WorkerId::new(worker),
            shard_id: ShardId::new(shard),
            at: self.time(secs),
            kind,
        }));
    }

    /// Delivers `seqs` in one call of lane `lane` that returns `took` seconds later.
    fn deliver_lane(&mut self, worker: &str, shard: &str, seqs: &[u128], secs: f64, lane: usize, took: f64) {
        let from = self.entries.len();
        self.deliver(worker, shard, seqs, secs, Processed);
        let finished = self.time(secs + took);
        for e in &mut self.entries[from..] {
            if let LogEntry::Delivery(d) = e {
                d.lane = lane;
                d.finished = finished;
            }
        }
    }

    fn init(&mut self, worker: &str, shard: &str, secs: f64) {
        self.event(worker, shard, secs, LifecycleKind::Initialized(Checkpoint::TrimHorizon));
    }

    fn lease(
        &mut self,
        secs: f64,
        op: LeaseOp,
        shard: &str,
        before: Option<WorkerId>,
        after: Option<WorkerId>,
        checkpoint: Checkpoint,
    ) {
        let counter_after = self.history.iter().filter(|e| e.key.as_str() == shard).count() as u64;
        self.history.push(LeaseEvent {
            at: self.time(secs),
            op,
            key: LeaseKey::from_raw(shard),
            owner_before: before,
            owner_after: after,
            counter_after,
            checkpoint_after: checkpoint,
        });
    }

    fn check(&self) -> Report {
        let log = DeliveryLog::new();
        log.extend(self.entries.iter().cloned());
        check(&Observed {
            written: &self.written,
            trimmed: &self.trimmed,
            log: &log,
            lease_history: &self.history,
            lease_duration: LEASE_DURATION,
            parents: &self.parents,
            filtered: None,
        })
    }
}

/// A valid run: parent shard s1 (records 1..=3), child s2 (records 10, 11), one worker w1.
fn base() -> Scenario {
    let mut s = Scenario::new();
    s.write("s1", 1, "a", 1);
    s.write("s1", 2, "b", 1);
    s.write("s1", 3, "a", 2);
    s.write("s2", 10, "a", 3);
    s.write("s2", 11, "b", 2);
    s.parents.push((ShardId::new("s2"), vec![ShardId::new("s1")]));
    s.lease(0.0, LeaseOp::Create, "s1", None, None, Checkpoint::TrimHorizon);
    s.lease(0.0, LeaseOp::Create, "s2", None, None, Checkpoint::TrimHorizon);
    s.lease(0.0, LeaseOp::Take, "s1", None, w("w1"), Checkpoint::TrimHorizon);
    s.init("w1", "s1", 1.0);
    s.deliver("w1", "s1", &[1, 2, 3], 2.0, Processed);
    s.lease(5.0, LeaseOp::Checkpoint, "s1", w("w1"), w("w1"), at(3));
    s.event("w1", "s1", 6.0, LifecycleKind::ShardEnded);
    s.lease(6.0, LeaseOp::Checkpoint, "s1", w("w1"), w("w1"), Checkpoint::ShardEnd);
    s.lease(7.0, LeaseOp::Take, "s2", None, w("w1"), Checkpoint::TrimHorizon);
    s.init("w1", "s2", 7.0);
    s.deliver("w1", "s2", &[10, 11], 8.0, Processed);
    s.lease(9.0, LeaseOp::Checkpoint, "s2", w("w1"), w("w1"), at(11));
    s
}

type Case = (&'static str, fn(&mut Scenario), &'static [&'static str]);

const CASES: &[Case] = &[
    ("valid run", |_| {}, &[]),
    // Rule 1.
    ("retained record never processed", |s| s.write("s2", 12, "c", 1), &["Lost"]),
    (
        "trimmed record never processed",
        |s| {
            s.write("s2", 12, "c", 1);
            s.trim(12);
        },
        &[],
    ),
    ("delivered record never written", |s| s.deliver("w1", "s2", &[99], 9.0, Processed), &["NotWritten"]),
    // Rule 2 (the repeated 10 is also a redelivery).
    (
        "backwards in one session",
        |s| s.deliver("w1", "s2", &[10], 9.0, Processed),
        &["ShardOrder", "RedeliveryWithoutMove"],
    ),
    (
        "retry after a failed batch goes back",
        |s| {
            s.write("s2", 12, "c", 1);
            s.deliver("w1", "s2", &[12], 9.0, Failed);
            s.deliver("w1", "s2", &[11, 12], 10.0, Processed);
        },
        &[],
    ),
    (
        "new session goes back without a cause",
        |s| {
            s.init("w1", "s2", 10.0);
            s.deliver("w1", "s2", &[11], 11.0, Processed);
        },
        &["RedeliveryWithoutMove"],
    ),
    // Rule 7 causes.
    (
        "new session after lease_lost",
        |s| {
            s.event("w1", "s2", 9.5, LifecycleKind::LeaseLost);
            s.init("w1", "s2", 10.0);
            s.deliver("w1", "s2", &[11], 11.0, Processed);
        },
        &[],
    ),
    (
        "another worker after a take",
        |s| {
            s.lease(10.0, LeaseOp::Take, "s2", w("w1"), w("w2"), at(11));
            s.init("w2", "s2", 10.0);
            s.deliver("w2", "s2", &[11], 11.0, Processed);
        },
        &[],
    ),
    (
        "same worker after release and take",
        |s| {
            s.lease(10.0, LeaseOp::Release, "s2", w("w1"), None, at(11));
            s.lease(10.5, LeaseOp::Take, "s2", None, w("w1"), at(11));
            s.init("w1", "s2", 10.5);
            s.deliver("w1", "s2", &[11], 11.0, Processed);
        },
        &[],
    ),
    (
        "stale owner delivers after a steal, then the new owner",
        |s| {
            s.write("s2", 12, "c", 1);
            s.lease(9.0, LeaseOp::Take, "s2", w("w1"), w("w2"), at(11));
            s.deliver("w1", "s2", &[12], 9.5, Processed);
            s.init("w2", "s2", 10.0);
            s.deliver("w2", "s2", &[12], 10.5, Processed);
        },
        &[],
    ),
    (
        "new owner delivers after a steal, then the stale owner",
        |s| {
            s.write("s2", 12, "c", 1);
            s.lease(9.0, LeaseOp::Take, "s2", w("w1"), w("w2"), at(11));
            s.init("w2", "s2", 9.0);
            s.deliver("w2", "s2", &[12], 9.2, Processed);
            s.deliver("w1", "s2", &[12], 9.5, Processed);
        },
        &[],
    ),
    (
        "a take between other workers excuses nothing",
        |s| {
            // Before w1's first delivery at 8 s, the lease moved between w3 and w4 only.
            s.lease(6.5, LeaseOp::Take, "s2", w("w3"), w("w4"), Checkpoint::TrimHorizon);
            s.deliver("w1", "s2", &[11], 9.5, Processed);
        },
        &["ShardOrder", "RedeliveryWithoutMove"],
    ),
    // Rule 3: versions of item "d" live on unrelated shards s3 and s4.
    (
        "later version processed first",
        |s| {
            items_on_two_shards(s);
            s.deliver("w1", "s4", &[21], 3.0, Processed);
            s.deliver("w1", "s3", &[20], 4.0, Processed);
        },
        &["ItemOrder"],
    ),
    (
        "same instant, later version logged first",
        |s| {
            items_on_two_shards(s);
            s.deliver("w1", "s4", &[21], 3.0, Processed);
            s.deliver("w1", "s3", &[20], 3.0, Processed);
        },
        &["ItemOrder"],
    ),
    (
        "same instant, log order right",
        |s| {
            items_on_two_shards(s);
            s.deliver("w1", "s3", &[20], 3.0, Processed);
            s.deliver("w1", "s4", &[21], 3.0, Processed);
        },
        &[],
    ),
    (
        "earlier version trimmed",
        |s| {
            items_on_two_shards(s);
            s.trim(20);
            s.deliver("w1", "s4", &[21], 3.0, Processed);
            s.deliver("w1", "s3", &[20], 4.0, Processed);
        },
        &[],
    ),
    // Rule 4.
    (
        "parent record processed after the child started",
        |s| {
            s.write("s1", 4, "e", 1);
            s.deliver("w1", "s1", &[4], 9.0, Processed);
        },
        &["ChildBeforeParent"],
    ),
    (
        "parent lease never reached SHARD_END",
        |s| s.history.retain(|e| !e.checkpoint_after.is_shard_end()),
        &["ChildBeforeParentEnd"],
    ),
    (
        "parent lease reached SHARD_END late",
        |s| {
            s.history.retain(|e| !e.checkpoint_after.is_shard_end());
            s.lease(8.5, LeaseOp::Checkpoint, "s1", w("w1"), w("w1"), Checkpoint::ShardEnd);
        },
        &["ChildBeforeParentEnd"],
    ),
    (
        "parent gone from the stream",
        |s| {
            s.history.retain(|e| !e.checkpoint_after.is_shard_end());
            (1..=3).for_each(|n| s.trim(n));
        },
        &[],
    ),
    // Rule 5: w2 takes s2 at 20 s; w1 may go on delivering for one lease duration.
    ("old owner within the lease duration", |s| late_delivery(s, 25.0), &[]),
    ("old owner after the lease duration", |s| late_delivery(s, 31.0), &["TwoOwners"]),
    (
        "worker that never owned the lease",
        |s| {
            s.write("s2", 12, "c", 1);
            s.deliver("w2", "s2", &[12], 9.0, Processed);
        },
        &["TwoOwners"],
    ),
    // Rule 6.
    (
        "checkpoint moves back",
        |s| s.lease(10.0, LeaseOp::Checkpoint, "s2", w("w1"), w("w1"), at(10)),
        &["CheckpointBackwards"],
    ),
    (
        "checkpoint leaves SHARD_END",
        |s| s.lease(10.0, LeaseOp::Checkpoint, "s1", w("w1"), w("w1"), at(3)),
        &["CheckpointBackwards"],
    ),
    (
        "take moves the checkpoint back",
        |s| s.lease(10.0, LeaseOp::Take, "s2", w("w1"), w("w2"), at(10)),
        &["CheckpointBackwards"],
    ),
    (
        "checkpoint by another worker",
        |s| s.lease(10.0, LeaseOp::Checkpoint, "s2", w("w1"), w("w2"), at(11)),
        &["CheckpointNotFenced"],
    ),
    (
        "checkpoint on an unowned lease",
        |s| s.lease(10.0, LeaseOp::Checkpoint, "s2", None, None, at(11)),
        &["CheckpointNotFenced"],
    ),
    (
        "checkpoint before the record was processed",
        |s| {
            s.write("s2", 12, "c", 1);
            s.lease(9.5, LeaseOp::Checkpoint, "s2", w("w1"), w("w1"), at(12));
            s.deliver("w1", "s2", &[12], 10.0, Processed);
        },
        &["CheckpointBeyondDelivered", "CheckpointPastUnfinished"],
    ),
    // Rule 2 with lanes, and rule 8.
    (
        "lanes deliver out of shard order, each lane in order",
        |s| {
            s.write("s2", 12, "c", 1);
            s.write("s2", 13, "d", 1);
            s.write("s2", 14, "c", 2);
            s.deliver_lane("w1", "s2", &[13], 9.0, 1, 0.0);
            s.deliver_lane("w1", "s2", &[12, 14], 9.1, 0, 0.0);
            s.lease(9.5, LeaseOp::Checkpoint, "s2", w("w1"), w("w1"), at(14));
        },
        &[],
    ),
    (
        "a lane goes back in its own order",
        |s| {
            s.write("s2", 12, "c", 1);
            s.write("s2", 13, "d", 1);
            s.deliver_lane("w1", "s2", &[13], 9.0, 1, 0.0);
            s.deliver_lane("w1", "s2", &[12], 9.1, 1, 0.0);
        },
        &["ShardOrder"],
    ),
    (
        "checkpoint past a record of an unfinished lane",
        |s| {
            s.write("s2", 12, "c", 1);
            s.write("s2", 13, "d", 1);
            // Lane 0's call with record 12 started at 9.0 and returned only at 12.0.
            s.deliver_lane("w1", "s2", &[12], 9.0, 0, 3.0);
            s.deliver_lane("w1", "s2", &[13], 9.1, 1, 0.0);
            s.lease(9.5, LeaseOp::Checkpoint, "s2", w("w1"), w("w1"), at(13));
        },
        &["CheckpointPastUnfinished"],
    ),
    (
        "checkpoint of a failed record",
        |s| {
            s.write("s2", 12, "c", 1);
            s.deliver("w1", "s2", &[12], 10.0, Failed);
            s.lease(10.0, LeaseOp::Checkpoint, "s2", w("w1"), w("w1"), at(12));
        },
        // Nobody retries record 12 past the checkpoint: it is lost, too.
        &["CheckpointBeyondDelivered", "Lost"],
    ),
    (
        "checkpoint at the same instant as the delivery",
        |s| {
            s.write("s2", 12, "c", 1);
            s.deliver("w1", "s2", &[12], 10.0, Processed);
            s.lease(10.0, LeaseOp::Checkpoint, "s2", w("w1"), w("w1"), at(12));
        },
        &[],
    ),
    (
        "deleted and created again",
        |s| {
            s.lease(20.0, LeaseOp::Delete, "s1", w("w1"), None, Checkpoint::ShardEnd);
            s.lease(21.0, LeaseOp::Create, "s1", None, None, Checkpoint::TrimHorizon);
        },
        &[],
    ),
];

fn items_on_two_shards(s: &mut Scenario) {
    s.write("s3", 20, "d", 1);
    s.write("s4", 21, "d", 2);
    s.lease(0.0, LeaseOp::Take, "s3", None, w("w1"), Checkpoint::TrimHorizon);
    s.lease(0.0, LeaseOp::Take, "s4", None, w("w1"), Checkpoint::TrimHorizon);
}

fn late_delivery(s: &mut Scenario, secs: f64) {
    s.write("s2", 12, "c", 1);
    s.lease(20.0, LeaseOp::Take, "s2", w("w1"), w("w2"), at(11));
    s.deliver("w1", "s2", &[12], secs, Processed);
}

#[test]
fn rules_fire_on_violations_and_stay_quiet_otherwise() {
    for (name, mutate, want) in CASES {
        let mut s = base();
        mutate(&mut s);
        let report = s.check();
        let got: BTreeSet<&str> = report.violations.iter().map(Violation::kind).collect();
        let want: BTreeSet<&str> = want.iter().copied().collect();
        assert_eq!(got, want, "case {name:?}:\n{report}");
    }
}

#[test]
fn stats_count_duplicates_failures_and_losses() {
    let mut s = base();
    s.write("s2", 12, "c", 1);
    s.write("s2", 13, "c", 2);
    s.trim(13);
    s.event("w1", "s2", 9.5, LifecycleKind::LeaseLost);
    s.init("w1", "s2", 10.0);
    s.deliver("w1", "s2", &[11], 10.0, Failed);
    s.deliver("w1", "s2", &[11], 11.0, Processed);
    let report = s.check();
    let want = Stats { written: 7, trimmed: 1, delivered: 6, failed: 1, distinct_delivered: 5, duplicates: 1, lost: 1 };
    assert_eq!(report.stats, want, "{report}");
    assert_eq!(report.of_kind("Lost").count(), 1);
    assert_eq!(report.origin, Some(s.t0));
}

#[test]
fn violations_name_shard_worker_sequence_and_time() {
    let mut s = base();
    late_delivery(&mut s, 31.0);
    let report = s.check();
    let text = report.violations[0].to_string();
    for part in ["TwoOwners", "w1", "s2", "12", "t+31s", "w2"] {
        assert!(text.contains(part), "{part:?} missing from {text:?}");
    }
}

#[test]
fn one_report_per_batch_for_an_unowned_delivery() {
    let mut s = base();
    (12..20).for_each(|n| s.write("s2", n, "c", n as u64));
    s.deliver("w2", "s2", &(12..20).collect::<Vec<_>>(), 9.0, Processed);
    assert_eq!(s.check().of_kind("TwoOwners").count(), 1);
}

#[test]
fn lease_rules_are_skipped_without_history() {
    let mut s = base();
    s.history.clear();
    s.deliver("w2", "s2", &[11], 12.0, Processed);
    let report = s.check();
    assert!(report.is_ok(), "{report}");
}

#[test]
#[should_panic(expected = "1 invariant violations (1 Lost)")]
fn assert_ok_panics_with_a_summary() {
    let mut s = base();
    s.write("s2", 12, "c", 1);
    s.check().assert_ok();
}

#[test]
fn assert_ok_lists_at_most_twenty() {
    let mut s = base();
    (100..130).for_each(|n| s.write("s2", n, "z", n as u64));
    let text = s.check().to_string();
    assert!(text.contains("30 invariant violations (30 Lost)"), "{text}");
    assert!(text.contains("... and 10 more"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("  - ")).count(), 20);
}

#[test]
fn large_logs_check_quickly() {
    // 200k records on 20 shards, each delivered once and checkpointed: well under a second
    // in release builds; this guards against accidental quadratic passes.
    let mut s = Scenario::new();
    for shard in 0..20u128 {
        let name = format!("big-{shard}");
        s.lease(0.0, LeaseOp::Take, &name, None, w("w1"), Checkpoint::TrimHorizon);
        s.init("w1", &name, 0.0);
        let seqs: Vec<u128> = (0..10_000).map(|i| shard * 1_000_000 + i).collect();
        for (i, &seq) in seqs.iter().enumerate() {
            s.write(&name, seq, &format!("k{}", i % 997), (shard * 10_000) as u64 + i as u64 + 1);
        }
        for (b, chunk) in seqs.chunks(1000).enumerate() {
            s.deliver("w1", &name, chunk, shard as f64 * 100.0 + b as f64, Processed);
            s.lease(shard as f64 * 100.0 + b as f64, LeaseOp::Checkpoint, &name, w("w1"), w("w1"), at(chunk[999]));
        }
    }
    let started = std::time::Instant::now();
    let report = s.check();
    report.assert_ok();
    assert_eq!(report.stats.delivered, 200_000);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}
