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
pub fn run(clients: usize, requests: usize, n: PartitionCount) -> Result<Gateway, BenchError> {
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
