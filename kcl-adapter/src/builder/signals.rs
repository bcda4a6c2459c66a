//! Graceful stop on SIGTERM and SIGINT, for processes that ask for it (the library itself
//! installs no signal handler unless [`WorkerBuilder::stop_on_signals`](super::WorkerBuilder::stop_on_signals)
//! is called).

use std::time::Duration;

use kcl_core::{ShutdownOutcome, WorkerHandle};
use tokio::signal::unix::{SignalKind, signal};

/// Waits for SIGTERM or SIGINT, calls `on_signal` with the signal's name, then shuts the
/// worker down within `deadline` (checkpointing and releasing its leases); a second signal
/// aborts at once. Returns the outcome, or `None` when signals cannot be watched (logged as an
/// error: such a worker stops only when killed).
pub async fn stop_on_signals(
    handle: WorkerHandle,
    deadline: Duration,
    on_signal: impl FnOnce(&'static str) + Send,
) -> Option<ShutdownOutcome> {
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot watch SIGTERM/SIGINT; stop this worker with SIGKILL");
            return None;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, ?deadline, "stopping: checkpointing and releasing leases");
    on_signal(name);
    let shutdown = handle.shutdown(deadline);
    tokio::pin!(shutdown);
    tokio::select! {
        outcome = &mut shutdown => Some(outcome),
        _ = async { tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} } } => {
            tracing::warn!("second signal: stopping at once without checkpointing");
            handle.abort();
            shutdown.await;
            Some(ShutdownOutcome::DeadlineExceeded)
        }
    }
}
