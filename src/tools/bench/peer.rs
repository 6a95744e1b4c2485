//! The systems `ordo bench kafka` measures as child processes, side by side on the same broker
//! and records: `ordo run --until-idle` (this executable), and the Kafka Streams peer
//! (`benches/kafka-streams`, contract §1–2 in the Kafka Streams 4.4 Processor API), which stops
//! once it has processed the input up to the end it saw at start (`--until-end`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{Measured, measure};
use crate::core::PartitionCount;
use crate::log::kafka::KafkaOptions;
use crate::log::topics::Role;
use crate::owner::Guarantee;

/// A system under measurement.
#[derive(Debug, Clone)]
pub enum System {
    /// `ordo run`, this executable.
    Ordo,
    /// The Kafka Streams peer, run through its launcher script (which builds it with Maven
    /// on first use).
    KafkaStreams { launcher: PathBuf },
}

impl System {
    /// The name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            System::Ordo => "ordo",
            System::KafkaStreams { .. } => "kafka-streams",
        }
    }

    /// The Kafka Streams peer's launcher, `benches/kafka-streams/peer` under `dir` (the source
    /// tree), checked before any broker work starts.
    pub fn kafka_streams(dir: &Path) -> Result<System, String> {
        let launcher = dir.join("benches/kafka-streams/peer");
        if launcher.is_file() {
            Ok(System::KafkaStreams { launcher })
        } else {
            Err(format!(
                "the Kafka Streams peer is not at {}; run the benchmark from ordo's source tree \
                 or pass --peer-dir DIR",
                launcher.display()
            ))
        }
    }

    /// Builds what the system needs before it is measured (the peer: Maven, on first use).
    pub fn prepare(&self) -> std::io::Result<()> {
        match self {
            System::Ordo => Ok(()),
            System::KafkaStreams { launcher } => {
                let status = Command::new(launcher).arg("--build").status()?;
                if status.success() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!(
                        "{} --build failed ({status}); see above",
                        launcher.display()
                    )))
                }
            }
        }
    }

    /// Topics the system writes its state and dead letters to: ordo's own, or the peer's,
    /// beside them under the same prefix.
    pub fn state_topic(&self, opts: &KafkaOptions) -> String {
        match self {
            System::Ordo => opts.topic(Role::State),
            System::KafkaStreams { .. } => format!("{}kafka-streams.state", opts.topic_prefix),
        }
    }

    /// One run over the deployment's input under the consumer group (application id) `group`,
    /// to the end of the input, measured. `state_dir` is the peer's local state (RocksDB);
    /// ordo keeps none.
    pub fn run_to_end(
        &self,
        opts: &KafkaOptions,
        n: PartitionCount,
        group: &str,
        guarantee: Guarantee,
        state_dir: &Path,
    ) -> std::io::Result<Measured> {
        let cmd = self.command(opts, n, group, guarantee, Some(state_dir), true);
        measure(self.name(), cmd)
    }

    /// The command that runs the system: to the end of its input, or (`to_end` false) until
    /// SIGTERM.
    pub fn command(
        &self,
        opts: &KafkaOptions,
        n: PartitionCount,
        group: &str,
        guarantee: Guarantee,
        state_dir: Option<&Path>,
        to_end: bool,
    ) -> Command {
        let (name, interval) = match guarantee {
            Guarantee::AtLeastOnce => ("at-least-once", None),
            Guarantee::ExactlyOnce { commit_interval } => (
                "exactly-once",
                Some(commit_interval.as_millis().to_string()),
            ),
        };
        match self {
            System::Ordo => {
                let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ordo"));
                let mut cmd = Command::new(exe);
                cmd.args(["--log", "warn", "run", "--no-http", "--brokers"])
                    .arg(&opts.brokers)
                    .args(["--group", group, "--topic-prefix", &opts.topic_prefix])
                    .args(["--partitions", &n.get().to_string()])
                    .args(["--partitioner", opts.partitioner.name()])
                    .args(["--guarantee", name]);
                if let Some(ms) = &interval {
                    cmd.args(["--commit-interval", ms]);
                }
                for (k, v) in &opts.properties {
                    cmd.arg("-X").arg(format!("{k}={v}"));
                }
                if to_end {
                    cmd.arg("--until-idle");
                }
                cmd
            }
            System::KafkaStreams { launcher } => {
                let mut cmd = Command::new(launcher);
                cmd.args(["--brokers", &opts.brokers])
                    .args(["--input", &opts.topic(Role::Events)])
                    .args(["--state-topic", &self.state_topic(opts)])
                    .args([
                        "--dlq-topic",
                        &format!("{}kafka-streams.dlq", opts.topic_prefix),
                    ])
                    .args(["--application-id", group])
                    .args(["--partitions", &n.get().to_string()])
                    .args(["--guarantee", name]);
                if let Some(ms) = &interval {
                    cmd.args(["--commit-interval", ms]);
                }
                if let Some(dir) = state_dir {
                    cmd.arg("--state-dir").arg(dir);
                }
                if to_end {
                    cmd.arg("--until-end");
                }
                cmd
            }
        }
    }
}
