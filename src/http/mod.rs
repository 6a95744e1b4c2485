//! The HTTP listener of `ordo run` (contract §7): `/metrics`, `/healthz`, `/readyz`, the query API
//! ([`query`]) and the gateway ([`ingest`]). Every error is [`ApiError`] JSON.
//!
//! HTTP reads what the partition owners publish ([`crate::view`]) and appends through the
//! backend's [`Ingest`]; it never reaches into the owners themselves.

pub mod auth;
pub mod error;
pub mod forward;
mod history;
pub mod ingest;
pub mod query;
mod rounds;
mod state;
pub mod status;
mod wire;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

pub use error::{ApiError, MAX_BODY_BYTES};
pub use forward::Forwarder;
pub use rounds::Rounds;
pub use state::{AppState, Route, Served};

use crate::shutdown::Shutdown;

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(status::page))
        .route("/v1/status", get(status::status))
        .route("/v1/partition/{key}", get(status::partition))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // The contract's route and the versioned one are the same query (`?after=&wait=` optional).
        .route("/reservations/{no}", get(query::reservation))
        .route("/v1/reservations", post(ingest::reservations))
        .route("/v1/associations", post(ingest::associations))
        .route("/v1/cancellations", post(ingest::cancellations))
        .route("/v1/reservations/{no}", get(query::reservation))
        .route("/v1/users/{id}", get(query::user))
        .route("/v1/outcomes/{token}", get(query::outcome))
        .route("/v1/owners", get(owners))
        .route("/v1/internal/users/{id}", get(query::user_partitions))
        .route("/v1/internal/applied", get(query::applied))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(limit_length))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .with_state(state)
}

/// How long a client may take to send a request's headers; a slow or stalled one is
/// disconnected.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long shutdown waits for in-flight requests (long polls answer at once on shutdown).
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves until `shutdown`, then drains: the listener closes, idle connections are closed,
/// requests in flight finish (a long poll answers `503 shutting_down`), bounded by
/// [`DRAIN_LIMIT`].
pub async fn serve(listener: tokio::net::TcpListener, state: AppState, shutdown: Shutdown) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    tokio::spawn(history::sample(state.clone()));
    let app = router(state);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let io = wire::JsonErrors::new(TokioIo::new(stream));
        let connection = graceful.watch(http1.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            limit_s = DRAIN_LIMIT.as_secs(),
            "http requests still in flight at exit"
        );
    }
}

/// How long a client has to send a request's body once its headers are in.
pub const BODY_READ_TIMEOUT: std::time::Duration = HEADER_READ_TIMEOUT;

/// A request whose `Content-Length` is over the limit is answered `413` at once, before its
/// body is read; a body is read whole within [`BODY_READ_TIMEOUT`] (else `408`), so a client
/// sending a byte now and then cannot hold a connection and its task for ever.
async fn limit_length(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::TooLarge.into_response();
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let e = e.into_inner();
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return ApiError::TooLarge.into_response();
            }
            return ApiError::BadBody(e).into_response();
        }
        Err(_) => return ApiError::BodyTimeout.into_response(),
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Times every routed request by its route template and status.
async fn track(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = Instant::now();
    let _in_flight = InFlight::enter(
        s.metrics
            .http_in_flight
            .with_label_values(&[route.as_str()]),
    );
    let response = next.run(request).await;
    s.metrics
        .http_requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// One request counted in `ordo_http_requests_in_flight` until dropped, however the request
/// ends (a client that goes away included).
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(gauge: prometheus::IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /v1/owners`: who serves each partition, as this member knows it.
async fn owners(State(s): State<AppState>) -> Response {
    let table = s.owners_table();
    axum::Json(json!({"member": s.member, "url": s.advertise, "partitions": table})).into_response()
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
    status::readiness(&s).map_err(ApiError::NotReady)?;
    Ok(
        axum::Json(json!({"status": "ready", "partitions": s.partitions.statuses.len()}))
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Partition, PartitionCount};
    use crate::log::embedded::{EmbeddedLog, OpenOptions};
    use crate::metrics::Metrics;
    use crate::view::Partitions;
    use std::sync::Arc;

    /// A partition whose owner failed makes the member unready at once, naming the partition.
    #[tokio::test]
    async fn a_failed_owner_makes_the_member_unready() {
        let dir = tempfile::tempdir().unwrap();
        let n = PartitionCount::new(2).unwrap();
        let log = EmbeddedLog::open(
            dir.path(),
            OpenOptions {
                partitions: Some(n),
                create: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        // The embedded log's statuses: every partition this process's before any owner runs,
        // so the listener is not ready until each has restored.
        let partitions = Arc::new(Partitions::owned(n));
        let state = AppState::new(Served {
            ingest: Arc::new(log),
            partitions: partitions.clone(),
            metrics: Arc::new(Metrics::fresh()),
            member: "test".into(),
            advertise: None,
            forwarder: None,
            shutdown: Shutdown::new(),
            about: status::About::new("embedded", None),
            token: None,
            input_ends: Default::default(),
        });
        let err = readyz(State(state.clone())).await.unwrap_err();
        assert_eq!(
            err.into_response().status(),
            503,
            "ready before any restore"
        );
        for p in n.iter() {
            partitions
                .status(p)
                .set_ready(crate::core::Epoch(1), crate::core::Offset(0));
        }
        let ready = readyz(State(state.clone())).await.unwrap();
        assert_eq!(ready.status(), 200);
        partitions.status(Partition(0)).set_stalled(true);
        let err = readyz(State(state.clone())).await.unwrap_err();
        assert!(
            err.to_string().contains("[0] cannot make progress"),
            "{err}"
        );
        partitions.status(Partition(0)).set_stalled(false);
        assert_eq!(readyz(State(state.clone())).await.unwrap().status(), 200);
        partitions.status(Partition(1)).set_failed("test".into());
        let err = readyz(State(state)).await.unwrap_err();
        assert!(err.to_string().contains("[1]"), "{err}");
        assert_eq!(err.into_response().status(), 503);
    }
}
