//! One process per worker id: the start check against live heartbeats of this worker's own id.

use tokio::time::Instant;

use super::Coordinator;
use crate::lease::{Lease, LeaseKey, LeaseStore, LeaseStoreError, LeaseUpdate};

impl<S: LeaseStore> Coordinator<S> {
    /// Refuses to start when another live process uses this worker id: its heartbeat (same
    /// owner, another incarnation) changes within a lease duration. Meanwhile this worker's own
    /// heartbeat is renewed, so that a process starting at the same moment sees this one too
    /// (both refuse). Heartbeats of this id that stay unchanged are an earlier, dead run's:
    /// removed, after which its leases are taken as leftovers. Returns the other heartbeat's
    /// key when the id is taken.
    pub(crate) async fn check_unique_id(&self) -> Result<Option<LeaseKey>, LeaseStoreError> {
        let mine = self.heartbeat.lock().await.key.clone();
        let items = match self.store.list().await {
            Ok(items) => items,
            // The take cycles check again (and never treat this id's leases as leftovers
            // while another live heartbeat of it exists).
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "cannot scan the lease table to check that this worker id is unique");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut twins: Vec<Lease> =
            items.into_iter().filter(|l| l.key.is_heartbeat() && l.key != mine && l.is_owned_by(self.me())).collect();
        if twins.is_empty() {
            return Ok(None);
        }
        tracing::info!(worker = %self.me(), heartbeats = twins.len(),
            "the lease table holds other heartbeats of this worker id; checking that none is alive");
        let deadline = Instant::now() + self.config.lease_duration();
        let mut next_renewal = Instant::now() + self.config.renew_interval();
        while Instant::now() < deadline {
            tokio::time::sleep(self.config.heartbeat_poll_interval).await;
            if Instant::now() >= next_renewal {
                self.renew_heartbeat().await;
                next_renewal = Instant::now() + self.config.renew_interval();
            }
            for twin in &twins {
                match self.store.get(&twin.key).await {
                    Ok(Some(now)) if now.counter != twin.counter => return Ok(Some(twin.key.clone())),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "heartbeat read failed"),
                }
            }
        }
        for twin in twins.drain(..) {
            if let Ok(LeaseUpdate::Applied(_)) = self.store.delete(&twin).await {
                tracing::info!(heartbeat = %twin.key, "removed the heartbeat of an earlier run of this worker id");
            }
        }
        Ok(None)
    }
}
