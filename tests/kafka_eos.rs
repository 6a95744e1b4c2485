//! `--guarantee exactly-once` on Apache Kafka, read the way a downstream service reads it: a
//! plain librdkafka consumer with `isolation.level=read_committed`, not ordo's fencing reader.
//! After members killed with SIGKILL, a zombie and a broker restart, it must see every state
//! change once (versions 1, 2, … with no repeat and no gap, ending at the reference model's
//! state) and every dead letter once. The same runs at `at-least-once` say what such a consumer
//! sees there; the oracle (`tests/common/oracle.rs`) holds for ordo's own readers in both.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::broker::*;
use common::*;
use ordo::log::topics::Role;

const EXACTLY_ONCE: [&str; 2] = ["--guarantee", "exactly-once"];

/// What a plain consumer saw of the state changes and dead letters.
#[derive(Debug, Default)]
struct Seen {
    /// State records seen again (a reservation's version not above the one before).
    repeated: u64,
    /// Versions skipped (a reservation's version more than one above the one before).
    gaps: u64,
    /// The last record of each reservation: state and version.
    last: BTreeMap<String, (String, u64)>,
    /// Dead letters by (reason, source partition, source offset), with how often each came.
    dead: BTreeMap<(String, u32, u64), u64>,
}

fn seen(broker: &Broker, n: u32, isolation: &str) -> Seen {
    let mut s = Seen::default();
    let mut version: BTreeMap<String, u64> = BTreeMap::new();
    for r in broker.plain_read(&broker.topic(Role::State), n, isolation) {
        // ordo's own records (epoch markers, position marks) and tombstones are not changes.
        if r.key.starts_with("__ordo.") || r.value.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        let got = v["version"].as_u64().unwrap();
        let before = version.get(&r.key).copied().unwrap_or(0);
        if got <= before {
            s.repeated += 1;
            continue;
        }
        s.gaps += got - before - 1;
        version.insert(r.key.clone(), got);
        s.last
            .insert(r.key, (v["state"].as_str().unwrap().to_owned(), got));
        assert!(r.partition >= 0);
    }
    for r in broker.plain_read(&broker.topic(Role::DeadLetters), n, isolation) {
        let key = (
            r.headers["ordo.reason"].clone(),
            r.headers["ordo.source.partition"].parse().unwrap(),
            r.headers["ordo.source.offset"].parse().unwrap(),
        );
        *s.dead.entry(key).or_default() += 1;
    }
    s
}

/// Asserts that a `read_committed` consumer sees each change and each dead letter once, and
/// ends at the reference model's states.
fn assert_each_once(broker: &Broker, n: u32) {
    let expected = oracle::expected(&broker.options(), n);
    let s = seen(broker, n, "read_committed");
    assert_eq!(
        (s.repeated, s.gaps),
        (0, 0),
        "a read_committed consumer saw state records repeated or skipped"
    );
    let want: BTreeMap<String, (String, u64)> = expected
        .states
        .iter()
        .map(|(no, e)| (no.clone(), (e.state.clone(), e.version)))
        .collect();
    assert_eq!(s.last.len(), want.len(), "reservations seen");
    assert!(
        s.last == want,
        "the last state of some reservation differs from the model"
    );
    let twice: Vec<_> = s.dead.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "dead letters seen twice: {twice:?}");
    let dead: BTreeSet<_> = s.dead.keys().cloned().collect();
    assert_eq!(dead, expected.dead, "dead letters seen once each");
}

/// Runs the rest of the input in group `g` at exactly-once, then checks ordo's own readers (the
/// oracle) and a plain read_committed consumer.
fn finish_and_check(broker: &Broker, g: &str) {
    let mut last = vec!["run", "--until-idle", "--no-http", "--group", g];
    last.extend_from_slice(&EXACTLY_ONCE);
    broker.ok(&last);
    oracle::assert_exact(broker, 4);
    assert_each_once(broker, 4);
}

/// Progress thresholds in `lo..hi` events, one per round, different every run.
fn random_points(rounds: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut points: Vec<f64> = (0..rounds)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lo + (x % 1_000_000) as f64 / 1_000_000.0 * (hi - lo)
        })
        .collect();
    points.sort_by(f64::total_cmp);
    points
}

/// A member killed with SIGKILL at `rounds` random moments of a 200 k-event run, restarted
/// each time, then run to the end: what a plain consumer reads of the outcome.
fn killed_rounds(guarantee: &[&str], rounds: usize) -> (Broker, Seen) {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "200000", "--seed", "31"]);
    let g = group();
    // A short session: a killed member's partitions move on within seconds.
    let mut extra = vec!["--batch-size", "200", "-X", "session.timeout.ms=3000"];
    extra.extend_from_slice(guarantee);
    // Each member is killed once it has processed a random number of events: 5 k to 40 k,
    // so the final run always has input left.
    for point in random_points(rounds, 5_000.0, 40_000.0) {
        let m = broker.member(&g, &extra);
        wait_for(
            "progress past the kill point",
            Duration::from_secs(120),
            || (m.metric_sum("ordo_events_total", "") >= point).then_some(()),
        );
        drop(m); // SIGKILL
    }
    let mut last = vec!["run", "--until-idle", "--no-http", "--group", &g];
    last.extend(["-X", "session.timeout.ms=3000"]);
    last.extend_from_slice(guarantee);
    broker.ok(&last);
    oracle::assert_exact(&broker, 4);
    let s = seen(&broker, 4, "read_committed");
    (broker, s)
}

/// Exactly-once: after three SIGKILLs at random moments, a read_committed consumer sees every
/// change once and every dead letter once, equal to the reference model.
#[test]
fn exactly_once_a_plain_consumer_sees_each_change_once_after_kills() {
    requires_apache_kafka("transactions: tansu 0.6 has no EndTxn");
    let (broker, s) = killed_rounds(&EXACTLY_ONCE, 3);
    eprintln!(
        "exactly-once, 3 SIGKILLs: a read_committed consumer saw {} repeated state records, {} \
         gaps, {} dead letters more than once",
        s.repeated,
        s.gaps,
        s.dead.values().filter(|c| **c > 1).count()
    );
    assert_each_once(&broker, 4);
}

/// At least once, the same kills: ordo's own readers are exact (the oracle), and the test
/// reports what a plain consumer saw, repeats included (the README quotes it).
#[test]
fn at_least_once_ordo_readers_are_exact_and_a_plain_consumer_may_see_repeats() {
    let (_broker, s) = killed_rounds(&[], 3);
    assert_eq!(s.gaps, 0, "a plain consumer never misses a change");
    eprintln!(
        "at-least-once, 3 SIGKILLs: a plain consumer saw {} repeated state records and {} dead \
         letters more than once (ordo's own readers: exact)",
        s.repeated,
        s.dead.values().filter(|c| **c > 1).count()
    );
}

/// A zombie: a member's owner stalls with a batch in its open transaction (a fail point), the
/// member is stopped with SIGSTOP until another member owns every partition and has applied
/// the rest of the input, then SIGCONT. The stalled owner's commit meets the newer producer of
/// its transactional id (the broker fences it), it lets the partition go, the member goes on,
/// and nothing it wrote becomes visible to read_committed.
#[test]
fn exactly_once_a_zombies_writes_never_become_visible() {
    requires_apache_kafka("transactions and eviction of a stalled member");
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "60000", "--seed", "37"]);
    let g = group();
    let mut extra = vec!["--batch-size", "100", "-X", "session.timeout.ms=3000"];
    extra.extend_from_slice(&EXACTLY_ONCE);
    let a = broker.member_with(&[("ORDO_FAIL_POINT", "stall@0:3000")], &g, &extra);
    let stalled = wait_for(
        "A's owner of partition 0 to stall",
        Duration::from_secs(60),
        || {
            a.stderr
                .try_iter()
                .find(|l| l.contains("stalling with the batch in flight"))
        },
    );
    a.signal("STOP");
    eprintln!("the zombie: {stalled}");
    let b = broker.member(&g, &extra);
    // Partition 0 alone has some 12 k records after the stall point.
    wait_for(
        "B to apply the rest of the input",
        Duration::from_secs(120),
        || {
            (b.metric_sum("ordo_partitions_owned", "") == 4.0
                && b.metric_sum("ordo_events_total", "") >= 12_000.0
                && b.metric_sum("ordo_partition_lag_records", "") == 0.0)
                .then_some(())
        },
    );
    a.signal("CONT");
    // The zombie's stalled batch ends without becoming visible: fenced at its commit, or, when
    // A's consumer learns first that it lost the partition, aborted or released. Which one
    // comes first is a race between the stall's end and A noticing its session expired.
    let ended = [
        "partition owner fenced",
        "transaction aborted",
        "partition released",
    ];
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let fenced = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match a.stderr.recv_timeout(left) {
            Ok(l) if l.contains("partition=0") && ended.iter().any(|e| l.contains(e)) => break l,
            Ok(l) => seen.push(l),
            Err(_) => panic!(
                "A's stalled owner of partition 0 did not end within 60 s; A said:\n{}",
                seen.join("\n")
            ),
        }
    };
    eprintln!("then: {fenced}");
    assert_eq!(
        a.get("/healthz").0,
        200,
        "A ended instead of going on as a member"
    );
    let mut a = a;
    let mut b = b;
    terminate(&mut a);
    terminate(&mut b);
    finish_and_check(&broker, &g);
}

/// The broker killed with SIGKILL mid-run and restarted on the same log: no transaction is
/// left hanging (the plain consumer reads to the end), and nothing is seen twice.
#[test]
fn exactly_once_survives_a_broker_restart() {
    requires_apache_kafka("transactions and a durable broker log");
    let broker = Broker::private();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "100000", "--seed", "41"]);
    let g = group();
    let mut extra = vec!["--batch-size", "200"];
    extra.extend_from_slice(&EXACTLY_ONCE);
    let mut m = broker.member(&g, &extra);
    wait_for("under way", Duration::from_secs(60), || {
        (m.metric_sum("ordo_events_total", "") >= 20_000.0).then_some(())
    });
    broker.kill();
    broker.restart();
    wait_for("every event processed", Duration::from_secs(240), || {
        (m.metric_sum("ordo_events_total", "") >= 100_000.0).then_some(())
    });
    terminate(&mut m);
    // A broker just restarted on a loaded machine has been seen dropping connections for a few
    // seconds after it first answered; the check runs once it answers again.
    broker.wait_until_up();
    finish_and_check(&broker, &g);
}

/// A broker without transactions is refused at start with one line naming it (exit 2); on
/// Apache Kafka the same command runs.
#[test]
fn exactly_once_starts_only_on_a_broker_with_transactions() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "2"]);
    let out = broker.run(&[
        "run",
        "--until-idle",
        "--no-http",
        "--guarantee",
        "exactly-once",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match broker.kind() {
        Kind::Kafka => assert!(out.status.success(), "{stderr}"),
        Kind::Tansu => {
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            let last = stderr.lines().last().unwrap_or_default();
            assert!(
                last.starts_with(
                    "ordo: error: --guarantee exactly-once needs a broker with \
                                  transactions"
                ) && last.contains("EndTxn"),
                "{last}"
            );
        }
    }
}
