//! Tests of the extras of the in-memory lease store: history, statistics, fault injection,
//! ambiguous writes and latency under paused time. Its conditional semantics are checked by
//! the contract suite (`tests/contract_lease_store_memory.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::checkpoint::SequenceNumber;
use crate::shard::ShardId;

fn lease(n: u32, owner: Option<&str>) -> Lease {
    let mut lease = Lease::new_for_shard(&ShardId::new(format!("shard-{n:05}")), Checkpoint::TrimHorizon, vec![]);
    lease.owner = owner.map(WorkerId::new);
    lease
}

fn w(name: &str) -> WorkerId {
    WorkerId::new(name)
}

fn applied(result: Result<LeaseUpdate, LeaseStoreError>) -> Lease {
    match result {
        Ok(LeaseUpdate::Applied(lease)) => lease,
        other => panic!("expected Applied, got {other:?}"),
    }
}

fn err_kind<T: fmt::Debug>(result: Result<T, LeaseStoreError>) -> LeaseStoreErrorKind {
    result.expect_err("expected an error").kind()
}

fn ops(store: &MemoryLeaseStore) -> Vec<LeaseOp> {
    store.history().iter().map(|e| e.op).collect()
}

/// Creates, takes for w1, renews twice, checkpoints, releases and deletes one lease.
async fn lifecycle(store: &MemoryLeaseStore) {
    let l = applied(store.create_if_absent(lease(1, None)).await);
    let l = applied(store.take(&l, &w("w1")).await);
    let l = applied(store.renew(&l).await);
    let l = applied(store.renew(&l).await);
    let l = applied(store.checkpoint(&l, &Checkpoint::ShardEnd, None).await);
    let l = applied(store.release(&l).await);
    let _ = applied(store.delete(&l).await);
}

#[tokio::test]
async fn default_history_leaves_out_renewals() {
    let store = MemoryLeaseStore::new();
    lifecycle(&store).await;
    assert_eq!(ops(&store), [LeaseOp::Create, LeaseOp::Take, LeaseOp::Checkpoint, LeaseOp::Release, LeaseOp::Delete]);
    assert_eq!(store.stats().of(LeaseOp::Renew).ok, 2, "renewals are counted even when not recorded");
}

#[tokio::test]
async fn full_history_records_renewals_and_off_records_nothing() {
    let full = MemoryLeaseStore::new().with_full_history();
    lifecycle(&full).await;
    assert_eq!(
        ops(&full),
        [
            LeaseOp::Create,
            LeaseOp::Take,
            LeaseOp::Renew,
            LeaseOp::Renew,
            LeaseOp::Checkpoint,
            LeaseOp::Release,
            LeaseOp::Delete
        ]
    );

    let off = MemoryLeaseStore::new().with_history(HistoryMode::Off);
    lifecycle(&off).await;
    assert!(off.history().is_empty());
    assert_eq!(off.stats().total().ok, 7);

    full.clear_history();
    assert!(full.history().is_empty());
}

#[tokio::test(start_paused = true)]
async fn history_events_describe_each_write() {
    let store = MemoryLeaseStore::new();
    let start = Instant::now();
    let l = applied(store.create_if_absent(lease(1, None)).await);
    tokio::time::advance(Duration::from_secs(1)).await;
    let l = applied(store.take(&l, &w("w1")).await);
    let l = applied(store.take(&l, &w("w2")).await);
    let seq = Checkpoint::At(SequenceNumber::from_u128(42));
    let l = applied(store.checkpoint(&l, &seq, None).await);
    applied(store.delete(&l).await);

    let history = store.history();
    let brief: Vec<_> = history
        .iter()
        .map(|e| (e.op, e.owner_before.clone(), e.owner_after.clone(), e.counter_after, e.checkpoint_after.clone()))
        .collect();
    let th = Checkpoint::TrimHorizon;
    assert_eq!(
        brief,
        [
            (LeaseOp::Create, None, None, 0, th.clone()),
            (LeaseOp::Take, None, Some(w("w1")), 1, th.clone()),
            (LeaseOp::Take, Some(w("w1")), Some(w("w2")), 2, th),
            (LeaseOp::Checkpoint, Some(w("w2")), Some(w("w2")), 3, seq.clone()),
            (LeaseOp::Delete, Some(w("w2")), None, 3, seq),
        ]
    );
    assert_eq!(history[0].at, start);
    assert_eq!(history[1].at, start + Duration::from_secs(1));
    assert!(history.iter().all(|e| e.key == l.key));
}

#[tokio::test]
async fn take_by_the_current_owner_keeps_owner_switches() {
    let store = MemoryLeaseStore::new();
    let l = applied(store.create_if_absent(lease(1, None)).await);
    let l = applied(store.take(&l, &w("w1")).await);
    let l = applied(store.take(&l, &w("w1")).await);
    assert_eq!((l.counter, l.owner_switches_since_checkpoint), (2, 1));
}

#[tokio::test]
async fn stats_count_lost_writes_per_op() {
    let store = MemoryLeaseStore::new();
    let l = applied(store.create_if_absent(lease(1, Some("w1"))).await);
    assert_eq!(store.create_if_absent(lease(1, None)).await.unwrap(), LeaseUpdate::Lost);
    let _ = applied(store.renew(&l).await);
    for _ in 0..3 {
        assert_eq!(store.renew(&l).await.unwrap(), LeaseUpdate::Lost);
    }
    assert_eq!(store.take(&l, &w("w2")).await.unwrap(), LeaseUpdate::Lost);
    let _ = store.list().await.unwrap();

    let stats = store.stats();
    assert_eq!(stats.lost(LeaseOp::Create), 1);
    assert_eq!(stats.lost(LeaseOp::Renew), 3);
    assert_eq!(stats.of(LeaseOp::Renew).ok, 1);
    assert_eq!(stats.lost(LeaseOp::Take), 1);
    assert_eq!(stats.of(LeaseOpKind::List).ok, 1);
    assert_eq!(stats.total().calls(), 8);
    assert_eq!(ops(&store), [LeaseOp::Create], "lost writes are not in the history");
}

#[tokio::test]
async fn seed_and_peeks_bypass_history_stats_and_faults() {
    let store = MemoryLeaseStore::new();
    store.set_unavailable(true);
    store.seed(lease(2, Some("w1")));
    store.seed(lease(1, None));
    assert_eq!(store.get_now(&lease(2, None).key).and_then(|l| l.owner), Some(w("w1")));
    let keys: Vec<_> = store.leases().into_iter().map(|l| l.key).collect();
    assert_eq!(keys, [lease(1, None).key, lease(2, None).key]);
    assert_eq!((store.len(), store.is_empty()), (2, false));
    assert!(store.history().is_empty());
    assert_eq!(store.stats(), MemoryStoreStats::default());
}

#[tokio::test]
async fn fail_next_fails_only_the_selected_op_and_only_count_times() {
    let store = MemoryLeaseStore::new();
    let l = applied(store.create_if_absent(lease(1, Some("w1"))).await);
    store.fail_next(LeaseOpKind::Renew, LeaseStoreErrorKind::Throttled, 2);
    assert!(store.get(&l.key).await.unwrap().is_some(), "other ops are unaffected");
    assert_eq!(err_kind(store.renew(&l).await), LeaseStoreErrorKind::Throttled);
    assert_eq!(err_kind(store.renew(&l).await), LeaseStoreErrorKind::Throttled);
    assert_eq!(store.get_now(&l.key).unwrap().counter, 0, "failed calls change nothing");
    let l = applied(store.renew(&l).await);
    assert_eq!(l.counter, 1);
    assert_eq!(store.stats().of(LeaseOp::Renew).failed, 2);
}

#[tokio::test]
async fn fail_next_rules_queue_up_and_none_matches_every_op() {
    let store = MemoryLeaseStore::new();
    store.fail_next(None, LeaseStoreErrorKind::AccessDenied, 1);
    store.fail_next(LeaseOpKind::List, LeaseStoreErrorKind::TableNotFound, 1);
    store.fail_next(None, LeaseStoreErrorKind::Fatal, 0); // no-op
    assert_eq!(err_kind(store.list().await), LeaseStoreErrorKind::AccessDenied);
    assert_eq!(err_kind(store.list().await), LeaseStoreErrorKind::TableNotFound);
    assert!(store.list().await.is_ok());

    store.fail_next(None, LeaseStoreErrorKind::Malformed, 1);
    assert_eq!(err_kind(store.create_if_absent(lease(1, None)).await), LeaseStoreErrorKind::Malformed);
    assert!(store.is_empty());
}

#[tokio::test]
async fn unavailable_store_fails_every_call_until_back() {
    let store = MemoryLeaseStore::new();
    let l = applied(store.create_if_absent(lease(1, Some("w1"))).await);
    store.set_unavailable(true);
    assert_eq!(err_kind(store.list().await), LeaseStoreErrorKind::Transient);
    assert_eq!(err_kind(store.get(&l.key).await), LeaseStoreErrorKind::Transient);
    assert_eq!(err_kind(store.renew(&l).await), LeaseStoreErrorKind::Transient);
    assert_eq!(err_kind(store.take(&l, &w("w2")).await), LeaseStoreErrorKind::Transient);
    assert_eq!(err_kind(store.checkpoint(&l, &Checkpoint::ShardEnd, None).await), LeaseStoreErrorKind::Transient);
    assert_eq!(err_kind(store.release(&l).await), LeaseStoreErrorKind::Transient);
    assert_eq!(err_kind(store.delete(&l).await), LeaseStoreErrorKind::Transient);
    assert_eq!(err_kind(store.create_if_absent(lease(2, None)).await), LeaseStoreErrorKind::Transient);
    assert_eq!(store.leases(), std::slice::from_ref(&l), "nothing changed during the outage");
    assert!(store.renew(&l).await.expect_err("outage").is_retryable());
    store.set_unavailable(false);
    assert_eq!(applied(store.renew(&l).await).counter, 1);
    assert_eq!(store.stats().total().failed, 9);
}

/// The calls that failed, as a bit pattern, for `n` gets at the given rate and seed.
async fn failure_pattern(rate: f64, seed: u64, n: usize) -> Vec<Option<LeaseStoreErrorKind>> {
    let store = MemoryLeaseStore::new();
    store.set_error_rate(rate, seed);
    let mut pattern = Vec::with_capacity(n);
    for _ in 0..n {
        pattern.push(store.get(&lease(1, None).key).await.err().map(|e| e.kind()));
    }
    pattern
}

#[tokio::test]
async fn error_rate_is_deterministic_per_seed_and_near_its_rate() {
    let a = failure_pattern(0.3, 7, 2000).await;
    assert_eq!(a, failure_pattern(0.3, 7, 2000).await, "same seed, same faults");
    assert_ne!(a, failure_pattern(0.3, 8, 2000).await, "another seed, other faults");
    let failed = a.iter().flatten().count();
    assert!((450..750).contains(&failed), "{failed} of 2000 failed at rate 0.3");
    let throttled = a.iter().flatten().filter(|k| **k == LeaseStoreErrorKind::Throttled).count();
    assert!(throttled > 0 && throttled < failed, "both throttled and transient errors occur");
    assert!(a.iter().flatten().all(|k| matches!(k, LeaseStoreErrorKind::Throttled | LeaseStoreErrorKind::Transient)));

    assert!(failure_pattern(0.0, 7, 100).await.iter().all(Option::is_none));
    assert!(failure_pattern(1.0, 7, 100).await.iter().all(Option::is_some));
    assert!(failure_pattern(f64::NAN, 7, 10).await.iter().all(Option::is_none));
    assert!(failure_pattern(7.0, 7, 10).await.iter().all(Option::is_some), "rates are clamped to 1");
}

#[tokio::test]
async fn ambiguous_write_is_applied_but_reports_transient() {
    let store = MemoryLeaseStore::new();
    let l = applied(store.create_if_absent(lease(1, Some("w1"))).await);
    store.set_ambiguous_write_rate(1.0);
    let err = store.renew(&l).await.expect_err("ambiguous renew reports an error");
    assert_eq!(err.kind(), LeaseStoreErrorKind::Transient);
    assert_eq!(store.get_now(&l.key).unwrap().counter, 1, "the renew was applied");
    assert!(store.get(&l.key).await.is_ok(), "reads are never ambiguous");

    store.set_ambiguous_write_rate(0.0);
    assert_eq!(store.renew(&l).await.unwrap(), LeaseUpdate::Lost, "retrying from the old view loses the lease");
    let stats = store.stats().of(LeaseOp::Renew);
    assert_eq!((stats.ok, stats.ambiguous, stats.lost, stats.applied()), (0, 1, 1, 1));
}

#[tokio::test]
async fn ambiguous_writes_are_recorded_in_history_and_cover_every_write() {
    let store = MemoryLeaseStore::new().with_full_history();
    store.set_ambiguous_write_rate(1.0);
    let l = lease(1, None);
    assert!(store.create_if_absent(l.clone()).await.is_err());
    let l = store.get_now(&l.key).unwrap();
    assert!(store.take(&l, &w("w1")).await.is_err());
    let l = store.get_now(&l.key).unwrap();
    assert!(store.checkpoint(&l, &Checkpoint::Latest, None).await.is_err());
    let l = store.get_now(&l.key).unwrap();
    assert!(store.release(&l).await.is_err());
    let l = store.get_now(&l.key).unwrap();
    assert!(store.delete(&l).await.is_err());
    assert!(store.is_empty());
    assert_eq!(ops(&store), [LeaseOp::Create, LeaseOp::Take, LeaseOp::Checkpoint, LeaseOp::Release, LeaseOp::Delete]);
    assert_eq!(store.stats().total().ambiguous, 5);
}

#[tokio::test]
async fn ambiguous_rate_only_applies_to_applied_writes() {
    let store = MemoryLeaseStore::new();
    store.set_ambiguous_write_rate(1.0);
    assert_eq!(store.renew(&lease(1, None)).await.unwrap(), LeaseUpdate::Lost, "a lost write is reported as lost");
}

#[tokio::test]
async fn clear_faults_removes_rules_outage_and_rates() {
    let store = MemoryLeaseStore::new();
    store.fail_next(None, LeaseStoreErrorKind::Fatal, 5);
    store.set_unavailable(true);
    store.set_error_rate(1.0, 1);
    store.set_ambiguous_write_rate(1.0);
    store.clear_faults();
    assert!(applied(store.create_if_absent(lease(1, None)).await).owner.is_none());
}

#[tokio::test(start_paused = true)]
async fn latency_delays_each_call_in_paused_time() {
    let store = MemoryLeaseStore::new().with_full_history();
    let l = applied(store.create_if_absent(lease(1, Some("w1"))).await);
    store.set_latency(Duration::from_millis(100));
    let start = Instant::now();
    let l = applied(store.renew(&l).await);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(store.history().last().map(|e| e.at), Some(start + Duration::from_millis(100)), "acts after the delay");

    let start = Instant::now();
    let (a, b) = tokio::join!(store.get(&l.key), store.list());
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(start.elapsed(), Duration::from_millis(100), "concurrent calls wait side by side, not in turn");
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_during_its_latency_did_not_happen() {
    let store = MemoryLeaseStore::new();
    let l = applied(store.create_if_absent(lease(1, Some("w1"))).await);
    store.set_latency(Duration::from_secs(1));
    let timed_out = tokio::time::timeout(Duration::from_millis(500), store.renew(&l)).await;
    assert!(timed_out.is_err());
    assert_eq!(store.get_now(&l.key).unwrap().counter, 0);
    assert_eq!(store.stats().total().calls(), 1, "only the create was counted");
}

#[tokio::test]
async fn clones_share_one_table_and_debug_is_short() {
    let store = MemoryLeaseStore::new();
    let other = store.clone();
    for n in 0..1000 {
        store.seed(lease(n, None));
    }
    assert_eq!(other.len(), 1000);
    let debug = format!("{other:?}");
    assert!(debug.contains("items: 1000") && debug.len() < 400, "{debug}");
}

#[tokio::test]
async fn list_of_ten_thousand_leases_is_sorted_and_complete() {
    let store = MemoryLeaseStore::new();
    for n in (0..10_000).rev() {
        store.seed(lease(n, Some("w1")));
    }
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 10_000);
    assert!(listed.windows(2).all(|p| p[0].key < p[1].key));
}

#[test]
fn stats_and_kinds_are_consistent() {
    assert!(LeaseOpKind::ALL.iter().enumerate().all(|(i, k)| k.index() == i));
    assert_eq!(LeaseOpKind::ALL.iter().filter(|k| k.is_write()).count(), 7);
    let mut stats = MemoryStoreStats::default();
    stats.count(LeaseOpKind::Take).lost += 2;
    assert_eq!(stats.lost(LeaseOp::Take), 2);
    assert_eq!(stats.total().lost, 2);
}
