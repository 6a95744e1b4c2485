//! What every handler reads ([`Served`], behind [`AppState`]) and where a request for a
//! partition is answered ([`Served::route`]): here, or at its owner's URL.

use std::sync::Arc;

use serde_json::json;

use super::error::ApiError;
use super::forward::{self, Forwarder};
use crate::core::partitioner::Partitioner;
use crate::core::{Partition, PartitionCount};
use crate::log::Ingest;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::view::Partitions;

/// What every handler reads: the backend's input, the published partitions, the metrics, and
/// how to reach the other members.
pub struct Served {
    pub ingest: Arc<dyn Ingest>,
    pub partitions: Arc<Partitions>,
    pub metrics: Arc<Metrics>,
    /// Who this member is (host/pid), sent as `ordo-served-by`.
    pub member: String,
    /// The base URL other members reach this one at (Kafka).
    pub advertise: Option<String>,
    /// The client to the other members; `None` where every partition is this process's (the
    /// embedded log).
    pub forwarder: Option<Forwarder>,
    /// Set when the member is stopping: long polls end, new requests are turned away.
    pub shutdown: Shutdown,
    /// What the status page says of the member, and its samples.
    pub about: super::status::About,
    /// The bearer token every request but the open routes needs (`--http-token-file`).
    pub token: Option<super::auth::Token>,
    /// Where every partition's input ends, asked once for the lookups waiting at a time.
    pub input_ends: super::Rounds<Vec<crate::core::Offset>, std::sync::Arc<crate::log::LogsError>>,
}

/// Where a request for one partition is answered.
pub enum Route {
    /// This member owns the partition.
    Local,
    /// The member at this base URL does.
    Forward(String),
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

    /// Where a request for partition `p` is answered; `forwarded` requests only here.
    pub fn route(&self, p: Partition, forwarded: bool) -> Result<Route, ApiError> {
        let no_owner = |message: String| {
            self.metrics
                .forwarded
                .with_label_values(&["no_owner"])
                .inc();
            ApiError::NoOwner(message)
        };
        let status = self.partitions.status(p);
        if self.forwarder.is_none() || status.is_owned() {
            // Woken from a pause its group session may not have survived, this member answers
            // nothing from its view until the owner has checked the partition is still its own.
            if status.is_suspect() || !self.partitions.watched() {
                return Err(no_owner(format!(
                    "this member was paused for longer than its group session allows; it is \
                     checking that partition {p} is still its own; retry"
                )));
            }
            return Ok(Route::Local);
        }
        if forwarded {
            return Err(no_owner(format!(
                "partition {p} is not owned by this member (it moved); retry"
            )));
        }
        match self.partitions.owner_url(p) {
            Some(url) if self.advertise.as_deref() == Some(url.as_str()) => Err(no_owner(format!(
                "no member serves partition {p} right now; retry"
            ))),
            // Only a plain base URL is a member's: anything else in `reservation-owners` (a
            // path, a query, credentials) would make this member request what it names.
            Some(url) if !forward::is_base_url(&url) => {
                tracing::warn!(
                    partition = p.0,
                    url,
                    "ignoring an owner URL that is not a base URL"
                );
                Err(no_owner(format!(
                    "the owner recorded for partition {p} is not a member URL; retry"
                )))
            }
            Some(url) => Ok(Route::Forward(url)),
            None => Err(no_owner(format!(
                "no member serves partition {p} right now; retry"
            ))),
        }
    }
}

impl Served {
    /// The ownership table as JSON rows, one per partition.
    pub(super) fn owners_table(&self) -> Vec<serde_json::Value> {
        let table = self.partitions.owners();
        self.count()
            .iter()
            .map(|p| {
                let status = self.partitions.status(p);
                let here = status.is_owned();
                match table.get(p) {
                    Some(r) => json!({
                        "partition": p.0, "epoch": r.epoch, "owner": r.owner, "url": r.url,
                        "owned_here": here, "ready_here": status.is_ready(),
                    }),
                    None => json!({
                        "partition": p.0,
                        "epoch": here.then(|| status.epoch()),
                        "owner": here.then(|| self.member.clone()),
                        "url": if here { self.advertise.clone() } else { None },
                        "owned_here": here, "ready_here": status.is_ready(),
                    }),
                }
            })
            .collect()
    }
}
