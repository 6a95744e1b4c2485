//! The clap definitions of every command. Flag groups shared by several commands (where the
//! logs are, the Kafka connection, N and the partitioner) are declared once and flattened in.
//! Every flag also reads an `ORDO_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::DEFAULT_DATA_DIR;
use crate::core::partitioner::Partitioner;
use crate::log::{DEFAULT_GROUP, GroupProtocol};
use crate::owner::DEFAULT_BATCH_SIZE;
use crate::tools::produce::DEFAULT_MAX_RECORD_BYTES;

/// `--partitioner`: the names of [`Partitioner`], listed in `--help`.
fn partitioner_parser() -> impl TypedValueParser<Value = Partitioner> {
    PossibleValuesParser::new(["abs-hash-mod-n", "murmur2"]).map(|s| {
        s.parse::<Partitioner>()
            .expect("a listed partitioner name parses")
    })
}

/// `--http`: `HOST:PORT`, `[V6]:PORT`, or `:PORT` (loopback). A host name is resolved, its
/// first IPv4 address preferred.
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let bad = |why: &str| {
        format!(
            "{why}; expected HOST:PORT, e.g. 127.0.0.1:8080, localhost:8080, :8080 (loopback) or \
             0.0.0.0:8080 (all interfaces)"
        )
    };
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad("not a port number"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    if port.parse::<u16>().is_err() {
        return Err(bad("not a port number"));
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| bad(&format!("cannot resolve {host}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| bad(&format!("{host} has no address")))
}

/// Default HTTP listen address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";

/// ordo: keyed, partitioned processing of reservation workflows, one thread per partition.
#[derive(Debug, Parser)]
#[command(name = "ordo", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `ordo=debug` [default: info for
    /// `run`, warn otherwise].
    #[arg(long, global = true, env = "ORDO_LOG")]
    pub log: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a workload, process it on a fresh embedded log, and check the result.
    Demo(DemoArgs),
    /// Run the processor: one thread per partition, plus the HTTP endpoint.
    Run(RunArgs),
    /// Append events from an NDJSON file or a generator.
    Produce(ProduceArgs),
    /// Print the current state of every reservation, from the changelog.
    State(StateArgs),
    /// Print the partition of a key.
    Partition(PartitionArgs),
    /// Print N, topic settings and Helm values for a deployment.
    Plan(PlanArgs),
    /// Create (`apply`) or verify (`check`) the topics of `topics/` on a Kafka cluster.
    Topics(TopicsArgs),
    /// Print the records of a topic as NDJSON (kcat-style offsets).
    Export(ExportArgs),
    /// Run the core over the input again into a scratch state; `--diff` compares it with the
    /// live changelog (exit 3 when they differ).
    Replay(ReplayArgs),
    /// Move the deployment to another N, keeping per-key order: the data dir, or with
    /// `--brokers` the Kafka topics (dry run unless `--apply`).
    Repartition(RepartitionArgs),
    /// Measure end-to-end throughput, or restore time and memory.
    Bench(BenchArgs),
}

/// `ordo topics`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// `apply` creates missing topics with N partitions and their configs; `check` verifies.
    #[arg(value_enum)]
    pub action: TopicsAction,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topology: TopologyArgs,
}

/// What `ordo topics` does.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TopicsAction {
    Apply,
    Check,
}

/// `ordo export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Topic: reservation-events, reservation-state, reservation-events.dlq, or (on Kafka)
    /// reservation-owners, and during a change of N the staging copies
    /// reservation-events.repartition, reservation-state.repartition and
    /// reservation-events.dlq.repartition.
    #[arg(long, env = "ORDO_TOPIC", default_value = "reservation-events")]
    pub topic: String,
    /// Offsets, as kcat: beginning, end, <offset>, -<n> (from the end), s@<epoch-ms>, and
    /// e@<epoch-ms> to stop; repeat for a start and an end.
    #[arg(
        short = 'o',
        long = "offset",
        env = "ORDO_OFFSET",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub offsets: Vec<String>,
    /// Only this partition.
    #[arg(long, env = "ORDO_PARTITION")]
    pub partition: Option<u32>,
    /// Stop after this many records.
    #[arg(long, env = "ORDO_COUNT")]
    pub count: Option<u64>,
    /// On Kafka: `read_committed` (what a downstream consumer of ordo's topics sees) or
    /// `read_uncommitted` (also the records of open and aborted transactions).
    #[arg(long, env = "ORDO_ISOLATION", default_value = "read_committed",
          value_parser = PossibleValuesParser::new(["read_committed", "read_uncommitted"]))]
    pub isolation: String,
}

/// `ordo replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// Offsets of the input to replay, as `ordo export -o`.
    #[arg(
        short = 'o',
        long = "offset",
        env = "ORDO_OFFSET",
        value_delimiter = ',',
        allow_hyphen_values = true,
        conflicts_with = "file"
    )]
    pub offsets: Vec<String>,
    /// Replay this NDJSON file instead of the data dir's input.
    #[arg(long, env = "ORDO_FILE")]
    pub file: Option<PathBuf>,
    /// Compare with the live changelog: print each reservation that differs, exit 3 if any.
    #[arg(long, env = "ORDO_DIFF")]
    pub diff: bool,
    /// Make the replay the live changelog (full replays of the input only).
    #[arg(long, env = "ORDO_APPLY", conflicts_with_all = ["diff", "file"])]
    pub apply: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// What the operator vouches for, past the refusals of a tool that changes a Kafka deployment.
#[derive(Debug, Args)]
pub struct OverrideArgs {
    /// On Kafka: the members that `reservation-owners` says hold partitions died without
    /// letting go (killed); go ahead.
    #[arg(long, env = "ORDO_ASSUME_STOPPED")]
    pub assume_stopped: bool,
    /// On Kafka: the tool that holds the deployment's lease (one `replay --apply` or
    /// `repartition --apply` at a time) was killed without letting go; take the lease from it.
    #[arg(long, env = "ORDO_TAKE_OVER_LEASE")]
    pub take_over_lease: bool,
}

impl OverrideArgs {
    pub fn overrides(&self) -> crate::tools::deployment::Overrides {
        crate::tools::deployment::Overrides {
            assume_stopped: self.assume_stopped,
            take_over_lease: self.take_over_lease,
        }
    }
}

/// `ordo repartition`.
#[derive(Debug, Args)]
pub struct RepartitionArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// On Kafka: the consumer group of `ordo run`, whose committed offsets a rebuild moves.
    #[arg(long, env = "ORDO_GROUP", default_value = DEFAULT_GROUP)]
    pub group: String,
    /// On Kafka: how keys map to partitions [default: abs-hash-mod-n].
    #[arg(long, env = "ORDO_PARTITIONER", value_parser = partitioner_parser())]
    pub partitioner: Option<Partitioner>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// On Kafka: move input not processed yet, unprocessed, to its new partition (it is
    /// processed there after the move) instead of refusing. Only a rebuild can: implies
    /// --rebuild.
    #[arg(long, env = "ORDO_ALLOW_UNPROCESSED")]
    pub allow_unprocessed: bool,
    /// On Kafka, growing: rebuild the topics (copy, delete, create with M partitions, refill)
    /// instead of adding partitions in place. Shrinking always rebuilds.
    #[arg(long, env = "ORDO_REBUILD")]
    pub rebuild: bool,
    /// The new N.
    #[arg(long, env = "ORDO_TO_PARTITIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub to_partitions: Option<u32>,
    /// The new containers per server (N = containers × servers).
    #[arg(long, env = "ORDO_CONTAINERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub containers: Option<u32>,
    /// The new servers.
    #[arg(long, env = "ORDO_SERVERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub servers: Option<u32>,
    /// Do it; without this, only print the plan.
    #[arg(long, env = "ORDO_APPLY")]
    pub apply: bool,
}

/// `ordo bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// The benchmarks of `ordo bench`.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Generate a file, `produce` it, then `run --until-idle` (fresh temp data dir).
    E2e {
        /// Events to generate.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// N.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
        /// Input records per batch.
        #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
        batch_size: usize,
    },
    /// Drive the gateway over loopback: ingest, then read-your-writes queries. With
    /// `--brokers`: two members of one group on that broker (which must hold no ordo topics),
    /// queries for local and forwarded keys and associations by user.
    Gateway {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Events to generate first (with --brokers).
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Reservations to send (and then query); with --brokers, requests of each kind.
        #[arg(long, default_value_t = 40_000)]
        requests: usize,
        /// N.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
        /// Embedded: then drive the same member with wrk, an independent load generator (installed with
        /// apt-get when missing and possible), for this many seconds with `--clients`
        /// connections: fresh reservations (`benches/wrk/post-reservations.lua`); 0 skips it.
        #[arg(long, default_value_t = 10)]
        wrk_secs: u64,
    },
    /// On a broker without ordo topics: produce, raw consume, then `run --until-idle`.
    Kafka {
        #[command(flatten)]
        on: BenchKafkaArgs,
        /// Events to generate.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
    },
    /// On Kafka: append → visible latency under a paced load, read by a plain
    /// `read_committed` consumer.
    KafkaLatency {
        #[command(flatten)]
        on: BenchKafkaArgs,
        /// Events appended per second.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// Seconds of load, the warm-up included.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(5..=600))]
        secs: u64,
        /// Seconds at the start of the load that are not measured (JIT, rebalances settling).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=300))]
        warm_up: u64,
    },
    /// `ordo run` on a fresh data dir at each N (with `--brokers`: on fresh topics of that
    /// cluster), idle: resident memory, threads and CPU once ready.
    Idle {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The partition counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "6,256,1024",
              value_parser = clap::value_parser!(u32).range(1..=1024))]
        partitions: Vec<u32>,
    },
    /// Restore N state entries from the changelog; report time and resident memory.
    Restore {
        /// State entries (reservations).
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// N.
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
    },
}

/// What both Kafka benchmarks take: the broker, N, the guarantee and the peer.
#[derive(Debug, Clone, Args)]
pub struct BenchKafkaArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// N.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub partitions: u32,
    /// `exactly-once`: ordo under `--guarantee exactly-once`, the peer under
    /// `exactly_once_v2`. `bench kafka` runs it after at-least-once, on the same records (a
    /// second set of topics under the prefix `eos.`).
    #[arg(long, default_value = "at-least-once",
          value_parser = PossibleValuesParser::new(["at-least-once", "exactly-once"]))]
    pub guarantee: String,
    /// The exactly-once runs' `--commit-interval`, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=60_000))]
    pub commit_interval: u64,
    /// `kafka-streams`: also measure the same workflow in Kafka Streams 4.4
    /// (`benches/kafka-streams`, built with Maven on first use), the same way, after ordo.
    #[arg(long, value_parser = PossibleValuesParser::new(["kafka-streams"]))]
    pub peer: Option<String>,
    /// ordo's source tree, which holds the peer (`benches/kafka-streams`).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub peer_dir: PathBuf,
}

/// Where the embedded log lives.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Data directory of the embedded log.
    #[arg(long, env = "ORDO_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// The Kafka backend: when `--brokers` is given, the command works on Kafka instead of the
/// embedded log.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers `host:port,...`; switches from the embedded log to Kafka.
    #[arg(long, env = "ORDO_BROKERS")]
    pub brokers: Option<String>,
    /// A librdkafka property `key=value`, repeatable (as kcat's -X): security, timeouts, …
    #[arg(
        short = 'X',
        value_name = "KEY=VALUE",
        env = "ORDO_KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub properties: Vec<String>,
    /// Put before every topic name, e.g. `staging.`: several deployments on one cluster.
    #[arg(long, env = "ORDO_TOPIC_PREFIX", default_value = "", value_parser = topic_prefix,
          hide_default_value = true)]
    pub topic_prefix: String,
}

/// `--topic-prefix`: characters Kafka allows in topic names.
fn topic_prefix(text: &str) -> Result<String, String> {
    crate::log::topics::check_prefix(text).map(|()| text.to_owned())
}

/// N and the partitioner.
#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// Partition threads per server; N = containers × servers.
    #[arg(long, env = "ORDO_CONTAINERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub containers: Option<u32>,
    /// Servers (processes); N = containers × servers.
    #[arg(long, env = "ORDO_SERVERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub servers: Option<u32>,
    /// N directly; must equal containers × servers when those are given too.
    #[arg(long, env = "ORDO_PARTITIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub partitions: Option<u32>,
    /// How keys map to partitions [default: abs-hash-mod-n, or the data dir's].
    #[arg(long, env = "ORDO_PARTITIONER", value_parser = partitioner_parser())]
    pub partitioner: Option<Partitioner>,
}

/// `ordo run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// On Kafka: the consumer group the members share.
    #[arg(long, env = "ORDO_GROUP", default_value = DEFAULT_GROUP)]
    pub group: String,
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// HTTP listen address: `HOST:PORT` (a name such as `localhost` is resolved), `:PORT` for
    /// loopback only; all interfaces only when asked for with `0.0.0.0:PORT` or `[::]:PORT`.
    /// Port 0 picks a free port.
    #[arg(long, env = "ORDO_HTTP", default_value = DEFAULT_HTTP, value_parser = listen_address)]
    pub http: SocketAddr,
    /// Serve no HTTP.
    #[arg(long, env = "ORDO_NO_HTTP")]
    pub no_http: bool,
    /// The base URL other members reach this member's HTTP listener at (Kafka), e.g.
    /// `http://ordo-0.ordo-headless.default.svc:8080` [default: http:// + the --http address,
    /// which must then be a concrete address].
    #[arg(long, env = "ORDO_ADVERTISE", value_name = "URL")]
    pub advertise: Option<String>,
    /// A file holding the bearer token the HTTP API requires (one line; every member of a
    /// deployment the same): all routes but `/healthz`, `/readyz`, `/metrics` and the status
    /// page's HTML then answer `401` without `Authorization: Bearer <token>`.
    #[arg(long, env = "ORDO_HTTP_TOKEN_FILE", value_name = "PATH")]
    pub http_token_file: Option<std::path::PathBuf>,
    /// Exit once every partition has caught up with its input.
    #[arg(long, env = "ORDO_UNTIL_IDLE")]
    pub until_idle: bool,
    /// Input records per batch (one durable commit per batch).
    #[arg(long, env = "ORDO_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub batch_size: usize,
    /// On Kafka: a stable member name (`group.instance.id`, static membership): a member back
    /// within the session timeout gets its partitions back with no rebalance. The Helm chart
    /// sets the pod name.
    #[arg(long, env = "ORDO_INSTANCE_ID", value_name = "NAME")]
    pub instance_id: Option<String>,
    /// On Kafka: the consumer-group protocol, `classic` (cooperative-sticky) or `consumer`
    /// (KIP-848, broker-side assignment; Apache Kafka 4.0 or later).
    #[arg(long, env = "ORDO_GROUP_PROTOCOL", default_value = "classic",
          value_parser = PossibleValuesParser::new(["classic", "consumer"])
              .map(|s| s.parse::<GroupProtocol>().expect("a listed protocol parses")))]
    pub group_protocol: GroupProtocol,
    /// On Kafka: what a plain `read_committed` consumer of ordo's topics sees.
    /// `at-least-once`: after a crash it may see a batch's records twice, and a zombie's
    /// records (ordo's own readers fence both). `exactly-once`: each batch's state records,
    /// dead letters, position mark and input offset commit in one Kafka transaction; needs a
    /// broker with transactions.
    #[arg(long, env = "ORDO_GUARANTEE", default_value = "at-least-once",
          value_parser = PossibleValuesParser::new(["at-least-once", "exactly-once"]))]
    pub guarantee: String,
    /// With `--guarantee exactly-once`: the longest a transaction stays open while input
    /// flows, in milliseconds (an idle partition commits at once). Longer means fewer commits
    /// and higher end-to-end latency.
    #[arg(long, env = "ORDO_COMMIT_INTERVAL", value_name = "MS", default_value_t = 100,
          value_parser = clap::builder::RangedU64ValueParser::<u64>::new().range(1..=60_000))]
    pub commit_interval: u64,
}

/// `ordo produce`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["file", "generate"]))]
pub struct ProduceArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// NDJSON file of events, one per line (`-` for stdin).
    #[arg(long, env = "ORDO_FILE")]
    pub file: Option<PathBuf>,
    /// Generate this many realistic events instead.
    #[arg(long, env = "ORDO_GENERATE")]
    pub generate: Option<usize>,
    /// Seed of the generator.
    #[arg(long, env = "ORDO_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Append the valid lines and report the invalid ones instead of failing.
    #[arg(long, env = "ORDO_SKIP_INVALID", conflicts_with = "raw")]
    pub skip_invalid: bool,
    /// Append lines unvalidated (bad records then reach the dead-letter log).
    #[arg(long, env = "ORDO_RAW")]
    pub raw: bool,
    /// The largest record accepted, in bytes; a longer line is an error (or skipped with
    /// --skip-invalid) and is never held in memory whole.
    #[arg(long, env = "ORDO_MAX_RECORD_BYTES", default_value_t = DEFAULT_MAX_RECORD_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=(64 << 20)))]
    pub max_record_bytes: usize,
}

/// Output formats of `ordo state`.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Ndjson,
}

/// `ordo state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Output format.
    #[arg(long, env = "ORDO_FORMAT", value_enum, default_value_t = Format::Ndjson)]
    pub format: Format,
}

/// `ordo partition`.
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// The reservation number.
    pub key: String,
    #[command(flatten)]
    pub topology: TopologyArgs,
}

/// `ordo plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Partition threads per server.
    #[arg(long, env = "ORDO_CONTAINERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub containers: u32,
    /// Servers (pods).
    #[arg(long, env = "ORDO_SERVERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub servers: u32,
    /// How keys map to partitions.
    #[arg(long, env = "ORDO_PARTITIONER", value_parser = partitioner_parser(), default_value = "abs-hash-mod-n")]
    pub partitioner: Partitioner,
    /// Print only the Helm values (a file for `helm install -f`).
    #[arg(long)]
    pub values: bool,
}

/// `ordo demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Events to generate.
    #[arg(long, env = "ORDO_EVENTS", default_value_t = 200_000)]
    pub events: usize,
    /// Seed of the generator.
    #[arg(long, env = "ORDO_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Partition threads per server.
    #[arg(long, env = "ORDO_CONTAINERS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub containers: u32,
    /// Servers; one process plays them all in the demo.
    #[arg(long, env = "ORDO_SERVERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub servers: u32,
    /// Keep the data dir here instead of a temporary one.
    #[arg(long, env = "ORDO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let ok = |s: &str| listen_address(s).unwrap().to_string();
        assert_eq!(ok("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(ok("0.0.0.0:9"), "0.0.0.0:9");
        assert_eq!(ok("[::1]:8080"), "[::1]:8080");
        // `:PORT` is loopback; all interfaces must be asked for.
        assert_eq!(ok(":8080"), "127.0.0.1:8080");
        assert!(listen_address("localhost:8080").unwrap().ip().is_loopback());
        for bad in ["8080", "localhost", ":http", "localhost:99999", ""] {
            let err = listen_address(bad).unwrap_err();
            assert!(err.contains("expected HOST:PORT"), "{bad}: {err}");
        }
    }
}
