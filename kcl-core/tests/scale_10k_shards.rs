//! Two workers share a stream of 10,000 shards.

mod common;

use std::time::Duration;

use common::{Fleet, init_tracing};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::StreamSimulator;

#[tokio::test(start_paused = true)]
async fn two_workers_share_ten_thousand_shards() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(12).initial_shards(10_000).build();
    let mut fleet = Fleet::new(sim.clone(), MemoryLeaseStore::new());
    // Idle shards poll every 5 s here to keep the test quick; the default is 500 ms.
    fleet.tune = |b| b.idle_wait(Duration::from_secs(5), Duration::from_secs(5));
    fleet.start("a");
    fleet.start("b");
    fleet.wait_for(Duration::from_secs(60), "10,000 leases split 5,000/5,000", |f| f.balanced()).await;
    let owners = fleet.owners();
    assert_eq!(owners.get(&Some("a".to_owned())), Some(&5000), "{owners:?}");
    fleet.write(20_000, 20_000, Duration::ZERO).await;
    fleet.drain(Duration::from_secs(60)).await;
    assert_eq!(fleet.handle("a").status().leases_held() + fleet.handle("b").status().leases_held(), 10_000);
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.duplicates, 0);
}
