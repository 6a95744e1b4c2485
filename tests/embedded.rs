//! End-to-end tests of the embedded backend through the real binary.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use ordo::core::partitioner::{Partition, PartitionCount, Partitioner};
use ordo::core::record::NewRecord;
use ordo::core::record::headers;
use ordo::log::embedded::{EmbeddedLog, OpenOptions};
use ordo::log::topics::Role;

fn fixture(case: &str, file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
        .join(file)
}

#[test]
fn spec_fixture_through_produce_run_state_with_n_6() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let input = fixture("spec", "input.ndjson");
    ok(&[
        "produce",
        "--data-dir",
        s(&d),
        "--containers",
        "3",
        "--servers",
        "2",
        "--file",
        s(&input),
    ]);
    ok(&[
        "run",
        "--data-dir",
        s(&d),
        "--containers",
        "3",
        "--servers",
        "2",
        "--until-idle",
        "--no-http",
    ]);
    let got = state(&d);
    let want: Vec<serde_json::Value> = std::fs::read_to_string(fixture("spec", "expected.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.values().map(project).collect::<Vec<_>>(), want);
    let n = PartitionCount::new(6).unwrap();
    for (no, v) in &got {
        let p = Partitioner::AbsHashModN.partition(no, n);
        assert_eq!(
            v["source_partition"], p.0,
            "{no} is in the changelog of its own partition"
        );
        assert_eq!(v["epoch"], 1);
    }
    let want_dead: BTreeMap<String, u64> = serde_json::from_str(
        &std::fs::read_to_string(fixture("spec", "dead_letters.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dead_letter_reasons(&d), want_dead);
    for r in dead_letters(&d) {
        assert_eq!(
            header(&r, headers::SOURCE_PARTITION),
            r.partition.to_string()
        );
        assert!(header(&r, headers::SOURCE_OFFSET).parse::<u64>().is_ok());
        assert!(!header(&r, headers::ERROR).is_empty());
    }

    // Running again over the same log applies nothing twice.
    ok(&["run", "--data-dir", s(&d), "--until-idle", "--no-http"]);
    let again = state(&d);
    assert_eq!(again.values().map(project).collect::<Vec<_>>(), want);
    assert_eq!(dead_letter_reasons(&d), want_dead);
}

#[test]
fn a_bad_line_fails_the_file_with_its_number_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let file = dir.path().join("in.ndjson");
    std::fs::write(
        &file,
        concat!(
            r#"{"type":"reservation","event_id":"a","reservation_no":"R1","user_id":"u"}"#,
            "\n",
            "\n",
            r#"{"type":"reservation","event_id":"b","reservation_no":"R2"}"#,
            "\n",
            r#"{"type":"reservation","event_id":"c","reservation_no":"R3","user_id":"u"}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = ordo()
        .args(["produce", "--data-dir", s(&d), "--file", s(&file)])
        .run_bounded();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":3: missing required field `user_id`"),
        "{err}"
    );
    assert!(err.contains("--skip-invalid"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!d.exists(), "nothing written");

    let out = ok(&[
        "produce",
        "--data-dir",
        s(&d),
        "--file",
        s(&file),
        "--skip-invalid",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped line 3"), "{err}");
    ok(&["run", "--data-dir", s(&d), "--until-idle", "--no-http"]);
    assert_eq!(
        state(&d).keys().cloned().collect::<Vec<_>>(),
        vec!["R1", "R3"]
    );
}

/// A record over `--max-record-bytes` is refused (or skipped) without holding the line: a file
/// with no newline at all (`/dev/zero`) fails at once instead of growing without bound.
#[test]
fn oversized_records_are_refused_without_buffering_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let out = ordo()
        .args(["produce", "--data-dir", s(&d), "--file", "/dev/zero"])
        .run_bounded();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/zero:1: the record is over 1048576 bytes")
            && err.contains("--max-record-bytes"),
        "{err}"
    );
    assert!(!d.exists(), "nothing written");

    let file = dir.path().join("in.ndjson");
    let event = |id: &str| {
        format!(
            r#"{{"type":"reservation","event_id":"{id}","reservation_no":"R{id}","user_id":"u"}}"#
        )
    };
    let long = format!(
        r#"{{"type":"reservation","event_id":"x","reservation_no":"RX","user_id":"{}"}}"#,
        "u".repeat(2000)
    );
    std::fs::write(&file, format!("{}\n{long}\n{}\n", event("1"), event("2"))).unwrap();
    let out = ordo()
        .args(["produce", "--data-dir", s(&d), "--file", s(&file)])
        .args(["--max-record-bytes", "1000"])
        .run_bounded();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2: the record is over 1000 bytes"));
    let out = ok(&[
        "produce",
        "--data-dir",
        s(&d),
        "--file",
        s(&file),
        "--max-record-bytes",
        "1000",
        "--skip-invalid",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped line 2: the record is over 1000 bytes"),
        "{err}"
    );
    ok(&["run", "--data-dir", s(&d), "--until-idle", "--no-http"]);
    assert_eq!(
        state(&d).keys().cloned().collect::<Vec<_>>(),
        vec!["R1", "R2"]
    );
}

#[test]
fn poison_records_are_dead_lettered_and_the_partition_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let file = dir.path().join("in.ndjson");
    std::fs::write(
        &file,
        concat!(
            r#"{"type":"reservation","event_id":"a","reservation_no":"R1","user_id":"u"}"#,
            "\n",
            "this is not json\n",
            r#"{"type":"reservation","event_id":"b","reservation_no":"R1","user_id":"u""#,
            "\n",
            r#"{"type":"teleport","event_id":"c","reservation_no":"R1","user_id":"u"}"#,
            "\n",
            r#"{"type":"association","event_id":"d","reservation_no":"R1","user_id":7}"#,
            "\n",
            r#"[1,2,3]"#,
            "\n",
            r#"{"type":"association","event_id":"e","reservation_no":"R1","user_id":"u"}"#,
            "\n",
        ),
    )
    .unwrap();
    ok(&[
        "produce",
        "--data-dir",
        s(&d),
        "--partitions",
        "1",
        "--file",
        s(&file),
        "--raw",
    ]);
    ok(&["run", "--data-dir", s(&d), "--until-idle", "--no-http"]);
    let st = state(&d);
    assert_eq!(
        st["R1"]["state"], "associated",
        "processing went on past the poison"
    );
    let dead = dead_letters(&d);
    assert_eq!(dead.len(), 5);
    assert!(
        dead.iter()
            .all(|r| header(r, headers::REASON) == "malformed")
    );
    assert_eq!(dead[0].value, b"this is not json");
    let offsets: Vec<&str> = dead
        .iter()
        .map(|r| header(r, headers::SOURCE_OFFSET))
        .collect();
    assert_eq!(offsets, ["1", "2", "3", "4", "5"]);
    assert!(header(&dead[2], headers::ERROR).contains("unknown event type `teleport`"));
    assert!(header(&dead[3], headers::ERROR).contains("`user_id` must be a string"));
}

#[test]
fn misrouted_records_are_counted_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    {
        let log = EmbeddedLog::open(
            &d,
            OpenOptions {
                partitions: PartitionCount::new(4),
                create: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        // "reservation-42" belongs to partition 3 of 4: write it to 1, as a foreign producer might.
        let value = br#"{"type":"reservation","event_id":"x","reservation_no":"reservation-42","user_id":"u"}"#;
        let rec = NewRecord {
            key: b"reservation-42".to_vec(),
            value: value.to_vec(),
            timestamp: 0,
            headers: vec![],
        };
        log.append(Role::Events, vec![(Partition(1), rec)]).unwrap();
    }
    let run = Running::start(&["--data-dir", s(&d)]);
    wait_for("the misrouted record", Duration::from_secs(30), || {
        (run.metric_sum("ordo_events_total", "outcome=\"misrouted\"") == 1.0).then_some(())
    });
    assert_eq!(
        run.metric_sum("ordo_dead_letters_total", "reason=\"misrouted\""),
        1.0
    );
    drop(run);
    let dead = dead_letters(&d);
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], headers::REASON), "misrouted");
    assert!(header(&dead[0], headers::ERROR).contains("belongs to partition 3"));
    assert!(state(&d).is_empty());
}

/// Kill -9 at a random moment of a 200 k-event run, resume, and compare with an uninterrupted
/// run of the same input: every state, version and applied id equal, nothing dead-lettered twice.
#[test]
fn kill_9_at_a_random_moment_loses_nothing_and_applies_nothing_twice() {
    const EVENTS: &str = "200000";
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        ok(&[
            "produce",
            "--data-dir",
            s(d),
            "--containers",
            "3",
            "--servers",
            "2",
            "--generate",
            EVENTS,
            "--seed",
            "9",
        ]);
    }
    ok(&["run", "--data-dir", s(&a), "--until-idle", "--no-http"]);

    // A random point in the run, from the clock: different on every test run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let threshold = 5_000.0 + f64::from(nanos % 180_000);
    let run = Running::start(&["--data-dir", s(&b), "--batch-size", "512"]);
    wait_for(
        "progress past the kill point",
        Duration::from_secs(120),
        || (run.metric_sum("ordo_events_total", "") >= threshold).then_some(()),
    );
    drop(run); // SIGKILL
    ok(&["run", "--data-dir", s(&b), "--until-idle", "--no-http"]);

    let (sa, sb) = (state(&a), state(&b));
    assert_eq!(sa.len(), sb.len());
    for (no, va) in &sa {
        let vb = &sb[no];
        assert_eq!(
            project(va),
            project(vb),
            "{no} after kill at ≈{threshold} events"
        );
        assert_eq!(va["source_offset"], vb["source_offset"], "{no}");
    }
    assert_eq!(
        dead_letter_keys(&a),
        dead_letter_keys(&b),
        "no dead letter lost or written twice"
    );
}

#[test]
fn http_endpoints_and_sigterm_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    ok(&[
        "produce",
        "--data-dir",
        s(&d),
        "--partitions",
        "4",
        "--file",
        s(&fixture("spec", "input.ndjson")),
    ]);
    let mut run = Running::start(&["--data-dir", s(&d)]);
    run.wait_ready();
    wait_for("the input to be processed", Duration::from_secs(30), || {
        (run.metric_sum("ordo_events_total", "") == 23.0).then_some(())
    });
    let (code, body) = run.get("/reservations/R-0001");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "associated");
    assert_eq!(v["version"], 2);
    let (code, body) = run.get("/reservations/nope");
    assert_eq!(code, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"],
        "not_found"
    );
    let (code, body) = run.get("/no/such/route");
    assert_eq!(
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].clone()
        ),
        (404, "not_found".into())
    );
    assert_eq!(run.get("/healthz").0, 200);
    let (_, metrics) = run.get("/metrics");
    for name in [
        "ordo_events_total",
        "ordo_rejections_total",
        "ordo_transitions_total",
        "ordo_event_processing_seconds_bucket",
        "ordo_partition_lag_records",
        "ordo_state_entries",
        "ordo_restore_seconds_bucket",
        "ordo_partitions_owned",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(metric_sum(&metrics, "ordo_partitions_owned", ""), 4.0);
    assert_eq!(
        metric_sum(
            &metrics,
            "ordo_rejections_total",
            "reason=\"user_mismatch\""
        ),
        2.0
    );
    assert_eq!(
        metric_sum(&metrics, "ordo_transitions_total", "to=\"cancelled\""),
        2.0
    );
    assert_eq!(
        metric_sum(&metrics, "ordo_events_total", "outcome=\"duplicate\""),
        3.0
    );

    run.terminate();
    let status = wait_for("exit after SIGTERM", Duration::from_secs(30), || {
        run.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_data_dir_refuses_another_n_and_names_repartition() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    ok(&[
        "produce",
        "--data-dir",
        s(&d),
        "--partitions",
        "4",
        "--generate",
        "10",
    ]);
    let out = ordo()
        .args([
            "run",
            "--data-dir",
            s(&d),
            "--containers",
            "3",
            "--servers",
            "2",
            "--until-idle",
            "--no-http",
        ])
        .run_bounded();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds 4 partitions but 6") && err.contains("ordo repartition"),
        "{err}"
    );
}

#[test]
fn flags_read_ordo_env_vars_and_bad_flags_exit_2() {
    let out = ordo()
        .env("ORDO_PARTITIONS", "10")
        .args(["partition", "polygenelubricants"])
        .run_bounded();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8");
    let out = ordo()
        .env("ORDO_CONTAINERS", "2")
        .env("ORDO_SERVERS", "2")
        .env("ORDO_PARTITIONER", "murmur2")
        .args(["partition", "kafka"])
        .run_bounded();
    let want = Partitioner::Murmur2.partition("kafka", PartitionCount::new(4).unwrap());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        want.to_string()
    );
    let out = ordo().args(["run", "--no-such-flag"]).run_bounded();
    assert_eq!(out.status.code(), Some(2));
    let out = ordo()
        .args(["partition", "k", "--containers", "0"])
        .run_bounded();
    assert_eq!(out.status.code(), Some(2));
    // More partition threads than one process runs: refused by name, nothing created.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let out = ordo()
        .args([
            "run",
            "--no-http",
            "--partitions",
            "5000",
            "--data-dir",
            s(&d),
        ])
        .run_bounded();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("5000 partition threads") && err.contains("limit of 1024"),
        "{err}"
    );
    assert!(!d.exists());
}

/// The environment's rules: an empty variable is unset, a boolean variable takes the usual
/// spellings, and an error names the variable the bad value came from, not a flag nobody typed.
#[test]
fn environment_variables_empty_boolean_and_named_in_errors() {
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = ordo();
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(args).run_bounded();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Empty counts as unset: --partitions decides alone.
    let (code, out, err) = run(
        &[("ORDO_CONTAINERS", ""), ("ORDO_SERVERS", "")],
        &["partition", "polygenelubricants", "--partitions", "10"],
    );
    assert_eq!((code, out.as_str()), (Some(0), "8"), "{err}");
    // A bad value from a variable names the variable.
    let (code, _, err) = run(&[("ORDO_CONTAINERS", "x")], &["plan", "--servers", "2"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("'ORDO_CONTAINERS'"), "{err}");
    let (code, _, err) = run(&[], &["plan", "--containers", "x", "--servers", "2"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--containers"), "{err}");
    // A typed form of N wins over the other form from variables (as in every pod) ...
    let (code, out, err) = run(
        &[("ORDO_CONTAINERS", "2"), ("ORDO_SERVERS", "2")],
        &["partition", "polygenelubricants", "--partitions", "10"],
    );
    assert_eq!((code, out.as_str()), (Some(0), "8"), "{err}");
    // ... and ordo's own errors name each setting as it was given.
    let (code, _, err) = run(
        &[
            ("ORDO_CONTAINERS", "2"),
            ("ORDO_SERVERS", "2"),
            ("ORDO_PARTITIONS", "5"),
        ],
        &["partition", "k"],
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("ORDO_PARTITIONS=5 does not equal ORDO_CONTAINERS=2 × ORDO_SERVERS=2 = 4; drop ORDO_PARTITIONS"),
        "{err}"
    );
    // Booleans: 1/yes/true/on are true, 0/no/false/off false; anything else is refused by name.
    let dir = tempfile::tempdir().unwrap();
    for value in ["1", "yes", "true", "on"] {
        let d = dir.path().join(format!("d-{value}"));
        let (code, _, err) = run(
            &[("ORDO_UNTIL_IDLE", value)],
            &["run", "--no-http", "--partitions", "1", "--data-dir", s(&d)],
        );
        assert_eq!(code, Some(0), "ORDO_UNTIL_IDLE={value}: {err}");
    }
    for value in ["0", "no", "false", "off"] {
        // Not until-idle: the process serves until told to stop.
        let d = dir.path().join(format!("d-{value}"));
        let mut ordo = {
            let mut r = Running::start_with(
                &[("ORDO_UNTIL_IDLE", value)],
                &["--partitions", "1", "--data-dir", s(&d)],
            );
            r.wait_ready();
            assert!(
                r.child.try_wait().unwrap().is_none(),
                "ORDO_UNTIL_IDLE={value}"
            );
            r.terminate();
            r
        };
        let status = wait_for("exit after SIGTERM", Duration::from_secs(60), || {
            ordo.child.try_wait().unwrap()
        });
        assert!(status.success());
    }
    let (code, _, err) = run(
        &[("ORDO_UNTIL_IDLE", "bogus")],
        &["run", "--no-http", "--data-dir", s(&dir.path().join("x"))],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("'ORDO_UNTIL_IDLE'"), "{err}");
}

#[test]
fn demo_passes_its_own_check() {
    let out = ok(&["demo", "--events", "20000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("check     OK"), "{text}");
}

/// Output to a reader that went away ends the command quietly with status 0 (as ripgrep does);
/// a full disk is one error line and status 1; never a panic.
#[test]
fn closed_or_full_stdout_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    processed(&d, "2", "20000");
    for args in [
        vec!["state", "--data-dir", s(&d)],
        vec!["plan", "--containers", "2", "--servers", "3"],
    ] {
        let mut child = ordo()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before the first write
        wait_for("the command to end", Duration::from_secs(60), || {
            child.try_wait().unwrap()
        });
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} wrote to stderr: {err}");
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = ordo()
        .args(["partition", "R-1", "--partitions", "3"])
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for("the command to end", Duration::from_secs(60), || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `ordo demo` writes synthetic events, so it refuses a data dir that holds anything.
#[test]
fn demo_refuses_a_data_dir_that_holds_anything() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    generated(&d, "2", "100");
    let before = std::fs::read(d.join("ordo.redb")).unwrap();
    let out = ordo()
        .args(["demo", "--events", "100", "--data-dir", s(&d)])
        .run_bounded();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not empty") && err.contains("--data-dir"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(d.join("ordo.redb")).unwrap(),
        before,
        "nothing written"
    );
    // A new directory is fine.
    ok(&[
        "demo",
        "--events",
        "2000",
        "--data-dir",
        s(&dir.path().join("fresh")),
    ]);
}

/// A value typed on the command line wins over an `ORDO_*` variable for the same setting:
/// `--to-partitions` over the N that `ORDO_CONTAINERS × ORDO_SERVERS` (set in every pod) gives.
#[test]
fn a_typed_target_wins_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    generated(&d, "4", "1000");
    let out = ordo()
        .env("ORDO_CONTAINERS", "2")
        .env("ORDO_SERVERS", "2")
        .args(["repartition", "--data-dir", s(&d), "--to-partitions", "6"])
        .run_bounded();
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert!(stdout.contains("N 4 → 6"), "{stdout}");
    // Typed on both sides, a disagreement is still an error naming the flags.
    let out = ordo()
        .args(["repartition", "--data-dir", s(&d), "--to-partitions", "6"])
        .args(["--containers", "2", "--servers", "2"])
        .run_bounded();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to-partitions 6"));
}

/// A store file damaged on disk never makes a command panic at the user: every command that
/// reads it says so in one line, exits 1, and names the file and the way back; the commands
/// that only read leave the file as it was. (Everything after the file's first 4 KiB is
/// overwritten, so no command can miss the damage.)
#[test]
fn a_damaged_store_is_an_error_line_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    processed(&d, "4", "20000");
    let file = d.join("ordo.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    for (i, b) in bytes[4096..].iter_mut().enumerate() {
        *b = (i * 131 % 251) as u8;
    }
    let damaged = bytes;
    for (args, reads_only) in [
        (vec!["state"], true),
        (vec!["export"], true),
        (vec!["replay"], true),
        (vec!["replay", "--diff"], true),
        (vec!["repartition", "--to-partitions", "6"], true),
        (vec!["run", "--until-idle", "--no-http"], false),
    ] {
        std::fs::write(&file, &damaged).unwrap();
        let out = ordo().args(&args).args(["--data-dir", s(&d)]).run_bounded();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("ordo: error:")
                && err.contains(&file.display().to_string())
                && err.contains("restore it from a .bak"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked at"), "{args:?}: {err}");
        if reads_only {
            assert_eq!(
                std::fs::read(&file).unwrap(),
                damaged,
                "{args:?} wrote to the store"
            );
        }
    }
}

/// `ordo run` says when it creates a data dir, and with which N; a restart says how many
/// reservations it restored (reservations, not changelog records).
#[test]
fn a_new_data_dir_is_announced_and_a_restart_counts_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let out = ok(&[
        "run",
        "--until-idle",
        "--no-http",
        "--partitions",
        "3",
        "--data-dir",
        s(&d),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "created {} with N = 3 (abs-hash-mod-n)",
            d.display()
        )),
        "{err}"
    );
    ok(&["produce", "--generate", "3000", "--data-dir", s(&d)]);
    let out = ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&d)]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("created"));
    let reservations = state(&d).len();
    let out = ok(&[
        "export",
        "--data-dir",
        s(&d),
        "--topic",
        "reservation-state",
    ]);
    let records = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(
        records > reservations,
        "{records} changelog records, {reservations} reservations"
    );
    let out = ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&d)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("restored {reservations} reservations")),
        "{err}"
    );
}

/// A write the store cannot make (a file-size limit here, failing as a full disk does) ends
/// `ordo run` with exit 1 and an ERROR line naming the partition and the cause, instead of a
/// process that looks healthy with a dead partition. The restart (space freed) resumes:
/// nothing lost, nothing applied twice.
#[test]
fn a_failed_store_write_ends_the_process_and_the_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        generated(d, "4", "100000");
    }
    ok(&["run", "--data-dir", s(&a), "--until-idle", "--no-http"]);
    let size = std::fs::metadata(b.join("ordo.redb")).unwrap().len();
    // Room for a few MiB of changelog: the run fails part-way through.
    let limit_kib = size / 1024 + 2048;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kib}; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_ordo"))
        .args(["run", "--data-dir", s(&b), "--until-idle", "--no-http"])
        .env("ORDO_LOG", "info")
        .run_bounded();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Each failed owner says so; the first write to fail names the cause (the others may see
    // the store's "previous I/O error" instead).
    let failed: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("partition owner failed"))
        .collect();
    assert!(
        !failed.is_empty() && failed.iter().all(|l| l.contains("partition=")),
        "{err}"
    );
    assert!(failed.iter().any(|l| l.contains("File too large")), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(last.starts_with("ordo: error: partition "), "{last}");

    ok(&["run", "--data-dir", s(&b), "--until-idle", "--no-http"]);
    let (sa, sb) = (state(&a), state(&b));
    assert_eq!(sa.len(), sb.len());
    for (no, va) in &sa {
        assert_eq!(project(va), project(&sb[no]), "{no}");
    }
    assert_eq!(dead_letter_keys(&a), dead_letter_keys(&b));
}

/// An internal error (a panic) in one partition's owner ends the process with exit 1 and one
/// error line naming the partition, while the other owners finish their batch (they are
/// serving, not running until idle, so only the failure can end them); the restart then loses
/// nothing and applies nothing twice. (`ORDO_FAIL_POINT` injects the panic.)
#[test]
fn a_panic_in_a_partition_owner_ends_the_process_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        generated(d, "4", "20000");
    }
    ok(&["run", "--data-dir", s(&a), "--until-idle", "--no-http"]);
    let out = ordo()
        .env("ORDO_FAIL_POINT", "panic@2:1500")
        .args(["run", "--data-dir", s(&b), "--no-http"])
        .args(["--batch-size", "500"])
        .run_bounded();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.starts_with("ordo: error: partition 2 owner stopped on an internal error")
            && last.contains("fail point"),
        "{last}"
    );
    assert!(!err.contains("panicked at"), "{err}");
    ok(&["run", "--data-dir", s(&b), "--until-idle", "--no-http"]);
    let (sa, sb) = (state(&a), state(&b));
    assert_eq!(sa.len(), sb.len());
    for (no, va) in &sa {
        assert_eq!(project(va), project(&sb[no]), "{no}");
    }
    assert_eq!(dead_letter_keys(&a), dead_letter_keys(&b));
}
