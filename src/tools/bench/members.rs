//! `ordo bench gateway --brokers …`: two members of one group on the given broker, serving a
//! generated workload, driven over loopback: queries for keys the asked member owns, for keys
//! the other member owns (forwarded), and associations by user (a lookup across the owners,
//! then an append).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;
use super::gateway::{Client, percentile};
use crate::core::reference::Model;
use crate::core::{Partition, PartitionCount};
use crate::log::kafka::{KafkaOptions, KafkaProducer, Outgoing, apply_topics};
use crate::log::topics::Role;
use crate::tools::generate::Generator;
use crate::tools::produce;

/// How long the members may take to process the workload.
const BENCH_WAIT_SECS: u64 = 300;

/// One kind of request's figures.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub requests: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: usize,
}

/// Figures of the two-member gateway benchmark.
#[derive(Debug, Clone)]
pub struct Members {
    pub events: usize,
    pub reservations: usize,
    pub partitions: u32,
    pub clients: usize,
    /// Queries on member A for keys A owns.
    pub local: Phase,
    /// Queries on member A for keys member B owns.
    pub remote: Phase,
    /// Associations by user sent to member A.
    pub lookups: Phase,
}

/// A member started as a child process.
pub(super) struct Member {
    pub(super) child: Child,
    addr: SocketAddr,
}

impl Member {
    fn start(kafka: &KafkaOptions, group: &str, n: PartitionCount) -> Result<Member, BenchError> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["run", "--brokers", &kafka.brokers, "--group", group])
            .args(["--topic-prefix", &kafka.topic_prefix])
            .args(["--partitions", &n.to_string()]);
        for (k, v) in &kafka.properties {
            cmd.arg("-X").arg(format!("{k}={v}"));
        }
        Member::spawn(cmd)
    }

    /// Starts `cmd` (an `ordo run …`) with HTTP on a free loopback port, and waits for it to
    /// listen.
    pub(super) fn spawn(mut cmd: Command) -> Result<Member, BenchError> {
        cmd.args(["--http", "127.0.0.1:0"])
            .env("ORDO_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut last = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("ordo: http listening on ") {
                    let _ = tx.send(addr.parse::<SocketAddr>().map_err(|e| e.to_string()));
                }
                last = line;
            }
            // The member ended before it listened: say why.
            let _ = tx.send(Err(format!("a member exited: {last}")));
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| std::io::Error::other("a member did not start listening within 30 s"))?
            .map_err(std::io::Error::other)?;
        Ok(Member { child, addr })
    }

    pub(super) fn get(&self, path: &str) -> Result<(u16, String), BenchError> {
        Ok(Client::connect(self.addr)?.request("GET", path, "")?)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // SIGTERM: release the partitions and leave the group.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Sends `requests` (method, path, body) to `addr` over `clients` keep-alive connections,
/// expecting `expect`; latencies of every request, failures counted.
fn drive(
    addr: SocketAddr,
    clients: usize,
    requests: &[(String, String, String)],
    expect: u16,
) -> Phase {
    let t0 = Instant::now();
    let chunks: Vec<&[(String, String, String)]> = requests
        .chunks(requests.len().div_ceil(clients.max(1)).max(1))
        .collect();
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(chunk.len());
                    let mut errors = 0;
                    let Ok(mut client) = Client::connect(addr) else {
                        return (lat, chunk.len());
                    };
                    for (method, path, body) in chunk.iter() {
                        let t = Instant::now();
                        match client.request(method, path, body) {
                            Ok((code, _)) if code == expect => {
                                lat.push(t.elapsed().as_secs_f64() * 1e3)
                            }
                            Ok(_) => errors += 1,
                            Err(_) => {
                                errors += 1;
                                match Client::connect(addr) {
                                    Ok(c) => client = c,
                                    Err(_) => return (lat, errors),
                                }
                            }
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    lat.sort_by(f64::total_cmp);
    Phase {
        requests: requests.len(),
        per_sec: lat.len() as f64 / secs,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        errors: results.iter().map(|(_, e)| e).sum(),
    }
}

/// On a broker without ordo topics: creates them with `n` partitions, produces `events`
/// generated events, starts two members of a fresh group, waits until they have processed
/// everything, and drives member A with `clients` connections: `requests` queries for its own
/// keys, as many for B's, and up to `requests` associations by user.
pub fn run(
    kafka: &KafkaOptions,
    events: usize,
    n: PartitionCount,
    clients: usize,
    requests: usize,
) -> Result<Members, BenchError> {
    apply_topics(kafka, n)?;
    let topic = kafka.topic(Role::Events);
    let producer = KafkaProducer::new(kafka)?;
    let generated: Vec<_> = Generator::new(1).take(events).collect();
    for chunk in generated.chunks(20_000) {
        let out: Vec<Outgoing<'_>> = chunk
            .iter()
            .map(|e| {
                let (partition, record) =
                    produce::route(e, e.to_json().into_bytes(), n, kafka.partitioner);
                Outgoing {
                    topic: &topic,
                    partition,
                    record,
                }
            })
            .collect();
        producer.send_all(&out)?;
    }
    let model = Model::run(&generated);

    let group = format!("ordo-bench-gateway-{}", std::process::id());
    let a = Member::start(kafka, &group, n)?;
    let b = Member::start(kafka, &group, n)?;
    let waited = Instant::now();
    let a_url = format!("http://{}", a.addr);
    let b_url = format!("http://{}", b.addr);
    // Wait for every partition to be served by one of the two, and everything processed.
    let owner_of: HashMap<u32, String> = loop {
        let (code, body) = a.get("/v1/owners")?;
        let table: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let rows: HashMap<u32, String> = table["partitions"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        Some((
                            r["partition"].as_u64()? as u32,
                            r["url"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let processed: f64 = [&a, &b]
            .iter()
            .filter_map(|m| m.get("/metrics").ok())
            .map(|(_, text)| events_total(&text))
            .sum();
        if code == 200
            && rows.len() == n.get() as usize
            && rows.values().all(|u| *u == a_url || *u == b_url)
            && rows.values().any(|u| *u == b_url)
            && processed >= events as f64
        {
            break rows;
        }
        if waited.elapsed() > Duration::from_secs(BENCH_WAIT_SECS) {
            return Err(std::io::Error::other(format!(
                "the members did not process the workload within {BENCH_WAIT_SECS} s: {processed} of {events} \
                 events processed, owners {rows:?}"
            ))
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let partition_of = |k: &str| kafka.partitioner.partition(k, n);
    let served_by_a = |p: Partition| owner_of.get(&p.0).is_some_and(|u| *u == a_url);
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for no in model.states.keys() {
        let target = if served_by_a(partition_of(no)) {
            &mut local
        } else {
            &mut remote
        };
        if target.len() < requests {
            target.push((
                "GET".to_owned(),
                format!("/v1/reservations/{no}"),
                String::new(),
            ));
        }
    }
    let mut open: HashMap<&str, usize> = HashMap::new();
    for s in model.states.values() {
        if s.state == "reserved" {
            *open.entry(s.user.as_str()).or_default() += 1;
        }
    }
    let mut users: Vec<&str> = open
        .into_iter()
        .filter(|(_, count)| *count == 1)
        .map(|(u, _)| u)
        .collect();
    users.sort_unstable();
    let lookups: Vec<_> = users
        .iter()
        .take(requests)
        .enumerate()
        .map(|(i, u)| {
            (
                "POST".to_owned(),
                "/v1/associations".to_owned(),
                format!(r#"{{"event_id":"bench-assoc-{i}","user_id":"{u}","target":"bench"}}"#),
            )
        })
        .collect();
    Ok(Members {
        events,
        reservations: model.states.len(),
        partitions: n.get(),
        clients,
        local: drive(a.addr, clients, &local, 200),
        remote: drive(a.addr, clients, &remote, 200),
        lookups: drive(a.addr, clients, &lookups, 202),
    })
}

/// The sum of `ordo_events_total` in a metrics text.
fn events_total(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("ordo_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
