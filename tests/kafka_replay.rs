//! The replay tooling's writes on Kafka (Apache Kafka 4.4 by default, tansu with
//! `ORDO_TEST_BROKER=tansu`): `replay --apply` and `repartition`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::broker::*;
use common::*;
use ordo::core::Partition;
use ordo::core::partitioner::Partitioner;
use ordo::core::record::NewRecord;
use ordo::log::kafka::{KafkaProducer, Outgoing};
use ordo::log::topics::Role;

#[test]
fn replay_diff_finds_a_forged_record_and_apply_repairs_it() {
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "3"]);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spec/input.ndjson");
    broker.ok(&["produce", "--file", fixture.to_str().unwrap()]);
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    assert!(broker.ok(&["replay", "--diff"]).stdout.is_empty());

    let n = ordo::core::PartitionCount::new(3).unwrap();
    let p = Partitioner::AbsHashModN.partition("R-0001", n);
    let forged = format!(
        r#"{{"reservation_no":"R-0001","user_id":"u1","state":"cancelled","target":null,"version":2,"applied_event_ids":["e1","x"],"source_partition":{},"source_offset":0,"epoch":1}}"#,
        p.0
    );
    broker.send_state(p, "R-0001", forged.as_bytes());
    let out = broker.run(&["replay", "--diff"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("\"R-0001\""), "{text}");
    // A state record for a reservation no input ever named: a replay deletes it.
    broker.send_state(p, "R-ghost", forged_state("R-ghost", p.0).as_bytes());
    let before = broker.state();
    assert_eq!(
        before["R-0001"]["state"], "cancelled",
        "the forged record is live"
    );
    // A member holds a partition (its ownership record says so): --apply refuses, naming it.
    let held = ordo::core::ownership::OwnershipRecord {
        partition: ordo::core::Partition(1),
        epoch: ordo::core::Epoch(50),
        owner: "host-a/77".into(),
        url: Some("http://10.0.0.7:8080".into()),
        ts: 1,
        held: Some(true),
        marker: None,
        sig: None,
    };
    broker.send_owner(&held);
    let out = broker.run(&["replay", "--apply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("host-a/77 (http://10.0.0.7:8080)") && err.contains("--assume-stopped"),
        "{err}"
    );
    assert_eq!(broker.state(), before, "a refused --apply changes nothing");
    // It let go: --apply makes the replay the changelog.
    broker.send_owner(&ordo::core::ownership::OwnershipRecord {
        url: None,
        held: Some(false),
        ..held
    });
    let out = broker.ok(&["replay", "--apply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 keys deleted"), "{err}");
    assert!(broker.ok(&["replay", "--diff"]).stdout.is_empty());
    let after = broker.state();
    assert!(!after.contains_key("R-ghost"));
    assert_ne!(after["R-0001"]["state"], "cancelled");
    assert_eq!(after.len(), before.len() - 1);
    // The members carry on from where the input was replayed to: the new input is applied,
    // nothing before it again (no dead letter twice).
    let dead = |b: &Broker| {
        let out = b.ok(&["export", "--topic", "reservation-events.dlq"]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let dead_before = dead(&broker);
    let extra = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        extra.path(),
        r#"{"type":"reservation","event_id":"late-1","reservation_no":"R-late","user_id":"u7"}"#
            .to_owned()
            + "\n",
    )
    .unwrap();
    broker.ok(&["produce", "--file", extra.path().to_str().unwrap()]);
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    let last = broker.state();
    assert_eq!(last["R-late"]["version"], 1);
    assert_eq!(last.len(), after.len() + 1);
    assert_eq!(dead(&broker), dead_before);
    assert!(broker.ok(&["replay", "--diff"]).stdout.is_empty());
}

fn forged_state(no: &str, partition: u32) -> String {
    format!(
        r#"{{"reservation_no":"{no}","user_id":"u9","state":"reserved","target":null,"version":1,"applied_event_ids":["zz"],"source_partition":{partition},"source_offset":0,"epoch":1}}"#
    )
}

/// What a state record says about its reservation, not where or by whom it was written.
fn essence(m: &BTreeMap<String, serde_json::Value>) -> Vec<serde_json::Value> {
    m.values()
        .map(|v| {
            serde_json::json!({
                "reservation_no": v["reservation_no"], "user_id": v["user_id"],
                "state": v["state"], "target": v["target"], "version": v["version"],
                "applied_event_ids": v["applied_event_ids"],
            })
        })
        .collect()
}

/// Dead letters as (reason, value), sorted.
fn dead_letters(export: &[u8]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = String::from_utf8_lossy(export)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["headers"]["ordo.reason"].as_str().unwrap().to_owned(),
                v["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    all.sort();
    all
}

/// Generated input in three files: what is processed before the change of N, what is
/// produced but not processed before it, and what comes after it.
struct Input {
    before: String,
    middle: String,
    after: String,
}

fn split_input(dir: &Path) -> Input {
    let lines: Vec<String> = ordo::tools::generate::generate(4000, 11)
        .iter()
        .map(|e| e.to_json())
        .collect();
    let write = |name: &str, part: &[String]| {
        let path = dir.join(name);
        std::fs::write(&path, part.join("\n") + "\n").unwrap();
        path.to_str().unwrap().to_owned()
    };
    Input {
        before: write("before.ndjson", &lines[..2000]),
        middle: write("middle.ndjson", &lines[2000..2500]),
        after: write("after.ndjson", &lines[2500..]),
    }
}

/// The state and dead letters of an embedded run at N = 6 over `files`, from scratch.
fn from_scratch(dir: &Path, files: &[&str]) -> (Vec<serde_json::Value>, Vec<(String, String)>) {
    from_scratch_at(dir, files, 6)
}

/// The state and dead letters of an embedded run at N = `n` over `files`, from scratch.
fn from_scratch_at(
    dir: &Path,
    files: &[&str],
    n: u32,
) -> (Vec<serde_json::Value>, Vec<(String, String)>) {
    let d = dir.join(format!("scratch-{n}"));
    let d = d.to_str().unwrap();
    let n = n.to_string();
    for f in files {
        ok(&["produce", "--data-dir", d, "--partitions", &n, "--file", f]);
    }
    ok(&["run", "--data-dir", d, "--until-idle", "--no-http"]);
    let dead = ok(&[
        "export",
        "--data-dir",
        d,
        "--topic",
        "reservation-events.dlq",
    ]);
    (essence(&state(Path::new(d))), dead_letters(&dead.stdout))
}

/// After the move: the topics have 6 partitions, a replay equals the changelog (at once when
/// every record was processed before the move), more input produced at N = 6 is processed,
/// and the result equals a from-scratch run at N = 6.
fn finish_at_six(broker: &Broker, dir: &Path, input: &Input, group: &str, all_processed: bool) {
    broker.ok(&["topics", "check", "--partitions", "6"]);
    if all_processed {
        let out = broker.ok(&["replay", "--diff"]);
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    broker.ok(&["produce", "--file", &input.after]);
    broker.ok(&["run", "--until-idle", "--no-http", "--group", group]);
    let (state, dead) = from_scratch(dir, &[&input.before, &input.middle, &input.after]);
    assert_eq!(essence(&broker.state()), state);
    let exported = broker.ok(&["export", "--topic", "reservation-events.dlq"]);
    assert_eq!(dead_letters(&exported.stdout), dead);
    let out = broker.ok(&["replay", "--diff"]);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A broker with topics at N = 4 and the first part of the input produced.
fn at_four() -> (tempfile::TempDir, Input, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let input = split_input(dir.path());
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "4"]);
    broker.ok(&["produce", "--file", &input.before]);
    (dir, input, broker)
}

/// `ordo repartition --to-partitions 6 --apply --group <group> extra…`.
fn move_to_six(broker: &Broker, group: &str, extra: &[&str]) -> std::process::Command {
    let mut args = vec![
        "repartition",
        "--to-partitions",
        "6",
        "--apply",
        "--group",
        group,
    ];
    args.extend_from_slice(extra);
    broker.ordo(&args)
}

/// How long a repartition may take here.
const LIMIT: Duration = Duration::from_secs(180);

/// Runs `command`, which must succeed.
fn ok_output(mut command: std::process::Command) -> std::process::Output {
    let out = bounded(&mut command, LIMIT, "repartition");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// 4 → 6 by a rebuild: refused while a member owns partitions, and while input is unprocessed
/// unless `--allow-unprocessed` moves it (processed after the move, each key in order).
#[test]
fn repartition_4_to_6_then_more_input_equals_a_from_scratch_run_at_6() {
    let (dir, input, broker) = at_four();
    let g = group();
    let member = broker.member(&g, &[]);
    // Ready with nothing assigned yet is ready too: wait until it owns every partition.
    wait_for(
        "the member to own all 4 partitions",
        Duration::from_secs(60),
        || (member.metric_sum("ordo_partitions_owned", "") >= 4.0).then_some(()),
    );
    let out = bounded(&mut move_to_six(&broker, &g, &[]), LIMIT, "repartition");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("held by running members") && err.contains(&member.addr.to_string()),
        "{err}"
    );
    // Stopped (it lets its partitions go), after it processed everything.
    wait_for("the member to catch up", Duration::from_secs(60), || {
        (member.metric_sum("ordo_events_total", "") >= 2000.0).then_some(())
    });
    member.terminate();
    let mut member = member;
    let status = wait_for("the member to exit", LIMIT, || {
        member.child.try_wait().unwrap()
    });
    assert!(status.success());
    // More input while it is stopped: not processed yet.
    broker.ok(&["produce", "--file", &input.middle]);

    // Without --rebuild, growing takes the in-place path where the broker can add partitions.
    let plan = broker.ok(&["repartition", "--to-partitions", "6"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    match broker.kind() {
        Kind::Kafka => assert!(text.contains("how       in place"), "{text}"),
        Kind::Tansu => assert!(
            text.contains("rebuild (the broker cannot add partitions: UnsupportedFeature)"),
            "{text}"
        ),
    }
    let plan = broker.ok(&["repartition", "--to-partitions", "6", "--rebuild"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("N 4 → 6")
            && text.contains("rebuild (asked with --rebuild)")
            && text.contains("2500 records")
            && text.contains("500 not yet processed"),
        "{text}"
    );
    let out = broker.run(&[
        "repartition",
        "--to-partitions",
        "6",
        "--apply",
        "--rebuild",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("500 input records are not processed yet")
            && err.contains("--allow-unprocessed"),
        "{err}"
    );
    let out = ok_output(move_to_six(&broker, &g, &["--allow-unprocessed"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("check OK"), "{text}");
    let again = ok_output(move_to_six(&broker, &g, &[]));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
    finish_at_six(&broker, dir.path(), &input, &g, false);
}

/// Kills `child` with SIGKILL once a line of its stderr satisfies `at`; it must not have
/// finished by itself.
fn kill_on(child: &mut std::process::Child, at: impl Fn(&str) -> bool) {
    let lines = lines_of(child.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the repartition reaches the kill point in time");
        if at(&line) {
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed before it finished: {status}");
}

/// While a change of N to 6 is recorded at `phase`, `ordo run` exits 2 naming the command
/// that finishes it, and the dry run says it is under way.
fn refused_while_under_way(broker: &Broker, group: &str, phase: &str) {
    let out = broker.run(&[
        "run",
        "--until-idle",
        "--no-http",
        "--group",
        group,
        "--partitions",
        "6",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ordo repartition --brokers ... --to-partitions 6 --apply"),
        "{err}"
    );
    let dry = broker.ok(&["repartition", "--to-partitions", "6"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains(&format!("under way (phase {phase}")),
        "{text}"
    );
}

/// While `holder` (a tool's command) holds the deployment's lease, a move to 6 is refused, exit
/// 2, naming the holder and how to take the lease over; `replay --apply`, which would take it
/// too, is refused by the change of N first, naming the command that finishes it.
fn refused_by_the_lease(broker: &Broker, group: &str, holder: &str) {
    let out = bounded(&mut move_to_six(broker, group, &[]), LIMIT, "repartition");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("`{holder}`"))
            && err.contains("holds this deployment's lease")
            && err.contains("--take-over-lease")
            && err.lines().count() == 1,
        "{err}"
    );
    let out = broker.run(&["replay", "--apply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--to-partitions 6 --apply"), "{err}");
}

/// A rebuild killed with SIGKILL once the staging copies are complete: `ordo run` refuses the half-moved
/// deployment with exit 2, a rerun finishes the move, and nothing is lost or applied twice.
#[test]
fn repartition_killed_midway_is_refused_by_run_and_finished_by_a_rerun() {
    let (dir, input, broker) = at_four();
    broker.ok(&["produce", "--file", &input.middle]);
    let g = group();
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);

    let mut child = move_to_six(&broker, &g, &["--rebuild"])
        .env("ORDO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The staging copies are recorded complete: kill it as it starts to rebuild.
    kill_on(&mut child, |l| {
        l.contains("repartition phase recorded") && l.contains("Copied")
    });
    refused_while_under_way(&broker, &g, "Copied");
    // The killed run still holds the deployment's lease: another target, and a rerun, are
    // refused until an operator takes the lease over.
    let out = broker.run(&["repartition", "--to-partitions", "8", "--apply"]);
    assert_eq!(out.status.code(), Some(2));
    refused_by_the_lease(&broker, &g, "ordo repartition --to-partitions 6 --apply");

    let out = ok_output(move_to_six(&broker, &g, &["--take-over-lease"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("resumed") && text.contains("check OK"),
        "{text}"
    );
    finish_at_six(&broker, dir.path(), &input, &g, true);
}

/// A rebuild to 6 that stalls for `secs` once its staging copy is made (nothing deleted yet):
/// started, and returned once it says it stalls there, with the rest of its stderr.
fn stalled_at_copied(
    broker: &Broker,
    group: &str,
    secs: u32,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = move_to_six(broker, group, &["--rebuild"])
        .env("ORDO_FAIL_POINT", format!("stall@copied:{secs}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stderr.take().unwrap());
    let stalled = loop {
        match lines.recv_timeout(LIMIT) {
            Ok(line) if line.contains("stalling at copied") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    if !stalled {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the move did not reach its copy in time");
    }
    (child, lines)
}

/// Waits for `child` to end, which must be with exit 2; its last stderr line.
fn refused_end(
    child: &mut std::process::Child,
    lines: &std::sync::mpsc::Receiver<String>,
) -> String {
    let status = wait_for("the move to end", LIMIT, || child.try_wait().unwrap());
    let err: Vec<String> = lines.try_iter().collect();
    assert_eq!(status.code(), Some(2), "{err:#?}");
    err.last().cloned().unwrap_or_default()
}

/// After a move that stopped with nothing deleted: the topics still have 4 partitions, and a
/// rerun resumes the move and finishes it (see [`finish_at_six`]).
fn rerun_finishes(broker: &Broker, dir: &Path, input: &Input, group: &str, all_processed: bool) {
    broker.ok(&["topics", "check", "--partitions", "4"]);
    let out = ok_output(move_to_six(broker, group, &[]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("resumed") && text.contains("check OK"),
        "{text}"
    );
    finish_at_six(broker, dir, input, group, all_processed);
}

/// Two changes of N at once: the second (and a third, to another N) is refused while the
/// first holds the deployment's lease, naming it. A member that holds a partition by the time
/// the first is about to delete the originals (one that started racing the move's first look,
/// forged here) stops the move, with nothing deleted; once it lets go, a rerun finishes, and
/// nothing is lost or doubled.
#[test]
fn a_second_change_of_n_is_refused_and_a_member_seen_before_deleting_stops_the_move() {
    let (dir, input, broker) = at_four();
    broker.ok(&["produce", "--file", &input.middle]);
    let g = group();
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    let (mut first, lines) = stalled_at_copied(&broker, &g, 10);
    refused_by_the_lease(&broker, &g, "ordo repartition --to-partitions 6 --apply");
    let out = broker.run(&["repartition", "--to-partitions", "8", "--apply"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("holds this deployment's lease"), "{err}");
    let mut racer = ordo::core::ownership::OwnershipRecord {
        partition: Partition(1),
        epoch: ordo::core::Epoch(99),
        owner: "racer/1".into(),
        url: Some("http://127.0.0.1:9".into()),
        ts: 1,
        held: Some(true),
        marker: None,
        sig: None,
    };
    broker.send_owner(&racer);
    let err = refused_end(&mut first, &lines);
    assert!(
        err.contains("held by running members: racer/1")
            && err.contains("nothing was deleted")
            && err.contains("--to-partitions 6 --apply"),
        "{err}"
    );
    racer.held = Some(false);
    racer.url = None;
    broker.send_owner(&racer);
    rerun_finishes(&broker, dir.path(), &input, &g, true);
}

/// A change of N under way refuses `ordo produce`, naming the command that finishes it; a
/// producer that does not ask (any Kafka client) and writes to the old input after the copy
/// stops the move before anything is deleted, and the rerun copies anew, its records
/// included: they are processed after the move, each key in order.
#[test]
fn a_producer_writing_mid_move_stops_it_before_anything_is_deleted() {
    let (dir, input, broker) = at_four();
    let g = group();
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    let (mut mover, lines) = stalled_at_copied(&broker, &g, 10);
    let out = broker.run(&["produce", "--file", &input.middle]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ordo repartition --brokers ... --to-partitions 6 --apply"),
        "{err}"
    );
    let n = ordo::core::PartitionCount::new(4).unwrap();
    let records: Vec<(Partition, NewRecord)> = std::fs::read_to_string(&input.middle)
        .unwrap()
        .lines()
        .map(|l| ordo::tools::produce::route_raw(l.as_bytes(), n, Partitioner::AbsHashModN))
        .collect();
    let topic = broker.topic(Role::Events);
    let outgoing: Vec<Outgoing<'_>> = records
        .into_iter()
        .map(|(partition, record)| Outgoing {
            topic: &topic,
            partition,
            record,
        })
        .collect();
    KafkaProducer::new(&broker.options())
        .unwrap()
        .send_all(&outgoing)
        .unwrap();
    let err = refused_end(&mut mover, &lines);
    assert!(
        err.contains("was written to after it was copied")
            && err.contains("nothing was deleted")
            && err.contains("--to-partitions 6 --apply"),
        "{err}"
    );
    rerun_finishes(&broker, dir.path(), &input, &g, false);
}

/// Records written to a partition that does not own their key (a producer routing with another
/// partitioner) are dead-lettered `misrouted` and never applied. A rebuild routes them to their
/// key's partition marked as such, so they stay misrouted: `replay --diff` right after the move
/// finds no difference (it found one per such reservation), and a run at the new N applies
/// none of them.
#[test]
fn misrouted_records_stay_misrouted_through_a_rebuild() {
    let (_dir, _input, broker) = at_four();
    let n4 = ordo::core::PartitionCount::new(4).unwrap();
    let keys: Vec<String> = (0..5).map(|i| format!("M-{i}")).collect();
    for key in &keys {
        let home = Partitioner::AbsHashModN.partition(key, n4);
        let event = format!(
            r#"{{"type":"reservation","event_id":"e-{key}","reservation_no":"{key}","user_id":"u"}}"#
        );
        KafkaProducer::new(&broker.options())
            .unwrap()
            .send_all(&[Outgoing {
                topic: &broker.topic(Role::Events),
                partition: Partition((home.0 + 1) % 4),
                record: NewRecord {
                    key: key.as_bytes().to_vec(),
                    value: event.into_bytes(),
                    timestamp: 0,
                    headers: vec![],
                },
            }])
            .unwrap();
    }
    let g = group();
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    let misrouted = |broker: &Broker| {
        let out = broker.ok(&["export", "--topic", "reservation-events.dlq"]);
        dead_letters(&out.stdout)
            .into_iter()
            .filter(|(reason, _)| reason == "misrouted")
            .count()
    };
    assert_eq!(misrouted(&broker), keys.len());
    ok_output(move_to_six(&broker, &g, &["--rebuild"]));
    let out = broker.run(&["replay", "--diff"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    let state = broker.state();
    assert!(keys.iter().all(|k| !state.contains_key(k)), "{state:?}");
    assert_eq!(misrouted(&broker), keys.len(), "each dead-lettered once");
}

/// The input topic as exported: one line per record, with its partition and offset.
fn input_lines(broker: &Broker) -> Vec<serde_json::Value> {
    let out = broker.ok(&["export", "--topic", "reservation-events"]);
    let mut lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines.sort_by_key(|v| (v["partition"].as_u64(), v["offset"].as_u64()));
    lines
}

/// Growing 4 → 6 in place (Apache Kafka: CreatePartitions). Refused by name while a member
/// holds a partition and while input is unprocessed; then partitions are added and only the
/// state of the keys that change partition moves: the input keeps every record at its offset,
/// a replay (layer by layer) equals the changelog, and after more input at N = 6 the state and
/// dead letters equal a from-scratch run at N = 6.
#[test]
fn growing_in_place_moves_only_state_and_equals_a_from_scratch_run_at_6() {
    requires_apache_kafka("CreatePartitions");
    let (dir, input, broker) = at_four();
    let g = group();
    let member = broker.member(&g, &[]);
    wait_for(
        "the member to own all 4 partitions",
        Duration::from_secs(60),
        || (member.metric_sum("ordo_partitions_owned", "") >= 4.0).then_some(()),
    );
    let out = bounded(&mut move_to_six(&broker, &g, &[]), LIMIT, "repartition");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("held by running members"), "{err}");
    wait_for("the member to catch up", Duration::from_secs(60), || {
        (member.metric_sum("ordo_events_total", "") >= 2000.0).then_some(())
    });
    member.terminate();
    let mut member = member;
    let status = wait_for("the member to exit", LIMIT, || {
        member.child.try_wait().unwrap()
    });
    assert!(status.success());
    broker.ok(&["produce", "--file", &input.middle]);
    // Unprocessed input: the dry run says so, and the change is refused naming the count.
    let dry = broker.ok(&["repartition", "--to-partitions", "6"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains("in place") && text.contains("500 records not yet processed (refused"),
        "{text}"
    );
    let out = bounded(&mut move_to_six(&broker, &g, &[]), LIMIT, "repartition");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("500 input records are not processed yet (partition ")
            && err.contains("ordo run --until-idle"),
        "{err}"
    );
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    let before = input_lines(&broker);
    let reservations = broker.state().len();

    let dry = broker.ok(&["repartition", "--to-partitions", "6"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains("in place")
            && text.contains("0 records not yet processed")
            && text.contains(&format!("{reservations} reservations")),
        "{text}"
    );
    let out = ok_output(move_to_six(&broker, &g, &[]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("in place") && text.contains("check OK"),
        "{text}"
    );
    // Nothing of the input was rewritten: every record where and as it was.
    assert_eq!(input_lines(&broker), before);
    assert_eq!(before.len(), 2500);
    let again = ok_output(move_to_six(&broker, &g, &[]));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
    finish_at_six(&broker, dir.path(), &input, &g, true);
    // The records written under N = 4 are still there, at their offsets.
    let after = input_lines(&broker);
    assert!(before.iter().all(|r| after.contains(r)));
}

/// Growing in place, killed with SIGKILL with every moved state written in its new partition
/// and none tombstoned in its old one: `ordo run` refuses the half-done change naming the
/// command that finishes it, and a rerun finishes it with nothing lost or applied twice.
#[test]
fn growing_in_place_killed_while_moving_state_is_finished_by_a_rerun() {
    requires_apache_kafka("CreatePartitions");
    let (dir, input, broker) = at_four();
    broker.ok(&["produce", "--file", &input.middle]);
    let g = group();
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);

    let mut child = move_to_six(&broker, &g, &[])
        .env("ORDO_LOG", "info")
        .env("ORDO_FAIL_POINT", "stall@tombstones")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    kill_on(&mut child, |l| l.contains("stalling at tombstones"));
    refused_while_under_way(&broker, &g, "Moving");
    refused_by_the_lease(&broker, &g, "ordo repartition --to-partitions 6 --apply");

    let out = ok_output(move_to_six(&broker, &g, &["--take-over-lease"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("resumed") && text.contains("check OK"),
        "{text}"
    );
    finish_at_six(&broker, dir.path(), &input, &g, true);
}

/// Grown 4 → 6 in place, more input processed at 6, then shrunk to 3 (a rebuild, as Kafka
/// cannot remove partitions): the rebuild routes the input layer by layer, so each key's
/// records under N = 4 still come before those under N = 6, and the result equals a
/// from-scratch run at N = 3.
#[test]
fn growing_in_place_then_shrinking_by_a_rebuild_keeps_each_keys_order() {
    requires_apache_kafka("CreatePartitions");
    let (dir, input, broker) = at_four();
    let g = group();
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    ok_output(move_to_six(&broker, &g, &[]));
    broker.ok(&["produce", "--file", &input.middle]);
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    let dry = broker.ok(&["repartition", "--to-partitions", "3"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains("N 6 → 3") && text.contains("rebuild (Kafka cannot remove partitions)"),
        "{text}"
    );
    let mut shrink = broker.ordo(&[
        "repartition",
        "--to-partitions",
        "3",
        "--apply",
        "--group",
        &g,
    ]);
    let out = bounded(&mut shrink, LIMIT, "repartition");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    broker.ok(&["topics", "check", "--partitions", "3"]);
    broker.ok(&["produce", "--file", &input.after]);
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &g]);
    let (state, dead) =
        from_scratch_at(dir.path(), &[&input.before, &input.middle, &input.after], 3);
    assert_eq!(essence(&broker.state()), state);
    let exported = broker.ok(&["export", "--topic", "reservation-events.dlq"]);
    assert_eq!(dead_letters(&exported.stdout), dead);
    let out = broker.ok(&["replay", "--diff"]);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Forged fencing records on Kafka. A marker of epoch `u64::MAX` is refused as unreadable: it
/// fences nothing and the next owner's epoch does not wrap, so nothing is lost across restarts.
/// A position mark far past the input's end makes the member refuse the partition by name
/// (resuming there would skip every event appended up to it), and `replay --apply` repairs it:
/// afterwards new events are applied again.
#[test]
fn forged_markers_and_positions_lose_nothing_and_are_repaired() {
    requires_apache_kafka("a fetch past a partition's end answered with OffsetOutOfRange");
    let broker = Broker::start();
    broker.ok(&["topics", "apply", "--partitions", "1"]);
    broker.ok(&["produce", "--generate", "200", "--seed", "5"]);
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    let reserve = |id: &str| {
        let extra = tempfile::NamedTempFile::new().unwrap();
        let line = format!(
            r#"{{"type":"reservation","event_id":"{id}","reservation_no":"R-{id}","user_id":"u"}}"#
        );
        std::fs::write(extra.path(), line + "\n").unwrap();
        broker.ok(&["produce", "--file", extra.path().to_str().unwrap()]);
    };
    let p = Partition(0);
    let marker = |epoch: u64, resume: u64| ordo::core::changelog::EpochMarker {
        epoch: ordo::core::Epoch(epoch),
        partition: Partition(0),
        resume_offset: ordo::core::Offset(resume),
        owner: "forged".into(),
        carried: false,
        replayed: false,
    };
    // The largest epoch: ignored, so the next owners keep their epochs and their writes.
    let forged = marker(u64::MAX, 0);
    broker.send_state(p, &forged.key(), &forged.to_json());
    for id in ["after-max-1", "after-max-2"] {
        reserve(id);
        broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    }
    let state = broker.state();
    for id in ["after-max-1", "after-max-2"] {
        assert_eq!(state[&format!("R-{id}")]["version"], 1, "R-{id} lost");
        let epoch = state[&format!("R-{id}")]["epoch"].as_u64().unwrap();
        assert!(epoch < 100, "epoch {epoch}");
    }
    // A position mark far ahead: the member refuses, naming the repair.
    let mark = ordo::core::changelog::PositionMark {
        epoch: ordo::core::Epoch(state["R-after-max-2"]["epoch"].as_u64().unwrap()),
        partition: Partition(0),
        resume_offset: ordo::core::Offset(1 << 40),
    };
    broker.send_state(p, &mark.key(), &mark.to_json());
    reserve("after-mark");
    let out = broker.run(&["run", "--until-idle", "--no-http", "--group", &group()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("past the input's end") && err.contains("ordo replay --brokers ... --apply"),
        "{err}"
    );
    assert!(!broker.state().contains_key("R-after-mark"));
    // Repaired by replay --apply: the event is applied, and the next ones after it.
    broker.ok(&["replay", "--apply", "--assume-stopped"]);
    assert_eq!(broker.state()["R-after-mark"]["version"], 1);
    reserve("after-repair");
    broker.ok(&["run", "--until-idle", "--no-http", "--group", &group()]);
    assert_eq!(broker.state()["R-after-repair"]["version"], 1);
    assert!(broker.ok(&["replay", "--diff"]).stdout.is_empty());
}
