//! The `jsonl` processor: appends every record as one JSON line to a file, for tests and
//! debugging.
//!
//! Every shard of the process writes to one [`JsonlSink`]. A batch is written, flushed and
//! (by default, see [`JsonlOptions`]) `fsync`ed before its checkpoint, so a checkpointed
//! record is always on disk: after a crash, only the uncheckpointed tail is delivered again
//! (at-least-once).
//!
//! Record lines:
//! `{"worker":"w1","shard":"shardId-…","seq":"000…42","event":"MODIFY","keys":{"pk":"item-7"},"v":3,"old_v":2,"ts":1795571880123456789}`
//! — `v` and `old_v` are the new and old image's `v` attribute when present, `ts` the wall
//! clock in nanoseconds since the Unix epoch when the record was handled.
//!
//! Lifecycle lines mark each processor callback, so that a reader can tell which records a
//! worker handled under which lease:
//! `{"worker":"w1","shard":"shardId-…","lifecycle":"initialize","checkpoint":"TRIM_HORIZON","ts":…}`,
//! then `shard_ended`, `lease_lost` or `shutdown_requested`.
//!
//! With tumbling windows (`--tumbling-window-secs`), each record line also names its
//! window's start (`"window"`, ms since the epoch), the window's state counts its records,
//! and the end of each window is one line:
//! `{"worker":"w1","shard":"shardId-…","window_end":"elapsed","start":…,"end":…,"records":42,"terminated_early":false,"ts":…}`
//! (`window_end` is the reason: `elapsed`, `shard_ended` or `state_too_large`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kcl_adapter::{AttributeValue, ChangeRecord};
use kcl_core::{
    Batch, CheckpointError, Checkpointer, InitializeInput, ProcessorError, RecordProcessor, SequenceNumber, ShardId,
    WindowEnd, WindowState,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::Mutex;

/// How a [`JsonlSink`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonlOptions {
    /// Sync every batch to disk (`fdatasync`) before it is checkpointed. Default: true.
    pub fsync: bool,
    /// Wait this long after writing a batch, before checkpointing it: simulates a slow
    /// processor, so that a crash is likely to find written but uncheckpointed records (tests).
    /// Default: zero.
    pub delay_before_checkpoint: Duration,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        Self { fsync: true, delay_before_checkpoint: Duration::ZERO }
    }
}

/// One output file shared by every shard processor of a worker process.
#[derive(Debug)]
pub struct JsonlSink {
    worker: String,
    path: PathBuf,
    file: Mutex<BufWriter<tokio::fs::File>>,
    options: JsonlOptions,
}

impl JsonlSink {
    /// Opens `path` for appending (creating it), writing lines on behalf of `worker`.
    pub async fn open(path: &Path, worker: impl Into<String>, options: JsonlOptions) -> std::io::Result<Arc<Self>> {
        let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
        Ok(Arc::new(Self {
            worker: worker.into(),
            path: path.to_owned(),
            file: Mutex::new(BufWriter::with_capacity(256 * 1024, file)),
            options,
        }))
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A processor for `shard` writing to this sink.
    pub fn processor(self: &Arc<Self>, shard: &ShardId) -> JsonlProcessor {
        JsonlProcessor { sink: Arc::clone(self), shard: shard.clone(), written_up_to: None }
    }

    /// Appends whole lines, flushes, and syncs when asked to.
    async fn append(&self, lines: &[u8]) -> std::io::Result<()> {
        let mut file = self.file.lock().await;
        file.write_all(lines).await?;
        file.flush().await?;
        if self.options.fsync {
            file.get_ref().sync_data().await?;
        }
        Ok(())
    }

    async fn lifecycle(&self, shard: &ShardId, what: &str, checkpoint: Option<String>) -> std::io::Result<()> {
        let mut line = json!({ "worker": self.worker, "shard": shard.as_str(), "lifecycle": what, "ts": now_nanos() });
        if let (Some(cp), Some(obj)) = (checkpoint, line.as_object_mut()) {
            obj.insert("checkpoint".to_owned(), Value::String(cp));
        }
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        self.append(&bytes).await
    }
}

/// Writes one shard's records to a [`JsonlSink`] and checkpoints after every batch.
#[derive(Debug)]
pub struct JsonlProcessor {
    sink: Arc<JsonlSink>,
    shard: ShardId,
    /// The last record already on disk: a batch retried after a failed checkpoint is not
    /// written twice.
    written_up_to: Option<SequenceNumber>,
}

impl JsonlProcessor {
    /// Appends the batch's records not written yet (a retried batch is not written twice),
    /// each line naming its lane, its batch's size and, with windows, its window's start.
    async fn write_batch(
        &mut self,
        batch: &Batch<ChangeRecord>,
        window_start: Option<u64>,
    ) -> Result<(), ProcessorError> {
        let mut lines = Vec::with_capacity(batch.records.len() * 200);
        let mut last = None;
        for record in &batch.records {
            if self.written_up_to.as_ref().is_some_and(|done| record.sequence_number() <= done) {
                continue;
            }
            let mut line = record_line(&self.sink.worker, &batch.shard_id, record);
            if let Value::Object(fields) = &mut line {
                // Which lane delivered it, and in a batch of how many (for tests of the
                // in-shard controls).
                fields.insert("lane".to_owned(), Value::from(batch.lane));
                fields.insert("batch".to_owned(), Value::from(batch.records.len()));
                if let Some(start) = window_start {
                    fields.insert("window".to_owned(), Value::from(start));
                }
            }
            // Writing a `Value` to a Vec cannot fail: no I/O, and every map key is a string.
            if let Err(e) = serde_json::to_writer(&mut lines, &line) {
                return Err(ProcessorError::new(format!("cannot render record as JSON: {e}")));
            }
            lines.push(b'\n');
            last = Some(record.sequence_number().clone());
        }
        if !lines.is_empty() {
            self.sink.append(&lines).await.map_err(|e| write_error(&self.sink, e))?;
            self.written_up_to = last;
            if !self.sink.options.delay_before_checkpoint.is_zero() {
                tokio::time::sleep(self.sink.options.delay_before_checkpoint).await;
            }
        }
        Ok(())
    }

    async fn note(&self, what: &str) {
        if let Err(e) = self.sink.lifecycle(&self.shard, what, None).await {
            tracing::warn!(shard = %self.shard, error = %e, path = %self.sink.path.display(), "cannot write {what} line");
        }
    }
}

impl RecordProcessor<ChangeRecord> for JsonlProcessor {
    async fn initialize(&mut self, input: &InitializeInput) -> Result<(), ProcessorError> {
        self.sink
            .lifecycle(&self.shard, "initialize", Some(input.checkpoint.to_store_string()))
            .await
            .map_err(|e| write_error(&self.sink, e))
    }

    async fn process_records(
        &mut self,
        batch: &Batch<ChangeRecord>,
        checkpointer: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.write_batch(batch, None).await?;
        checkpoint(checkpointer, &self.shard).await
    }

    /// Under `--tumbling-window-secs`: writes the batch (each line names its window's start)
    /// and counts its records into the window's state, `{"records": n}`. The worker stores
    /// the state with the checkpoint after the call.
    async fn process_window(
        &mut self,
        batch: &Batch<ChangeRecord>,
        window: &WindowState,
    ) -> Result<Vec<u8>, ProcessorError> {
        let count = window_count(&window.state)?;
        self.write_batch(batch, Some(millis(window.start))).await?;
        // Every record of the batch counts, also those a retry did not write again.
        let state = json!({ "records": count + batch.records.len() as u64 });
        Ok(state.to_string().into_bytes())
    }

    /// Writes the window's total as one line:
    /// `{"worker":…,"shard":…,"window_end":"elapsed","start":…,"end":…,"records":n,"terminated_early":false,"ts":…}`.
    async fn window_ended(&mut self, end: &WindowEnd) -> Result<(), ProcessorError> {
        let line = json!({
            "worker": self.sink.worker,
            "shard": self.shard.as_str(),
            "window_end": end.reason.as_str(),
            "start": millis(end.window.start),
            "end": millis(end.window.end),
            "records": window_count(&end.window.state)?,
            "terminated_early": end.terminated_early,
            "ts": now_nanos(),
        });
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        self.sink.append(&bytes).await.map_err(|e| write_error(&self.sink, e))
    }

    async fn shard_ended(&mut self, _checkpointer: &impl Checkpointer) {
        self.note("shard_ended").await;
    }

    async fn lease_lost(&mut self) {
        self.note("lease_lost").await;
    }

    /// Every written batch was checkpointed already, and the worker checkpoints the last
    /// delivered record after this returns in any case: only the line is written.
    async fn shutdown_requested(&mut self, _checkpointer: &impl Checkpointer) {
        self.note("shutdown_requested").await;
    }
}

/// Checkpoints at the last delivered record. A lost lease is not an error of the processor:
/// the worker stops the shard on its own.
pub(crate) async fn checkpoint(checkpointer: &impl Checkpointer, shard: &ShardId) -> Result<(), ProcessorError> {
    match checkpointer.checkpoint().await {
        Ok(()) => Ok(()),
        Err(CheckpointError::LeaseLost { .. }) => {
            tracing::info!(shard = %shard, "lease lost before the checkpoint; the next owner repeats this batch");
            Ok(())
        }
        Err(e) => Err(ProcessorError::new(format!("checkpoint of shard {shard} failed")).with_source(e)),
    }
}

/// The record count a window's state holds (`{"records": n}`; empty for a new window).
fn window_count(state: &[u8]) -> Result<u64, ProcessorError> {
    if state.is_empty() {
        return Ok(0);
    }
    let value: Value = serde_json::from_slice(state)
        .map_err(|e| ProcessorError::new(format!("window state is not the JSON this processor writes: {e}")))?;
    value["records"].as_u64().ok_or_else(|| ProcessorError::new(format!("window state has no record count: {value}")))
}

/// Milliseconds since the Unix epoch (0 before it).
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn write_error(sink: &JsonlSink, e: std::io::Error) -> ProcessorError {
    ProcessorError::new(format!("cannot append to {}", sink.path.display())).with_source(e)
}

/// The JSON line for one record (without the newline).
pub fn record_line(worker: &str, shard: &ShardId, record: &ChangeRecord) -> Value {
    let mut line = Map::new();
    line.insert("worker".to_owned(), Value::from(worker));
    line.insert("shard".to_owned(), Value::from(shard.as_str()));
    line.insert("seq".to_owned(), Value::from(record.sequence_number().as_str()));
    line.insert("event".to_owned(), Value::from(record.event_name().as_str()));
    line.insert("keys".to_owned(), item_to_json(record.keys()));
    if let Some(v) = record.new_image().and_then(|image| image.get("v")) {
        line.insert("v".to_owned(), attribute_to_json(v));
    }
    if let Some(v) = record.old_image().and_then(|image| image.get("v")) {
        line.insert("old_v".to_owned(), attribute_to_json(v));
    }
    line.insert("ts".to_owned(), Value::from(now_nanos()));
    Value::Object(line)
}

/// An item as a JSON object; see [`attribute_to_json`].
pub fn item_to_json(item: &std::collections::HashMap<String, AttributeValue>) -> Value {
    let mut names: Vec<&String> = item.keys().collect();
    names.sort();
    Value::Object(names.into_iter().map(|name| (name.clone(), attribute_to_json(&item[name]))).collect())
}

/// A DynamoDB attribute as plain JSON: strings as strings, numbers as JSON numbers when they
/// fit an `i64`, `u64` or finite `f64` exactly enough (else as strings), binary as lowercase hex,
/// sets and lists as arrays, maps as objects, NULL as `null`.
pub fn attribute_to_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => Value::from(s.as_str()),
        AttributeValue::N(n) => number_to_json(n),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::B(b) => Value::from(hex(b.as_ref())),
        AttributeValue::Ss(ss) => Value::Array(ss.iter().map(|s| Value::from(s.as_str())).collect()),
        AttributeValue::Ns(ns) => Value::Array(ns.iter().map(|n| number_to_json(n)).collect()),
        AttributeValue::Bs(bs) => Value::Array(bs.iter().map(|b| Value::from(hex(b.as_ref()))).collect()),
        AttributeValue::L(l) => Value::Array(l.iter().map(attribute_to_json).collect()),
        AttributeValue::M(m) => item_to_json(m),
        // A type newer than this SDK.
        _ => Value::Null,
    }
}

fn number_to_json(n: &str) -> Value {
    if let Ok(i) = n.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = n.parse::<u64>() {
        return Value::from(u);
    }
    // DynamoDB numbers have up to 38 digits: keep the exact text when a float would round.
    match n.parse::<f64>() {
        Ok(f) if f.is_finite() && n.len() <= 15 => Value::from(f),
        _ => Value::from(n),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Wall-clock nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcl_adapter::EventName;

    fn item(pairs: &[(&str, AttributeValue)]) -> std::collections::HashMap<String, AttributeValue> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn renders_attributes() {
        let cases = [
            (AttributeValue::S("x".into()), json!("x")),
            (AttributeValue::N("42".into()), json!(42)),
            (AttributeValue::N("-1.5".into()), json!(-1.5)),
            (AttributeValue::N("12345678901234567890123".into()), json!("12345678901234567890123")),
            (AttributeValue::Bool(true), json!(true)),
            (AttributeValue::Null(true), Value::Null),
            (AttributeValue::Ss(vec!["a".into(), "b".into()]), json!(["a", "b"])),
            (AttributeValue::M(item(&[("n", AttributeValue::N("1".into()))])), json!({"n": 1})),
        ];
        for (value, want) in cases {
            assert_eq!(attribute_to_json(&value), want, "{value:?}");
        }
    }

    #[test]
    fn record_line_has_the_documented_fields() {
        let seq = SequenceNumber::parse("000000000000000000042").unwrap_or_else(|e| panic!("{e}"));
        let keys = item(&[("pk", AttributeValue::S("item-1".into()))]);
        let record = ChangeRecord::new("e1", EventName::Modify, keys.clone(), seq)
            .with_new_image(item(&[("pk", AttributeValue::S("item-1".into())), ("v", AttributeValue::N("3".into()))]))
            .with_old_image(item(&[("pk", AttributeValue::S("item-1".into())), ("v", AttributeValue::N("2".into()))]));
        let line = record_line("w1", &ShardId::new("shardId-1"), &record);
        assert_eq!(line["worker"], "w1");
        assert_eq!(line["shard"], "shardId-1");
        assert_eq!(line["seq"], "000000000000000000042");
        assert_eq!(line["event"], "MODIFY");
        assert_eq!(line["keys"], json!({"pk": "item-1"}));
        assert_eq!(line["v"], 3);
        assert_eq!(line["old_v"], 2);
        assert!(line["ts"].as_u64().is_some_and(|ts| ts > 0));
    }
}
