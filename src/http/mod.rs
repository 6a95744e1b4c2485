//! The HTTP listener of `ordo run` (SPEC §7): `/metrics`, `/healthz`, `/readyz`, the query API
//! ([`query`]) and the gateway ([`ingest`]). Every error is [`ApiError`] JSON.
//!
//! HTTP reads what the partition owners publish ([`crate::view`]) and appends through the
//! backend's [`Ingest`]; it never reaches into the owners themselves.

pub mod error;
pub mod ingest;
pub mod query;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

pub use error::{ApiError, MAX_BODY_BYTES};

use crate::core::partitioner::Partitioner;
use crate::core::{Partition, PartitionCount};
use crate::log::Ingest;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::view::Partitions;

/// What every handler reads: the backend's input, the published partitions, the metrics.
pub struct Served {
    pub ingest: Arc<dyn Ingest>,
    pub partitions: Arc<Partitions>,
    pub metrics: Arc<Metrics>,
}

/// [`Served`] behind one `Arc`: axum clones the state for every request.
#[derive(Clone)]
pub struct AppState(Arc<Served>);

impl AppState {
    /// State over what is served.
    pub fn new(served: Served) -> Self {
        AppState(Arc::new(served))
    }
}

impl std::ops::Deref for AppState {
    type Target = Served;

    fn deref(&self) -> &Served {
        &self.0
    }
}

impl Served {
    /// N of the deployment.
    pub fn count(&self) -> PartitionCount {
        self.ingest.partitions()
    }

    /// The partition of reservation `no`.
    pub fn partition_of(&self, no: &str) -> Partition {
        let partitioner: Partitioner = self.ingest.partitioner();
        partitioner.partition(no, self.count())
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // The SPEC route and the versioned one are the same query (`?after=&wait=` optional).
        .route("/reservations/{no}", get(query::reservation))
        .route("/v1/reservations", post(ingest::reservations))
        .route("/v1/associations", post(ingest::associations))
        .route("/v1/cancellations", post(ingest::cancellations))
        .route("/v1/reservations/{no}", get(query::reservation))
        .route("/v1/users/{id}", get(query::user))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, shutdown: Shutdown) {
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
    {
        tracing::error!(error = %e, "http server failed");
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(s): State<AppState>) -> Result<Response, ApiError> {
    let restoring = s.partitions.restoring();
    if restoring.is_empty() {
        Ok(
            axum::Json(json!({"status": "ready", "partitions": s.partitions.statuses.len()}))
                .into_response(),
        )
    } else {
        Err(ApiError::NotReady(format!(
            "partitions {restoring:?} are not restored yet"
        )))
    }
}
