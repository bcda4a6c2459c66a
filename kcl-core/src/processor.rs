//! The [`RecordProcessor`] seam: the user's code, one instance per shard.
//!
//! Lifecycle, per shard and lease: [`initialize`](RecordProcessor::initialize) →
//! [`process_records`](RecordProcessor::process_records) repeatedly → exactly one of
//! [`shard_ended`](RecordProcessor::shard_ended) (the shard is fully read; the worker writes the
//! `SHARD_END` checkpoint right after it returns), [`lease_lost`](RecordProcessor::lease_lost)
//! (another worker owns the shard now; checkpointing is impossible) or
//! [`shutdown_requested`](RecordProcessor::shutdown_requested) (graceful stop: last chance to
//! checkpoint). Each instance is driven by one task and gets `&mut self`: no locks needed.
//!
//! # Lanes
//!
//! With [`parallelism`](crate::ConfigBuilder::parallelism) above 1, a shard's records are split
//! by item key ([`StreamRecord::partition_key`]) into that many *lanes*, and each lane has its
//! own processor instance, made by [`RecordProcessorFactory::create_lane`] with the shard id
//! and the lane number. The instances of one shard run concurrently (each still gets
//! `&mut self`); all changes of one item go to the same lane, in order. Each instance gets
//! `initialize` once, then only its lane's batches ([`Batch::lane`]), and then one of the
//! three endings: `shard_ended` once every lane has finished the shard (the worker then
//! writes `SHARD_END`), `lease_lost`, or `shutdown_requested` (every lane is asked; the worker
//! then checkpoints the highest record below which every lane has finished). A checkpoint
//! asked for through a lane's checkpointer says that lane has handled its records up to that
//! point; the shard's checkpoint moves only as far as every lane has got, so it never passes
//! a record of a slower lane.
//!
//! # What the worker does around the calls
//!
//! - **Cancellation**: a `process_records` call that runs longer than the processing timeout
//!   ([`ConfigBuilder::processing_timeout`](crate::ConfigBuilder::processing_timeout), 5 min by
//!   default) is cancelled (its future dropped at an `.await`) and counts as a failed batch. Code
//!   that must not stop half-way should be idempotent, since the batch is delivered again.
//! - **Panics**: a panic in any callback is caught and handled as a failure of that call: counted
//!   in `kcl_processor_panics_total{callback}`, logged at error with the shard, and then treated
//!   like an `Err` (`process_records`: retried, bisected, dead-lettered or the shard stopped, by
//!   the failure policy; `initialize`: retried; `shard_ended`: retried, and given up after the
//!   policy's attempts with `OnRetriesExhausted::DeadLetter`; `shutdown_requested`: the worker
//!   then does not checkpoint past the processor's own checkpoints). The same instance is called
//!   again afterwards, with whatever state the panic left.
//! - **Checkpoints the worker writes itself**: after `shard_ended` returns (`SHARD_END`); on a
//!   graceful stop, right after `shutdown_requested` returns, at the last record of the last
//!   batch that returned `Ok`; and after records were dead-lettered or skipped, past them (which
//!   covers the `Ok` batches before them too). So a processor that buffers records across
//!   batches and makes them durable later must make its buffer durable in
//!   `shutdown_requested`, and should not return `Ok` for records it could not keep if a dead
//!   letter follows: everything before a checkpoint the worker writes counts as handled.

use std::future::Future;
use std::time::Duration;

use crate::checkpoint::{Checkpoint, Checkpointer, SequenceNumber};
use crate::shard::ShardId;
use crate::source::StreamRecord;
use crate::window::{WindowEnd, WindowState};

/// Handed to [`RecordProcessor::initialize`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InitializeInput {
    /// The shard this processor instance handles.
    pub shard_id: ShardId,
    /// The checkpoint processing resumes from.
    pub checkpoint: Checkpoint,
    /// The lane this instance handles (0 without lanes; see the module docs).
    pub lane: usize,
}

/// One batch of records for [`RecordProcessor::process_records`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Batch<R> {
    /// The shard the records come from.
    pub shard_id: ShardId,
    /// The records, in sequence-number order; never empty.
    pub records: Vec<R>,
    /// How far behind the stream head the batch is: the age of its last record, when the
    /// source reports creation times.
    pub lag: Option<Duration>,
    /// The lane the batch belongs to (0 without lanes; see the module docs).
    pub lane: usize,
}

impl<R: StreamRecord> Batch<R> {
    /// The sequence number of the last record.
    pub fn last_sequence_number(&self) -> Option<&SequenceNumber> {
        self.records.last().map(StreamRecord::sequence_number)
    }
}

/// A processor's failure. The consumer retries the batch (see the worker's configuration);
/// it never skips records silently.
#[derive(Debug, thiserror::Error)]
#[error("record processor failed: {message}")]
pub struct ProcessorError {
    message: String,
    first_failed: Option<SequenceNumber>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProcessorError {
    /// A failure of the whole batch.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), first_failed: None, source: None }
    }

    /// A partial batch failure: every record before `first_failed` was handled; the consumer
    /// checkpoints before it and retries from it.
    pub fn partial(first_failed: SequenceNumber, message: impl Into<String>) -> Self {
        Self { message: message.into(), first_failed: Some(first_failed), source: None }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The first record that failed, for a partial batch failure.
    pub fn first_failed(&self) -> Option<&SequenceNumber> {
        self.first_failed.as_ref()
    }
}

/// The user's record handling for one shard. Only `process_records` is required.
pub trait RecordProcessor<R: StreamRecord>: Send + 'static {
    /// Called once before the first batch.
    fn initialize(&mut self, input: &InitializeInput) -> impl Future<Output = Result<(), ProcessorError>> + Send {
        let _ = input;
        async { Ok(()) }
    }

    /// Handles one batch. Checkpoint with `checkpointer` when the records are durably handled;
    /// records after the last checkpoint are delivered again after a crash or a lease move.
    fn process_records(
        &mut self,
        batch: &Batch<R>,
        checkpointer: &impl Checkpointer,
    ) -> impl Future<Output = Result<(), ProcessorError>> + Send;

    /// The shard is closed and every record was delivered. The worker checkpoints `SHARD_END`
    /// after this returns, so that child shards can start.
    fn shard_ended(&mut self, checkpointer: &impl Checkpointer) -> impl Future<Output = ()> + Send {
        let _ = checkpointer;
        async {}
    }

    /// The lease moved to another worker (or expired); no more records will come and
    /// checkpoints would be rejected.
    fn lease_lost(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The worker is shutting down gracefully: make durable what is buffered and checkpoint
    /// it. After this returns the worker checkpoints the last record of the last batch that
    /// returned `Ok`, buffered or not (see the module docs), and releases the lease.
    fn shutdown_requested(&mut self, checkpointer: &impl Checkpointer) -> impl Future<Output = ()> + Send {
        let _ = checkpointer;
        async {}
    }

    /// With [`tumbling_window`](crate::ConfigBuilder::tumbling_window) set, called instead of
    /// `process_records`: handles one batch, all of whose records belong to `window`, given
    /// the state the previous call of this window returned (empty at its start), and returns
    /// the window's new state. The worker stores the state with the checkpoint after the
    /// batch, so there is no checkpointer here; a failed call is retried with the state it
    /// had. See [`crate::window`].
    ///
    /// Default: `process_records` (whose checkpoint calls then succeed without a write: the
    /// worker checkpoints after the batch anyway), keeping the state as it was.
    fn process_window(
        &mut self,
        batch: &Batch<R>,
        window: &WindowState,
    ) -> impl Future<Output = Result<Vec<u8>, ProcessorError>> + Send {
        async move {
            self.process_records(batch, &WorkerCheckpoints).await?;
            Ok(window.state.clone())
        }
    }

    /// The final call of a tumbling window (Lambda: `isFinalInvokeForWindow`), with the state
    /// its last batch returned, before any record of a later window. An `Err` (or a panic) is
    /// retried with backoff until it succeeds: records of later windows wait, as Lambda's do.
    fn window_ended(&mut self, end: &WindowEnd) -> impl Future<Output = Result<(), ProcessorError>> + Send {
        let _ = end;
        async { Ok(()) }
    }
}

/// The checkpointer handed to `process_records` by the default `process_window`: with
/// tumbling windows the worker checkpoints after each batch, with the window's state, so a
/// call here is accepted and needs no write of its own.
#[derive(Debug)]
struct WorkerCheckpoints;

impl Checkpointer for WorkerCheckpoints {
    async fn checkpoint(&self) -> Result<(), crate::checkpoint::CheckpointError> {
        Ok(())
    }

    async fn checkpoint_at(&self, _: &SequenceNumber) -> Result<(), crate::checkpoint::CheckpointError> {
        Ok(())
    }
}

/// Makes a processor for each shard a worker starts consuming.
pub trait RecordProcessorFactory<R: StreamRecord>: Send + Sync + 'static {
    /// The processor type.
    type Processor: RecordProcessor<R>;
    /// A new processor for `shard`.
    fn create(&self, shard: &ShardId) -> Self::Processor;

    /// A new processor for lane `lane` of `shard`, when the worker runs several lanes per
    /// shard (see the module docs). Default: [`create`](Self::create).
    fn create_lane(&self, shard: &ShardId, lane: usize) -> Self::Processor {
        let _ = lane;
        self.create(shard)
    }
}

impl<R, P, F> RecordProcessorFactory<R> for F
where
    R: StreamRecord,
    P: RecordProcessor<R>,
    F: Fn(&ShardId) -> P + Send + Sync + 'static,
{
    type Processor = P;
    fn create(&self, shard: &ShardId) -> P {
        self(shard)
    }
}
