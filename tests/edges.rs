//! The embedded log at its edges, through the CLI: a data dir in use or with a zero-byte store,
//! the partitioner a data dir remembers, a record key that is not its reservation, input from
//! stdin and input that is not UTF-8, SIGINT, and what `/metrics` says about HTTP.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use ordo::core::partitioner::Partitioner;
use ordo::core::record::{NewRecord, headers};
use ordo::core::{Partition, PartitionCount};
use ordo::log::embedded::{EmbeddedLog, OpenOptions};
use ordo::log::topics::Role;

fn fixture(case: &str, file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
        .join(file)
}

/// The one error line of a failed command, asserted to be one line and no panic.
fn one_error_line(out: &std::process::Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{what}: {err}");
    assert!(err.starts_with("ordo: error:"), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    err
}

/// While `ordo run` serves a data dir, `run`, `produce` and `state` on it fail at once with
/// exit 1 and a line naming the data dir as in use; the serving process is untouched.
#[test]
fn a_data_dir_in_use_is_refused_by_every_other_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    processed(&d, "4", "2000");
    let before = state(&d);
    let run = Running::start(&["--data-dir", s(&d)]);
    run.wait_ready();
    let input = fixture("spec", "input.ndjson");
    for args in [
        vec!["run", "--until-idle", "--no-http"],
        vec!["produce", "--file", s(&input)],
        vec!["state"],
    ] {
        let out = ordo().args(&args).args(["--data-dir", s(&d)]).run_bounded();
        let err = one_error_line(&out, &format!("{args:?}"));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&d.display().to_string()) && err.contains("in use by another ordo"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(run.get("/healthz").0, 200);
    let mut run = run;
    terminate(&mut run);
    assert_eq!(state(&d), before, "the refused commands changed nothing");
}

/// A zero-byte `ordo.redb` is refused by every command, naming the file and the way back; it is
/// never taken for a new, empty data dir (which would start from nothing and overwrite it).
#[test]
fn a_zero_byte_store_is_refused_never_taken_for_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    processed(&d, "4", "2000");
    let file = d.join("ordo.redb");
    std::fs::write(&file, b"").unwrap();
    let input = fixture("spec", "input.ndjson");
    for args in [
        vec!["state"],
        vec!["export"],
        vec!["produce", "--file", s(&input)],
        vec!["run", "--until-idle", "--no-http"],
    ] {
        let out = ordo().args(&args).args(["--data-dir", s(&d)]).run_bounded();
        let err = one_error_line(&out, &format!("{args:?}"));
        // A damaged data dir is a runtime failure (1), and its input went with the file: the
        // way back is a backup, never a replay.
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&file.display().to_string())
                && err.contains("is empty (0 bytes)")
                && err.contains(".bak")
                && !err.contains("replay"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "{args:?} wrote");
    }
}

/// `--partitioner murmur2` routes every record by murmur2, the state is the same as with the
/// default partitioner, and the data dir remembers it: a later command that asks for the other
/// partitioner exits 2 naming the one to pass, and one that names none uses murmur2.
#[test]
fn murmur2_routes_by_murmur2_and_the_data_dir_remembers_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let input = fixture("spec", "input.ndjson");
    ok(&[
        "produce",
        "--partitions",
        "4",
        "--partitioner",
        "murmur2",
        "--data-dir",
        s(&d),
        "--file",
        s(&input),
    ]);
    let out = ordo()
        .args([
            "run",
            "--until-idle",
            "--no-http",
            "--partitioner",
            "abs-hash-mod-n",
        ])
        .args(["--data-dir", s(&d)])
        .run_bounded();
    let err = one_error_line(&out, "run with the other partitioner");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--partitioner murmur2"), "{err}");

    ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&d)]);
    let got: Vec<_> = state(&d).values().map(project).collect();
    let want: Vec<serde_json::Value> = std::fs::read_to_string(fixture("spec", "expected.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, want);

    let n = PartitionCount::new(4).unwrap();
    let out = ok(&["export", "--data-dir", s(&d)]);
    let mut routed = 0;
    let mut differs = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(key) = v["key"].as_str() else {
            continue;
        };
        let p = Partition(v["partition"].as_u64().unwrap() as u32);
        assert_eq!(Partitioner::Murmur2.partition(key, n), p, "{line}");
        differs += usize::from(Partitioner::AbsHashModN.partition(key, n) != p);
        routed += 1;
    }
    assert!(routed > 10, "export listed {routed} keyed records");
    assert!(
        differs > 0,
        "murmur2 and abs-hash-mod-n agree on every key: nothing was shown"
    );
}

/// A record whose key is not its `reservation_no` is dead-lettered as malformed, naming both,
/// and applies nothing; the partition goes on with the next record.
#[test]
fn a_record_keyed_by_another_reservation_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let n = PartitionCount::new(4).unwrap();
    {
        let log = EmbeddedLog::open(
            &d,
            OpenOptions {
                partitions: Some(n),
                create: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        let record = |key: &str, no: &str, id: &str| {
            NewRecord {
            key: key.as_bytes().to_vec(),
            value: format!(
                r#"{{"type":"reservation","event_id":"{id}","reservation_no":"{no}","user_id":"u"}}"#
            )
            .into_bytes(),
            timestamp: 0,
            headers: vec![],
        }
        };
        // Written to the key's own partition, so only the key/value disagreement is wrong.
        let p = Partitioner::AbsHashModN.partition("R-key", n);
        log.append(
            Role::Events,
            vec![
                (p, record("R-key", "R-value", "e1")),
                (p, record("R-key", "R-key", "e2")),
            ],
        )
        .unwrap();
    }
    ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&d)]);
    let dead = dead_letters(&d);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(header(&dead[0], headers::REASON), "malformed");
    let error = header(&dead[0], headers::ERROR);
    assert!(
        error.contains("R-key") && error.contains("R-value") && error.contains("differs"),
        "{error}"
    );
    let states = state(&d);
    assert_eq!(states.keys().collect::<Vec<_>>(), ["R-key"]);
    assert_eq!(
        states["R-key"]["applied_event_ids"],
        serde_json::json!(["e2"])
    );
}

/// `produce --file -` reads stdin, with the same validation as a file: the same lines give the
/// same state, and a bad line on stdin is named `<stdin>:LINE`.
#[test]
fn produce_reads_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let input = std::fs::read(fixture("spec", "input.ndjson")).unwrap();
    let from_stdin = |d: &std::path::Path, bytes: &[u8]| {
        let mut child = ordo()
            .args([
                "produce",
                "--partitions",
                "4",
                "--data-dir",
                s(d),
                "--file",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        wait_for("produce --file - to exit", Duration::from_secs(60), || {
            child.try_wait().unwrap()
        });
        child.wait_with_output().unwrap()
    };
    let a = dir.path().join("a");
    let out = from_stdin(&a, &input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&a)]);
    let b = dir.path().join("b");
    ok(&[
        "produce",
        "--partitions",
        "4",
        "--data-dir",
        s(&b),
        "--file",
        s(&fixture("spec", "input.ndjson")),
    ]);
    ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&b)]);
    assert_eq!(state(&a), state(&b));
    assert!(!state(&a).is_empty());

    let c = dir.path().join("c");
    let mut bad = input.clone();
    bad.extend_from_slice(b"{not json\n");
    let lines = bad.iter().filter(|&&b| b == b'\n').count();
    let out = from_stdin(&c, &bad);
    let err = one_error_line(&out, "a bad line on stdin");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("<stdin>:{lines}:")), "{err}");
    assert!(!c.join("ordo.redb").exists() || state(&c).is_empty());
}

/// A line that is not UTF-8 fails a validated file, naming the line, and writes nothing; with
/// `--raw` it is appended and dead-lettered as malformed while the good lines apply.
#[test]
fn input_that_is_not_utf8_is_named_or_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.ndjson");
    let mut bytes =
        br#"{"type":"reservation","event_id":"e1","reservation_no":"R-1","user_id":"u"}"#.to_vec();
    bytes.extend_from_slice(b"\n{\"type\":\"reservation\",\"event_id\":\"e2\",\"reservation_no\":\"R-\xff\xfe\",\"user_id\":\"u\"}\n");
    std::fs::write(&file, &bytes).unwrap();

    let strict = dir.path().join("strict");
    let out = ordo()
        .args([
            "produce",
            "--partitions",
            "2",
            "--data-dir",
            s(&strict),
            "--file",
            s(&file),
        ])
        .run_bounded();
    let err = one_error_line(&out, "a validated file with a non-UTF-8 line");
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{}:2", file.display())), "{err}");
    assert!(!strict.join("ordo.redb").exists() || state(&strict).is_empty());

    let raw = dir.path().join("raw");
    ok(&[
        "produce",
        "--raw",
        "--partitions",
        "2",
        "--data-dir",
        s(&raw),
        "--file",
        s(&file),
    ]);
    ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&raw)]);
    assert_eq!(state(&raw).keys().collect::<Vec<_>>(), ["R-1"]);
    let reasons = dead_letter_reasons(&raw);
    assert_eq!(reasons, [("malformed".to_string(), 1)].into());
}

/// SIGINT mid-stream ends the run with status 0 after making its batch durable: resumed, the
/// data dir ends exactly where a run that was never interrupted ends.
#[test]
fn sigint_mid_stream_exits_0_and_the_resumed_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    generated(&a, "4", "200000");
    let mut run = Running::start(&["--data-dir", s(&a)]);
    wait_for("events to be applied", Duration::from_secs(60), || {
        (run.metric_sum("ordo_events_total", "") > 0.0).then_some(())
    });
    run.signal("INT");
    let status = wait_for("exit after SIGINT", Duration::from_secs(30), || {
        run.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
    let interrupted: usize = state(&a)
        .values()
        .map(|v| v["applied_event_ids"].as_array().unwrap().len())
        .sum();
    assert!(interrupted > 0, "SIGINT came before anything was durable");
    ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&a)]);

    let b = dir.path().join("b");
    processed(&b, "4", "200000");
    let (sa, sb) = (state(&a), state(&b));
    let total: usize = sb
        .values()
        .map(|v| v["applied_event_ids"].as_array().unwrap().len())
        .sum();
    assert!(
        interrupted < total,
        "SIGINT came after the last event: nothing was shown"
    );
    assert_eq!(sa.len(), sb.len());
    for (no, va) in &sa {
        assert_eq!(project(va), project(&sb[no]), "{no}");
        assert_eq!(va["source_offset"], sb[no]["source_offset"], "{no}");
    }
    assert_eq!(dead_letter_keys(&a), dead_letter_keys(&b));
}

/// `ordo_http_request_duration_seconds` counts each request under its route template and
/// status, and no sample of `/metrics` carries a reservation number or a user id as a label.
#[test]
fn http_durations_by_route_template_and_no_per_key_label() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    ok(&[
        "produce",
        "--partitions",
        "4",
        "--data-dir",
        s(&d),
        "--file",
        s(&fixture("spec", "input.ndjson")),
    ]);
    let mut run = Running::start(&["--data-dir", s(&d)]);
    run.wait_ready();
    barrier(&run, 4);
    let counts = |metrics: &str| {
        let count =
            |filter: &str| metric_sum(metrics, "ordo_http_request_duration_seconds_count", filter);
        [
            count("route=\"/v1/reservations/{no}\",status=\"200\""),
            count("route=\"/v1/reservations/{no}\",status=\"404\""),
            count("route=\"/v1/users/{id}\",status=\"200\""),
        ]
    };
    let before = counts(&run.get("/metrics").1);
    for _ in 0..3 {
        assert_eq!(run.get("/v1/reservations/R-0001").0, 200);
    }
    assert_eq!(run.get("/v1/reservations/R-none").0, 404);
    assert_eq!(run.get("/v1/users/u1").0, 200);
    let (_, metrics) = run.get("/metrics");
    let after = counts(&metrics);
    let added: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(added, [3.0, 1.0, 1.0]);
    assert!(
        metric_sum(
            &metrics,
            "ordo_http_request_duration_seconds_bucket",
            "route=\"/v1/reservations/{no}\""
        ) >= 4.0
    );
    terminate(&mut run);
    let keys: Vec<String> = state(&d).keys().cloned().collect();
    assert!(keys.len() > 4);
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        for key in keys.iter().map(String::as_str).chain(["R-none", "u1"]) {
            let value = format!("\"{key}\"");
            assert!(
                !line.contains(&value),
                "a per-key label in /metrics: {line}"
            );
        }
    }
}

/// A position mark in the changelog far past the input's end (not written by ordo) makes the
/// partition refuse to start, naming the repair, rather than skip every event up to it;
/// `replay --apply` repairs it and the events are applied.
#[test]
fn a_forged_position_past_the_end_is_refused_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    processed(&d, "1", "100");
    {
        let log = EmbeddedLog::open(&d, OpenOptions::default()).unwrap();
        let mark = ordo::core::changelog::PositionMark {
            epoch: ordo::core::Epoch(1),
            partition: ordo::core::Partition(0),
            resume_offset: ordo::core::Offset(1 << 40),
        };
        let record = NewRecord {
            key: mark.key().into_bytes(),
            value: mark.to_json(),
            timestamp: 0,
            headers: vec![],
        };
        log.append(Role::State, vec![(Partition(0), record)])
            .unwrap();
    }
    let line =
        r#"{"type":"reservation","event_id":"late","reservation_no":"R-late","user_id":"u"}"#;
    let file = dir.path().join("late.ndjson");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    ok(&["produce", "--data-dir", s(&d), "--file", s(&file)]);
    let out = ordo()
        .args(["run", "--until-idle", "--no-http", "--data-dir", s(&d)])
        .run_bounded();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("past the input's end") && err.contains("ordo replay --apply"),
        "{err}"
    );
    assert!(!state(&d).contains_key("R-late"));
    ok(&["replay", "--apply", "--data-dir", s(&d)]);
    ok(&["run", "--until-idle", "--no-http", "--data-dir", s(&d)]);
    assert_eq!(state(&d)["R-late"]["version"], 1);
}

/// A bad flag is one error line like every other, naming the command's help, with exit 2.
#[test]
fn a_bad_flag_is_one_line_naming_the_help_and_exit_2() {
    for (args, says, help) in [
        (
            vec!["run", "--bogus"],
            "unexpected argument '--bogus' found",
            "ordo run --help",
        ),
        (
            vec!["repartition", "--to-partitions", "0"],
            "invalid value '0' for '--to-partitions <TO_PARTITIONS>'",
            "ordo repartition --help",
        ),
        (
            vec!["nonsense"],
            "unrecognized subcommand 'nonsense'",
            "ordo --help",
        ),
        // `--group` is offered only where a group matters (`run`, `repartition`).
        (
            vec!["state", "--group", "g"],
            "unexpected argument '--group' found",
            "ordo state --help",
        ),
    ] {
        let out = ordo().args(&args).run_bounded();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = one_error_line(&out, &format!("{args:?}"));
        assert!(
            err.starts_with("ordo: error: ")
                && err.contains(says)
                && err.trim_end().ends_with(&format!("see `{help}`")),
            "{args:?}: {err}"
        );
    }
    // Help itself is not an error.
    let out = ordo().args(["run", "--help"]).run_bounded();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: ordo run"));
}

/// The run's closing line counts what became of the records: duplicates, rejects, malformed and
/// misrouted records, and dead letters, equal to what the data dir holds afterwards.
#[test]
fn the_run_summary_counts_rejects_duplicates_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    generated(&d, "4", "3000");
    // One malformed line, raw, so it reaches the processor.
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, "{\"type\":\"reservation\"}\n").unwrap();
    ok(&["produce", "--data-dir", s(&d), "--raw", "--file", s(&bad)]);
    let out = ok(&["run", "--data-dir", s(&d), "--until-idle", "--no-http"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap();
    let count = |what: &str| -> u64 {
        let at = line
            .find(&format!(" {what}"))
            .unwrap_or_else(|| panic!("{what}: {line}"));
        line[..at]
            .rsplit([' ', '('])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let reasons = dead_letter_reasons(&d);
    let dead: u64 = reasons.values().sum();
    assert_eq!(count("dead letters"), dead, "{line}");
    assert_eq!(count("malformed"), reasons["malformed"], "{line}");
    assert_eq!(count("malformed"), 1, "{line}");
    let rejected: u64 = reasons
        .iter()
        .filter(|(r, _)| !["malformed", "misrouted"].contains(&r.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(count("rejected"), rejected, "{line}");
    assert!(count("duplicates") > 0, "{line}");
    assert_eq!(
        count("transitions")
            + count("duplicates")
            + count("rejected")
            + count("malformed")
            + count("misrouted"),
        count("records"),
        "{line}"
    );
}

/// `ordo plan --values` is a Helm values file the chart's schema accepts: only top-level keys
/// the schema knows, with the values given.
#[test]
fn plan_values_are_values_the_chart_accepts() {
    let out = ok(&["plan", "--containers", "3", "--servers", "2", "--values"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/ordo/values.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let known = schema["properties"].as_object().unwrap();
    let pairs: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split_once(": ")
                .unwrap_or_else(|| panic!("not key: value: {l}"))
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("servers", "2"),
            ("containers", "3"),
            ("partitioner", "abs-hash-mod-n")
        ]
    );
    for (k, _) in pairs {
        assert!(known.contains_key(k), "{k} is not a chart value");
        assert!(!k.starts_with(' '), "nested: {k}");
    }
}

/// An idle partition costs what its thread holds: `ordo bench idle` at N = 2 and N = 128
/// shows well under 1 MiB per partition more (3.5 MiB while transparent huge pages backed each
/// thread's first allocator pages).
#[test]
fn an_idle_partition_costs_well_under_a_mib() {
    let out = ok(&["bench", "idle", "--partitions", "2,128"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let per: f64 = text
        .lines()
        .find_map(|l| {
            l.split("; ")
                .nth(1)?
                .split(" MiB per partition")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no per-partition figure in {text}"));
    assert!(per < 1.0, "{per} MiB per idle partition:\n{text}");
    assert!(
        text.contains("N =  128") && text.contains("131 threads"),
        "{text}"
    );
}

/// A member restarted over 200 k reservations holds them packed: `ordo bench restore` runs a
/// fresh `ordo run --until-idle` over the changelog it wrote, and that member's peak resident
/// memory stays under 100 MiB (75 MiB when written; the same measurement at 1 M reservations
/// went from 368–372 MiB to 240–242 MiB with the packed layout and the smaller store cache).
#[test]
fn a_restarted_member_holds_its_reservations_packed() {
    let out = ok(&[
        "bench",
        "restore",
        "--entries",
        "200000",
        "--partitions",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let peak: u64 = text
        .lines()
        .find_map(|l| {
            l.split("peak RSS ")
                .nth(1)?
                .split(" MiB")
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no peak figure in {text}"));
    assert!(peak < 100, "{peak} MiB for 200 k reservations:\n{text}");
    assert!(text.contains("200000 entries over 2 partitions"), "{text}");
}
