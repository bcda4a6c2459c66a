//! [`WorkerError`]: why a worker could not start or had to stop.

use crate::config::ConfigError;
use crate::lease::{LeaseStoreError, LeaseStoreErrorKind};
use crate::metrics::MetricsError;
use crate::source::{SourceError, SourceErrorKind};

/// A worker failed to start or stopped on an error it cannot recover from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration was rejected.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The lease table cannot be used.
    #[error("{}", lease_table_hint(.0))]
    LeaseTable(#[source] LeaseStoreError),
    /// The stream cannot be read.
    #[error("{}", stream_hint(.0))]
    Stream(#[source] SourceError),
    /// Another live process runs with this worker id: two processes with one id would both
    /// deliver the same shards, so this one refuses to start.
    #[error(
        "another live worker process uses worker id {worker_id} (its heartbeat {heartbeat} in the lease table is \
         being renewed): give every process its own worker id (leave Config::worker_id / --worker-id unset for \
         hostname-pid, or make the configured id unique per task)"
    )]
    DuplicateWorkerId {
        /// The id in use.
        worker_id: String,
        /// The other process's heartbeat item.
        heartbeat: String,
    },
}

impl WorkerError {
    /// A short, stable name of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerError::Config(_) => "config",
            WorkerError::Metrics(_) => "metrics",
            WorkerError::LeaseTable(_) => "lease_table",
            WorkerError::Stream(_) => "stream",
            WorkerError::DuplicateWorkerId { .. } => "duplicate_worker_id",
        }
    }
}

fn lease_table_hint(e: &LeaseStoreError) -> String {
    let fix = match e.kind() {
        LeaseStoreErrorKind::TableNotFound => {
            "create it first (the adapter's ensure_table does) or check the application name and region"
        }
        LeaseStoreErrorKind::AccessDenied => "grant the worker's role read and write access to the lease table",
        LeaseStoreErrorKind::Malformed => {
            "the table holds items this worker cannot read: is it another application's table?"
        }
        _ => "check the lease table and the worker's connectivity",
    };
    format!("cannot use the lease table: {e}; {fix}")
}

fn stream_hint(e: &SourceError) -> String {
    let fix = match e.kind() {
        SourceErrorKind::NotFound => "check the stream ARN or table name and that the table has a stream enabled",
        SourceErrorKind::Fatal => "check the stream configuration and the worker's permissions on it",
        _ => "check connectivity to the stream",
    };
    format!("cannot read the stream: {e}; {fix}")
}
