//! The query API: `GET /v1/reservations/{no}` (also `/reservations/{no}`) and
//! `GET /v1/users/{id}`, answered from the partition owners' views. With
//! `?after=<token>&wait=<ms>` a query is answered once the token's partition has applied the
//! token's offset (read-your-writes), `504` if the wait runs out.
//!
//! A partition this member does not own (Kafka, several members) is read from its changelog.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::core::changelog::StateRecord;
use crate::core::{Offset, Partition};
use crate::log::RemoteState;

/// Default and largest `wait` of a query, in milliseconds.
pub const DEFAULT_WAIT_MS: u64 = 1_000;
/// See [`DEFAULT_WAIT_MS`].
pub const MAX_WAIT_MS: u64 = 30_000;

/// A position in one partition: "every offset up to here is applied".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub partition: Partition,
    pub offset: Offset,
}

impl Token {
    /// The token as text: `<partition>.<offset>`.
    pub fn encode(self) -> String {
        format!("{}.{}", self.partition, self.offset)
    }

    /// Parses `<partition>.<offset>`; an offset that could never be waited for (the last
    /// `u64`, whose successor does not exist) is not a token.
    pub fn parse(s: &str) -> Option<Token> {
        let (p, o) = s.split_once('.')?;
        let offset = Offset(o.parse().ok()?);
        offset.next()?;
        Some(Token {
            partition: Partition(p.parse().ok()?),
            offset,
        })
    }
}

/// The state record of `no`: from its partition's view when this process owns the partition,
/// else from the partition's changelog (another member owns it).
pub async fn lookup(s: &AppState, no: &str) -> Result<Option<StateRecord>, ApiError> {
    let p = s.partition_of(no);
    if s.partitions.status(p).is_owned() {
        return Ok(s
            .partitions
            .view(p)
            .get(no)
            .map(|r| StateRecord::new(r.key().clone(), p, r.value())));
    }
    Ok(remote_state(s, p)
        .await?
        .and_then(|mut state| state.records.remove(no)))
}

/// A partition's state from its changelog, off the async threads.
pub async fn remote_state(s: &AppState, p: Partition) -> Result<Option<RemoteState>, ApiError> {
    let ingest = s.ingest.clone();
    match tokio::task::spawn_blocking(move || ingest.remote_state(p)).await {
        Ok(result) => result.map_err(ApiError::LogUnavailable),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// The state records of `user`: from the owner-maintained index for the partitions this
/// process owns, and from the changelog of every other partition.
pub async fn user_records(s: &AppState, user: &str) -> Result<Vec<StateRecord>, ApiError> {
    let mut records = Vec::new();
    let local: Vec<String> = s
        .partitions
        .users
        .get(user)
        .map(|list| list.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    for no in local {
        let p = s.partition_of(&no);
        if s.partitions.status(p).is_owned()
            && let Some(r) = lookup(s, &no).await?
        {
            records.push(r);
        }
    }
    for p in s.count().iter() {
        if s.partitions.status(p).is_owned() {
            continue;
        }
        if let Some(state) = remote_state(s, p).await? {
            records.extend(state.records.into_values().filter(|r| r.user_id == user));
        }
    }
    records.sort_by(|a, b| a.reservation_no.cmp(&b.reservation_no));
    Ok(records)
}

/// Waits until `partition` has applied every offset below `until`; false on timeout. A
/// partition owned here is followed through its owner's position; another member's, through
/// its changelog.
pub async fn wait_applied(
    s: &AppState,
    partition: Partition,
    until: Offset,
    limit: Duration,
) -> bool {
    let status = s.partitions.status(partition);
    if status.is_owned() {
        let mut rx = status.subscribe();
        return tokio::time::timeout(limit, rx.wait_for(|position| *position >= until))
            .await
            .is_ok_and(|r| r.is_ok());
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match remote_state(s, partition).await {
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

async fn read_after(s: &AppState, params: &ReadParams) -> Result<(), ApiError> {
    let Some(after) = &params.after else {
        return Ok(());
    };
    let token = Token::parse(after)
        .filter(|t| s.count().contains(t.partition))
        .ok_or_else(|| {
            ApiError::InvalidToken(format!(
                "`after={after}` is not a token from this deployment (`<partition>.<offset>`)"
            ))
        })?;
    let wait = Duration::from_millis(params.wait.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    let until = token
        .offset
        .next()
        .expect("Token::parse checks the successor");
    if wait_applied(s, token.partition, until, wait).await {
        Ok(())
    } else {
        Err(ApiError::Timeout(format!(
            "partition {} has not applied offset {} within {} ms",
            token.partition,
            token.offset,
            wait.as_millis()
        )))
    }
}

/// `GET /v1/reservations/{no}`.
pub async fn reservation(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(no) = path?;
    let Query(params) = params?;
    read_after(&s, &params).await?;
    match lookup(&s, &no).await? {
        Some(record) => Ok(axum::Json(record).into_response()),
        None => Err(ApiError::NotFound(format!("no reservation {no}"))),
    }
}

/// `GET /v1/users/{id}`.
pub async fn user(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let Query(params) = params?;
    read_after(&s, &params).await?;
    let records = user_records(&s, &id).await?;
    if records.is_empty() {
        return Err(ApiError::NotFound(format!("no reservations for user {id}")));
    }
    Ok(axum::Json(json!({"user_id": id, "reservations": records})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = Token {
            partition: Partition(3),
            offset: Offset(17),
        };
        assert_eq!(Token::parse(&t.encode()), Some(t));
        for bad in [
            "",
            "3",
            "3.",
            ".4",
            "a.b",
            "-1.2",
            "1.2.3",
            "0.18446744073709551615",
            "0.18446744073709551616",
        ] {
            assert_eq!(Token::parse(bad), None, "{bad}");
        }
    }
}
