//! Helpers for tests that drive the real `ordo` binary.
#![allow(dead_code)]

pub mod broker;
pub mod browser;
pub mod oracle;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
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
    let out = run(args);
    assert!(
        out.status.success(),
        "ordo {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `ordo args…`, bounded in time.
pub fn run(args: &[&str]) -> Output {
    bounded(
        ordo().args(args),
        Duration::from_secs(180),
        &format!("ordo {args:?}"),
    )
}

/// A name no other test of this run uses: `prefix`, the process id, a clock and a counter.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

thread_local! {
    /// The broker log of the running test (each test runs on a thread of its own): a timeout
    /// shows its tail.
    static CONTEXT: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Names the broker log that failures of this test should show.
pub fn set_context(log: PathBuf) {
    CONTEXT.with(|c| *c.borrow_mut() = Some(log));
}

/// The last lines of the test's broker log, if it has one.
fn context_tail() -> String {
    CONTEXT.with(|c| match c.borrow().as_ref() {
        Some(path) if !path.as_os_str().is_empty() => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "\n--- broker log {} (last 20 lines) ---\n{}",
                path.display(),
                lines[lines.len().saturating_sub(20)..].join("\n")
            )
        }
        _ => String::new(),
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `command` to its end with its output captured, or kills it after `limit` and fails the
/// test naming it, with the tail of its stderr and of the broker log.
pub fn bounded(command: &mut Command, limit: Duration, what: &str) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{what}: no exit within {limit:?}; killed\n--- its stderr (last 20 lines) ---\n{}{}",
                tail(&err, 20),
                context_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// [`bounded`] as a method: a command's output, the command killed and the test failed if it
/// does not end within 180 s.
pub trait RunBounded {
    fn run_bounded(&mut self) -> Output;
}

impl RunBounded for Command {
    fn run_bounded(&mut self) -> Output {
        let what = format!("{self:?}");
        bounded(self, Duration::from_secs(180), &what)
    }
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
            "timed out after {limit:?} waiting for {what}{}",
            context_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines of `stream`, as they come, on a channel (read with a timeout).
pub fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
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
        let mut command = ordo();
        command
            .envs(env.iter().copied())
            .arg("run")
            .args(["--http", "127.0.0.1:0"])
            .args(extra);
        Running::spawn(command)
    }

    /// Starts `command` (an `ordo run` with `--http 127.0.0.1:0`, perhaps behind a wrapper)
    /// and waits for its listen line.
    pub fn spawn(mut command: Command) -> Running {
        let extra = format!("{command:?}");
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ordo run starts");
        let rx = lines_of(child.stderr.take().expect("piped"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                let _ = child.kill();
                panic!(
                    "{extra} printed no http address ({e}):\n{}{}",
                    seen.join("\n"),
                    context_tail()
                )
            });
            if let Some(a) = line.strip_prefix("ordo: http listening on ") {
                break a.parse().expect("an address");
            }
            seen.push(line);
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
        // A failing test shows what the process said that the test did not read.
        if std::thread::panicking() {
            let lines: Vec<String> = self.stderr.try_iter().collect();
            eprintln!(
                "--- ordo run at {} (last 40 unread stderr lines) ---\n{}",
                self.addr,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// Waits until every partition has applied everything appended before this call: appends one
/// reservation per partition through `m` and waits, with its read-your-writes token, until it
/// is applied (a partition applies its input in order). The events join the input, so the
/// oracle counts them like any other.
pub fn barrier(m: &Running, n: u32) {
    let count = ordo::core::PartitionCount::new(n).unwrap();
    let tag = unique("barrier");
    for p in 0..n {
        let key = (0..)
            .map(|i| format!("{tag}-{i}"))
            .find(|k| {
                ordo::core::partitioner::Partitioner::AbsHashModN.partition(k, count)
                    == ordo::core::Partition(p)
            })
            .unwrap();
        let body = format!(r#"{{"event_id":"{key}","reservation_no":"{key}","user_id":"{tag}"}}"#);
        let (code, r) = wait_for("the barrier append", Duration::from_secs(60), || {
            let (code, r) = http(m.addr, "POST", "/v1/reservations", Some(&body), &[]);
            (code != 503).then_some((code, r))
        });
        assert_eq!(code, 202, "{r}");
        let token = json(&r)["token"].as_str().unwrap().to_owned();
        let path = format!("/v1/reservations/{key}?after={token}&wait=5000");
        wait_for(
            "partition to apply the barrier",
            Duration::from_secs(120),
            || (m.get(&path).0 == 200).then_some(()),
        );
    }
}

/// Waits for `m` to exit after SIGTERM and asserts it exited 0.
pub fn terminate(m: &mut Running) {
    m.terminate();
    let status = wait_for("exit after SIGTERM", Duration::from_secs(60), || {
        m.child.try_wait().unwrap()
    });
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        m.stderr.try_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The body as JSON.
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
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

/// Every dead letter of a data dir as (reason, source partition, source offset), sorted, with
/// repeats kept: one lost and one doubled do not cancel out.
pub fn dead_letter_keys(dir: &Path) -> Vec<(String, u32, u64)> {
    let mut all: Vec<(String, u32, u64)> = dead_letters(dir)
        .iter()
        .map(|r| {
            (
                header(r, headers::REASON).to_owned(),
                header(r, headers::SOURCE_PARTITION).parse().unwrap(),
                header(r, headers::SOURCE_OFFSET).parse().unwrap(),
            )
        })
        .collect();
    all.sort();
    all
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

/// Waits until partition 0 of `member` reports a restore part way, and checks that its status
/// row, `/readyz` and the metric agree.
pub fn assert_restore_held(member: &Running) {
    let progress = wait_for(
        "partition 0's restore progress",
        Duration::from_secs(60),
        || {
            let (_, status) = member.get("/v1/status?scope=local");
            let status = json(&status);
            let row = &status["rows"][0];
            // 0 until the restore's first report.
            (row["state"] == "restoring")
                .then(|| row["restore_progress"].as_f64())
                .flatten()
                .filter(|p| *p > 0.0)
        },
    );
    assert!(progress < 1.0, "{progress}");
    let (code, ready) = member.get("/readyz");
    assert_eq!(code, 503, "{ready}");
    let percent = format!("0 at {:.0} %", progress * 100.0);
    assert!(ready.contains(&percent), "{ready} lacks {percent}");
    let gauge = member.metric_sum("ordo_restore_progress_ratio", "partition=\"0\"");
    assert!(
        (gauge - progress).abs() < 1e-9,
        "{gauge} against {progress}"
    );
}
