//! The gateway and query API over real HTTP, against `ordo run` on the embedded log with N = 4.

mod common;

use std::time::Duration;

use common::*;
use ordo::core::partitioner::{PartitionCount, Partitioner};
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn post(run: &Running, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (code, body) = http(run.addr, "POST", path, Some(body), headers);
    (code, json(&body))
}

fn start(dir: &std::path::Path) -> Running {
    let run = Running::start(&["--data-dir", dir.to_str().unwrap(), "--partitions", "4"]);
    run.wait_ready();
    run
}

#[test]
fn reserve_associate_by_user_and_read_your_writes() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(&dir.path().join("d"));
    let (code, r) = post(
        &run,
        "/v1/reservations",
        r#"{"reservation_no":"R-100","user_id":"alice"}"#,
        &[("Idempotency-Key", "req-1")],
    );
    assert_eq!(code, 202, "{r}");
    let want = Partitioner::AbsHashModN.partition("R-100", PartitionCount::new(4).unwrap());
    assert_eq!(
        r["partition"], want.0,
        "R-100 is appended at its contract partition"
    );
    assert!(r["offset"].is_u64() && r["token"].is_string());

    // Only the user: routed through the lookup to R-100.
    let (code, a) = post(
        &run,
        "/v1/associations",
        r#"{"event_id":"req-2","user_id":"alice","target":"tv-1"}"#,
        &[],
    );
    assert_eq!(code, 202, "{a}");
    assert_eq!(a["reservation_no"], "R-100");
    let token = a["token"].as_str().unwrap();
    let (code, body) = run.get(&format!("/v1/reservations/R-100?after={token}&wait=5000"));
    assert_eq!(code, 200);
    let s = json(&body);
    assert_eq!(
        (
            s["state"].as_str(),
            s["target"].as_str(),
            s["version"].as_u64()
        ),
        (Some("associated"), Some("tv-1"), Some(2))
    );

    // A retried request is answered as a duplicate and applied once.
    let (code, d) = post(
        &run,
        "/v1/associations",
        r#"{"event_id":"req-2","user_id":"alice","target":"tv-1"}"#,
        &[],
    );
    assert_eq!((code, d["duplicate"].as_bool()), (200, Some(true)), "{d}");
    let (code, d) = post(
        &run,
        "/v1/reservations",
        r#"{"reservation_no":"R-100","user_id":"alice"}"#,
        &[("Idempotency-Key", "req-1")],
    );
    assert_eq!((code, d["duplicate"].as_bool()), (200, Some(true)), "{d}");
    let (_, body) = run.get("/v1/users/alice");
    let u = json(&body);
    assert_eq!(u["reservations"].as_array().unwrap().len(), 1);
    assert_eq!(u["reservations"][0]["version"], 2);
}

#[test]
fn every_client_error_is_json_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(&dir.path().join("d"));
    let long = "x".repeat(129);
    let huge = format!(
        r#"{{"reservation_no":"R","user_id":"u","pad":"{}"}}"#,
        "p".repeat(70_000)
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/reservations", "{not json".into(), 400, "invalid_json"),
        ("/v1/reservations", "[1]".into(), 400, "invalid_json"),
        (
            "/v1/reservations",
            r#"{"event_id":"d","reservation_no":"R-dup","user_id":"u","user_id":"v"}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "/v1/reservations",
            r#"{"event_id":"e","reservation_no":"R"}"#.into(),
            400,
            "invalid_event",
        ),
        (
            "/v1/reservations",
            r#"{"reservation_no":"R","user_id":"u"}"#.into(),
            400,
            "missing_field",
        ),
        (
            "/v1/reservations",
            format!(r#"{{"event_id":"e","reservation_no":"{long}","user_id":"u"}}"#),
            400,
            "invalid_event",
        ),
        (
            "/v1/reservations",
            r#"{"event_id":"e","reservation_no":"R","user_id":7}"#.into(),
            400,
            "invalid_event",
        ),
        (
            "/v1/reservations",
            r#"{"type":"cancellation","event_id":"e","reservation_no":"R","user_id":"u"}"#.into(),
            400,
            "invalid_field",
        ),
        ("/v1/reservations", huge, 413, "too_large"),
        (
            "/v1/associations",
            r#"{"event_id":"e","user_id":"nobody"}"#.into(),
            404,
            "no_reservation",
        ),
        (
            "/v1/associations",
            r#"{"event_id":"e"}"#.into(),
            400,
            "missing_field",
        ),
        ("/v1/refunds", r#"{}"#.into(), 404, "not_found"),
    ];
    for (path, body, status, code) in cases {
        let (got, b) = http(run.addr, "POST", path, Some(&body), &[]);
        let v = json(&b);
        assert_eq!(
            (got, v["error"].as_str()),
            (status, Some(code)),
            "{path} {}",
            &body[..body.len().min(80)]
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        if body.contains("R-dup") {
            // A field given twice is refused by name, as `ordo produce` refuses it.
            assert!(
                v["message"]
                    .as_str()
                    .unwrap()
                    .contains("duplicate field `user_id`"),
                "{b}"
            );
        }
    }
    for (path, status, code) in [
        ("/v1/reservations/nope", 404, "not_found"),
        ("/v1/users/nobody", 404, "not_found"),
        ("/v1/reservations/R?after=garbage", 400, "invalid_token"),
        ("/v1/reservations/R?after=9.0", 400, "invalid_token"),
        ("/v1/reservations/R?after=0.999999&wait=50", 504, "timeout"),
        ("/nowhere", 404, "not_found"),
    ] {
        let (got, b) = run.get(path);
        assert_eq!(
            (got, json(&b)["error"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
}

#[test]
fn the_user_lookup_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let mut run = start(&d);
    let (code, r) = post(
        &run,
        "/v1/reservations",
        r#"{"event_id":"a","reservation_no":"R-7","user_id":"carol"}"#,
        &[],
    );
    assert_eq!(code, 202, "{r}");
    let token = r["token"].as_str().unwrap().to_owned();
    assert_eq!(
        run.get(&format!("/v1/reservations/R-7?after={token}&wait=5000"))
            .0,
        200
    );
    run.terminate();
    wait_for("exit", Duration::from_secs(30), || {
        run.child.try_wait().unwrap()
    });
    drop(run);

    let run = start(&d);
    let (code, a) = post(
        &run,
        "/v1/associations",
        r#"{"event_id":"b","user_id":"carol","target":"car-1"}"#,
        &[],
    );
    assert_eq!(
        (code, a["reservation_no"].as_str()),
        (202, Some("R-7")),
        "{a}"
    );
}

/// 8 concurrent clients, 20 000 requests: every accepted reservation and association is in the
/// state afterwards.
#[test]
fn load_nothing_accepted_is_lost() {
    const CLIENTS: usize = 8;
    const PAIRS: usize = 1250; // reservation + association each: 20 000 requests
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let run = start(&d);
    let addr = run.addr;
    let accepted: Vec<Vec<(String, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                s.spawn(move || {
                    let mut ok = Vec::new();
                    for i in 0..PAIRS {
                        let (no, user) = (format!("L-{c}-{i}"), format!("user-{c}-{i}"));
                        let body = format!(r#"{{"event_id":"r-{c}-{i}","reservation_no":"{no}","user_id":"{user}"}}"#);
                        let (code, _) = http(addr, "POST", "/v1/reservations", Some(&body), &[]);
                        assert_eq!(code, 202);
                        // Every other association names only the user.
                        let body = if i % 2 == 0 {
                            format!(r#"{{"event_id":"a-{c}-{i}","user_id":"{user}","target":"t-{i}"}}"#)
                        } else {
                            format!(r#"{{"event_id":"a-{c}-{i}","reservation_no":"{no}","user_id":"{user}","target":"t-{i}"}}"#)
                        };
                        let (code, b) = http(addr, "POST", "/v1/associations", Some(&body), &[]);
                        assert_eq!(code, 202, "{b}");
                        ok.push((no, format!("t-{i}")));
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    wait_for("every request applied", Duration::from_secs(120), || {
        (run.metric_sum("ordo_events_total", "") >= (CLIENTS * PAIRS * 2) as f64).then_some(())
    });
    run.terminate();
    let mut run = run;
    wait_for("exit", Duration::from_secs(30), || {
        run.child.try_wait().unwrap()
    });
    drop(run);
    let st = state(&d);
    let accepted: Vec<(String, String)> = accepted.into_iter().flatten().collect();
    assert_eq!(accepted.len(), CLIENTS * PAIRS);
    assert_eq!(st.len(), accepted.len());
    for (no, target) in accepted {
        let s = &st[&no];
        assert_eq!(
            (s["state"].as_str(), s["target"].as_str()),
            (Some("associated"), Some(target.as_str())),
            "{no}"
        );
    }
    assert!(dead_letters(&d).is_empty());
}

/// What the HTTP framework rejects is contract §7 JSON too, and a token that could never be waited
/// for (its offset has no successor) is refused rather than answered at once.
#[test]
fn framework_rejections_and_overflowing_tokens_are_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(&dir.path().join("d"));
    for (path, code) in [
        (
            "/v1/reservations/R?after=0.18446744073709551615",
            "invalid_token",
        ),
        (
            "/v1/reservations/R?after=0.18446744073709551616",
            "invalid_token",
        ),
        ("/v1/reservations/R?wait=abc", "invalid_query"),
        ("/v1/reservations/R?wait=-1", "invalid_query"),
        ("/v1/reservations/R?wait=5&wait=6", "invalid_query"),
        ("/v1/users/u?wait=abc", "invalid_query"),
        ("/v1/reservations/%FF%FE", "invalid_path"),
    ] {
        let (status, headers, body) = http_full(run.addr, "GET", path, None, &[]);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "{path}"
        );
        let v = json(&body);
        assert_eq!(v["error"], code, "{path}: {body}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // What hyper refuses before any route (it answers these itself, with no body) is JSON too,
    // on a fresh connection and after a request served on the same one.
    let long_uri = format!(
        "GET /v1/reservations/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let after_one = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nBad Header\r\n\r\n";
    for (request, status, code) in [
        (long_uri.as_str(), 414, "uri_too_long"),
        (many_headers.as_str(), 431, "headers_too_large"),
        ("GARBAGE\r\n\r\n", 400, "bad_request"),
        (after_one, 400, "bad_request"),
    ] {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(run.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        let last = answer.rsplit("HTTP/1.1 ").next().unwrap();
        let (head, body) = last.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&status.to_string()), "{answer}");
        assert!(head.contains("content-type: application/json"), "{answer}");
        assert_eq!(json(body)["error"], code, "{answer}");
    }
}

/// A body declared over the limit is refused before it is sent; a client that never finishes
/// its headers is cut off; SIGHUP stops the member as SIGTERM does, answering a long poll in
/// flight `503 shutting_down` before the process exits 0.
#[test]
fn oversized_bodies_slow_headers_and_shutdown_drain() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(&dir.path().join("d"));

    let mut big = std::net::TcpStream::connect(run.addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    big.write_all(
        b"POST /v1/reservations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100000000\r\n\r\n",
    )
    .unwrap();
    let mut answer = [0u8; 512];
    let n = big
        .read(&mut answer)
        .expect("answered before the body is sent");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""error":"too_large""#), "{answer}");

    let mut slow = std::net::TcpStream::connect(run.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut rest = Vec::new();
    // The server closes the connection (EOF) rather than waiting for the headers forever.
    slow.read_to_end(&mut rest)
        .expect("closed by the server, not timed out");
    // A body that never arrives whole is answered 408, as JSON, rather than held for ever.
    let mut slow = std::net::TcpStream::connect(run.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    slow.write_all(
        b"POST /v1/reservations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"event_id\"",
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");

    let addr = run.addr;
    let poll = std::thread::spawn(move || {
        http(
            addr,
            "GET",
            "/v1/reservations/R1?after=0.1000000&wait=30000",
            None,
            &[],
        )
    });
    wait_for("the long poll in flight", Duration::from_secs(30), || {
        (run.metric_sum(
            "ordo_http_requests_in_flight",
            "route=\"/v1/reservations/{no}\"",
        ) >= 1.0)
            .then_some(())
    });
    run.signal("HUP");
    let (code, body) = poll.join().unwrap();
    assert_eq!(code, 503, "{body}");
    assert_eq!(json(&body)["error"], "shutting_down", "{body}");
    let status = wait_for("exit after SIGHUP", Duration::from_secs(60), || {
        run.child.try_wait().unwrap()
    });
    assert!(status.success());
}

/// The answers the other tests do not reach, each produced end to end: `409 ambiguous` for a
/// user with two open reservations, `405` for a method a route does not take, and `400
/// bad_body` for a body that cannot be read (a broken chunked encoding).
#[test]
fn ambiguous_lookups_wrong_methods_and_unreadable_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(&dir.path().join("d"));
    let mut tokens = Vec::new();
    for no in ["R-amb-1", "R-amb-2"] {
        let (code, r) = post(
            &run,
            "/v1/reservations",
            &format!(r#"{{"event_id":"e-{no}","reservation_no":"{no}","user_id":"bob"}}"#),
            &[],
        );
        assert_eq!(code, 202, "{r}");
        tokens.push((no, r["token"].as_str().unwrap().to_owned()));
    }
    for (no, token) in &tokens {
        let (code, body) = run.get(&format!("/v1/reservations/{no}?after={token}&wait=5000"));
        assert_eq!(code, 200, "{body}");
    }
    let (code, r) = post(
        &run,
        "/v1/associations",
        r#"{"event_id":"assoc-bob","user_id":"bob","target":"tv"}"#,
        &[],
    );
    assert_eq!((code, r["error"].as_str()), (409, Some("ambiguous")), "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("reservation_no"),
        "{r}"
    );
    for (method, path) in [
        ("GET", "/v1/reservations"),
        ("DELETE", "/v1/reservations/R-amb-1"),
    ] {
        let (code, body) = http(run.addr, method, path, None, &[]);
        assert_eq!(
            (code, json(&body)["error"].as_str()),
            (405, Some("method_not_allowed")),
            "{method} {path}"
        );
    }
    // A chunk size that is not hexadecimal: the body cannot be read.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(run.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /v1/reservations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(head.starts_with("HTTP/1.1 400"), "{answer}");
    let body = if head.to_ascii_lowercase().contains("chunked") {
        body.lines().nth(1).unwrap_or_default().to_owned()
    } else {
        body.to_owned()
    };
    assert_eq!(json(&body)["error"], "bad_body", "{answer}");
}

/// While a partition restores its state, a query for one of its keys answers `503
/// not_ready` with `Retry-After` (its view is partial: a 404 or an older state would be
/// wrong), and the answer once ready is the reservation.
#[test]
fn queries_during_restore_are_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    processed(&d, "4", "300000");
    let key = state(&d).into_keys().next().unwrap();
    let run = Running::start(&["--data-dir", s(&d)]);
    let (code, headers, body) = http_full(
        run.addr,
        "GET",
        &format!("/v1/reservations/{key}"),
        None,
        &[],
    );
    assert_eq!(
        (code, json(&body)["error"].as_str()),
        (503, Some("not_ready")),
        "the first query came after the restore: {body}"
    );
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    run.wait_ready();
    let (code, body) = run.get(&format!("/v1/reservations/{key}"));
    assert_eq!(code, 200, "{body}");
}

/// An append the log refuses is answered `503 append_failed` with `Retry-After: 1`, as JSON;
/// the member goes on serving, and what was accepted before is applied. (The refusal is
/// injected: on a real full disk the owners' commits fail too, and which write meets it first
/// is chance; `a_failed_store_write_ends_the_process_and_the_restart_loses_nothing` covers
/// that path.)
#[test]
fn an_append_the_log_refuses_is_503_append_failed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let run = Running::start_with(
        &[("ORDO_FAIL_POINT", "append@3")],
        &["--data-dir", s(&d), "--partitions", "2"],
    );
    run.wait_ready();
    let post = |i: u32| {
        let body = format!(r#"{{"event_id":"f-{i}","reservation_no":"R-{i}","user_id":"u"}}"#);
        http_full(run.addr, "POST", "/v1/reservations", Some(&body), &[])
    };
    for i in 1..=2 {
        assert_eq!(post(i).0, 202);
    }
    for i in 3..=4 {
        let (code, headers, answer) = post(i);
        assert_eq!(
            (code, json(&answer)["error"].as_str()),
            (503, Some("append_failed")),
            "{answer}"
        );
        assert!(json(&answer)["message"].as_str().is_some(), "{answer}");
        assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    }
    // Each 5xx is logged once, with its cause.
    let mut logged: Vec<String> = Vec::new();
    wait_for("the two 503s logged", Duration::from_secs(10), || {
        logged.extend(run.stderr.try_iter().filter(|l| l.contains("http error")));
        (logged.len() >= 2).then_some(())
    });
    logged.extend(run.stderr.try_iter().filter(|l| l.contains("http error")));
    assert_eq!(logged.len(), 2, "{logged:?}");
    for line in &logged {
        assert!(
            line.contains("WARN")
                && line.contains("append_failed")
                && line.contains("File too large"),
            "{line}"
        );
    }
    assert_eq!(run.get("/healthz").0, 200);
    wait_for("the accepted reservations", Duration::from_secs(30), || {
        (run.get("/v1/reservations/R-2").0 == 200).then_some(())
    });
    assert_eq!(run.get("/v1/reservations/R-1").0, 200);
    assert_eq!(run.get("/v1/reservations/R-3").0, 404);
}

#[test]
fn with_a_token_file_only_requests_carrying_the_token_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ken-of-this-deployment\n").unwrap();
    let run = Running::start(&[
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--partitions",
        "4",
        "--http-token-file",
        token_file.to_str().unwrap(),
    ]);
    // Probes, the scrape and the page's HTML stay open.
    run.wait_ready();
    for open in ["/healthz", "/readyz", "/metrics", "/"] {
        assert_eq!(run.get(open).0, 200, "{open}");
    }
    let good = [("Authorization", "Bearer t0ken-of-this-deployment")];
    let reservation = r#"{"event_id":"e-7","reservation_no":"R-7","user_id":"bob"}"#;
    for bad in [
        &[][..],
        &[("Authorization", "Bearer t0ken-of-this-deploymen")][..],
        &[("Authorization", "Bearer t0ken-of-this-deployment2")][..],
        &[("Authorization", "Basic dDBrZW4=")][..],
    ] {
        for (method, path, body) in [
            ("POST", "/v1/reservations", Some(reservation)),
            ("GET", "/v1/reservations/R-7", None),
            ("GET", "/v1/status", None),
            ("GET", "/v1/owners", None),
            ("GET", "/v1/no-such-route", None),
        ] {
            let (code, headers, body) = http_full(run.addr, method, path, body, bad);
            assert_eq!(code, 401, "{method} {path} {bad:?}: {body}");
            assert_eq!(json(&body)["error"], "unauthorized", "{body}");
            assert_eq!(
                headers.get("www-authenticate").map(String::as_str),
                Some("Bearer")
            );
        }
    }
    // Nothing refused was appended; with the token the same requests are served.
    let (code, r) = post(&run, "/v1/reservations", reservation, &good);
    assert_eq!(code, 202, "{r}");
    let token = r["token"].as_str().unwrap();
    let (code, body) = http(
        run.addr,
        "GET",
        &format!("/v1/reservations/R-7?after={token}&wait=5000"),
        None,
        &good,
    );
    assert_eq!(
        (code, json(&body)["version"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    assert_eq!(http(run.addr, "GET", "/v1/status", None, &good).0, 200);
    // The refused appends would be R-7's partition's earlier records, applied before the token's.
    assert_eq!(
        run.metric_sum("ordo_events_total", ""),
        1.0,
        "one event appended"
    );

    // A token file that cannot be used stops `run` before it starts, exit 2, one line.
    std::fs::write(&token_file, "two words\n").unwrap();
    let out = common::run(&[
        "run",
        "--data-dir",
        dir.path().join("e").to_str().unwrap(),
        "--http-token-file",
        token_file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--http-token-file") && !err.contains("two words"),
        "{err}"
    );
}

/// A client learns what became of an event a `202` accepted: `GET /v1/outcomes/{token}` waits
/// until the partition has applied it, then says `accepted` or `refused` with the dead letter's
/// reason and error; after a restart the owner no longer knows older ones (`unknown`: the
/// dead-letter topic has them).
#[test]
fn a_client_learns_whether_its_accepted_event_was_applied_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let mut run = start(&d);
    let outcome = |run: &Running, token: &str| {
        let (code, body) = http(
            run.addr,
            "GET",
            &format!("/v1/outcomes/{token}?wait=5000"),
            None,
            &[],
        );
        assert_eq!(code, 200, "{body}");
        json(&body)
    };
    let accepted = |run: &Running, path: &str, body: &str| {
        let (code, r) = post(run, path, body, &[]);
        assert_eq!(code, 202, "{r}");
        r["token"].as_str().unwrap().to_owned()
    };
    let reserved = accepted(
        &run,
        "/v1/reservations",
        r#"{"event_id":"o-1","reservation_no":"R-o1","user_id":"ann"}"#,
    );
    let wrong_user = accepted(
        &run,
        "/v1/cancellations",
        r#"{"event_id":"o-2","reservation_no":"R-o1","user_id":"bob"}"#,
    );
    let nothing = accepted(
        &run,
        "/v1/associations",
        r#"{"event_id":"o-3","reservation_no":"R-none","user_id":"ann"}"#,
    );
    let o = outcome(&run, &reserved);
    assert_eq!(o["outcome"], "accepted", "{o}");
    assert_eq!(o["token"], reserved.as_str());
    for (token, reason) in [(&wrong_user, "user_mismatch"), (&nothing, "not_reserved")] {
        let o = outcome(&run, token);
        assert_eq!(
            (o["outcome"].as_str(), o["reason"].as_str()),
            (Some("refused"), Some(reason)),
            "{o}"
        );
        assert!(
            o["error"].as_str().is_some_and(|e| e.contains(reason)),
            "{o}"
        );
    }
    // Not a token of this deployment: 400, JSON.
    for bad in ["x", "9.0", "0.18446744073709551615"] {
        let (code, body) = http(run.addr, "GET", &format!("/v1/outcomes/{bad}"), None, &[]);
        assert_eq!(
            (code, json(&body)["error"].as_str()),
            (400, Some("invalid_token")),
            "{bad}: {body}"
        );
    }
    // After a restart the owner knows only what it processed itself.
    terminate(&mut run);
    let run = start(&d);
    assert_eq!(outcome(&run, &nothing)["outcome"], "unknown");
    let again = accepted(
        &run,
        "/v1/reservations",
        r#"{"event_id":"o-4","reservation_no":"R-o1","user_id":"ann"}"#,
    );
    let o = outcome(&run, &again);
    assert_eq!(
        (o["outcome"].as_str(), o["reason"].as_str()),
        (Some("refused"), Some("already_reserved")),
        "{o}"
    );
}
