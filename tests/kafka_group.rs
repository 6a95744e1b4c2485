//! Members of a consumer group on a real group coordinator (Apache Kafka 4.4 by default, tansu
//! with `ORDO_TEST_BROKER=tansu`): members killed, terminated, stalled and restarted, partitions
//! handed over mid-stream, failover inside one group, static membership, the KIP-848 protocol,
//! zombies and two owners of one partition, and queries served through each key's owner.
//! After each, the oracle (`tests/common/oracle.rs`) compares every state and every dead letter
//! with what the input topic leads to.

mod common;

use std::time::{Duration, Instant};

use common::broker::*;
use common::*;
use ordo::core::partitioner::Partitioner;
use ordo::log::topics::Role;

/// Flags of a member whose session times out after `ms` (classic protocol).
fn session(ms: u64) -> [String; 4] {
    [
        "-X".into(),
        format!("session.timeout.ms={ms}"),
        "-X".into(),
        format!("heartbeat.interval.ms={}", (ms / 6).max(100)),
    ]
}

fn args(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

fn owned(m: &Running) -> u32 {
    m.metric_sum("ordo_partitions_owned", "") as u32
}

fn processed(members: &[&Running]) -> f64 {
    members
        .iter()
        .map(|m| m.metric_sum("ordo_events_total", ""))
        .sum()
}

/// The partitions `m` owns per its `/v1/owners`.
fn owned_here(m: &Running) -> Vec<u32> {
    let (code, body) = m.get("/v1/owners");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["owned_here"].as_bool() == Some(true) && r["ready_here"].as_bool() == Some(true)
        })
        .map(|r| r["partition"].as_u64().unwrap() as u32)
        .collect()
}

/// Two members of one group; one is killed with SIGKILL at a random moment, the other is
/// stopped with SIGTERM; a final `run --until-idle` completes the input in the same group (on
/// Apache Kafka the coordinator evicts the dead member after its session timeout; tansu never
/// does, so there the final run joins a fresh group and resumes from the changelog alone).
#[test]
fn two_members_one_killed_one_terminated_then_resumed_equal_the_reference() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "60000", "--seed", "21"]);
    let g = group();
    let s = session(3000);
    let a = broker.member(&g, &args(&s));
    let mut b = broker.member(&g, &args(&s));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let threshold = 2_000.0 + f64::from(nanos % 40_000);
    wait_for(
        "progress past the kill point",
        Duration::from_secs(120),
        || (processed(&[&a, &b]) >= threshold).then_some(()),
    );
    drop(a); // SIGKILL
    terminate(&mut b);
    let last = match broker.kind() {
        Kind::Kafka => g.clone(),
        Kind::Tansu => group(),
    };
    let mut final_run = vec!["run", "--until-idle", "--no-http", "--group", &last];
    final_run.extend(args(&s));
    broker.ok(&final_run);
    oracle::assert_exact(&broker, 4);
}

/// Partitions handed over mid-stream: a second member joins while the first is still working
/// through the input. It must get its partitions before the first has applied everything, and
/// apply input itself; nothing is lost or applied twice, and every record is counted once
/// across the two members.
#[test]
fn partitions_handed_over_mid_stream_lose_nothing() {
    const EVENTS: f64 = 300_000.0;
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "300000", "--seed", "23"]);
    let g = group();
    let a = broker.member(&g, &["--batch-size", "100"]);
    wait_for(
        "the first member under way",
        Duration::from_secs(60),
        || (a.metric_sum("ordo_events_total", "") >= 5_000.0).then_some(()),
    );
    let b = broker.member(&g, &["--batch-size", "100"]);
    let at_handover = wait_for("B to own two partitions", Duration::from_secs(60), || {
        (owned(&b) == 2).then(|| a.metric_sum("ordo_events_total", ""))
    });
    assert!(
        at_handover < EVENTS,
        "the hand-over came after A had applied everything: nothing was handed over mid-stream"
    );
    wait_for("every record processed", Duration::from_secs(120), || {
        (processed(&[&a, &b]) >= EVENTS).then_some(())
    });
    assert_eq!(
        processed(&[&a, &b]),
        EVENTS,
        "each input record counted once"
    );
    assert!(
        b.metric_sum("ordo_events_total", "") > 0.0,
        "B applied nothing after the hand-over"
    );
    oracle::assert_exact(&broker, 4);
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
    let zombie = broker.member(&group(), &[]);
    wait_for(
        "the first owner to apply everything",
        Duration::from_secs(60),
        || (zombie.metric_sum("ordo_events_total", "") == 20_000.0).then_some(()),
    );
    zombie.signal("STOP");
    let g = group();
    let mut owner = broker.member(&g, &[]);
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
    broker.forge_zombie_cancel(&key, &stored);
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

    oracle::assert_exact(&broker, 2);
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
    oracle::assert_exact(&broker, 2);
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

/// Two members of one group serve every key (contract §7): queries for a partition the other member
/// owns are forwarded in one hop and say who served them; an association by user sent to one
/// member finds a reservation the other owns; while a member does not answer, its keys and
/// every user lookup answer 503 with Retry-After, never a wrong 404; afterwards all answer.
#[test]
fn two_members_serve_every_key_through_its_owner() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    let g = group();
    let a = broker.member(&g, &[]);
    let b = broker.member(&g, &[]);
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
    // Read-your-writes across members for lookups: clients each reserve through B and at once
    // associate by user through A. Their lookups overlap and share rounds of the input's ends;
    // each must see the reservation its client was just answered `202` for.
    std::thread::scope(|scope| {
        for c in 0..8 {
            let (a, b) = (a.addr, b.addr);
            scope.spawn(move || {
                for i in 0..10 {
                    let (user, no) = (format!("rw-{c}-{i}"), format!("RW-{c}-{i}"));
                    let body = format!(
                        r#"{{"event_id":"rw-r-{c}-{i}","reservation_no":"{no}","user_id":"{user}"}}"#
                    );
                    let (code, r) = http(b, "POST", "/v1/reservations", Some(&body), &[]);
                    assert_eq!(code, 202, "{r}");
                    let body =
                        format!(r#"{{"event_id":"rw-a-{c}-{i}","user_id":"{user}","target":"t"}}"#);
                    let (code, r) = http(a, "POST", "/v1/associations", Some(&body), &[]);
                    assert_eq!(
                        (code, json(&r)["reservation_no"].as_str()),
                        (202, Some(no.as_str())),
                        "{user}: {r}"
                    );
                }
            });
        }
    });
    // A token of another partition than the key's, owned by the other member: the key's owner
    // has that member wait for it (asked on either member, for a key of either).
    let a_partition = table
        .iter()
        .position(|(_, u)| u.as_deref() == Some(&a_url))
        .unwrap();
    let token_of_b = v["token"].as_str().unwrap();
    let (code, r) = http(
        b.addr,
        "POST",
        "/v1/cancellations",
        Some(&format!(
            r#"{{"event_id":"c{a_partition}","reservation_no":"{}","user_id":"u{a_partition}"}}"#,
            keys[a_partition]
        )),
        &[],
    );
    assert_eq!(code, 202, "{r}");
    let token_of_a = json(&r)["token"].as_str().unwrap().to_owned();
    for m in [&a, &b] {
        for (key, token) in [
            (&keys[a_partition], token_of_b),
            (&keys[b_partition], &token_of_a),
        ] {
            let path = format!("/v1/reservations/{key}?after={token}&wait=20000");
            let (code, body) = m.get(&path);
            assert_eq!(code, 200, "{path} on {}: {body}", m.addr);
        }
    }
    let path = format!(
        "/v1/reservations/{}?after={token_of_a}&wait=20000",
        keys[b_partition]
    );
    assert_eq!(json(&b.get(&path).1)["state"], "associated");
    let path = format!(
        "/v1/reservations/{}?after={token_of_a}&wait=20000",
        keys[a_partition]
    );
    assert_eq!(json(&a.get(&path).1)["state"], "cancelled");
    // What became of an accepted event, asked on either member: its owner answers.
    let (code, r) = http(
        b.addr,
        "POST",
        "/v1/cancellations",
        Some(&format!(
            r#"{{"event_id":"late{a_partition}","reservation_no":"{}","user_id":"u{a_partition}"}}"#,
            keys[a_partition]
        )),
        &[],
    );
    assert_eq!(code, 202, "{r}");
    let refused = json(&r)["token"].as_str().unwrap().to_owned();
    for m in [&a, &b] {
        for (token, outcome) in [(&token_of_a, "accepted"), (&refused, "refused")] {
            let (code, headers, body) = http_full(
                m.addr,
                "GET",
                &format!("/v1/outcomes/{token}?wait=20000"),
                None,
                &[],
            );
            assert_eq!(code, 200, "{body}");
            assert_eq!(json(&body)["outcome"], outcome, "{body}");
            assert_eq!(headers.get("ordo-served-by"), table[a_partition].0.as_ref());
        }
    }

    // Bad input on a forwarded path is still contract §7 JSON; a forwarded request is never
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
    // Who serves what once B is stopped (under load a rebalance may have moved partitions
    // before; a stopped B takes part in none).
    b.signal("STOP");
    // A's table as A itself sees it: a partition A has just taken shows as A's in its own
    // status a moment before A's follower reads A's ownership record.
    let now = wait_for(
        "A's table agrees with what A owns",
        Duration::from_secs(30),
        || {
            let table = owners(&a);
            let mine = owned_here(&a);
            let agrees = table
                .iter()
                .enumerate()
                .all(|(p, (_, u))| (u.as_deref() == Some(&a_url)) == mine.contains(&(p as u32)));
            agrees.then_some(table)
        },
    );
    let b_now = now
        .iter()
        .position(|(_, u)| u.as_deref() == Some(&b_url))
        .expect("B serves a partition");
    let a_partition = now
        .iter()
        .position(|(_, u)| u.as_deref() == Some(&a_url))
        .expect("A serves a partition");
    let remote = &keys[b_now];
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
    let mut a = broker.member(&g, &[]);
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
    let mut b = broker.member(&group(), &[]);
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
    oracle::assert_exact(&broker, 2);
    let diff = broker.run(&["replay", "--diff"]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "replay --diff: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
}

/// A stalled owner (SIGSTOP) that wakes after a newer owner came *and went*: the newer epoch is
/// already released on `reservation-owners` when it looks. It finds that epoch's marker in the
/// changelog where the record says, stands back, and takes its partitions back under a higher
/// epoch, so what is appended through it afterwards is in the changelog. (Ignoring a released
/// record, as it once did, it carried on under its fenced epoch: it answered and read back
/// events that no reader of the changelog ever saw, until its next hand-over.)
#[test]
fn a_stalled_owner_whose_successor_came_and_went_takes_its_partitions_back() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    broker.ok(&["produce", "--generate", "2000", "--seed", "41"]);
    let s = session(30_000);
    let mut a = broker.member(&group(), &args(&s));
    wait_for("A applies the input", Duration::from_secs(60), || {
        (a.metric_sum("ordo_events_total", "") == 2000.0 && owned(&a) == 2).then_some(())
    });
    a.signal("STOP");
    let mut b = broker.member(&group(), &[]);
    wait_for("B owns both under epoch 2", Duration::from_secs(60), || {
        (b.metric_sum("ordo_epoch", "") == 4.0 && owned(&b) == 2).then_some(())
    });
    terminate(&mut b);
    a.signal("CONT");
    wait_for(
        "A owns both again, under epoch 3",
        Duration::from_secs(60),
        || (a.metric_sum("ordo_epoch", "") == 6.0 && owned(&a) == 2).then_some(()),
    );
    let mut accepted = Vec::new();
    for i in 0..20 {
        let key = format!("W-{i}");
        let body =
            format!(r#"{{"event_id":"e-{key}","reservation_no":"{key}","user_id":"u-{key}"}}"#);
        let (code, r) = http(a.addr, "POST", "/v1/reservations", Some(&body), &[]);
        assert_eq!(code, 202, "{key}: {r}");
        let token = json(&r)["token"].as_str().unwrap().to_owned();
        let path = format!("/v1/reservations/{key}?after={token}&wait=20000");
        let (code, body) = http(a.addr, "GET", &path, None, &[]);
        assert_eq!(
            (code, json(&body)["state"].as_str()),
            (200, Some("reserved"))
        );
        accepted.push(key);
    }
    // Read back from the changelog while A still runs: every accepted event is there.
    let state = broker.state();
    for key in &accepted {
        assert_eq!(
            state.get(key).and_then(|v| v["version"].as_u64()),
            Some(1),
            "{key} was answered and read back through A, but is not in the changelog"
        );
    }
    let log: Vec<String> = a.stderr.try_iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("a newer owner holds this partition") && l.contains("held=false")),
        "A never said it stood back for a released epoch: {log:#?}"
    );
    terminate(&mut a);
    oracle::assert_exact(&broker, 2);
}

/// A change of N recorded while a member runs (a `repartition --apply` that raced the member's
/// start past its own check, forged here): the member finishes its batches, lets its
/// partitions go and exits 2 naming the command that finishes the move, rather than run on
/// against topics about to be deleted.
#[test]
fn a_running_member_stops_when_a_change_of_n_begins() {
    use ordo::core::ownership::{Phase, REPARTITION_KEY, RepartitionRecord};
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    broker.ok(&["produce", "--generate", "1000", "--seed", "5"]);
    let mut m = broker.member(&group(), &[]);
    wait_for(
        "the member to apply the input",
        Duration::from_secs(60),
        || (m.metric_sum("ordo_events_total", "") == 1000.0 && owned(&m) == 2).then_some(()),
    );
    let change = RepartitionRecord {
        from: ordo::core::PartitionCount::new(2).unwrap(),
        to: ordo::core::PartitionCount::new(3).unwrap(),
        phase: Phase::Copying,
        epoch: ordo::core::Epoch(9),
        by: "mover/1".into(),
        ts: ordo::log::now_millis(),
        layers: Vec::new(),
        copied: None,
    };
    ordo::log::kafka::KafkaProducer::new(&broker.options())
        .unwrap()
        .send_all(&[ordo::log::kafka::Outgoing {
            topic: &broker.topic(Role::Owners),
            partition: ordo::core::Partition(0),
            record: ordo::core::record::NewRecord {
                key: REPARTITION_KEY.as_bytes().to_vec(),
                value: change.to_json(),
                timestamp: change.ts,
                headers: vec![],
            },
        }])
        .unwrap();
    let status = wait_for("the member to stop", Duration::from_secs(60), || {
        m.child.try_wait().unwrap()
    });
    let log: Vec<String> = m.stderr.try_iter().collect();
    assert_eq!(status.code(), Some(2), "{log:#?}");
    let last = log.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("ordo: error:")
            && last.contains("from 2 to 3")
            && last.contains("--to-partitions 3 --apply"),
        "{log:#?}"
    );
    let owners = ordo::log::kafka::read_owners(&broker.options()).unwrap();
    let mut table = ordo::core::ownership::OwnerTable::new(change.from);
    for r in owners.owners {
        table.apply(r);
    }
    assert!(
        table.iter().all(|(_, r)| r.is_some_and(|r| !r.is_held())),
        "every partition let go: {table:?}"
    );
}

/// A member paused for longer than its group session (SIGSTOP) answers nothing from its view
/// when it wakes until it has checked that its partitions are still its own: a reservation a
/// newer owner cancelled meanwhile is never read back from it as `reserved` (it answers `503
/// no_owner` or `not_ready` while it checks and stands back, then the current state).
#[test]
fn a_member_woken_past_its_session_serves_no_stale_state() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    let s = session(4000);
    let zombie = broker.member(&group(), &args(&s));
    wait_for("the member owns both", Duration::from_secs(60), || {
        (owned(&zombie) == 2).then_some(())
    });
    let body = r#"{"event_id":"e-1","reservation_no":"R-9","user_id":"u-9"}"#;
    let read_back = |m: &Running, path: &str, body: &str| {
        let (code, r) = http(m.addr, "POST", path, Some(body), &[]);
        assert_eq!(code, 202, "{r}");
        let token = json(&r)["token"].as_str().unwrap().to_owned();
        let path = format!("/v1/reservations/R-9?after={token}&wait=20000");
        let (code, r) = http(m.addr, "GET", &path, None, &[]);
        assert_eq!(code, 200, "{r}");
        json(&r)["state"].as_str().unwrap().to_owned()
    };
    assert_eq!(read_back(&zombie, "/v1/reservations", body), "reserved");
    zombie.signal("STOP");
    let stopped = Instant::now();
    let owner = broker.member(&group(), &[]);
    wait_for("the newer owner owns both", Duration::from_secs(60), || {
        (owner.metric_sum("ordo_epoch", "") == 4.0 && owned(&owner) == 2).then_some(())
    });
    let cancel = r#"{"event_id":"e-2","reservation_no":"R-9","user_id":"u-9"}"#;
    assert_eq!(read_back(&owner, "/v1/cancellations", cancel), "cancelled");
    // The pause outlasts the member's 4 s session.
    let pause = Duration::from_millis(4500);
    std::thread::sleep(pause.saturating_sub(stopped.elapsed()));
    zombie.signal("CONT");
    let mut answers = Vec::new();
    wait_for(
        "the woken member to relay the newer owner's answer",
        Duration::from_secs(30),
        || {
            let (code, r) = http(zombie.addr, "GET", "/v1/reservations/R-9", None, &[]);
            let state = json(&r)["state"].as_str().map(str::to_owned);
            answers.push((code, state.clone(), json(&r)["error"].clone()));
            assert!(
                !(code == 200 && state.as_deref() == Some("reserved")),
                "the woken member read back its stale state: {answers:?}"
            );
            (code == 200 && state.as_deref() == Some("cancelled")).then_some(())
        },
    );
    assert!(
        answers
            .iter()
            .all(|(code, _, error)| *code == 200 || error == "no_owner" || error == "not_ready"),
        "{answers:?}"
    );
}

/// Failover inside one group on a real coordinator, for a member session timeout of `ms`:
/// two members share four partitions mid-stream, one is SIGKILLed, the coordinator evicts it
/// and the survivor takes its partitions, restores them and finishes the input. Prints the
/// time from the kill to every partition owned by the survivor, split into the coordinator's
/// eviction and rebalance (up to the survivor's assignment) and ordo's hand-over (restore and
/// epoch marker, `restore_ms` of each "partition owned" line).
fn failover(protocol: &[&str], session_ms: u64) {
    let broker = Broker::start();
    requires_apache_kafka(
        "tansu 0.6 never evicts a SIGKILLed member: no failover inside one group there",
    );
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "16000", "--seed", "21"]);
    let g = group();
    let s = session(session_ms);
    let mut flags = vec!["--batch-size", "200"];
    flags.extend_from_slice(protocol);
    if protocol.is_empty() {
        flags.extend(args(&s));
    } else {
        // Under KIP-848 the broker owns the session: the group's own config sets it.
        set_group_session(&broker, &g, session_ms);
    }
    let member = || broker.member_with(&[("ORDO_LOG", "info")], &g, &flags);
    let a = member();
    a.wait_ready();
    let b = member();
    wait_for(
        "the partitions shared by both members",
        Duration::from_secs(90),
        || (owned(&a) + owned(&b) == 4 && owned(&a) > 0 && owned(&b) > 0).then_some(()),
    );
    wait_for(
        "progress on the shared input",
        Duration::from_secs(60),
        || (processed(&[&a, &b]) >= 8_000.0).then_some(()),
    );
    while b.stderr.try_recv().is_ok() {}
    let killed = Instant::now();
    drop(a); // SIGKILL: no LeaveGroup; only the session timeout removes it.
    broker.ok(&["produce", "--generate", "4000", "--seed", "22"]);
    let mut assigned = None;
    let mut handover_ms = 0;
    wait_for(
        "the survivor to own every partition",
        Duration::from_secs(session_ms / 1000 + 60),
        || {
            for line in b.stderr.try_iter() {
                if line.contains("partition assigned") {
                    assigned.get_or_insert_with(|| killed.elapsed());
                }
                if line.contains("partition owned")
                    && let Some(ms) = line
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix("restore_ms="))
                        .and_then(|v| v.parse::<u64>().ok())
                {
                    handover_ms = handover_ms.max(ms);
                }
            }
            (owned(&b) == 4).then_some(())
        },
    );
    let failover = killed.elapsed();
    barrier(&b, 4);
    let mut b = b;
    terminate(&mut b);
    oracle::assert_exact(&broker, 4);
    let assigned = assigned.expect("the survivor logged its new assignment");
    eprintln!(
        "failover ({}, session {session_ms} ms): {} ms from SIGKILL to every partition owned by \
         the survivor = {} ms until the coordinator assigned them + {} ms of ordo's hand-over \
         (longest restore and epoch marker {handover_ms} ms)",
        if protocol.is_empty() {
            "classic"
        } else {
            "consumer"
        },
        failover.as_millis(),
        assigned.as_millis(),
        failover.saturating_sub(assigned).as_millis(),
    );
}

/// Sets the KIP-848 session timeout of `group` (a group config, `consumer.session.timeout.ms`;
/// the broker's default is 45 s).
fn set_group_session(broker: &Broker, group: &str, ms: u64) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", broker.brokers())
            .create()
            .unwrap();
    let (session, heartbeat) = (ms.to_string(), (ms / 6).max(500).to_string());
    let config = AlterConfig::new(ResourceSpecifier::Group(group))
        .set("consumer.session.timeout.ms", &session)
        .set("consumer.heartbeat.interval.ms", &heartbeat);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(admin.alter_configs(&[config], &AdminOptions::new()));
    assert!(matches!(result.as_deref(), Ok([Ok(_)])), "{result:?}");
}

#[test]
fn failover_in_one_group_with_a_short_session() {
    failover(&[], 3_000);
}

#[test]
fn failover_in_one_group_with_the_default_session() {
    failover(&[], 10_000);
}

/// The same failover with the KIP-848 consumer protocol, where the broker assigns and owns the
/// session timeout (the test broker's `group.consumer.session.timeout.ms`).
#[test]
fn failover_in_one_group_with_the_consumer_protocol() {
    failover(&["--group-protocol", "consumer"], 6_000);
}

/// A stalled member (SIGSTOP) past its session timeout: the coordinator evicts it and the other
/// member takes over. Woken, it is fenced: its owners stand back as soon as they see the newer
/// epochs, nothing it writes is visible, and it rejoins the group cleanly and takes a share of
/// the partitions again.
#[test]
fn a_stalled_member_is_fenced_and_rejoins() {
    let broker = Broker::start();
    requires_apache_kafka("tansu 0.6 never evicts a stalled member");
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "20000", "--seed", "41"]);
    let g = group();
    let s = session(3000);
    let mut a = broker.member(&g, &args(&s));
    let mut b = broker.member(&g, &args(&s));
    wait_for(
        "both members own two partitions",
        Duration::from_secs(90),
        || (owned(&a) == 2 && owned(&b) == 2).then_some(()),
    );
    b.signal("STOP");
    wait_for("A to own every partition", Duration::from_secs(60), || {
        (owned(&a) == 4).then_some(())
    });
    broker.ok(&["produce", "--generate", "10000", "--seed", "42"]);
    b.signal("CONT");
    wait_for("B back with a share", Duration::from_secs(90), || {
        (owned_here(&a).len() + owned_here(&b).len() == 4 && !owned_here(&b).is_empty())
            .then_some(())
    });
    barrier(&a, 4);
    // Every partition is served by exactly one member.
    let (ha, hb) = (owned_here(&a), owned_here(&b));
    assert!(ha.iter().all(|p| !hb.contains(p)), "{ha:?} and {hb:?}");
    assert_eq!(ha.len() + hb.len(), 4);
    terminate(&mut a);
    terminate(&mut b);
    oracle::assert_exact(&broker, 4);
}

/// Static membership (`--instance-id`, `group.instance.id`): a member restarted within its
/// session timeout gets its own partitions back, and no partition of the other member moves.
/// Prints the restart from SIGTERM to serving again.
#[test]
fn a_static_member_restarted_within_its_session_keeps_its_partitions() {
    let broker = Broker::start();
    requires_apache_kafka("tansu 0.6 has no static membership");
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "8000", "--seed", "43"]);
    let g = group();
    // A long session, short heartbeats: a member that left is noticed within half a second.
    let s = [
        "-X",
        "session.timeout.ms=20000",
        "-X",
        "heartbeat.interval.ms=500",
    ];
    let mut flags_a = vec!["--instance-id", "member-a"];
    flags_a.extend(s);
    let mut flags_b = vec!["--instance-id", "member-b"];
    flags_b.extend(s);
    let mut a = broker.member(&g, &flags_a);
    let mut b = broker.member(&g, &flags_b);
    wait_for(
        "both members own two partitions",
        Duration::from_secs(90),
        || (owned_here(&a).len() == 2 && owned_here(&b).len() == 2).then_some(()),
    );
    let (mine_a, mine_b) = (owned_here(&a), owned_here(&b));
    let rebalances_a = a.metric_sum("ordo_rebalances_total", "");
    let stopped = Instant::now();
    terminate(&mut b);
    let mut b = broker.member(&g, &flags_b);
    wait_for(
        "B serving its partitions again",
        Duration::from_secs(60),
        || (owned_here(&b) == mine_b).then_some(()),
    );
    let restart = stopped.elapsed();
    broker.ok(&["produce", "--generate", "2000", "--seed", "44"]);
    barrier(&a, 4);
    assert_eq!(owned_here(&a), mine_a, "A's partitions never moved");
    assert_eq!(
        a.metric_sum("ordo_rebalances_total", ""),
        rebalances_a,
        "A saw no rebalance"
    );
    terminate(&mut a);
    terminate(&mut b);
    oracle::assert_exact(&broker, 4);
    eprintln!(
        "static member restart: {} ms from SIGTERM to serving its partitions again",
        restart.as_millis()
    );
}

/// A forged ownership record cannot turn a member into a relay. The owner it names answers
/// every request with 16 MiB: the member answers `503 owner_unreachable` (an answer is relayed
/// up to 4 MiB). An owner URL with a path is never requested (it would let the record choose
/// what the member fetches, or point it back at itself), and a forwarded request is never
/// forwarded again, on `/v1/users` too. (A forged record of a higher epoch still makes the
/// owner stand back: only a signed table would tell it from a real one.)
#[test]
fn forged_owner_records_cannot_make_a_member_relay_or_loop() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    let a = broker.member(&group(), &[]);
    wait_for("A owns both partitions", Duration::from_secs(60), || {
        (a.metric_sum("ordo_partitions_owned", "") == 2.0).then_some(())
    });
    // The forged owner: any request gets 16 MiB.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server_url = format!("http://{}", server.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let body = vec![b' '; 16 << 20];
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    let a_self = format!("http://{}/v1/users/u-1?x=", a.addr);
    for (p, url) in [(0u32, server_url.clone()), (1, a_self)] {
        let forged = ordo::core::ownership::OwnershipRecord {
            partition: ordo::core::Partition(p),
            epoch: ordo::core::Epoch(1000),
            owner: "forged".into(),
            url: Some(url),
            ts: 0,
            held: Some(true),
            marker: None,
            sig: None,
        };
        broker.send_owner(&forged);
    }
    wait_for("A stands back from both", Duration::from_secs(60), || {
        (a.metric_sum("ordo_partitions_owned", "") == 0.0).then_some(())
    });
    let n = ordo::core::PartitionCount::new(2).unwrap();
    let key_of = |p: u32| {
        (0..)
            .map(|i| format!("R-{i}"))
            .find(|k| Partitioner::AbsHashModN.partition(k, n).0 == p)
            .unwrap()
    };
    // The status, the error code and the body of a GET on A.
    let get = |path: &str, headers: &[(&str, &str)]| {
        let (code, body) = http(a.addr, "GET", path, None, headers);
        let error = json(&body)["error"].as_str().map(str::to_owned);
        (code, error, body)
    };
    let failed = |code: u16, error: &str| (code, Some(error.to_owned()));
    // Partition 0: relayed from the forged owner, bounded.
    let (code, error, body) = get(&format!("/v1/reservations/{}", key_of(0)), &[]);
    assert_eq!((code, error), failed(503, "owner_unreachable"), "{body}");
    assert!(
        body.len() < 4096 && body.contains("relayed up to"),
        "{body}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    // Partition 1: an owner URL with a path is never requested.
    let (code, error, body) = get(&format!("/v1/reservations/{}", key_of(1)), &[]);
    assert_eq!((code, error), failed(503, "no_owner"), "{body}");
    let users = |m: &Running| {
        m.metric_sum(
            "ordo_http_request_duration_seconds_count",
            "route=\"/v1/users/{id}\"",
        )
    };
    let (code, error, body) = get("/v1/users/u-1", &[]);
    assert_eq!((code, error), failed(503, "no_owner"), "{body}");
    assert_eq!(users(&a), 1.0, "A requested its own /v1/users");
    // A forwarded request is answered here or refused, never forwarded on.
    let before = requests.load(Ordering::SeqCst);
    let forwarded = [("ordo-forwarded", "1")];
    let (code, error, body) = get("/v1/users/u-2", &forwarded);
    assert_eq!((code, error), failed(503, "no_owner"), "{body}");
    let path = format!("/v1/reservations/{}", key_of(0));
    let (code, _) = http(a.addr, "GET", &path, None, &forwarded);
    assert_eq!(code, 503);
    assert_eq!(
        requests.load(Ordering::SeqCst),
        before,
        "a forwarded request went on"
    );
}

/// Two members of one group: each member's status page (in headless Chromium) shows all four
/// partitions, merged through the ownership table, with both members as owners; and its
/// `/v1/status` says the same, with no row unreachable.
#[test]
fn each_members_status_page_shows_every_partition_and_both_owners() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    let g = group();
    let a = broker.member(&g, &[]);
    let b = broker.member(&g, &[]);
    let a_url = format!("http://{}", a.addr);
    let b_url = format!("http://{}", b.addr);
    wait_for(
        "each member serving two partitions",
        Duration::from_secs(60),
        || {
            let (ta, tb) = (owners(&a), owners(&b));
            let urls: Vec<_> = ta.iter().map(|(_, u)| u.clone()).collect();
            (ta == tb
                && urls.iter().filter(|u| u.as_deref() == Some(&a_url)).count() == 2
                && urls.iter().filter(|u| u.as_deref() == Some(&b_url)).count() == 2)
                .then_some(())
        },
    );
    // A member that let partitions go exports no gauge for them (sums over members would
    // count them twice): its per-partition gauges name exactly the partitions it owns.
    for m in [&a, &b] {
        let owned: std::collections::BTreeSet<String> = json(&m.get("/v1/owners").1)["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["owned_here"] == true)
            .map(|p| p["partition"].to_string())
            .collect();
        assert_eq!(owned.len(), 2);
        // Each joined, so each timed at least one assignment callback.
        assert!(m.metric_sum("ordo_rebalance_seconds_count", "kind=\"assign\"") >= 1.0);
        let (_, metrics) = m.get("/metrics");
        for gauge in [
            "ordo_state_entries",
            "ordo_epoch",
            "ordo_partition_lag_records",
        ] {
            let labelled: std::collections::BTreeSet<String> = metrics
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{gauge}{{partition=\"")))
                .filter_map(|l| l.split('"').next())
                .map(str::to_owned)
                .collect();
            assert_eq!(labelled, owned, "{gauge} on {}", m.addr);
        }
    }
    let name = |m: &Running| {
        json(&m.get("/v1/status").1)["member"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let names = format!("{},{}", name(&a), name(&b));
    for m in [&a, &b] {
        let (_, status) = m.get("/v1/status");
        let status = json(&status);
        let rows = status["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 4, "{status}");
        assert!(rows.iter().all(|r| r["state"] == "owning"), "{status}");
        let url = format!("http://{}", m.addr);
        // Each joined: it counts its rebalances and says when the last was.
        assert!(status["rebalances"].as_u64().unwrap() >= 1, "{status}");
        assert!(status["last_rebalance_seconds_ago"].is_number(), "{status}");
        let out = common::browser::browser(&[
            "--url",
            &url,
            "--partitions",
            "4",
            "--owners",
            &names,
            "--header",
            "group,group protocol,rebalances",
        ]);
        assert!(
            out.status.success(),
            "{url}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Two members sharing an API token (`--http-token-file`): every request needs it, and the
/// members send it to each other, so forwarded queries, the fan-out of an association by user
/// and the status page's cluster-wide rows all work across members.
#[test]
fn members_sharing_a_token_send_it_to_each_other() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "members-share-this\n").unwrap();
    let flag = ["--http-token-file", file.to_str().unwrap()];
    let g = group();
    let a = broker.member(&g, &flag);
    let b = broker.member(&g, &flag);
    let auth = [("Authorization", "Bearer members-share-this")];
    let get = |m: &Running, path: &str| http_full(m.addr, "GET", path, None, &auth);
    let b_url = format!("http://{}", b.addr);
    let table = wait_for(
        "each member serving two partitions",
        Duration::from_secs(60),
        || {
            let (code, _, body) = get(&a, "/v1/owners");
            let v = json(&body);
            let urls: Vec<Option<String>> = v["partitions"]
                .as_array()?
                .iter()
                .map(|r| r["url"].as_str().map(str::to_owned))
                .collect();
            (code == 200
                && urls.iter().all(Option::is_some)
                && urls.iter().filter(|u| u.as_deref() == Some(&b_url)).count() == 2
                && b.metric_sum("ordo_partitions_owned", "") == 2.0)
                .then_some(urls)
        },
    );
    let n = ordo::core::PartitionCount::new(4).unwrap();
    let on_b = |k: &String| {
        let p = Partitioner::AbsHashModN.partition(k, n).0 as usize;
        table[p].as_deref() == Some(b_url.as_str())
    };
    let key = (0..).map(|i| format!("R-{i}")).find(on_b).unwrap();
    // Reserved through A (appended by A), read on A (forwarded to B, with the token).
    let body = format!(r#"{{"event_id":"e1","reservation_no":"{key}","user_id":"carol"}}"#);
    let (code, r) = http(a.addr, "POST", "/v1/reservations", Some(&body), &auth);
    assert_eq!(code, 202, "{r}");
    let token = json(&r)["token"].as_str().unwrap().to_owned();
    let path = format!("/v1/reservations/{key}?after={token}&wait=20000");
    let (code, headers, body) = get(&a, &path);
    assert_eq!(
        (code, json(&body)["state"].as_str()),
        (200, Some("reserved")),
        "{body}"
    );
    let b_member = json(&get(&b, "/v1/status").2)["member"].clone();
    assert_eq!(
        headers.get("ordo-served-by").map(String::as_str),
        b_member.as_str(),
        "forwarded to B"
    );
    // The association by user fans out to B with the token and finds the reservation.
    let (code, r) = http(
        a.addr,
        "POST",
        "/v1/associations",
        Some(r#"{"event_id":"e2","user_id":"carol","target":"tv-1"}"#),
        &auth,
    );
    assert_eq!(
        (code, json(&r)["reservation_no"].as_str()),
        (202, Some(key.as_str())),
        "{r}"
    );
    // A's status page has B's rows, fetched with the token: none unreachable.
    let (code, _, body) = get(&a, "/v1/status");
    assert_eq!(code, 200, "{body}");
    let rows = json(&body)["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 4, "{body}");
    assert!(rows.iter().all(|r| r["state"] != "unreachable"), "{body}");
    // Without the token, neither member answers, forwarded or not.
    for m in [&a, &b] {
        let (code, body) = m.get(&format!("/v1/reservations/{key}"));
        assert_eq!(
            (code, json(&body)["error"].as_str()),
            (401, Some("unauthorized")),
            "{body}"
        );
    }
}

/// With a deployment key (`--http-token-file`), an ownership record another producer wrote is
/// ignored: unsigned, or signed with another key, it neither takes a partition from its owner
/// nor sends a query (or the token) to the URL it names.
#[test]
fn with_a_token_forged_owner_records_move_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "members-share-this\n").unwrap();
    let a = broker.member(&group(), &["--http-token-file", file.to_str().unwrap()]);
    wait_for("A owns both partitions", Duration::from_secs(60), || {
        (a.metric_sum("ordo_partitions_owned", "") == 2.0).then_some(())
    });
    // Where the forged records point: it counts who connects.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server_url = format!("http://{}", server.local_addr().unwrap());
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in server.incoming() {
            drop(stream);
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let other_key = ordo::core::ownership::OwnersKey::new(b"a guess");
    for p in [0u32, 1] {
        let mut forged = ordo::core::ownership::OwnershipRecord {
            partition: ordo::core::Partition(p),
            epoch: ordo::core::Epoch(1000),
            owner: "forged".into(),
            url: Some(server_url.clone()),
            ts: 0,
            held: Some(true),
            marker: None,
            sig: None,
        };
        if p == 1 {
            forged.sign(&other_key);
        }
        broker.send_owner(&forged);
    }
    let mut log = Vec::new();
    wait_for(
        "A to read both forged records",
        Duration::from_secs(60),
        || {
            log.extend(a.stderr.try_iter());
            (log.iter()
                .filter(|l| l.contains("ignoring an ownership record not signed"))
                .count()
                == 2)
                .then_some(())
        },
    );
    // A still owns both, still serves both, and never contacted the forged owner.
    assert_eq!(a.metric_sum("ordo_partitions_owned", ""), 2.0);
    assert!(
        !log.iter().any(|l| l.contains("a newer owner holds")),
        "{log:?}"
    );
    let auth = [("Authorization", "Bearer members-share-this")];
    let (code, body) = http(a.addr, "GET", "/v1/owners", None, &auth);
    assert_eq!(code, 200, "{body}");
    let a_url = format!("http://{}", a.addr);
    for r in json(&body)["partitions"].as_array().unwrap() {
        assert_eq!(r["url"].as_str(), Some(a_url.as_str()), "{body}");
        assert_eq!(r["epoch"].as_u64().map(|e| e < 1000), Some(true), "{body}");
    }
    let n = ordo::core::PartitionCount::new(2).unwrap();
    for p in 0..2 {
        let key = (0..)
            .map(|i| format!("R-{i}"))
            .find(|k| Partitioner::AbsHashModN.partition(k, n).0 == p)
            .unwrap();
        let (code, body) = http(
            a.addr,
            "GET",
            &format!("/v1/reservations/{key}"),
            None,
            &auth,
        );
        assert_eq!(
            (code, json(&body)["error"].as_str()),
            (404, Some("not_found")),
            "{body}"
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a request went to the forged owner"
    );
}
