//! moto server, for SQS in tests (cargo feature `local-emulator`): DynamoDB Local has no SQS.
//!
//! [`MotoServer`] runs `tools/moto/run.py` (moto's own server, bound to 127.0.0.1 on a free
//! port) with the Python of the project-local virtual environment `.emulators/moto-venv`,
//! which `tools/moto/install.sh` (called by `.ci/install-emulators.sh`) creates; when that
//! environment is missing, [`MotoServer::start`] runs the install script first. It also builds
//! SQS clients pointed at the server.
//!
//! Use one server per test binary ([`MotoServer::shared`]) and a unique queue per test
//! ([`unique_name`](crate::local::unique_name)).
//!
//! As with [`DynamoDbLocal`](crate::local::DynamoDbLocal), the server's standard input is a
//! pipe held by this process: when the test process exits, for whatever reason, the pipe
//! closes and the server exits too. A plain thread drains its request log (stderr; the last
//! lines are kept for error messages).
//!
//! ```no_run
//! # async fn demo() {
//! use kcl_adapter::local::unique_name;
//! use kcl_adapter::local_sqs::MotoServer;
//!
//! let moto = MotoServer::shared();
//! let queue_url = moto.create_queue(&unique_name("dead-letters")).await;
//! let sqs = moto.sqs_client();
//! # let _ = (queue_url, sqs);
//! # }
//! ```

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::local::{REGION, render_tail};

/// How long [`MotoServer::start`] waits for the `READY` line (after any install).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of the server's stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;

/// A running moto server. Dropping it stops the server.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    child: Mutex<Child>,
    /// Held open: the server exits when it reaches EOF.
    _stdin: Mutex<ChildStdin>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "moto server did not start: run .ci/install-emulators.sh; python3 (3.9+) with venv is needed ({reason})\n\
     --- last lines of its stderr ---\n{stderr_tail}"
)]
pub struct MotoStartError {
    reason: String,
    stderr_tail: String,
}

/// `<repo>/.emulators/moto-venv`, or `$EMULATORS_DIR/moto-venv`.
pub fn default_venv() -> PathBuf {
    let emulators =
        std::env::var_os("EMULATORS_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join(".emulators"));
    emulators.join("moto-venv")
}

/// `tools/moto/` of this workspace (`install.sh`, `run.py`).
pub fn tools_dir() -> PathBuf {
    workspace_root().join("tools").join("moto")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl MotoServer {
    /// The server shared by every test of this process, started on first use.
    ///
    /// # Panics
    /// When the server cannot start, with the reason, the fix and the tail of its stderr.
    /// Tests must fail loudly rather than skip.
    pub fn shared() -> &'static MotoServer {
        static SHARED: OnceLock<MotoServer> = OnceLock::new();
        SHARED.get_or_init(|| Self::start().unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts a new server from [`default_venv`], installing it with `tools/moto/install.sh`
    /// first when the environment is missing.
    pub fn start() -> Result<Self, MotoStartError> {
        let venv = default_venv();
        let python = venv.join("bin").join("python");
        if !python.exists() {
            install().map_err(|reason| MotoStartError { reason, stderr_tail: "(not started)".to_owned() })?;
        }
        Self::start_with(&python, &tools_dir().join("run.py"))
    }

    /// Starts `python script 0` (a `run.py`) and waits (up to [`START_TIMEOUT`]) until it
    /// prints `READY port=P`.
    pub fn start_with(python: &Path, script: &Path) -> Result<Self, MotoStartError> {
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let fail = |reason: String, tail: &Arc<Mutex<VecDeque<String>>>| MotoStartError {
            reason,
            stderr_tail: render_tail(tail),
        };
        let mut child = Command::new(python)
            .arg(script)
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("could not run {} {}: {e}", python.display(), script.display()), &stderr_tail))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(fail("the child's pipes were not set up".to_owned(), &stderr_tail));
        };

        let tail = Arc::clone(&stderr_tail);
        let _stderr_reader = std::thread::Builder::new().name("moto-stderr".into()).spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let _stdout_reader = std::thread::Builder::new().name("moto-stdout".into()).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = parse_ready(&line) {
                        break port;
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
                    return Err(fail(format!("{} exited before READY ({status})", script.display()), &stderr_tail));
                }
            }
        };
        Ok(Self { port, child: Mutex::new(child), _stdin: Mutex::new(stdin), stderr_tail })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint URL for SQS clients.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last lines the server wrote to stderr (its request log).
    pub fn stderr_tail(&self) -> String {
        render_tail(&self.stderr_tail)
    }

    /// A new SQS client for the server: dummy credentials, region [`REGION`], latest behavior
    /// version. Build clients inside the runtime that uses them.
    pub fn sqs_client(&self) -> aws_sdk_sqs::Client {
        use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new("local", "local", None, None, "kcl-adapter-local"))
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// Creates a standard queue (a FIFO queue when `name` ends in `.fifo`) and returns its URL.
    ///
    /// # Panics
    /// When the server refuses (a test helper: failing loudly is the point).
    pub async fn create_queue(&self, name: &str) -> String {
        let mut create = self.sqs_client().create_queue().queue_name(name);
        if name.ends_with(".fifo") {
            create = create.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
        }
        let out = create
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateQueue {name} on moto: {}", aws_sdk_sqs::error::DisplayErrorContext(e)));
        out.queue_url.unwrap_or_else(|| panic!("CreateQueue {name} on moto returned no queue URL"))
    }
}

impl MotoServer {
    /// Receives every message waiting in a queue (hidden from other receivers for 5 minutes)
    /// and returns their bodies; stops at the first empty receive.
    ///
    /// # Panics
    /// When the server refuses (a test helper: failing loudly is the point).
    pub async fn receive_all(&self, queue_url: &str) -> Vec<String> {
        let sqs = self.sqs_client();
        let mut bodies = Vec::new();
        loop {
            let received = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(300)
                .send()
                .await
                .unwrap_or_else(|e| panic!("ReceiveMessage on moto: {}", aws_sdk_sqs::error::DisplayErrorContext(e)));
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                return bodies;
            }
            bodies.extend(messages.into_iter().map(|m| m.body.unwrap_or_default()));
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Runs `tools/moto/install.sh`; its output goes to this process's stderr.
fn install() -> Result<(), String> {
    let script = tools_dir().join("install.sh");
    let status = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("could not run bash {}: {e}", script.display()))?;
    if status.success() { Ok(()) } else { Err(format!("{} failed ({status})", script.display())) }
}

/// Parses `READY port=P`.
fn parse_ready(line: &str) -> Option<u16> {
    line.trim().strip_prefix("READY port=")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        assert_eq!(parse_ready("READY port=5000"), Some(5000));
        assert_eq!(parse_ready("READY port=x"), None);
        assert_eq!(parse_ready(" * Running on http://127.0.0.1:5000"), None);
    }

    #[test]
    fn a_missing_script_fails_with_the_fix() {
        let err = match MotoServer::start_with(Path::new("/nonexistent/python"), Path::new("run.py")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started from a missing interpreter"),
        };
        assert!(err.contains("moto server did not start: run .ci/install-emulators.sh"), "{err}");
        assert!(err.contains("/nonexistent/python"), "{err}");
    }
}
