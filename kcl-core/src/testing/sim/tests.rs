//! Simulator tests that need no passing of time: formats, routing, lineage, validation,
//! faults, determinism and scale. Time-driven behaviour is in `tests_time.rs`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;

use super::*;
use crate::checkpoint::SequenceNumber;

/// Unwraps a result in a test, naming what failed.
pub(super) fn ok<T, E: Debug>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

/// The kind of the error a call returned, panicking if it succeeded.
pub(super) fn err_kind<T: Debug>(what: &str, result: Result<T, SourceError>) -> SourceErrorKind {
    match result {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e.kind(),
    }
}

pub(super) async fn iter(sim: &StreamSimulator, shard: &ShardId, start: StartPosition) -> ShardIterator {
    ok("shard_iterator", sim.shard_iterator(shard, &start).await)
}

/// Every record from `start` to the end of the shard (or its head, if open).
pub(super) async fn read_all(sim: &StreamSimulator, shard: &ShardId, start: StartPosition) -> (Vec<SimRecord>, bool) {
    let mut iterator = iter(sim, shard, start).await;
    let mut records = Vec::new();
    loop {
        let batch = ok("read", sim.read(&iterator, 100).await);
        let empty = batch.records.is_empty();
        records.extend(batch.records);
        match batch.next_iterator {
            None => return (records, true),
            Some(_) if empty => return (records, false),
            Some(next) => iterator = next,
        }
    }
}

pub(super) async fn describe(sim: &StreamSimulator, shard: &ShardId) -> ShardDescription {
    let shards = ok("list_shards", sim.list_shards().await);
    shards.into_iter().find(|s| &s.id == shard).unwrap_or_else(|| panic!("{shard} is not listed"))
}

fn seq(n: u128) -> SequenceNumber {
    SequenceNumber::from_u128(n)
}

#[tokio::test]
async fn sequence_numbers_and_shard_ids_look_like_dynamodb() {
    let sim = StreamSimulator::builder().seed(3).build();
    let records: Vec<SimRecord> = (0..50).map(|i| sim.write(&format!("k{i}"), ChangeKind::Insert)).collect();
    for pair in records.windows(2) {
        assert!(pair[0].sequence_number < pair[1].sequence_number, "{pair:?}");
    }
    assert!(records.iter().all(|r| r.sequence_number.as_str().len() == 21), "{:?}", records[0]);
    let shard = describe(&sim, &records[0].shard_id).await;
    let id = shard.id.as_str();
    let (prefix, rest) = id.split_at("shardId-".len());
    assert_eq!(prefix, "shardId-");
    let (millis, suffix) = rest.split_once('-').unwrap_or_else(|| panic!("{id}"));
    assert_eq!(millis, "00000001700000000000");
    assert!(suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert!(shard.parent_ids.is_empty());
    assert!(shard.starting_sequence_number.as_ref().is_some_and(|s| s < &records[0].sequence_number));
    assert_eq!(shard.ending_sequence_number, None);
}

#[tokio::test]
async fn versions_count_writes_per_key() {
    let sim = StreamSimulator::default();
    let kinds = [ChangeKind::Insert, ChangeKind::Modify, ChangeKind::Remove];
    let versions: Vec<u64> = kinds.iter().map(|&k| sim.write("a", k).version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(sim.write("b", ChangeKind::Insert).version, 1);
    assert_eq!((sim.version("a"), sim.version("b"), sim.version("c")), (3, 1, 0));
    let written: Vec<(String, ChangeKind)> = sim.written().into_iter().map(|r| (r.key, r.kind)).collect();
    assert_eq!(written[..3], kinds.map(|k| ("a".to_owned(), k)));
}

#[tokio::test]
async fn initial_shards_share_the_hash_space() {
    let sim = StreamSimulator::with_shards(4);
    assert_eq!(sim.open_shards().len(), 4);
    let mut per_shard: BTreeMap<ShardId, usize> = BTreeMap::new();
    for i in 0..4000 {
        *per_shard.entry(sim.write(&format!("item-{i}"), ChangeKind::Insert).shard_id).or_default() += 1;
    }
    assert_eq!(per_shard.len(), 4);
    assert!(per_shard.values().all(|&n| n > 700), "{per_shard:?}");
    // The same key always lands in the same open shard.
    let a = sim.write("item-7", ChangeKind::Modify).shard_id;
    assert_eq!(sim.write("item-7", ChangeKind::Modify).shard_id, a);
}

#[tokio::test]
async fn rotation_ends_the_parent_and_links_one_child() {
    let sim = StreamSimulator::default();
    let parent = sim.open_shards()[0].clone();
    let before = sim.write("a", ChangeKind::Insert);
    let child = ok("rotate", sim.rotate(&parent));
    let after = sim.write("a", ChangeKind::Modify);
    assert_eq!((before.shard_id.clone(), after.shard_id.clone()), (parent.clone(), child.clone()));
    assert_eq!(sim.open_shards(), std::slice::from_ref(&child));

    let p = describe(&sim, &parent).await;
    let c = describe(&sim, &child).await;
    let end = p.ending_sequence_number.clone().unwrap_or_else(|| panic!("parent not closed: {p:?}"));
    assert!(end >= before.sequence_number && c.starting_sequence_number.as_ref().is_some_and(|s| s > &end));
    assert_eq!(c.parent_ids, std::slice::from_ref(&parent));

    let (records, ended) = read_all(&sim, &parent, StartPosition::TrimHorizon).await;
    assert_eq!((records, ended), (vec![before], true));
    let latest = ok("read", sim.read(&iter(&sim, &parent, StartPosition::Latest).await, 10).await);
    assert!(latest.records.is_empty() && latest.next_iterator.is_none(), "{latest:?}");

    assert_eq!(sim.rotate(&parent), Err(SimError::ShardClosed(parent.clone())));
    let unknown = ShardId::new("shardId-1");
    assert_eq!(sim.rotate(&unknown), Err(SimError::UnknownShard(unknown.clone())));
    assert_eq!(sim.split(&parent), Err(SimError::ShardClosed(parent)));
}

#[tokio::test]
async fn splits_route_keys_to_both_children_and_keep_per_key_order() {
    let sim = StreamSimulator::builder().seed(11).build();
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    let parent = sim.open_shards()[0].clone();
    keys.iter().for_each(|k| drop(sim.write(k, ChangeKind::Insert)));
    let (low, high) = ok("split", sim.split(&parent));
    assert_eq!(sim.open_shards(), [low.clone(), high.clone()]);
    let mut home = BTreeMap::new();
    for k in &keys {
        let first = sim.write(k, ChangeKind::Modify).shard_id;
        let second = sim.write(k, ChangeKind::Modify).shard_id;
        assert_eq!(first, second, "{k} moved between children");
        home.insert(k.clone(), first);
    }
    let in_low = home.values().filter(|s| **s == low).count();
    assert!(in_low > 50 && in_low < 150, "low child got {in_low} of 200 keys");

    // Reading the parent to its end, then each child, gives every key's versions in order.
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let (parent_records, ended) = read_all(&sim, &parent, StartPosition::TrimHorizon).await;
    assert!(ended);
    for child in [&low, &high] {
        assert_eq!(describe(&sim, child).await.parent_ids, std::slice::from_ref(&parent));
    }
    let (low_records, _) = read_all(&sim, &low, StartPosition::TrimHorizon).await;
    let (high_records, _) = read_all(&sim, &high, StartPosition::TrimHorizon).await;
    for r in parent_records.iter().chain(&low_records).chain(&high_records) {
        versions.entry(r.key.clone()).or_default().push(r.version);
    }
    assert_eq!(versions.len(), 200);
    assert!(versions.values().all(|v| v == &[1, 2, 3]), "{versions:?}");
}

#[tokio::test]
async fn a_single_hash_value_cannot_be_split() {
    let sim = StreamSimulator::default();
    let mut shard = sim.open_shards()[0].clone();
    for _ in 0..64 {
        shard = ok("split", sim.split(&shard)).0;
    }
    assert_eq!(sim.split(&shard), Err(SimError::CannotSplit(shard.clone())));
    assert_eq!(sim.open_shards().len(), 65);
    // Key routing still covers the whole hash space.
    (0..100).for_each(|i| drop(sim.write(&format!("k{i}"), ChangeKind::Insert)));
}

#[tokio::test]
async fn reads_validate_limit_iterator_and_positions() {
    let sim = StreamSimulator::default();
    let shard = sim.open_shards()[0].clone();
    let records: Vec<SimRecord> = ["a", "b", "c"].map(|k| sim.write(k, ChangeKind::Insert)).into();
    let it = iter(&sim, &shard, StartPosition::TrimHorizon).await;
    assert_eq!(err_kind("limit 0", sim.read(&it, 0).await), SourceErrorKind::Fatal);
    assert_eq!(err_kind("limit 1001", sim.read(&it, 1001).await), SourceErrorKind::Fatal);
    assert_eq!(ok("limit 1000", sim.read(&it, 1000).await).records, records);
    for bad in ["garbage", "simitr:0:ff:0", "simitr:9:0:0"] {
        let result = sim.read(&ShardIterator(bad.to_owned()), 10).await;
        assert_eq!(err_kind(bad, result), SourceErrorKind::Fatal);
    }
    let below = StartPosition::AtSequenceNumber(seq(1));
    assert_eq!(err_kind("below range", sim.shard_iterator(&shard, &below).await), SourceErrorKind::Fatal);
    let huge = StartPosition::AtSequenceNumber(ok("parse", SequenceNumber::parse(&"9".repeat(40))));
    let at_head = ok("read", sim.read(&iter(&sim, &shard, huge.clone()).await, 10).await);
    assert!(at_head.records.is_empty() && at_head.next_iterator.is_some());
    ok("rotate", sim.rotate(&shard));
    assert_eq!(err_kind("above closed range", sim.shard_iterator(&shard, &huge).await), SourceErrorKind::Fatal);
    let unknown = ShardId::new("shardId-00000000000000000000-00000000");
    let result = sim.shard_iterator(&unknown, &StartPosition::Latest).await;
    assert_eq!(err_kind("unknown shard", result), SourceErrorKind::NotFound);
}

#[tokio::test]
async fn injected_faults_count_down() {
    let sim = StreamSimulator::default();
    let shard = sim.open_shards()[0].clone();
    sim.write("a", ChangeKind::Insert);
    sim.inject_read_errors(SourceErrorKind::Transient, 2);
    sim.inject_list_errors(SourceErrorKind::NotFound, 1);
    assert_eq!(sim.pending_faults(), 3);
    for _ in 0..2 {
        let result = sim.shard_iterator(&shard, &StartPosition::TrimHorizon).await;
        assert_eq!(err_kind("injected", result), SourceErrorKind::Transient);
    }
    let it = iter(&sim, &shard, StartPosition::TrimHorizon).await;
    sim.inject_read_errors(SourceErrorKind::Throttled, 1);
    assert_eq!(err_kind("injected", sim.read(&it, 10).await), SourceErrorKind::Throttled);
    assert_eq!(ok("read", sim.read(&it, 10).await).records.len(), 1);
    assert_eq!(err_kind("injected", sim.list_shards().await), SourceErrorKind::NotFound);
    assert_eq!(ok("list", sim.list_shards().await).len(), 1);
    assert_eq!(sim.pending_faults(), 0);

    let stats = sim.stats();
    assert_eq!(
        (stats.shard_iterator_calls, stats.read_calls, stats.list_shards_calls, stats.records_returned),
        (3, 2, 2, 1)
    );
    assert_eq!((stats.errors, stats.throttles, stats.records_written), (4, 1, 1));

    sim.inject_read_errors(SourceErrorKind::Fatal, 5);
    sim.set_error_rate(SourceErrorKind::Transient, 1.0);
    sim.clear_faults();
    ok("after clear_faults", sim.read(&it, 10).await);
}

/// Error kinds of 100 reads with random faults at 30 %.
async fn random_faults(seed: u64) -> Vec<Option<SourceErrorKind>> {
    let sim = StreamSimulator::builder().seed(seed).build();
    let it = iter(&sim, &sim.open_shards()[0], StartPosition::TrimHorizon).await;
    sim.set_error_rate(SourceErrorKind::Transient, 0.3);
    let mut kinds = Vec::new();
    for _ in 0..100 {
        kinds.push(sim.read(&it, 10).await.err().map(|e| e.kind()));
    }
    kinds
}

#[tokio::test]
async fn random_faults_follow_the_seed() {
    let a = random_faults(21).await;
    assert_eq!(a, random_faults(21).await);
    assert_ne!(a, random_faults(22).await);
    let failures = a.iter().filter(|k| k.is_some()).count();
    assert!((15..=45).contains(&failures), "{failures} of 100 failed at 30 %");
}

/// Everything observable about a scenario: shards as listed and records as written.
async fn scenario(seed: u64) -> (Vec<ShardDescription>, Vec<SimRecord>) {
    let sim = StreamSimulator::builder().seed(seed).initial_shards(3).build();
    for round in 0..3 {
        (0..20).for_each(|i| drop(sim.write(&format!("k{i}"), ChangeKind::Modify)));
        let first = sim.open_shards()[0].clone();
        match round {
            0 => drop(ok("split", sim.split(&first))),
            1 => drop(sim.rotate_all()),
            _ => drop(ok("rotate", sim.rotate(&first))),
        }
    }
    (ok("list", sim.list_shards().await), sim.written())
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_stream_other_seed_other_stream() {
    let (shards, records) = scenario(5).await;
    assert_eq!((shards.clone(), records.clone()), scenario(5).await);
    let (other_shards, other_records) = scenario(6).await;
    let ids = |s: &[ShardDescription]| s.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    let seqs = |r: &[SimRecord]| r.iter().map(|r| r.sequence_number.clone()).collect::<Vec<_>>();
    assert_ne!(ids(&shards), ids(&other_shards));
    assert_ne!(seqs(&records), seqs(&other_records));
    let unique: HashSet<ShardId> = ids(&shards).into_iter().collect();
    assert_eq!(unique.len(), shards.len());
}

#[tokio::test]
async fn ten_thousand_shards_list_quickly() {
    let sim = StreamSimulator::with_shards(10_000);
    for i in 0..20_000 {
        sim.write(&format!("item-{i}"), ChangeKind::Insert);
    }
    let started = std::time::Instant::now();
    let shards = ok("list", sim.list_shards().await);
    assert_eq!(shards.len(), 10_000);
    assert_eq!(sim.rotate_all().len(), 10_000);
    let after = ok("list", sim.list_shards().await);
    let took = started.elapsed();
    assert_eq!(after.len(), 20_000);
    assert!(took < std::time::Duration::from_secs(2), "listing took {took:?}");
    let unique: HashSet<&ShardId> = after.iter().map(|s| &s.id).collect();
    assert_eq!(unique.len(), 20_000);
}

#[tokio::test]
async fn debug_output_is_a_summary() {
    let sim = StreamSimulator::with_shards(3);
    (0..1000).for_each(|i| drop(sim.write(&format!("k{i}"), ChangeKind::Insert)));
    let shown = format!("{sim:?}");
    assert!(shown.starts_with("StreamSimulator {") && shown.contains("shards: 3"), "{shown}");
    assert!(shown.len() < 400, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_readers_keep_per_key_order() {
    let sim = StreamSimulator::builder().initial_shards(4).max_readers_per_shard(64).build();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let sim = sim.clone();
        tasks.spawn(async move {
            for i in 0..500 {
                sim.write(&format!("key-{}", i % 50), ChangeKind::Modify);
                if i % 100 == 0 {
                    let shard = sim.open_shards()[w % 2].clone();
                    ok("read", sim.read(&iter(&sim, &shard, StartPosition::TrimHorizon).await, 1000).await);
                }
            }
        });
    }
    tasks.spawn({
        let sim = sim.clone();
        async move {
            for _ in 0..3 {
                tokio::task::yield_now().await;
                sim.rotate_all();
            }
        }
    });
    while let Some(joined) = tasks.join_next().await {
        ok("task", joined);
    }
    let written = sim.written();
    assert_eq!(written.len(), 2000);
    for pair in written.windows(2) {
        assert!(pair[0].sequence_number < pair[1].sequence_number && pair[0].created_at <= pair[1].created_at);
    }
    // Lineage order (parents before children, as listed) keeps each key's versions in order.
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for shard in ok("list", sim.list_shards().await) {
        for r in read_all(&sim, &shard.id, StartPosition::TrimHorizon).await.0 {
            versions.entry(r.key).or_default().push(r.version);
        }
    }
    assert_eq!(versions.len(), 50);
    assert!(versions.values().all(|v| v.iter().copied().eq(1..=40)), "{versions:?}");
}
