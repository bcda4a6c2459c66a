//! The `StreamSource` contract run against the stream simulator, in several shapes: one shard
//! (as DynamoDB Local), several shards, and late children with slow reads under paused time.

use std::time::Duration;

use kcl_core::testing::contract::source;
use kcl_core::testing::sim::{SimFixture, StreamSimulator};

fn one_shard() -> SimFixture {
    SimFixture::new()
}

macro_rules! check_on_one_shard {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                source::$check(&one_shard()).await;
            }
        )*
    };
}

check_on_one_shard!(
    check_lists_shards_with_ranges,
    check_trim_horizon_reads_all_in_order,
    check_latest_skips_existing,
    check_at_and_after_sequence_number,
    check_limit_is_respected_and_over_1000_rejected,
    check_unknown_shard_is_not_found,
    check_garbage_iterator_is_rejected,
    check_rereading_an_iterator_returns_the_same_records,
    check_rollover_closes_shard_and_links_child,
    check_sequence_numbers_are_decimal_of_at_least_21_digits,
);

#[tokio::test]
async fn run_all_on_one_shard() {
    source::run_all(|| async { one_shard() }).await;
}

#[tokio::test]
async fn run_all_on_four_shards_with_other_seeds() {
    for seed in [1, 2, 3] {
        source::run_all(|| async move {
            SimFixture::from_simulator(StreamSimulator::builder().seed(seed).initial_shards(4).build())
        })
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn run_all_with_late_children_and_slow_reads() {
    source::run_all(|| async {
        SimFixture::from_simulator(
            StreamSimulator::builder()
                .seed(9)
                .initial_shards(3)
                .child_listing_delay(Duration::from_secs(2))
                .read_latency(Duration::from_millis(30))
                .build(),
        )
    })
    .await;
}

/// The contract must catch a source that breaks it: a simulator behind a deliberate flaw.
mod flawed {
    use kcl_core::testing::contract::source::{self, SourceFixture};
    use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
    use kcl_core::{RecordBatch, ShardDescription, ShardId, ShardIterator, SourceError, StartPosition, StreamSource};

    #[derive(Clone, Copy, Debug)]
    enum Flaw {
        IgnoresLimit,
        ClosedShardsNeverEnd,
        LatestIsTrimHorizon,
        RejectsNothing,
    }

    #[derive(Debug)]
    struct Flawed {
        sim: StreamSimulator,
        flaw: Flaw,
    }

    impl StreamSource for Flawed {
        type Record = SimRecord;

        async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
            self.sim.list_shards().await
        }

        async fn shard_iterator(
            &self,
            shard: &ShardId,
            position: &StartPosition,
        ) -> Result<ShardIterator, SourceError> {
            match (self.flaw, position) {
                (Flaw::LatestIsTrimHorizon, StartPosition::Latest) => {
                    self.sim.shard_iterator(shard, &StartPosition::TrimHorizon).await
                }
                _ => self.sim.shard_iterator(shard, position).await,
            }
        }

        async fn read(&self, iterator: &ShardIterator, limit: usize) -> Result<RecordBatch<SimRecord>, SourceError> {
            match self.flaw {
                Flaw::IgnoresLimit => self.sim.read(iterator, 1000).await,
                Flaw::RejectsNothing => self.sim.read(iterator, limit.clamp(1, 1000)).await,
                Flaw::ClosedShardsNeverEnd => {
                    let mut batch = self.sim.read(iterator, limit).await?;
                    batch.next_iterator = batch.next_iterator.or_else(|| Some(iterator.clone()));
                    Ok(batch)
                }
                Flaw::LatestIsTrimHorizon => self.sim.read(iterator, limit).await,
            }
        }
    }

    impl SourceFixture for Flawed {
        type Source = Self;

        fn source(&self) -> &Self {
            self
        }

        async fn put(&self, key: &str) {
            self.sim.write(key, ChangeKind::Insert);
        }

        async fn rollover(&self) {
            self.sim.rotate_all();
        }
    }

    fn flawed(flaw: Flaw) -> Flawed {
        Flawed { sim: StreamSimulator::default(), flaw }
    }

    #[tokio::test]
    #[should_panic(expected = "check limit_is_respected_and_over_1000_rejected: limit 2 returned")]
    async fn catches_an_ignored_limit() {
        source::check_limit_is_respected_and_over_1000_rejected(&flawed(Flaw::IgnoresLimit)).await;
    }

    #[tokio::test]
    #[should_panic(expected = "check limit_is_respected_and_over_1000_rejected: read with limit 1001 succeeded")]
    async fn catches_an_accepted_limit_over_1000() {
        source::check_limit_is_respected_and_over_1000_rejected(&flawed(Flaw::RejectsNothing)).await;
    }

    #[tokio::test]
    #[should_panic(expected = "check rollover_closes_shard_and_links_child")]
    async fn catches_a_closed_shard_that_never_ends() {
        source::check_rollover_closes_shard_and_links_child(&flawed(Flaw::ClosedShardsNeverEnd)).await;
    }

    #[tokio::test]
    #[should_panic(expected = "check latest_skips_existing: LATEST of")]
    async fn catches_latest_reading_old_records() {
        source::check_latest_skips_existing(&flawed(Flaw::LatestIsTrimHorizon)).await;
    }
}
