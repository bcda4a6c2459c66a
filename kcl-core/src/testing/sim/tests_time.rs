//! Simulator tests driven by (paused) tokio time: retention, iterator expiry, throttling of
//! concurrent readers, late children, automatic rotations and splits, the wall clock.

use std::time::{Duration, SystemTime};

use tokio::time::advance;

use super::tests::{describe, err_kind, iter, ok, read_all};
use super::*;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(60 * 60);

#[tokio::test(start_paused = true)]
async fn trimming_moves_trim_horizon_and_rejects_trimmed_positions() {
    let sim = StreamSimulator::builder().retention(HOUR).iterator_ttl(2 * HOUR).build();
    let shard = sim.open_shards()[0].clone();
    let a = sim.write("a", ChangeKind::Insert);
    let b = sim.write("b", ChangeKind::Insert);
    let early = iter(&sim, &shard, StartPosition::TrimHorizon).await;
    advance(30 * MINUTE).await;
    let c = sim.write("c", ChangeKind::Insert);
    advance(HOUR).await;
    assert_eq!(sim.trimmed(), [a.clone(), b.clone()]);
    assert_eq!(sim.written(), [a.clone(), b.clone(), c.clone()]);

    let (records, _) = read_all(&sim, &shard, StartPosition::TrimHorizon).await;
    assert_eq!(records, std::slice::from_ref(&c));
    assert_eq!(sim.shard_records(&shard), Some(vec![c.clone()]));
    assert_eq!(err_kind("iterator issued before the trim", sim.read(&early, 10).await), SourceErrorKind::TrimmedData);
    for start in [
        StartPosition::AtSequenceNumber(a.sequence_number.clone()),
        StartPosition::AtSequenceNumber(b.sequence_number.clone()),
        StartPosition::AfterSequenceNumber(a.sequence_number.clone()),
    ] {
        let result = sim.shard_iterator(&shard, &start).await;
        assert_eq!(err_kind(&format!("{start:?}"), result), SourceErrorKind::TrimmedData);
    }
    // Right after the last trimmed record is the oldest retained one: still readable.
    let (after_b, _) = read_all(&sim, &shard, StartPosition::AfterSequenceNumber(b.sequence_number.clone())).await;
    assert_eq!(after_b, std::slice::from_ref(&c));
    let (at_c, _) = read_all(&sim, &shard, StartPosition::AtSequenceNumber(c.sequence_number.clone())).await;
    assert_eq!(at_c, [c]);

    advance(HOUR).await;
    assert_eq!(sim.trimmed().len(), 3);
    let (records, ended) = read_all(&sim, &shard, StartPosition::TrimHorizon).await;
    assert!(records.is_empty() && !ended, "an open shard stays listed and readable at its head");
}

#[tokio::test(start_paused = true)]
async fn closed_shards_vanish_once_past_retention() {
    let sim = StreamSimulator::builder().retention(HOUR).build();
    let parent = sim.open_shards()[0].clone();
    sim.write("a", ChangeKind::Insert);
    advance(10 * MINUTE).await;
    let child = ok("rotate", sim.rotate(&parent));
    advance(HOUR).await;
    // The record is trimmed but the shard closed only 60 minutes ago: still listed.
    assert_eq!(sim.trimmed().len(), 1);
    assert!(describe(&sim, &parent).await.is_closed());
    advance(Duration::from_secs(1)).await;
    let listed: Vec<ShardId> = ok("list", sim.list_shards().await).into_iter().map(|s| s.id).collect();
    assert_eq!(listed, std::slice::from_ref(&child));
    let result = sim.shard_iterator(&parent, &StartPosition::TrimHorizon).await;
    assert_eq!(err_kind("vanished shard", result), SourceErrorKind::NotFound);
    assert_eq!(describe(&sim, &child).await.parent_ids, [parent], "the child still names its parent");
}

#[tokio::test(start_paused = true)]
async fn iterators_expire_after_fifteen_minutes() {
    let sim = StreamSimulator::default();
    let shard = sim.open_shards()[0].clone();
    sim.write("a", ChangeKind::Insert);
    let it = iter(&sim, &shard, StartPosition::TrimHorizon).await;
    advance(DEFAULT_ITERATOR_TTL).await;
    let batch = ok("read at exactly 15 minutes", sim.read(&it, 10).await);
    let next = batch.next_iterator.unwrap_or_else(|| panic!("open shard without next iterator"));
    advance(Duration::from_secs(1)).await;
    assert_eq!(err_kind("read after 15 min + 1 s", sim.read(&it, 10).await), SourceErrorKind::ExpiredIterator);
    ok("a next iterator is issued fresh", sim.read(&next, 10).await);
    advance(DEFAULT_ITERATOR_TTL + Duration::from_secs(1)).await;
    assert_eq!(err_kind("next iterator later", sim.read(&next, 10).await), SourceErrorKind::ExpiredIterator);
}

#[tokio::test(start_paused = true)]
async fn a_third_concurrent_reader_is_throttled() {
    let latency = Duration::from_millis(200);
    let sim = StreamSimulator::builder().initial_shards(2).read_latency(latency).build();
    let shards = sim.open_shards();
    let it = iter(&sim, &shards[0], StartPosition::TrimHorizon).await;
    let other = iter(&sim, &shards[1], StartPosition::TrimHorizon).await;
    let started = tokio::time::Instant::now();
    let (r1, r2, r3, r4) = tokio::join!(sim.read(&it, 10), sim.read(&it, 10), sim.read(&it, 10), sim.read(&other, 10));
    assert_eq!(started.elapsed(), latency);
    let kinds: Vec<Option<SourceErrorKind>> = [r1, r2, r3].into_iter().map(|r| r.err().map(|e| e.kind())).collect();
    assert_eq!(kinds, [None, None, Some(SourceErrorKind::Throttled)]);
    ok("another shard has its own readers", r4);
    assert_eq!(sim.stats().throttles, 1);
    // The slots are free again once the reads are over.
    let (r1, r2) = tokio::join!(sim.read(&it, 10), sim.read(&it, 10));
    ok("first", r1);
    ok("second", r2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_read_frees_its_slot() {
    let sim = StreamSimulator::builder().max_readers_per_shard(1).read_latency(Duration::from_secs(1)).build();
    let it = iter(&sim, &sim.open_shards()[0], StartPosition::TrimHorizon).await;
    let cancelled = tokio::time::timeout(Duration::from_millis(10), sim.read(&it, 10)).await;
    assert!(cancelled.is_err(), "the read should have timed out");
    ok("read after the cancelled one", sim.read(&it, 10).await);
}

#[tokio::test(start_paused = true)]
async fn children_are_listed_only_after_the_delay() {
    let delay = Duration::from_secs(5);
    let sim = StreamSimulator::builder().child_listing_delay(delay).build();
    let parent = sim.open_shards()[0].clone();
    let child = ok("rotate", sim.rotate(&parent));
    let ids = || async { ok("list", sim.list_shards().await).into_iter().map(|s| s.id).collect::<Vec<_>>() };
    assert_eq!(ids().await, std::slice::from_ref(&parent));
    assert!(describe(&sim, &parent).await.is_closed());
    // Writes already go to the child, which can be read by id.
    let record = sim.write("a", ChangeKind::Insert);
    assert_eq!(record.shard_id, child);
    assert_eq!(read_all(&sim, &child, StartPosition::TrimHorizon).await.0, [record]);
    advance(delay - Duration::from_millis(1)).await;
    assert_eq!(ids().await, std::slice::from_ref(&parent));
    advance(Duration::from_millis(1)).await;
    assert_eq!(ids().await, [parent, child]);
}

#[tokio::test(start_paused = true)]
async fn automatic_rotations_and_splits_apply_lazily_at_their_instants() {
    let sim = StreamSimulator::builder().auto_rotate_every(Some(4 * HOUR)).auto_split_every(Some(3 * HOUR)).build();
    advance(8 * HOUR).await;
    // Due so far: split at 3 h, rotation at 4 h, split at 6 h, rotation at 8 h.
    let shards = ok("list", sim.list_shards().await);
    assert_eq!(shards.len(), 10, "{shards:#?}");
    assert_eq!(sim.open_shards().len(), 3);
    let created_hours: Vec<u64> = shards
        .iter()
        .map(|s| {
            let millis: u64 = s.id.as_str()[8..28].parse().unwrap_or_else(|e| panic!("{}: {e}", s.id));
            (millis - 1_700_000_000_000) / 3_600_000
        })
        .collect();
    assert_eq!(created_hours, [0, 3, 3, 4, 4, 6, 6, 8, 8, 8]);
    let record = sim.write("a", ChangeKind::Insert);
    assert!(sim.open_shards().contains(&record.shard_id));
}

#[tokio::test(start_paused = true)]
async fn created_at_follows_the_simulated_clock() {
    let sim = StreamSimulator::default();
    advance(Duration::from_millis(10_500)).await;
    let record = sim.write("a", ChangeKind::Insert);
    let want = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_010_500);
    assert_eq!(record.created_at, want);
    assert_eq!(sim.wall_clock(), want);
    assert_eq!(sim.elapsed(), Duration::from_millis(10_500));
}
