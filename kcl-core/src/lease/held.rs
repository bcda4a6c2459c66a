//! [`HeldLease`]: a lease this worker owns, shared by its renewer, its consumer task and its
//! checkpointer.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::{Lease, LeaseKey};
use crate::shard::ShardId;

/// When this worker last renewed its heartbeat. Every held lease is fenced on it too: if the
/// heartbeat cannot be renewed, other workers will soon judge this worker dead and take all of
/// its leases, so all of them stop delivering first.
#[derive(Debug)]
pub(crate) struct Liveness {
    heartbeat_renewed_at: Mutex<Instant>,
}

impl Liveness {
    pub(crate) fn new(now: Instant) -> Self {
        Self { heartbeat_renewed_at: Mutex::new(now) }
    }

    pub(crate) fn heartbeat_renewed(&self, sent_at: Instant) {
        let mut at = self.heartbeat_renewed_at.lock().unwrap_or_else(PoisonError::into_inner);
        *at = (*at).max(sent_at);
    }

    pub(crate) fn heartbeat_renewed_at(&self) -> Instant {
        *self.heartbeat_renewed_at.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A lease owned by this worker.
#[derive(Debug)]
pub(crate) struct HeldLease {
    pub(crate) key: LeaseKey,
    pub(crate) shard_id: ShardId,
    /// The lease as last written by this worker: the expected value for the next write.
    lease: tokio::sync::Mutex<Lease>,
    /// Send time of the last successful renewal (or the take).
    renewed_at: Mutex<Instant>,
    /// Cancelled when the lease is lost, released or the worker stops consuming it.
    lost: CancellationToken,
    /// Cancelled when another worker asked for this lease: the consumer hands it over as on
    /// a graceful shutdown (its processor's last checkpoint, then a release).
    handoff: CancellationToken,
    liveness: Arc<Liveness>,
    fence_after: Duration,
    /// Whether the lease itself is renewed ([`LeaseRenewal::EveryLease`]); otherwise only the
    /// heartbeat proves ownership.
    ///
    /// [`LeaseRenewal::EveryLease`]: crate::config::LeaseRenewal::EveryLease
    renewed_each: bool,
}

impl HeldLease {
    pub(crate) fn new(
        lease: Lease,
        taken_at: Instant,
        liveness: Arc<Liveness>,
        fence_after: Duration,
        renewed_each: bool,
        parent_token: &CancellationToken,
    ) -> Option<Self> {
        let shard_id = lease.key.shard_id()?;
        Some(Self {
            key: lease.key.clone(),
            shard_id,
            lease: tokio::sync::Mutex::new(lease),
            renewed_at: Mutex::new(taken_at),
            lost: parent_token.child_token(),
            handoff: CancellationToken::new(),
            liveness,
            fence_after,
            renewed_each,
        })
    }

    /// Locks the stored value for a conditional write.
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, Lease> {
        self.lease.lock().await
    }

    /// Send time of the last successful renewal (or the take).
    pub(crate) fn renewed_at(&self) -> Instant {
        *self.renewed_at.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn renewed(&self, sent_at: Instant) {
        let mut at = self.renewed_at.lock().unwrap_or_else(PoisonError::into_inner);
        *at = (*at).max(sent_at);
    }

    /// Whether this worker may deliver records of the shard now: not lost, and the heartbeat
    /// (and, when leases are renewed each, the lease too) was renewed within the fencing
    /// window. Judged by the local monotonic clock, from the time each successful renewal was
    /// *sent*.
    pub(crate) fn is_valid(&self, now: Instant) -> bool {
        if self.lost.is_cancelled() {
            return false;
        }
        let heartbeat = self.liveness.heartbeat_renewed_at();
        let newest_proof = if self.renewed_each {
            heartbeat.min(*self.renewed_at.lock().unwrap_or_else(PoisonError::into_inner))
        } else {
            heartbeat
        };
        now.saturating_duration_since(newest_proof) < self.fence_after
    }

    /// Asks the consumer to hand the lease over (another worker asked for it).
    pub(crate) fn request_handoff(&self) {
        self.handoff.cancel();
    }

    pub(crate) fn handoff_requested(&self) -> bool {
        self.handoff.is_cancelled()
    }

    pub(crate) fn handoff_token(&self) -> &CancellationToken {
        &self.handoff
    }

    /// Marks the lease lost: the consumer stops at once.
    pub(crate) fn mark_lost(&self) {
        self.lost.cancel();
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    pub(crate) fn lost_token(&self) -> &CancellationToken {
        &self.lost
    }
}
