//! Processor callbacks run guarded: a panic in the user's code is caught and becomes a
//! failure of that one call, handled like an `Err` (retried, bisected, dead-lettered or the
//! shard stopped, by the failure policy), never a dead shard task holding its lease.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// A processor callback, as named in `kcl_processor_panics_total{callback}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Callback {
    Initialize,
    ProcessRecords,
    ShardEnded,
    ShutdownRequested,
    LeaseLost,
    ProcessWindow,
    WindowEnded,
}

impl Callback {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Callback::Initialize => "initialize",
            Callback::ProcessRecords => "process_records",
            Callback::ShardEnded => "shard_ended",
            Callback::ShutdownRequested => "shutdown_requested",
            Callback::LeaseLost => "lease_lost",
            Callback::ProcessWindow => "process_window",
            Callback::WindowEnded => "window_ended",
        }
    }
}

/// A callback panicked; the panic's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Panicked(pub(crate) String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "panicked: {}", self.0)
    }
}

/// Runs `call`, turning a panic into [`Panicked`].
///
/// Unwind safety: after a panic the processor instance is used again (as after an `Err`), so
/// its state is whatever the panic left; the trait documents this. Nothing of the worker's own
/// state is inside the call.
pub(crate) async fn guarded<T>(call: impl Future<Output = T>) -> Result<T, Panicked> {
    AssertUnwindSafe(call).catch_unwind().await.map_err(|payload| Panicked(panic_message(&*payload)))
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn panics_become_failures_and_values_pass_through() {
        assert_eq!(guarded(async { 7 }).await, Ok(7));
        let literal = guarded(async { panic!("boom") }).await;
        assert_eq!(literal, Err::<(), _>(Panicked("boom".into())));
        let n = 3;
        let formatted = guarded(async move { panic!("bad record {n}") }).await;
        assert_eq!(formatted, Err::<(), _>(Panicked("bad record 3".into())));
        let other = guarded(async { std::panic::panic_any(42_u8) }).await;
        assert_eq!(other, Err::<(), _>(Panicked("a panic with a non-string payload".into())));
    }

    #[test]
    fn callback_labels() {
        let all = [
            Callback::Initialize,
            Callback::ProcessRecords,
            Callback::ShardEnded,
            Callback::ShutdownRequested,
            Callback::LeaseLost,
            Callback::ProcessWindow,
            Callback::WindowEnded,
        ];
        let labels: Vec<&str> = all.iter().map(|c| c.as_str()).collect();
        let want = [
            "initialize",
            "process_records",
            "shard_ended",
            "shutdown_requested",
            "lease_lost",
            "process_window",
            "window_ended",
        ];
        assert_eq!(labels, want);
    }
}
