//! Tumbling windows (Lambda: `TumblingWindowInSeconds`): state carried across the batches of
//! a fixed, non-overlapping time window, handed back to the processor at the window's end.
//!
//! With [`tumbling_window`](crate::ConfigBuilder::tumbling_window) set, every record belongs
//! to one window of that length, aligned on the Unix epoch and chosen by the record's
//! creation time ([`StreamRecord::approximate_creation_time`](crate::StreamRecord)), as
//! Lambda's windows are chosen by the time a record was written. The worker then calls
//! [`RecordProcessor::process_window`](crate::RecordProcessor::process_window) instead of
//! `process_records`: each call gets the records of one window only and the state the
//! previous call of that window returned (empty at the window's start), and returns the new
//! state. The state is stored with the checkpoint on the lease, in the same conditional
//! write, so that the next owner of the shard (after a handoff, a crash or a restart)
//! continues the window with the state that matches its checkpoint.
//!
//! When the window is over, the processor gets one final call,
//! [`window_ended`](crate::RecordProcessor::window_ended), with the window's last state
//! (Lambda: `isFinalInvokeForWindow`). A window is over when a record of a later window is
//! read, or when the shard has had no record for as long as it takes the window's end to
//! pass, counted from the creation time of its last record. It ends early
//! ([`WindowEnd::terminated_early`], Lambda's `isWindowTerminatedEarly`) at the end of the
//! shard, and when the processor returns a state larger than [`MAX_WINDOW_STATE_BYTES`]
//! (which a lease item cannot hold): that state is handed over in a final call at once, the
//! error is logged and counted in `kcl_windows_closed_total{reason="state_too_large"}`, and
//! the window goes on with an empty state.
//!
//! A record read after its window was closed (written late, or delayed in the stream) joins
//! the next open window. Windows are per shard: a child shard starts its own.
//!
//! Guarantees, as for plain batches: every record reaches `process_window` at least once
//! and in order; a failed call is retried with the state it had (so a retry never counts a
//! record twice into the state the worker stores); bisecting and dead letters work as for
//! `process_records` (a dead-lettered record is not in any state). A partial batch failure
//! counts as a failure of the whole call, since the state returned with it would not match.
//! After a crash, the batches since the last checkpoint are delivered again with the state
//! stored with that checkpoint, so the final state counts each record once unless the
//! crash came between a final call and the checkpoint after it (then the final call is
//! repeated: at-least-once).

mod tumbling;

pub(crate) use tumbling::{Tumbling, WindowSlot};

use std::time::{Duration, SystemTime};

use crate::shard::ShardId;

/// Largest state a processor may return: 350 KiB, which leaves room in a DynamoDB item (at
/// most 400 KB) for the lease's other attributes. A larger state ends the window early.
pub const MAX_WINDOW_STATE_BYTES: usize = 350 * 1024;
/// Shortest tumbling window: 1 s.
pub const MIN_TUMBLING_WINDOW: Duration = Duration::from_secs(1);
/// Longest tumbling window: 900 s (Lambda's limit).
pub const MAX_TUMBLING_WINDOW: Duration = Duration::from_secs(900);

/// One tumbling window: its bounds and the state its batches have built up so far.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WindowState {
    /// When the window starts (inclusive).
    pub start: SystemTime,
    /// When it ends (exclusive).
    pub end: SystemTime,
    /// What the last `process_window` call of this window returned; empty at its start.
    pub state: Vec<u8>,
}

impl WindowState {
    /// A window from `start` to `end` with `state`.
    pub fn new(start: SystemTime, end: SystemTime, state: Vec<u8>) -> Self {
        Self { start, end, state }
    }
}

/// Why a window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowEndReason {
    /// Its time is over (a later record came, or its end passed without one).
    Elapsed,
    /// The shard ended (Lambda ends windows early on a reshard too).
    ShardEnded,
    /// The processor returned a state larger than [`MAX_WINDOW_STATE_BYTES`].
    StateTooLarge,
}

impl WindowEndReason {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowEndReason::Elapsed => "elapsed",
            WindowEndReason::ShardEnded => "shard_ended",
            WindowEndReason::StateTooLarge => "state_too_large",
        }
    }
}

/// Handed to [`RecordProcessor::window_ended`](crate::RecordProcessor::window_ended): the
/// final call of a window (Lambda: `isFinalInvokeForWindow`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WindowEnd {
    /// The shard.
    pub shard_id: ShardId,
    /// The window and its final state.
    pub window: WindowState,
    /// Why it ended.
    pub reason: WindowEndReason,
    /// True when it ended before its time was over (Lambda: `isWindowTerminatedEarly`): at
    /// a shard end before the window's end, or with a state too large to store. After a
    /// state too large the same window goes on with an empty state.
    pub terminated_early: bool,
}
