//! The Kafka backend against a real Kafka-compatible broker: tansu, started per test on a free
//! loopback port with in-memory storage. `./scripts/test` installs tansu when it is missing.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::broker::*;
use common::*;
use ordo::core::Partition;
use ordo::core::changelog::Change;
use ordo::core::partitioner::Partitioner;
use ordo::core::record::headers;
use ordo::log::kafka::{KafkaOptions, read_to_end};

/// A tansu broker for one test.
fn project(v: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "reservation_no": v["reservation_no"], "user_id": v["user_id"], "state": v["state"],
        "target": v["target"], "version": v["version"], "applied_event_ids": v["applied_event_ids"],
        "source_offset": v["source_offset"], "source_partition": v["source_partition"],
    })
}

fn projected(m: &BTreeMap<String, serde_json::Value>) -> Vec<serde_json::Value> {
    m.values().map(project).collect()
}

/// The state an uninterrupted embedded run reaches on the same generated input.
fn reference(dir: &Path, partitions: &str, events: &str, seed: &str) -> Vec<serde_json::Value> {
    let d = dir.join("reference");
    let d = d.to_str().unwrap();
    ok(&[
        "produce",
        "--data-dir",
        d,
        "--partitions",
        partitions,
        "--generate",
        events,
        "--seed",
        seed,
    ]);
    ok(&["run", "--data-dir", d, "--until-idle", "--no-http"]);
    projected(&state(Path::new(d)))
}

#[test]
fn topics_produce_run_state_give_the_spec_states() {
    let broker = Broker::start();
    let out = broker.ok(&["topics", "apply", "--containers", "2", "--servers", "2"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("created reservation-state (4 partitions)")
    );
    broker.ok(&["topics", "check", "--partitions", "4"]);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spec");
    broker.ok(&[
        "produce",
        "--file",
        fixture.join("input.ndjson").to_str().unwrap(),
    ]);
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    let got: Vec<serde_json::Value> = broker
        .state()
        .values()
        .map(|v| {
            serde_json::json!({
                "reservation_no": v["reservation_no"], "user_id": v["user_id"], "state": v["state"],
                "target": v["target"], "version": v["version"], "applied_event_ids": v["applied_event_ids"],
            })
        })
        .collect();
    let want: Vec<serde_json::Value> = std::fs::read_to_string(fixture.join("expected.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, want);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for p in 0..4 {
        read_to_end(
            &broker.options(),
            "reservation-events.dlq",
            Partition(p),
            |r| {
                let reason = r
                    .headers
                    .iter()
                    .find(|(k, _)| k == headers::REASON)
                    .unwrap()
                    .1
                    .clone();
                *reasons.entry(reason).or_default() += 1;
            },
        )
        .unwrap();
    }
    let want: BTreeMap<String, u64> =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("dead_letters.json")).unwrap())
            .unwrap();
    assert_eq!(reasons, want);
}

#[test]
fn unreachable_brokers_and_mismatched_topics_fail_clearly() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let out = ordo()
        .env("ORDO_BROKERS", closed.to_string())
        .args(["topics", "check", "--partitions", "4"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the brokers"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );

    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    let out = broker
        .ordo(&[
            "run",
            "--containers",
            "3",
            "--servers",
            "2",
            "--until-idle",
            "--no-http",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("4 partitions but N = 6")
            && err.contains("topics apply")
            && err.contains("repartition"),
        "{err}"
    );
    let out = broker
        .ordo(&["topics", "check", "--partitions", "6"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn start_member(broker: &Broker, group: &str) -> Running {
    Running::start(&[
        "--brokers",
        &broker.brokers(),
        "--group",
        group,
        "--batch-size",
        "500",
    ])
}

/// Two members of one group; one is killed with SIGKILL at a random moment, the other is
/// stopped with SIGTERM; a final `run --until-idle` completes the input. tansu 0.6 never evicts
/// a dead member from its group, so the final run joins a fresh group and resumes from the
/// changelog alone: each partition's epoch markers and state records say how far it was
/// applied, so nothing is applied twice.
#[test]
fn two_members_one_killed_one_terminated_then_resumed_equal_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "60000", "--seed", "21"]);
    let g = group();
    let a = start_member(&broker, &g);
    let mut b = start_member(&broker, &g);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let threshold = 2_000.0 + f64::from(nanos % 40_000);
    wait_for(
        "progress past the kill point",
        Duration::from_secs(120),
        || {
            let total =
                a.metric_sum("ordo_events_total", "") + b.metric_sum("ordo_events_total", "");
            (total >= threshold).then_some(())
        },
    );
    drop(a); // SIGKILL
    let t0 = Instant::now();
    b.terminate();
    let status = wait_for("exit after SIGTERM", Duration::from_secs(60), || {
        b.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(60));
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    assert_eq!(
        projected(&broker.state()),
        reference(dir.path(), "4", "60000", "21")
    );
}

/// Partitions handed over mid-stream (a second member joins while the first is processing) lose
/// nothing and apply nothing twice: every input record is counted once across the two members,
/// and the state equals the reference. (Each owner reads its partition from exactly its resume
/// offset, which tansu 0.6 makes delicate: it skips the rest of a batch fetched from inside it.)
#[test]
fn partitions_handed_over_mid_stream_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "100000", "--seed", "23"]);
    let g = group();
    let a = start_member(&broker, &g);
    wait_for(
        "the first member under way",
        Duration::from_secs(60),
        || (a.metric_sum("ordo_events_total", "") >= 5_000.0).then_some(()),
    );
    let b = start_member(&broker, &g);
    let total = || a.metric_sum("ordo_events_total", "") + b.metric_sum("ordo_events_total", "");
    wait_for("every record processed", Duration::from_secs(120), || {
        (total() >= 100_000.0 && b.metric_sum("ordo_partitions_owned", "") == 2.0).then_some(())
    });
    assert_eq!(total(), 100_000.0, "each input record counted once");
    assert_eq!(
        projected(&broker.state()),
        reference(dir.path(), "4", "100000", "23")
    );
}

/// A stalled owner (SIGSTOP) that wakes up after a newer owner has taken its partitions stands
/// back as soon as it sees the newer epoch on `reservation-owners`, and nothing it wrote after
/// the newer marker is visible. (tansu 0.6 does not evict a stopped member, so the newer owner
/// is started in its own group: two owners of the same partitions at once, the harshest form
/// of a zombie.) What the zombie writes between waking and standing back depends on timing, so
/// a zombie write is also forged: a state record of the old epoch after the newer marker.
#[test]
fn a_stopped_owner_resumed_after_its_partitions_moved_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    broker.ok(&["produce", "--generate", "20000", "--seed", "8"]);
    let zombie = start_member(&broker, &group());
    wait_for(
        "the first owner to apply everything",
        Duration::from_secs(60),
        || (zombie.metric_sum("ordo_events_total", "") == 20_000.0).then_some(()),
    );
    zombie.signal("STOP");
    let g = group();
    let mut owner = start_member(&broker, &g);
    wait_for(
        "the new owner to take both partitions with epoch 2",
        Duration::from_secs(60),
        || {
            (owner.metric_sum("ordo_epoch", "") == 4.0
                && owner.metric_sum("ordo_partitions_owned", "") == 2.0)
                .then_some(())
        },
    );
    // More input while the zombie sleeps: on waking it may fetch and write some of it.
    let more = dir.path().join("more.ndjson");
    let events = ordo::tools::generate::generate(25_000, 8);
    std::fs::write(
        &more,
        events[20_000..]
            .iter()
            .map(|e| e.to_json() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    broker.ok(&["produce", "--file", more.to_str().unwrap()]);
    zombie.signal("CONT");
    wait_for(
        "the zombie to stand back and the owner to apply the new input",
        Duration::from_secs(60),
        || {
            (zombie.metric_sum("ordo_partitions_owned", "") == 0.0
                && owner.metric_sum("ordo_events_total", "") == 5_000.0)
                .then_some(())
        },
    );
    // The forged zombie write: reservation R of partition p, cancelled by epoch 1.
    let (key, stored) = broker.state().into_iter().next().unwrap();
    let mut forged: ordo::core::changelog::StateRecord =
        serde_json::from_value(stored.clone()).unwrap();
    forged.state = ordo::core::state_machine::Status::Cancelled;
    forged.version += 1;
    forged.epoch = ordo::core::Epoch(1);
    let producer = ordo::log::kafka::KafkaProducer::new(&broker.options()).unwrap();
    producer
        .send_all(&[ordo::log::kafka::Outgoing {
            topic: "reservation-state",
            partition: Partition(forged.source_partition),
            record: ordo::core::record::NewRecord {
                key: key.clone().into_bytes(),
                value: forged.to_json(),
                timestamp: 0,
                headers: vec![],
            },
        }])
        .unwrap();
    wait_for(
        "consumer lag reported as 0 for both partitions",
        Duration::from_secs(30),
        || {
            let (_, metrics) = owner.get("/metrics");
            let lags: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("ordo_partition_lag_records{"))
                .collect();
            (lags.len() == 2 && lags.iter().all(|l| l.ends_with(" 0"))).then_some(())
        },
    );
    let log: Vec<String> = zombie.stderr.try_iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("a newer owner holds this partition")),
        "the zombie never said it stood back: {log:#?}"
    );
    drop(zombie);
    owner.terminate();
    wait_for("exit", Duration::from_secs(60), || {
        owner.child.try_wait().unwrap()
    });

    let all = dir.path().join("all.ndjson");
    std::fs::write(
        &all,
        events
            .iter()
            .map(|e| e.to_json() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let reference_dir = dir.path().join("reference");
    let r = reference_dir.to_str().unwrap();
    ok(&[
        "produce",
        "--data-dir",
        r,
        "--partitions",
        "2",
        "--file",
        all.to_str().unwrap(),
    ]);
    ok(&["run", "--data-dir", r, "--until-idle", "--no-http"]);
    assert_eq!(
        projected(&broker.state()),
        projected(&state(&reference_dir))
    );
    // A restore sees the zombie's records (the forged one at least) and ignores them.
    let out = broker.ok(&[
        "run",
        "--until-idle",
        "--no-http",
        "--group",
        &g,
        "--log",
        "info",
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    let fenced: u64 = log
        .split(" fenced=")
        .skip(1)
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(fenced > 0, "no fenced records reported: {log}");
    assert_eq!(broker.state()[&key], stored, "the forged record is fenced");
    assert_eq!(
        projected(&broker.state()),
        projected(&state(&reference_dir))
    );
}

/// Fault injection with librdkafka's mock cluster: the broker goes down and comes back, and
/// produce requests fail with retriable errors; nothing is lost and nothing applied twice.
/// (The mock keeps little data and cannot fence, so it is used for faults only.)
#[test]
fn broker_down_and_request_errors_lose_nothing() {
    use ordo::app::Backend;
    use ordo::app::RunOptions;
    use ordo::metrics::Metrics;
    use ordo::shutdown::Shutdown;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use std::sync::Arc;

    let cluster = Mock::start(2);
    let (mock, n, opts) = (&cluster.cluster, cluster.n, cluster.opts.clone());
    let events = ordo::tools::generate::generate(6_000, 13);
    let send = |slice: &[ordo::core::event::Event]| cluster.send(slice);
    send(&events[..3_000]);

    let metrics = Arc::new(Metrics::fresh());
    let shutdown = Shutdown::new();
    let runner = {
        let (opts, metrics, shutdown) = (opts.clone(), metrics.clone(), shutdown.clone());
        std::thread::spawn(move || {
            ordo::app::run(
                Backend::Kafka { options: opts, n },
                RunOptions {
                    http: None,
                    until_idle: false,
                    batch_size: 200,
                    advertise: None,
                },
                metrics,
                shutdown,
            )
        })
    };
    let processed = || metric_sum(&metrics.render(), "ordo_events_total", "");
    wait_for("some progress", Duration::from_secs(60), || {
        (processed() >= 500.0).then_some(())
    });
    mock.broker_down(1).unwrap();
    // The outage itself: the broker stays down this long whatever the processor does.
    std::thread::sleep(Duration::from_secs(2));
    mock.broker_up(1).unwrap();
    let retriable = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 4];
    mock.request_errors(RDKafkaApiKey::Produce, &retriable);
    send(&events[3_000..]);
    wait_for("every event processed", Duration::from_secs(120), || {
        (processed() >= 6_000.0).then_some(())
    });
    shutdown.trigger();
    runner.join().unwrap().unwrap();
    assert_eq!(processed(), 6_000.0, "nothing processed twice");

    let model = ordo::core::reference::Model::run(&events);
    let got = changelog_states(&opts, n.get());
    assert_eq!(got.len(), model.states.len());
    for (no, want) in &model.states {
        let rec = &got[no];
        assert_eq!(
            (rec.state.as_str(), rec.version as usize),
            (want.state, want.applied.len()),
            "{no}"
        );
    }
}

/// The ownership table as one member sees it: per partition, its owner's member id and URL.
fn owners(m: &Running) -> Vec<(Option<String>, Option<String>)> {
    let (code, body) = m.get("/v1/owners");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["owner"].as_str().map(str::to_owned),
                r["url"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Two members of one group serve every key (SPEC §7): queries for a partition the other member
/// owns are forwarded in one hop and say who served them; an association by user sent to one
/// member finds a reservation the other owns; while a member does not answer, its keys and
/// every user lookup answer 503 with Retry-After, never a wrong 404; afterwards all answer.
#[test]
fn two_members_serve_every_key_through_its_owner() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    let g = group();
    let a = start_member(&broker, &g);
    let b = start_member(&broker, &g);
    let a_url = format!("http://{}", a.addr);
    let b_url = format!("http://{}", b.addr);
    // Both members know who serves every partition, and each serves two.
    let table = wait_for(
        "every partition served, on both",
        Duration::from_secs(60),
        || {
            let (ta, tb) = (owners(&a), owners(&b));
            let urls: Vec<_> = ta.iter().map(|(_, u)| u.clone()).collect();
            (ta == tb
                && urls.iter().all(Option::is_some)
                && urls.iter().filter(|u| u.as_deref() == Some(&a_url)).count() == 2
                && urls.iter().filter(|u| u.as_deref() == Some(&b_url)).count() == 2)
                .then_some(ta)
        },
    );
    let n = ordo::core::PartitionCount::new(4).unwrap();
    let partition_of = |k: &str| Partitioner::AbsHashModN.partition(k, n).0 as usize;
    // One key per partition, reserved through member A.
    let keys: Vec<String> = (0..4)
        .map(|p| {
            (0..)
                .map(|i| format!("R-{i}"))
                .find(|k| partition_of(k) == p)
                .unwrap()
        })
        .collect();
    let mut tokens = Vec::new();
    for (p, key) in keys.iter().enumerate() {
        let body = format!(r#"{{"event_id":"r{p}","reservation_no":"{key}","user_id":"u{p}"}}"#);
        let (code, r) = http(a.addr, "POST", "/v1/reservations", Some(&body), &[]);
        assert_eq!(code, 202, "{r}");
        tokens.push(json(&r)["token"].as_str().unwrap().to_owned());
    }
    // Every key, on either member, answers its owner's state, and says who served it.
    for m in [&a, &b] {
        for (p, key) in keys.iter().enumerate() {
            let path = format!("/v1/reservations/{key}?after={}&wait=20000", tokens[p]);
            let (code, headers, body) = http_full(m.addr, "GET", &path, None, &[]);
            assert_eq!(code, 200, "{path}: {body}");
            assert_eq!(json(&body)["state"], "reserved");
            assert_eq!(
                headers.get("ordo-served-by"),
                table[p].0.as_ref(),
                "{path} on {}",
                m.addr
            );
        }
    }
    // An association by user sent to A, for a reservation B owns; read-your-writes on B.
    let b_partition = table
        .iter()
        .position(|(_, u)| u.as_deref() == Some(&b_url))
        .unwrap();
    let (code, r) = http(
        a.addr,
        "POST",
        "/v1/associations",
        Some(&format!(
            r#"{{"event_id":"x{b_partition}","user_id":"u{b_partition}","target":"d"}}"#
        )),
        &[],
    );
    assert_eq!(code, 202, "{r}");
    let v = json(&r);
    assert_eq!(v["reservation_no"], keys[b_partition].as_str());
    let path = format!(
        "/v1/reservations/{}?after={}&wait=20000",
        keys[b_partition],
        v["token"].as_str().unwrap()
    );
    let (code, body) = b.get(&path);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["state"], "associated");
    let (code, body) = a.get(&format!("/v1/users/u{b_partition}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["reservations"][0]["state"], "associated");

    // Bad input on a forwarded path is still SPEC §7 JSON; a forwarded request is never
    // forwarded again.
    let remote = &keys[b_partition];
    for (path, status, code) in [
        (
            format!("/v1/reservations/{remote}?after=garbage"),
            400,
            "invalid_token",
        ),
        (
            format!("/v1/reservations/{remote}?wait=abc"),
            400,
            "invalid_query",
        ),
        ("/v1/nowhere".to_owned(), 404, "not_found"),
    ] {
        let (got, body) = a.get(&path);
        assert_eq!(
            (got, json(&body)["error"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
    let (code, headers, body) = http_full(
        a.addr,
        "GET",
        &format!("/v1/reservations/{remote}"),
        None,
        &[("ordo-forwarded", "1")],
    );
    assert_eq!(
        (code, json(&body)["error"].as_str()),
        (503, Some("no_owner"))
    );
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));

    // B stops answering: its keys, and every lookup by user (which could depend on B's
    // partitions), answer 503 with Retry-After; A's own keys still answer.
    // Who serves what right now (under load a rebalance may have moved partitions since).
    let now = owners(&a);
    let b_now = now
        .iter()
        .position(|(_, u)| u.as_deref() == Some(&b_url))
        .expect("B serves a partition");
    let a_partition = now
        .iter()
        .position(|(_, u)| u.as_deref() == Some(&a_url))
        .expect("A serves a partition");
    let remote = &keys[b_now];
    b.signal("STOP");
    let (code, headers, body) = http_full(
        a.addr,
        "GET",
        &format!("/v1/reservations/{remote}"),
        None,
        &[],
    );
    assert_eq!(
        (code, json(&body)["error"].as_str()),
        (503, Some("owner_unreachable")),
        "{body}"
    );
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    let (code, body) = a.get(&format!("/v1/reservations/{}", keys[a_partition]));
    assert_eq!(code, 200, "{body}");
    for user in [format!("u{a_partition}"), "nobody".to_owned()] {
        let body = format!(r#"{{"event_id":"y-{user}","user_id":"{user}"}}"#);
        let (code, headers, r) = http_full(a.addr, "POST", "/v1/associations", Some(&body), &[]);
        assert_eq!(code, 503, "{user}: {r}");
        assert!(
            matches!(
                json(&r)["error"].as_str(),
                Some("owner_unreachable" | "no_owner")
            ),
            "{r}"
        );
        assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    }
    b.signal("CONT");
    // Afterwards every key answers again, on both members.
    wait_for("every key answers again", Duration::from_secs(60), || {
        [&a, &b]
            .iter()
            .all(|m| {
                keys.iter()
                    .all(|k| m.get(&format!("/v1/reservations/{k}")).0 == 200)
            })
            .then_some(())
    });
    let (code, r) = http(
        a.addr,
        "POST",
        "/v1/associations",
        Some(r#"{"event_id":"z","user_id":"nobody"}"#),
        &[],
    );
    assert_eq!(
        (code, json(&r)["error"].as_str()),
        (404, Some("no_reservation"))
    );
    let (_, metrics) = a.get("/metrics");
    assert!(metrics.contains("ordo_forwarded_requests_total{outcome=\"relayed\"}"));
    assert!(
        metrics.contains("route=\"/v1/reservations/{no}\""),
        "route templates, not paths"
    );
}

/// `run --until-idle` on topics that never held a record ends: an empty partition is caught up
/// from the end its reader saw while positioning.
#[test]
fn until_idle_ends_on_empty_topics() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    let mut idle = broker
        .ordo(&["run", "--until-idle", "--no-http", "--group", &group()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let exited = wait_for(
        "run --until-idle on empty topics to end",
        Duration::from_secs(60),
        || idle.try_wait().unwrap(),
    );
    assert!(exited.success());
}

/// Failover inside one group, on a cluster that evicts a dead member: librdkafka's mock
/// cluster (hosted by this test) runs a group coordinator with session timeouts, which tansu
/// 0.6 does not. Two `ordo run` members share the partitions; one is SIGKILLed mid-stream; the
/// coordinator evicts it after its session timeout and the survivor takes its partitions,
/// restores them and finishes the input. The final changelog equals the reference model, every
/// version counting each event once. Prints the failover time: kill → every partition owned by
/// the survivor, split into the broker's eviction and rebalance, and ordo's own hand-over
/// (restore and epoch marker, the `restore_ms` of each "partition owned" line).
#[test]
fn failover_in_one_group_where_the_broker_evicts_the_dead_member() {
    const SESSION_MS: u64 = 6_000;
    let cluster = Mock::start(4);
    let opts = cluster.opts.clone();
    let events = ordo::tools::generate::generate(16_000, 21);
    let send = |slice: &[ordo::core::event::Event]| cluster.send(slice);
    send(&events[..8_000]);

    let g = group();
    let session = format!("session.timeout.ms={SESSION_MS}");
    let member = || {
        Running::start_with(
            &[("ORDO_LOG", "info")],
            &[
                "--brokers",
                &opts.brokers,
                "--group",
                &g,
                "--batch-size",
                "200",
                "-X",
                &session,
                "-X",
                "heartbeat.interval.ms=500",
            ],
        )
    };
    let owned = |m: &Running| m.metric_sum("ordo_partitions_owned", "") as u32;
    let a = member();
    a.wait_ready();
    let b = member();
    wait_for(
        "the partitions shared by both members",
        Duration::from_secs(60),
        || (owned(&a) + owned(&b) == 4 && owned(&a) > 0 && owned(&b) > 0).then_some(()),
    );
    // Mid-stream: more input while both members own partitions, some of it processed.
    send(&events[8_000..12_000]);
    let processed =
        || a.metric_sum("ordo_events_total", "") + b.metric_sum("ordo_events_total", "");
    wait_for(
        "progress on the shared input",
        Duration::from_secs(60),
        || (processed() >= 10_000.0).then_some(()),
    );
    // Lines B wrote so far are not about the failover.
    while b.stderr.try_recv().is_ok() {}
    let killed = Instant::now();
    drop(a); // SIGKILL: no LeaveGroup; only the session timeout removes it.
    send(&events[12_000..]);
    wait_for(
        "the survivor to own every partition",
        Duration::from_secs(120),
        || (owned(&b) == 4).then_some(()),
    );
    let failover = killed.elapsed();
    let handover_ms = std::iter::from_fn(|| b.stderr.try_recv().ok())
        .filter(|l| l.contains("partition owned"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("restore_ms="))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .max()
        .expect("the survivor logs the partitions it takes over");

    let model = ordo::core::reference::Model::run(&events);
    let fold = || changelog_states(&opts, 4);
    let caught_up = |got: &BTreeMap<String, ordo::core::changelog::StateRecord>| {
        got.len() == model.states.len()
            && model.states.iter().all(|(no, want)| {
                got.get(no.as_str())
                    .is_some_and(|r| r.version as usize >= want.applied.len())
            })
    };
    let got = wait_for("every event applied", Duration::from_secs(120), || {
        let got = fold();
        caught_up(&got).then_some(got)
    });
    for (no, want) in &model.states {
        let rec = &got[no.as_str()];
        assert_eq!(
            (rec.state.as_str(), rec.version as usize),
            (want.state, want.applied.len()),
            "{no}: applied exactly once"
        );
    }
    b.terminate();
    eprintln!(
        "failover: {} ms from SIGKILL to every partition owned by the survivor = {} ms of \
         eviction (session timeout {SESSION_MS} ms) and rebalance + {handover_ms} ms of ordo's \
         hand-over (restore, epoch marker)",
        failover.as_millis(),
        failover.as_millis().saturating_sub(u128::from(handover_ms)),
    );
}

/// `ordo export --brokers`: every record produced, offsets contiguous per partition, the
/// kcat offsets `-<n>`, `<offset>` with `--count`, and `s@<ms>`; an idle topic ends the export.
#[test]
fn export_on_kafka_equals_what_was_produced() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "3000", "--seed", "5"]);
    let lines = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["export"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&broker.ok(&all).stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = lines(&[]);
    let mut produced: Vec<String> = ordo::tools::generate::generate(3000, 5)
        .iter()
        .map(|e| e.to_json())
        .collect();
    let mut exported: Vec<String> = all
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_owned())
        .collect();
    produced.sort();
    exported.sort();
    assert_eq!(exported, produced, "every record, once");
    let mut by_partition: BTreeMap<u64, Vec<&serde_json::Value>> = BTreeMap::new();
    for r in &all {
        by_partition
            .entry(r["partition"].as_u64().unwrap())
            .or_default()
            .push(r);
    }
    assert_eq!(by_partition.len(), 4);
    for records in by_partition.values() {
        let offsets: Vec<u64> = records
            .iter()
            .map(|r| r["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
    }
    // The last five of each partition.
    let tail = lines(&["-o", "-5"]);
    let want: Vec<&serde_json::Value> = by_partition
        .values()
        .flat_map(|rs| rs[rs.len() - 5..].iter().copied())
        .collect();
    assert_eq!(tail.iter().collect::<Vec<_>>(), want);
    // From an offset, at most three.
    let some = lines(&["-o", "100", "--partition", "1", "--count", "3"]);
    assert_eq!(
        some.iter().collect::<Vec<_>>(),
        by_partition[&1][100..103].to_vec()
    );
    // From the first record at or after a time, in each partition.
    let mut times: Vec<i64> = all
        .iter()
        .map(|r| r["timestamp"].as_i64().unwrap())
        .collect();
    times.sort();
    let at = times[times.len() / 2];
    let since = lines(&["-o", &format!("s@{at}")]);
    let want: Vec<&serde_json::Value> = by_partition
        .values()
        .flat_map(|rs| {
            let first = rs
                .iter()
                .position(|r| r["timestamp"].as_i64().unwrap() >= at)
                .unwrap_or(rs.len());
            rs[first..].iter().copied()
        })
        .collect();
    assert!(!want.is_empty() && want.len() < all.len());
    assert_eq!(since.iter().collect::<Vec<_>>(), want);
    assert!(lines(&["--topic", "reservation-owners"]).is_empty());

    // Replays on Kafka over a range, and from a file: the last five records of each partition
    // replay on their own; the exported input, replayed from a file, equals the live state.
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    let out = broker.ok(&["replay", "-o", "-5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replayed 20 records"), "{err}");
    let file = tempfile::NamedTempFile::new().unwrap();
    let values: String = all
        .iter()
        .map(|r| format!("{}\n", r["value"].as_str().unwrap()))
        .collect();
    std::fs::write(file.path(), values).unwrap();
    let out = broker.ok(&["replay", "--diff", "--file", file.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("replay equals the live changelog"));
}

/// librdkafka's mock cluster, hosted by a test, with ordo's topics at N partitions, and a
/// producer into its input topic. A data store for small inputs only (a few MB per partition).
struct Mock {
    cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    opts: KafkaOptions,
    n: ordo::core::PartitionCount,
    producer: ordo::log::kafka::KafkaProducer,
}

impl Mock {
    fn start(partitions: u32) -> Mock {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        for t in [
            "reservation-events",
            "reservation-state",
            "reservation-events.dlq",
        ] {
            cluster.create_topic(t, partitions as i32, 1).unwrap();
        }
        cluster.create_topic("reservation-owners", 1, 1).unwrap();
        let opts = KafkaOptions {
            brokers: cluster.bootstrap_servers(),
            group: group(),
            properties: vec![],
            partitioner: Partitioner::AbsHashModN,
        };
        let producer = ordo::log::kafka::KafkaProducer::new(&opts).unwrap();
        Mock {
            cluster,
            opts,
            n: ordo::core::PartitionCount::new(partitions).unwrap(),
            producer,
        }
    }

    /// Appends `events` to the input, each to its SPEC partition.
    fn send(&self, events: &[ordo::core::event::Event]) {
        let out: Vec<ordo::log::kafka::Outgoing<'_>> = events
            .iter()
            .map(|e| {
                let (partition, record) = ordo::tools::produce::route(
                    e,
                    e.to_json().into_bytes(),
                    self.n,
                    Partitioner::AbsHashModN,
                );
                ordo::log::kafka::Outgoing {
                    topic: "reservation-events",
                    partition,
                    record,
                }
            })
            .collect();
        self.producer.send_all(&out).unwrap();
    }
}

/// The changelog of `partitions` partitions folded through the fencing reader.
fn changelog_states(
    opts: &KafkaOptions,
    partitions: u32,
) -> BTreeMap<String, ordo::core::changelog::StateRecord> {
    let mut got = BTreeMap::new();
    for p in 0..partitions {
        let mut reader = ordo::core::changelog::Reader::default();
        read_to_end(opts, "reservation-state", Partition(p), |r| {
            match reader.read(&r.key, &r.value) {
                Ok(Some(Change::Put(rec))) => {
                    got.insert(rec.reservation_no.to_string(), rec);
                }
                Ok(Some(Change::Delete(key))) => {
                    got.remove(key.as_str());
                }
                _ => {}
            }
        })
        .unwrap();
    }
    got
}

/// Two owners of the same partitions at once (the broker gave a partition to a new member
/// without taking it from the old one): the second member joins another group, so both are
/// assigned everything. The older owner stops at once when it sees the newer epoch on
/// `reservation-owners`, takes the partitions back when the newer owner lets them go, and
/// whatever is appended through either member is applied exactly once after the hand-overs:
/// `replay --diff` over the whole input equals the changelog (versions included), and every
/// accepted reservation is there. Resuming after the group's committed offset, which the
/// older member moved on while its records were fenced, lost the events of step 3.
#[test]
fn two_owners_of_one_partition_lose_no_accepted_event() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    broker.ok(&["produce", "--generate", "4000", "--seed", "31"]);
    let g = group();
    let mut a = start_member(&broker, &g);
    wait_for("A applies the input", Duration::from_secs(60), || {
        (a.metric_sum("ordo_events_total", "") == 4000.0
            && a.metric_sum("ordo_partitions_owned", "") == 2.0)
            .then_some(())
    });
    let mut accepted = Vec::new();
    let reserve = |accepted: &mut Vec<(String, String)>, m: &Running, key: String| {
        let body =
            format!(r#"{{"event_id":"e-{key}","reservation_no":"{key}","user_id":"u-{key}"}}"#);
        let (code, r) = http(m.addr, "POST", "/v1/reservations", Some(&body), &[]);
        assert_eq!(code, 202, "{key}: {r}");
        accepted.push((key, json(&r)["token"].as_str().unwrap().to_owned()));
    };
    // 1. B takes both partitions under epoch 2 while A still runs; A stands back.
    let mut b = start_member(&broker, &group());
    wait_for(
        "B owns both under epoch 2, A none",
        Duration::from_secs(60),
        || {
            (b.metric_sum("ordo_epoch", "") == 4.0
                && b.metric_sum("ordo_partitions_owned", "") == 2.0
                && a.metric_sum("ordo_partitions_owned", "") == 0.0)
                .then_some(())
        },
    );
    // 2. Appends through either member; queries through A are served by B.
    for i in 0..40 {
        reserve(
            &mut accepted,
            if i % 2 == 0 { &a } else { &b },
            format!("X-{i}"),
        );
    }
    for (key, token) in &accepted {
        let path = format!("/v1/reservations/{key}?after={token}&wait=20000");
        let (code, headers, body) = http_full(a.addr, "GET", &path, None, &[]);
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(json(&body)["state"], "reserved");
        let served_by = headers.get("ordo-served-by").cloned().unwrap_or_default();
        assert!(
            served_by.ends_with(&format!("/{}", b.child.id())),
            "{path} served by {served_by}, not B"
        );
    }
    // 3. B lets go (SIGTERM); A, still assigned both by its group, takes them back.
    b.terminate();
    let status = wait_for("B exits", Duration::from_secs(60), || {
        b.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
    wait_for(
        "A owns both again, under epoch 3",
        Duration::from_secs(60),
        || {
            (a.metric_sum("ordo_epoch", "") == 6.0
                && a.metric_sum("ordo_partitions_owned", "") == 2.0)
                .then_some(())
        },
    );
    for i in 40..80 {
        reserve(&mut accepted, &a, format!("X-{i}"));
    }
    a.terminate();
    let status = wait_for("A exits", Duration::from_secs(60), || {
        a.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
    let log: Vec<String> = a.stderr.try_iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("a newer owner holds this partition")),
        "A never said it stood back: {log:#?}"
    );
    // 4. The next hand-over, in A's group (whose offsets A committed).
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    let state = broker.state();
    for (key, _) in &accepted {
        let v = &state[key.as_str()];
        assert_eq!(
            (v["state"].as_str(), v["version"].as_u64()),
            (Some("reserved"), Some(1)),
            "{key}"
        );
    }
    let diff = broker.ordo(&["replay", "--diff"]).output().unwrap();
    assert_eq!(
        diff.status.code(),
        Some(0),
        "replay --diff: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
}
