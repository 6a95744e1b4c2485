//! The Kafka backend against a real broker, one deployment at a time: Apache Kafka 4.4 by
//! default (`tests/common/broker.rs`), tansu with `ORDO_TEST_BROKER=tansu`. Members, groups
//! and failover are in `kafka_group.rs`, injected faults and broker restarts in
//! `kafka_faults.rs`.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::broker::*;
use common::*;
use ordo::core::Partition;
use ordo::core::record::headers;
use ordo::log::kafka::read_to_end;
use ordo::log::topics::Role;

#[test]
fn topics_produce_run_state_give_the_spec_states() {
    let broker = Broker::start();
    let out = broker.ok(&["topics", "apply", "--containers", "2", "--servers", "2"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!(
        "created {} (4 partitions)",
        broker.topic(Role::State)
    )));
    broker.ok(&["topics", "check", "--partitions", "4"]);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spec");
    broker.ok(&[
        "produce",
        "--file",
        fixture.join("input.ndjson").to_str().unwrap(),
    ]);
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    assert_spec_outcome(&broker, &fixture);
    // The reference model over the same input agrees too, dead letter by dead letter.
    oracle::assert_exact(&broker, 4);
}

#[test]
fn unreachable_brokers_and_mismatched_topics_fail_clearly() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let out = bounded(
        ordo().env("ORDO_BROKERS", closed.to_string()).args([
            "topics",
            "check",
            "--partitions",
            "4",
        ]),
        Duration::from_secs(60),
        "topics check against a closed port",
    );
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
    let out = broker.run(&[
        "run",
        "--containers",
        "3",
        "--servers",
        "2",
        "--until-idle",
        "--no-http",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("4 partitions but N = 6")
            && err.contains("topics apply")
            && err.contains("repartition"),
        "{err}"
    );
    let out = broker.run(&["topics", "check", "--partitions", "6"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `run --until-idle` on topics that never held a record ends: an empty partition is caught up
/// from the end its reader saw while positioning.
#[test]
fn until_idle_ends_on_empty_topics() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    let out = broker.run(&["run", "--until-idle", "--no-http", "--group", &group()]);
    assert!(out.status.success(), "{}", tail(&out.stderr, 20));
}

/// `ordo export --brokers`: every record produced, offsets contiguous per partition, the
/// kcat offsets `-<n>`, `<offset>` with `--count`, and `s@<ms>`; an idle topic ends the export.
#[test]
fn export_on_kafka_equals_what_was_produced() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    // Two appends a clock tick apart: records carry the time of their append.
    let events = ordo::tools::generate::generate(3000, 5);
    let dir = tempfile::tempdir().unwrap();
    for (i, half) in events.chunks(1500).enumerate() {
        let file = dir.path().join(format!("{i}.ndjson"));
        std::fs::write(
            &file,
            half.iter().map(|e| e.to_json() + "\n").collect::<String>(),
        )
        .unwrap();
        broker.ok(&["produce", "--file", file.to_str().unwrap()]);
        let done = ordo::log::now_millis();
        wait_for("the clock to tick", Duration::from_secs(1), || {
            (ordo::log::now_millis() > done).then_some(())
        });
    }
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
    // Before any member ran, reservation-owners holds only the layout `topics apply` recorded.
    let owners = lines(&["--topic", "reservation-owners"]);
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0]["key"], "__ordo.layout", "{owners:?}");

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

/// `--topic-prefix` (`ORDO_TOPIC_PREFIX`): two deployments on one cluster, each under its own
/// prefix, never see each other's records; a prefix Kafka cannot name topics with is exit 2.
#[test]
fn topic_prefixes_keep_deployments_apart() {
    let broker = Broker::start();
    let other_prefix = format!("{}other.", broker.prefix());
    let other = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--topic-prefix", other_prefix.as_str()]);
        broker.run(&all)
    };
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    assert!(
        other(&["topics", "apply", "--partitions", "3"])
            .status
            .success()
    );
    broker.ok(&["produce", "--generate", "500"]);
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    assert!(!broker.state().is_empty());
    let out = other(&["state"]);
    assert!(out.status.success(), "{}", tail(&out.stderr, 5));
    assert!(out.stdout.is_empty(), "the other deployment holds nothing");
    assert!(
        other(&["topics", "check", "--partitions", "3"])
            .status
            .success()
    );
    let out = broker.run(&[
        "topics",
        "check",
        "--partitions",
        "2",
        "--topic-prefix",
        "a/b",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--topic-prefix") && err.contains("'/'"),
        "{err}"
    );
}

/// On Kafka, a partition whose restore is held part way shows how far it has read its
/// changelog (from the fetches' high watermark: the restore's size is not asked up front), as
/// on the embedded log; and the status says how many rebalances the member has seen.
#[test]
fn a_restore_held_part_way_shows_its_progress() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    broker.ok(&["produce", "--generate", "20000"]);
    let g = group();
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    let member = broker.member_with(&[("ORDO_FAIL_POINT", "stall-restore@0:3000")], &g, &[]);
    assert_restore_held(&member);
    let status = json(&member.get("/v1/status").1);
    assert!(status["rebalances"].as_u64().unwrap() >= 1, "{status}");
    assert!(
        status["last_rebalance_seconds_ago"].as_f64().is_some(),
        "{status}"
    );
}

/// `ordo run` against a cluster without ordo's topics is refused at once, naming the command
/// that creates them (exit 2), as `produce`, `state`, `export` and `replay` are; before, it
/// waited out librdkafka's 30 s of metadata propagation and ended with a bare
/// UnknownTopicOrPartition, exit 1.
#[test]
fn run_without_topics_names_topics_apply() {
    let broker = Broker::start();
    let t0 = Instant::now();
    let out = broker.run(&["run", "--until-idle", "--no-http"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ordo: error: topic ")
            && last.contains("does not exist")
            && last.contains("ordo topics apply"),
        "{last} (after {:?})",
        t0.elapsed()
    );
}

/// The states and dead-letter reasons of the contract's fixture, as `ordo state` and a plain read of
/// the dead-letter topic give them.
fn assert_spec_outcome(broker: &Broker, fixture: &Path) {
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
            &broker.topic(Role::DeadLetters),
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
fn the_partitioner_is_recorded_with_the_topics_and_another_one_is_refused() {
    let broker = Broker::start();
    broker.ok(&[
        "topics",
        "apply",
        "--partitions",
        "4",
        "--partitioner",
        "murmur2",
    ]);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spec");
    let input = fixture.join("input.ndjson");
    // Without --partitioner, produce and run adopt the recorded one.
    broker.ok(&["produce", "--file", input.to_str().unwrap()]);
    let refused = |args: &[&str]| {
        let out = broker.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let last = err.lines().last().unwrap_or_default().to_owned();
        assert!(
            last.starts_with("ordo: error: ")
                && last.contains("partitioner murmur2")
                && last.contains("pass --partitioner murmur2"),
            "{args:?}: {last}"
        );
    };
    let wrong = ["--partitioner", "abs-hash-mod-n"];
    refused(&[&["run", "--until-idle", "--no-http"][..], &wrong].concat());
    refused(&[&["produce", "--file", input.to_str().unwrap()][..], &wrong].concat());
    refused(&[&["replay", "--diff"][..], &wrong].concat());
    refused(&[&["topics", "apply", "--partitions", "4"][..], &wrong].concat());
    // The refused produce appended nothing: the outcome is the fixture's, once.
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    assert_spec_outcome(&broker, &fixture);
    // Every key was routed with murmur2: no dead letter says misrouted, and each state
    // record sits in the partition murmur2 gives its key.
    for p in 0..4 {
        read_to_end(
            &broker.options(),
            &broker.topic(Role::State),
            Partition(p),
            |r| {
                let key = String::from_utf8_lossy(&r.key).into_owned();
                if !key.starts_with("__ordo.") {
                    let n = ordo::core::PartitionCount::new(4).unwrap();
                    assert_eq!(
                        ordo::core::partitioner::Partitioner::Murmur2.partition(&key, n),
                        Partition(p),
                        "{key}"
                    );
                }
            },
        )
        .unwrap();
    }
}

/// `ordo export --topic reservation-events.repartition` (and the other two staging copies) reads
/// what a change of N has copied so far, so a stuck move can be looked into; with no move under
/// way, the topic does not exist and the export says so, exit 2.
#[test]
fn staging_topics_of_a_change_of_n_can_be_exported() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    let refused = |args: &[&str], says: &str| {
        let out = broker.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.lines().count() == 1 && err.contains(says),
            "{args:?}: {err}"
        );
    };
    refused(
        &["export", "--topic", "reservation-events.repartition"],
        "does not exist",
    );
    refused(
        &["export", "--topic", "reservation-owners.repartition"],
        "unknown topic",
    );
    // A staging copy as a rebuild leaves it: records in two partitions.
    let opts = broker.options();
    let staging = format!("{}reservation-events.repartition", broker.prefix());
    ordo::log::kafka::create_topic(&opts, &staging, 2).unwrap();
    let producer = ordo::log::kafka::KafkaProducer::new(&opts).unwrap();
    let records: Vec<ordo::log::kafka::Outgoing<'_>> = (0..6u32)
        .map(|i| ordo::log::kafka::Outgoing {
            topic: &staging,
            partition: Partition(i % 2),
            record: ordo::core::record::NewRecord {
                key: format!("R-{i}").into_bytes(),
                value: format!("{{\"copied\":{i}}}").into_bytes(),
                timestamp: 1,
                headers: vec![],
            },
        })
        .collect();
    producer.send_all(&records).unwrap();
    let out = broker.ok(&["export", "--topic", "reservation-events.repartition"]);
    let exported: Vec<(u64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["partition"].as_u64().unwrap(),
                v["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = [0, 2, 4, 1, 3, 5]
        .map(|i: u64| (i % 2, format!("R-{i}")))
        .to_vec();
    assert_eq!(exported, want);
    // The live input is another topic: still empty.
    assert!(broker.ok(&["export"]).stdout.is_empty());
    // The embedded log has no staging copies.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let data = data.to_str().unwrap();
    common::ok(&["run", "--data-dir", data, "--until-idle", "--no-http"]);
    let out = common::run(&[
        "export",
        "--data-dir",
        data,
        "--topic",
        "reservation-state.repartition",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("staging topics exist only on Kafka"), "{err}");
}

/// Topics that disagree on N (the changelog grown on its own) are named at once by
/// `repartition`, as by `run`: exit 2 with the topic and its count, nothing moved.
#[test]
fn repartition_names_a_wrong_topic_layout_at_once() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    let opts = broker.options();
    ordo::log::kafka::add_partitions(
        &opts,
        &[broker.topic(Role::State)],
        ordo::core::PartitionCount::new(6).unwrap(),
    )
    .unwrap();
    for args in [
        &["repartition", "--to-partitions", "6"][..],
        &["repartition", "--to-partitions", "6", "--apply"][..],
        &["run", "--until-idle", "--no-http"][..],
    ] {
        let t0 = Instant::now();
        let out = broker.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} after {:?}: {err}",
            t0.elapsed()
        );
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains(&broker.topic(Role::State)) && last.contains("6 partitions"),
            "{args:?}: {last}"
        );
    }
    // Nothing was moved: the input still has 4 partitions and no staging copy exists.
    assert_eq!(
        ordo::log::kafka::topic_partitions(&opts, Role::Events)
            .unwrap()
            .get(),
        4
    );
    let out = broker.run(&["export", "--topic", "reservation-events.repartition"]);
    assert_eq!(out.status.code(), Some(2));
}
