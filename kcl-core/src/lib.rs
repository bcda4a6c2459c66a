//! # kcl-core
//!
//! The source-agnostic heart of a worker library for consuming change streams such as Amazon
//! DynamoDB Streams with a fleet of workers: leases, shard lineage, checkpoints and the
//! processor lifecycle. The AWS side lives in `kcl-adapter`; this crate names no AWS type.
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
pub use multi_stream::{MultiStream, MultiStreamError};
pub use processor::{Batch, InitializeInput, ProcessorError, RecordProcessor, RecordProcessorFactory};
pub use shard::ShardId;
pub use source::{
    RecordBatch, ShardDescription, ShardIterator, SourceError, SourceErrorKind, StartPosition, StreamRecord,
    StreamSource, UndecodableRecord,
};
pub use status::{ShardState, ShardStatus, WorkerStatus};
pub use window::{WindowEnd, WindowEndReason, WindowState};
pub use worker::{ShutdownOutcome, Worker, WorkerHandle};
