//! `ordo bench`: end-to-end measurements on this machine (the per-thread core loop is a
//! criterion benchmark, `cargo bench --bench core`).
//!
//! * `e2e`: generate a file, `produce` it, then `run --until-idle`: events/s of each step.
//! * `restore`: write N state records to a changelog, restore them as `ordo run` does (one
//!   thread per partition), and report the time and the process's resident memory.

pub mod idle;
pub mod latency;
pub mod members;
pub mod peer;
pub mod process;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{self, RunError, RunOptions};
use crate::core::changelog::{StateRecord, Stored};
use crate::core::partitioner::Partitioner;
use crate::core::record::NewRecord;
use crate::core::state_machine::{Entity, Status};
use crate::core::{Epoch, PartitionCount, ReservationNo};
use crate::log::Logs;
use crate::log::embedded::{EmbeddedLog, LogError, OpenOptions};
use crate::log::topics::Role;
use crate::metrics::Metrics;
use crate::owner::Guarantee;
use crate::shutdown::Shutdown;
use crate::tools::produce::{self, ProduceError, Validation};
use process::Measured;

/// What went wrong in a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Kafka(#[from] crate::log::kafka::KafkaLogError),
    #[error("benchmark i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Figures of the end-to-end benchmark.
#[derive(Debug, Clone)]
pub struct E2e {
    pub events: usize,
    pub partitions: u32,
    pub produce_secs: f64,
    pub run_secs: f64,
}

/// Generates `events` into an NDJSON file, produces it and runs until idle, in a temp dir.
pub fn e2e(events: usize, n: PartitionCount, batch_size: usize) -> Result<E2e, BenchError> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("events.ndjson");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for e in crate::tools::generate::Generator::new(1).take(events) {
            w.write_all(e.to_json().as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let data = dir.path().join("data");
    let log = Arc::new(EmbeddedLog::open(
        &data,
        OpenOptions {
            partitions: Some(n),
            create: true,
            ..OpenOptions::default()
        },
    )?);
    let t0 = Instant::now();
    produce::produce_file(&Logs::Embedded(log.clone()), &file, Validation::Strict)?;
    let produce_secs = t0.elapsed().as_secs_f64();
    let summary = app::run(
        Logs::Embedded(log),
        RunOptions {
            http: None,
            until_idle: true,
            batch_size,
            advertise: None,
            guarantee: Default::default(),
            token: None,
        },
        Arc::new(Metrics::fresh()),
        Shutdown::new(),
    )?;
    Ok(E2e {
        events,
        partitions: n.get(),
        produce_secs,
        run_secs: summary.elapsed.as_secs_f64(),
    })
}

/// Figures of the restore benchmark.
#[derive(Debug, Clone)]
pub struct Restore {
    pub entries: u64,
    pub partitions: u32,
    pub secs: f64,
    pub rss_before: u64,
    pub rss_after: u64,
}

/// Writes `entries` state records over `n` changelog partitions, each the effect of an input
/// record of its partition (an owner refuses a changelog that claims input past the input's
/// end), then restores them.
pub fn restore(entries: u64, n: PartitionCount) -> Result<Restore, BenchError> {
    let dir = tempfile::tempdir()?;
    let log = EmbeddedLog::open(
        dir.path(),
        OpenOptions {
            partitions: Some(n),
            create: true,
            ..OpenOptions::default()
        },
    )?;
    let mut batch = Vec::with_capacity(50_000);
    let mut input = Vec::with_capacity(50_000);
    let mut next = vec![0u64; n.get() as usize];
    for i in 0..entries {
        let no = ReservationNo(compact_str::format_compact!("R-{i:09}"));
        let p = Partitioner::AbsHashModN.partition(no.as_str(), n);
        let source = next[p.0 as usize];
        next[p.0 as usize] += 1;
        input.push((
            p,
            NewRecord {
                key: no.as_str().as_bytes().to_vec(),
                value: Vec::new(),
                timestamp: 0,
                headers: Vec::new(),
            },
        ));
        let stored = Stored {
            entity: Entity {
                user_id: compact_str::format_compact!("user-{}", i % 50_000),
                status: Status::Associated,
                target: Some(compact_str::format_compact!("device-{i}")),
                version: 2,
                applied_event_ids: Box::new([
                    compact_str::format_compact!("evt-{}", 2 * i),
                    compact_str::format_compact!("evt-{}", 2 * i + 1),
                ]),
            },
            source_offset: crate::core::Offset(source),
            epoch: Epoch(1),
        };
        let value = StateRecord::new(no.clone(), p, &stored).to_json();
        batch.push((
            p,
            NewRecord {
                key: no.as_str().as_bytes().to_vec(),
                value,
                timestamp: 0,
                headers: Vec::new(),
            },
        ));
        if batch.len() == 50_000 {
            log.append(Role::Events, std::mem::take(&mut input))?;
            log.append(Role::State, std::mem::take(&mut batch))?;
        }
    }
    log.append(Role::Events, input)?;
    log.append(Role::State, batch)?;
    // Reopen, as a restarting `ordo run` would: the writer's cache is not part of the figure.
    drop(log);
    let log = EmbeddedLog::open(dir.path(), OpenOptions::default())?;
    let rss_before = rss_bytes();
    let t0 = Instant::now();
    // The owners' own path: restore every partition (one thread each), take an epoch, and
    // stop at once (no input).
    let log = Arc::new(log);
    let shared = Arc::new(crate::view::Partitions::owned(n));
    crate::owner::embedded::run(
        &log,
        &shared,
        &Arc::new(Metrics::fresh()),
        &crate::owner::Options {
            until_idle: true,
            ..Default::default()
        },
        &Shutdown::new(),
    )
    .map_err(RunError::from)?;
    let secs = t0.elapsed().as_secs_f64();
    let restored: usize = shared.views.iter().map(|v| v.len()).sum();
    assert_eq!(restored as u64, entries, "every entry restored");
    Ok(Restore {
        entries,
        partitions: n.get(),
        secs,
        rss_before,
        rss_after: rss_bytes(),
    })
}

/// Resident set size of this process, from `/proc/self/status` (0 where unavailable).
pub fn rss_bytes() -> u64 {
    process::status_bytes("self", "VmRSS:")
}

/// Figures of the gateway benchmark.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub clients: usize,
    pub requests: usize,
    pub ingest_per_sec: f64,
    pub ingest_p50_ms: f64,
    pub ingest_p99_ms: f64,
    pub read_per_sec: f64,
    pub read_p50_ms: f64,
    pub read_p99_ms: f64,
}

/// A keep-alive HTTP/1.1 client for one connection, enough for the benchmark.
pub(crate) struct Client {
    stream: std::io::BufReader<std::net::TcpStream>,
}

impl Client {
    pub(crate) fn connect(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let s = std::net::TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Client {
            stream: std::io::BufReader::new(s),
        })
    }

    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<(u16, String)> {
        use std::io::{BufRead, Read, Write};
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// One client's latencies (ms) and accepted (reservation, token) pairs.
type ClientRun = (Vec<f64>, Vec<(String, String)>);

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs `ordo run` (N = `n`, embedded, HTTP on loopback) in this process and drives it with
/// `clients` keep-alive connections: `requests` reservations, then a read-your-writes query
/// for each (`?after=<token>`).
pub fn gateway(clients: usize, requests: usize, n: PartitionCount) -> Result<Gateway, BenchError> {
    let dir = tempfile::tempdir()?;
    let log = Arc::new(EmbeddedLog::open(
        dir.path(),
        OpenOptions {
            partitions: Some(n),
            create: true,
            ..OpenOptions::default()
        },
    )?);
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let shutdown = Shutdown::new();
    let server = {
        let (log, shutdown) = (log.clone(), shutdown.clone());
        std::thread::spawn(move || {
            app::run(
                Logs::Embedded(log),
                RunOptions {
                    http: Some(addr),
                    until_idle: false,
                    batch_size: crate::owner::DEFAULT_BATCH_SIZE,
                    advertise: None,
                    guarantee: Default::default(),
                    token: None,
                },
                Arc::new(Metrics::fresh()),
                shutdown,
            )
        })
    };
    let ready = Instant::now();
    loop {
        if let Ok(mut c) = Client::connect(addr)
            && c.request("GET", "/readyz", "").map(|r| r.0).unwrap_or(0) == 200
        {
            break;
        }
        if ready.elapsed().as_secs() > 30 {
            return Err(BenchError::Io(std::io::Error::other(
                "ordo run did not become ready",
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let per_client = requests / clients.max(1);
    let phase = |read: Option<&Vec<Vec<(String, String)>>>| {
        let t0 = Instant::now();
        let results: Vec<std::io::Result<ClientRun>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    s.spawn(move || {
                        let mut client = Client::connect(addr)?;
                        let mut lat = Vec::with_capacity(per_client);
                        let mut tokens = Vec::with_capacity(per_client);
                        for i in 0..per_client {
                            let t = Instant::now();
                            match read {
                                None => {
                                    let no = format!("B-{c}-{i}");
                                    let body = format!(
                                        r#"{{"event_id":"b-{c}-{i}","reservation_no":"{no}","user_id":"bench-{c}"}}"#
                                    );
                                    let (code, body) = client.request("POST", "/v1/reservations", &body)?;
                                    if code != 202 {
                                        return Err(std::io::Error::other(format!("ingest answered {code}: {body}")));
                                    }
                                    let v: serde_json::Value = serde_json::from_str(&body)
                                        .map_err(std::io::Error::other)?;
                                    tokens.push((no, v["token"].as_str().unwrap_or_default().to_owned()));
                                }
                                Some(accepted) => {
                                    let (no, token) = &accepted[c][i];
                                    let path = format!("/v1/reservations/{no}?after={token}&wait=5000");
                                    let (code, body) = client.request("GET", &path, "")?;
                                    if code != 200 {
                                        return Err(std::io::Error::other(format!("query answered {code}: {body}")));
                                    }
                                }
                            }
                            lat.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        Ok((lat, tokens))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        let secs = t0.elapsed().as_secs_f64();
        let mut lat = Vec::new();
        let mut tokens = Vec::new();
        for r in results {
            let (l, t) = r?;
            lat.extend(l);
            tokens.push(t);
        }
        lat.sort_by(f64::total_cmp);
        Ok::<_, std::io::Error>((lat.len() as f64 / secs, lat, tokens))
    };
    let (ingest_rate, ingest_lat, accepted) = phase(None)?;
    let (read_rate, read_lat, _) = phase(Some(&accepted))?;
    shutdown.trigger();
    log.appended().notify();
    server.join().expect("server thread")?;
    Ok(Gateway {
        clients,
        requests: per_client * clients,
        ingest_per_sec: ingest_rate,
        ingest_p50_ms: percentile(&ingest_lat, 0.5),
        ingest_p99_ms: percentile(&ingest_lat, 0.99),
        read_per_sec: read_rate,
        read_p50_ms: percentile(&read_lat, 0.5),
        read_p99_ms: percentile(&read_lat, 0.99),
    })
}

/// Figures of the Kafka benchmark, all from one round on one broker.
#[derive(Debug, Clone)]
pub struct KafkaBench {
    pub events: u64,
    pub partitions: u32,
    pub produce_secs: f64,
    /// One plain consumer reading every input record.
    pub raw_consume_secs: f64,
    /// The raw consume→produce pipe ([`crate::log::kafka::pipe`]).
    pub pipe_secs: f64,
    /// Each system at each guarantee, in the order they ran.
    pub runs: Vec<SystemRun>,
}

/// One system at one guarantee over the benchmark's input, as a child process.
#[derive(Debug, Clone)]
pub struct SystemRun {
    pub system: &'static str,
    pub guarantee: Guarantee,
    /// Spawn to exit on the empty topics: start-up, join, (empty) restore, leave.
    pub startup_secs: f64,
    /// Spawn to exit over the input.
    pub run: Measured,
    /// Spawn to exit of a second run on the same group once the input is processed: the
    /// whole state restored from its changelog (the peer with an empty state directory, as a
    /// replacement machine would start), nothing left to process.
    pub restore_secs: f64,
}

impl SystemRun {
    /// Whole-run events/s.
    pub fn whole_rate(&self, events: u64) -> f64 {
        events as f64 / self.run.wall_secs
    }
    /// Steady events/s: the whole run minus its start-up on empty topics.
    pub fn steady_rate(&self, events: u64) -> f64 {
        events as f64 / (self.run.wall_secs - self.startup_secs).max(f64::EPSILON)
    }
    /// CPU seconds per million events.
    pub fn cpu_per_million(&self, events: u64) -> f64 {
        self.run.cpu_secs * 1e6 / events.max(1) as f64
    }
}

impl KafkaBench {
    fn rate(&self, secs: f64) -> f64 {
        self.events as f64 / secs
    }
    /// Raw consume rate, records/s.
    pub fn consume_rate(&self) -> f64 {
        self.rate(self.raw_consume_secs)
    }
    /// Raw consume→produce pipe rate, records/s.
    pub fn pipe_rate(&self) -> f64 {
        self.rate(self.pipe_secs)
    }
}

/// On a broker with no ordo topics yet: creates them with `n` partitions and measures, in this
/// order on the same broker: each of `systems` on the empty topics (start-up), producing
/// `events` generated events, one plain consumer reading them (raw consume), a raw
/// consume→produce pipe over them into a scratch topic, then each system over them, one after
/// the other, each followed by a run that restores its state. With `commit_interval`, the
/// systems run again at exactly-once (ordo `--guarantee exactly-once`, the peer
/// `exactly_once_v2`), on a second deployment whose input holds the same records.
pub fn kafka(
    opts: &crate::log::kafka::KafkaOptions,
    events: usize,
    n: PartitionCount,
    commit_interval: Option<Duration>,
    systems: &[peer::System],
) -> Result<KafkaBench, BenchError> {
    use crate::log::kafka::{
        KafkaOptions, KafkaProducer, apply_topics, count_all, create_topic, pipe,
    };
    let mut deployments = vec![(opts.clone(), Guarantee::AtLeastOnce)];
    if let Some(interval) = commit_interval {
        let eos = KafkaOptions {
            topic_prefix: format!("{}eos.", opts.topic_prefix),
            ..opts.clone()
        };
        deployments.push((
            eos,
            Guarantee::ExactlyOnce {
                commit_interval: interval,
            },
        ));
    }
    let scratch = tempfile::tempdir()?;
    let group = |system: &peer::System, phase: &str, g: Guarantee| {
        let g = match g {
            Guarantee::AtLeastOnce => "alo",
            Guarantee::ExactlyOnce { .. } => "eos",
        };
        format!(
            "ordo-bench-{}-{g}-{phase}-{}",
            system.name(),
            std::process::id()
        )
    };
    let state_dir = |name: &str| scratch.path().join(name);
    let mut startups = Vec::new();
    for (deployment, guarantee) in &deployments {
        apply_topics(deployment, n)?;
        for system in systems {
            let g = group(system, "empty", *guarantee);
            let m = system.run_to_end(deployment, n, &g, *guarantee, &state_dir(&g))?;
            startups.push(m.wall_secs);
        }
    }
    let producer = KafkaProducer::new(opts)?;
    let topic = opts.topic(Role::Events);
    let t0 = Instant::now();
    fill(&producer, &topic, events, n, opts.partitioner)?;
    let produce_secs = t0.elapsed().as_secs_f64();
    for (deployment, _) in &deployments[1..] {
        fill(
            &producer,
            &deployment.topic(Role::Events),
            events,
            n,
            opts.partitioner,
        )?;
    }
    drop(producer);
    let t0 = Instant::now();
    let read = count_all(opts, &topic, n)?;
    let raw_consume_secs = t0.elapsed().as_secs_f64();
    let scratch_topic = format!(
        "{}ordo-bench-pipe-{}",
        opts.topic_prefix,
        std::process::id()
    );
    create_topic(opts, &scratch_topic, n.get())?;
    let t0 = Instant::now();
    pipe(opts, &topic, &scratch_topic, n)?;
    let pipe_secs = t0.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    let mut startups = startups.into_iter();
    for (deployment, guarantee) in &deployments {
        for system in systems {
            let g = group(system, "input", *guarantee);
            let run = system.run_to_end(deployment, n, &g, *guarantee, &state_dir(&g))?;
            let fresh = state_dir(&format!("{g}-restore"));
            let restore = system.run_to_end(deployment, n, &g, *guarantee, &fresh)?;
            runs.push(SystemRun {
                system: system.name(),
                guarantee: *guarantee,
                startup_secs: startups.next().unwrap_or_default(),
                run,
                restore_secs: restore.wall_secs,
            });
        }
    }
    Ok(KafkaBench {
        events: read,
        partitions: n.get(),
        produce_secs,
        raw_consume_secs,
        pipe_secs,
        runs,
    })
}

/// Appends `events` generated events (seed 1, so every call appends the same records) to
/// `topic`, each to its partition.
fn fill(
    producer: &crate::log::kafka::KafkaProducer,
    topic: &str,
    events: usize,
    n: PartitionCount,
    partitioner: crate::core::partitioner::Partitioner,
) -> Result<(), RunError> {
    let mut generator = crate::tools::generate::Generator::new(1);
    let mut left = events;
    while left > 0 {
        let take = left.min(20_000);
        let chunk: Vec<crate::log::kafka::Outgoing<'_>> = (&mut generator)
            .take(take)
            .map(|e| {
                let value = e.to_json().into_bytes();
                let (partition, record) = crate::tools::produce::route(&e, value, n, partitioner);
                crate::log::kafka::Outgoing {
                    topic,
                    partition,
                    record,
                }
            })
            .collect();
        producer.send_all(&chunk)?;
        left -= take;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The restore benchmark restores every entry it wrote (an owner that refused its
    /// changelog would make it an error).
    #[test]
    fn the_restore_benchmark_restores_every_entry() {
        let r = restore(3_000, PartitionCount::new(3).unwrap()).expect("the benchmark runs");
        assert_eq!((r.entries, r.partitions), (3_000, 3));
        assert!(r.rss_after > 0);
    }
}
