//! Running `worker` processes in tests: spawning them against DynamoDB Local, finding their
//! metrics address, signalling them, and killing every one of them when a test ends, also on a
//! panic. The submodules: [`chaos`] (a fleet under faults and the verdict on it), [`leases`]
//! (who holds what, whether leases moved, the takes the workers logged), [`outputs`] (the jsonl
//! outputs), [`proxy`] (a loopback proxy that can cut a worker off and counts the operations
//! that pass, read by [`sniff`]) and [`iam`] (the IAM policy against those operations).

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub(crate) mod iam;
pub(crate) mod leases;
pub(crate) mod outputs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use kcl_adapter::local::{DynamoDbLocal, REGION};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// How long a worker may take to print its `METRICS` line.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts DynamoDB Local for this test binary, failing loudly (with the fix) when it cannot.
pub(crate) async fn start_emulator() -> DynamoDbLocal {
    match tokio::task::spawn_blocking(DynamoDbLocal::start).await {
        Ok(Ok(local)) => local,
        Ok(Err(e)) => panic!("{e}"),
        Err(e) => panic!("starting DynamoDB Local panicked: {e}"),
    }
}

/// The environment a worker needs to reach the emulator (dummy credentials).
pub(crate) fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "local".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "local".to_owned()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("RUST_LOG", "info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn".to_owned()),
    ]
}

/// Variables from the test's own environment that would change what a worker does.
const SCRUBBED: &[&str] = &[
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
    "ECS_TASK_ID",
    "ECS_CONTAINER_METADATA_URI_V4",
    "KCL_TABLE",
    "KCL_STREAM_ARN",
    "KCL_APPLICATION_NAME",
    "KCL_WORKER_ID",
    "KCL_ENDPOINT_URL",
    "KCL_REGION",
    "KCL_METRICS_ADDR",
    "KCL_LEASE_DURATION_MS",
    "KCL_SHUTDOWN_TIMEOUT_MS",
    "KCL_CREATE_LEASE_TABLE",
    "KCL_PROCESSOR",
    "KCL_OUTPUT",
    "KCL_FSYNC",
    "KCL_JSONL_DELAY_MS",
    "KCL_TARGET_TABLE",
    "KCL_EMF_INTERVAL_SECS",
];

/// The `worker` binary with the emulator's environment, stdout piped, stderr to `log`.
pub(crate) fn worker_command(endpoint: &str, args: &[String], log: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    for name in SCRUBBED {
        cmd.env_remove(name);
    }
    let stderr = std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    cmd.args(args)
        .envs(aws_env(endpoint))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true);
    cmd
}

/// What one `kcl-admin` run returned.
#[derive(Debug)]
pub(crate) struct AdminRun {
    /// Its exit code.
    pub(crate) code: Option<i32>,
    /// Its stdout (the report).
    pub(crate) stdout: String,
    /// Its stderr (errors).
    pub(crate) stderr: String,
}

/// Runs `kcl-admin --application-name app ARGS` against the emulator to its exit, with
/// `stdin` as its input; panics after two minutes.
pub(crate) async fn run_admin(endpoint: &str, app: &str, args: &[&str], stdin: &str) -> AdminRun {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kcl-admin"));
    for name in SCRUBBED {
        cmd.env_remove(name);
    }
    cmd.arg("--application-name")
        .arg(app)
        .args(args)
        .envs(aws_env(endpoint))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn kcl-admin: {e}"));
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes()).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await;
    let out = out.unwrap_or_else(|_| panic!("kcl-admin {args:?} did not exit")).unwrap_or_else(|e| panic!("{e}"));
    AdminRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One running `worker` process. Dropping it kills the process.
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    /// A short name for messages (`w1`).
    pub(crate) name: String,
    /// The worker id it was given (`--worker-id`).
    pub(crate) worker_id: String,
    /// Its process id.
    pub(crate) pid: u32,
    /// Where it serves `/metrics`, `/healthz` and `/status`.
    pub(crate) metrics: SocketAddr,
    /// Its stderr (the log).
    pub(crate) log: PathBuf,
    child: Child,
}

impl WorkerProcess {
    /// Spawns a worker and waits for its `METRICS http://ADDR` line. Panics with the log when
    /// the worker exits first or takes longer than [`START_TIMEOUT`].
    pub(crate) async fn spawn(name: &str, worker_id: &str, endpoint: &str, args: &[String], log: &Path) -> Self {
        Self::spawn_command(name, worker_id, worker_command(endpoint, args, log), log).await
    }

    /// [`WorkerProcess::spawn`] with a command made by [`worker_command`] and adjusted.
    pub(crate) async fn spawn_command(name: &str, worker_id: &str, mut command: Command, log: &Path) -> Self {
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", env!("CARGO_BIN_EXE_worker")));
        let pid = child.id().unwrap_or_else(|| panic!("worker {name} has no pid"));
        let Some(stdout) = child.stdout.take() else { panic!("worker {name}: stdout not piped") };
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.trim().strip_prefix("METRICS http://") {
                    return addr.parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await;
        let Ok(Some(metrics)) = found else {
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            panic!(
                "worker {name} did not print its METRICS line (exit: {status:?})\n--- its log ---\n{}",
                tail(log, 60)
            );
        };
        // Nothing else is printed on stdout, but keep draining it so the worker never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { name: name.to_owned(), worker_id: worker_id.to_owned(), pid, metrics, log: log.to_owned(), child }
    }

    /// Sends SIGTERM (with `kill(1)`: the workspace forbids `unsafe`, so no `libc::kill`).
    pub(crate) fn sigterm(&self) {
        let status = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "kill -TERM {} ({}) failed: {status:?}",
            self.pid,
            self.name
        );
    }

    /// Sends SIGINT (Ctrl-C).
    pub(crate) fn sigint(&self) {
        let status = std::process::Command::new("kill").args(["-INT", &self.pid.to_string()]).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "kill -INT {} ({}) failed: {status:?}",
            self.pid,
            self.name
        );
    }

    /// Sends SIGKILL.
    pub(crate) fn sigkill(&mut self) {
        self.child.start_kill().unwrap_or_else(|e| panic!("SIGKILL {}: {e}", self.name));
    }

    /// Waits for the process to exit, panicking with its log after `timeout`.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for {}: {e}", self.name),
            Err(_) => panic!("{} did not exit within {timeout:?}\n--- its log ---\n{}", self.name, tail(&self.log, 60)),
        }
    }

    /// The last `n` lines of its log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Already exited: nothing to do. `kill_on_drop` would do this too; be explicit.
        let _ = self.child.start_kill();
    }
}

/// The last `n` lines of a file.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Polls `check` every `every` until it returns `Some`, or panics with `what` after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}
pub(crate) mod chaos;
pub(crate) mod gaps;
pub(crate) mod proxy;
pub(crate) mod sniff;
