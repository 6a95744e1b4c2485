//! `ordo run`: the process around the partition owners. It starts the HTTP listener and the
//! signal handler on a small async runtime, runs the owners of its backend (every partition of
//! a data dir, or what a Kafka consumer group assigns) until idle or shutdown, then stops HTTP.
//!
//! Shutdown is one [`Shutdown`] value: SIGINT and SIGTERM trigger it, a failed partition
//! triggers it, and every thread and task observes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use crate::core::PartitionCount;
use crate::http::status::About;
use crate::http::{self, AppState, Forwarder, Served};
use crate::log::kafka::{
    KafkaIngest, KafkaLogError, check_no_repartition, check_topics, check_transactions,
};
use crate::log::topics::Role;
use crate::log::{Ingest, Logs};
use crate::metrics::Metrics;
use crate::owner::{self, DEFAULT_BATCH_SIZE};
use crate::shutdown::Shutdown;
use crate::view::Partitions;

/// The data dir used when none is given.
pub const DEFAULT_DATA_DIR: &str = "./ordo-data";

/// What `ordo run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where to listen for HTTP; `None` serves no HTTP.
    pub http: Option<SocketAddr>,
    pub until_idle: bool,
    pub batch_size: usize,
    /// What a plain reader of the Kafka topics sees.
    pub guarantee: owner::Guarantee,
    /// The base URL other members reach this member's listener at (Kafka); default: `http://`
    /// and the bound address.
    pub advertise: Option<String>,
    /// The bearer token the API requires (`--http-token-file`); `None`: none.
    pub token: Option<http::auth::Token>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            http: None,
            until_idle: true,
            batch_size: DEFAULT_BATCH_SIZE,
            guarantee: owner::Guarantee::AtLeastOnce,
            advertise: None,
            token: None,
        }
    }
}

/// What went wrong while running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Owners(#[from] owner::embedded::OwnersError),
    #[error(transparent)]
    Group(#[from] owner::group::GroupError),
    #[error(transparent)]
    Kafka(#[from] KafkaLogError),
    #[error("cannot listen for HTTP on {addr}: {source}; pass another --http address")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "--http {http} listens on every interface, so other members cannot derive this \
         member's address from it; pass --advertise http://HOST:PORT (ORDO_ADVERTISE)"
    )]
    Unadvertised { http: SocketAddr },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(
        "N = {n} would need {n} partition threads in this process, over the limit of \
         {MAX_PARTITION_THREADS}; choose a smaller N (--partitions, or --containers × --servers)"
    )]
    TooManyPartitions { n: PartitionCount },
}

/// The most partition threads one process runs: each member must be able to own every
/// partition (the only member of a group, or the embedded log's one process).
pub const MAX_PARTITION_THREADS: u32 = 1024;

/// Refuses an N that would need more than [`MAX_PARTITION_THREADS`] owner threads.
pub fn check_thread_bound(n: PartitionCount) -> Result<(), RunError> {
    if n.get() > MAX_PARTITION_THREADS {
        return Err(RunError::TooManyPartitions { n });
    }
    Ok(())
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    /// Input records processed (embedded) or consumed (Kafka).
    pub processed: u64,
    pub applied: u64,
    pub restored: u64,
    pub elapsed: Duration,
    pub http: Option<SocketAddr>,
    /// Whether `applied` and `restored` were counted (the embedded log's owners count them).
    pub counted: bool,
    /// What became of the records this process processed: per outcome (applied, duplicate,
    /// rejected, malformed, misrouted), and the dead letters written.
    pub outcomes: Option<([u64; 5], u64)>,
}

impl RunSummary {
    /// The run's closing line.
    pub fn line(&self) -> String {
        let outcomes = match self.outcomes {
            Some(([_, duplicate, rejected, malformed, misrouted], dead)) => format!(
                "; {duplicate} duplicates, {rejected} rejected, {malformed} malformed, \
                 {misrouted} misrouted, {dead} dead letters"
            ),
            None => String::new(),
        };
        if self.counted {
            format!(
                "ordo: processed {} records ({} transitions{outcomes}) in {:.2}s; restored {} \
                 reservations",
                self.processed,
                self.applied,
                self.elapsed.as_secs_f64(),
                self.restored
            )
        } else {
            format!(
                "ordo: consumed {} records{} in {:.2}s",
                self.processed,
                if outcomes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", outcomes.trim_start_matches("; "))
                },
                self.elapsed.as_secs_f64()
            )
        }
    }
}

/// Runs the backend's partitions until idle (`until_idle`) or `shutdown`.
pub fn run(
    backend: Logs,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let mut summary = RunSummary::default();
    check_thread_bound(match &backend {
        Logs::Embedded(log) => log.partitions(),
        Logs::Kafka { n, .. } => *n,
    })?;
    match backend {
        Logs::Embedded(log) => {
            let shared = Arc::new(Partitions::owned(log.partitions()));
            let shell = Shell::start(
                Shell::bind(opts.http)?,
                AppState::new(Served {
                    ingest: log.clone(),
                    partitions: shared.clone(),
                    metrics: metrics.clone(),
                    member: owner::owner_id(),
                    advertise: None,
                    forwarder: None,
                    token: opts.token.clone(),
                    input_ends: Default::default(),
                    shutdown: shutdown.clone(),
                    about: About::new("embedded", None),
                }),
                &shutdown,
            )?;
            // Owners sleep on the log's append signal: wake them for shutdown too.
            let wake = log.clone();
            let observed = shutdown.clone();
            shell.runtime.spawn(async move {
                observed.wait().await;
                wake.appended().notify();
            });
            summary.http = shell.http;
            let options = owner::Options {
                batch_size: opts.batch_size,
                until_idle: opts.until_idle,
                ..Default::default()
            };
            let result = owner::embedded::run(&log, &shared, &metrics, &options, &shutdown);
            shell.stop(&shutdown);
            let owned = result?;
            summary.processed = owned.processed;
            summary.applied = owned.applied;
            summary.restored = owned.restored;
            summary.counted = true;
        }
        Logs::Kafka { options: kafka, n } => {
            if let (Some(http), None) = (opts.http, &opts.advertise)
                && http.ip().is_unspecified()
            {
                return Err(RunError::Unadvertised { http });
            }
            // Refuse to start on topics that do not match N or are not co-partitioned, or while
            // a change of N is under way; the producer and the restore reader connect
            // meanwhile.
            let (connections, checks) = owner::group::Connections::open(&kafka, || {
                std::thread::scope(|s| {
                    let moving = s.spawn(|| check_no_repartition(&kafka));
                    let transactions = s.spawn(|| match opts.guarantee {
                        owner::Guarantee::ExactlyOnce { .. } => check_transactions(&kafka),
                        owner::Guarantee::AtLeastOnce => Ok(()),
                    });
                    let checked = check_topics(&kafka, n);
                    let joined = |h: std::thread::ScopedJoinHandle<'_, _>| {
                        h.join().unwrap_or_else(|_| {
                            Err(KafkaLogError::Restore("a start-up check panicked".into()))
                        })
                    };
                    (joined(moving), joined(transactions), checked)
                })
            });
            let (moving, transactions, checked) = checks;
            moving?;
            checked?;
            transactions?;
            let connections = connections?;
            let producer = connections.producer.clone();
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "topics checked, connected"
            );
            let shared = Arc::new(Partitions::new(n));
            let ingest: Arc<dyn Ingest> = Arc::new(KafkaIngest {
                producer: producer.clone(),
                events_topic: kafka.topic(Role::Events),
                client: kafka.metadata_client()?,
                opts: kafka.clone(),
                partitions: n,
            });
            // The listener is bound first: the advertised URL may name the port it got.
            let listener = Shell::bind(opts.http)?;
            let bound = listener.as_ref().map(|(_, addr)| *addr);
            let advertise = match (&opts.advertise, bound) {
                (Some(url), Some(_)) => Some(url.clone()),
                (None, Some(addr)) => Some(format!("http://{addr}")),
                (_, None) => None,
            };
            let options = owner::Options {
                batch_size: opts.batch_size,
                until_idle: opts.until_idle,
                advertise: advertise.clone(),
                guarantee: opts.guarantee,
                owners_key: opts.token.as_ref().map(http::auth::Token::owners_key),
                ..Default::default()
            };
            let shell = Shell::start(
                listener,
                AppState::new(Served {
                    ingest,
                    partitions: shared.clone(),
                    metrics: metrics.clone(),
                    member: options.owner_id.clone(),
                    advertise,
                    forwarder: Some(Forwarder::new(opts.token.clone())),
                    token: opts.token.clone(),
                    input_ends: Default::default(),
                    shutdown: shutdown.clone(),
                    about: About::new(
                        "kafka",
                        Some((
                            kafka.group.clone(),
                            kafka.group_protocol.as_str().to_owned(),
                        )),
                    ),
                }),
                &shutdown,
            )?;
            summary.http = shell.http;
            let result = owner::group::run(
                &kafka,
                n,
                connections,
                &shared,
                &metrics,
                &options,
                &shutdown,
            );
            shell.stop(&shutdown);
            summary.processed = result?.consumed;
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The async shell around the partition threads: HTTP (when asked for) and signals.
struct Shell {
    runtime: tokio::runtime::Runtime,
    http: Option<SocketAddr>,
    /// The HTTP server, which drains the requests in flight once shutdown is triggered.
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Shell {
    /// Binds the HTTP listener (when asked for): the address it got.
    fn bind(
        http: Option<SocketAddr>,
    ) -> Result<Option<(std::net::TcpListener, SocketAddr)>, RunError> {
        let Some(addr) = http else {
            return Ok(None);
        };
        let listen = |source| RunError::Listen { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(listen)?;
        listener.set_nonblocking(true).map_err(listen)?;
        let local = listener.local_addr().map_err(listen)?;
        Ok(Some((listener, local)))
    }

    fn start(
        listener: Option<(std::net::TcpListener, SocketAddr)>,
        state: AppState,
        shutdown: &Shutdown,
    ) -> Result<Shell, RunError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ordo-http")
            .enable_all()
            .build()
            .map_err(RunError::Runtime)?;
        let mut served = None;
        let bound = match listener {
            Some((listener, local)) => {
                let listener = {
                    let _entered = runtime.enter();
                    tokio::net::TcpListener::from_std(listener).map_err(|source| {
                        RunError::Listen {
                            addr: local,
                            source,
                        }
                    })?
                };
                // Tests and operators parse this line to find a port picked with `:0`.
                eprintln!("ordo: http listening on {local}");
                info!(addr = %local, "http listening");
                served = Some(runtime.spawn(http::serve(listener, state, shutdown.clone())));
                Some(local)
            }
            None => None,
        };
        // SIGINT / SIGTERM / SIGHUP: finish the current batch, flush, exit.
        let on_signal = shutdown.clone();
        runtime.spawn(async move {
            wait_for_signal().await;
            info!("shutdown requested");
            on_signal.trigger();
        });
        Ok(Shell {
            runtime,
            http: bound,
            served,
        })
    }

    /// Ends HTTP (after the owners are done) and the runtime.
    fn stop(self, shutdown: &Shutdown) {
        shutdown.trigger();
        // The requests in flight are answered (a failed append with its 503) before the
        // runtime, and every task on it, is dropped; the drain is bounded by the server.
        if let Some(served) = self.served {
            let _ = self.runtime.block_on(served);
        }
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // SIGHUP (the terminal went away, or a supervisor's reload) stops as SIGTERM does:
        // ordo has no configuration to reload.
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
