//! The README's tutorial, run as written: every fenced block marked `sh tutorial`, in order, in
//! one bash session from the repository's root (with free ports in place of 8080–8082), against
//! the Apache Kafka broker the tutorial itself starts. It must succeed, and say what the
//! README says it says.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::bounded;

/// The tutorial's blocks, in order.
fn blocks(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = readme;
    while let Some(start) = rest.find("```sh tutorial\n") {
        let body = &rest[start + "```sh tutorial\n".len()..];
        let end = body.find("\n```").expect("a tutorial block ends");
        out.push(body[..end].to_owned());
        rest = &body[end..];
    }
    out
}

#[test]
fn the_readme_tutorial_runs_as_written() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let blocks = blocks(&readme);
    assert_eq!(blocks.len(), 5, "the tutorial has five steps");
    let mut script = String::from("set -euo pipefail\n");
    for b in &blocks {
        script.push_str(b);
        script.push('\n');
    }
    // Ports that are free now, for the listeners the tutorial starts.
    for port in ["8080", "8081", "8082"] {
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        script = script.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{free}"));
    }
    let mut command = std::process::Command::new("bash");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .env("ORDO_LOG", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("ORDO_") && k != "ORDO_LOG" {
            command.env_remove(k);
        }
    }
    let out = bounded(&mut command, Duration::from_secs(600), "the tutorial");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let state_of = |no: &str| {
        lines
            .iter()
            .filter(|v| v["reservation_no"] == no && v["state"].is_string())
            .map(|v| v["state"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    // Steps 1, 3 and 5 (after the move) print R-0001 associated and R-0002 cancelled; step 4
    // reads R-0001 again.
    assert_eq!(state_of("R-0001"), ["associated"; 4], "{stdout}");
    assert_eq!(state_of("R-0002"), ["cancelled"; 3], "{stdout}");
    // The dead letter of step 1, the read-your-writes and the outcome of step 2.
    assert!(
        lines
            .iter()
            .any(|v| v["headers"]["ordo.reason"] == "user_mismatch"),
        "{stdout}"
    );
    assert_eq!(state_of("R-0003"), ["associated"], "{stdout}");
    assert!(lines.iter().any(|v| v["outcome"] == "accepted"), "{stdout}");
    // Step 4: the key answered through the other member names its owner; step 5 checks N = 6.
    assert!(stdout.contains("ordo-served-by: "), "{stdout}");
    assert!(
        stdout.contains("ok      reservation-events (6 partitions)") && stdout.contains("check OK"),
        "{stdout}"
    );
}
