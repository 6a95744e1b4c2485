//! `ordo bench gateway`: concurrent clients appending through the HTTP gateway of an embedded
//! `ordo run`, then reading their writes back; and the small keep-alive client the member
//! benchmarks share.

use std::sync::Arc;
use std::time::Instant;

use super::BenchError;
use crate::app::{self, RunOptions};
use crate::core::PartitionCount;
use crate::log::Logs;
use crate::log::embedded::{EmbeddedLog, OpenOptions};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

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
    /// The same member under wrk, when asked for: its figures, or why they are missing.
    pub wrk: Option<Result<Wrk, String>>,
}

/// What wrk measured: an independent client, in its own process, with its own clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Wrk {
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub requests: u64,
    /// Non-2xx answers and socket errors.
    pub errors: u64,
}

/// The wrk script: each request a fresh reservation.
const WRK_SCRIPT: &str = include_str!("../../../benches/wrk/post-reservations.lua");

/// Runs wrk against `addr` for `secs` with `connections` (two threads), installing it with
/// apt-get where it is missing and that is possible.
fn wrk(
    addr: std::net::SocketAddr,
    secs: u64,
    connections: usize,
    dir: &std::path::Path,
) -> Result<Wrk, String> {
    use std::process::{Command, Stdio};
    let found = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !found("wrk") {
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-q", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(installed, Ok(s) if s.success()) || !found("wrk") {
            return Err(
                "wrk is not installed and `apt-get install -y wrk` did not install it; install \
                 wrk, or pass --wrk-secs 0"
                    .into(),
            );
        }
    }
    let script = dir.join("post-reservations.lua");
    std::fs::write(&script, WRK_SCRIPT).map_err(|e| format!("writing the wrk script: {e}"))?;
    let out = Command::new("wrk")
        .args(["-t2", "--latency"])
        .arg(format!("-c{}", connections.max(2)))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{addr}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("wrk's output was not understood: {text}"))
}

/// The figures of wrk's `--latency` report and of the script's summary line.
fn parse_wrk(text: &str) -> Option<Wrk> {
    let field = |prefix: &str, nth: usize| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(nth))
    };
    let ms = |v: &str| {
        let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = n.parse().ok()?;
        Some(match unit {
            "us" => n / 1e3,
            "ms" => n,
            "s" => n * 1e3,
            "m" => n * 60e3,
            _ => return None,
        })
    };
    let summary = field("wrk:", 1).and_then(|n| n.parse().ok());
    let errors = field("wrk:", 3).and_then(|n| n.parse().ok());
    Some(Wrk {
        per_sec: field("Requests/sec:", 1)?.parse().ok()?,
        p50_ms: ms(field("50%", 1)?)?,
        p99_ms: ms(field("99%", 1)?)?,
        max_ms: ms(field("Latency", 3)?)?,
        requests: summary?,
        errors: errors?,
    })
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
/// for each (`?after=<token>`); then, for `wrk_secs` (unless 0), wrk's fresh reservations.
pub fn run(
    clients: usize,
    requests: usize,
    n: PartitionCount,
    wrk_secs: u64,
) -> Result<Gateway, BenchError> {
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
    let wrk = (wrk_secs > 0).then(|| wrk(addr, wrk_secs, clients, dir.path()));
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
        wrk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_figures_are_read_with_their_units() {
        let text = "Running 10s test @ http://127.0.0.1:1\n  2 threads and 16 connections\n  \
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     2.18ms  788.46us   1.27s   81.99%\n  \
            Latency Distribution\n     50%  850.00us\n     75%    2.40ms\n     90%    3.00ms\n     99%    5.30ms\n  \
            72525 requests in 10.01s, 15.2MB read\nRequests/sec:   7243.62\nTransfer/sec:      1.52MB\n\
            wrk: 72525 requests, 3 errors (non-2xx or socket)\n";
        assert_eq!(
            parse_wrk(text),
            Some(Wrk {
                per_sec: 7243.62,
                p50_ms: 0.85,
                p99_ms: 5.3,
                max_ms: 1270.0,
                requests: 72525,
                errors: 3,
            })
        );
        assert_eq!(parse_wrk("Requests/sec: 1\n"), None);
    }
}
