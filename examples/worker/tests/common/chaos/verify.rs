//! The verdict on a run: figures and every broken promise.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What a run recorded, to be judged at its end: the streams of the data tables, the lease
/// table and the clock table, and the clock that dates lease writes.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    pub(crate) streams: &'a aws_sdk_dynamodbstreams::Client,
    /// Each data stream as (the name its shard ids are prefixed with in the lease table, empty
    /// for a worker of one stream; its ARN).
    pub(crate) data: &'a [(String, String)],
    pub(crate) lease_arn: &'a str,
    pub(crate) clock_arn: &'a str,
    pub(crate) clock: Clock,
    pub(crate) base: TimeBase,
    pub(crate) lease_duration: Duration,
}

/// [`drain`], then [`verdict`].
pub(crate) async fn drain_and_verify(
    fleet: &mut Fleet,
    store: &DynamoLeaseStore,
    written: &Written,
    record: Record<'_>,
    timeout: Duration,
) -> Figures {
    drain(fleet, store, written, &record, timeout).await;
    verdict(fleet, store, written, record).await
}

/// Waits until every written change was processed (up to `timeout`) and every closed shard of
/// every data stream finished.
pub(crate) async fn drain(
    fleet: &Fleet,
    store: &DynamoLeaseStore,
    written: &Written,
    record: &Record<'_>,
    timeout: Duration,
) {
    let paths = fleet.files.values().map(|f| f.path.clone()).collect();
    wait_processed(paths, written, timeout).await;
    let mut listed = Vec::new();
    for (name, arn) in record.data {
        listed.push((name.clone(), Dump { shards: list_shards(record.streams, arn).await, records: Vec::new() }));
    }
    wait_shards_finished(store, &merge_dumps(listed).shards, Duration::from_secs(120)).await;
}

/// Stops every worker with SIGTERM (each must exit with 0) and judges the run.
pub(crate) async fn verdict(
    fleet: &mut Fleet,
    store: &DynamoLeaseStore,
    written: &Written,
    record: Record<'_>,
) -> Figures {
    fleet.stop_all().await;
    let final_leases = store.list().await.unwrap_or_else(|e| panic!("final lease table: {e}"));
    let ticks = record.clock.stop().await;
    let mut dumps = Vec::new();
    for (name, arn) in record.data {
        dumps.push((name.clone(), dump_stream(record.streams, arn).await));
    }
    let data = merge_dumps(dumps);
    let leases = dump_stream(record.streams, record.lease_arn).await;
    let clock = dump_stream(record.streams, record.clock_arn).await;
    let files: Vec<_> = fleet.files.values().cloned().collect();
    verify(&Evidence {
        base: record.base,
        lease_duration: record.lease_duration,
        written,
        data: &data,
        leases: &leases,
        clock: &clock,
        ticks: &ticks,
        files: &files,
        final_leases: &final_leases,
    })
}

/// Everything [`verify`] judges.
#[derive(Debug)]
pub(crate) struct Evidence<'a> {
    pub(crate) base: TimeBase,
    pub(crate) lease_duration: Duration,
    pub(crate) written: &'a Written,
    pub(crate) data: &'a Dump,
    pub(crate) leases: &'a Dump,
    pub(crate) clock: &'a Dump,
    pub(crate) ticks: &'a [Tick],
    pub(crate) files: &'a [WorkerFile],
    /// The lease table after the last worker stopped.
    pub(crate) final_leases: &'a [Lease],
}

/// The figures of a run.
#[derive(Debug, Default)]
pub(crate) struct Figures {
    pub(crate) written: usize,
    pub(crate) processed: usize,
    pub(crate) distinct: usize,
    pub(crate) duplicates: usize,
    pub(crate) dup_after_kill: usize,
    pub(crate) dup_after_pause: usize,
    pub(crate) dup_after_lease_loss: usize,
    pub(crate) largest_tail: usize,
    pub(crate) lost: usize,
    pub(crate) shards: usize,
    pub(crate) lease_writes: usize,
    pub(crate) takes: usize,
    pub(crate) tenures: usize,
    pub(crate) pauses: Vec<PauseOutcome>,
    /// Leases taken for balancing (logged `reason="stolen"`).
    pub(crate) steals: usize,
    /// Leases taken as expired from a running worker, and running workers' heartbeats removed.
    pub(crate) live_leases_taken: usize,
    pub(crate) live_heartbeats_removed: usize,
    pub(crate) checker: String,
    /// The lease history.
    pub(crate) writes: Vec<LeaseWrite>,
    /// Every broken promise found.
    pub(crate) problems: Vec<String>,
}

/// Judges a run: returns the figures and every problem found.
pub(crate) fn verify(ev: &Evidence<'_>) -> Figures {
    let mut problems: Vec<String> = Vec::new();
    let mut figures = Figures::default();

    // The truth: the data stream, which must hold exactly what the writer wrote.
    let mut per_item: BTreeMap<String, Vec<Label>> = BTreeMap::new();
    let mut written_records = Vec::new();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut version_of: HashMap<(String, SequenceNumber), u64> = HashMap::new();
    for r in &ev.data.records {
        let pk = stream_s(Some(&r.keys), "pk").unwrap_or_else(|| panic!("data record without pk: {r:?}"));
        let (image, kind) = match r.event {
            "INSERT" => (r.new.as_ref(), ChangeKind::Insert),
            "MODIFY" => (r.new.as_ref(), ChangeKind::Modify),
            _ => (r.old.as_ref(), ChangeKind::Remove),
        };
        let v = stream_n(image, "v").unwrap_or_else(|| panic!("data record without v: {r:?}"));
        per_item.entry(pk.clone()).or_default().push(Label { event: r.event, v });
        let version = versions.entry(pk.clone()).or_insert(0);
        *version += 1;
        version_of.insert((r.shard.clone(), r.seq.clone()), *version);
        written_records.push(SimRecord {
            sequence_number: r.seq.clone(),
            shard_id: ShardId::new(&r.shard),
            key: pk,
            kind,
            version: *version,
            created_at: SystemTime::now(),
        });
    }
    figures.written = ev.data.records.len();
    figures.shards = ev.data.shards.len();
    if per_item != ev.written.expected {
        let differ: Vec<&String> = ev
            .written
            .expected
            .keys()
            .chain(per_item.keys())
            .filter(|k| per_item.get(*k) != ev.written.expected.get(*k))
            .take(5)
            .collect();
        problems.push(format!("the stream does not hold exactly what was written; items that differ: {differ:?}"));
    }
    if ev.data.records.len() != ev.written.writes {
        problems.push(format!("{} writes, {} stream records", ev.written.writes, ev.data.records.len()));
    }
    let parents: Vec<(ShardId, Vec<ShardId>)> =
        ev.data.shards.iter().map(|s| (ShardId::new(&s.id), s.parent.iter().map(ShardId::new).collect())).collect();

    // The lease history.
    let clock = ClockMap::new(ev.clock, ev.ticks);
    let fallback = (ev.ticks.first().map_or(0, |t| t.sent), ev.ticks.last().map_or(u64::MAX, |t| t.returned));
    let (writes, lease_problems) = lease_history(ev.leases, &clock, fallback);
    problems.extend(lease_problems);
    figures.lease_writes = writes.len();
    figures.takes = writes.iter().filter(|w| w.op == LeaseOp::Take && !is_heartbeat(&w.key)).count();
    let events = lease_events(&writes, &ev.base);

    // The outputs. A record's delivery time is when its batch began: for a batch begun before
    // a SIGSTOP and rendered after SIGCONT, the time before the stop.
    let mut pause_takes: Vec<(String, String, u64, u64)> = Vec::new();
    let mut all_lines: Vec<(u64, usize, usize, LogEntry)> = Vec::new();
    let mut delivered_at: Vec<Vec<u64>> = Vec::new();
    for (fi, file) in ev.files.iter().enumerate() {
        let lines = read_lines(&file.path);
        // Lines of a batch begun before a stop and finished after SIGCONT count from the
        // batch's beginning (when the processor was called).
        let mut began: HashMap<usize, u64> = HashMap::new();
        for pause in &file.pauses {
            let runs = runs_after_stop(&lines, pause);
            for (i, b) in &runs {
                if let Some(b) = b {
                    began.insert(*i, *b);
                }
            }
            let outcome = judge_pause(file, &lines, pause, &runs, &writes, &mut problems);
            for shard in &outcome.taken {
                pause_takes.push((file.worker_id.clone(), shard.clone(), pause.stop_wall, pause.cont_wall));
            }
            figures.pauses.push(outcome);
        }
        let mut record_times = Vec::new();
        for (li, line) in lines.iter().enumerate() {
            let wall = began.get(&li).copied().unwrap_or(line.ts).min(line.ts);
            if matches!(line.kind, LineKind::Record { .. }) {
                record_times.push(wall);
            }
            let at = ev.base.at(wall);
            let worker = WorkerId::new(&line.worker);
            let shard_id = ShardId::new(&line.shard);
            let entry = match &line.kind {
                LineKind::Record { seq, pk, .. } => LogEntry::Delivery(Delivery {
                    worker,
                    shard_id,
                    sequence_number: seq.clone(),
                    key: pk.clone(),
                    version: version_of.get(&(line.shard.clone(), seq.clone())).copied(),
                    at,
                    outcome: DeliveryOutcome::Processed,
                    lane: 0,
                    finished: at,
                }),
                LineKind::Lifecycle { what, checkpoint } => {
                    let kind = match what.as_str() {
                        "initialize" => {
                            let cp = checkpoint.as_deref().unwrap_or("TRIM_HORIZON");
                            LifecycleKind::Initialized(
                                Checkpoint::parse_store_string(cp).unwrap_or_else(|e| panic!("checkpoint {cp}: {e}")),
                            )
                        }
                        "shard_ended" => LifecycleKind::ShardEnded,
                        "lease_lost" => LifecycleKind::LeaseLost,
                        "shutdown_requested" => LifecycleKind::ShutdownRequested,
                        other => panic!("{}: unknown lifecycle {other}", file.path.display()),
                    };
                    LogEntry::Lifecycle(LifecycleEvent { worker, shard_id, at, kind })
                }
            };
            all_lines.push((wall, fi, li, entry));
        }
        delivered_at.push(record_times);
    }
    all_lines.sort_by_key(|(wall, fi, li, _)| (*wall, *fi, *li));
    let log = DeliveryLog::new();
    log.extend(all_lines.into_iter().map(|(_, _, _, e)| e));

    // kcl-core's invariant checker, every rule.
    let observed = Observed {
        written: &written_records,
        trimmed: &[],
        log: &log,
        lease_history: &events,
        lease_duration: ev.lease_duration,
        parents: &parents,
        filtered: None,
    };
    let report = check(&observed);
    figures.checker = report.to_string();
    if !report.is_ok() {
        problems.push(format!("invariant checker: {report}"));
    }
    figures.lost = report.stats.lost;
    figures.processed = report.stats.delivered;
    figures.distinct = report.stats.distinct_delivered;
    figures.duplicates = report.stats.duplicates;

    // Duplicates: only in the uncheckpointed tail of a killed or dispossessed worker.
    let mut outputs = Outputs::default();
    for (fi, file) in ev.files.iter().enumerate() {
        let first = outputs.occurrences.len();
        if let Err(e) = outputs.read_file(&file.path, file.killed) {
            problems.push(e);
        }
        // The same complete record lines, in the same order: use the delivery times.
        let times = &delivered_at[fi];
        if outputs.occurrences.len() - first == times.len() {
            for (o, at) in outputs.occurrences[first..].iter_mut().zip(times) {
                o.ts = *at;
            }
        } else {
            problems.push(format!("{}: record lines read two ways disagree", file.path.display()));
        }
    }
    figures.tenures = outputs.tenures.len();
    let repeated = match check_duplicates(&outputs, MAX_BATCH) {
        Ok(d) => {
            figures.largest_tail = d.largest_tail;
            d.repeated
        }
        Err(e) => {
            problems.push(format!("duplicates: {e}"));
            Vec::new()
        }
    };
    // A tenure ended by a pause: its worker was stopped after its first record, the shard was
    // taken while it was stopped, and nothing of the tenure was rendered after SIGCONT.
    let paused_tenure = |t: usize| -> bool {
        let tenure = &outputs.tenures[t];
        let (Some(first), Some(last)) = (tenure.records.first(), tenure.records.last()) else { return false };
        let (from, to) = (outputs.occurrences[*first].ts, outputs.occurrences[*last].ts);
        pause_takes.iter().any(|(worker, shard, stop, cont)| {
            *worker == tenure.worker && *shard == tenure.shard && *stop >= from && to <= *cont
        })
    };
    for (i, _) in repeated.iter().enumerate().filter(|(_, r)| **r) {
        let t = outputs.occurrences[i].tenure;
        match outputs.tenures[t].end {
            TenureEnd::Killed => figures.dup_after_kill += 1,
            TenureEnd::LeaseLost if paused_tenure(t) => figures.dup_after_pause += 1,
            // check_duplicates repeats only lost tenures' deliveries.
            _ => figures.dup_after_lease_loss += 1,
        }
    }

    // A new owner starts right after the checkpoint: nothing checkpointed is delivered again.
    for file in ev.files {
        let mut start: HashMap<String, Option<SequenceNumber>> = HashMap::new();
        for line in read_lines(&file.path) {
            match &line.kind {
                LineKind::Lifecycle { what, checkpoint } if what == "initialize" => {
                    let cp = checkpoint.as_deref().and_then(|c| Checkpoint::parse_store_string(c).ok());
                    start.insert(line.shard.clone(), cp.and_then(|c| c.sequence_number().cloned()));
                }
                LineKind::Record { seq, .. } => {
                    if let Some(Some(cp)) = start.get(&line.shard)
                        && seq <= cp
                    {
                        problems.push(format!(
                            "{} delivered {seq} of {} although its tenure began at checkpoint {cp}",
                            file.worker_id, line.shard
                        ));
                    }
                }
                LineKind::Lifecycle { .. } => {}
            }
        }
    }

    // Only a worker that is gone, stopped or paused is judged dead by its peers.
    judge_liveness(ev, &writes, &mut figures, &mut problems);

    // The final lease table matches the stream and the last owners' processing.
    judge_final_table(ev, &outputs, &writes, &mut problems);

    figures.writes = writes;
    figures.problems = problems;
    figures
}

/// Panics with every problem, if any.
pub(crate) fn assert_no_problems(what: &str, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    let shown: Vec<&str> = problems.iter().take(40).map(String::as_str).collect();
    panic!("{what}: {} problems:\n  - {}", problems.len(), shown.join("\n  - "));
}
