//! Small helpers every benchmark binary uses: its error type, settings from the environment,
//! wall-clock stamps and logging to stderr.

use std::time::{SystemTime, UNIX_EPOCH};

/// The benchmarks' error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A whole number from the environment variable `name`, or `default` when it is unset.
pub fn env_u64(name: &str, default: u64) -> Result<u64, BoxError> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|e| format!("{name}={v:?} is not a whole number: {e}").into()),
        Err(_) => Ok(default),
    }
}

/// `t` in nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// Logs to stderr, `warn` and above unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn".parse().unwrap_or_default()),
        )
        .with_writer(std::io::stderr)
        .init();
}
