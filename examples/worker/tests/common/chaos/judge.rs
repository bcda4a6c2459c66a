//! The verdict's separate judgements (pauses, liveness, the final table) and the waits
//! before it.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A paused worker must start no batch of a shard taken from it while it was stopped: record
/// lines of such a shard written after the stop must belong to a batch begun before it.
pub(crate) fn judge_pause(
    file: &WorkerFile,
    lines: &[Line],
    pause: &Pause,
    runs: &HashMap<usize, Option<u64>>,
    writes: &[LeaseWrite],
    problems: &mut Vec<String>,
) -> PauseOutcome {
    let me = file.worker_id.as_str();
    let mut outcome = PauseOutcome {
        worker: file.name.clone(),
        paused_for: Duration::from_nanos(pause.cont_wall.saturating_sub(pause.stop_wall)),
        ..PauseOutcome::default()
    };
    // Shards taken from it after the stop, and when it took each back (if it did).
    let mut taken: BTreeMap<String, u64> = BTreeMap::new();
    // Leases it acquired after the stop (so after SIGCONT): not held when it was stopped.
    let mut acquired_after: HashSet<&str> = HashSet::new();
    for w in writes.iter().filter(|w| !is_heartbeat(&w.key)) {
        if matches!(w.op, LeaseOp::Take | LeaseOp::Create)
            && w.owner_after() == Some(me)
            && w.earliest >= pause.stop_wall
            && !taken.contains_key(&w.key)
        {
            acquired_after.insert(&w.key);
        }
        // Held at the stop, and taken while it was stopped or right after SIGCONT, before its
        // renewal got through.
        if w.op == LeaseOp::Take
            && w.owner_before() == Some(me)
            && w.latest >= pause.stop_wall
            && w.earliest <= pause.cont_wall + TAKEN_AFTER_CONT.as_nanos() as u64
            && !taken.contains_key(&w.key)
            && !acquired_after.contains(w.key.as_str())
        {
            taken.insert(w.key.clone(), u64::MAX);
        } else if w.op == LeaseOp::Take
            && w.owner_after() == Some(me)
            && let Some(back) = taken.get_mut(&w.key)
            && *back == u64::MAX
        {
            *back = w.earliest;
        }
    }
    outcome.taken = taken.keys().cloned().collect();
    let mut late: BTreeMap<&str, (usize, String)> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(&back) = taken.get(&line.shard) else { continue };
        if line.end <= pause.offset || !matches!(line.kind, LineKind::Record { .. }) || line.ts >= back {
            continue;
        }
        outcome.inflight_lines += 1;
        let after = secs_between(pause.cont_wall, line.ts);
        outcome.last_line_after_cont = Some(outcome.last_line_after_cont.map_or(after, |a: f64| a.max(after)));
        if line.ts >= pause.stop_wall && runs.get(&i).copied().flatten().is_none() {
            let entry =
                late.entry(&line.shard).or_insert_with(|| (0, format!("{:?} {after:.3} s after SIGCONT", line.kind)));
            entry.0 += 1;
        }
    }
    for (shard, (count, first)) in late {
        problems.push(format!(
            "{} delivered {count} records of shard {shard} in batches begun after its pause (from {:.2} s paused), \
             although the lease was taken while it was stopped; the first: {first}",
            file.worker_id,
            outcome.paused_for.as_secs_f64()
        ));
    }
    outcome
}

/// Peers judge a worker dead only when it is: a lease is taken as expired from its owner only
/// while the owner was killed, stopping or paused, and a worker's heartbeat is removed by
/// another only then. (Balancing steals, `reason="stolen"`, are not judged.)
pub(crate) fn judge_liveness(
    ev: &Evidence<'_>,
    writes: &[LeaseWrite],
    figures: &mut Figures,
    problems: &mut Vec<String>,
) {
    let by_id: HashMap<&str, &WorkerFile> = ev.files.iter().map(|f| (f.worker_id.as_str(), f)).collect();
    for file in ev.files {
        for take in logged_takes(&file.log, &file.worker_id) {
            if take.reason == "stolen" {
                figures.steals += 1;
            }
            let Some(owner) = take.from.as_deref().and_then(|w| by_id.get(w)) else { continue };
            if take.reason == "expired" && !owner.may_be_dead_at(take.at) {
                figures.live_leases_taken += 1;
                problems.push(format!(
                    "{} took the lease of {} from {} as expired at {:.2} s, while {} was running (not killed, stopped, \
                     paused or cut off)",
                    take.taker,
                    take.shard,
                    owner.worker_id,
                    ev.base.secs(take.at),
                    owner.worker_id
                ));
            }
        }
    }
    for w in writes.iter().filter(|w| w.op == LeaseOp::Delete && is_heartbeat(&w.key)) {
        let Some(owner) = w.owner_before().and_then(|o| by_id.get(o)) else { continue };
        if !owner.may_be_dead_at(w.latest) {
            figures.live_heartbeats_removed += 1;
            problems.push(format!(
                "the heartbeat {} of {} was removed by a peer (lease table write {}, at {:.2} s) while it was running",
                w.key,
                owner.worker_id,
                w.seq,
                ev.base.secs(w.earliest)
            ));
        }
    }
}

/// The final lease table: nothing owned (every worker stopped gracefully), closed shards at
/// SHARD_END, the open shard checkpointed at its last record, which the final tenure on it
/// processed; the counters are those the history ends with.
pub(crate) fn judge_final_table(
    ev: &Evidence<'_>,
    outputs: &Outputs,
    writes: &[LeaseWrite],
    problems: &mut Vec<String>,
) {
    let mut last_write: HashMap<&str, &LeaseWrite> = HashMap::new();
    for w in writes {
        last_write.insert(w.key.as_str(), w);
    }
    for lease in ev.final_leases {
        let key = lease.key.as_str();
        match last_write.get(key).and_then(|w| w.after.as_ref()) {
            Some(after) if after.counter == lease.counter && after.checkpoint == lease.checkpoint => {}
            other => problems.push(format!("lease {key}: the table ends at {lease:?}, the history at {other:?}")),
        }
        if lease.key.is_heartbeat() {
            continue;
        }
        // A worker killed between a shard's SHARD_END checkpoint and its release leaves the
        // finished lease owned: it blocks nothing (children wait for SHARD_END, not for a
        // release) and is deleted once the children have started.
        let killed_after_end =
            |owner: &str| lease.checkpoint.is_shard_end() && ev.files.iter().any(|f| f.killed && f.worker_id == owner);
        if let Some(owner) = lease.owner.as_ref().filter(|o| !killed_after_end(o.as_str())) {
            problems.push(format!("lease {key} still owned by {owner} after every worker stopped gracefully"));
        }
    }
    for shard in &ev.data.shards {
        let Some(lease) = ev.final_leases.iter().find(|l| l.key.as_str() == shard.id) else {
            // A finished lease is deleted once its children have started: it must have been
            // at SHARD_END then.
            let deleted = last_write.get(shard.id.as_str()).filter(|w| w.op == LeaseOp::Delete);
            let finished = deleted.and_then(|w| w.before.as_ref()).is_some_and(|b| b.checkpoint.is_shard_end());
            if !(shard.closed && finished) {
                problems.push(format!(
                    "no lease for shard {} (last write {:?})",
                    shard.id,
                    last_write.get(shard.id.as_str())
                ));
            }
            continue;
        };
        let last = ev.data.records.iter().filter(|r| r.shard == shard.id).map(|r| r.seq.clone()).max();
        if shard.closed {
            if !lease.checkpoint.is_shard_end() {
                problems.push(format!("closed shard {} ends at {:?}, not SHARD_END", shard.id, lease.checkpoint));
            }
            continue;
        }
        let want = last.clone().map(Checkpoint::At);
        if let Some(want) = &want
            && &lease.checkpoint != want
        {
            problems
                .push(format!("open shard {} ends at {:?}, its last record is {want:?}", shard.id, lease.checkpoint));
        }
        // The last tenure that delivered records of the open shard ended gracefully at its
        // last record. A tenure that ended with its lease lost is no candidate: a worker that
        // had lost the lease without knowing it yet may deliver after the real owner (its
        // records are judged as repeats by check_duplicates).
        let tenure = outputs
            .tenures
            .iter()
            .filter(|t| t.shard == shard.id && t.end != TenureEnd::LeaseLost)
            .filter_map(|t| Some((outputs.occurrences[*t.records.last()?].ts, t)))
            .max_by_key(|(ts, _)| *ts)
            .map(|(_, t)| t);
        if let (Some(t), Some(last)) = (tenure, &last) {
            let final_seq = t.records.last().map(|i| SequenceNumber::from_u128(outputs.occurrences[*i].seq));
            if t.end != TenureEnd::Shutdown || final_seq.as_ref() != Some(last) {
                problems.push(format!(
                    "the last tenure on open shard {} ({}) ended with {:?} at {final_seq:?}, want Shutdown at {last}",
                    shard.id, t.worker, t.end
                ));
            }
        }
    }
}

/// Waits until every written change appears in some output.
pub(crate) async fn wait_processed(files: Vec<PathBuf>, written: &Written, timeout: Duration) {
    let wanted = written.wanted();
    let (files, wanted) = (&files, &wanted);
    eventually("every change to be processed", timeout, Duration::from_millis(500), || async move {
        let got: HashSet<(String, Label)> = files.iter().flat_map(|p| super::super::outputs::seen(p)).collect();
        wanted.is_subset(&got).then_some(())
    })
    .await;
}

/// Waits until every closed shard's lease (among `shards`, with ids as their leases name them)
/// is at SHARD_END and every open shard has a lease.
pub(crate) async fn wait_shards_finished(store: &DynamoLeaseStore, shards: &[DumpShard], timeout: Duration) {
    eventually("every closed shard to reach SHARD_END", timeout, Duration::from_millis(250), || async move {
        let leases = shard_leases(store).await?;
        // A finished lease may already be deleted (its children started).
        shards
            .iter()
            .all(|s| match leases.iter().find(|l| l.key.as_str() == s.id) {
                Some(l) => !s.closed || l.checkpoint.is_shard_end(),
                None => s.closed,
            })
            .then_some(())
    })
    .await;
}
