//! What a worker's shutdown reports and what it does with a processor's buffered records:
//! a dropped worker is not reported as stopped gracefully, shutdown is bounded even when a
//! shard listing hangs, and a processor that buffers across batches and flushes in
//! `shutdown_requested` loses nothing on a graceful stop (the worker checkpoints past every
//! `Ok` batch right after that call).

mod common;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{
    Batch, Checkpointer, Config, Metrics, ProcessorError, RecordBatch, RecordProcessor, SequenceNumber,
    ShardDescription, ShardId, ShardIterator, ShutdownOutcome, SourceError, StartPosition, StreamRecord, StreamSource,
    Worker,
};
use tokio::time::Instant;

fn config(name: &str) -> Config {
    Config::builder("lifecycle")
        .worker_id(name)
        .lease_duration(Duration::from_secs(6))
        .shard_sync_interval(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Clone, Default)]
struct Durable(Arc<Mutex<Vec<SequenceNumber>>>);

/// Buffers records and makes them durable (and checkpoints) only every 50 records, and, when
/// `flush_on_shutdown`, in `shutdown_requested`.
struct Buffering {
    buffer: Vec<SequenceNumber>,
    durable: Durable,
    flush_on_shutdown: bool,
}

impl Buffering {
    async fn flush(&mut self, cp: &impl Checkpointer) -> Result<(), ProcessorError> {
        let Some(last) = self.buffer.last().cloned() else { return Ok(()) };
        self.durable.0.lock().unwrap_or_else(PoisonError::into_inner).append(&mut self.buffer);
        cp.checkpoint_at(&last).await.map_err(|e| ProcessorError::new(e.to_string()))
    }
}

impl RecordProcessor<SimRecord> for Buffering {
    async fn process_records(
        &mut self,
        batch: &Batch<SimRecord>,
        cp: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.buffer.extend(batch.records.iter().map(|r| r.sequence_number().clone()));
        if self.buffer.len() >= 50 { self.flush(cp).await } else { Ok(()) }
    }

    async fn shutdown_requested(&mut self, cp: &impl Checkpointer) {
        if self.flush_on_shutdown {
            let _ = self.flush(cp).await;
        }
    }
}

/// Writes 100 records to one shard and 20 more a little later, runs a buffering worker `a` over them, stops it
/// gracefully, then runs `b` on what is left; returns the records written and made durable.
async fn buffered_run(flush_on_shutdown: bool) -> (Vec<SequenceNumber>, Vec<SequenceNumber>) {
    common::init_tracing();
    let sim = StreamSimulator::builder().seed(8).initial_shards(1).build();
    let store = MemoryLeaseStore::new();
    let durable = Durable::default();
    for i in 0..100 {
        sim.write(&format!("k{i}"), ChangeKind::Insert);
    }
    for name in ["a", "b"] {
        let d = durable.clone();
        let factory = move |_: &ShardId| Buffering { buffer: Vec::new(), durable: d.clone(), flush_on_shutdown };
        let worker = Worker::with_metrics(config(name), sim.clone(), store.clone(), factory, Metrics::unregistered());
        let handle = worker.handle();
        let task = tokio::spawn(worker.run());
        tokio::time::sleep(Duration::from_secs(5)).await;
        if name == "a" {
            // Delivered in a batch of their own: buffered, not yet durable, at the stop.
            for i in 100..120 {
                sim.write(&format!("k{i}"), ChangeKind::Insert);
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(handle.shutdown(Duration::from_secs(10)).await, ShutdownOutcome::Graceful);
        task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut kept = durable.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
    kept.sort();
    kept.dedup();
    (sim.written().into_iter().map(|r| r.sequence_number).collect(), kept)
}

#[tokio::test(start_paused = true)]
async fn a_buffering_processor_that_flushes_in_shutdown_requested_loses_nothing() {
    let (written, kept) = buffered_run(true).await;
    assert_eq!(kept, written);
}

#[tokio::test(start_paused = true)]
async fn a_buffering_processor_that_does_not_flush_loses_its_buffer_as_documented() {
    // The contract's other side: the worker checkpoints past `Ok` batches on a graceful stop,
    // so what the processor only buffered (the last 20 records) was never made durable.
    let (written, kept) = buffered_run(false).await;
    assert_eq!(kept.len(), 100, "{} of {}", kept.len(), written.len());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_worker_is_not_reported_as_stopped_gracefully() {
    let sim = StreamSimulator::builder().seed(1).initial_shards(1).build();
    let worker = Worker::with_metrics(
        config("w"),
        sim.clone(),
        MemoryLeaseStore::new(),
        |_: &ShardId| Noop,
        Metrics::unregistered(),
    );
    let handle = worker.handle();
    drop(worker);
    assert!(handle.is_finished());
    assert_eq!(handle.shutdown(Duration::from_secs(5)).await, ShutdownOutcome::NotRunning);

    // Its `run` future dropped while running (the task aborted) is no graceful stop either.
    let worker =
        Worker::with_metrics(config("v"), sim, MemoryLeaseStore::new(), |_: &ShardId| Noop, Metrics::unregistered());
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_secs(5)).await;
    task.abort();
    let _ = task.await;
    assert_eq!(handle.shutdown(Duration::from_secs(5)).await, ShutdownOutcome::NotRunning);
}

struct Noop;

impl RecordProcessor<SimRecord> for Noop {
    async fn process_records(&mut self, _: &Batch<SimRecord>, _: &impl Checkpointer) -> Result<(), ProcessorError> {
        Ok(())
    }
}

/// The simulator, with every shard listing after the first hanging forever.
struct HangingListings {
    sim: StreamSimulator,
    listed: std::sync::atomic::AtomicBool,
}

impl StreamSource for HangingListings {
    type Record = SimRecord;
    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        if self.listed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.sim.list_shards().await
    }
    async fn shard_iterator(&self, shard: &ShardId, position: &StartPosition) -> Result<ShardIterator, SourceError> {
        self.sim.shard_iterator(shard, position).await
    }
    async fn read(&self, iterator: &ShardIterator, limit: usize) -> Result<RecordBatch<SimRecord>, SourceError> {
        self.sim.read(iterator, limit).await
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_not_held_by_a_hanging_shard_listing() {
    let sim = StreamSimulator::builder().seed(2).initial_shards(2).build();
    let source = HangingListings { sim, listed: Default::default() };
    let worker =
        Worker::with_metrics(config("w"), source, MemoryLeaseStore::new(), |_: &ShardId| Noop, Metrics::unregistered());
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());
    // The periodic sync (every 5 s) is now inside a listing that never answers (the worker's
    // call timeout for listings is 50 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let started = Instant::now();
    assert_eq!(handle.shutdown(Duration::from_secs(20)).await, ShutdownOutcome::Graceful);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
}
