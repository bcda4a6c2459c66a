//! An in-memory stream simulator faithful to DynamoDB Streams.
//!
//! [`StreamSimulator`] implements [`StreamSource`] with DynamoDB's rules: 21-digit sequence
//! numbers from one stream-wide counter, shards that close and open children (rotation about
//! every 4 hours, splits), children that may be listed late, 24 h retention with trimming,
//! iterators that expire after 15 minutes, at most two concurrent readers per shard, `limit`
//! of 1..=1000. Faults can be injected. It is deterministic under a seed and runs on
//! `tokio::time`, so tests can use paused time; there are no background tasks — periodic
//! rotations and splits are applied lazily on the next call.
//!
//! ```
//! use kcl_core::testing::sim::{ChangeKind, StreamSimulator};
//! use kcl_core::{StartPosition, StreamSource};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kcl_core::SourceError> {
//! let sim = StreamSimulator::builder().seed(7).build();
//! sim.write("user#1", ChangeKind::Insert);
//! let shard = sim.list_shards().await?.remove(0).id;
//! let iterator = sim.shard_iterator(&shard, &StartPosition::TrimHorizon).await?;
//! let batch = sim.read(&iterator, 100).await?;
//! assert_eq!(batch.records[0].key, "user#1");
//! # Ok(())
//! # }
//! ```

mod builder;
mod faults;
mod fixture;
mod iterator;
pub mod record;
mod shards;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_time;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub use builder::{
    DEFAULT_INITIAL_SHARDS, DEFAULT_ITERATOR_TTL, DEFAULT_MAX_READERS_PER_SHARD, DEFAULT_RETENTION, DEFAULT_SEED,
    MIN_AUTO_PERIOD, SimulatorBuilder,
};
pub use fixture::SimFixture;
pub use record::{ChangeKind, SimRecord};

use builder::Settings;
use faults::FaultTarget;
use shards::State;

use crate::checkpoint::SequenceNumber;
use crate::shard::ShardId;
use crate::source::{
    RecordBatch, ShardDescription, ShardIterator, SourceError, SourceErrorKind, StartPosition, StreamSource,
};

/// The largest `limit` a read accepts (DynamoDB's GetRecords maximum).
pub const MAX_READ_LIMIT: usize = 1000;

/// Why a control call on the simulator ([`StreamSimulator::rotate`], [`StreamSimulator::split`])
/// failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// No shard has this id.
    #[error("simulator: no shard {0}")]
    UnknownShard(ShardId),
    /// The shard is already closed; closed shards never change again.
    #[error("simulator: shard {0} is already closed")]
    ShardClosed(ShardId),
    /// The shard's hash range is a single value and cannot be halved.
    #[error("simulator: shard {0} owns a single hash value and cannot be split")]
    CannotSplit(ShardId),
}

/// Counters of what the simulator was asked and answered, for assertions and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Calls of `list_shards`, failed ones included.
    pub list_shards_calls: u64,
    /// Calls of `shard_iterator`, failed ones included.
    pub shard_iterator_calls: u64,
    /// Calls of `read`, failed ones included.
    pub read_calls: u64,
    /// Records returned by successful reads.
    pub records_returned: u64,
    /// Records written with [`StreamSimulator::write`].
    pub records_written: u64,
    /// Calls that failed with [`SourceErrorKind::Throttled`] (injected ones included).
    pub throttles: u64,
    /// Source calls that failed, of any kind (injected ones included).
    pub errors: u64,
}

struct Inner {
    /// The simulator's clock starts here; all internal times are nanoseconds since.
    epoch: Instant,
    read_latency: Duration,
    state: Mutex<State>,
}

/// An in-memory DynamoDB stream. Cheap to clone: clones share the same stream.
///
/// Every call first applies what simulated time brought since the last one: due automatic
/// rotations and splits, then retention trimming.
#[derive(Clone)]
pub struct StreamSimulator {
    inner: Arc<Inner>,
}

impl fmt::Debug for StreamSimulator {
    /// A summary: the stream may hold millions of records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StreamSimulator");
        d.field("elapsed", &self.elapsed());
        match self.inner.state.try_lock() {
            Ok(state) => d.field("shards", &state.shard_count()).field("stats", &state.stats),
            Err(_) => d.field("state", &"<locked>"),
        };
        d.finish_non_exhaustive()
    }
}

impl Default for StreamSimulator {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl StreamSimulator {
    /// A builder with DynamoDB's defaults.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::new()
    }

    /// A simulator with `n` initial shards and the other defaults.
    pub fn with_shards(n: usize) -> Self {
        Self::builder().initial_shards(n).build()
    }

    fn from_settings(settings: Settings) -> Self {
        let read_latency = settings.read_latency;
        Self { inner: Arc::new(Inner { epoch: Instant::now(), read_latency, state: Mutex::new(State::new(settings)) }) }
    }

    /// Locks the state. A panic while it was held (a failed assertion in a test) leaves the
    /// state consistent between calls, so a poisoned lock is taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the state after applying what time brought; returns the current time too.
    fn lock_now(&self) -> (MutexGuard<'_, State>, u64) {
        let now = shards::nanos(Instant::now().saturating_duration_since(self.inner.epoch));
        let mut state = self.lock();
        let now = state.advance(now);
        (state, now)
    }

    /// Simulated time elapsed since the simulator was built.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.inner.epoch)
    }

    /// The simulated wall clock now (a fixed base, 14 Nov 2023, plus [`Self::elapsed`]); the
    /// `created_at` of a record written now.
    pub fn wall_clock(&self) -> std::time::SystemTime {
        shards::wall_clock(shards::nanos(self.elapsed()))
    }

    /// Appends a change for `key` to the open shard whose hash range holds the key's hash.
    /// The record's version is the key's write count (1 for its first change).
    pub fn write(&self, key: &str, kind: ChangeKind) -> SimRecord {
        let (mut state, now) = self.lock_now();
        state.write(key, kind, now)
    }

    /// How many changes were written for `key` (its last version), 0 if none.
    pub fn version(&self, key: &str) -> u64 {
        self.lock().version(key)
    }

    /// Closes an open shard and opens one child with the same hash range, as DynamoDB does
    /// about every 4 hours. Returns the child's id.
    pub fn rotate(&self, shard: &ShardId) -> Result<ShardId, SimError> {
        let (mut state, now) = self.lock_now();
        state.rotate(shard, now)
    }

    /// Rotates every open shard; returns the children's ids.
    pub fn rotate_all(&self) -> Vec<ShardId> {
        let (mut state, now) = self.lock_now();
        state.rotate_all(now)
    }

    /// Closes an open shard and opens two children, the lower and the upper half of its hash
    /// range (a partition split). Returns `(lower, upper)`.
    pub fn split(&self, shard: &ShardId) -> Result<(ShardId, ShardId), SimError> {
        let (mut state, now) = self.lock_now();
        state.split(shard, now)
    }

    /// The open shards, oldest first.
    pub fn open_shards(&self) -> Vec<ShardId> {
        self.lock_now().0.open_shards()
    }

    /// Every record ever written, in write order, trimmed ones included.
    pub fn written(&self) -> Vec<SimRecord> {
        self.lock_now().0.written()
    }

    /// The records removed by retention, in write order.
    pub fn trimmed(&self) -> Vec<SimRecord> {
        self.lock_now().0.trimmed()
    }

    /// The retained records of one shard in order, or `None` for an unknown shard.
    pub fn shard_records(&self, shard: &ShardId) -> Option<Vec<SimRecord>> {
        self.lock_now().0.shard_records(shard)
    }

    /// Makes the next `count` calls of `shard_iterator` or `read` fail with `kind`. Queued
    /// faults are used in the order they were injected, before any random fault.
    pub fn inject_read_errors(&self, kind: SourceErrorKind, count: u32) {
        self.lock().faults.inject(FaultTarget::Read, kind, count);
    }

    /// Makes the next `count` calls of `list_shards` fail with `kind`.
    pub fn inject_list_errors(&self, kind: SourceErrorKind, count: u32) {
        self.lock().faults.inject(FaultTarget::List, kind, count);
    }

    /// Makes each `shard_iterator` or `read` call fail with `kind` with this probability (drawn
    /// from a generator seeded by the simulator's seed); 0 turns it off. Kinds are rolled in
    /// the order they were first set.
    pub fn set_error_rate(&self, kind: SourceErrorKind, probability: f64) {
        self.lock().faults.set_rate(kind, probability);
    }

    /// Queued faults not used yet (reads and listings together).
    pub fn pending_faults(&self) -> u64 {
        let state = self.lock();
        state.faults.pending(FaultTarget::Read) + state.faults.pending(FaultTarget::List)
    }

    /// Makes reads of `shard` stuck (or unsticks them): they return no records and the same
    /// iterator, as an iterator that stopped advancing would, while the shard may well have
    /// records after it. Iterators still expire.
    pub fn stick_reads(&self, shard: &ShardId, stuck: bool) -> Result<(), SimError> {
        let mut state = self.lock();
        let index = state.index_of(shard).ok_or_else(|| SimError::UnknownShard(shard.clone()))?;
        if stuck {
            state.stuck.insert(index);
        } else {
            state.stuck.remove(&index);
        }
        Ok(())
    }

    /// Makes the record at `seq` undecodable (or decodable again, with `None`): every read
    /// whose answer holds it fails with [`SourceErrorKind::Undecodable`], as a client that
    /// cannot parse a response fails the whole answer. With `Some(true)` the error names the
    /// record ([`SourceError::undecodable_record`]) when it is the answer's first record; with
    /// `Some(false)` it never does (a source that cannot tell which record it is).
    pub fn make_undecodable(&self, seq: &SequenceNumber, named: Option<bool>) {
        let mut state = self.lock();
        match named {
            Some(named) => state.undecodable.insert(seq.clone(), named),
            None => state.undecodable.remove(seq),
        };
    }

    /// Drops every queued fault and error rate.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// Counts a failed call and passes the error on.
    fn failed(state: &mut State, error: SourceError) -> SourceError {
        state.stats.errors += 1;
        if error.kind() == SourceErrorKind::Throttled {
            state.stats.throttles += 1;
        }
        error
    }
}

/// Holds one in-flight read of a shard; dropping it (also when the read is cancelled) ends it.
#[derive(Debug)]
struct InFlight {
    sim: StreamSimulator,
    shard: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.sim.lock().release(self.shard);
    }
}

impl StreamSource for StreamSimulator {
    type Record = SimRecord;

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        let (mut state, now) = self.lock_now();
        state.stats.list_shards_calls += 1;
        if let Some(fault) = state.faults.next(FaultTarget::List, "list_shards") {
            return Err(Self::failed(&mut state, fault));
        }
        Ok(state.list(now))
    }

    async fn shard_iterator(&self, shard: &ShardId, position: &StartPosition) -> Result<ShardIterator, SourceError> {
        let (mut state, now) = self.lock_now();
        state.stats.shard_iterator_calls += 1;
        let result = match state.faults.next(FaultTarget::Read, "shard_iterator") {
            Some(fault) => Err(fault),
            None => state.iterator(shard, position, now),
        };
        result.map_err(|e| Self::failed(&mut state, e))
    }

    async fn read(&self, iterator: &ShardIterator, limit: usize) -> Result<RecordBatch<SimRecord>, SourceError> {
        let (batch, guard) = {
            let (mut state, now) = self.lock_now();
            state.stats.read_calls += 1;
            let result = match state.faults.next(FaultTarget::Read, "read") {
                Some(fault) => Err(fault),
                None => state.read(iterator, limit, now),
            };
            let (mut batch, shard) = result.map_err(|e| Self::failed(&mut state, e))?;
            if let Some(error) = state.undecodable_in(&batch.records) {
                state.release(shard);
                return Err(Self::failed(&mut state, error));
            }
            if state.stuck.contains(&shard) {
                batch = RecordBatch { records: Vec::new(), next_iterator: Some(iterator.clone()) };
            }
            state.stats.records_returned += batch.records.len() as u64;
            (batch, InFlight { sim: self.clone(), shard })
        };
        if !self.inner.read_latency.is_zero() {
            tokio::time::sleep(self.inner.read_latency).await;
        }
        drop(guard);
        Ok(batch)
    }
}
