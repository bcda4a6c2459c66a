//! Seeded soak: random crashes, partitions, joins, graceful leaves, rotations, splits,
//! throttling and lease-table faults, all at once; every invariant checked for each seed.
//!
//! The same soak runs again with the in-shard controls on: four lanes per shard, batches of
//! up to 20 records gathered for up to 200 ms, and an event filter that drops the removals.
//!
//! 200 seeds by default; set `KCL_SOAK_SEEDS` for more (and `KCL_SOAK_FIRST_SEED` to start
//! elsewhere, e.g. to replay a failing seed).

mod common;

use std::time::Duration;

use common::Fleet;
use kcl_core::SourceErrorKind;
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::StreamSimulator;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn seeds(part: u64, parts: u64) -> impl Iterator<Item = u64> {
    let count: u64 = std::env::var("KCL_SOAK_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let first: u64 = std::env::var("KCL_SOAK_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    (first..first + count).filter(move |s| s % parts == part)
}

/// Drops removals (the soak's event filter, as the checker sees it).
fn drops_removals(r: &kcl_core::testing::sim::SimRecord) -> bool {
    r.kind == kcl_core::testing::sim::ChangeKind::Remove
}

/// The soak's filter in Lambda's syntax: everything but removals.
fn removals_dropped() -> kcl_core::FilterCriteria {
    kcl_core::FilterCriteria::parse(r#"{"eventName": [{"anything-but": ["REMOVE"]}]}"#)
        .unwrap_or_else(|e| panic!("the soak's filter: {e}"))
}

async fn soak(seed: u64, lanes: bool) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let sim = StreamSimulator::builder()
        .seed(seed)
        .initial_shards(rng.random_range(1..=6))
        .child_listing_delay(Duration::from_millis(rng.random_range(0..3000)))
        .iterator_ttl(Duration::from_secs(rng.random_range(5..=900)))
        .build();
    let store = MemoryLeaseStore::new();
    let mut fleet = Fleet::new(sim.clone(), store.clone());
    fleet.tune = match lanes {
        false => |b| b.shard_sync_interval(Duration::from_secs(5)),
        true => |b| {
            b.shard_sync_interval(Duration::from_secs(5))
                .parallelism(4)
                .batch_size(20)
                .batching_window(Duration::from_millis(200))
                .filter(removals_dropped())
        },
    };
    if lanes {
        fleet.filtered = Some(drops_removals);
    }
    let mut names: Vec<String> = Vec::new();
    let mut next_name = 0;
    let mut start = |fleet: &mut Fleet, names: &mut Vec<String>| {
        let name = format!("w{next_name}");
        next_name += 1;
        fleet.start(&name);
        names.push(name);
    };
    for _ in 0..rng.random_range(2..=4) {
        start(&mut fleet, &mut names);
    }
    if rng.random_bool(0.5) {
        sim.set_error_rate(SourceErrorKind::Throttled, rng.random_range(0.0..0.2));
    }
    if rng.random_bool(0.5) {
        store.set_error_rate(rng.random_range(0.0..0.1), seed);
    }
    let mut cut: Option<(String, u32)> = None;
    for step in 0..30 {
        fleet.write(rng.random_range(10..60), 25, Duration::from_millis(rng.random_range(5..50))).await;
        if let Some((name, until)) = cut.take() {
            if step >= until {
                fleet.set_cut(&name, false);
            } else {
                cut = Some((name, until));
            }
        }
        match rng.random_range(0..100) {
            0..8 if names.len() > 1 => {
                let victim = names.remove(rng.random_range(0..names.len()));
                if cut.as_ref().is_some_and(|(n, _)| *n == victim) {
                    cut = None;
                }
                fleet.crash(&victim);
            }
            8..14 if names.len() > 1 => {
                let leaver = names.remove(rng.random_range(0..names.len()));
                if cut.as_ref().is_some_and(|(n, _)| *n == leaver) {
                    fleet.set_cut(&leaver, false);
                    cut = None;
                }
                fleet.stop(&leaver).await;
            }
            14..22 if names.len() < 5 => start(&mut fleet, &mut names),
            22..28 if cut.is_none() && names.len() > 1 => {
                let name = names[rng.random_range(0..names.len())].clone();
                fleet.set_cut(&name, true);
                cut = Some((name, step + rng.random_range(1..8)));
            }
            28..36 => {
                sim.rotate_all();
            }
            36..42 => {
                let open = sim.open_shards();
                let _ = sim.split(&open[rng.random_range(0..open.len())]);
            }
            _ => {}
        }
    }
    if let Some((name, _)) = cut.take() {
        fleet.set_cut(&name, false);
    }
    sim.clear_faults();
    store.clear_faults();
    fleet.drain(Duration::from_secs(600)).await;
    fleet.stop_all().await;
    let report = fleet.check().await;
    if !report.is_ok() || report.stats.lost != 0 {
        panic!("seed {seed} failed (replay: KCL_SOAK_FIRST_SEED={seed} KCL_SOAK_SEEDS=1)\n{report:?}");
    }
}

fn run(part: u64, parts: u64, lanes: bool) {
    for seed in seeds(part, parts) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(soak(seed, lanes));
    }
}

#[test]
fn soak_part_0() {
    run(0, 4, false);
}
#[test]
fn soak_part_1() {
    run(1, 4, false);
}
#[test]
fn soak_part_2() {
    run(2, 4, false);
}
#[test]
fn soak_part_3() {
    run(3, 4, false);
}
#[test]
fn soak_lanes_and_filter_part_0() {
    run(0, 4, true);
}
#[test]
fn soak_lanes_and_filter_part_1() {
    run(1, 4, true);
}
#[test]
fn soak_lanes_and_filter_part_2() {
    run(2, 4, true);
}
#[test]
fn soak_lanes_and_filter_part_3() {
    run(3, 4, true);
}
