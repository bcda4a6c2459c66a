//! The [`LeaseStore`] seam.

use std::future::Future;

use super::{Lease, LeaseKey, WorkerId};
use crate::checkpoint::Checkpoint;
use crate::window::WindowState;

/// The outcome of a conditional write.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum LeaseUpdate {
    /// The write happened; this is the lease as stored now.
    Applied(Lease),
    /// The condition failed: the lease changed (or vanished, or already existed) since the
    /// caller read it. For the owner this means the lease is lost.
    Lost,
}

impl LeaseUpdate {
    /// The new lease if the write happened.
    pub fn applied(self) -> Option<Lease> {
        match self {
            LeaseUpdate::Applied(lease) => Some(lease),
            LeaseUpdate::Lost => None,
        }
    }
}

/// Why a lease store call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseStoreErrorKind {
    /// Too many requests; retry later.
    Throttled,
    /// A passing fault; retry.
    Transient,
    /// The lease table does not exist.
    TableNotFound,
    /// Not permitted (credentials, IAM).
    AccessDenied,
    /// An item in the table could not be understood.
    Malformed,
    /// Anything else that retrying will not fix.
    Fatal,
}

impl LeaseStoreErrorKind {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseStoreErrorKind::Throttled => "throttled",
            LeaseStoreErrorKind::Transient => "transient",
            LeaseStoreErrorKind::TableNotFound => "table_not_found",
            LeaseStoreErrorKind::AccessDenied => "access_denied",
            LeaseStoreErrorKind::Malformed => "malformed",
            LeaseStoreErrorKind::Fatal => "fatal",
        }
    }
}

/// An error from a [`LeaseStore`].
#[derive(Debug, thiserror::Error)]
#[error("lease store: {message}")]
pub struct LeaseStoreError {
    kind: LeaseStoreErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl LeaseStoreError {
    /// A new error of this kind.
    pub fn new(kind: LeaseStoreErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The classification.
    pub fn kind(&self) -> LeaseStoreErrorKind {
        self.kind
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, LeaseStoreErrorKind::Throttled | LeaseStoreErrorKind::Transient)
    }
}

/// The lease table.
///
/// Every mutation takes the lease as the caller last saw it (`expected`) and applies only if
/// the stored item still has that `counter` and `owner`; otherwise it returns
/// [`LeaseUpdate::Lost`] and changes nothing. Applied writes return the stored lease.
/// Reads that decide ownership are strongly consistent. Calls may run concurrently and are
/// cancellation safe in the sense that a dropped call either happened or did not.
pub trait LeaseStore: Send + Sync + 'static {
    /// Every item in the table (shard leases and heartbeats), paginating internally.
    fn list(&self) -> impl Future<Output = Result<Vec<Lease>, LeaseStoreError>> + Send;

    /// One item, or `None` when absent.
    fn get(&self, key: &LeaseKey) -> impl Future<Output = Result<Option<Lease>, LeaseStoreError>> + Send;

    /// One item, read eventually consistently (half the price of [`get`](Self::get) on
    /// DynamoDB): it may miss the writes of about the last second, never shows a value older
    /// than one already returned by a strongly consistent read for long, and eventually
    /// returns what `get` does. Used only for reads whose staleness can delay a decision but
    /// never make a wrong one: the heartbeats a worker watches (a stale counter only makes a
    /// live worker look alive for longer), the change notice, a waiting child's parents.
    /// Default: [`get`](Self::get).
    fn peek(&self, key: &LeaseKey) -> impl Future<Output = Result<Option<Lease>, LeaseStoreError>> + Send {
        self.get(key)
    }

    /// Creates `lease` unless an item with its key exists (then `Lost`).
    fn create_if_absent(&self, lease: Lease) -> impl Future<Output = Result<LeaseUpdate, LeaseStoreError>> + Send;

    /// Renews: counter + 1, and removes from `handoff_requests` the request of every worker
    /// with a request in `expected.handoff_requests` (the owner has seen them: they were in
    /// the answer of its previous renewal). Condition: counter and owner as in `expected`.
    fn renew(&self, expected: &Lease) -> impl Future<Output = Result<LeaseUpdate, LeaseStoreError>> + Send;

    /// Takes (or steals) the lease for `new_owner`: owner set, counter + 1, owner switches + 1.
    /// Condition: counter and owner as in `expected`.
    fn take(
        &self,
        expected: &Lease,
        new_owner: &WorkerId,
    ) -> impl Future<Output = Result<LeaseUpdate, LeaseStoreError>> + Send;

    /// Writes a checkpoint: checkpoint set, the tumbling window set to `window` (removed
    /// when `None`), owner switches reset to 0, counter + 1, in one write.
    /// Condition: counter and owner as in `expected`.
    fn checkpoint(
        &self,
        expected: &Lease,
        checkpoint: &Checkpoint,
        window: Option<&WindowState>,
    ) -> impl Future<Output = Result<LeaseUpdate, LeaseStoreError>> + Send;

    /// Releases: owner removed, counter + 1. Condition: counter and owner as in `expected`.
    fn release(&self, expected: &Lease) -> impl Future<Output = Result<LeaseUpdate, LeaseStoreError>> + Send;

    /// Asks the owner of the heartbeat `heartbeat` to hand `leases` of its leases over to
    /// `from`: sets `from`'s request in the heartbeat's `handoff_requests` (replacing an
    /// earlier one of `from`), without touching its counter, so the owner's next renewal
    /// succeeds and carries the request back in its answer. One small entry per asking
    /// worker, however many leases it wants. Condition: the heartbeat exists and is owned by
    /// `heartbeat.owner` (its counter may have moved since it was read); `Lost` otherwise.
    fn request_handoff(
        &self,
        heartbeat: &Lease,
        from: &WorkerId,
        leases: u32,
    ) -> impl Future<Output = Result<LeaseUpdate, LeaseStoreError>> + Send;

    /// Deletes the item. Condition: counter and owner as in `expected`.
    fn delete(&self, expected: &Lease) -> impl Future<Output = Result<LeaseUpdate, LeaseStoreError>> + Send;
}
