//! The stream misbehaves: trimmed data, throttling storms, expired iterators, transient errors.

mod common;

use std::time::Duration;

use common::{Fleet, init_tracing};
use kcl_core::SourceErrorKind;
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::StreamSimulator;

#[tokio::test(start_paused = true)]
async fn trimmed_data_is_counted_and_reading_resumes_at_the_oldest_record() {
    init_tracing();
    // One hour of retention; the worker starts only after the first records aged out.
    let sim = StreamSimulator::builder().seed(6).initial_shards(2).retention(Duration::from_secs(3600)).build();
    let mut fleet = Fleet::new(sim.clone(), MemoryLeaseStore::new());
    fleet.start("a");
    fleet.write(100, 20, Duration::from_millis(5)).await;
    fleet.drain(Duration::from_secs(30)).await;
    // The worker checkpoints, then goes away for longer than the retention.
    fleet.stop("a").await;
    fleet.write(100, 20, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_secs(3000)).await;
    fleet.write(100, 20, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_secs(1000)).await;
    fleet.write(100, 20, Duration::from_millis(5)).await;
    fleet.start("a");
    fleet.drain(Duration::from_secs(60)).await;
    let status = fleet.handle("a").status();
    assert!(status.trimmed_events >= 1, "the trimmed gap must be counted: {status:?}");
    // The first batch was processed before it aged out; the second aged out unread.
    assert_eq!(sim.trimmed().len(), 200, "the two batches written before the gap aged out");
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.lost, 0, "every record still retained was delivered");
}

#[tokio::test(start_paused = true)]
async fn throttling_storm_and_transient_errors_are_retried() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(7).initial_shards(6).build();
    let mut fleet = Fleet::new(sim.clone(), MemoryLeaseStore::new());
    fleet.start("a");
    fleet.start("b");
    sim.set_error_rate(SourceErrorKind::Throttled, 0.4);
    sim.inject_read_errors(SourceErrorKind::Transient, 50);
    fleet.write(600, 50, Duration::from_millis(5)).await;
    fleet.drain(Duration::from_secs(300)).await;
    assert!(sim.stats().throttles + sim.stats().errors > 50, "the storm happened: {:?}", sim.stats());
    sim.clear_faults();
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

#[tokio::test(start_paused = true)]
async fn expired_iterators_are_renewed_after_the_last_record() {
    init_tracing();
    // Iterators live 2 s and the worker idles 5 s between empty reads: every idle read hits
    // an expired iterator.
    let sim = StreamSimulator::builder().seed(8).initial_shards(3).iterator_ttl(Duration::from_secs(2)).build();
    let mut fleet = Fleet::new(sim.clone(), MemoryLeaseStore::new());
    fleet.tune = |b| b.idle_wait(Duration::from_secs(5), Duration::from_secs(5));
    fleet.start("a");
    for _ in 0..5 {
        fleet.write(50, 10, Duration::from_millis(10)).await;
        tokio::time::sleep(Duration::from_secs(12)).await;
    }
    fleet.drain(Duration::from_secs(60)).await;
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.duplicates, 0, "a new iterator starts right after the last record read");
    assert!(sim.stats().shard_iterator_calls > 10, "iterators were renewed: {:?}", sim.stats());
}
