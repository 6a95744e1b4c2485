//! TLS and SASL on Apache Kafka, with the README's `-X` examples: a SASL_SSL listener with
//! SCRAM-SHA-512 and a listener that requires a client certificate, certificates made by the
//! test broker's script (openssl). A wrong password and an untrusted certificate are one clear
//! line, and no secret reaches the output.

mod common;

use std::process::Output;
use std::time::Duration;

use common::broker::*;
use common::*;

fn read(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// `ordo args… -X props…` (bounded), with no broker variables from the test environment.
fn ordo_with(brokers: &str, props: &[String], args: &[&str]) -> Output {
    let mut c = ordo();
    c.env_remove("ORDO_BROKERS")
        .args(args)
        .args(["--brokers", brokers]);
    for p in props {
        c.args(["-X", p]);
    }
    bounded(&mut c, Duration::from_secs(120), &format!("ordo {args:?}"))
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// topics apply, produce, run --until-idle and state through `brokers` with `props`.
fn round_trip(brokers: &str, props: &[String]) {
    ok(
        &ordo_with(brokers, props, &["topics", "apply", "--partitions", "2"]),
        "topics apply",
    );
    ok(
        &ordo_with(
            brokers,
            props,
            &["produce", "--partitions", "2", "--generate", "2000"],
        ),
        "produce",
    );
    ok(
        &ordo_with(brokers, props, &["run", "--until-idle", "--no-http"]),
        "run",
    );
    let state = ok(&ordo_with(brokers, props, &["state"]), "state");
    assert!(
        state.lines().count() > 500,
        "state: {} lines",
        state.lines().count()
    );
}

#[test]
fn sasl_ssl_with_scram_connects_and_a_wrong_password_is_one_line() {
    requires_apache_kafka("TLS and SASL listeners");
    let broker = Broker::secure();
    let addr = read(broker.secure_file("sasl_ssl"));
    let password = read(broker.secure_file("tls/password"));
    let ca = broker.secure_file("tls/ca.pem");
    let props = |password: &str, ca: &std::path::Path| {
        vec![
            "security.protocol=SASL_SSL".to_owned(),
            "sasl.mechanisms=SCRAM-SHA-512".to_owned(),
            "sasl.username=ordo".to_owned(),
            format!("sasl.password={password}"),
            format!("ssl.ca.location={}", ca.display()),
        ]
    };
    // The password read from a file (a mounted Secret), as the README shows.
    let from_file = format!("@file:{}", broker.secure_file("tls/password").display());
    round_trip(&addr, &props(&from_file, &ca));

    let wrong = "not-the-password-4711";
    let out = ordo_with(&addr, &props(wrong, &ca), &["state"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a refused credential is configuration: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ordo: error:") && last.contains("uthentication"),
        "{last}"
    );
    assert!(
        !stderr.contains(wrong) && !stderr.contains(&password),
        "a secret in the output: {stderr}"
    );

    let other = broker.secure_file("tls/other-ca.pem");
    let out = ordo_with(&addr, &props(&password, &other), &["state"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an untrusted certificate is configuration: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ordo: error:") && last.contains("certificate"),
        "{last}"
    );
    assert!(
        !stderr.contains(&password),
        "a secret in the output: {stderr}"
    );
}

#[test]
fn mutual_tls_connects_and_without_a_client_certificate_it_does_not() {
    requires_apache_kafka("TLS listeners");
    let broker = Broker::secure();
    let addr = read(broker.secure_file("ssl"));
    let file = |name: &str| broker.secure_file(name).display().to_string();
    let mut props = vec![
        "security.protocol=SSL".to_owned(),
        format!("ssl.ca.location={}", file("tls/ca.pem")),
        format!("ssl.certificate.location={}", file("tls/client.pem")),
        format!("ssl.key.location={}", file("tls/client.key")),
    ];
    round_trip(&addr, &props);

    // Without a client certificate the broker closes the connection: unreachable, exit 1.
    props.truncate(2);
    let out = ordo_with(&addr, &props, &["state"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("ordo: error: cannot reach the brokers"),
        "{last}"
    );
}
