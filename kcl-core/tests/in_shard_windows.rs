//! Tumbling windows (`tumbling_window`) on the simulator, under paused time: the state is
//! carried across a window's batches and handed back in a final call before any record of
//! the next window; a window whose time is over ends without waiting for a record; a failed
//! call is retried with the state it had; the next owner of a shard (after a graceful stop
//! or a crash) continues the window from the state stored with the checkpoint; a state too
//! large to store ends the window early; a shard end ends it early, before `shard_ended`.
//!
//! The processor's state is the list of the sequence numbers it was given, so each final
//! state says exactly which records the window counted, and how often.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::window::MAX_WINDOW_STATE_BYTES;
use kcl_core::{
    Batch, Checkpointer, Config, LeaseKey, Metrics, ProcessorError, RecordProcessor, ShardId, WindowEnd,
    WindowEndReason, WindowState, Worker, WorkerHandle,
};

const WINDOW: Duration = Duration::from_secs(10);

/// What the processors saw, in call order.
#[derive(Clone, Debug)]
enum Event {
    Batch { start: SystemTime },
    Final { shard: ShardId, end: WindowEnd, seqs: Vec<String> },
    ShardEnded { shard: ShardId },
}

#[derive(Clone, Default)]
struct Log {
    events: Arc<Mutex<Vec<Event>>>,
    /// `process_window` calls to fail before succeeding.
    fail_windows: Arc<AtomicU32>,
    /// `window_ended` calls to fail before succeeding.
    fail_finals: Arc<AtomicU32>,
}

impl Log {
    fn push(&self, e: Event) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn finals(&self) -> Vec<(ShardId, WindowEnd, Vec<String>)> {
        let finals = self.events().into_iter().filter_map(|e| match e {
            Event::Final { shard, end, seqs } => Some((shard, end, seqs)),
            _ => None,
        });
        finals.collect()
    }
}

/// The state: sequence numbers separated by commas; `#` bytes are padding.
fn seqs_of(state: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(state).replace('#', "");
    text.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

struct Windows {
    log: Log,
}

impl RecordProcessor<SimRecord> for Windows {
    async fn process_records(&mut self, _: &Batch<SimRecord>, _: &impl Checkpointer) -> Result<(), ProcessorError> {
        Err(ProcessorError::new("with tumbling windows process_window is called instead"))
    }

    async fn process_window(
        &mut self,
        batch: &Batch<SimRecord>,
        window: &WindowState,
    ) -> Result<Vec<u8>, ProcessorError> {
        for r in &batch.records {
            assert!(r.created_at < window.end, "a record of a later window in this window's batch");
        }
        if take_one(&self.log.fail_windows) {
            return Err(ProcessorError::new("injected failure"));
        }
        self.log.push(Event::Batch { start: window.start });
        let mut state = window.state.clone();
        for r in &batch.records {
            state.extend_from_slice(format!("{},", r.sequence_number).as_bytes());
            if r.key == "big" {
                state.extend(std::iter::repeat_n(b'#', MAX_WINDOW_STATE_BYTES));
            }
        }
        Ok(state)
    }

    async fn window_ended(&mut self, end: &WindowEnd) -> Result<(), ProcessorError> {
        if take_one(&self.log.fail_finals) {
            return Err(ProcessorError::new("injected failure of the final call"));
        }
        let seqs = seqs_of(&end.window.state);
        self.log.push(Event::Final { shard: end.shard_id.clone(), end: end.clone(), seqs });
        Ok(())
    }
}

/// Takes one from a countdown; true while it was above zero.
fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1)).is_ok()
}

/// A processor that logs its shard's end too.
struct Logged {
    inner: Windows,
    shard: ShardId,
}

impl RecordProcessor<SimRecord> for Logged {
    async fn process_records(&mut self, b: &Batch<SimRecord>, c: &impl Checkpointer) -> Result<(), ProcessorError> {
        self.inner.process_records(b, c).await
    }
    async fn process_window(&mut self, b: &Batch<SimRecord>, w: &WindowState) -> Result<Vec<u8>, ProcessorError> {
        self.inner.process_window(b, w).await
    }
    async fn window_ended(&mut self, end: &WindowEnd) -> Result<(), ProcessorError> {
        self.inner.window_ended(end).await
    }
    async fn shard_ended(&mut self, _: &impl Checkpointer) {
        self.inner.log.push(Event::ShardEnded { shard: self.shard.clone() });
    }
}

fn config(name: &str) -> Config {
    Config::builder("windows")
        .worker_id(name)
        .batch_size(4)
        .tumbling_window(WINDOW)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn start(
    name: &str,
    sim: &StreamSimulator,
    store: &MemoryLeaseStore,
    log: &Log,
) -> (WorkerHandle, tokio::task::JoinHandle<Result<(), kcl_core::WorkerError>>) {
    let log = log.clone();
    let factory = move |shard: &ShardId| Logged { inner: Windows { log: log.clone() }, shard: shard.clone() };
    let worker = Worker::with_metrics(config(name), sim.clone(), store.clone(), factory, Metrics::unregistered());
    let handle = worker.handle();
    (handle, tokio::spawn(worker.run()))
}

/// Writes `n` changes of distinct keys, `every` apart.
async fn write(sim: &StreamSimulator, prefix: &str, n: usize, every: Duration) -> Vec<SimRecord> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(sim.write(&format!("{prefix}-{i}"), ChangeKind::Insert));
        tokio::time::sleep(every).await;
    }
    out
}

/// The written records grouped by aligned window start (as sequence-number strings).
fn by_window(written: &[SimRecord]) -> BTreeMap<SystemTime, Vec<String>> {
    let mut out: BTreeMap<SystemTime, Vec<String>> = BTreeMap::new();
    for r in written {
        let ms = r.created_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis((ms - ms % WINDOW.as_millis()) as u64);
        out.entry(start).or_default().push(r.sequence_number.to_string());
    }
    out
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn windows_carry_state_across_batches_and_end_with_a_final_call() {
    let sim = StreamSimulator::builder().seed(3).initial_shards(1).build();
    let shard = sim.open_shards().remove(0);
    let store = MemoryLeaseStore::new();
    let log = Log::default();
    log.fail_windows.store(2, Ordering::SeqCst);
    log.fail_finals.store(1, Ordering::SeqCst);
    // A backlog over two windows or more first (read in batches that span windows), then
    // changes as they happen.
    let mut written = write(&sim, "old", 30, Duration::from_millis(700)).await;
    let (handle, task) = start("a", &sim, &store, &log);
    written.extend(write(&sim, "item", 37, Duration::from_millis(700)).await);
    let windows = by_window(&written);
    assert!(windows.len() >= 3, "the writes span several windows: {}", windows.len());
    // No record comes after the last window: its time running out must end it.
    until("every window's final call", Duration::from_secs(60), || log.finals().len() == windows.len()).await;
    let finals = log.finals();
    for ((start, want), (_, end, seqs)) in windows.iter().zip(&finals) {
        assert_eq!(end.window.start, *start, "windows end in order");
        assert_eq!(end.window.end, *start + WINDOW);
        assert_eq!((end.reason, end.terminated_early), (WindowEndReason::Elapsed, false));
        assert_eq!(seqs, want, "each window's final state holds its records once each, in order");
    }
    // The final call of a window comes before any batch of a later one, and some window had
    // several batches (batch size 4), so the state was carried.
    let mut closed: Vec<SystemTime> = Vec::new();
    let mut batches: BTreeMap<SystemTime, usize> = BTreeMap::new();
    for e in log.events() {
        match e {
            Event::Batch { start, .. } => {
                assert!(closed.last().is_none_or(|c| *c < start), "a batch of a closed window");
                *batches.entry(start).or_default() += 1;
            }
            Event::Final { end, .. } => closed.push(end.window.start),
            Event::ShardEnded { .. } => {}
        }
    }
    assert!(batches.values().any(|n| *n > 2), "state carried across batches: {batches:?}");
    // The close is stored: the lease has the last checkpoint and no open window.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let lease = store.get_now(&LeaseKey::for_shard(&shard)).unwrap_or_else(|| panic!("no lease"));
    let last = written.last().map(|r| r.sequence_number.clone()).unwrap_or_else(|| panic!());
    assert_eq!(lease.checkpoint, kcl_core::Checkpoint::At(last));
    assert_eq!(lease.window, None, "the closed window is not stored any more");
    let _ = handle.shutdown(Duration::from_secs(10)).await;
    task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
}

/// Worker a consumes part of a window and then stops (gracefully or by a crash); worker b
/// takes the shard over and continues the window: its final state counts each record of
/// the window exactly once, since the state and the checkpoint are stored in one write.
async fn continue_after(crash: bool) {
    let sim = StreamSimulator::builder().seed(5).initial_shards(1).build();
    let shard = sim.open_shards().remove(0);
    let store = MemoryLeaseStore::new();
    let log = Log::default();
    let (a, a_task) = start("a", &sim, &store, &log);
    // Start at a window's beginning, so that both parts fall in one window.
    let now = sim.wall_clock().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let to_next = WINDOW - Duration::from_millis((now.as_millis() % WINDOW.as_millis()) as u64);
    tokio::time::sleep(to_next + Duration::from_millis(100)).await;
    let mut written = write(&sim, "first", 6, Duration::from_millis(300)).await;
    // Long enough for a's batches and (crash) for the 5 s checkpoint interval to pass.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    assert!(log.finals().is_empty(), "the window is still open");
    let stored = store.get_now(&LeaseKey::for_shard(&shard)).and_then(|l| l.window);
    assert!(stored.is_some(), "the open window is stored with the checkpoint");
    if crash {
        a_task.abort();
    } else {
        let _ = a.shutdown(Duration::from_secs(10)).await;
    }
    let (b, b_task) = start("b", &sim, &store, &log);
    written.extend(write(&sim, "second", 3, Duration::from_millis(100)).await);
    let windows = by_window(&written);
    assert_eq!(windows.len(), 1, "every record in one window");
    until("the window's final call", Duration::from_secs(120), || !log.finals().is_empty()).await;
    let finals = log.finals();
    assert_eq!(finals.len(), 1);
    let want: Vec<String> = written.iter().map(|r| r.sequence_number.to_string()).collect();
    assert_eq!(finals[0].2, want, "the next owner continued the stored state: each record once");
    let _ = b.shutdown(Duration::from_secs(10)).await;
    b_task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(start_paused = true)]
async fn the_next_owner_continues_the_window_after_a_graceful_stop() {
    continue_after(false).await;
}

#[tokio::test(start_paused = true)]
async fn the_next_owner_continues_the_window_after_a_crash() {
    continue_after(true).await;
}

#[tokio::test(start_paused = true)]
async fn a_state_too_large_ends_the_window_early_and_nothing_is_lost() {
    let sim = StreamSimulator::builder().seed(7).initial_shards(1).build();
    let store = MemoryLeaseStore::new();
    let log = Log::default();
    let (handle, task) = start("a", &sim, &store, &log);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut written = write(&sim, "a", 3, Duration::from_millis(10)).await;
    written.push(sim.write("big", ChangeKind::Modify));
    written.extend(write(&sim, "b", 3, Duration::from_millis(10)).await);
    let windows = by_window(&written);
    until("the final calls", Duration::from_secs(60), || log.finals().len() > windows.len()).await;
    let finals = log.finals();
    let early: Vec<_> = finals.iter().filter(|(_, e, _)| e.reason == WindowEndReason::StateTooLarge).collect();
    assert_eq!(early.len(), 1, "one early end: {finals:?}");
    assert!(early[0].1.terminated_early);
    assert!(early[0].1.window.state.len() > MAX_WINDOW_STATE_BYTES, "the large state is handed over");
    let counted: Vec<String> = finals.iter().flat_map(|(_, _, s)| s.clone()).collect();
    let want: Vec<String> = written.iter().map(|r| r.sequence_number.to_string()).collect();
    assert_eq!(counted, want, "every record is in exactly one final state");
    let _ = handle.shutdown(Duration::from_secs(10)).await;
    task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(start_paused = true)]
async fn a_shard_end_ends_the_window_early_before_shard_ended() {
    let sim = StreamSimulator::builder().seed(9).initial_shards(1).build();
    let shard = sim.open_shards().remove(0);
    let store = MemoryLeaseStore::new();
    let log = Log::default();
    let (handle, task) = start("a", &sim, &store, &log);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = sim.wall_clock().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let to_next = WINDOW - Duration::from_millis((now.as_millis() % WINDOW.as_millis()) as u64);
    tokio::time::sleep(to_next + Duration::from_millis(100)).await;
    let before = write(&sim, "p", 5, Duration::from_millis(50)).await;
    let child = sim.rotate(&shard).unwrap_or_else(|e| panic!("{e}"));
    let after = write(&sim, "c", 2, Duration::from_millis(50)).await;
    until("the child's window", Duration::from_secs(120), || log.finals().len() >= 2).await;
    let events = log.events();
    let parent_final = events.iter().position(|e| matches!(e, Event::Final { shard: s, .. } if *s == shard));
    let parent_end = events.iter().position(|e| matches!(e, Event::ShardEnded { shard: s } if *s == shard));
    assert!(parent_final < parent_end && parent_final.is_some(), "final call before shard_ended: {events:?}");
    let finals = log.finals();
    let (_, end, seqs) = &finals[0];
    assert_eq!((end.shard_id.clone(), end.reason, end.terminated_early), (shard, WindowEndReason::ShardEnded, true));
    let want: Vec<String> = before.iter().map(|r| r.sequence_number.to_string()).collect();
    assert_eq!(*seqs, want);
    let (_, end, seqs) = &finals[1];
    assert_eq!(end.shard_id, child, "the child starts a window of its own");
    let want: Vec<String> = after.iter().map(|r| r.sequence_number.to_string()).collect();
    assert_eq!(*seqs, want);
    let _ = handle.shutdown(Duration::from_secs(10)).await;
    task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
}
