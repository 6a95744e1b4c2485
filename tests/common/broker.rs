//! The Kafka broker the tests run against.
//!
//! By default Apache Kafka 4.4, started by `scripts/kafka-broker`: `./scripts/test` starts one
//! broker for the whole run and passes its address in `ORDO_TEST_BROKERS`; without it, each test
//! binary starts a broker of its own the first time a test asks for one, and a watchdog stops it
//! when the binary exits. Tests share a broker through a fresh topic prefix and fresh group
//! names each, so none sees another's topics or groups. `ORDO_TEST_BROKER=tansu` runs the same
//! tests on tansu 0.6 instead (one in-memory broker per test), since users run
//! Kafka-compatible brokers too. A test that kills or restarts the broker takes a private
//! Apache Kafka ([`Broker::private`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use ordo::log::kafka::KafkaOptions;
use ordo::log::topics::Role;

use super::{Running, bounded, ordo, set_context, unique, wait_for};

/// Which broker the tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Apache Kafka 4.4 (the default, the reference broker).
    Kafka,
    /// tansu 0.6 (`ORDO_TEST_BROKER=tansu`).
    Tansu,
}

/// The broker kind of this run.
pub fn kind() -> Kind {
    match std::env::var("ORDO_TEST_BROKER").as_deref() {
        Ok("tansu") => Kind::Tansu,
        Ok("kafka") | Ok("") | Err(_) => Kind::Kafka,
        Ok(other) => panic!("ORDO_TEST_BROKER={other}: use kafka (the default) or tansu"),
    }
}

/// Fails the test at once when the run's broker is not Apache Kafka, naming why: a test that
/// needs what only Apache Kafka has (eviction, static membership, a broker restart on a durable
/// log) never passes without testing it. `ORDO_TEST_BROKER=tansu ./scripts/test` skips those
/// tests by name.
pub fn requires_apache_kafka(why: &str) {
    assert!(
        kind() == Kind::Kafka,
        "this test needs Apache Kafka ({why}); run it without ORDO_TEST_BROKER=tansu"
    );
}

/// A broker of the test's own.
enum Own {
    Tansu(Child),
    /// A private Apache Kafka: its directory (log dir, config, log) lives with the value.
    Kafka(tempfile::TempDir),
}

/// A namespace on a broker: its address, and a topic prefix no other test uses.
pub struct Broker {
    addr: String,
    prefix: String,
    log: PathBuf,
    own: Option<Own>,
}

/// `scripts/kafka-broker`.
fn script() -> Command {
    Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-broker"))
}

/// Starts an Apache Kafka broker in `dir` (or starts it again there) and returns its address.
fn start_kafka(dir: &Path) -> String {
    start_kafka_with(dir, false)
}

/// [`start_kafka`], with the TLS and SASL listeners when `secure` (`KAFKA_SECURE=1`).
fn start_kafka_with(dir: &Path, secure: bool) -> String {
    let mut command = script();
    if secure {
        command.env("KAFKA_SECURE", "1");
    }
    let out = bounded(
        command.arg("start").arg(dir),
        Duration::from_secs(300),
        "scripts/kafka-broker start",
    );
    assert!(
        out.status.success(),
        "scripts/kafka-broker start {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The Apache Kafka broker every test of this run shares: `ORDO_TEST_BROKERS`, or one started
/// for this test binary (stopped when the binary exits).
fn shared() -> &'static (String, PathBuf) {
    static SHARED: OnceLock<(String, PathBuf)> = OnceLock::new();
    SHARED.get_or_init(|| {
        if let Ok(addr) = std::env::var("ORDO_TEST_BROKERS")
            && !addr.is_empty()
        {
            let log = std::env::var("ORDO_TEST_BROKER_LOG").unwrap_or_default();
            return (addr, PathBuf::from(log));
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/kafka-test")
            .join(format!("broker-{}", std::process::id()));
        let addr = start_kafka(&dir);
        // Stops the broker once this test binary is gone, however it ends.
        let _ = Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; {} stop {} && rm -rf {}",
                std::process::id(),
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("scripts/kafka-broker")
                    .display(),
                dir.display(),
                dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        (addr, dir.join("broker.log"))
    })
}

impl Broker {
    /// A fresh namespace on this run's broker: the shared Apache Kafka, or a tansu of its own.
    pub fn start() -> Broker {
        let broker = match kind() {
            Kind::Kafka => {
                let (addr, log) = shared();
                Broker {
                    addr: addr.clone(),
                    prefix: format!("{}.", unique("t")),
                    log: log.clone(),
                    own: None,
                }
            }
            Kind::Tansu => Broker::tansu(),
        };
        broker.wait_until_up();
        set_context(broker.log.clone());
        broker
    }

    /// An Apache Kafka broker of this test's own, which it may kill and start again.
    pub fn private() -> Broker {
        Broker::private_with(false)
    }

    /// A private Apache Kafka broker that also listens with SASL_SSL (SCRAM-SHA-512, user
    /// `ordo`) and with TLS requiring a client certificate; see [`Broker::secure_file`].
    pub fn secure() -> Broker {
        Broker::private_with(true)
    }

    /// A file of a secure broker's directory: `sasl_ssl` and `ssl` (addresses), and
    /// `tls/{ca,other-ca,client}.pem`, `tls/client.key`, `tls/password`.
    pub fn secure_file(&self, name: &str) -> PathBuf {
        match &self.own {
            Some(Own::Kafka(dir)) => dir.path().join(name),
            _ => panic!("only a private Apache Kafka broker has files"),
        }
    }

    fn private_with(secure: bool) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("ordo-kafka-")
            .tempdir()
            .unwrap();
        let addr = start_kafka_with(dir.path(), secure);
        let broker = Broker {
            addr,
            prefix: String::new(),
            log: dir.path().join("broker.log"),
            own: Some(Own::Kafka(dir)),
        };
        broker.wait_until_up();
        set_context(broker.log.clone());
        broker
    }

    fn tansu() -> Broker {
        let log = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let log = log.keep().unwrap();
        // The port is free when chosen; should another process take it before tansu binds it,
        // tansu exits and a new port is chosen.
        for _ in 0..5 {
            let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let url = format!("tcp://{addr}");
            let mut child = Command::new("tansu")
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("tansu is on PATH (ORDO_TEST_BROKER=tansu needs tansu 0.6.0)");
            let up = wait_for("tansu to listen", Duration::from_secs(30), || {
                if child.try_wait().unwrap().is_some() {
                    return Some(false);
                }
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .ok()
                    .map(|_| true)
            });
            if up {
                return Broker {
                    addr: addr.to_string(),
                    prefix: format!("{}.", unique("t")),
                    log,
                    own: Some(Own::Tansu(child)),
                };
            }
        }
        panic!(
            "tansu did not stay up on five free ports; see {}",
            log.display()
        );
    }

    /// Waits until the broker answers a metadata request (it is alive and serving).
    /// Waits until the broker answers a metadata request.
    pub fn wait_until_up(&self) {
        let opts = self.options();
        let client = opts.metadata_client().unwrap();
        wait_for(
            "the broker to answer metadata",
            Duration::from_secs(60),
            || {
                client
                    .fetch_metadata(None, Duration::from_secs(2))
                    .ok()
                    .map(|_| ())
            },
        );
    }

    /// Which broker this is.
    pub fn kind(&self) -> Kind {
        match self.own {
            Some(Own::Tansu(_)) => Kind::Tansu,
            _ => Kind::Kafka,
        }
    }

    pub fn brokers(&self) -> String {
        self.addr.clone()
    }

    /// This test's topic prefix (empty on a private broker).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name of the topic with `role` in this test's namespace.
    pub fn topic(&self, role: Role) -> String {
        self.options().topic(role)
    }

    /// The broker's log, for failure messages.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// SIGKILLs a private broker, as a crash.
    pub fn kill(&self) {
        let Some(Own::Kafka(dir)) = &self.own else {
            panic!("only a private Apache Kafka broker can be killed");
        };
        let out = bounded(
            script().arg("kill").arg(dir.path()),
            Duration::from_secs(30),
            "scripts/kafka-broker kill",
        );
        assert!(out.status.success());
    }

    /// Starts a private broker again on its log dir, at the same address.
    pub fn restart(&self) {
        let Some(Own::Kafka(dir)) = &self.own else {
            panic!("only a private Apache Kafka broker can be restarted");
        };
        assert_eq!(start_kafka(dir.path()), self.addr);
        self.wait_until_up();
    }

    /// `ordo args…` against this broker, in this test's namespace.
    pub fn ordo(&self, args: &[&str]) -> Command {
        let mut c = ordo();
        c.env("ORDO_BROKERS", self.brokers())
            .env("ORDO_TOPIC_PREFIX", &self.prefix)
            .envs(self.properties())
            .args(args);
        c
    }

    /// What this broker needs of every client (README, Brokers): tansu holds each fetch for
    /// the whole `fetch.wait.max.ms`, so its owners wait 5 ms, not 500.
    fn properties(&self) -> Option<(&'static str, &'static str)> {
        (self.kind() == Kind::Tansu).then_some(("ORDO_KAFKA_PROPERTIES", "fetch.wait.max.ms=5"))
    }

    /// Writes a record to partition `p` of `reservation-state` as any producer could (a forged
    /// record, or a zombie's write).
    pub fn send_state(&self, p: ordo::core::Partition, key: &str, value: &[u8]) {
        ordo::log::kafka::KafkaProducer::new(&self.options())
            .unwrap()
            .send_all(&[ordo::log::kafka::Outgoing {
                topic: &self.topic(Role::State),
                partition: p,
                record: ordo::core::record::NewRecord {
                    key: key.as_bytes().to_vec(),
                    value: value.to_vec(),
                    timestamp: 0,
                    headers: vec![],
                },
            }])
            .unwrap();
    }

    /// A zombie's write, forged: `key`'s current state record (`stored`, as `ordo state` prints
    /// it) cancelled, one version on, under epoch 1, below every owner's since the first.
    pub fn forge_zombie_cancel(&self, key: &str, stored: &serde_json::Value) {
        let mut forged: ordo::core::changelog::StateRecord =
            serde_json::from_value(stored.clone()).unwrap();
        forged.state = ordo::core::state_machine::Status::Cancelled;
        forged.version += 1;
        forged.epoch = ordo::core::Epoch(1);
        self.send_state(forged.source_partition, key, &forged.to_json());
    }

    /// Writes `r` to `reservation-owners` as any producer could (a forged or stale record).
    pub fn send_owner(&self, r: &ordo::core::ownership::OwnershipRecord) {
        let producer = ordo::log::kafka::KafkaProducer::new(&self.options()).unwrap();
        producer
            .send_all(&[ordo::log::kafka::Outgoing {
                topic: &self.topic(Role::Owners),
                partition: ordo::core::Partition(0),
                record: ordo::core::record::NewRecord {
                    key: r.key().into_bytes(),
                    value: r.to_json(),
                    timestamp: r.ts,
                    headers: vec![],
                },
            }])
            .unwrap();
    }

    /// Starts `ordo run` as a member of `group` on this broker (HTTP on a free port, batches
    /// of 500), with `extra` flags.
    pub fn member(&self, group: &str, extra: &[&str]) -> Running {
        self.member_with(&[], group, extra)
    }

    /// [`Broker::member`] with variables `env` set.
    pub fn member_with(&self, env: &[(&str, &str)], group: &str, extra: &[&str]) -> Running {
        let mut vars = vec![
            ("ORDO_BROKERS", self.addr.as_str()),
            ("ORDO_TOPIC_PREFIX", self.prefix.as_str()),
        ];
        vars.extend(self.properties());
        vars.extend_from_slice(env);
        let mut args = vec!["--group", group];
        if !extra.contains(&"--batch-size") {
            args.extend(["--batch-size", "500"]);
        }
        args.extend_from_slice(extra);
        Running::start_with(&vars, &args)
    }

    /// Runs `ordo args…` (bounded) and returns what it did.
    pub fn run(&self, args: &[&str]) -> Output {
        bounded(
            &mut self.ordo(args),
            Duration::from_secs(180),
            &format!("ordo {args:?}"),
        )
    }

    /// Runs `ordo args…` and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ordo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn state(&self) -> BTreeMap<String, serde_json::Value> {
        parse_state(&self.ok(&["state"]).stdout)
    }

    /// Every record of `topic` as a plain consumer at `isolation` reads it ([`plain_read`]).
    pub fn plain_read(&self, topic: &str, n: u32, isolation: &str) -> Vec<Plain> {
        plain_read(&self.brokers(), topic, n, isolation)
    }

    /// Options for the library's Kafka clients, in this test's namespace.
    pub fn options(&self) -> KafkaOptions {
        KafkaOptions {
            group: unique("test"),
            topic_prefix: self.prefix.clone(),
            ..KafkaOptions::new(self.brokers())
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match self.own.take() {
            Some(Own::Tansu(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&self.log);
            }
            Some(Own::Kafka(dir)) => {
                let _ = bounded(
                    script().arg("kill").arg(dir.path()),
                    Duration::from_secs(30),
                    "scripts/kafka-broker kill",
                );
            }
            None => {}
        }
    }
}

/// One record as a plain consumer gets it.
pub struct Plain {
    pub partition: i32,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Every record of `topic` (all `n` partitions, from the beginning to the end) as a plain
/// consumer at `isolation` reads it.
pub fn plain_read(brokers: &str, topic: &str, n: u32, isolation: &str) -> Vec<Plain> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("plain"))
        .set("isolation.level", isolation)
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (mut records, mut ended) = (Vec::new(), BTreeSet::new());
    let started = std::time::Instant::now();
    while ended.len() < n as usize {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{topic} not read to its end within 120 s ({} records, ends of {ended:?})",
            records.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for h in h.iter() {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        headers.insert(h.key.to_owned(), value.into_owned());
                    }
                }
                records.push(Plain {
                    partition: m.partition(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("plain consumer of {topic}: {e}"),
            None => {}
        }
    }
    records
}

pub fn parse_state(stdout: &[u8]) -> BTreeMap<String, serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["reservation_no"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// A consumer group no other test uses.
pub fn group() -> String {
    unique("g")
}
