//! A Kafka-compatible broker for tests: tansu, started per test on a free loopback port with
//! in-memory storage (`./scripts/test` installs it when it is missing).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use ordo::core::partitioner::Partitioner;
use ordo::log::kafka::KafkaOptions;

use super::{ordo, wait_for};

pub struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Broker {
    pub fn start() -> Broker {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("tcp://{addr}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is on PATH (./scripts/test installs it)");
        wait_for("tansu to listen", Duration::from_secs(30), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
        Broker { child, addr }
    }

    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    /// `ordo args…` against this broker.
    pub fn ordo(&self, args: &[&str]) -> Command {
        let mut c = ordo();
        c.env("ORDO_BROKERS", self.brokers()).args(args);
        c
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.ordo(args).output().unwrap();
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

    pub fn options(&self) -> KafkaOptions {
        KafkaOptions {
            brokers: self.brokers(),
            group: "test".into(),
            properties: vec![],
            partitioner: Partitioner::AbsHashModN,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    format!(
        "g-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
