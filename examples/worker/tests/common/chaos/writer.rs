//! The tables a run creates, the clock that dates lease writes, and the writer of changes.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(crate) fn stream_spec(view: StreamViewType) -> StreamSpecification {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(view)
        .build()
        .unwrap_or_else(|e| panic!("stream specification: {e}"))
}

/// Creates the lease table (`leaseKey`, as the workers would) with a NEW_AND_OLD_IMAGES
/// stream, and returns the stream's ARN.
pub(crate) async fn create_lease_table(local: &DynamoDbLocal, name: &str) -> String {
    let key = KeySchemaElement::builder().attribute_name("leaseKey").key_type(KeyType::Hash).build();
    let attr = AttributeDefinition::builder().attribute_name("leaseKey").attribute_type(ScalarAttributeType::S).build();
    let (key, attr) = match (key, attr) {
        (Ok(k), Ok(a)) => (k, a),
        (k, a) => panic!("lease table definition: {k:?} {a:?}"),
    };
    let out = local
        .dynamodb_client()
        .create_table()
        .table_name(name)
        .key_schema(key)
        .attribute_definitions(attr)
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(stream_spec(StreamViewType::NewAndOldImages))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {name}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)));
    out.table_description
        .and_then(|t| t.latest_stream_arn)
        .unwrap_or_else(|| panic!("lease table {name} was created without a stream"))
}

/// Creates the clock table (NEW_IMAGE stream) and returns the stream's ARN.
pub(crate) async fn create_clock_table(local: &DynamoDbLocal, name: &str) -> String {
    local
        .create_table(name, Some(stream_spec(StreamViewType::NewImage)))
        .await
        .and_then(|t| t.latest_stream_arn)
        .unwrap_or_else(|| panic!("clock table {name} was created without a stream"))
}

/// What a run records for its verdict: the application's lease table (with the stream that
/// gives the lease history) and the clock that dates the lease writes, already ticking.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) app: String,
    pub(crate) lease_arn: String,
    pub(crate) clock_arn: String,
    pub(crate) clock: Clock,
}

/// Creates the lease table of a new application (`{prefix}-app-…`) and a clock table, and
/// starts the clock.
pub(crate) async fn start_recording(local: &DynamoDbLocal, prefix: &str) -> Recorder {
    let app = kcl_adapter::local::unique_name(&format!("{prefix}-app"));
    let lease_arn = create_lease_table(local, &app).await;
    let clock_table = kcl_adapter::local::unique_name(&format!("{prefix}-clock"));
    let clock_arn = create_clock_table(local, &clock_table).await;
    let clock = Clock::start(local.dynamodb_client(), clock_table);
    Recorder { app, lease_arn, clock_arn, clock }
}

// ---------------------------------------------------------------------------------------------
// Clock

/// One tick: when its write was sent and when it returned (wall ns).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tick {
    pub(crate) sent: u64,
    pub(crate) returned: u64,
}

/// Writes `{pk: "tick", n}` to the clock table every [`TICK`], one write at a time.
#[derive(Debug)]
pub(crate) struct Clock {
    pub(crate) stop: CancellationToken,
    pub(crate) handle: JoinHandle<Vec<Tick>>,
}

impl Clock {
    pub(crate) fn start(client: aws_sdk_dynamodb::Client, table: String) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            let mut ticks = Vec::new();
            let mut errors = 0;
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !token.is_cancelled() {
                every.tick().await;
                let sent = wall_nanos();
                let n = ticks.len();
                let put = client
                    .put_item()
                    .table_name(&table)
                    .item("pk", AttributeValue::S("tick".to_owned()))
                    .item("n", AttributeValue::N(n.to_string()))
                    .send()
                    .await;
                // A failed tick may still have been applied: it happened between these times
                // either way. (After a failed test the emulator is gone: stop quietly.)
                ticks.push(Tick { sent, returned: wall_nanos() });
                if put.is_err() {
                    errors += 1;
                    if errors > 50 {
                        break;
                    }
                }
            }
            ticks
        });
        Self { stop, handle }
    }

    /// Stops ticking and returns every tick.
    pub(crate) async fn stop(self) -> Vec<Tick> {
        self.stop.cancel();
        self.handle.await.unwrap_or_else(|e| panic!("clock task: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Writer

/// What the writer wrote: per item, the changes a processor must see, in order.
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub(crate) expected: BTreeMap<String, Vec<Label>>,
    pub(crate) writes: usize,
    /// When each change's write was sent (wall ns): its stream record exists no earlier.
    pub(crate) sent_at: HashMap<(String, Label), u64>,
}

impl Written {
    /// Every (item, change) pair.
    pub(crate) fn wanted(&self) -> HashSet<(String, Label)> {
        self.expected.iter().flat_map(|(pk, labels)| labels.iter().map(move |l| (pk.clone(), l.clone()))).collect()
    }

    /// Adds what another writer (of another table, with its own item keys) wrote.
    pub(crate) fn merge(&mut self, other: Written) {
        self.writes += other.writes;
        self.expected.extend(other.expected);
        self.sent_at.extend(other.sent_at);
    }
}

/// Writes continuously at a steady rate until stopped: a random item of the pool gets its next
/// change. An absent item is (re-)inserted with the next version; a present one is updated to
/// the next version, or (one time in six) deleted. Versions never repeat within an item.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) stop: CancellationToken,
    pub(crate) handle: JoinHandle<Written>,
    pub(crate) count: Arc<AtomicUsize>,
}

impl Writer {
    pub(crate) fn start(
        client: aws_sdk_dynamodb::Client,
        table: String,
        seed: u64,
        per_second: u32,
        items: usize,
    ) -> Self {
        Self::start_prefixed(client, table, String::new(), seed, per_second, items)
    }

    /// [`Writer::start`] with item keys `{prefix}item-NNNN`, so that writers of several
    /// tables never share an item.
    pub(crate) fn start_prefixed(
        client: aws_sdk_dynamodb::Client,
        table: String,
        prefix: String,
        seed: u64,
        per_second: u32,
        items: usize,
    ) -> Self {
        let stop = CancellationToken::new();
        let count = Arc::new(AtomicUsize::new(0));
        let (token, done) = (stop.clone(), count.clone());
        let handle = tokio::spawn(async move {
            use aws_sdk_dynamodb::error::DisplayErrorContext;
            let mut rng = SmallRng::seed_from_u64(seed ^ 0x5772_6974_6572);
            // Per item: the current version if present, and the last version used.
            let mut state: Vec<(Option<i64>, i64)> = vec![(None, 0); items];
            let mut written = Written::default();
            let start = Instant::now();
            let interval = Duration::from_secs(1) / per_second;
            for n in 0u32.. {
                tokio::select! {
                    _ = tokio::time::sleep_until(start + interval * n) => {}
                    _ = token.cancelled() => break,
                }
                let i = rng.random_range(0..items);
                let pk = format!("{prefix}item-{i:04}");
                let (present, last) = state[i];
                let delete = present.is_some() && rng.random_range(0..6) == 0;
                let sent = wall_nanos();
                let (result, label, next) = if delete {
                    let old = present.unwrap_or(last);
                    let r = client
                        .delete_item()
                        .table_name(&table)
                        .key("pk", AttributeValue::S(pk.clone()))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| DisplayErrorContext(e).to_string());
                    (r, Label { event: "REMOVE", v: old }, (None, last))
                } else {
                    let v = last + 1;
                    let r = client
                        .put_item()
                        .table_name(&table)
                        .item("pk", AttributeValue::S(pk.clone()))
                        .item("v", AttributeValue::N(v.to_string()))
                        .item("payload", AttributeValue::S(format!("{pk} version {v}")))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| DisplayErrorContext(e).to_string());
                    let event = if present.is_some() { "MODIFY" } else { "INSERT" };
                    (r, Label { event, v }, (Some(v), v))
                };
                result.unwrap_or_else(|e| panic!("write {n} ({pk} {label:?}): {e}"));
                state[i] = next;
                written.sent_at.insert((pk.clone(), label.clone()), sent);
                written.expected.entry(pk).or_default().push(label);
                written.writes += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            written
        });
        Self { stop, handle, count }
    }

    /// Writes done so far.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Stops after the write in progress and returns what was written.
    pub(crate) async fn stop(self) -> Written {
        self.stop.cancel();
        self.handle.await.unwrap_or_else(|e| panic!("writer task: {e}"))
    }
}
