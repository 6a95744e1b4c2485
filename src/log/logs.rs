//! The one port onto the logs of a deployment: the embedded log or a Kafka cluster, chosen once
//! per command ([`Deployment`]) and then used the same way by every tool — the partition count
//! and partitioner, kcat-style scans of a topic's partition, a fast scan of every partition,
//! the changelog snapshot, appends, and `reservation-owners`.
//!
//! Where the two backends need different strategies (`ordo repartition`, `replay --apply`),
//! the tools match on [`Logs`] once, at their entry point.

use std::path::PathBuf;
use std::sync::Arc;

use super::embedded::{EmbeddedLog, LogError, OpenOptions};
use super::kafka::{self, GroupProtocol, KafkaLogError, KafkaOptions, KafkaProducer, Outgoing};
use super::offsets::{OffsetSpec, Start};
use super::topics::Role;
use crate::core::changelog::Snapshot;
use crate::core::ownership::Layer;
use crate::core::partitioner::Partitioner;
use crate::core::record::{NewRecord, Record};
use crate::core::{Offset, Partition, PartitionCount};

/// A read or write of either backend failed.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    Embedded(#[from] LogError),
    #[error(transparent)]
    Kafka(#[from] KafkaLogError),
    #[error(
        "staging topics exist only on Kafka, while a change of N rebuilds the topics; pass \
         --brokers, or export reservation-events, reservation-state or reservation-events.dlq"
    )]
    NoStaging,
    #[error("the append stopped before it was answered: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// One failure answered to every request that shared the read it ended.
    #[error(transparent)]
    Shared(std::sync::Arc<LogsError>),
}

/// Where a command's logs are, resolved from its flags before anything is opened or created.
#[derive(Debug, Clone)]
pub enum Deployment {
    /// A data dir, and how to open it (N and partitioner, if given, checked against it).
    Embedded { dir: PathBuf, open: OpenOptions },
    /// A Kafka cluster; N as given (`None`: the input topic's), the partitioner as given
    /// (`None`: the recorded one), and whether the command writes (and so records the
    /// partitioner where none is recorded yet).
    Kafka {
        options: KafkaOptions,
        n: Option<PartitionCount>,
        partitioner: Option<Partitioner>,
        writes: bool,
    },
}

impl Deployment {
    /// N and the partitioner the deployment has or will have, without creating anything: a
    /// data dir's own (or those asked for, or 1 and the default for a new one); on Kafka, the
    /// input topic's N and the recorded partitioner, each checked against the one given.
    pub fn layout(&self) -> Result<(PartitionCount, Partitioner), LogsError> {
        match self {
            Deployment::Embedded { dir, open } => {
                let stored = EmbeddedLog::open(dir, OpenOptions::reading()).ok();
                let n = open
                    .partitions
                    .or(stored.as_ref().map(EmbeddedLog::partitions))
                    .unwrap_or(PartitionCount::ONE);
                let partitioner = open
                    .partitioner
                    .or(stored.as_ref().map(EmbeddedLog::partitioner))
                    .unwrap_or_default();
                Ok((n, partitioner))
            }
            Deployment::Kafka {
                options,
                n,
                partitioner,
                ..
            } => {
                let n = kafka::input_partitions(options, *n)?;
                let mut options = options.clone();
                kafka::settle_partitioner(&mut options, *partitioner, false)?;
                Ok((n, options.partitioner))
            }
        }
    }

    /// Opens the logs: the data dir as [`Deployment::layout`] says (created if the options
    /// allow), or the Kafka input topic's N.
    pub fn open(self) -> Result<Logs, LogsError> {
        match self {
            Deployment::Embedded { dir, open } => {
                Ok(Logs::Embedded(Arc::new(EmbeddedLog::open(&dir, open)?)))
            }
            Deployment::Kafka {
                mut options,
                n,
                partitioner,
                writes,
            } => match kafka::input_partitions(&options, n) {
                Ok(n) => {
                    // While N changes, what is written to the old topics may be deleted with
                    // them: a command that writes waits for the move to finish.
                    if writes {
                        kafka::check_no_repartition(&options)?;
                    }
                    kafka::settle_partitioner(&mut options, partitioner, writes)?;
                    Ok(Logs::Kafka { options, n })
                }
                // Topics that do not match N may be a change of N under way: say that first.
                // With no input topic and no `reservation-owners` either, ordo never set this
                // cluster up: say so at once (a read of the missing owners topic would wait
                // out librdkafka's 30 s of metadata propagation, then fail bare).
                Err(e) => {
                    let never_set_up = matches!(e, KafkaLogError::MissingTopic { .. })
                        && matches!(
                            kafka::topic_partitions(&options, Role::Owners),
                            Err(KafkaLogError::MissingTopic { .. })
                        );
                    if !never_set_up {
                        kafka::check_no_repartition(&options)?;
                    }
                    Err(e.into())
                }
            },
        }
    }

    /// The same deployment with N and the partitioner fixed to `n` and `partitioner` (those
    /// [`Deployment::layout`] gave), so that a new data dir is created with them.
    pub fn pinned(self, n: PartitionCount, partitioner: Partitioner) -> Self {
        match self {
            Deployment::Embedded { dir, open } => Deployment::Embedded {
                dir,
                open: OpenOptions {
                    partitions: Some(n),
                    partitioner: Some(partitioner),
                    ..open
                },
            },
            Deployment::Kafka {
                options, writes, ..
            } => Deployment::Kafka {
                options,
                n: Some(n),
                partitioner: Some(partitioner),
                writes,
            },
        }
    }

    /// A member of a Kafka group: the group, its static instance id and group protocol (nothing on the
    /// embedded log, which has one process).
    pub fn with_member(
        mut self,
        group: &str,
        instance_id: Option<String>,
        protocol: GroupProtocol,
    ) -> Self {
        if let Deployment::Kafka { options, .. } = &mut self {
            options.group = group.to_owned();
            options.instance_id = instance_id.filter(|id| !id.is_empty());
            options.group_protocol = protocol;
        }
        self
    }

    /// Readers that also see the records of open and aborted transactions (Kafka).
    pub fn read_uncommitted(mut self, yes: bool) -> Self {
        if let Deployment::Kafka { options, .. } = &mut self {
            options.read_uncommitted = yes;
        }
        self
    }
}

/// The logs of one deployment, open.
pub enum Logs {
    Embedded(Arc<EmbeddedLog>),
    Kafka {
        options: KafkaOptions,
        n: PartitionCount,
    },
}

impl Logs {
    /// Whether opening these logs created them (a new data dir).
    pub fn created(&self) -> bool {
        matches!(self, Logs::Embedded(log) if log.created())
    }

    /// N: the partitions of the input.
    pub fn partitions(&self) -> PartitionCount {
        match self {
            Logs::Embedded(log) => log.partitions(),
            Logs::Kafka { n, .. } => *n,
        }
    }

    /// The deployment's partitioner.
    pub fn partitioner(&self) -> Partitioner {
        match self {
            Logs::Embedded(log) => log.partitioner(),
            Logs::Kafka { options, .. } => options.partitioner,
        }
    }

    /// Where the records of `role` are, for messages: the data dir, or the topic and brokers.
    pub fn describe(&self, role: Role) -> String {
        match self {
            Logs::Embedded(log) => log.path().display().to_string(),
            Logs::Kafka { options, .. } => {
                format!("{} on {}", options.topic(role), options.brokers)
            }
        }
    }

    /// The partitions of `role`'s topic (on Kafka, as the cluster says).
    pub fn topic_partitions(&self, role: Role) -> Result<PartitionCount, LogsError> {
        match self {
            Logs::Embedded(log) => Ok(log.partitions()),
            Logs::Kafka { options, .. } => Ok(kafka::topic_partitions(options, role)?),
        }
    }

    /// The partition count of `role`'s staging copy (Kafka, mid-rebuild of N).
    pub fn staging_partitions(&self, role: Role) -> Result<PartitionCount, LogsError> {
        match self {
            Logs::Embedded(_) => Err(LogsError::NoStaging),
            Logs::Kafka { options, .. } => {
                let topic = options.staging_topic(role);
                let client = options.metadata_client()?;
                Ok(kafka::partition_count(&client, options, &topic)?
                    .and_then(PartitionCount::new)
                    .ok_or(KafkaLogError::MissingTopic { topic })?)
            }
        }
    }

    /// [`Logs::scan`] over `role`'s staging copy (Kafka, mid-rebuild of N): what a stuck move
    /// has copied so far.
    pub fn scan_staging(
        &self,
        role: Role,
        partition: Partition,
        spec: OffsetSpec,
        f: impl FnMut(Record) -> bool,
    ) -> Result<(), LogsError> {
        match self {
            Logs::Embedded(_) => Err(LogsError::NoStaging),
            Logs::Kafka { options, .. } => Ok(kafka::scan(
                options,
                &options.staging_topic(role),
                partition,
                spec,
                f,
            )?),
        }
    }

    /// Calls `f` on each record of `role`/`partition` in `spec`'s range, in offset order,
    /// until the partition's end as of now or until `f` returns false.
    pub fn scan(
        &self,
        role: Role,
        partition: Partition,
        spec: OffsetSpec,
        mut f: impl FnMut(Record) -> bool,
    ) -> Result<(), LogsError> {
        match self {
            Logs::Embedded(log) => {
                let from = start_of(log, &spec, role, partition)?;
                log.scan(role, partition, from, |r| {
                    if spec.end_timestamp.is_some_and(|e| r.timestamp >= e) {
                        return Ok(false);
                    }
                    Ok(f(r))
                })?;
                Ok(())
            }
            Logs::Kafka { options, .. } => Ok(kafka::scan(
                options,
                &options.topic(role),
                partition,
                spec,
                f,
            )?),
        }
    }

    /// How the input's records are routed, layer by layer (see [`Layer`]): empty when every
    /// record is routed with the current N, as on the embedded log always; on Kafka, what the
    /// latest change of N recorded on `reservation-owners` (growing in place adds a layer).
    pub fn layers(&self) -> Result<Vec<Layer>, LogsError> {
        match self {
            Logs::Embedded(_) => Ok(Vec::new()),
            Logs::Kafka { options, .. } => Ok(kafka::read_owners(options)?
                .repartition
                .map(|r| r.layers)
                .unwrap_or_default()),
        }
    }

    /// Records of `role` in `spec`'s range, if known without reading them (a progress total).
    pub fn count_hint(&self, role: Role, spec: OffsetSpec) -> Result<Option<u64>, LogsError> {
        let Logs::Embedded(log) = self else {
            return Ok(None);
        };
        let mut total = 0;
        for p in log.partitions().iter() {
            total += start_of(log, &spec, role, p)?.distance_to(log.end_offset(role, p)?);
        }
        Ok(Some(total))
    }

    /// Calls `f` on every record of `role` in `spec`'s range, partition by partition on the
    /// embedded log and in the order they arrive on Kafka (a whole topic is read by one client
    /// over every partition: within one layer of the input a key never crosses partitions, so
    /// the interleaving does not matter; across [`Logs::layers`] it does). A record `f` refuses (returns false) is not taken, and ends its partition's
    /// scan where it can. Returns per partition the first offset taken (or where it would have
    /// been) and the offset after the last.
    pub fn scan_every(
        &self,
        role: Role,
        spec: OffsetSpec,
        mut f: impl FnMut(&Record) -> bool,
    ) -> Result<Vec<(Offset, Offset)>, LogsError> {
        let n = self.topic_partitions(role)?;
        let size = n.get() as usize;
        let mut first: Vec<Option<Offset>> = vec![None; size];
        let mut next = vec![Offset(0); size];
        if let (Logs::Kafka { options, .. }, true) = (self, spec.is_everything()) {
            let partitions: Vec<Partition> = n.iter().collect();
            kafka::BulkReader::new(options, &options.topic(role))?.read_to_end(
                &partitions,
                |p, r| {
                    let Some(r) = r else { return };
                    if f(&r) {
                        first[p.index()].get_or_insert(r.offset);
                        next[p.index()] = r.offset.next().unwrap_or(r.offset);
                    }
                },
            )?;
        } else {
            for p in n.iter() {
                if let Logs::Embedded(log) = self {
                    let start = start_of(log, &spec, role, p)?;
                    first[p.index()] = Some(start);
                    next[p.index()] = start;
                }
                self.scan(role, p, spec, |r| {
                    if !f(&r) {
                        return false;
                    }
                    first[p.index()].get_or_insert(r.offset);
                    next[p.index()] = r.offset.next().unwrap_or(r.offset);
                    true
                })?;
            }
        }
        Ok(first
            .into_iter()
            .zip(next)
            .map(|(f, n)| (f.unwrap_or(n), n))
            .collect())
    }

    /// The current state of every changelog partition, folded with the fencing rule.
    pub fn snapshot(&self) -> Result<Snapshot, LogsError> {
        match self {
            Logs::Embedded(log) => Ok(log.snapshot()?),
            Logs::Kafka { options, .. } => {
                let n = kafka::topic_partitions(options, Role::State)?;
                let changelog = kafka::read_changelog(options, &options.topic(Role::State), n)?;
                Ok(Snapshot {
                    unreadable: changelog.unreadable,
                    states: changelog.into_all(),
                })
            }
        }
    }

    /// Appends `records` to `role` durably, in order per partition; returns how many.
    pub fn append(
        &self,
        role: Role,
        records: impl IntoIterator<Item = (Partition, NewRecord)>,
    ) -> Result<u64, LogsError> {
        // Records per write: one transaction on the embedded log, one send on Kafka.
        let mut records = records.into_iter().peekable();
        let mut total = 0;
        match self {
            Logs::Embedded(log) => {
                while records.peek().is_some() {
                    let chunk: Vec<_> = records.by_ref().take(50_000).collect();
                    total += chunk.len() as u64;
                    log.append(role, chunk)?;
                }
            }
            Logs::Kafka { options, .. } => {
                let producer = KafkaProducer::new(options)?;
                let topic = options.topic(role);
                while records.peek().is_some() {
                    let chunk: Vec<Outgoing<'_>> = records
                        .by_ref()
                        .take(20_000)
                        .map(|(partition, record)| Outgoing {
                            topic: &topic,
                            partition,
                            record,
                        })
                        .collect();
                    total += chunk.len() as u64;
                    producer.send_all(&chunk)?;
                }
            }
        }
        Ok(total)
    }
}

/// The first offset of `partition` to read for `spec` on the embedded log.
fn start_of(
    log: &EmbeddedLog,
    spec: &OffsetSpec,
    role: Role,
    partition: Partition,
) -> Result<Offset, LogError> {
    let (first, end) = (
        log.start_offset(role, partition)?,
        log.end_offset(role, partition)?,
    );
    Ok(match spec.start {
        Start::Beginning => first,
        Start::End => end,
        Start::Offset(o) => Offset(o).max(first),
        Start::FromEnd(n) => Offset(end.0.saturating_sub(n)).max(first),
        Start::Timestamp(ms) => {
            let mut at = end;
            log.scan(role, partition, first, |r| {
                if r.timestamp >= ms {
                    at = r.offset;
                    return Ok(false);
                }
                Ok(true)
            })?;
            at
        }
    })
}
