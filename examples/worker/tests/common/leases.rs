//! What the real-process tests read from the lease table while a run is going on: who holds
//! what, and whether a worker's leases have moved to others.
//!
//! The promise a move is judged by: every *unfinished* shard lease the worker held is owned by
//! a live worker, finished (checkpointed at SHARD_END) or deleted (finished leases are deleted
//! once their children started), and the worker owns no unfinished shard lease. A finished
//! lease still owned by a dead worker is no lease to move: nobody takes a lease at SHARD_END,
//! it only waits for its clean-up. Heartbeats are not shard leases.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use kcl_adapter::DynamoLeaseStore;
use kcl_core::{Lease, LeaseKey, LeaseStore};
use tokio::time::Instant;

/// How long the tests wait for a worker's leases to move (a failover after SIGKILL, SIGSTOP or
/// a cut connection, a handoff after SIGTERM) before they fail: five lease durations. The
/// promise is that the leases move: a failover takes about one lease duration, a handoff less,
/// and both figures are printed (the benchmark judges the failover time in simulated time).
/// The bound is generous because CI runs on a cold, loaded 2-core machine; leases that never
/// move still fail the test.
pub(crate) const fn move_timeout(lease_duration: Duration) -> Duration {
    lease_duration.saturating_mul(5)
}

/// Shard leases (not heartbeats); `None` when the table cannot be read right now.
pub(crate) async fn shard_leases(store: &DynamoLeaseStore) -> Option<Vec<Lease>> {
    let items = store.list().await.ok()?;
    Some(items.into_iter().filter(|l| !l.key.is_heartbeat()).collect())
}

fn owned_by(lease: &Lease, worker: &str) -> bool {
    lease.owner.as_ref().is_some_and(|o| o.as_str() == worker)
}

/// The workers among `candidates` that own an unfinished shard lease, each with those leases.
pub(crate) fn holders_in(leases: &[Lease], candidates: &BTreeSet<String>) -> Vec<(String, Vec<LeaseKey>)> {
    let mut by_owner: BTreeMap<String, Vec<LeaseKey>> = BTreeMap::new();
    for lease in leases.iter().filter(|l| !l.checkpoint.is_shard_end()) {
        if let Some(owner) = lease.owner.as_ref().filter(|o| candidates.contains(o.as_str())) {
            by_owner.entry(owner.as_str().to_owned()).or_default().push(lease.key.clone());
        }
    }
    by_owner.into_iter().collect()
}

/// [`holders_in`] of the table as it is now (empty when it cannot be read).
pub(crate) async fn holders(store: &DynamoLeaseStore, candidates: &BTreeSet<String>) -> Vec<(String, Vec<LeaseKey>)> {
    shard_leases(store).await.map(|leases| holders_in(&leases, candidates)).unwrap_or_default()
}

/// Whether `from`'s leases have moved, in `leases`: `from` owns no unfinished shard lease, and
/// each of `held` is owned by one of `live`, finished or gone.
pub(crate) fn has_moved(leases: &[Lease], from: &str, held: &[LeaseKey], live: &BTreeSet<String>) -> bool {
    let still_held = leases.iter().any(|l| owned_by(l, from) && !l.checkpoint.is_shard_end());
    let each_moved = held.iter().all(|key| match leases.iter().find(|l| &l.key == key) {
        None => true,
        Some(l) => l.checkpoint.is_shard_end() || l.owner.as_ref().is_some_and(|o| live.contains(o.as_str())),
    });
    !still_held && each_moved
}

/// Waits until [`has_moved`] holds; returns how long after `since` that was first seen, or
/// `None` after `timeout`.
pub(crate) async fn moved(
    store: &DynamoLeaseStore,
    from: &str,
    held: &[LeaseKey],
    live: &BTreeSet<String>,
    since: Instant,
    timeout: Duration,
) -> Option<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(leases) = shard_leases(store).await
            && has_moved(&leases, from, held, live)
        {
            return Some(since.elapsed());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The unfinished shard leases owned by one of `gone` (workers killed or stopped).
pub(crate) fn unfinished_of<'a>(leases: &'a [Lease], gone: &BTreeSet<String>) -> Vec<&'a Lease> {
    leases
        .iter()
        .filter(|l| !l.checkpoint.is_shard_end() && l.owner.as_ref().is_some_and(|o| gone.contains(o.as_str())))
        .collect()
}

/// A take logged by a worker: `took lease shard=S reason="expired" from=Some(WorkerId(W))`.
#[derive(Clone, Debug)]
pub(crate) struct LoggedTake {
    /// Nanoseconds since the Unix epoch (the log line's RFC 3339 time).
    pub(crate) at: u64,
    pub(crate) taker: String,
    pub(crate) shard: String,
    /// `unowned`, `expired` or `stolen`.
    pub(crate) reason: String,
    pub(crate) from: Option<String>,
}

/// Nanoseconds since the Unix epoch of a log timestamp `2026-11-25T03:55:37.836276Z`.
pub(crate) fn log_time(ts: &str) -> Option<u64> {
    let at = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos()).ok()
}

/// A log line without its colours (ESC [ … m).
fn strip_colours(raw: &str) -> String {
    let mut line = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            line.push(c);
        }
    }
    line
}

/// Every take that worker `taker` logged in `log` (its stderr).
pub(crate) fn logged_takes(log: &Path, taker: &str) -> Vec<LoggedTake> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines().map(strip_colours).filter(|l| l.contains("took lease")) {
        let field = |name: &str| -> Option<String> {
            let rest = line.split_once(&format!(" {name}="))?.1;
            Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
        };
        let Some(at) = line.split_whitespace().next().and_then(log_time) else { continue };
        let from = field("from").and_then(|f| f.strip_prefix("Some(WorkerId(")?.strip_suffix("))").map(str::to_owned));
        out.push(LoggedTake {
            at,
            taker: taker.to_owned(),
            shard: field("shard").unwrap_or_default(),
            reason: field("reason").unwrap_or_default(),
            from,
        });
    }
    out
}

/// The takes of `held` from `leaver` logged as `expired` at or after `since` (wall ns): a
/// graceful stop releases its leases, so none of them should have waited for expiry.
pub(crate) fn expired_takes_from<'a>(
    takes: &'a [LoggedTake],
    leaver: &str,
    held: &[LeaseKey],
    since: u64,
) -> Vec<&'a LoggedTake> {
    takes
        .iter()
        .filter(|t| t.at >= since && t.reason == "expired" && t.from.as_deref() == Some(leaver))
        .filter(|t| held.iter().any(|k| k.as_str() == t.shard))
        .collect()
}
