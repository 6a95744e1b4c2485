//! Replay tooling through the real binary: golden fixtures, export, `replay --diff`, and
//! repartition (including one killed midway).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use ordo::core::Epoch;
use ordo::core::changelog::StateRecord;
use ordo::core::event::ReservationNo;
use ordo::core::partitioner::{PartitionCount, Partitioner};
use ordo::core::record::NewRecord;
use ordo::core::state_machine::{Entity, Status};
use ordo::log::embedded::{EmbeddedLog, OpenOptions};
use ordo::log::topics::Role;

fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn golden_fixtures_replay_to_their_expected_state_deterministically() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut cases = 0;
    for case in std::fs::read_dir(&root).unwrap() {
        let case = case.unwrap().path();
        // A golden case is a directory; loose files are other tests' inputs.
        if !case.is_dir() {
            continue;
        }
        let input = case.join("input.ndjson");
        let args = ["replay", "--file", s(&input), "--partitions", "6"];
        let first = ok(&args).stdout;
        assert_eq!(first, ok(&args).stdout, "{case:?}: two replays differ");
        let got: Vec<_> = lines(&first).iter().map(project).collect();
        let want = lines(&std::fs::read(case.join("expected.ndjson")).unwrap());
        assert_eq!(got, want, "{case:?}");

        // A second oracle: the independent reference model over the lines that decode.
        let text = std::fs::read_to_string(&input).unwrap();
        let events: Vec<ordo::core::event::Event> = text
            .lines()
            .filter_map(|l| ordo::core::event::Event::decode(l.as_bytes()).ok())
            .collect();
        let model = ordo::core::reference::Model::run(&events);
        let reference: Vec<serde_json::Value> = model
            .states
            .iter()
            .map(|(no, r)| {
                serde_json::json!({
                    "reservation_no": no, "user_id": r.user, "state": r.state,
                    "target": r.target, "version": r.applied.len(),
                    "applied_event_ids": r.applied,
                })
            })
            .collect();
        assert_eq!(reference, want, "{case:?}: the reference model disagrees");

        // Processed by `ordo run`, the dead letters are the fixture's, and the model's rejects
        // plus the lines that do not decode.
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("d");
        ok(&[
            "produce",
            "--raw",
            "--partitions",
            "6",
            "--data-dir",
            s(&data),
            "--file",
            s(&input),
        ]);
        ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&data)]);
        let dead = dead_letter_reasons(&data);
        let want_dead: std::collections::BTreeMap<String, u64> =
            serde_json::from_str(&std::fs::read_to_string(case.join("dead_letters.json")).unwrap())
                .unwrap();
        assert_eq!(dead, want_dead, "{case:?}: dead letters");
        let mut from_model: std::collections::BTreeMap<String, u64> = model
            .rejects
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
        let malformed = (text.lines().count() - events.len()) as u64;
        if malformed > 0 {
            from_model.insert("malformed".into(), malformed);
        }
        assert_eq!(dead, from_model, "{case:?}: the model's rejects");
        cases += 1;
    }
    assert!(cases >= 2);
}

fn write_events(path: &Path, events: &[ordo::core::event::Event]) {
    let text: String = events.iter().map(|e| e.to_json() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn export_lists_every_input_record_with_partition_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let file = dir.path().join("in.ndjson");
    write_events(&file, &ordo::tools::generate::generate(500, 5));
    ok(&[
        "produce",
        "--data-dir",
        s(&d),
        "--partitions",
        "4",
        "--file",
        s(&file),
    ]);
    let all = lines(
        &ok(&[
            "export",
            "--data-dir",
            s(&d),
            "--topic",
            "reservation-events",
        ])
        .stdout,
    );
    assert_eq!(all.len(), 500);
    let n = PartitionCount::new(4).unwrap();
    let mut next = BTreeMap::new();
    for r in &all {
        let p = r["partition"].as_u64().unwrap();
        let key = r["key"].as_str().unwrap();
        assert_eq!(u64::from(Partitioner::AbsHashModN.partition(key, n).0), p);
        let want = next.entry(p).or_insert(0u64);
        assert_eq!(
            r["offset"].as_u64().unwrap(),
            *want,
            "offsets are contiguous per partition"
        );
        *want += 1;
        let v: serde_json::Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
        assert_eq!(v["reservation_no"], r["key"]);
    }
    let tail = lines(
        &ok(&[
            "export",
            "--data-dir",
            s(&d),
            "-o",
            "-3",
            "--partition",
            "2",
        ])
        .stdout,
    );
    assert_eq!(tail.len(), 3);
    assert_eq!(tail[2]["offset"].as_u64().unwrap() + 1, next[&2]);
    assert_eq!(
        lines(&ok(&["export", "--data-dir", s(&d), "-o", "end"]).stdout).len(),
        0
    );
    assert_eq!(
        lines(&ok(&["export", "--data-dir", s(&d), "--count", "7"]).stdout).len(),
        7
    );
    let out = ordo()
        .args(["export", "--data-dir", s(&d), "-o", "sideways"])
        .run_bounded();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn replay_diff_is_silent_on_an_untouched_log_and_finds_a_planted_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spec/input.ndjson");
    ok(&[
        "produce",
        "--data-dir",
        s(&d),
        "--partitions",
        "4",
        "--file",
        s(&fixture),
    ]);
    ok(&["run", "--data-dir", s(&d), "--until-idle", "--no-http"]);
    let out = ok(&["replay", "--data-dir", s(&d), "--diff"]);
    assert!(out.stdout.is_empty());

    // Tamper: a state record nobody's input produced, written by the current owner epoch.
    plant(
        &d,
        "R-0001",
        Entity::new("u1", Status::Cancelled, None, 2, ["e1", "forged"]),
    );
    let out = ordo()
        .args(["replay", "--data-dir", s(&d), "--diff"])
        .run_bounded();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diffs = lines(&out.stdout);
    assert_eq!(diffs.len(), 1);
    assert_eq!(diffs[0]["reservation_no"], "R-0001");
    assert_eq!(diffs[0]["replayed"]["state"], "associated");
    assert_eq!(diffs[0]["live"]["state"], "cancelled");

    // --apply makes the replay the live state again.
    ok(&["replay", "--data-dir", s(&d), "--apply"]);
    assert!(
        ok(&["replay", "--data-dir", s(&d), "--diff"])
            .stdout
            .is_empty()
    );
    assert_eq!(state(&d)["R-0001"]["state"], "associated");
}

fn states(d: &Path) -> Vec<serde_json::Value> {
    state(d).values().map(project).collect()
}

#[test]
fn repartition_4_to_6_then_more_events_equals_a_run_at_6_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    let events = ordo::tools::generate::generate(30_000, 11);
    let parts: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("part{i}.ndjson")))
        .collect();
    write_events(&parts[0], &events[..15_000]);
    write_events(&parts[1], &events[15_000..22_000]);
    write_events(&parts[2], &events[22_000..]);
    let all = dir.path().join("all.ndjson");
    write_events(&all, &events);

    let (moved, scratch) = (dir.path().join("moved"), dir.path().join("scratch"));
    ok(&[
        "produce",
        "--data-dir",
        s(&moved),
        "--partitions",
        "4",
        "--file",
        s(&parts[0]),
    ]);
    ok(&["run", "--data-dir", s(&moved), "--until-idle", "--no-http"]);
    // Appended but not processed when the repartition happens.
    ok(&["produce", "--data-dir", s(&moved), "--file", s(&parts[1])]);
    let dry = ok(&[
        "repartition",
        "--data-dir",
        s(&moved),
        "--to-partitions",
        "6",
    ]);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run"));
    assert_eq!(
        EmbeddedLog::open(&moved, OpenOptions::default())
            .unwrap()
            .partitions()
            .get(),
        4
    );
    ok(&[
        "repartition",
        "--data-dir",
        s(&moved),
        "--containers",
        "3",
        "--servers",
        "2",
        "--apply",
    ]);
    ok(&["produce", "--data-dir", s(&moved), "--file", s(&parts[2])]);
    ok(&[
        "run",
        "--data-dir",
        s(&moved),
        "--containers",
        "3",
        "--servers",
        "2",
        "--until-idle",
        "--no-http",
    ]);

    ok(&[
        "produce",
        "--data-dir",
        s(&scratch),
        "--partitions",
        "6",
        "--file",
        s(&all),
    ]);
    ok(&[
        "run",
        "--data-dir",
        s(&scratch),
        "--until-idle",
        "--no-http",
    ]);
    assert_eq!(states(&moved), states(&scratch));
    assert_eq!(dead_letter_reasons(&moved), dead_letter_reasons(&scratch));
    assert!(
        ok(&["replay", "--data-dir", s(&moved), "--diff"])
            .stdout
            .is_empty()
    );
}

#[test]
fn repartition_killed_midway_can_be_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    ok(&[
        "produce",
        "--data-dir",
        s(&d),
        "--partitions",
        "4",
        "--generate",
        "200000",
        "--seed",
        "4",
    ]);
    ok(&["run", "--data-dir", s(&d), "--until-idle", "--no-http"]);
    let before = states(&d);

    let mut child = ordo()
        .args([
            "repartition",
            "--data-dir",
            s(&d),
            "--to-partitions",
            "6",
            "--apply",
        ])
        .env("ORDO_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once it has copied the input into the next generation, before the swap.
    let lines = lines_of(child.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the repartition logs its copy phase in time");
        if line.contains("repartition phase: input and dead letters copied") {
            break;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running when killed"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "it was killed: {status}");
    assert!(d.join("ordo.redb.next").exists());
    // Killed before the swap: the data dir is the old generation, whole.
    let n = EmbeddedLog::open(&d, OpenOptions::default())
        .unwrap()
        .partitions()
        .get();
    assert_eq!(n, 4);
    assert_eq!(states(&d), before, "the state is intact after the kill");

    ok(&[
        "repartition",
        "--data-dir",
        s(&d),
        "--to-partitions",
        "6",
        "--apply",
    ]);
    assert_eq!(
        EmbeddedLog::open(&d, OpenOptions::default())
            .unwrap()
            .partitions()
            .get(),
        6
    );
    assert!(!d.join("ordo.redb.next").exists());
    assert_eq!(states(&d), before);
    assert!(
        ok(&["replay", "--data-dir", s(&d), "--diff"])
            .stdout
            .is_empty()
    );
}

/// `replay --diff -o …` compares only the reservations the range replayed: a range holding
/// the second half of the history (reservations of their own) equals the live changelog, and
/// a changed record of one of its keys is still found.
#[test]
fn a_diff_over_a_range_compares_only_the_keys_it_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let mut split = 0;
    for (half, keys) in [("a", 0..5), ("b", 5..10)] {
        let file = dir.path().join(format!("{half}.ndjson"));
        let text: String = keys
            .map(|i| {
                format!(
                    "{{\"type\":\"reservation\",\"event_id\":\"e{i}\",\"reservation_no\":\"R-{i}\",\"user_id\":\"u{i}\"}}\n"
                )
            })
            .collect();
        std::fs::write(&file, text).unwrap();
        split = ordo::log::now_millis() + 1;
        // Records carry the time of their append: the second half starts after `split`.
        wait_for(
            "the clock to pass the split",
            Duration::from_secs(1),
            || (ordo::log::now_millis() > split).then_some(()),
        );
        ok(&[
            "produce",
            "--data-dir",
            s(&d),
            "--partitions",
            "2",
            "--file",
            s(&file),
        ]);
    }
    ok(&["run", "--data-dir", s(&d), "--until-idle", "--no-http"]);
    let range = format!("s@{split}");
    let diff = |args: &[&str]| {
        ordo()
            .args([&["replay", "--data-dir", s(&d), "--diff"][..], args].concat())
            .run_bounded()
    };
    let out = diff(&["-o", &range]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("(5 reservations)"), "{err}");
    // A changed record of a key in the range is found; the whole diff finds it too.
    plant(
        &d,
        "R-7",
        Entity::new("someone-else", Status::Reserved, None, 1, ["e7"]),
    );
    for args in [&["-o", range.as_str()][..], &[][..]] {
        let out = diff(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let diffs = lines(&out.stdout);
        assert_eq!(diffs.len(), 1, "{args:?}: {diffs:?}");
        assert_eq!(diffs[0]["reservation_no"], "R-7");
    }
}

/// Writes a state record for `no` into the data dir's changelog, as the current owner epoch
/// would, though no input produced it.
fn plant(d: &Path, no: &str, entity: Entity) {
    let log = EmbeddedLog::open(d, OpenOptions::default()).unwrap();
    let no = ReservationNo::from(no);
    let p = Partitioner::AbsHashModN.partition(no.as_str(), log.partitions());
    let stored = ordo::core::changelog::Stored {
        entity,
        source_offset: ordo::core::Offset(0),
        epoch: Epoch(1),
    };
    let rec = NewRecord {
        key: no.as_str().as_bytes().to_vec(),
        value: StateRecord::new(no.clone(), p, &stored).to_json(),
        timestamp: 0,
        headers: vec![],
    };
    log.append(Role::State, vec![(p, rec)]).unwrap();
}
