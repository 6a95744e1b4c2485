//! The query API: `GET /v1/reservations/{no}` (also `/reservations/{no}`) and
//! `GET /v1/users/{id}`, answered from the partition owners' views. With
//! `?after=<token>&wait=<ms>` a query is answered once the token's partition has applied the
//! token's offset (read-your-writes), `504` if the wait runs out.
//!
//! `GET /v1/outcomes/{token}` says what became of an event a `202` accepted: applied, or
//! dead-lettered and why.
//!
//! A query for a partition another member owns is forwarded to it in one hop; a query about a
//! user asks the owners of every partition (this member's own first), each for its partitions,
//! after each has applied what it is asked to have applied. No request reads a changelog.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, Unreachable};
use super::forward::{ANSWER_GRACE, SERVED_BY, is_forwarded};
use super::state::{AppState, Route, Served};
use crate::core::changelog::StateRecord;
use crate::core::{Offset, Partition};
use crate::view::Outcome;

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

/// The state record of `no` in partition `p`, which this member owns.
pub fn local_record(s: &Served, p: Partition, no: &str) -> Option<StateRecord> {
    s.partitions
        .view(p)
        .get(no)
        .map(|r| StateRecord::new(r.key().clone(), p, r.value()))
}

/// Waits until `partition`, owned here, is ready and has applied every offset below `until`:
/// `504 timeout` after `limit`, `503 shutting_down` at once when the member begins to stop.
pub async fn wait_applied(
    s: &Served,
    partition: Partition,
    until: Offset,
    limit: Duration,
) -> Result<(), ApiError> {
    let mut rx = s.partitions.status(partition).subscribe();
    let applied = rx.wait_for(|a| a.ready && a.position >= until);
    tokio::select! {
        r = tokio::time::timeout(limit, applied) => match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ApiError::ShuttingDown),
            Err(_) => Err(ApiError::Timeout(format!(
                "partition {partition} has not applied offset {} within {} ms",
                until.0.saturating_sub(1),
                limit.as_millis()
            ))),
        },
        () = s.shutdown.wait() => Err(ApiError::ShuttingDown),
    }
}

/// Query parameters of the read endpoints.
#[derive(Debug, Deserialize)]
pub struct ReadParams {
    after: Option<String>,
    wait: Option<u64>,
}

impl ReadParams {
    fn wait(&self) -> Duration {
        Duration::from_millis(self.wait.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS))
    }

    fn token(&self, s: &Served) -> Result<Option<Token>, ApiError> {
        let Some(after) = &self.after else {
            return Ok(None);
        };
        Token::parse(after)
            .filter(|t| s.count().contains(t.partition))
            .map(Some)
            .ok_or_else(|| {
                ApiError::InvalidToken(format!(
                    "`after={after}` is not a token from this deployment (`<partition>.<offset>`)"
                ))
            })
    }
}

fn served_by(s: &Served, mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&s.member) {
        response.headers_mut().insert(SERVED_BY, v);
    }
    response
}

/// This very request (`uri`) asked of `p`'s owner at `url`, its answer relayed as it came.
async fn relay(
    s: &Served,
    p: Partition,
    url: &str,
    uri: &axum::http::Uri,
    limit: Duration,
) -> Result<Response, ApiError> {
    let forwarder = s.forwarder.as_ref().expect("forwarding needs a forwarder");
    let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    Ok(forwarder
        .get(&s.metrics, p, url, path, limit)
        .await?
        .into_response())
}

/// `GET /v1/reservations/{no}`: answered by the owner of `no`'s partition.
pub async fn reservation(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(no) = path?;
    let Query(params) = params?;
    let token = params.token(&s)?;
    let p = s.partition_of(&no);
    if let Route::Forward(url) = s.route(p, is_forwarded(&headers))? {
        let limit = token.map_or(Duration::ZERO, |_| params.wait()) + ANSWER_GRACE;
        return relay(&s, p, &url, &uri, limit).await;
    }
    if let Some(t) = token {
        let until = t.offset.next().expect("Token::parse checks the successor");
        // The token may name another partition than the key's, owned by another member: that
        // member waits for it (it never forwards the wait on).
        match s.route(t.partition, false)? {
            Route::Local => wait_applied(&s, t.partition, until, params.wait()).await?,
            Route::Forward(url) => {
                let forwarder = s.forwarder.as_ref().expect("forwarding needs a forwarder");
                let path = format!(
                    "/v1/internal/applied?partition={}&offset={}&wait={}",
                    t.partition,
                    until.0,
                    params.wait().as_millis()
                );
                let limit = params.wait() + ANSWER_GRACE;
                let answer = forwarder
                    .get(&s.metrics, t.partition, &url, &path, limit)
                    .await?;
                if !answer.status.is_success() {
                    return Ok(answer.into_response());
                }
            }
        }
    }
    // A partition still restoring has a partial view: its answer could be an older state, or
    // a 404 for a reservation that exists.
    if s.partitions.status(p).is_restoring() {
        return Err(ApiError::NotReady(format!(
            "partition {p} is still restoring its state; retry"
        )));
    }
    match local_record(&s, p, &no) {
        Some(record) => Ok(served_by(&s, axum::Json(record).into_response())),
        None => Err(ApiError::NotFound(format!("no reservation {no}"))),
    }
}

/// `GET /v1/outcomes/{token}`: what became of the event a `202` answered with `token`, once
/// its partition has applied it (`wait`, as for reads): `accepted` (applied, or a duplicate of
/// an event applied), `refused` with the dead letter's reason and error, or `unknown` when the
/// owner processed it before it took the partition, or over [`crate::view::REFUSALS_KEPT`]
/// dead letters ago (the dead-letter topic has it). Answered by the partition's owner.
pub async fn outcome(
    State(s): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(token) = path?;
    let Query(params) = params?;
    let t = Token::parse(&token)
        .filter(|t| s.count().contains(t.partition))
        .ok_or_else(|| {
            ApiError::InvalidToken(format!(
                "`{token}` is not a token from this deployment (`<partition>.<offset>`, as a \
                 `202` answers it)"
            ))
        })?;
    if let Route::Forward(url) = s.route(t.partition, is_forwarded(&headers))? {
        return relay(&s, t.partition, &url, &uri, params.wait() + ANSWER_GRACE).await;
    }
    let until = t.offset.next().expect("Token::parse checks the successor");
    wait_applied(&s, t.partition, until, params.wait()).await?;
    let outcome = s
        .partitions
        .status(t.partition)
        .outcome(t.offset)
        .unwrap_or(Outcome::Unknown);
    let mut body = json!({"token": token, "partition": t.partition, "offset": t.offset});
    match outcome {
        Outcome::Accepted => body["outcome"] = json!("accepted"),
        Outcome::Unknown => body["outcome"] = json!("unknown"),
        Outcome::Refused(r) => {
            body["outcome"] = json!("refused");
            body["reason"] = json!(r.reason);
            body["error"] = json!(r.error);
        }
    }
    Ok(served_by(&s, axum::Json(body).into_response()))
}

/// The state records of `user` in `partitions`, all owned here, each once it has applied
/// every offset below its `until`.
async fn local_user_records(
    s: &Served,
    user: &str,
    partitions: &BTreeMap<Partition, Offset>,
    wait: Duration,
) -> Result<Vec<StateRecord>, ApiError> {
    for (&p, &until) in partitions {
        if !s.partitions.status(p).is_owned() {
            return Err(ApiError::NoOwner(format!(
                "partition {p} is not owned by this member now; retry (the ownership table names its owner)"
            )));
        }
        wait_applied(s, p, until, wait).await?;
    }
    let nos: Vec<String> = s
        .partitions
        .users
        .get(user)
        .map(|list| list.iter().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    Ok(nos
        .iter()
        .filter_map(|no| {
            let p = s.partition_of(no);
            partitions
                .contains_key(&p)
                .then(|| local_record(s, p, no))
                .flatten()
        })
        .collect())
}

/// The state records of `user` in every partition, each partition having applied every offset
/// below `until[p]` (asked of its owner, in parallel). Any partition without a reachable owner
/// makes the whole answer `503`: a partial answer could wrongly say "none". A `forwarded`
/// request is answered from here only, never forwarded again.
pub async fn user_records(
    s: &Served,
    user: &str,
    until: &[Offset],
    wait: Duration,
    forwarded: bool,
) -> Result<Vec<StateRecord>, ApiError> {
    let mut local = BTreeMap::new();
    let mut remote: BTreeMap<String, Vec<(Partition, Offset)>> = BTreeMap::new();
    for p in s.count().iter() {
        match s.route(p, forwarded)? {
            Route::Local => {
                local.insert(p, until[p.index()]);
            }
            Route::Forward(url) => remote.entry(url).or_default().push((p, until[p.index()])),
        }
    }
    let mut asks = tokio::task::JoinSet::new();
    if let Some(forwarder) = &s.forwarder {
        for (url, parts) in remote {
            let spec: Vec<String> = parts.iter().map(|(p, u)| format!("{p}:{u}")).collect();
            let path = format!(
                "/v1/internal/users/{}?partitions={}&wait={}",
                encode(user),
                spec.join(","),
                wait.as_millis()
            );
            let (forwarder, metrics, first) = (forwarder.clone(), s.metrics.clone(), parts[0].0);
            asks.spawn(async move {
                let answer = forwarder
                    .get(&metrics, first, &url, &path, wait + ANSWER_GRACE)
                    .await?;
                remote_records(&url, answer)
            });
        }
    }
    let mut records = local_user_records(s, user, &local, wait).await?;
    while let Some(joined) = asks.join_next().await {
        records.extend(joined??);
    }
    records.sort_by(|a, b| a.reservation_no.cmp(&b.reservation_no));
    Ok(records)
}

/// The records in an owner's answer to `/v1/internal/users/…`, or its error as ours.
fn remote_records(url: &str, answer: super::forward::Answer) -> Result<Vec<StateRecord>, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        reservations: Vec<StateRecord>,
    }
    #[derive(Deserialize)]
    struct Error {
        error: String,
        message: String,
    }
    if answer.status.is_success() {
        return serde_json::from_slice::<Body>(&answer.body)
            .map(|b| b.reservations)
            .map_err(|cause| {
                ApiError::Internal(super::error::Internal::Answer {
                    url: url.to_owned(),
                    cause,
                })
            });
    }
    let e: Error =
        serde_json::from_slice(&answer.body).map_err(|cause| Unreachable::Unreadable {
            url: url.to_owned(),
            status: answer.status,
            cause,
        })?;
    Err(match e.error.as_str() {
        "timeout" => ApiError::Timeout(e.message),
        "no_owner" => ApiError::NoOwner(e.message),
        _ => ApiError::OwnerUnreachable(Unreachable::Refused {
            url: url.to_owned(),
            status: answer.status,
            message: e.message,
        }),
    })
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET /v1/users/{id}`: every reservation of the user, from every partition's owner.
pub async fn user(
    State(s): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let Query(params) = params?;
    let mut until = vec![Offset(0); s.count().get() as usize];
    if let Some(t) = params.token(&s)? {
        until[t.partition.index()] = t.offset.next().expect("Token::parse checks the successor");
    }
    let forwarded = is_forwarded(&headers);
    let records = user_records(&s, &id, &until, params.wait(), forwarded).await?;
    if records.is_empty() {
        return Err(ApiError::NotFound(format!("no reservations for user {id}")));
    }
    Ok(served_by(
        &s,
        axum::Json(json!({"user_id": id, "reservations": records})).into_response(),
    ))
}

/// Query parameters of [`applied`].
#[derive(Debug, Deserialize)]
pub struct AppliedParams {
    partition: Partition,
    /// Answer once everything below this offset is applied.
    offset: u64,
    wait: Option<u64>,
}

/// `GET /v1/internal/applied?partition=p&offset=o&wait=ms`: answers once partition `p`, which
/// this member must own, has applied everything below `o`; asked by the member that answers a
/// query whose token names `p`.
pub async fn applied(
    State(s): State<AppState>,
    params: Result<Query<AppliedParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let p = params.partition;
    if !s.count().contains(p) {
        return Err(ApiError::InvalidQuery(format!(
            "partition {p} is not one of this deployment's"
        )));
    }
    if !s.partitions.status(p).is_owned() {
        return Err(ApiError::NoOwner(format!(
            "partition {p} is not owned by this member now; retry (the ownership table names its owner)"
        )));
    }
    let wait = Duration::from_millis(params.wait.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    wait_applied(&s, p, Offset(params.offset), wait).await?;
    Ok(served_by(
        &s,
        axum::Json(json!({"partition": p.0})).into_response(),
    ))
}

/// Query parameters of [`user_partitions`].
#[derive(Debug, Deserialize)]
pub struct PartitionParams {
    /// `p:until,…`: the partitions to answer for, each once it has applied below `until`.
    partitions: String,
    wait: Option<u64>,
}

/// `GET /v1/internal/users/{id}?partitions=p:until,…&wait=ms`: the user's reservations in the
/// listed partitions, which this member must own; asked by the member a user query came to.
pub async fn user_partitions(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<PartitionParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let Query(params) = params?;
    let mut partitions = BTreeMap::new();
    for item in params.partitions.split(',').filter(|i| !i.is_empty()) {
        let parsed = item.split_once(':').and_then(|(p, u)| {
            let p = Partition(p.parse().ok()?);
            s.count().contains(p).then_some(())?;
            Some((p, Offset(u.parse().ok()?)))
        });
        let (p, until) = parsed.ok_or_else(|| {
            ApiError::InvalidQuery(format!(
                "`partitions` item `{item}`: expected <partition>:<offset> of this deployment"
            ))
        })?;
        partitions.insert(p, until);
    }
    let wait = Duration::from_millis(params.wait.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS));
    let records = local_user_records(&s, &id, &partitions, wait).await?;
    Ok(served_by(
        &s,
        axum::Json(json!({"reservations": records})).into_response(),
    ))
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

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("user-1"), "user-1");
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
