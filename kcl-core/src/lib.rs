//! # kcl-core
//!
//! The source-agnostic heart of a worker library for consuming change streams such as Amazon
//! DynamoDB Streams with a fleet of workers: leases, shard lineage, checkpoints and the
//! processor lifecycle. The AWS side lives in `kcl-adapter`; this crate names no AWS type.
//!
//! You write a [`RecordProcessor`]; a [`Worker`] takes leases from a [`LeaseStore`], reads the
//! shards of a [`StreamSource`] and hands each shard's records to a processor of its own.
//! Here the in-memory stream simulator and lease store of `kcl_core::testing` (feature
//! `testing`) stand in for DynamoDB:
//!
//! ```
//! use std::time::Duration;
//!
//! use kcl_core::testing::{memory_store::MemoryLeaseStore, sim::{ChangeKind, SimRecord, StreamSimulator}};
//! use kcl_core::{Batch, Checkpointer, Config, ProcessorError, RecordProcessor, ShardId, ShutdownOutcome, Worker};
//! use tokio::sync::mpsc;
//!
//! /// Forwards the key of every record. Returning `Ok` lets the worker checkpoint the batch.
//! struct Forward(mpsc::Sender<String>);
//!
//! impl RecordProcessor<SimRecord> for Forward {
//!     async fn process_records(
//!         &mut self,
//!         batch: &Batch<SimRecord>,
//!         _: &impl Checkpointer,
//!     ) -> Result<(), ProcessorError> {
//!         for record in &batch.records {
//!             self.0.send(record.key.clone()).await.map_err(|e| ProcessorError::new(e.to_string()))?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stream = StreamSimulator::with_shards(1);
//! for key in ["a", "b", "c"] {
//!     stream.write(key, ChangeKind::Insert);
//! }
//! let (tx, mut rx) = mpsc::channel(16);
//! let config = Config::builder("orders-replicator").build()?;
//! let registry = kcl_core::prometheus::Registry::new();
//! let factory = move |_: &ShardId| Forward(tx.clone());
//! let worker = Worker::new(config, stream, MemoryLeaseStore::new(), factory, &registry)?;
//! let handle = worker.handle();
//! let running = tokio::spawn(worker.run());
//!
//! let mut delivered = Vec::new();
//! while delivered.len() < 3 {
//!     let key = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await?;
//!     delivered.push(key.ok_or("the worker stopped")?);
//! }
//! assert_eq!(delivered, ["a", "b", "c"]); // one shard: in the order written
//! assert_eq!(handle.shutdown(Duration::from_secs(10)).await, ShutdownOutcome::Graceful);
//! running.await??;
//! # Ok(())
//! # }
//! ```
//!
//! ## Guarantees
//! - **At-least-once**: every record retained in the stream reaches
//!   [`RecordProcessor::process_records`] at least once, across crashes, lease moves and shard
//!   splits. Processing resumes right after the last checkpoint.
//! - **Order**: records of a shard are delivered in sequence-number order, and a child shard
//!   starts only after all its parents were processed to their end.
//! - **One owner**: a shard is delivered by at most one live worker; every lease write is
//!   conditional on owner and lease counter, and a worker that cannot renew stops delivering
//!   before anyone else may take the lease.
//! - **Nothing lost silently**: trimmed data is counted and logged.

mod call_timeout;
pub mod checkpoint;
pub mod config;
mod consumer;
pub mod dead_letter;
pub mod error;
pub mod filter;
pub mod lease;
pub mod metrics;
pub mod multi_stream;
pub mod processor;
pub mod shard;
pub mod source;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod window;
pub mod worker;

/// The `prometheus` crate this one registers its metrics with (`Worker::new` takes its
/// [`Registry`](prometheus::Registry)): use it from here to need no version of your own.
pub use prometheus;

pub use checkpoint::{Checkpoint, CheckpointError, Checkpointer, SequenceNumber};
pub use config::{
    CheckpointPolicy, Config, ConfigBuilder, ConfigError, InitialPosition, LeaseRenewal, OnRetriesExhausted, OnStall,
};
pub use dead_letter::{DeadLetter, DeadLetterError, DeadLetterErrorKind, DeadLetterSink, NoDeadLetter};
pub use error::WorkerError;
pub use filter::{FilterCriteria, FilterError};
pub use lease::{
    HandoffRequest, Lease, LeaseKey, LeaseStore, LeaseStoreError, LeaseStoreErrorKind, LeaseUpdate, WorkerId,
};
pub use metrics::Metrics;
pub use multi_stream::{MultiStream, MultiStreamError, MultiStreamSink};
pub use processor::{Batch, InitializeInput, ProcessorError, RecordProcessor, RecordProcessorFactory};
pub use shard::ShardId;
pub use source::{
    RecordBatch, ShardDescription, ShardIterator, SourceError, SourceErrorKind, StartPosition, StreamRecord,
    StreamSource, UndecodableRecord,
};
pub use status::{ShardState, ShardStatus, WorkerStatus};
pub use window::{WindowEnd, WindowEndReason, WindowState};
pub use worker::{ShutdownOutcome, Worker, WorkerHandle};
