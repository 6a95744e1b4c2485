//! `ordo run`: one dedicated worker thread per partition, plus the HTTP endpoint, until idle
//! (with `--until-idle`) or until shutdown is requested.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{error, info};

use crate::changelog::{self, Entry, StateRecord, Verdict};
use crate::event::ReservationNo;
use crate::http::{self, AppState};
use crate::log::Ingest;
use crate::log::embedded::{EmbeddedLog, LogError};
use crate::metrics::Metrics;
use crate::partitioner::Partition;
use crate::topics::Role;
use crate::worker::{PartitionStatus, UserIndex, View, Worker, WorkerReport};

/// What `ordo run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where to listen for HTTP; `None` serves no HTTP.
    pub http: Option<SocketAddr>,
    pub until_idle: bool,
    pub batch_size: usize,
}

/// What went wrong while running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot listen for HTTP on {addr}: {source}; pass another --http address")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("partition {partition} worker panicked")]
    Panicked { partition: Partition },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl RunError {
    /// Whether the error is the user's configuration (exit status 2).
    pub fn is_usage(&self) -> bool {
        match self {
            Self::Log(e) => e.is_usage(),
            Self::Listen { .. } => true,
            Self::Panicked { .. } | Self::Runtime(_) => false,
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub processed: u64,
    pub applied: u64,
    pub restored: u64,
    pub elapsed: Duration,
    pub http: Option<SocketAddr>,
}

/// The process's shared view of every partition, for HTTP.
#[derive(Clone)]
pub struct Shared {
    pub log: Arc<dyn Ingest>,
    pub views: Vec<Arc<View>>,
    pub users: Arc<UserIndex>,
    pub statuses: Vec<Arc<PartitionStatus>>,
    pub metrics: Arc<Metrics>,
}

/// Who this process is, for epoch markers.
pub fn owner_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}/{}", std::process::id())
}

/// Runs every partition of `log` until idle or `shutdown`.
pub fn run(
    log: Arc<EmbeddedLog>,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let n = log.partitions();
    let shared = Shared {
        views: n.iter().map(|_| Arc::new(View::new())).collect(),
        users: Arc::new(UserIndex::new()),
        statuses: n
            .iter()
            .map(|_| {
                // Every partition is this process's from the start: not ready until restored.
                let status = PartitionStatus::default();
                status.owned.store(true, Ordering::Release);
                Arc::new(status)
            })
            .collect(),
        metrics: metrics.clone(),
        log: log.clone(),
    };
    let wake = log.clone();
    let (runtime, http_addr) =
        start_shell(opts.http, shared.clone(), shutdown.clone(), move || {
            wake.appended().notify();
        })?;

    let owner = owner_id();
    let mut handles = Vec::new();
    for p in n.iter() {
        let worker = Worker {
            partition: p,
            log: log.clone(),
            view: shared.views[p.0 as usize].clone(),
            users: shared.users.clone(),
            status: shared.statuses[p.0 as usize].clone(),
            metrics: metrics.clone(),
            batch_size: opts.batch_size,
            until_idle: opts.until_idle,
            shutdown: shutdown.clone(),
            owner: owner.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("ordo-p{p}"))
            .spawn(move || worker.run())
            .map_err(RunError::Runtime)?;
        handles.push((p, handle));
    }
    let mut summary = RunSummary {
        http: http_addr,
        ..RunSummary::default()
    };
    let mut first_error = None;
    for (p, handle) in handles {
        let result = match handle.join() {
            Ok(r) => r.map_err(RunError::from),
            Err(_) => Err(RunError::Panicked { partition: p }),
        };
        match result {
            Ok(WorkerReport {
                processed,
                applied,
                restored,
                ..
            }) => {
                summary.processed += processed;
                summary.applied += applied;
                summary.restored += restored;
            }
            Err(e) => {
                error!(partition = p.0, error = %e, "partition worker failed");
                // One failed partition stops the others: the process restarts as a whole.
                shutdown.store(true, Ordering::Release);
                log.appended().notify();
                first_error.get_or_insert(e);
            }
        }
    }
    shutdown.store(true, Ordering::Release);
    runtime.shutdown_timeout(Duration::from_secs(2));
    summary.elapsed = started.elapsed();
    match first_error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// The async shell around the partition threads: a small runtime serving HTTP on `http` (when
/// given) and turning SIGINT/SIGTERM into `shutdown` (then calling `wake`). Returns the runtime
/// and the bound address.
pub fn start_shell(
    http: Option<SocketAddr>,
    shared: Shared,
    shutdown: Arc<AtomicBool>,
    wake: impl FnOnce() + Send + 'static,
) -> Result<(tokio::runtime::Runtime, Option<SocketAddr>), RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ordo-http")
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let http_addr = match http {
        Some(addr) => {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|source| RunError::Listen { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| RunError::Listen { addr, source })?;
            // Tests and operators parse this line to find a port picked with `:0`.
            eprintln!("ordo: http listening on {local}");
            info!(addr = %local, "http listening");
            runtime.spawn(http::serve(
                listener,
                AppState::new(shared),
                shutdown.clone(),
            ));
            Some(local)
        }
        None => None,
    };
    // SIGINT / SIGTERM: finish the current batch, flush, exit.
    runtime.spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        shutdown.store(true, Ordering::Release);
        wake();
    });
    Ok((runtime, http_addr))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Current state of every reservation, read from the changelog with the fencing rule.
pub fn snapshot(log: &EmbeddedLog) -> Result<BTreeMap<ReservationNo, StateRecord>, LogError> {
    let mut all = BTreeMap::new();
    for p in log.partitions().iter() {
        let mut reader = changelog::Reader::default();
        log.scan(Role::State, p, 0, |r| {
            if let Ok(entry) = Entry::decode(&r.key, &r.value)
                && let Verdict::Accept(record) = reader.next(entry)
            {
                all.insert(record.reservation_no.clone(), record);
            }
            Ok(true)
        })?;
    }
    Ok(all)
}

/// Input records not yet processed, summed over partitions.
pub fn backlog(log: &EmbeddedLog) -> Result<u64, LogError> {
    let mut total = 0;
    for p in log.partitions().iter() {
        total += log
            .end_offset(Role::Events, p)?
            .saturating_sub(log.position(p)?);
    }
    Ok(total)
}

/// The data dir used when none is given.
pub const DEFAULT_DATA_DIR: &str = "./ordo-data";
