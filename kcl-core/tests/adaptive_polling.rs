//! Adaptive idle polling with the default settings: an idle shard costs at most 600 reads an
//! hour, while a shard that has records is read at once, and the first record after an idle
//! period brings the short wait back.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Fleet, init_tracing};
use kcl_core::SequenceNumber;
use kcl_core::config::{DEFAULT_IDLE_ACTIVE_WINDOW, DEFAULT_IDLE_WAIT_MAX, DEFAULT_IDLE_WAIT_MIN};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::{ChangeKind, StreamSimulator};
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

/// One worker on one shard, holding its lease and done with its first reads.
async fn one_shard_fleet() -> Fleet {
    let sim = StreamSimulator::builder().seed(3).initial_shards(1).build();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet
}

/// Writes one change and returns when it was written.
fn write(fleet: &Fleet, key: &str) -> (SequenceNumber, Instant) {
    let record = fleet.sim.write(key, ChangeKind::Insert);
    (record.sequence_number, Instant::now())
}

/// How long after its write each record was first handed to `process_records`.
fn latencies(fleet: &Fleet, written: &[(SequenceNumber, Instant)]) -> Vec<Duration> {
    let mut first: HashMap<SequenceNumber, Instant> = HashMap::new();
    for d in fleet.log.deliveries() {
        first.entry(d.sequence_number).or_insert(d.at);
    }
    written.iter().map(|(seq, at)| first.get(seq).map(|d| d.saturating_duration_since(*at)).unwrap_or(HOUR)).collect()
}

#[tokio::test(start_paused = true)]
async fn an_idle_shard_costs_at_most_600_reads_an_hour() {
    init_tracing();
    let mut fleet = one_shard_fleet().await;
    // The hour right after the shard's last record is the costliest: it holds the active
    // window at the short wait and the ramp up to the longest.
    write(&fleet, "only");
    fleet.drain(Duration::from_secs(10)).await;
    let before = fleet.sim.stats().read_calls;
    tokio::time::sleep(HOUR).await;
    let reads = fleet.sim.stats().read_calls - before;
    assert!(reads <= 600, "{reads} reads in an idle hour");
    // Steady state: one read per longest wait, so not much fewer either (the shard is polled).
    let steady = HOUR.as_secs() / DEFAULT_IDLE_WAIT_MAX.as_secs();
    assert!(reads >= steady, "{reads} reads in an idle hour, fewer than {steady}");
    fleet.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_bursty_shard_is_read_promptly_and_the_first_record_brings_the_short_wait_back() {
    init_tracing();
    let mut fleet = one_shard_fleet().await;
    // Long idle: the wait has grown to its maximum.
    tokio::time::sleep(Duration::from_secs(600)).await;

    // The first change after the idle period waits at most one longest wait.
    let first = write(&fleet, "burst-0");
    fleet.drain(DEFAULT_IDLE_WAIT_MAX * 2).await;
    let first_latency = latencies(&fleet, std::slice::from_ref(&first))[0];
    assert!(first_latency <= DEFAULT_IDLE_WAIT_MAX, "first change after idle read after {first_latency:?}");

    // A burst right after it: 5 changes a second for 10 s. Each is read within the short wait.
    let reads_before = fleet.sim.stats().read_calls;
    let burst_started = Instant::now();
    let mut burst = Vec::new();
    for i in 1..=50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        burst.push(write(&fleet, &format!("burst-{i}")));
    }
    let burst_reads = fleet.sim.stats().read_calls - reads_before;
    let burst_secs = burst_started.elapsed().as_secs_f64();
    fleet.drain(Duration::from_secs(5)).await;
    let slowest = latencies(&fleet, &burst).into_iter().max().unwrap_or_default();
    assert!(slowest <= DEFAULT_IDLE_WAIT_MIN, "a record of the burst waited {slowest:?}");
    let per_second = burst_reads as f64 / burst_secs;
    assert!(per_second >= 4.0, "{per_second:.1} reads a second during the burst");

    // A quiet spell shorter than the active window keeps the short wait.
    tokio::time::sleep(DEFAULT_IDLE_ACTIVE_WINDOW / 2).await;
    let after_pause = write(&fleet, "after-pause");
    fleet.drain(Duration::from_secs(5)).await;
    let latency = latencies(&fleet, &[after_pause])[0];
    assert!(latency <= DEFAULT_IDLE_WAIT_MIN, "a record within the active window waited {latency:?}");
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

#[tokio::test(start_paused = true)]
async fn one_record_after_idle_resets_the_wait() {
    init_tracing();
    let mut fleet = one_shard_fleet().await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    let first = write(&fleet, "wake");
    fleet.drain(DEFAULT_IDLE_WAIT_MAX * 2).await;
    // Written a second after the first was read: the wait is short again, not the longest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = write(&fleet, "next");
    fleet.drain(Duration::from_secs(10)).await;
    let l = latencies(&fleet, &[first, second]);
    assert!(l[0] <= DEFAULT_IDLE_WAIT_MAX, "first after idle: {:?}", l[0]);
    assert!(l[1] <= DEFAULT_IDLE_WAIT_MIN, "second, a second later: {:?}", l[1]);
    fleet.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_read_that_returns_records_is_followed_at_once() {
    init_tracing();
    let mut fleet = one_shard_fleet().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    // A backlog of three reads' worth (1000 records a read), written at once while idle.
    let backlog: Vec<_> = (0..2500).map(|i| write(&fleet, &format!("k{i}"))).collect();
    fleet.drain(DEFAULT_IDLE_WAIT_MAX * 2).await;
    let l = latencies(&fleet, &backlog);
    // The first read waited for the idle wait to pass; the ones after it did not wait at all.
    assert!(l[0] <= DEFAULT_IDLE_WAIT_MAX, "first read after {:?}", l[0]);
    let spread = l.iter().max().copied().unwrap_or_default() - l.iter().min().copied().unwrap_or_default();
    assert!(spread < DEFAULT_IDLE_WAIT_MIN, "the backlog's reads were {spread:?} apart");
    fleet.stop_all().await;
}
