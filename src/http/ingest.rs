//! The gateway (served by `ordo run` on its HTTP listener):
//!
//! * `POST /v1/reservations`, `/v1/associations`, `/v1/cancellations`: the contract's fields without
//!   `type`; `event_id` from the body or an `Idempotency-Key` header. The event is validated
//!   exactly as the processor validates it, appended at its contract partition, and answered `202`
//!   with `{"partition", "offset", "token"}`. A retry of an applied event is answered `200` with
//!   `"duplicate": true`; appending it again could never apply it twice either.
//! * An association without `reservation_no` is routed through the user's open reservation,
//!   looked up in the index the partition owners derive from the changelog, after every
//!   partition has applied what was appended before the request.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::{ApiError, BadJson};
use super::query::{Token, local_record, user_records};
use super::state::{AppState, Route, Served};
use crate::core::changelog::StateRecord;
use crate::core::event::{Event, EventKind};
use crate::core::record::NewRecord;
use crate::core::state_machine::Status;
use crate::core::{Offset, Partition};
use crate::log::now_millis;

/// How long an association without `reservation_no` waits for earlier appends to be applied.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// `POST /v1/reservations`.
pub async fn reservations(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ingest(&s, EventKind::Reservation, headers, body?).await
}

/// `POST /v1/associations`.
pub async fn associations(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ingest(&s, EventKind::Association, headers, body?).await
}

/// `POST /v1/cancellations`.
pub async fn cancellations(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ingest(&s, EventKind::Cancellation, headers, body?).await
}

/// A body's top-level object, refusing a field given twice (as `ordo produce` does: with the
/// last one silently winning, a client and ordo could read different events).
struct Fields(Map<String, Value>);

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Fields, A::Error> {
                let mut m = Map::new();
                while let Some((k, v)) = a.next_entry::<String, Value>()? {
                    if m.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate field `{k}`")));
                    }
                    m.insert(k, v);
                }
                Ok(Fields(m))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The body as the event's fields: `type` from the route, `event_id` from the body or the
/// `Idempotency-Key` header.
fn fields(
    kind: EventKind,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, Value>, ApiError> {
    let mut fields: Map<String, Value> = match serde_json::from_slice::<Fields>(body) {
        Ok(Fields(m)) => m,
        // Valid JSON of another type than an object.
        Err(e) if e.is_data() && !e.to_string().starts_with("duplicate field") => {
            return Err(ApiError::InvalidJson(BadJson::NotAnObject));
        }
        Err(e) => {
            return Err(ApiError::InvalidJson(BadJson::Syntax(e)));
        }
    };
    if fields.contains_key("type") {
        return Err(ApiError::InvalidField(
            "`type` is set by the route; remove it from the body".into(),
        ));
    }
    fields.insert("type".into(), Value::from(kind.as_str()));
    if !fields.contains_key("event_id")
        && let Some(key) = headers.get("idempotency-key")
    {
        let key = key
            .to_str()
            .map_err(|_| ApiError::InvalidField("Idempotency-Key is not visible ASCII".into()))?;
        fields.insert("event_id".into(), Value::from(key));
    }
    if !fields.contains_key("event_id") {
        return Err(ApiError::MissingField(
            "missing `event_id`: put it in the body or an Idempotency-Key header".into(),
        ));
    }
    Ok(fields)
}

async fn ingest(
    s: &AppState,
    kind: EventKind,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut fields = fields(kind, &headers, &body)?;
    // The reservation an association by user was routed to, as the lookup found it.
    let mut found = None;
    if kind == EventKind::Association && !fields.contains_key("reservation_no") {
        let user = match fields.get("user_id") {
            Some(Value::String(u)) if !u.is_empty() => u.clone(),
            _ => {
                return Err(ApiError::MissingField(
                    "missing required field `user_id`".into(),
                ));
            }
        };
        let event_id = fields
            .get("event_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let record = open_reservation(s, &user, &event_id).await?;
        fields.insert(
            "reservation_no".into(),
            Value::from(record.reservation_no.as_str()),
        );
        found = Some(record);
    }
    let raw = serde_json::to_vec(&fields).expect("a JSON map serialises");
    let event = Event::decode(&raw)?;
    let partition = s.partition_of(event.reservation_no.as_str());
    // A retry of an event already applied: answer as a duplicate, append nothing. The lookup
    // of an association by user has just read the state it needs.
    let entry = match found {
        Some(record) => Some(record),
        None => current(s, partition, event.reservation_no.as_str()).await,
    };
    if let Some(entry) = entry
        && entry.applied_event_ids.contains(&event.event_id)
    {
        let token = Token {
            partition,
            offset: entry.source_offset,
        };
        return Ok((
            StatusCode::OK,
            axum::Json(json!({
                "duplicate": true, "partition": partition.0, "offset": entry.source_offset,
                "token": token.encode(),
            })),
        )
            .into_response());
    }
    let record = NewRecord {
        key: event.reservation_no.as_str().as_bytes().to_vec(),
        value: event.to_json().into_bytes(),
        timestamp: now_millis(),
        headers: Vec::new(),
    };
    let offset = s
        .ingest
        .clone()
        .append_event(partition, record)
        .await
        .map_err(ApiError::AppendFailed)?;
    let token = Token { partition, offset };
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "partition": partition.0, "offset": offset, "token": token.encode(),
            "reservation_no": event.reservation_no, "event_id": event.event_id,
        })),
    )
        .into_response())
}

/// The current state of `no`, for the duplicate check: from this member's view, or asked of
/// the owner. Best effort: without an answer the event is appended, and the processor treats a
/// repeat as the duplicate it is.
async fn current(s: &Served, p: Partition, no: &str) -> Option<StateRecord> {
    match s.route(p, false).ok()? {
        Route::Local => local_record(s, p, no),
        Route::Forward(url) => {
            let path = format!("/v1/reservations/{}", super::query::encode(no));
            let answer = s
                .forwarder
                .as_ref()?
                .get(&s.metrics, p, &url, &path, super::forward::ANSWER_GRACE)
                .await
                .ok()?;
            answer
                .status
                .is_success()
                .then(|| serde_json::from_slice(&answer.body).ok())
                .flatten()
        }
    }
}

/// Where the input of every partition ends, read after this call began (in a round shared
/// with the lookups waiting at the same time).
async fn input_ends(s: &Served) -> Result<Vec<Offset>, ApiError> {
    s.input_ends
        .get(|| async {
            let ingest = s.ingest.clone();
            match tokio::task::spawn_blocking(move || ingest.input_ends()).await {
                Ok(ends) => ends.map_err(std::sync::Arc::new),
                Err(stopped) => Err(std::sync::Arc::new(stopped.into())),
            }
        })
        .await
        .map_err(|e| ApiError::LogUnavailable(crate::log::LogsError::Shared(e)))
}

/// The user's one open (`reserved`) reservation, after everything appended before this call
/// has been applied, asked of the owners of every partition; or, for a retry, the reservation
/// that already applied `event_id`.
async fn open_reservation(s: &Served, user: &str, event_id: &str) -> Result<StateRecord, ApiError> {
    // Refuse early, before waiting on any partition, while some partition has no owner.
    for p in s.count().iter() {
        s.route(p, false)?;
    }
    let t0 = std::time::Instant::now();
    let ends = input_ends(s).await?;
    let t1 = std::time::Instant::now();
    let records = user_records(s, user, &ends, LOOKUP_WAIT, false).await?;
    tracing::debug!(
        ends_ms = (t1 - t0).as_secs_f64() * 1e3,
        owners_ms = t1.elapsed().as_secs_f64() * 1e3,
        "association lookup"
    );
    let (mut applied, mut open) = (None, Vec::new());
    for r in records {
        if applied.is_none() && r.applied_event_ids.iter().any(|id| id == event_id) {
            applied = Some(r);
        } else if r.state == Status::Reserved {
            open.push(r);
        }
    }
    if let Some(r) = applied {
        return Ok(r);
    }
    match open.len() {
        1 => Ok(open.swap_remove(0)),
        0 => Err(ApiError::NoReservation(format!(
            "user {user} has no open reservation; pass reservation_no"
        ))),
        many => Err(ApiError::Ambiguous(format!(
            "user {user} has {many} open reservations; pass reservation_no"
        ))),
    }
}
