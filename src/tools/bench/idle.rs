//! `ordo bench idle`: what a member costs before its first event. For each N, `ordo run` on a
//! fresh data dir, sampled once every partition is restored and its owner waits for input:
//! resident memory and threads.

use std::process::Command;
use std::time::{Duration, Instant};

use super::BenchError;
use super::members::Member;
use super::process::status_bytes;
use crate::core::PartitionCount;

/// One N's figures.
#[derive(Debug, Clone)]
pub struct Idle {
    pub partitions: u32,
    /// The highest resident set size over a second of samples once ready, bytes.
    pub rss: u64,
    pub threads: u64,
}

/// How long a member may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// Runs an idle member at each of `counts`, one after the other.
pub fn idle(counts: &[PartitionCount]) -> Result<Vec<Idle>, BenchError> {
    counts.iter().map(|n| one(*n)).collect()
}

fn one(n: PartitionCount) -> Result<Idle, BenchError> {
    let dir = tempfile::tempdir()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--partitions", &n.to_string()]);
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
    Ok(Idle {
        partitions: n.get(),
        rss,
        threads,
    })
}
