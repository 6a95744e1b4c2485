//! The status page (contract §7) as a user sees it, in headless Chromium (Debian's `chromium`,
//! driven by playwright-core from npm: `tests/browser/status_page.mjs`; `./scripts/test`
//! installs both), against a real `ordo run`; and the Grafana dashboard's queries against the
//! metrics a running member exports.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::browser::browser;
use common::*;

/// Where the screenshot for the README goes.
fn screenshot() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("status-page.png")
}

/// The page loads with no console error and nothing from outside; the table shows N rows, all
/// owned by this member; events posted while partition 0's first batch is held back
/// (`ORDO_FAIL_POINT=stall@0:0`) make its lag rise and then fall to 0 with processed/s above
/// 0; the key lookup finds a reservation whose number holds a `<script>` tag and shows it as
/// text.
#[test]
fn the_status_page_shows_every_partition_its_lag_falling_and_a_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let member = Running::start_with(
        &[("ORDO_FAIL_POINT", "stall@0:0")],
        &["--data-dir", d, "--partitions", "4"],
    );
    member.wait_ready();
    let (_, status) = member.get("/v1/status");
    let owner = json(&status)["member"].as_str().unwrap().to_owned();
    let url = format!("http://{}", member.addr);
    let shot = screenshot();
    let out = browser(&[
        "--url",
        &url,
        "--partitions",
        "4",
        "--owners",
        &owner,
        "--produce",
        "40",
        "--screenshot",
        shot.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shot.exists());
    // The same data as JSON: every posted event processed, the tricky number among the state.
    let (_, status) = member.get("/v1/status");
    let status = json(&status);
    let rows = status["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .all(|r| r["lag_records"] == 0 && r["state"] == "owning")
    );
    let applied: u64 = rows
        .iter()
        .map(|r| r["outcomes"]["applied"].as_u64().unwrap())
        .sum();
    assert_eq!(applied, 40);
    let (code, body) = member.get("/v1/status?scope=nonsense");
    assert_eq!(code, 400, "{body}");
    assert!(
        json(&body)["message"]
            .as_str()
            .unwrap()
            .contains("scope=local")
    );
}

/// A partition whose restore is held part way (`ORDO_FAIL_POINT=stall-restore@0:O`) shows
/// how far it has read its changelog: in its status row, in `/readyz`'s reason and in
/// `ordo_restore_progress_ratio`, all the same fraction, strictly between 0 and 1.
#[test]
fn a_restore_held_part_way_shows_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    processed(dir.path(), "2", "20000");
    let member = Running::start_with(
        &[("ORDO_FAIL_POINT", "stall-restore@0:3000")],
        &["--data-dir", s(dir.path())],
    );
    assert_restore_held(&member);
}

/// Every metric a panel of the chart's Grafana dashboard queries is in `/metrics` of a running
/// member (after a run with a bad record, so the dead-letter series exist).
#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let member = Running::start(&["--data-dir", d, "--partitions", "2"]);
    member.wait_ready();
    let (code, _) = http(
        member.addr,
        "POST",
        "/v1/reservations",
        Some(r#"{"event_id":"e1","reservation_no":"R-1","user_id":"U-1"}"#),
        &[],
    );
    assert_eq!(code, 202);
    // Something for the HTTP histogram and the sampler's gauges.
    wait_for(
        "the sampler's memory gauge",
        Duration::from_secs(30),
        || (member.metric_sum("process_resident_memory_bytes", "") > 0.0).then_some(()),
    );
    let (_, metrics) = member.get("/metrics");
    let exported: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/ordo/dashboards/ordo.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("ordo_") || token.starts_with("process_") {
                    let name = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| token.strip_suffix(s))
                        .unwrap_or(token);
                    queried.insert(name.to_owned());
                }
            }
        }
    }
    assert!(queried.len() >= 8, "{queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|q| !exported.contains(q.as_str()))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
}
