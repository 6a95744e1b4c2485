//! The status page (contract §7): `GET /` is one self-contained HTML page (no CDN, no external
//! font: its script and style are in the binary), and `GET /v1/status` the same data as JSON.
//!
//! A member knows its own partitions: their owner state, epoch, position, lag, state entries,
//! outcomes and rates. `/v1/status` (cluster scope, the default) merges every partition of the
//! deployment through the ownership table: the rows of partitions another member owns come
//! from that member's `/v1/status?scope=local`, one request per member, so every member's page
//! shows the whole deployment. Rates and the charts' 5-minute history come from a ring of
//! samples taken every second in memory ([`super::history`]): no Prometheus needed for the
//! page.
//! `GET /v1/partition/{key}` is the key lookup's arithmetic.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::history::{Charts, History, Sample, charts, rate_over};
use super::state::AppState;
use crate::core::step::TALLY_OUTCOMES;
use crate::core::{Epoch, Offset, Partition};

/// The page: HTML with its style and script inline.
const PAGE: &str = include_str!("assets/status.html");

/// What a member says about itself, besides its partitions.
#[derive(Debug)]
pub struct About {
    pub backend: &'static str,
    /// The consumer group and its protocol (Kafka).
    pub group: Option<(String, String)>,
    pub started: Instant,
    pub history: History,
}

impl About {
    /// A member of `backend`, started now.
    pub fn new(backend: &'static str, group: Option<(String, String)>) -> Self {
        About {
            backend,
            group,
            started: Instant::now(),
            history: History::default(),
        }
    }
}

/// The position and input end of `p`, when this member owns it and has restored it.
pub(super) fn local_offsets(state: &AppState, p: Partition) -> Option<(Offset, Offset)> {
    let status = state.partitions.status(p);
    if !status.is_owned() || !status.is_ready() {
        return None;
    }
    Some((status.position(), status.input_end()))
}

/// While records wait in `p`, the age of the last one processed (an upper bound on the oldest
/// waiting record's age); 0 when caught up.
pub(super) fn lag_seconds(state: &AppState, p: Partition) -> Option<f64> {
    let (position, end) = local_offsets(state, p)?;
    if end <= position {
        return Some(0.0);
    }
    let ts = state.partitions.status(p).last_timestamp()?;
    Some(((crate::log::now_millis() - ts).max(0) as f64) / 1000.0)
}

/// One partition's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub partition: Partition,
    pub owner: Option<String>,
    pub url: Option<String>,
    pub epoch: Option<Epoch>,
    /// owning, restoring, stalled, failed, released (known owner gone), unowned, unreachable
    pub state: String,
    pub position: Option<Offset>,
    pub end: Option<Offset>,
    pub lag_records: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub rate_10s: Option<f64>,
    pub rate_1m: Option<f64>,
    pub append_rate_10s: Option<f64>,
    /// Seconds to catch up at the 1-minute rates, when gaining on the input.
    pub eta_seconds: Option<f64>,
    pub restore_progress: Option<f64>,
    pub state_entries: Option<u64>,
    /// Events by outcome (applied, duplicate, rejected, malformed, misrouted) since this owner
    /// started.
    pub outcomes: BTreeMap<String, u64>,
    pub error: Option<String>,
}

impl Row {
    fn unknown(p: Partition, state: &str) -> Self {
        Row {
            partition: p,
            owner: None,
            url: None,
            epoch: None,
            state: state.to_owned(),
            position: None,
            end: None,
            lag_records: None,
            lag_seconds: None,
            rate_10s: None,
            rate_1m: None,
            append_rate_10s: None,
            eta_seconds: None,
            restore_progress: None,
            state_entries: None,
            outcomes: BTreeMap::new(),
            error: None,
        }
    }
}

/// `/v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub member: String,
    pub url: Option<String>,
    pub version: String,
    pub uptime_seconds: f64,
    pub backend: String,
    pub partitions: u32,
    pub partitioner: String,
    pub group: Option<String>,
    pub group_protocol: Option<String>,
    /// Rebalances this member has taken part in (Kafka), and how long ago the last one was.
    pub rebalances: Option<u64>,
    pub last_rebalance_seconds_ago: Option<f64>,
    pub ready: bool,
    pub reason: Option<String>,
    pub scope: String,
    pub rows: Vec<Row>,
    pub totals: Totals,
    pub history: Charts,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub lag_records: u64,
    pub rate_10s: f64,
    pub append_rate_10s: f64,
    /// Seconds to catch up overall, `None` while not gaining on the input.
    pub eta_seconds: Option<f64>,
}

/// The rows of the partitions this member owns (or whose owner failed here).
fn local_rows(state: &AppState, samples: &[Sample]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, status) in state.partitions.statuses.iter().enumerate() {
        let p = Partition(i as u32);
        if !status.is_owned() && !status.has_failed() {
            continue;
        }
        let offsets = local_offsets(state, p);
        let rate = |secs| rate_over(samples, i, secs);
        let (r10, r60) = (rate(10), rate(60));
        let lag = offsets.map(|(pos, end)| pos.distance_to(end));
        let eta = match (lag, r60) {
            (Some(0), _) => Some(0.0),
            (Some(l), Some((r, w))) if r > w => Some(l as f64 / (r - w)),
            _ => None,
        };
        let outcomes = state.metrics.outcomes(p);
        rows.push(Row {
            partition: p,
            owner: Some(state.member.clone()),
            url: state.advertise.clone(),
            epoch: status.is_ready().then(|| status.epoch()),
            state: if status.has_failed() {
                "failed"
            } else if status.is_stalled() {
                "stalled"
            } else if status.is_restoring() {
                "restoring"
            } else {
                "owning"
            }
            .to_owned(),
            position: offsets.map(|o| o.0),
            end: offsets.map(|o| o.1),
            lag_records: lag,
            lag_seconds: lag_seconds(state, p),
            rate_10s: r10.map(|r| r.0),
            rate_1m: r60.map(|r| r.0),
            append_rate_10s: r10.map(|r| r.1),
            eta_seconds: eta,
            restore_progress: status
                .is_restoring()
                .then(|| status.restore_progress())
                .flatten(),
            state_entries: Some(state.partitions.view(p).len() as u64),
            outcomes: TALLY_OUTCOMES
                .iter()
                .zip(outcomes)
                .map(|(o, n)| ((*o).to_owned(), n))
                .collect(),
            error: status.error().or_else(|| {
                status.is_stalled().then(|| {
                    "the broker does not answer its fetches or appends (retrying)".to_owned()
                })
            }),
        });
    }
    rows
}

/// Whether the member is ready, and if not why (as `/readyz` says).
pub fn readiness(state: &AppState) -> Result<(), String> {
    let failed = state.partitions.failed();
    if !failed.is_empty() {
        return Err(format!(
            "the owners of partitions {failed:?} failed; the process is stopping (see its log)"
        ));
    }
    let stalled = state.partitions.stalled();
    if !stalled.is_empty() {
        return Err(format!(
            "partitions {stalled:?} cannot make progress: the broker does not answer their \
             fetches or appends (retrying)"
        ));
    }
    let suspect = state.partitions.suspect();
    if !suspect.is_empty() || !state.partitions.watched() {
        return Err(format!(
            "this member was paused for longer than its group session allows; partitions \
             {suspect:?} are served again once their owners have checked they are still theirs"
        ));
    }
    let restoring = state.partitions.restoring();
    if !restoring.is_empty() {
        let each: Vec<String> = restoring
            .iter()
            .map(
                |p| match state.partitions.status(Partition(*p)).restore_progress() {
                    Some(r) => format!("{p} at {:.0} %", r * 100.0),
                    None => p.to_string(),
                },
            )
            .collect();
        return Err(format!(
            "partitions [{}] are not restored yet",
            each.join(", ")
        ));
    }
    Ok(())
}

/// `?scope=local|cluster`.
#[derive(Debug, Deserialize)]
pub struct Scope {
    scope: Option<String>,
}

/// `GET /`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:",
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /v1/status`.
pub async fn status(
    State(s): State<AppState>,
    Query(q): Query<Scope>,
) -> Result<Response, ApiError> {
    let cluster = match q.scope.as_deref() {
        None | Some("cluster") => true,
        Some("local") => false,
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "unknown scope {other:?}; use scope=local or scope=cluster"
            )));
        }
    };
    let samples = s.about.history.snapshot();
    let mut rows = local_rows(&s, &samples);
    if cluster && s.forwarder.is_some() {
        rows = merge(&s, rows).await;
    }
    let ready = readiness(&s);
    let mut totals = Totals::default();
    let (mut r60, mut w60) = (0.0, 0.0);
    for (i, _) in s.partitions.statuses.iter().enumerate() {
        if let Some((r, w)) = rate_over(&samples, i, 60) {
            r60 += r;
            w60 += w;
        }
    }
    for r in &rows {
        totals.lag_records += r.lag_records.unwrap_or(0);
        totals.rate_10s += r.rate_10s.unwrap_or(0.0);
        totals.append_rate_10s += r.append_rate_10s.unwrap_or(0.0);
    }
    totals.eta_seconds = if totals.lag_records == 0 {
        Some(0.0)
    } else {
        // Every row's own estimate, when each is gaining; the slowest partition decides.
        rows.iter()
            .filter(|r| r.lag_records.unwrap_or(0) > 0)
            .map(|r| r.eta_seconds)
            .try_fold(0.0f64, |m, e| e.map(|e| m.max(e)))
            .or_else(|| (r60 > w60).then(|| totals.lag_records as f64 / (r60 - w60)))
    };
    let (group, group_protocol) = match &s.about.group {
        Some((g, p)) => (Some(g.clone()), Some(p.clone())),
        None => (None, None),
    };
    let body = Status {
        member: s.member.clone(),
        url: s.advertise.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: s.about.started.elapsed().as_secs_f64(),
        backend: s.about.backend.to_owned(),
        partitions: s.count().get(),
        partitioner: s.ingest.partitioner().to_string(),
        rebalances: group
            .is_some()
            .then(|| s.metrics.rebalances.with_label_values(&["assign"]).get()),
        last_rebalance_seconds_ago: match s.metrics.last_rebalance.get() {
            0 => None,
            at => Some(((crate::log::now_millis() / 1000 - at).max(0)) as f64),
        },
        group,
        group_protocol,
        ready: ready.is_ok(),
        reason: ready.err(),
        scope: if cluster { "cluster" } else { "local" }.to_owned(),
        rows,
        totals,
        history: charts(&s, &samples),
    };
    Ok(axum::Json(body).into_response())
}

/// How long a member waits for another's `/v1/status`.
const PEER_LIMIT: Duration = Duration::from_secs(2);

/// Metrics the status fan-out counts on, kept apart from `ordo_forwarded_requests_total`
/// (which counts clients' requests).
fn scratch_metrics() -> &'static crate::metrics::Metrics {
    static M: std::sync::OnceLock<crate::metrics::Metrics> = std::sync::OnceLock::new();
    M.get_or_init(crate::metrics::Metrics::fresh)
}

/// Every partition of the deployment: this member's rows, and for the others the rows their
/// owners (per the ownership table) report, one request per member.
async fn merge(s: &AppState, local: Vec<Row>) -> Vec<Row> {
    let n = s.count();
    let mut rows: Vec<Option<Row>> = vec![None; n.get() as usize];
    for r in local {
        if let Some(slot) = rows.get_mut(r.partition.index()) {
            *slot = Some(r);
        }
    }
    // Members to ask: URL → partitions wanted from it.
    let mut wanted: HashMap<String, Vec<Partition>> = HashMap::new();
    for p in n.iter() {
        if rows[p.index()].is_some() {
            continue;
        }
        match s.partitions.holder(p) {
            Some(h) if h.is_held() && h.url.is_some() => {
                let url = h.url.clone().unwrap_or_default();
                wanted.entry(url).or_default().push(p);
            }
            Some(h) => {
                let mut row = Row::unknown(
                    p,
                    if h.is_held() {
                        "unreachable"
                    } else {
                        "released"
                    },
                );
                row.owner = Some(h.owner.clone());
                row.epoch = Some(h.epoch);
                rows[p.index()] = Some(row);
            }
            None => rows[p.index()] = Some(Row::unknown(p, "unowned")),
        }
    }
    let mut asks = tokio::task::JoinSet::new();
    for (url, parts) in wanted {
        let s = s.clone();
        asks.spawn(async move {
            let answer = match s.forwarder.as_ref() {
                // Not a forwarded request of a client: counted on metrics of its own.
                Some(f) => f
                    .get(
                        scratch_metrics(),
                        parts[0],
                        &url,
                        "/v1/status?scope=local",
                        PEER_LIMIT,
                    )
                    .await
                    .ok()
                    .filter(|a| a.status.is_success())
                    .and_then(|a| serde_json::from_slice::<Status>(&a.body).ok()),
                None => None,
            };
            (url, parts, answer)
        });
    }
    while let Some(joined) = asks.join_next().await {
        let Ok((url, parts, answer)) = joined else {
            continue;
        };
        for p in parts {
            let from_owner = answer
                .as_ref()
                .and_then(|a| a.rows.iter().find(|r| r.partition == p).cloned());
            rows[p.index()] = Some(from_owner.unwrap_or_else(|| {
                let holder = s.partitions.holder(p);
                let mut row = Row::unknown(p, "unreachable");
                row.owner = holder.as_ref().map(|h| h.owner.clone());
                row.epoch = holder.map(|h| h.epoch);
                row.url = Some(url.clone());
                row.error = Some(format!("{url} did not answer /v1/status"));
                row
            }));
        }
    }
    rows.into_iter()
        .zip(n.iter())
        .map(|(r, p)| r.unwrap_or_else(|| Row::unknown(p, "unowned")))
        .collect()
}

/// `GET /v1/partition/{key}`: the partition of a reservation number, with the partitioner's
/// arithmetic, and its owner.
pub async fn partition(State(s): State<AppState>, Path(key): Path<String>) -> Response {
    let n = s.count();
    let partitioner = s.ingest.partitioner();
    let p = partitioner.partition(&key, n);
    let owner = if s.forwarder.is_none() || s.partitions.status(p).is_owned() {
        Some(s.member.clone())
    } else {
        s.partitions.holder(p).map(|h| h.owner)
    };
    axum::Json(serde_json::json!({
        "key": key,
        "partition": p.0,
        "partitions": n.get(),
        "partitioner": partitioner.name(),
        "arithmetic": partitioner.explain(&key, n),
        "owner": owner,
    }))
    .into_response()
}
