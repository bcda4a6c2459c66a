//! The harness's own checks, on made-up evidence: each judgement the real-process tests
//! (chaos, partition, fleet) make must catch what it is meant to catch, and must accept the
//! legitimate orderings a run can produce. No emulator, no process: these run in milliseconds.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use aws_sdk_dynamodbstreams::types::AttributeValue as V;
use kcl_core::testing::memory_store::LeaseOp;
use kcl_core::{Checkpoint, Lease, LeaseKey, SequenceNumber, ShardId, WorkerId};

use common::chaos::{
    Dump, DumpRecord, LeaseImage, LeaseWrite, Line, LineKind, Pause, WorkerFile, lease_stream_problems, pause_problems,
};
use common::iam::{Names, Resource, deploy_policies, grant_of, judge_policy};
use common::leases::{expired_takes_from, has_moved, holders_in, log_time, logged_takes, unfinished_of};
use common::outputs::Label;
use common::sniff::Sniffer;

fn seq(n: u128) -> SequenceNumber {
    SequenceNumber::from_u128(n)
}

fn lease_item(owner: &str, counter: u64) -> HashMap<String, V> {
    [
        ("leaseKey".to_owned(), V::S("shard-1".to_owned())),
        ("leaseOwner".to_owned(), V::S(owner.to_owned())),
        ("leaseCounter".to_owned(), V::N(counter.to_string())),
        ("checkpoint".to_owned(), V::S("TRIM_HORIZON".to_owned())),
    ]
    .into()
}

fn modify(n: u128, before: (&str, u64), after: (&str, u64)) -> DumpRecord {
    DumpRecord {
        shard: "lease-shard".to_owned(),
        seq: seq(n),
        event: "MODIFY",
        keys: [("leaseKey".to_owned(), V::S("shard-1".to_owned()))].into(),
        old: Some(lease_item(before.0, before.1)),
        new: Some(lease_item(after.0, after.1)),
    }
}

#[test]
fn a_write_from_a_stale_lease_breaks_the_counter_chain() {
    let mut insert = modify(1, ("w1", 0), ("w1", 0));
    (insert.event, insert.old) = ("INSERT", None);
    let good = Dump {
        shards: Vec::new(),
        records: vec![insert.clone(), modify(2, ("w1", 0), ("w1", 1)), modify(3, ("w1", 1), ("w2", 2))],
    };
    assert_eq!(lease_stream_problems(&good), Vec::<String>::new());
    // w1 renews from counter 1 after w2 took the lease at 2: a stale write, had it applied.
    let mut stale = good.clone();
    stale.records.push(modify(4, ("w2", 2), ("w1", 2)));
    let problems = lease_stream_problems(&stale);
    assert!(problems.iter().any(|p| p.contains("moved leaseCounter from 2 to 2")), "{problems:?}");
}

fn record_line(end: u64, shard: &str, n: u128, ts: u64) -> Line {
    Line {
        end,
        worker: "chaos-w1".to_owned(),
        shard: shard.to_owned(),
        ts,
        kind: LineKind::Record { seq: seq(n), pk: "item-0001".to_owned(), label: Label { event: "MODIFY", v: 1 } },
    }
}

#[test]
fn a_batch_begun_after_sigcont_on_a_taken_shard_is_caught() {
    const S: u64 = 1_000_000_000_000;
    let ms = 1_000_000u64;
    let file = WorkerFile {
        name: "w1".to_owned(),
        worker_id: "chaos-w1".to_owned(),
        path: PathBuf::new(),
        log: PathBuf::new(),
        killed: false,
        killed_at: None,
        terminated_at: None,
        pauses: Vec::new(),
        outages: Vec::new(),
    };
    // Stopped at S (file at 200 bytes), continued 7 s later; w2 took shard-1 meanwhile.
    let pause = Pause { stop_wall: S, cont_wall: S + 7_000 * ms, offset: 200 };
    let take = LeaseWrite {
        seq: seq(10),
        key: "shard-1".to_owned(),
        op: LeaseOp::Take,
        before: Some(LeaseImage {
            owner: Some("chaos-w1".to_owned()),
            counter: 5,
            checkpoint: Checkpoint::TrimHorizon,
        }),
        after: Some(LeaseImage { owner: Some("chaos-w2".to_owned()), counter: 6, checkpoint: Checkpoint::TrimHorizon }),
        earliest: S + 6_000 * ms,
        latest: S + 6_020 * ms,
    };
    // The batch in flight at the stop: its first line rendered before, the rest after.
    let in_flight = vec![
        record_line(100, "shard-1", 1, S - 300 * ms),
        record_line(200, "shard-1", 2, S - 299 * ms),
        record_line(300, "shard-1", 3, S + 7_001 * ms),
        record_line(400, "shard-1", 4, S + 7_001 * ms),
    ];
    assert_eq!(pause_problems(&file, &in_flight, &pause, std::slice::from_ref(&take)), Vec::<String>::new());
    // The worker resumes a little before the test notes SIGCONT: still the same batch.
    let mut early = in_flight.clone();
    early[2].ts = S + 6_996 * ms;
    early[3].ts = S + 6_996 * ms;
    assert_eq!(pause_problems(&file, &early, &pause, std::slice::from_ref(&take)), Vec::<String>::new());
    // A new batch after SIGCONT: flagged.
    let mut later = in_flight.clone();
    later.push(record_line(500, "shard-1", 5, S + 7_400 * ms));
    let problems = pause_problems(&file, &later, &pause, std::slice::from_ref(&take));
    assert_eq!(problems.len(), 1, "{problems:?}");
    // The same batch on a shard that was not taken is fine.
    let mut other = later.clone();
    other.iter_mut().for_each(|l| l.shard = "shard-2".to_owned());
    assert_eq!(pause_problems(&file, &other, &pause, std::slice::from_ref(&take)), Vec::<String>::new());
}

#[test]
fn log_times_are_unix_nanoseconds() {
    assert_eq!(log_time("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
    assert_eq!(log_time("2026-11-25T03:55:37.836276Z"), Some(1_795_578_937_836_276_000));
}

fn shard_lease(key: &str, owner: Option<&str>, checkpoint: Checkpoint) -> Lease {
    let mut lease = Lease::new_for_shard(&ShardId::new(key), checkpoint, Vec::new());
    lease.owner = owner.map(WorkerId::new);
    lease
}

#[test]
fn a_move_is_judged_on_unfinished_leases_only() {
    let live: BTreeSet<String> = ["w2".to_owned(), "w3".to_owned()].into();
    let held = vec![LeaseKey::from_raw("s-2")];
    let at = |n: u128| Checkpoint::At(seq(n));
    // The failure seen on a clean clone: the victim had just ended shard s-1 (SHARD_END, still
    // owned by it until the clean-up) and its open shard s-2 was taken by w2: moved.
    let ended_but_owned = [shard_lease("s-1", Some("w1"), Checkpoint::ShardEnd), shard_lease("s-2", Some("w2"), at(5))];
    assert!(has_moved(&ended_but_owned, "w1", &held, &live));
    // The clean-up deleted s-1, or s-2 ended meanwhile and was deleted too: moved.
    assert!(has_moved(&[shard_lease("s-2", Some("w3"), at(5))], "w1", &held, &live));
    assert!(has_moved(&[], "w1", &held, &live));
    assert!(has_moved(&[shard_lease("s-2", Some("w1"), Checkpoint::ShardEnd)], "w1", &held, &live));
    // Not moved: the victim still owns an unfinished lease (s-2, or one it took after the
    // sample), or s-2 is unowned, or owned by a worker that is not live.
    assert!(!has_moved(&[shard_lease("s-2", Some("w1"), at(5))], "w1", &held, &live));
    let later = [shard_lease("s-2", Some("w2"), at(5)), shard_lease("s-3", Some("w1"), Checkpoint::TrimHorizon)];
    assert!(!has_moved(&later, "w1", &held, &live));
    assert!(!has_moved(&[shard_lease("s-2", None, at(5))], "w1", &held, &live));
    assert!(!has_moved(&[shard_lease("s-2", Some("w9"), at(5))], "w1", &held, &live));
    // Finished leases count for nobody: a holder is a worker with an unfinished lease.
    let holders = holders_in(&ended_but_owned, &["w1".to_owned(), "w2".to_owned()].into());
    assert_eq!(holders, vec![("w2".to_owned(), vec![LeaseKey::from_raw("s-2")])]);
    assert_eq!(unfinished_of(&ended_but_owned, &["w1".to_owned()].into()).len(), 0);
}

#[test]
fn a_graceful_stop_must_not_wait_for_expiry() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("w2.log");
    let lines = [
        // Released by w1, then taken: no owner before the take.
        "2026-11-25T03:55:37.000000Z  INFO kcl_core::lease::coordinator: took lease shard=s-1 reason=\"unowned\" \
         from=None",
        // Taken from w1 as expired: the graceful stop did not release it.
        "\u{1b}[2m2026-11-25T03:55:38.000000Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m took lease shard=s-2 \
         reason=\"expired\" from=Some(WorkerId(w1))",
        // A balancing steal from w1 is no handoff failure.
        "2026-11-25T03:55:39.000000Z  INFO took lease shard=s-3 reason=\"stolen\" from=Some(WorkerId(w1))",
    ];
    std::fs::write(&log, lines.join("\n")).unwrap_or_else(|e| panic!("{e}"));
    let takes = logged_takes(&log, "w2");
    assert_eq!(takes.len(), 3, "{takes:?}");
    let held: Vec<LeaseKey> = ["s-1", "s-2", "s-3"].into_iter().map(LeaseKey::from_raw).collect();
    let since = log_time("2026-11-25T03:55:36Z").unwrap_or_default();
    let expired = expired_takes_from(&takes, "w1", &held, since);
    assert_eq!(expired.iter().map(|t| t.shard.as_str()).collect::<Vec<_>>(), ["s-2"]);
    // Before the SIGTERM, or of a lease it did not hold: not judged.
    let after = log_time("2026-11-25T03:55:38.5Z").unwrap_or_default();
    assert!(expired_takes_from(&takes, "w1", &held, after).is_empty());
    assert!(expired_takes_from(&takes, "w1", &held[..1], since).is_empty());
}

/// What a jsonl worker given `--table` calls (as fleet_processes records it).
fn fleet_calls() -> BTreeSet<(String, Resource)> {
    let stream =
        ["DescribeStream", "GetShardIterator", "GetRecords"].map(|a| (format!("dynamodb:{a}"), Resource::Stream));
    let lease = ["DescribeTable", "CreateTable", "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Scan"]
        .map(|a| (format!("dynamodb:{a}"), Resource::LeaseTable));
    stream.into_iter().chain(lease).chain([("dynamodb:DescribeTable".to_owned(), Resource::SourceTable)]).collect()
}

const FLEET: &[&str] = &["ReadSourceStream", "ResolveStreamFromTableName", "LeaseTable", "CreateLeaseTableOptional"];

#[test]
fn the_policy_check_catches_extra_and_missing_grants() {
    let (json, _) = deploy_policies();
    assert_eq!(judge_policy("policy", &json, &fleet_calls(), FLEET), Vec::<String>::new());
    // ListStreams granted on the stream: the worker never calls it.
    let mut extra = json.clone();
    extra.iter_mut().filter(|s| s.sid == "ReadSourceStream").for_each(|s| {
        s.actions.insert("dynamodb:ListStreams".to_owned());
    });
    let problems = judge_policy("policy", &extra, &fleet_calls(), FLEET);
    assert!(problems.len() == 1 && problems[0].contains("dynamodb:ListStreams"), "{problems:?}");
    // GetItem on the lease table no longer granted, but called.
    let mut missing = json.clone();
    missing.iter_mut().filter(|s| s.sid == "LeaseTable").for_each(|s| {
        s.actions.remove("dynamodb:GetItem");
    });
    let problems = judge_policy("policy", &missing, &fleet_calls(), FLEET);
    assert!(problems.len() == 1 && problems[0].contains("calls dynamodb:GetItem on LeaseTable"), "{problems:?}");
    // A grant on `*`, and a table action on the wrong table.
    let mut wide = json.clone();
    wide.iter_mut().filter(|s| s.sid == "LeaseTable").for_each(|s| s.resources = vec!["*".to_owned()]);
    let problems = judge_policy("policy", &wide, &fleet_calls(), FLEET);
    assert!(problems.iter().any(|p| p.contains("not on the narrowest resource")), "{problems:?}");
    let mut calls = fleet_calls();
    calls.insert(("dynamodb:PutItem".to_owned(), Resource::SourceTable));
    let problems = judge_policy("policy", &json, &calls, FLEET);
    assert!(problems.len() == 1 && problems[0].contains("PutItem on SourceTable"), "{problems:?}");
}

#[test]
fn requests_are_read_off_the_wire() {
    let body = r#"{"TableName":"orders-app","Key":{"leaseKey":{"S":"x"}}}"#;
    let first = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: DynamoDB_20120810.GetItem\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let second = "POST / HTTP/1.1\r\nx-amz-target: DynamoDBStreams_20120810.GetRecords\r\nContent-Length: 2\r\n\r\n{}";
    let wire = format!("{first}{second}");
    let mut sniffer = Sniffer::default();
    // Fed in small pieces, as TCP may deliver them.
    let mut seen = Vec::new();
    for chunk in wire.as_bytes().chunks(7) {
        seen.extend(sniffer.feed(chunk));
    }
    let names = Names { source: "orders".to_owned(), lease: "orders-app".to_owned(), ..Names::default() };
    let grants: Vec<(String, Resource)> = seen.iter().map(|r| grant_of(r, &names)).collect();
    assert_eq!(
        grants,
        [("dynamodb:GetItem".to_owned(), Resource::LeaseTable), ("dynamodb:GetRecords".to_owned(), Resource::Stream)]
    );
    let mut chunked = Sniffer::default();
    chunked.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert!(chunked.broken.is_some(), "a chunked body must not be guessed at");
}

/// One worker's jsonl output: `initialize` at `began`, records `seqs` at `at`, then the end line
/// (`None`: killed).
fn output(worker: &str, began: u64, seqs: &[u64], at: u64, end: Option<(&str, u64)>) -> String {
    let life = |what: &str, ts: u64| {
        format!(r#"{{"lifecycle":"{what}","checkpoint":"TRIM_HORIZON","shard":"s","ts":{ts},"worker":"{worker}"}}"#)
    };
    let mut lines = vec![life("initialize", began)];
    for seq in seqs {
        lines.push(format!(
            r#"{{"event":"MODIFY","keys":{{"pk":"a{seq}"}},"old_v":1,"seq":"{seq}","shard":"s","ts":{at},"v":2,"worker":"{worker}"}}"#
        ));
    }
    if let Some((what, ts)) = end {
        lines.push(life(what, ts));
    }
    lines.join("\n") + "\n"
}

fn duplicates_of(files: &[(&str, String, bool)]) -> Result<common::outputs::Duplicates, String> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut outputs = common::outputs::Outputs::default();
    for (name, text, killed) in files {
        let path = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        outputs.read_file(&path, *killed).unwrap_or_else(|e| panic!("{e}"));
    }
    common::outputs::check_duplicates(&outputs, 1000)
}

#[test]
fn duplicates_are_blamed_on_the_tenure_that_lost_its_lease() {
    let owner = output("w2", 100, &[10, 11, 12], 110, Some(("shutdown_requested", 200)));
    // A killed worker's uncheckpointed tail, processed again by the next owner: allowed.
    let killed = output("w1", 0, &[10, 11, 12], 50, None);
    let d = duplicates_of(&[("w1", killed, true), ("w2", owner.clone(), false)]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((d.after_kill, d.after_lease_loss), (3, 0));
    // Seen in a chaos drain: w2 stole the lease, processed and stopped gracefully; w1, which had
    // not learnt of the steal yet, began its tenure before w2's ended and delivered the same
    // records later. The repeats are w1's, not w2's: allowed.
    let stale = output("w1", 150, &[10, 11, 12], 205, Some(("lease_lost", 210)));
    let d = duplicates_of(&[("w1", stale, false), ("w2", owner.clone(), false)]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((d.after_kill, d.after_lease_loss), (0, 3));
    assert_eq!(d.repeated.iter().filter(|r| **r).count(), 3);
    // A tenure begun after w2's graceful stop delivering what w2 had checkpointed: caught.
    let late = output("w1", 250, &[10, 11, 12], 260, Some(("lease_lost", 270)));
    let err = duplicates_of(&[("w1", late, false), ("w2", owner.clone(), false)]).err();
    assert!(err.as_deref().is_some_and(|e| e.contains("in a tenure begun after")), "{err:?}");
    // Two tenures that both ended gracefully delivering the same records: caught.
    let twice = output("w1", 250, &[10, 11, 12], 260, Some(("shutdown_requested", 270)));
    let err = duplicates_of(&[("w1", twice, false), ("w2", owner, false)]).err();
    assert!(err.as_deref().is_some_and(|e| e.contains("that ended with Shutdown")), "{err:?}");
}

#[test]
fn shard_gaps_count_the_wait_for_work_that_was_there_not_the_writers_pauses() {
    use common::gaps::shard_gaps;
    use common::outputs::Occurrence;
    const MS: u64 = 1_000_000;
    let label = |v: i64| Label { event: "MODIFY", v };
    let occ = |worker: &str, shard: &str, seq: u128, v: i64, ts_ms: u64| Occurrence {
        worker: worker.to_owned(),
        shard: shard.to_owned(),
        seq,
        pk: format!("item-{v}"),
        label: label(v),
        ts: ts_ms * MS,
        tenure: 0,
    };
    let sent = |pairs: &[(i64, u64)]| -> HashMap<(String, Label), u64> {
        pairs.iter().map(|(v, ms)| ((format!("item-{v}"), label(*v)), ms * MS)).collect()
    };
    // (case, occurrences, sent times (v, ms), shard, (changes, duplicates, wait ms, at ms, gap ms, owners))
    type Want = (usize, usize, u64, u64, u64, Vec<&'static str>);
    type Sent = HashMap<(String, Label), u64>;
    let cases: Vec<(&str, Vec<Occurrence>, Sent, Want)> = vec![
        (
            "steady: each change processed 50 ms after it was written",
            vec![occ("a", "s", 1, 1, 50), occ("a", "s", 2, 2, 150), occ("a", "s", 3, 3, 250)],
            sent(&[(1, 0), (2, 100), (3, 200)]),
            (3, 0, 50, 150, 100, vec!["a"]),
        ),
        (
            "a writer pause of 2 s is not a wait; the handover after it is",
            vec![occ("a", "s", 1, 1, 50), occ("a", "s", 2, 2, 2_050), occ("b", "s", 3, 3, 2_900)],
            sent(&[(1, 0), (2, 2_000), (3, 2_100)]),
            (3, 0, 800, 2_900, 2_000, vec!["a", "b"]),
        ),
        (
            "work that was there while nobody read it: the whole gap",
            vec![occ("a", "s", 1, 1, 50), occ("b", "s", 2, 2, 1_600)],
            sent(&[(1, 0), (2, 10)]),
            (2, 0, 1_550, 1_600, 1_550, vec!["a", "b"]),
        ),
        (
            "a duplicate is counted once as a change, once as a duplicate; the first processing counts",
            vec![occ("a", "s", 1, 1, 50), occ("a", "s", 2, 2, 150), occ("b", "s", 2, 2, 900), occ("b", "s", 3, 3, 950)],
            sent(&[(1, 0), (2, 100), (3, 120)]),
            (3, 1, 800, 950, 800, vec!["a", "b"]),
        ),
        (
            "order is the shard's sequence order, not the file order; unknown send times wait from the predecessor",
            vec![occ("a", "s", 2, 2, 400), occ("a", "s", 1, 1, 100)],
            sent(&[]),
            (2, 0, 300, 400, 300, vec!["a"]),
        ),
    ];
    for (case, occurrences, sent_at, want) in cases {
        let got = shard_gaps(&occurrences, &sent_at);
        let g = got.get("s").unwrap_or_else(|| panic!("{case}: no shard s in {got:?}"));
        let owners: Vec<&str> = g.owners.iter().map(String::as_str).collect();
        assert_eq!(
            (g.changes, g.duplicates, g.longest_wait / MS, g.longest_wait_at / MS, g.longest_gap / MS, owners),
            want,
            "{case}"
        );
    }
    // A window: only the waits of changes processed in it.
    let steady = vec![occ("a", "s", 1, 1, 0), occ("b", "s", 2, 2, 900), occ("b", "s", 3, 3, 1_000)];
    let inside = common::gaps::shard_gaps_in(&steady, &HashMap::new(), &(950 * MS..=2_000 * MS));
    assert_eq!((inside["s"].changes, inside["s"].longest_wait / MS, inside["s"].longest_gap / MS), (3, 100, 100));
    // Shards are judged apart.
    let two = shard_gaps(&[occ("a", "s", 1, 1, 0), occ("a", "t", 1, 2, 5_000)], &HashMap::new());
    assert_eq!(two.len(), 2);
    assert!(two.values().all(|g| g.longest_wait == 0 && g.changes == 1));
}
