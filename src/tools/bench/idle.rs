//! `ordo bench idle`: what a member costs before its first event. For each N, `ordo run` on a
//! fresh data dir (or, with `--brokers`, on fresh topics of a Kafka cluster), sampled once every
//! partition is restored and its owner waits for input: resident memory, threads, and the CPU
//! it burns while nothing arrives.

use std::process::Command;
use std::time::{Duration, Instant};

use super::BenchError;
use super::members::Member;
use super::process::{cpu_seconds, status_bytes};
use crate::core::PartitionCount;
use crate::log::kafka::{KafkaOptions, apply_topics};

/// One N's figures.
#[derive(Debug, Clone)]
pub struct Idle {
    pub partitions: u32,
    /// The highest resident set size over a second of samples once ready, bytes.
    pub rss: u64,
    pub threads: u64,
    /// CPU seconds per second over the idle window (1.0: one core).
    pub cpu: f64,
}

/// How long the idle member's CPU is sampled.
const CPU_WINDOW: Duration = Duration::from_secs(3);

/// On Kafka, how long after readiness the CPU window starts: the group's last rebalance, the
/// ownership records and the readers' first fetches are over by then.
const KAFKA_SETTLE: Duration = Duration::from_secs(10);

/// How long a member may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// Runs an idle member at each of `counts`, one after the other: on the embedded log, or on
/// `kafka` (topics of their own under a fresh prefix for each N).
pub fn idle(
    counts: &[PartitionCount],
    kafka: Option<&KafkaOptions>,
) -> Result<Vec<Idle>, BenchError> {
    counts.iter().map(|n| one(*n, kafka)).collect()
}

fn one(n: PartitionCount, kafka: Option<&KafkaOptions>) -> Result<Idle, BenchError> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("run").args(["--partitions", &n.to_string()]);
    match kafka {
        None => {
            cmd.arg("--data-dir").arg(dir.path().join("data"));
        }
        Some(kafka) => {
            let prefix = format!("{}idle-{}-{n}.", kafka.topic_prefix, std::process::id());
            let opts = KafkaOptions {
                topic_prefix: prefix.clone(),
                ..kafka.clone()
            };
            apply_topics(&opts, n)?;
            cmd.args(["--brokers", &opts.brokers, "--topic-prefix", &prefix])
                .args(["--group", &format!("{prefix}group")]);
            for (k, v) in &opts.properties {
                cmd.arg("-X").arg(format!("{k}={v}"));
            }
        }
    }
    let member = Member::spawn(cmd)?;
    let deadline = Instant::now() + READY_WITHIN;
    while member.get("/readyz")?.0 != 200 {
        if Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "a member with N = {n} was not ready within {} s",
                READY_WITHIN.as_secs()
            ))
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = member.child.id().to_string();
    let mut rss = 0;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        rss = rss.max(status_bytes(&pid, "VmRSS:"));
    }
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count() as u64;
    if kafka.is_some() {
        std::thread::sleep(KAFKA_SETTLE);
    }
    let before = cpu_seconds(member.child.id());
    let started = Instant::now();
    std::thread::sleep(CPU_WINDOW);
    let cpu = (cpu_seconds(member.child.id()) - before) / started.elapsed().as_secs_f64();
    Ok(Idle {
        partitions: n.get(),
        rss,
        threads,
        cpu,
    })
}
