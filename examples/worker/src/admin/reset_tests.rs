use std::time::{Duration, UNIX_EPOCH};

use kcl_core::testing::memory_store::MemoryLeaseStore;

use super::*;

fn seq(n: u128) -> Checkpoint {
    Checkpoint::At(SequenceNumber::from_u128(n))
}

fn lease(id: &str, cp: Checkpoint, parents: &[&str]) -> Lease {
    Lease::new_for_shard(&ShardId::new(id), cp, parents.iter().map(|p| ShardId::new(*p)).collect())
}

/// p (closed, finished) -> c1 (closed, finished) -> g (open, at 30); p -> c2 (open, at 20);
/// o (unrelated, open, at 10).
fn lineage() -> Vec<Lease> {
    vec![
        lease("p", Checkpoint::ShardEnd, &[]),
        lease("c1", Checkpoint::ShardEnd, &["p"]),
        lease("c2", seq(20), &["p"]),
        lease("g", seq(30), &["c1"]),
        lease("o", seq(10), &[]),
    ]
}

fn shards(ids: &[&str]) -> Vec<ShardId> {
    ids.iter().map(|s| ShardId::new(*s)).collect()
}

fn after(steps: &[Step]) -> Vec<(String, String)> {
    steps.iter().map(|s| (s.key.to_string(), s.to.to_string())).collect()
}

#[test]
fn parses_targets() {
    let t = |s: &str| s.parse::<ResetTarget>();
    assert_eq!(t("trim-horizon"), Ok(ResetTarget::TrimHorizon));
    assert_eq!(t("TRIM_HORIZON"), Ok(ResetTarget::TrimHorizon));
    assert_eq!(t("latest"), Ok(ResetTarget::Latest));
    assert_eq!(t("000123"), Ok(ResetTarget::Sequence(SequenceNumber::from_u128(123))));
    assert_eq!(t("1970-01-01T00:00:10Z"), Ok(ResetTarget::Time(UNIX_EPOCH + Duration::from_secs(10))));
    let err = t("yesterday").err().unwrap_or_default();
    assert!(err.contains("trim-horizon, latest, an RFC 3339 time"), "{err}");
}

#[test]
fn plans_keep_children_behind_their_parents() {
    // (name, target, --shard, expected steps in order)
    type Case = (&'static str, ResetTarget, Vec<&'static str>, Vec<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            "trim horizon everywhere, parents first",
            ResetTarget::TrimHorizon,
            vec![],
            vec![
                ("o", "TRIM_HORIZON"),
                ("p", "TRIM_HORIZON"),
                ("c1", "TRIM_HORIZON"),
                ("c2", "TRIM_HORIZON"),
                ("g", "TRIM_HORIZON"),
            ],
        ),
        (
            "latest: closed shards finished, open ones at latest",
            ResetTarget::Latest,
            vec![],
            vec![("o", "LATEST"), ("p", "SHARD_END"), ("c1", "SHARD_END"), ("c2", "LATEST"), ("g", "LATEST")],
        ),
        (
            "rewinding a finished parent sends its descendants back",
            ResetTarget::TrimHorizon,
            vec!["c1"],
            vec![("c1", "TRIM_HORIZON"), ("g", "TRIM_HORIZON")],
        ),
        (
            "a sequence number in one open shard",
            ResetTarget::Sequence(SequenceNumber::from_u128(5)),
            vec!["o"],
            vec![("o", "5")],
        ),
        (
            "a sequence number in a finished parent",
            ResetTarget::Sequence(SequenceNumber::from_u128(5)),
            vec!["p"],
            vec![("p", "5"), ("c1", "TRIM_HORIZON"), ("c2", "TRIM_HORIZON"), ("g", "TRIM_HORIZON")],
        ),
    ];
    for (name, target, only, expected) in cases {
        let leases = lineage();
        let chosen = chosen(&leases, &target, &shards(&only)).unwrap_or_default();
        let steps = plan(&leases, &chosen);
        let expected: Vec<(String, String)> =
            expected.iter().map(|(k, c)| ((*k).to_owned(), (*c).to_owned())).collect();
        assert_eq!(after(&steps), expected, "{name}");
    }
}

#[test]
fn refuses_what_it_cannot_do() {
    let leases = lineage();
    let cases: Vec<(ResetTarget, Vec<&str>, &str)> = vec![
        (ResetTarget::Sequence(SequenceNumber::from_u128(1)), vec![], "exactly one --shard"),
        (ResetTarget::Sequence(SequenceNumber::from_u128(1)), vec!["o", "p"], "exactly one --shard"),
        (ResetTarget::TrimHorizon, vec!["nope"], "shard nope has no lease"),
        (ResetTarget::Time(UNIX_EPOCH), vec![], "needs the stream"),
    ];
    for (target, only, message) in cases {
        let err = chosen(&leases, &target, &shards(&only)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(message), "{target:?} {only:?}: {err}");
    }
}

#[test]
fn finds_the_checkpoint_before_a_time() {
    let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
    let n = SequenceNumber::from_u128;
    let records = vec![(n(1), at(10)), (n(2), at(20)), (n(3), at(20)), (n(4), at(30))];
    // (records, closed, time, expected)
    type Case = (Vec<(SequenceNumber, Option<SystemTime>)>, bool, u64, Checkpoint);
    let cases: Vec<Case> = vec![
        (records.clone(), false, 5, Checkpoint::TrimHorizon),
        (records.clone(), false, 10, Checkpoint::TrimHorizon),
        (records.clone(), false, 15, seq(1)),
        (records.clone(), false, 20, seq(1)),
        (records.clone(), false, 25, seq(3)),
        (records.clone(), false, 40, seq(4)),
        (records.clone(), true, 40, Checkpoint::ShardEnd),
        (vec![], false, 40, Checkpoint::TrimHorizon),
        (vec![], true, 40, Checkpoint::ShardEnd),
        (vec![(n(1), at(10)), (n(2), None), (n(3), at(30))], false, 25, seq(1)),
    ];
    for (records, closed, t, expected) in cases {
        let got = checkpoint_before(&records, closed, UNIX_EPOCH + Duration::from_secs(t));
        assert_eq!(got, expected, "t={t} closed={closed} records={}", records.len());
    }
}

#[tokio::test]
async fn apply_fences_owners_and_releases_at_the_new_checkpoints() {
    let store = MemoryLeaseStore::new();
    for mut l in lineage() {
        l.owner = Some(WorkerId::new("w1"));
        l.counter = 7;
        store.seed(l);
    }
    let leases = store.leases();
    let chosen = chosen(&leases, &ResetTarget::TrimHorizon, &shards(&["c1"])).unwrap_or_default();
    let steps = plan(&leases, &chosen);
    let before_g = store.get_now(&LeaseKey::from_raw("g")).unwrap_or_else(|| lease("x", Checkpoint::Latest, &[]));
    let released = apply(&store, &steps).await.map_err(|e| e.to_string());
    assert_eq!(released.as_ref().map(Vec::len), Ok(2), "{released:?}");
    for key in ["c1", "g"] {
        let now = store.get_now(&LeaseKey::from_raw(key)).unwrap_or_else(|| lease("x", Checkpoint::Latest, &[]));
        assert_eq!((now.owner.clone(), now.checkpoint.clone()), (None, Checkpoint::TrimHorizon), "{key}");
        assert!(now.counter > 7, "{key}: the old owner's counter no longer matches");
    }
    // The old owner's checkpoint on its stale lease is refused (fenced).
    let stale = store.checkpoint(&before_g, &seq(99), None).await.map_err(|e| e.to_string());
    assert_eq!(stale, Ok(kcl_core::LeaseUpdate::Lost));
    // Untouched leases keep their owner.
    let o = store.get_now(&LeaseKey::from_raw("o")).map(|l| l.owner);
    assert_eq!(o, Some(Some(WorkerId::new("w1"))));
}
