//! Helpers for tests that drive the real `ordo` binary.
#![allow(dead_code)]

pub mod broker;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ordo::core::record::{Record, headers};
use ordo::log::embedded::{EmbeddedLog, OpenOptions};
use ordo::log::topics::Role;

/// The binary under test, with no `ORDO_*` variables inherited.
pub fn ordo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ordo"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ORDO_") {
            c.env_remove(k);
        }
    }
    c.env("ORDO_LOG", "warn");
    c
}

/// Runs `ordo args…` and asserts it succeeded.
pub fn ok(args: &[&str]) -> Output {
    let out = ordo().args(args).output().expect("ordo runs");
    assert!(
        out.status.success(),
        "ordo {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `f` until it returns `Some`, or panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `ordo run` with HTTP on a free port.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `ordo run --http 127.0.0.1:0 extra…` and waits for its listen line.
    pub fn start(extra: &[&str]) -> Running {
        Running::start_with(&[], extra)
    }

    /// [`Running::start`] with variables `env` set.
    pub fn start_with(env: &[(&str, &str)], extra: &[&str]) -> Running {
        let mut child = ordo()
            .envs(env.iter().copied())
            .arg("run")
            .args(["--http", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ordo run starts");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("ordo run prints its http address");
            if let Some(a) = line.strip_prefix("ordo: http listening on ") {
                break a.parse().expect("an address");
            }
        };
        Running {
            child,
            addr,
            stderr: rx,
        }
    }

    /// GET `path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.addr, "GET", path, None, &[])
    }

    /// Waits for `/readyz` to answer 200.
    pub fn wait_ready(&self) {
        wait_for("readiness", Duration::from_secs(60), || {
            (self.get("/readyz").0 == 200).then_some(())
        });
    }

    /// Sum of a counter family in `/metrics`, optionally only samples containing `filter`.
    pub fn metric_sum(&self, name: &str, filter: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        metric_sum(&body, name, filter)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends `SIG<name>` (`STOP`, `CONT`, `TERM`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums the samples of `name` whose line contains `filter`.
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A minimal HTTP/1.1 client: one request per connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra_headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, body, extra_headers);
    (status, body)
}

/// Like [`http`], with the response headers (names in lower case).
pub fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    extra_headers: &[(&str, &str)],
) -> (u16, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let headers: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // Small responses only: undo chunked encoding if present.
    let body = if resp
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// `ordo state` output as parsed JSON objects keyed by reservation number.
pub fn state(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    let out = ok(&[
        "state",
        "--data-dir",
        dir.to_str().unwrap(),
        "--format",
        "ndjson",
    ]);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("state lines are JSON");
            (v["reservation_no"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// Every dead letter of a data dir (opened after the process has exited).
pub fn dead_letters(dir: &Path) -> Vec<Record> {
    let log = EmbeddedLog::open(dir, OpenOptions::default()).expect("data dir opens");
    let mut out = Vec::new();
    for p in log.partitions().iter() {
        log.scan(Role::DeadLetters, p, ordo::core::Offset(0), |r| {
            out.push(r);
            Ok(true)
        })
        .unwrap();
    }
    out
}

/// The value of a header of a record.
pub fn header<'a>(r: &'a Record, name: &str) -> &'a str {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no header {name}"))
}

/// Dead letters counted by reason.
pub fn dead_letter_reasons(dir: &Path) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in dead_letters(dir) {
        *m.entry(header(&r, headers::REASON).to_owned()).or_default() += 1;
    }
    m
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The projection of a state record that the golden files hold.
pub fn project(v: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "reservation_no": v["reservation_no"], "user_id": v["user_id"], "state": v["state"],
        "target": v["target"], "version": v["version"], "applied_event_ids": v["applied_event_ids"],
    })
}

/// A data dir at `d` with N = `partitions` and `events` generated events appended.
pub fn generated(d: &Path, partitions: &str, events: &str) {
    ok(&[
        "produce",
        "--data-dir",
        s(d),
        "--partitions",
        partitions,
        "--generate",
        events,
    ]);
}

/// Like [`generated`], then processed until idle.
pub fn processed(d: &Path, partitions: &str, events: &str) {
    generated(d, partitions, events);
    ok(&["run", "--data-dir", s(d), "--until-idle", "--no-http"]);
}
