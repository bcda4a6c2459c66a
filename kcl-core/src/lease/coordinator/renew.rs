//! The lease renewer: each held lease renewed a third of the lease duration after its last
//! renewal was sent, with bounded concurrency, never waiting for the slowest call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::Coordinator;
use crate::lease::held::HeldLease;
use crate::lease::{LeaseKey, LeaseStore};

impl<S: LeaseStore> Coordinator<S> {
    /// Renews every held lease `every` after its last renewal was sent, forever. At most
    /// `max_concurrent_renewals` calls run at once, the next due lease starting as soon as
    /// any call answers (or times out): a slow or silent call delays only its own lease.
    /// When the table is too slow to keep up, leases are renewed in turn (oldest due first).
    pub(crate) async fn renew_leases(&self, every: Duration) {
        let limit = self.config.max_concurrent_renewals;
        // Due renewals, earliest first; `known` holds every lease that is due or in flight.
        let mut due: BinaryHeap<Reverse<(Instant, u64, LeaseKey)>> = BinaryHeap::new();
        let mut known: HashMap<LeaseKey, Arc<HeldLease>> = HashMap::new();
        let mut order = 0u64;
        let mut in_flight = FuturesUnordered::new();
        // New leases are picked up this often (a taken lease was just written: not urgent).
        let mut discover = tokio::time::interval(every / 4);
        discover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = Instant::now();
            while in_flight.len() < limit {
                let Some(Reverse((at, _, key))) = due.peek().cloned() else { break };
                if at > now {
                    break;
                }
                due.pop();
                let Some(h) = known.get(&key).cloned() else { continue };
                in_flight.push(async move {
                    let sent = Instant::now();
                    self.renew_one(&h).await;
                    (h, sent)
                });
            }
            let next_due = due.peek().map(|Reverse((at, _, _))| *at).filter(|_| in_flight.len() < limit);
            tokio::select! {
                _ = discover.tick() => {
                    let held = self.held();
                    let current: HashSet<&LeaseKey> = held.iter().map(|h| &h.key).collect();
                    known.retain(|k, _| current.contains(k));
                    for h in &held {
                        if !known.contains_key(&h.key) {
                            known.insert(h.key.clone(), h.clone());
                            order += 1;
                            // Its take was its first renewal.
                            due.push(Reverse((h.renewed_at() + every, order, h.key.clone())));
                        }
                    }
                }
                Some((h, sent)) = in_flight.next(), if !in_flight.is_empty() => {
                    if h.is_lost() {
                        known.remove(&h.key);
                    } else if known.contains_key(&h.key) {
                        order += 1;
                        due.push(Reverse((sent + every, order, h.key.clone())));
                    }
                }
                _ = async {
                    match next_due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}
