//! The gateway and query API (served by `ordo run` on its HTTP listener):
//!
//! * `POST /v1/reservations`, `/v1/associations`, `/v1/cancellations`: the SPEC fields without
//!   `type`; `event_id` from the body or an `Idempotency-Key` header. The event is validated
//!   exactly as the processor validates it, appended at its SPEC partition, and answered `202`
//!   with `{"partition", "offset", "token"}`. A retry of an applied event is answered `200` with
//!   `"duplicate": true`; appending it again could never apply it twice either.
//! * An association without `reservation_no` is routed through the user's open reservation,
//!   looked up in the index the partition owners derive from the changelog, after every
//!   partition has applied what was appended before the request.
//! * `GET /v1/reservations/{no}?after=<token>&wait=<ms>` and `GET /v1/users/{id}`: answered once
//!   the token's partition has applied the token's offset (read-your-writes), `504` if the
//!   wait runs out.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::changelog::StateRecord;
use crate::event::{Event, EventKind};
use crate::http::{AppState, error, lookup, remote_state};
use crate::log::{NewRecord, now_millis};
use crate::partitioner::Partition;
use crate::processor::Shared;
use crate::state_machine::Status;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Default and largest `wait` of a query, in milliseconds.
pub const DEFAULT_WAIT_MS: u64 = 1_000;
/// See [`DEFAULT_WAIT_MS`].
pub const MAX_WAIT_MS: u64 = 30_000;
/// How long an association without `reservation_no` waits for earlier appends to be applied.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// A position in one partition: "every offset up to here is applied".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub partition: Partition,
    pub offset: u64,
}

impl Token {
    /// The token as text: `<partition>.<offset>`.
    pub fn encode(self) -> String {
        format!("{}.{}", self.partition, self.offset)
    }

    /// Parses `<partition>.<offset>`.
    pub fn parse(s: &str) -> Option<Token> {
        let (p, o) = s.split_once('.')?;
        Some(Token {
            partition: Partition(p.parse().ok()?),
            offset: o.parse().ok()?,
        })
    }
}

/// `POST /v1/reservations`.
pub async fn reservations(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    ingest(s.shared(), EventKind::Reservation, headers, body).await
}

/// `POST /v1/associations`.
pub async fn associations(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    ingest(s.shared(), EventKind::Association, headers, body).await
}

/// `POST /v1/cancellations`.
pub async fn cancellations(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    ingest(s.shared(), EventKind::Cancellation, headers, body).await
}

fn bad_request(code: &str, message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, code, message)
}

async fn ingest(
    shared: &Shared,
    kind: EventKind,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body over {MAX_BODY_BYTES} bytes; send one event per request"),
            );
        }
        Err(e) => return bad_request("bad_body", e.body_text()),
    };
    let mut fields: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return bad_request("invalid_json", "the body must be a JSON object"),
        Err(e) => return bad_request("invalid_json", format!("the body is not valid JSON: {e}")),
    };
    if fields.contains_key("type") {
        return bad_request(
            "invalid_field",
            "`type` is set by the route; remove it from the body",
        );
    }
    fields.insert("type".into(), Value::from(kind.as_str()));
    if !fields.contains_key("event_id")
        && let Some(key) = headers.get("idempotency-key")
    {
        match key.to_str() {
            Ok(k) => {
                fields.insert("event_id".into(), Value::from(k));
            }
            Err(_) => return bad_request("invalid_field", "Idempotency-Key is not visible ASCII"),
        }
    }
    if !fields.contains_key("event_id") {
        return bad_request(
            "missing_field",
            "missing `event_id`: put it in the body or an Idempotency-Key header",
        );
    }
    if kind == EventKind::Association && !fields.contains_key("reservation_no") {
        let user = match fields.get("user_id") {
            Some(Value::String(u)) if !u.is_empty() => u.clone(),
            _ => {
                return bad_request("missing_field", "missing required field `user_id`");
            }
        };
        let event_id = fields
            .get("event_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match open_reservation(shared, &user, &event_id).await {
            Ok(no) => {
                fields.insert("reservation_no".into(), Value::from(no));
            }
            Err(r) => return r,
        }
    }
    let raw = serde_json::to_vec(&fields).expect("a JSON map serialises");
    let event = match Event::decode(&raw) {
        Ok(e) => e,
        Err(m) => return bad_request("invalid_event", m.to_string()),
    };
    let partition = shared
        .log
        .partitioner()
        .partition(event.reservation_no.as_str(), shared.log.partitions());
    // A retry of an event already applied: answer as a duplicate, append nothing.
    let current = match lookup(shared, event.reservation_no.as_str()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(entry) = current
        && entry.applied_event_ids.contains(&event.event_id)
    {
        let token = Token {
            partition,
            offset: entry.source_offset,
        };
        return (
            StatusCode::OK,
            axum::Json(json!({
                "duplicate": true, "partition": partition.0, "offset": entry.source_offset,
                "token": token.encode(),
            })),
        )
            .into_response();
    }
    let record = NewRecord {
        key: event.reservation_no.as_str().as_bytes().to_vec(),
        value: event.to_json().into_bytes(),
        timestamp: event.ts.unwrap_or_else(now_millis),
        headers: Vec::new(),
    };
    let log = shared.log.clone();
    let appended = tokio::task::spawn_blocking(move || log.append_event(partition, record)).await;
    match appended {
        Ok(Ok(offset)) => {
            let token = Token { partition, offset };
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({
                    "partition": partition.0, "offset": offset, "token": token.encode(),
                    "reservation_no": event.reservation_no, "event_id": event.event_id,
                })),
            )
                .into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "append_failed",
            e.to_string(),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// The user's one open (`reserved`) reservation, after everything appended before this call
/// has been applied; or, for a retry, the reservation that already applied `event_id`.
async fn open_reservation(shared: &Shared, user: &str, event_id: &str) -> Result<String, Response> {
    let mut waits = Vec::new();
    for p in shared.log.partitions().iter() {
        let end = shared.log.input_end(p).map_err(|e| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                e.to_string(),
            )
        })?;
        waits.push((p, end));
    }
    for (p, end) in waits {
        if !wait_applied(shared, p, end, LOOKUP_WAIT).await {
            return Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("partition {p} did not catch up within {LOOKUP_WAIT:?}; retry"),
            ));
        }
    }
    let records = user_records(shared, user).await?;
    if let Some(r) = records
        .iter()
        .find(|r| r.applied_event_ids.iter().any(|id| id == event_id))
    {
        return Ok(r.reservation_no.to_string());
    }
    let open: Vec<String> = records
        .into_iter()
        .filter(|r| r.state == Status::Reserved)
        .map(|r| r.reservation_no.to_string())
        .collect();
    match open.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(error(
            StatusCode::NOT_FOUND,
            "no_reservation",
            format!("user {user} has no open reservation; pass reservation_no"),
        )),
        many => Err(error(
            StatusCode::CONFLICT,
            "ambiguous",
            format!(
                "user {user} has {} open reservations; pass reservation_no",
                many.len()
            ),
        )),
    }
}

/// The state records of `user`: from the owner-maintained index for the partitions this
/// process owns, and from the changelog of every other partition.
async fn user_records(shared: &Shared, user: &str) -> Result<Vec<StateRecord>, Response> {
    let mut records = Vec::new();
    let local: Vec<String> = shared
        .users
        .get(user)
        .map(|list| list.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    for no in local {
        let p = shared
            .log
            .partitioner()
            .partition(&no, shared.log.partitions());
        if shared.statuses[p.0 as usize].owned.load(Ordering::Acquire)
            && let Some(r) = lookup(shared, &no).await?
        {
            records.push(r);
        }
    }
    for p in shared.log.partitions().iter() {
        if shared.statuses[p.0 as usize].owned.load(Ordering::Acquire) {
            continue;
        }
        if let Some(state) = remote_state(shared, p).await? {
            records.extend(state.records.into_values().filter(|r| r.user_id == user));
        }
    }
    records.sort_by(|a, b| a.reservation_no.cmp(&b.reservation_no));
    Ok(records)
}

/// Waits until `partition` has applied every offset below `until`; false on timeout. A
/// partition owned here is followed through its owner's position; another member's, through
/// its changelog.
async fn wait_applied(shared: &Shared, partition: Partition, until: u64, limit: Duration) -> bool {
    let status = &shared.statuses[partition.0 as usize];
    if status.owned.load(Ordering::Acquire) {
        let mut rx = status.subscribe();
        return tokio::time::timeout(limit, rx.wait_for(|position| *position >= until))
            .await
            .is_ok_and(|r| r.is_ok());
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match remote_state(shared, partition).await {
            Ok(Some(state)) if state.applied >= until => return true,
            Ok(None) => return false,
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Query parameters of the read endpoints.
#[derive(Debug, Deserialize)]
pub struct ReadParams {
    after: Option<String>,
    wait: Option<u64>,
}

async fn read_after(shared: &Shared, params: &ReadParams) -> Result<(), Response> {
    let Some(after) = &params.after else {
        return Ok(());
    };
    let token = Token::parse(after)
        .filter(|t| t.partition.0 < shared.log.partitions().get())
        .ok_or_else(|| {
            bad_request(
                "invalid_token",
                format!(
                    "`after={after}` is not a token from this deployment (`<partition>.<offset>`)"
                ),
            )
        })?;
    let wait = Duration::from_millis(params.wait.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    if wait_applied(shared, token.partition, token.offset + 1, wait).await {
        Ok(())
    } else {
        Err(error(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "partition {} has not applied offset {} within {} ms",
                token.partition,
                token.offset,
                wait.as_millis()
            ),
        ))
    }
}

/// `GET /v1/reservations/{no}`.
pub async fn reservation(
    State(s): State<AppState>,
    Path(no): Path<String>,
    Query(params): Query<ReadParams>,
) -> Response {
    if let Err(r) = read_after(s.shared(), &params).await {
        return r;
    }
    match lookup(s.shared(), &no).await {
        Err(r) => r,
        Ok(Some(record)) => axum::Json(record).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no reservation {no}"),
        ),
    }
}

/// `GET /v1/users/{id}`.
pub async fn user(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<ReadParams>,
) -> Response {
    if let Err(r) = read_after(s.shared(), &params).await {
        return r;
    }
    let records = match user_records(s.shared(), &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if records.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no reservations for user {id}"),
        );
    }
    axum::Json(json!({"user_id": id, "reservations": records})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = Token {
            partition: Partition(3),
            offset: 17,
        };
        assert_eq!(Token::parse(&t.encode()), Some(t));
        for bad in ["", "3", "3.", ".4", "a.b", "-1.2", "1.2.3"] {
            assert_eq!(Token::parse(bad), None, "{bad}");
        }
    }
}
