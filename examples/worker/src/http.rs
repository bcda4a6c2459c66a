//! The worker process's HTTP endpoints, on axum:
//!
//! - `GET /metrics`: every metric of the worker's [`Registry`] in the Prometheus text format;
//! - `GET /healthz`: `200 ok` while the worker runs, `503` once it is stopping or stopped (a
//!   load balancer or ECS health check stops sending work to a draining task);
//! - `GET /status`: leases held and per-shard progress as JSON, for people and tests.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kcl_core::WorkerHandle;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
struct AppState {
    registry: Registry,
    stopping: CancellationToken,
    handle: WorkerHandle,
}

/// The routes. `stopping` is cancelled when the process begins its graceful shutdown.
pub fn router(registry: Registry, stopping: CancellationToken, handle: WorkerHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .with_state(AppState { registry, stopping, handle })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let encoder = TextEncoder::new();
    match encoder.encode_to_string(&state.registry.gather()) {
        Ok(body) => ([(header::CONTENT_TYPE, encoder.format_type().to_owned())], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {e}\n")).into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.handle.is_finished() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped\n")
    } else if state.stopping.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn status(State(state): State<AppState>) -> Response {
    let s = state.handle.status();
    let shards: serde_json::Map<String, Value> = s
        .shards
        .iter()
        .map(|(id, shard)| {
            let value = json!({
                "state": format!("{:?}", shard.state),
                "checkpoint": shard.checkpoint.as_ref().map(|c| c.to_store_string()),
                "last_processed": shard.last_processed.as_ref().map(|q| q.as_str().to_owned()),
                "lag_ms": shard.lag.map(millis),
                "records_processed": shard.records_processed,
                "trimmed_events": shard.trimmed_events,
                "stalled_for_ms": shard.stalled_for.map(millis),
                "last_error": shard.last_error,
            });
            (id.as_str().to_owned(), value)
        })
        .collect();
    let body = json!({
        "worker_id": s.worker_id.as_str(),
        "stopping": state.stopping.is_cancelled(),
        "leases_held": s.leases_held(),
        "records_processed": s.records_processed,
        "shards_ended": s.shards_ended,
        "trimmed_events": s.trimmed_events,
        "records_dead_lettered": s.records_dead_lettered,
        "records_skipped": s.records_skipped,
        "ended_without_children_ms": s
            .ended_without_children
            .iter()
            .map(|(id, ago)| (id.as_str().to_owned(), json!(millis(*ago))))
            .collect::<serde_json::Map<String, Value>>(),
        "shards": shards,
    });
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
