//! The command line (SPEC §5): clap definitions and the commands behind them. Every flag also
//! reads an `ORDO_*` environment variable. Exit status: 0 success, 2 bad usage or
//! configuration, 1 runtime failure; errors are one line on stderr.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::log::embedded::{EmbeddedLog, LogError, OpenOptions};
use crate::log::headers;
use crate::log::kafka::{KafkaLogError, KafkaOptions};
use crate::metrics::Metrics;
use crate::partitioner::{PartitionCount, Partitioner};
use crate::processor::{self, DEFAULT_DATA_DIR, RunOptions};
use crate::produce::{self, Validation};
use crate::reference::Model;
use crate::replay::{OffsetSpec, export, rebuild, repartition};
use crate::topics::{self, Role};
use crate::worker::DEFAULT_BATCH_SIZE;

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
    /// Move the data dir to another N, keeping per-key order (dry run unless `--apply`).
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
    /// Topic: reservation-events, reservation-state or reservation-events.dlq.
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
    /// Make the replay the live changelog (full replays of the data dir only).
    #[arg(long, env = "ORDO_APPLY", conflicts_with_all = ["diff", "file"])]
    pub apply: bool,
}

/// `ordo repartition`.
#[derive(Debug, Args)]
pub struct RepartitionArgs {
    #[command(flatten)]
    pub store: StoreArgs,
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
    /// Drive the gateway over loopback: ingest, then read-your-writes queries.
    Gateway {
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Reservations to send (and then query).
        #[arg(long, default_value_t = 40_000)]
        requests: usize,
        /// N.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
    },
    /// On a broker without ordo topics: produce, raw consume, then `run --until-idle`.
    Kafka {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Events to generate.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// N.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
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
    /// Consumer group of `ordo run`.
    #[arg(long, env = "ORDO_GROUP", default_value = crate::log::kafka::DEFAULT_GROUP)]
    pub group: String,
    /// A librdkafka property `key=value`, repeatable (as kcat's -X): security, timeouts, …
    #[arg(
        short = 'X',
        value_name = "KEY=VALUE",
        env = "ORDO_KAFKA_PROPERTIES",
        value_delimiter = ','
    )]
    pub properties: Vec<String>,
}

impl KafkaArgs {
    fn options(&self, partitioner: Option<Partitioner>) -> Result<Option<KafkaOptions>, Failure> {
        let Some(brokers) = &self.brokers else {
            return Ok(None);
        };
        let properties = self
            .properties
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| {
                        Failure::usage(format!(
                            "-X {p}: expected key=value, e.g. -X security.protocol=SSL"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(KafkaOptions {
            brokers: brokers.clone(),
            group: self.group.clone(),
            properties,
            partitioner: partitioner.unwrap_or_default(),
        }))
    }
}

impl From<KafkaLogError> for Failure {
    fn from(e: KafkaLogError) -> Self {
        Failure::of(e.is_usage(), e.to_string())
    }
}

/// N on Kafka: the flags', which must match the topics, or the input topic's partition count.
fn kafka_partitions(
    opts: &KafkaOptions,
    flags: Option<PartitionCount>,
) -> Result<PartitionCount, Failure> {
    let client = opts.metadata_client()?;
    let topic = topics::get(Role::Events).name;
    let actual = crate::log::kafka::partition_count(&client, opts, &topic)?
        .and_then(PartitionCount::new)
        .ok_or_else(|| {
            Failure::from(KafkaLogError::MissingTopic {
                topic: topic.clone(),
            })
        })?;
    match flags {
        Some(n) if n != actual => Err(KafkaLogError::PartitionMismatch {
            topic,
            actual: actual.get(),
            expected: n.get(),
        }
        .into()),
        _ => Ok(actual),
    }
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
    #[arg(long, env = "ORDO_PARTITIONER", value_enum)]
    pub partitioner: Option<Partitioner>,
}

impl TopologyArgs {
    fn count(&self) -> Result<Option<PartitionCount>, Failure> {
        PartitionCount::from_flags(self.containers, self.servers, self.partitions)
            .map_err(|e| Failure::usage(e.to_string()))
    }

    fn open_options(&self, create: bool) -> Result<OpenOptions, Failure> {
        Ok(OpenOptions {
            partitions: self.count()?,
            partitioner: self.partitioner,
            create,
            cache_bytes: None,
        })
    }
}

/// `ordo run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topology: TopologyArgs,
    /// HTTP listen address (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "ORDO_HTTP", default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// Serve no HTTP.
    #[arg(long, env = "ORDO_NO_HTTP")]
    pub no_http: bool,
    /// Exit once every partition has caught up with its input.
    #[arg(long, env = "ORDO_UNTIL_IDLE")]
    pub until_idle: bool,
    /// Input records per batch (one durable commit per batch).
    #[arg(long, env = "ORDO_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub batch_size: usize,
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
    #[arg(long, env = "ORDO_PARTITIONER", value_enum, default_value_t = Partitioner::AbsHashModN)]
    pub partitioner: Partitioner,
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

/// A failed command: its message and exit status (2 bad usage, 1 failure, 3 replay differs).
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    fn of(usage: bool, message: String) -> Self {
        Failure {
            code: if usage { 2 } else { 1 },
            message,
        }
    }
}

impl From<LogError> for Failure {
    fn from(e: LogError) -> Self {
        Failure::of(e.is_usage(), e.to_string())
    }
}

impl From<produce::ProduceError> for Failure {
    fn from(e: produce::ProduceError) -> Self {
        Failure::of(e.is_usage(), e.to_string())
    }
}

impl From<processor::RunError> for Failure {
    fn from(e: processor::RunError) -> Self {
        Failure::of(e.is_usage(), e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::runtime(format!("cannot write output: {e}"))
    }
}

/// Parses the command line, runs the command, and returns the exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let default = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default))
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ordo: error: invalid --log filter: {e}; use e.g. `info` or `ordo=debug`");
            return 2;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match execute(cli.command) {
        Ok(()) => 0,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("ordo: error: {}", f.message);
            }
            f.code
        }
    }
}

/// Runs one command.
pub fn execute(command: Command) -> Result<(), Failure> {
    match command {
        Command::Demo(a) => demo(a),
        Command::Run(a) => run(a),
        Command::Produce(a) => produce_cmd(a),
        Command::State(a) => state(a),
        Command::Partition(a) => partition(a),
        Command::Plan(a) => plan(a),
        Command::Topics(a) => topics_cmd(a),
        Command::Export(a) => export(a),
        Command::Replay(a) => replay(a),
        Command::Repartition(a) => repartition(a),
        Command::Bench(a) => bench(a),
    }
}

fn run(a: RunArgs) -> Result<(), Failure> {
    let options = RunOptions {
        http: (!a.no_http).then_some(a.http),
        until_idle: a.until_idle,
        batch_size: a.batch_size,
    };
    if let Some(kafka) = a.kafka.options(a.topology.partitioner)? {
        let n = kafka_partitions(&kafka, a.topology.count()?)?;
        let summary = crate::group::run(
            kafka,
            n,
            options,
            Arc::new(Metrics::fresh()),
            Arc::new(AtomicBool::new(false)),
        )
        .map_err(|e| Failure::of(e.is_usage(), e.to_string()))?;
        eprintln!(
            "ordo: consumed {} records in {:.2}s",
            summary.processed,
            summary.elapsed.as_secs_f64()
        );
        return Ok(());
    }
    let log = Arc::new(EmbeddedLog::open(
        &a.store.data_dir,
        a.topology.open_options(true)?,
    )?);
    let summary = processor::run(
        log,
        options,
        Arc::new(Metrics::fresh()),
        Arc::new(AtomicBool::new(false)),
    )?;
    eprintln!(
        "ordo: processed {} records ({} transitions) in {:.2}s; restored {} reservations",
        summary.processed,
        summary.applied,
        summary.elapsed.as_secs_f64(),
        summary.restored
    );
    Ok(())
}

fn produce_cmd(a: ProduceArgs) -> Result<(), Failure> {
    let validation = match (a.raw, a.skip_invalid) {
        (true, _) => Validation::Raw,
        (false, true) => Validation::SkipInvalid,
        (false, false) => Validation::Strict,
    };
    if let Some(kafka) = a.kafka.options(a.topology.partitioner)? {
        return produce_kafka(&a, &kafka, validation);
    }
    let open = a.topology.open_options(true)?;
    // Validate the whole file before touching the data dir: a bad file writes nothing.
    let report = match (&a.file, a.generate) {
        (Some(path), _) => {
            let n = open
                .partitions
                .or_else(|| stored_partitions(&a.store.data_dir));
            let log_n = n.unwrap_or(PartitionCount::new(1).expect("1 > 0"));
            let partitioner = open
                .partitioner
                .or_else(|| stored_partitioner(&a.store.data_dir))
                .unwrap_or_default();
            let (records, skipped) = produce::read_file(path, validation, log_n, partitioner)?;
            let log = EmbeddedLog::open(
                &a.store.data_dir,
                OpenOptions {
                    partitions: Some(log_n),
                    partitioner: Some(partitioner),
                    ..open
                },
            )?;
            let appended = produce::append(&log, records)?;
            produce::Report { appended, skipped }
        }
        (None, Some(count)) => {
            let log = EmbeddedLog::open(&a.store.data_dir, open)?;
            produce::produce_generated(&log, count, a.seed)?
        }
        (None, None) => unreachable!("clap requires --file or --generate"),
    };
    for s in &report.skipped {
        eprintln!("ordo: skipped line {}: {}", s.line, s.error);
    }
    eprintln!(
        "ordo: appended {} events to {}{}",
        report.appended,
        a.store.data_dir.display(),
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {} invalid lines", report.skipped.len())
        }
    );
    Ok(())
}

/// N of an existing data dir, read without holding it open.
fn stored_partitions(dir: &std::path::Path) -> Option<PartitionCount> {
    EmbeddedLog::open(dir, OpenOptions::default())
        .ok()
        .map(|l| l.partitions())
}

fn stored_partitioner(dir: &std::path::Path) -> Option<Partitioner> {
    EmbeddedLog::open(dir, OpenOptions::default())
        .ok()
        .map(|l| l.partitioner())
}

fn state(a: StateArgs) -> Result<(), Failure> {
    let snapshot = match a.kafka.options(None)? {
        Some(kafka) => kafka_snapshot(&kafka)?,
        None => processor::snapshot(&EmbeddedLog::open(
            &a.store.data_dir,
            OpenOptions::default(),
        )?)?,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        Format::Ndjson => {
            for record in snapshot.values() {
                serde_json::to_writer(&mut out, record)
                    .map_err(|e| Failure::runtime(e.to_string()))?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn partition(a: PartitionArgs) -> Result<(), Failure> {
    let n = a.topology.count()?.ok_or_else(|| {
        Failure::usage("no partition count; pass --partitions N or --containers C --servers S")
    })?;
    let p = a
        .topology
        .partitioner
        .unwrap_or_default()
        .partition(&a.key, n);
    println!("{p}");
    Ok(())
}

fn plan(a: PlanArgs) -> Result<(), Failure> {
    let n = PartitionCount::from_flags(Some(a.containers), Some(a.servers), None)
        .map_err(|e| Failure::usage(e.to_string()))?
        .expect("both flags given");
    println!(
        "# N = containers × servers = {} × {} = {n}",
        a.containers, a.servers
    );
    println!("partitions: {n}");
    println!("partitioner: {}", a.partitioner);
    println!("topics:");
    for (name, parts, config) in topics::describe(n) {
        println!("  - name: {name}");
        println!("    partitions: {parts}");
        println!("    config:");
        for (k, v) in config {
            println!("      {k}: \"{v}\"");
        }
    }
    println!("# helm install ordo ./helm/ordo -f values-plan.yaml, with:");
    println!("helm:");
    println!("  servers: {}", a.servers);
    println!("  containers: {}", a.containers);
    println!("  partitioner: {}", a.partitioner);
    Ok(())
}

/// Malformed lines mixed into the demo workload, one per this many events.
const DEMO_MALFORMED_EVERY: usize = 1000;

fn demo_malformed(i: usize) -> String {
    match i % 4 {
        0 => "{\"type\":\"reservation\",\"event_id\":".to_owned(),
        1 => format!(
            "{{\"type\":\"refund\",\"event_id\":\"bad-{i}\",\"reservation_no\":\"R-x\",\"user_id\":\"u\"}}"
        ),
        2 => format!(
            "{{\"type\":\"association\",\"event_id\":\"bad-{i}\",\"reservation_no\":\"\",\"user_id\":\"u\"}}"
        ),
        _ => "not json at all".to_owned(),
    }
}

fn demo(a: DemoArgs) -> Result<(), Failure> {
    let n = PartitionCount::from_flags(Some(a.containers), Some(a.servers), None)
        .map_err(|e| Failure::usage(e.to_string()))?
        .expect("both flags given");
    let temp;
    let dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir()
                .map_err(|e| Failure::runtime(format!("cannot create a temp dir: {e}")))?;
            temp.path().to_path_buf()
        }
    };
    let partitioner = Partitioner::AbsHashModN;
    println!(
        "ordo demo: {} events, N = {} containers × {} servers = {n} partitions, data dir {}",
        a.events,
        a.containers,
        a.servers,
        dir.display()
    );
    let events = crate::generate::generate(a.events, a.seed);
    let mut lines: Vec<Vec<u8>> =
        Vec::with_capacity(events.len() + events.len() / DEMO_MALFORMED_EVERY);
    let mut malformed = 0u64;
    for (i, e) in events.iter().enumerate() {
        if i % DEMO_MALFORMED_EVERY == DEMO_MALFORMED_EVERY - 1 {
            lines.push(demo_malformed(i).into_bytes());
            malformed += 1;
        }
        lines.push(e.to_json().into_bytes());
    }
    let records: Vec<_> = lines
        .iter()
        .map(|l| produce::route_raw(l, n, partitioner))
        .collect();

    let log = Arc::new(EmbeddedLog::open(
        &dir,
        OpenOptions {
            partitions: Some(n),
            partitioner: Some(partitioner),
            create: true,
            cache_bytes: None,
        },
    )?);
    let total = records.len() as f64;
    let t0 = Instant::now();
    produce::append(&log, records)?;
    let produce_secs = t0.elapsed().as_secs_f64();
    let metrics = Arc::new(Metrics::fresh());
    let summary = processor::run(
        log.clone(),
        RunOptions {
            http: None,
            until_idle: true,
            batch_size: DEFAULT_BATCH_SIZE,
        },
        metrics,
        Arc::new(AtomicBool::new(false)),
    )?;
    let process_secs = summary.elapsed.as_secs_f64();

    // The independent check: a plain model over the same events in log order.
    let model = Model::run(&events);
    let snapshot = processor::snapshot(&log)?;
    let mut dead_letters: BTreeMap<String, u64> = BTreeMap::new();
    for p in n.iter() {
        log.scan(Role::DeadLetters, p, 0, |r| {
            let reason = r
                .headers
                .iter()
                .find(|(k, _)| k == headers::REASON)
                .map_or("?", |(_, v)| v.as_str());
            *dead_letters.entry(reason.to_owned()).or_default() += 1;
            Ok(true)
        })?;
    }
    let mut problems = Vec::new();
    if snapshot.len() != model.states.len() {
        problems.push(format!(
            "{} reservations in state, {} in the reference",
            snapshot.len(),
            model.states.len()
        ));
    }
    for (no, want) in &model.states {
        match snapshot.get(no.as_str()) {
            None => problems.push(format!("{no}: missing")),
            Some(got) => {
                let same = got.state.as_str() == want.state
                    && got.user_id == want.user.as_str()
                    && got.target.as_deref() == want.target.as_deref()
                    && got.version as usize == want.applied.len()
                    && got
                        .applied_event_ids
                        .iter()
                        .map(|s| s.as_str())
                        .eq(want.applied.iter().map(String::as_str));
                if !same {
                    problems.push(format!(
                        "{no}: got {} v{}, want {} v{}",
                        got.state,
                        got.version,
                        want.state,
                        want.applied.len()
                    ));
                }
            }
        }
    }
    let mut want_dead: BTreeMap<String, u64> = model
        .rejects
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    if malformed > 0 {
        want_dead.insert("malformed".to_owned(), malformed);
    }
    if dead_letters != want_dead {
        problems.push(format!(
            "dead letters {dead_letters:?}, reference {want_dead:?}"
        ));
    }

    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for r in snapshot.values() {
        *by_state.entry(r.state.as_str()).or_default() += 1;
    }
    println!(
        "  produce   {produce_secs:>7.2} s  {:>9.0} events/s",
        total / produce_secs
    );
    println!(
        "  process   {process_secs:>7.2} s  {:>9.0} events/s  (restore, {n} partition threads, durable commits)",
        total / process_secs
    );
    println!(
        "  state     {} reservations: {}",
        snapshot.len(),
        by_state
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  outcomes  {} transitions, {} duplicates, {} malformed",
        model.applied, model.duplicates, malformed
    );
    println!(
        "  rejects   {}",
        model
            .rejects
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if problems.is_empty() {
        println!(
            "  check     OK: every reservation (state, user, target, version, applied ids) and every dead letter equals the reference model"
        );
        Ok(())
    } else {
        for p in problems.iter().take(10) {
            println!("  mismatch  {p}");
        }
        Err(Failure::runtime(format!(
            "demo check failed: {} mismatches against the reference model",
            problems.len()
        )))
    }
}

fn bench(a: BenchArgs) -> Result<(), Failure> {
    let fail = |e: crate::bench::BenchError| Failure::runtime(e.to_string());
    let count =
        |n| PartitionCount::new(n).ok_or_else(|| Failure::usage("--partitions must be at least 1"));
    match a.what {
        BenchWhat::E2e {
            events,
            partitions,
            batch_size,
        } => {
            let r =
                crate::bench::e2e(events, count(partitions)?, batch_size.max(1)).map_err(fail)?;
            println!(
                "e2e: {} events, N = {}: produce {:.2} s ({:.0} events/s), run --until-idle {:.2} s ({:.0} events/s), together {:.0} events/s",
                r.events,
                r.partitions,
                r.produce_secs,
                r.events as f64 / r.produce_secs,
                r.run_secs,
                r.events as f64 / r.run_secs,
                r.events as f64 / (r.produce_secs + r.run_secs)
            );
        }
        BenchWhat::Gateway {
            clients,
            requests,
            partitions,
        } => {
            let r = crate::bench::gateway(clients.max(1), requests, count(partitions)?)
                .map_err(fail)?;
            println!(
                "gateway: {} clients, {} requests each way, N = {partitions}: ingest {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms); \
                 read-your-writes {:.0} req/s (p50 {:.2} ms, p99 {:.2} ms)",
                r.clients,
                r.requests,
                r.ingest_per_sec,
                r.ingest_p50_ms,
                r.ingest_p99_ms,
                r.read_per_sec,
                r.read_p50_ms,
                r.read_p99_ms
            );
        }
        BenchWhat::Kafka {
            kafka,
            events,
            partitions,
        } => {
            let opts = kafka.options(None)?.ok_or_else(|| {
                Failure::usage("pass --brokers host:port of a broker without ordo topics")
            })?;
            let r = crate::bench::kafka(&opts, events, count(partitions)?)
                .map_err(|e| Failure::of(e.is_usage(), e.to_string()))?;
            let raw = r.events as f64 / r.raw_consume_secs;
            let run = r.events as f64 / r.run_secs;
            println!(
                "kafka: {} events, N = {}: produce {:.0} events/s; raw consume {:.0} msg/s; run --until-idle {:.0} events/s ({:.0}% of raw; restore, state records and dead letters acknowledged)",
                r.events,
                r.partitions,
                r.events as f64 / r.produce_secs,
                raw,
                run,
                run * 100.0 / raw
            );
        }
        BenchWhat::Restore {
            entries,
            partitions,
        } => {
            let r = crate::bench::restore(entries, count(partitions)?).map_err(fail)?;
            println!(
                "restore: {} entries over {} partitions in {:.2} s ({:.0} entries/s); RSS {} MiB before, {} MiB with the state in memory",
                r.entries,
                r.partitions,
                r.secs,
                r.entries as f64 / r.secs,
                r.rss_before >> 20,
                r.rss_after >> 20
            );
        }
    }
    Ok(())
}

fn role_of(topic: &str) -> Result<Role, Failure> {
    topics::all()
        .into_iter()
        .find(|d| d.name == topic)
        .map(|d| d.role)
        .ok_or_else(|| {
            Failure::usage(format!(
                "unknown topic `{topic}`; use reservation-events, reservation-state or reservation-events.dlq"
            ))
        })
}

fn export(a: ExportArgs) -> Result<(), Failure> {
    let role = role_of(&a.topic)?;
    let spec = OffsetSpec::parse(&a.offsets).map_err(Failure::usage)?;
    let log = EmbeddedLog::open(&a.store.data_dir, OpenOptions::default())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    export::export(&log, role, a.partition, spec, a.count, &mut out).map_err(|e| match e {
        export::ExportError::NoPartition { .. } => Failure::usage(e.to_string()),
        export::ExportError::Log(l) => Failure::from(l),
        export::ExportError::Write(_) => Failure::runtime(e.to_string()),
    })?;
    out.flush()?;
    Ok(())
}

fn replay(a: ReplayArgs) -> Result<(), Failure> {
    let spec = OffsetSpec::parse(&a.offsets).map_err(Failure::usage)?;
    if let Some(kafka) = a.kafka.options(a.topology.partitioner)? {
        if !spec.is_everything() || a.apply || a.file.is_some() {
            return Err(Failure::usage(
                "on Kafka, replay runs over the whole input topic: drop -o, --file and --apply",
            ));
        }
        let n = kafka_partitions(&kafka, a.topology.count()?)?;
        let t0 = Instant::now();
        let result = rebuild::replay_kafka(&kafka, n)?;
        let live = if a.diff {
            Some(kafka_snapshot(&kafka)?)
        } else {
            None
        };
        return replay_output(&result, t0.elapsed().as_secs_f64(), live.as_ref());
    }
    let needs_log = a.diff || a.apply || a.file.is_none();
    let log = if needs_log {
        Some(EmbeddedLog::open(
            &a.store.data_dir,
            a.topology.open_options(false)?,
        )?)
    } else {
        None
    };
    let t0 = Instant::now();
    let result = match (&a.file, &log) {
        (Some(path), _) => {
            let n = match &log {
                Some(l) => l.partitions(),
                None => a
                    .topology
                    .count()?
                    .unwrap_or(PartitionCount::new(1).expect("1 > 0")),
            };
            let partitioner = log
                .as_ref()
                .map_or(a.topology.partitioner.unwrap_or_default(), |l| {
                    l.partitioner()
                });
            rebuild::replay_file(path, n, partitioner)?
        }
        (None, Some(log)) => {
            if a.apply && !spec.is_everything() {
                return Err(Failure::usage("--apply needs a full replay; drop -o"));
            }
            rebuild::replay_log(log, spec, None)?
        }
        (None, None) => unreachable!("a log is opened unless --file is given"),
    };
    let secs = t0.elapsed().as_secs_f64();
    if a.apply {
        let log = log.as_ref().expect("--apply opens the log");
        report_replay(&result, secs);
        rebuild::apply(log, &result, &processor::owner_id())?;
        eprintln!(
            "ordo: the replayed state of {} reservations is now the live changelog",
            result.states.len()
        );
        return Ok(());
    }
    let live = match (&log, a.diff) {
        (Some(log), true) => Some(processor::snapshot(log)?),
        _ => None,
    };
    replay_output(&result, secs, live.as_ref())
}

fn report_replay(result: &rebuild::Replay, secs: f64) {
    eprintln!(
        "ordo: replayed {} records in {secs:.2}s ({:.0} records/s): {} transitions, {} duplicates, {} malformed, {} misrouted, rejects {:?}",
        result.summary.records,
        result.summary.records as f64 / secs.max(1e-9),
        result.summary.applied,
        result.summary.duplicates,
        result.summary.malformed,
        result.summary.misrouted,
        result.summary.rejects
    );
}

/// Prints a replay: the rebuilt state, or with `live` the differences (exit 3 when any).
fn replay_output(
    result: &rebuild::Replay,
    secs: f64,
    live: Option<&BTreeMap<crate::event::ReservationNo, crate::changelog::StateRecord>>,
) -> Result<(), Failure> {
    report_replay(result, secs);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(live) = live {
        let differences = rebuild::diff(&result.states, live);
        for d in &differences {
            serde_json::to_writer(&mut out, d).map_err(|e| Failure::runtime(e.to_string()))?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        if differences.is_empty() {
            eprintln!(
                "ordo: replay equals the live changelog ({} reservations)",
                live.len()
            );
            return Ok(());
        }
        return Err(Failure {
            code: 3,
            message: format!(
                "replay differs from the live changelog in {} reservations",
                differences.len()
            ),
        });
    }
    for record in result.states.values() {
        serde_json::to_writer(&mut out, record).map_err(|e| Failure::runtime(e.to_string()))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn repartition(a: RepartitionArgs) -> Result<(), Failure> {
    let to = match (a.to_partitions, a.containers, a.servers) {
        (None, None, None) => {
            return Err(Failure::usage(
                "no target; pass --to-partitions M or --containers C --servers S",
            ));
        }
        (p, c, s) => PartitionCount::from_flags(c, s, p)
            .map_err(|e| Failure::usage(e.to_string()))?
            .expect("a flag was given"),
    };
    let fail = |e: repartition::RepartitionError| match e {
        repartition::RepartitionError::Log(l) => Failure::from(l),
        other => Failure::runtime(other.to_string()),
    };
    let print = |plan: &repartition::Plan| {
        println!(
            "repartition {}: N {} → {} ({})",
            a.store.data_dir.display(),
            plan.from,
            plan.to,
            plan.partitioner
        );
        println!(
            "  input     {} records ({} MiB), {} not yet processed",
            plan.records,
            plan.bytes >> 20,
            plan.unprocessed
        );
        let pct = if plan.keys == 0 {
            0.0
        } else {
            plan.keys_moving as f64 * 100.0 / plan.keys as f64
        };
        println!(
            "  keys      {} keys, {} move to another partition ({pct:.0}%)",
            plan.keys, plan.keys_moving
        );
        println!("  new       records per partition {:?}", plan.per_partition);
        println!(
            "  state     {} reservations carried; {} dead letters",
            plan.state_entries, plan.dead_letters
        );
    };
    if !a.apply {
        let log = EmbeddedLog::open(&a.store.data_dir, OpenOptions::default())?;
        if log.partitions() == to {
            println!(
                "{} already has {to} partitions; nothing to do",
                a.store.data_dir.display()
            );
            return Ok(());
        }
        print(&repartition::plan(&log, to).map_err(fail)?);
        println!("  dry run: pass --apply to do it");
        return Ok(());
    }
    let t0 = Instant::now();
    match repartition::apply(&a.store.data_dir, to, &processor::owner_id()).map_err(fail)? {
        None => println!(
            "{} already has {to} partitions; nothing to do",
            a.store.data_dir.display()
        ),
        Some(plan) => {
            print(&plan);
            println!(
                "  done      in {:.2}s; check OK (per-key input order, state and dead letters equal); \
                 the previous generation is kept as {}.n{}.bak",
                t0.elapsed().as_secs_f64(),
                crate::log::embedded::DB_FILE,
                plan.from
            );
        }
    }
    Ok(())
}

fn topics_cmd(a: TopicsArgs) -> Result<(), Failure> {
    let kafka = a.kafka.options(a.topology.partitioner)?.ok_or_else(|| {
        Failure::usage("topics work on Kafka; pass --brokers host:port (or ORDO_BROKERS)")
    })?;
    let n = a.topology.count()?.ok_or_else(|| {
        Failure::usage("no partition count; pass --containers C --servers S or --partitions N")
    })?;
    let lines = match a.action {
        TopicsAction::Apply => crate::log::kafka::apply_topics(&kafka, n)?,
        TopicsAction::Check => crate::log::kafka::check_topics(&kafka, n)?,
    };
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

fn produce_kafka(
    a: &ProduceArgs,
    kafka: &KafkaOptions,
    validation: Validation,
) -> Result<(), Failure> {
    let n = kafka_partitions(kafka, a.topology.count()?)?;
    let (records, skipped) = match (&a.file, a.generate) {
        (Some(path), _) => produce::read_file(path, validation, n, kafka.partitioner)?,
        (None, Some(count)) => (
            crate::generate::Generator::new(a.seed)
                .take(count)
                .map(|e| {
                    let value = e.to_json().into_bytes();
                    produce::route(&e, value, n, kafka.partitioner)
                })
                .collect(),
            Vec::new(),
        ),
        (None, None) => unreachable!("clap requires --file or --generate"),
    };
    let producer = crate::log::kafka::KafkaProducer::new(kafka)?;
    let topic = topics::get(Role::Events).name;
    let total = records.len();
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<crate::log::kafka::Outgoing<'_>> = records
            .by_ref()
            .take(20_000)
            .map(|(partition, record)| crate::log::kafka::Outgoing {
                topic: &topic,
                partition,
                record,
            })
            .collect();
        producer.send_all(&chunk)?;
    }
    for s in &skipped {
        eprintln!("ordo: skipped line {}: {}", s.line, s.error);
    }
    eprintln!(
        "ordo: appended {total} events to {topic} on {}",
        kafka.brokers
    );
    Ok(())
}

/// Current state from the Kafka changelog, with the fencing rule.
fn kafka_snapshot(
    kafka: &KafkaOptions,
) -> Result<BTreeMap<crate::event::ReservationNo, crate::changelog::StateRecord>, Failure> {
    let client = kafka.metadata_client()?;
    let topic = topics::get(Role::State).name;
    let n = crate::log::kafka::partition_count(&client, kafka, &topic)?.ok_or_else(|| {
        Failure::from(KafkaLogError::MissingTopic {
            topic: topic.clone(),
        })
    })?;
    let mut all = BTreeMap::new();
    for p in 0..n {
        let mut reader = crate::changelog::Reader::default();
        crate::log::kafka::read_to_end(kafka, &topic, crate::partitioner::Partition(p), |r| {
            if let Ok(entry) = crate::changelog::Entry::decode(&r.key, &r.value)
                && let crate::changelog::Verdict::Accept(record) = reader.next(entry)
            {
                all.insert(record.reservation_no.clone(), record);
            }
        })?;
    }
    Ok(all)
}
