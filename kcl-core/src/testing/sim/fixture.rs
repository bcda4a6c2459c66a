//! [`SimFixture`]: the stream simulator as a [`SourceFixture`] for the `StreamSource` contract.

use super::{ChangeKind, StreamSimulator};
use crate::testing::contract::source::SourceFixture;

/// Runs the [`StreamSource`](crate::StreamSource) contract on a [`StreamSimulator`]: `put`
/// writes an insert (a modify for a key seen before), `rollover` rotates every open shard.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use kcl_core::testing::contract::source;
/// use kcl_core::testing::sim::{SimFixture, StreamSimulator};
///
/// source::run_all(|| async { SimFixture::from_simulator(StreamSimulator::with_shards(4)) }).await;
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct SimFixture {
    sim: StreamSimulator,
}

impl SimFixture {
    /// A fixture on a simulator with the default settings (one initial shard).
    pub fn new() -> Self {
        Self::default()
    }

    /// A fixture on this simulator.
    pub fn from_simulator(sim: StreamSimulator) -> Self {
        Self { sim }
    }

    /// The simulator, for writes and faults beyond what the fixture does.
    pub fn simulator(&self) -> &StreamSimulator {
        &self.sim
    }
}

impl SourceFixture for SimFixture {
    type Source = StreamSimulator;

    fn source(&self) -> &StreamSimulator {
        &self.sim
    }

    async fn put(&self, key: &str) {
        let kind = if self.sim.version(key) == 0 { ChangeKind::Insert } else { ChangeKind::Modify };
        self.sim.write(key, kind);
    }

    async fn rollover(&self) {
        self.sim.rotate_all();
    }
}
