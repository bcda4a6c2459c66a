//! Amazon DynamoDB Local for tests (cargo feature `local-emulator`).
//!
//! [`DynamoDbLocal`] starts the emulator through the workspace's
//! `tools/dynamodb-local/run.sh 0 0` (which installs it first if needed) on free loopback
//! ports, and exposes its control hooks: [`DynamoDbLocal::rollover`] closes every open shard
//! of every stream (each gets one child) and [`DynamoDbLocal::dilate`] ages every stream event
//! (iterators issued before expire). It also builds SDK clients pointed at it.
//!
//! Use one emulator per test binary ([`DynamoDbLocal::shared`]) and a unique table per test
//! ([`unique_name`]). A rollover affects every stream in the emulator, so tests that must not
//! see shards close belong in a binary of their own.
//!
//! The emulator runs as a child process whose standard input is a pipe held by this process:
//! when the test process exits, for whatever reason, the pipe closes and the emulator exits
//! too. Two plain threads drain its output (its log goes to stderr; the last lines are kept
//! for error messages).
//!
//! ```no_run
//! # async fn demo() {
//! use kcl_adapter::local::{DynamoDbLocal, unique_name};
//!
//! let local = DynamoDbLocal::shared();
//! let table = unique_name("orders");
//! let stream_arn = local.create_stream_table(&table).await;
//! local.rollover().await.expect("rollover");
//! # let _ = stream_arn;
//! # }
//! ```

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long [`DynamoDbLocal::start`] waits for the `READY` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The region the clients are configured with (DynamoDB Local itself always says `ddblocal`).
pub const REGION: &str = "us-east-1";

/// Lines of the emulator's stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;

/// A running DynamoDB Local. Dropping it stops the emulator.
#[derive(Debug)]
pub struct DynamoDbLocal {
    port: u16,
    control_port: u16,
    child: Mutex<Child>,
    /// Held open: the launcher exits when it reaches EOF.
    _stdin: Mutex<ChildStdin>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// Why the emulator did not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "DynamoDB Local did not start: run .ci/install-emulators.sh; java 17 and npm are needed ({reason})\n\
     --- last lines of its stderr ---\n{stderr_tail}"
)]
pub struct StartError {
    reason: String,
    stderr_tail: String,
}

/// Unique names for tables: `prefix-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `tools/dynamodb-local/run.sh` of this workspace.
pub fn default_run_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("tools").join("dynamodb-local").join("run.sh")
}

impl DynamoDbLocal {
    /// The emulator shared by every test of this process, started on first use.
    ///
    /// # Panics
    /// When the emulator cannot start, with the reason, the fix and the tail of its stderr.
    /// Tests must fail loudly rather than skip.
    pub fn shared() -> &'static DynamoDbLocal {
        static SHARED: OnceLock<DynamoDbLocal> = OnceLock::new();
        SHARED.get_or_init(|| Self::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts a new emulator with [`default_run_script`].
    pub fn start() -> Result<Self, StartError> {
        Self::start_with_script(&default_run_script())
    }

    /// Starts a new emulator with the given `run.sh`, on free ports, and waits (up to
    /// [`START_TIMEOUT`]) until it prints `READY port=P control=C`.
    pub fn start_with_script(script: &Path) -> Result<Self, StartError> {
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let fail =
            |reason: String, tail: &Arc<Mutex<VecDeque<String>>>| StartError { reason, stderr_tail: render_tail(tail) };
        let mut child = Command::new("bash")
            .arg(script)
            .args(["0", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("could not run bash {}: {e}", script.display()), &stderr_tail))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(fail("the child's pipes were not set up".to_owned(), &stderr_tail));
        };

        let tail = Arc::clone(&stderr_tail);
        let _stderr_reader = std::thread::Builder::new().name("dynamodb-local-stderr".into()).spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let _stdout_reader = std::thread::Builder::new().name("dynamodb-local-stdout".into()).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // After READY nobody listens; keep draining so the child never blocks.
                let _ = lines_tx.send(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let ports = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(ports) = parse_ready(&line) {
                        break ports;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!("no READY line within {START_TIMEOUT:?}"), &stderr_tail));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    // Let the stderr reader catch up with the last lines.
                    std::thread::sleep(Duration::from_millis(200));
                    return Err(fail(format!("run.sh exited before READY ({status})"), &stderr_tail));
                }
            }
        };
        Ok(Self {
            port: ports.0,
            control_port: ports.1,
            child: Mutex::new(child),
            _stdin: Mutex::new(stdin),
            stderr_tail,
        })
    }

    /// The API port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The control port on 127.0.0.1.
    pub fn control_port(&self) -> u16 {
        self.control_port
    }

    /// The endpoint URL for both the DynamoDB and the Streams client (`AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last lines the emulator wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        render_tail(&self.stderr_tail)
    }

    /// A new DynamoDB client for the emulator: dummy credentials, region [`REGION`], latest
    /// behavior version. Build clients inside the runtime that uses them (each
    /// `#[tokio::test]` has its own): pooled connections belong to the runtime that made them.
    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("local", "local", None, None, "kcl-adapter-local"))
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// A new DynamoDB Streams client for the emulator; see [`DynamoDbLocal::dynamodb_client`].
    pub fn streams_client(&self) -> aws_sdk_dynamodbstreams::Client {
        use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("local", "local", None, None, "kcl-adapter-local"))
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_dynamodbstreams::Client::from_conf(config)
    }

    /// Closes every open shard of every stream in the emulator; each gets one child. The new
    /// shards are listed as soon as this returns.
    pub async fn rollover(&self) -> std::io::Result<()> {
        self.control("POST", "/rollover").await
    }

    /// Moves every stream time `by` into the past (at least 1 ms). Every iterator issued
    /// before expires; shards older than 4 h (dilated) roll over; records older than 24 h are
    /// trimmed.
    pub async fn dilate(&self, by: Duration) -> std::io::Result<()> {
        let ms = by.as_millis();
        if ms == 0 {
            return Err(std::io::Error::other("dilate needs at least 1 ms"));
        }
        self.control("POST", &format!("/dilate?ms={ms}")).await
    }

    /// Creates a table with a string hash key `pk`, on-demand, with a NEW_AND_OLD_IMAGES
    /// stream, and returns the stream's ARN.
    ///
    /// # Panics
    /// When the emulator refuses (a test helper: failing loudly is the point).
    pub async fn create_stream_table(&self, name: &str) -> String {
        let spec = StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::NewAndOldImages)
            .build()
            .unwrap_or_else(|e| panic!("stream specification: {e}"));
        let out = self.create_table(name, Some(spec)).await;
        out.and_then(|t| t.latest_stream_arn).unwrap_or_else(|| panic!("table {name} was created without a stream"))
    }

    /// Creates a table with a string hash key `pk`, on-demand, with the given stream
    /// specification (or none), and returns its description.
    ///
    /// # Panics
    /// When the emulator refuses.
    pub async fn create_table(
        &self,
        name: &str,
        stream: Option<StreamSpecification>,
    ) -> Option<aws_sdk_dynamodb::types::TableDescription> {
        let key = KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build();
        let attr = AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build();
        let (key, attr) = match (key, attr) {
            (Ok(k), Ok(a)) => (k, a),
            (k, a) => panic!("table definition: {k:?} {a:?}"),
        };
        self.dynamodb_client()
            .create_table()
            .table_name(name)
            .key_schema(key)
            .attribute_definitions(attr)
            .billing_mode(BillingMode::PayPerRequest)
            .set_stream_specification(stream)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("CreateTable {name} on DynamoDB Local: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e))
            })
            .table_description
    }

    /// One request to the control server; Ok on `200`.
    async fn control(&self, method: &str, path: &str) -> std::io::Result<()> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.control_port)).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.control_port
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let response = String::from_utf8_lossy(&response);
        let status_line = response.lines().next().unwrap_or("");
        if status_line.split_whitespace().nth(1) == Some("200") {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("DynamoDB Local control {method} {path} answered {response:?}")))
        }
    }
}

impl Drop for DynamoDbLocal {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Parses `READY port=P control=C`.
fn parse_ready(line: &str) -> Option<(u16, u16)> {
    let rest = line.trim().strip_prefix("READY ")?;
    let mut port = None;
    let mut control = None;
    for part in rest.split_whitespace() {
        if let Some(p) = part.strip_prefix("port=") {
            port = p.parse().ok();
        } else if let Some(c) = part.strip_prefix("control=") {
            control = c.parse().ok();
        }
    }
    Some((port?, control?))
}

/// The kept stderr lines as one string (also used by [`crate::local_sqs`]).
pub(crate) fn render_tail(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    if tail.is_empty() { "(nothing)".to_owned() } else { tail.iter().cloned().collect::<Vec<_>>().join("\n") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        assert_eq!(parse_ready("READY port=8000 control=8001"), Some((8000, 8001)));
        assert_eq!(parse_ready("READY port=1 control=x"), None);
        assert_eq!(parse_ready("Initializing DynamoDB Local"), None);
    }

    #[test]
    fn a_missing_script_fails_with_the_fix() {
        let err = match DynamoDbLocal::start_with_script(Path::new("/nonexistent/run.sh")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started from a missing script"),
        };
        assert!(err.contains("DynamoDB Local did not start: run .ci/install-emulators.sh"), "{err}");
        assert!(err.contains("exited before READY"), "{err}");
    }
}
