//! The HTTP endpoint (SPEC §7): `/metrics`, `/healthz`, `/readyz`, `GET /reservations/{no}`, and
//! the gateway and query API of [`crate::gateway`].
//! Errors are JSON: `{"error": "<code>", "message": "<text>"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::changelog::StateRecord;
use crate::gateway;
use crate::processor::Shared;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

impl AppState {
    /// State over the process's partitions.
    pub fn new(shared: Shared) -> Self {
        AppState {
            shared: Arc::new(shared),
        }
    }

    /// The process's partitions.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }
}

/// A JSON error response.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // The SPEC route and the versioned one are the same query (`?after=&wait=` optional).
        .route("/reservations/{no}", get(gateway::reservation))
        .route("/v1/reservations", post(gateway::reservations))
        .route("/v1/associations", post(gateway::associations))
        .route("/v1/cancellations", post(gateway::cancellations))
        .route("/v1/reservations/{no}", get(gateway::reservation))
        .route("/v1/users/{id}", get(gateway::user))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(gateway::MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves until `stop` is set.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, stop: Arc<AtomicBool>) {
    let shutdown = async move {
        while !stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "http server failed");
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.shared.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    let restoring: Vec<usize> = s
        .shared
        .statuses
        .iter()
        .enumerate()
        .filter(|(_, st)| st.owned.load(Ordering::Acquire) && !st.ready.load(Ordering::Acquire))
        .map(|(p, _)| p)
        .collect();
    if restoring.is_empty() {
        axum::Json(json!({"status": "ready", "partitions": s.shared.statuses.len()}))
            .into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("partitions {restoring:?} are not restored yet"),
        )
    }
}

/// The state record of `no`: from its partition's view when this process owns the partition,
/// else from the partition's changelog (another member owns it).
pub async fn lookup(shared: &Shared, no: &str) -> Result<Option<StateRecord>, Response> {
    let p = shared
        .log
        .partitioner()
        .partition(no, shared.log.partitions());
    if shared.statuses[p.0 as usize].owned.load(Ordering::Acquire) {
        let view = &shared.views[p.0 as usize];
        return Ok(view
            .get(no)
            .map(|r| StateRecord::new(r.key().clone(), p, r.value())));
    }
    Ok(remote_state(shared, p)
        .await?
        .and_then(|mut s| s.records.remove(no)))
}

/// A partition's state from its changelog, off the async threads.
pub async fn remote_state(
    shared: &Shared,
    p: crate::partitioner::Partition,
) -> Result<Option<crate::log::RemoteState>, Response> {
    let log = shared.log.clone();
    match tokio::task::spawn_blocking(move || log.remote_state(p)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "log_unavailable",
            e.to_string(),
        )),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        )),
    }
}
