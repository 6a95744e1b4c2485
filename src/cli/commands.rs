//! The commands around the processor: `run`, `produce`, `state`, `partition`, `plan`,
//! `topics`, `demo`, `bench`.

use std::io::{self, Write};
use std::sync::Arc;

use super::Error;
use super::args::{
    BenchArgs, BenchKafkaArgs, BenchWhat, DemoArgs, Format, PartitionArgs, PlanArgs, ProduceArgs,
    RunArgs, StateArgs, TopicsAction, TopicsArgs,
};
use super::options::{Access, deployment};
use crate::app::{self, RunOptions};
use crate::core::PartitionCount;
use crate::log::KafkaOptions;
use crate::log::topics::{self, Role};
use crate::log::{self, Logs};
use crate::metrics::Metrics;
use crate::owner::Guarantee;
use crate::shutdown::Shutdown;
use crate::tools::bench;
use crate::tools::demo::{self, DemoOptions};
use crate::tools::produce::{self, Validation};

/// `ordo demo`.
pub fn demo(a: DemoArgs) -> Result<(), Error> {
    let options = DemoOptions {
        events: a.events,
        seed: a.seed,
        containers: a.containers,
        servers: a.servers,
        data_dir: a.data_dir,
    };
    demo::run(&options, &mut io::stdout().lock())?;
    Ok(())
}

/// `--guarantee` (one of its listed values) with `--commit-interval` in milliseconds.
fn guarantee(name: &str, commit_interval_ms: u64) -> Guarantee {
    match name {
        "exactly-once" => Guarantee::ExactlyOnce {
            commit_interval: std::time::Duration::from_millis(commit_interval_ms),
        },
        _ => Guarantee::AtLeastOnce,
    }
}

impl BenchKafkaArgs {
    /// The broker's options, N, the guarantee and the systems to measure (ordo, then the peer
    /// if asked for), checked before any broker work.
    fn resolve(
        &self,
    ) -> Result<
        (
            KafkaOptions,
            PartitionCount,
            Guarantee,
            Vec<bench::peer::System>,
        ),
        Error,
    > {
        let opts = self.kafka.options(None)?.ok_or_else(|| {
            Error::usage("pass --brokers host:port of a broker without ordo topics")
        })?;
        let mut systems = vec![bench::peer::System::Ordo];
        if self.peer.is_some() {
            systems.push(bench::peer::System::kafka_streams(&self.peer_dir).map_err(Error::usage)?);
        }
        Ok((
            opts,
            count(self.partitions)?,
            guarantee(&self.guarantee, self.commit_interval),
            systems,
        ))
    }
}

/// `ordo run`.
pub fn run(a: RunArgs) -> Result<(), Error> {
    let options = RunOptions {
        http: (!a.no_http).then_some(a.http),
        until_idle: a.until_idle,
        batch_size: a.batch_size,
        guarantee: guarantee(&a.guarantee, a.commit_interval),
        advertise: match a.no_http {
            true => None,
            false => a.advertise.as_deref().map(advertised).transpose()?,
        },
        token: a
            .http_token_file
            .as_deref()
            .map(crate::http::auth::Token::from_file)
            .transpose()
            .map_err(|e| Error::usage(e.to_string()))?,
    };
    if let Some(n) = a.topology.count()? {
        // Before a data dir is created with an N that could never run.
        app::check_thread_bound(n)?;
    }
    let logs = deployment(
        &a.kafka,
        &a.store,
        a.topology.count()?,
        a.topology.partitioner,
        Access::Create,
    )?
    .with_member(&a.group, a.instance_id.clone(), a.group_protocol)
    .open()?;
    say_created(&logs, a.topology.count()?.is_none());
    let n = logs.partitions();
    let metrics = Arc::new(Metrics::fresh());
    let mut summary = app::run(logs, options, metrics.clone(), Shutdown::new())?;
    summary.outcomes = Some(metrics.totals(n));
    eprintln!("{}", summary.line());
    Ok(())
}

/// Says so when an open created the data dir, with its N (for ever, until `ordo repartition`).
fn say_created(logs: &Logs, defaulted: bool) {
    if logs.created() {
        eprintln!(
            "ordo: created {} with N = {} ({}){}",
            logs.describe(Role::Events),
            logs.partitions(),
            logs.partitioner(),
            if defaulted {
                "; to choose N, pass --partitions N or --containers C --servers S when creating it"
            } else {
                ""
            }
        );
    }
}

/// A valid `--advertise` URL, without a trailing slash.
fn advertised(url: &str) -> Result<String, Error> {
    let bad = || {
        Error::usage(format!(
            "--advertise {url}: expected a base URL like http://ordo-0.ordo-headless:8080"
        ))
    };
    let uri: axum::http::Uri = url.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.authority(), uri.path()) {
        (Some("http"), Some(_), "" | "/") if uri.query().is_none() => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        _ => Err(bad()),
    }
}

/// `ordo produce`.
pub fn produce(a: ProduceArgs) -> Result<(), Error> {
    let validation = match (a.raw, a.skip_invalid) {
        (true, _) => Validation::Raw,
        (false, true) => Validation::SkipInvalid,
        (false, false) => Validation::Strict,
    };
    let deployment = deployment(
        &a.kafka,
        &a.store,
        a.topology.count()?,
        a.topology.partitioner,
        Access::Create,
    )?;
    let report = match (&a.file, a.generate) {
        (Some(path), _) => {
            // Validate the whole file before touching the logs: a bad file writes nothing.
            let (n, partitioner) = deployment.layout()?;
            let (records, skipped) =
                produce::read_file(path, validation, n, partitioner, a.max_record_bytes)?;
            let logs = deployment.pinned(n, partitioner).open()?;
            say_created(&logs, a.topology.count()?.is_none());
            let appended = logs.append(Role::Events, records)?;
            (logs, produce::Report { appended, skipped })
        }
        (None, Some(count)) => {
            let logs = deployment.open()?;
            say_created(&logs, a.topology.count()?.is_none());
            let report = produce::produce_generated(&logs, count, a.seed)?;
            (logs, report)
        }
        (None, None) => unreachable!("clap requires --file or --generate"),
    };
    let (logs, report) = report;
    for s in &report.skipped {
        eprintln!("ordo: skipped line {}: {}", s.line, s.reason);
    }
    eprintln!(
        "ordo: appended {} events to {}{}",
        report.appended,
        logs.describe(Role::Events),
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {} invalid lines", report.skipped.len())
        }
    );
    Ok(())
}

/// `ordo state`.
pub fn state(a: StateArgs) -> Result<(), Error> {
    let logs = deployment(&a.kafka, &a.store, None, None, Access::Read)?.open()?;
    let snapshot = logs.snapshot()?.states;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        Format::Ndjson => {
            for record in snapshot.values() {
                serde_json::to_writer(&mut out, record).map_err(io::Error::from)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `ordo partition`.
pub fn partition(a: PartitionArgs) -> Result<(), Error> {
    let n = a.topology.count()?.ok_or_else(|| {
        Error::usage("no partition count; pass --partitions N or --containers C --servers S")
    })?;
    let p = a
        .topology
        .partitioner
        .unwrap_or_default()
        .partition(&a.key, n);
    writeln!(io::stdout().lock(), "{p}")?;
    Ok(())
}

/// `ordo plan`.
pub fn plan(a: PlanArgs) -> Result<(), Error> {
    let n = super::options::product(a.containers, a.servers)?;
    let mut out = io::stdout().lock();
    if a.values {
        writeln!(
            out,
            "# Helm values for N = {n}: helm install ordo ./helm/ordo -f FILE"
        )?;
        writeln!(out, "servers: {}", a.servers)?;
        writeln!(out, "containers: {}", a.containers)?;
        writeln!(out, "partitioner: {}", a.partitioner)?;
        return Ok(());
    }
    writeln!(
        out,
        "# N = containers × servers = {} × {} = {n}",
        a.containers, a.servers
    )?;
    writeln!(out, "partitions: {n}")?;
    writeln!(out, "partitioner: {}", a.partitioner)?;
    writeln!(out, "topics:")?;
    for (name, parts, config) in topics::describe(n) {
        writeln!(out, "  - name: {name}")?;
        writeln!(out, "    partitions: {parts}")?;
        writeln!(out, "    config:")?;
        for (k, v) in config {
            writeln!(out, "      {k}: \"{v}\"")?;
        }
    }
    writeln!(
        out,
        "# Helm values (`ordo plan --values … > values-plan.yaml`, then `helm install ordo \
         ./helm/ordo -f values-plan.yaml`):"
    )?;
    writeln!(out, "helm:")?;
    writeln!(out, "  servers: {}", a.servers)?;
    writeln!(out, "  containers: {}", a.containers)?;
    writeln!(out, "  partitioner: {}", a.partitioner)?;
    Ok(())
}

/// `--partitions` of a benchmark.
fn count(n: u32) -> Result<PartitionCount, Error> {
    PartitionCount::new(n).ok_or_else(|| Error::usage("--partitions must be at least 1"))
}

/// `ordo bench`.
pub fn bench(a: BenchArgs) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    match a.what {
        BenchWhat::E2e {
            events,
            partitions,
            batch_size,
        } => {
            let r = bench::e2e(events, count(partitions)?, batch_size.max(1))?;
            writeln!(
                out,
                "e2e: {} events, N = {}: produce {:.2} s ({:.0} events/s), run --until-idle {:.2} s ({:.0} events/s), together {:.0} events/s",
                r.events,
                r.partitions,
                r.produce_secs,
                r.events as f64 / r.produce_secs,
                r.run_secs,
                r.events as f64 / r.run_secs,
                r.events as f64 / (r.produce_secs + r.run_secs)
            )?;
            writeln!(
                out,
                "e2e: the run wrote {} records (state and dead letters): {:.0}/s; the store alone writing them in the same batches {:.2} s ({:.0}/s): the run at {:.0} % of the store's rate",
                r.written,
                r.written as f64 / r.run_secs,
                r.store_secs,
                r.written as f64 / r.store_secs,
                100.0 * r.store_secs / r.run_secs
            )?;
        }
        BenchWhat::Gateway {
            kafka,
            events,
            clients,
            requests,
            partitions,
            ..
        } if kafka.brokers.is_some() => {
            let opts = kafka.options(None)?.expect("--brokers given");
            let r = bench::members::run(
                &opts,
                events,
                count(partitions)?,
                clients.max(1),
                requests.min(20_000),
            )?;
            writeln!(
                out,
                "gateway, two members on Kafka: {} events ({} reservations), N = {}, {} clients",
                r.events, r.reservations, r.partitions, r.clients
            )?;
            for (what, p) in [
                ("queries, keys member A owns", &r.local),
                ("queries, keys member B owns (forwarded)", &r.remote),
                ("associations by user (lookup + append)", &r.lookups),
            ] {
                writeln!(
                    out,
                    "  {what:<42} {:>6} requests {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                    p.requests, p.per_sec, p.p50_ms, p.p99_ms, p.errors
                )?;
            }
        }
        BenchWhat::Gateway {
            clients,
            requests,
            partitions,
            wrk_secs,
            ..
        } => {
            let r = bench::gateway::run(clients.max(1), requests, count(partitions)?, wrk_secs)?;
            writeln!(
                out,
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
            )?;
            match r.wrk {
                Some(Ok(w)) => writeln!(
                    out,
                    "gateway under wrk: {} connections, {} s, fresh reservations: ingest {:.0} req/s \
                     (p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms), {} requests, {} errors",
                    r.clients,
                    wrk_secs,
                    w.per_sec,
                    w.p50_ms,
                    w.p99_ms,
                    w.max_ms,
                    w.requests,
                    w.errors
                )?,
                Some(Err(why)) => writeln!(out, "gateway under wrk: left out: {why}")?,
                None => {}
            }
        }
        BenchWhat::Kafka { on, events } => {
            let (opts, n, g, systems) = on.resolve()?;
            let interval = match g {
                Guarantee::ExactlyOnce { commit_interval } => Some(commit_interval),
                Guarantee::AtLeastOnce => None,
            };
            for system in &systems {
                system.prepare()?;
            }
            let r = bench::kafka::run(&opts, events, n, interval, &systems)?;
            writeln!(
                out,
                "kafka: {} events, N = {}: produce {:.0} events/s; raw consume {:.0} records/s; \
                 raw consume→produce pipe {:.0} records/s",
                r.events,
                r.partitions,
                r.events as f64 / r.produce_secs,
                r.consume_rate(),
                r.pipe_rate(),
            )?;
            writeln!(
                out,
                "{:<32} {:>12} {:>9} {:>12} {:>9} {:>11} {:>12} {:>9}",
                "system, guarantee",
                "whole ev/s",
                "of pipe",
                "steady ev/s",
                "start-up",
                "CPU s/M ev",
                "max RSS MiB",
                "restore"
            )?;
            for run in &r.runs {
                let g = match run.guarantee {
                    Guarantee::AtLeastOnce => "at-least-once".to_owned(),
                    Guarantee::ExactlyOnce { commit_interval } => {
                        format!("exactly-once {} ms", commit_interval.as_millis())
                    }
                };
                writeln!(
                    out,
                    "{:<32} {:>12.0} {:>8.0}% {:>12.0} {:>7.2} s {:>11.1} {:>12.0} {:>7.2} s",
                    format!("{}, {g}", run.system),
                    run.whole_rate(r.events),
                    run.whole_rate(r.events) * 100.0 / r.pipe_rate(),
                    run.steady_rate(r.events),
                    run.startup_secs,
                    run.cpu_per_million(r.events),
                    run.run.max_rss as f64 / f64::from(1 << 20),
                    run.restore_secs,
                )?;
            }
        }
        BenchWhat::KafkaLatency {
            on,
            rate,
            secs,
            warm_up,
        } => {
            if warm_up >= secs {
                return Err(Error::usage(format!(
                    "--warm-up {warm_up} leaves nothing of --secs {secs} to measure; make it shorter"
                )));
            }
            let (opts, n, g, systems) = on.resolve()?;
            // The peer's run on a deployment of its own, with input of its own.
            let systems: Vec<_> = systems
                .into_iter()
                .map(|system| {
                    let mut opts = opts.clone();
                    if !matches!(system, bench::peer::System::Ordo) {
                        opts.topic_prefix = format!("{}ks.", opts.topic_prefix);
                    }
                    (system, opts)
                })
                .collect();
            for (system, opts) in &systems {
                system.prepare()?;
                let pace = bench::latency::Pace {
                    rate,
                    secs,
                    warm_up,
                };
                let r = bench::latency::kafka_latency(opts, n, pace, g, system)?;
                writeln!(
                    out,
                    "kafka latency, {}, {}{}: {:.0} events/s for {secs} s ({warm_up} s not \
                     measured), N = {n}; append → state record visible at read_committed: p50 {:.1} \
                     ms, p99 {:.1} ms, max {:.0} ms ({} records)",
                    system.name(),
                    on.guarantee,
                    match g {
                        Guarantee::ExactlyOnce { commit_interval } =>
                            format!(" (--commit-interval {} ms)", commit_interval.as_millis()),
                        Guarantee::AtLeastOnce => String::new(),
                    },
                    r.rate,
                    r.p50_ms,
                    r.p99_ms,
                    r.max_ms,
                    r.samples,
                )?;
            }
        }
        BenchWhat::Idle { kafka, partitions } => {
            let counts = partitions
                .iter()
                .map(|n| count(*n))
                .collect::<Result<Vec<_>, _>>()?;
            let kafka = kafka.options(None)?;
            let figures = bench::idle::idle(&counts, kafka.as_ref())?;
            for f in &figures {
                let first = &figures[0];
                let marginal = (f.partitions > first.partitions).then(|| {
                    (f.rss.saturating_sub(first.rss)) as f64
                        / f64::from(f.partitions - first.partitions)
                });
                writeln!(
                    out,
                    "idle{}: N = {:>4}: RSS {:>6.1} MiB, {:>4} threads, CPU {:>5.1} %{}",
                    if kafka.is_some() { " on Kafka" } else { "" },
                    f.partitions,
                    f.rss as f64 / (1 << 20) as f64,
                    f.threads,
                    f.cpu * 100.0,
                    marginal.map_or(String::new(), |m| format!(
                        "; {:.2} MiB per partition above N = {}",
                        m / (1 << 20) as f64,
                        first.partitions
                    )),
                )?;
            }
        }
        BenchWhat::Restore {
            entries,
            partitions,
        } => {
            let r = bench::restore(entries, count(partitions)?, Some(&std::env::current_exe()?))?;
            writeln!(
                out,
                "restore: {} entries over {} partitions in {:.2} s ({:.0} entries/s); RSS {} MiB before, {} MiB with the state in memory",
                r.entries,
                r.partitions,
                r.secs,
                r.entries as f64 / r.secs,
                r.rss_before >> 20,
                r.rss_after >> 20,
            )?;
            if let Some(fresh) = r.fresh {
                writeln!(
                    out,
                    "restore: a fresh `ordo run --until-idle` over them: {:.2} s, {:.2} s of CPU, peak RSS {} MiB",
                    fresh.wall_secs,
                    fresh.cpu_secs,
                    fresh.max_rss >> 20
                )?;
            }
        }
    }
    Ok(())
}

/// `ordo topics`.
pub fn topics(a: TopicsArgs) -> Result<(), Error> {
    let kafka = a.kafka.options(a.topology.partitioner)?.ok_or_else(|| {
        Error::usage("topics work on Kafka; pass --brokers host:port (or ORDO_BROKERS)")
    })?;
    let n = a.topology.count()?.ok_or_else(|| {
        Error::usage("no partition count; pass --containers C --servers S or --partitions N")
    })?;
    let mut kafka = kafka;
    let lines = match a.action {
        TopicsAction::Apply => {
            let lines = log::apply_topics(&kafka, n)?;
            // Recorded with the topics: every later command routes keys the same way.
            log::settle_partitioner(&mut kafka, a.topology.partitioner, true)?;
            lines
        }
        TopicsAction::Check => {
            log::settle_partitioner(&mut kafka, a.topology.partitioner, false)?;
            log::check_topics(&kafka, n)?
        }
    };
    let mut out = io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}
