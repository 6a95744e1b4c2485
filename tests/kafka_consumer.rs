//! The README's example downstream consumer (`examples/consumer/follow_state.py`, Python with
//! confluent-kafka) against the real broker: after a crash and a zombie, the view it folds
//! from `reservation-state` and the dead letters it reads equal what the input leads to (the
//! oracle, from the input topic alone), and equal `ordo state`. A consumer that keeps the
//! latest record per key without the epoch rule does not.
//!
//! Needs `ORDO_TEST_PYTHON`: a Python with confluent-kafka (`./scripts/test` sets one up).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::broker::*;
use common::oracle::{self, DeadLetter, Entity};
use common::*;
use ordo::log::topics::Role;

fn python() -> String {
    std::env::var("ORDO_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "ORDO_TEST_PYTHON names a Python with confluent-kafka (./scripts/test sets one up in \
             target/helm-venv: pip install confluent-kafka)"
        )
    })
}

/// Runs the example consumer to the topics' ends; its NDJSON output.
fn follow(broker: &Broker, extra: &[&str]) -> Vec<serde_json::Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/consumer/follow_state.py"
    );
    let mut command = std::process::Command::new(python());
    command
        .arg(script)
        .args(["--brokers", &broker.brokers()])
        .args(["--topic-prefix", broker.prefix()])
        .arg("--until-idle")
        .args(extra);
    let out = bounded(
        &mut command,
        Duration::from_secs(120),
        "the example consumer",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn entity(r: &serde_json::Value) -> Entity {
    let s = |k: &str| r[k].as_str().unwrap().to_owned();
    Entity {
        state: s("state"),
        user: s("user_id"),
        target: r["target"].as_str().map(str::to_owned),
        version: r["version"].as_u64().unwrap(),
        applied: r["applied_event_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().to_owned())
            .collect(),
    }
}

#[test]
fn the_example_consumer_sees_what_the_input_leads_to_after_a_crash_and_a_zombie() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--generate", "20000", "--seed", "12"]);

    // A crash: a member killed mid-run (SIGKILL, its last batches sent and never committed).
    let crashed = broker.member(&group(), &["--batch-size", "200"]);
    wait_for("progress before the kill", Duration::from_secs(60), || {
        (crashed.metric_sum("ordo_events_total", "") >= 5000.0).then_some(())
    });
    drop(crashed);

    // A zombie: an owner that finishes the input, is stopped, is replaced by a newer owner, and
    // wakes; and one write of its epoch after the newer marker, forged, since what it writes on
    // waking depends on timing.
    let zombie = broker.member(&group(), &[]);
    barrier(&zombie, 4);
    zombie.signal("STOP");
    let mut newer = broker.member(&group(), &[]);
    wait_for(
        "the newer owner to own every partition",
        Duration::from_secs(60),
        || (newer.metric_sum("ordo_partitions_owned", "") == 4.0).then_some(()),
    );
    broker.ok(&["produce", "--generate", "5000", "--seed", "13"]);
    barrier(&newer, 4);
    let (key, stored) = broker
        .state()
        .into_iter()
        .find(|(_, v)| v["state"] == "reserved")
        .unwrap();
    broker.forge_zombie_cancel(&key, &stored);
    zombie.signal("CONT");
    wait_for("the zombie to stand back", Duration::from_secs(60), || {
        (zombie.metric_sum("ordo_partitions_owned", "") == 0.0).then_some(())
    });
    terminate(&mut newer);
    drop(zombie);

    let want = oracle::expected(&broker.options(), 4);
    let view = follow(&broker, &[]);
    let states: BTreeMap<String, Entity> = view
        .iter()
        .map(|r| (r["reservation_no"].as_str().unwrap().to_owned(), entity(r)))
        .collect();
    assert!(
        states == want.states,
        "the consumer's view differs from what the input leads to"
    );
    let ordo_state: Vec<serde_json::Value> = broker.state().into_values().collect();
    assert_eq!(view, ordo_state, "the consumer's view equals `ordo state`");

    let dead: BTreeSet<DeadLetter> = follow(&broker, &["--dead-letters"])
        .iter()
        .map(|d| {
            (
                d["reason"].as_str().unwrap().to_owned(),
                d["source_partition"].as_u64().unwrap() as u32,
                d["source_offset"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(dead == want.dead, "the consumer's dead letters differ");

    // Without the epoch rule, the latest record per key shows the zombie's write.
    let mut naive: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for p in 0..4 {
        ordo::log::kafka::read_to_end(
            &broker.options(),
            &broker.topic(Role::State),
            ordo::core::Partition(p),
            |r| {
                if !r.key.starts_with(b"__ordo.") && !r.value.is_empty() {
                    naive.insert(
                        String::from_utf8(r.key).unwrap(),
                        serde_json::from_slice(&r.value).unwrap(),
                    );
                }
            },
        )
        .unwrap();
    }
    assert_eq!(naive[&key]["state"], "cancelled");
    assert_ne!(states[&key].state, "cancelled");
}
