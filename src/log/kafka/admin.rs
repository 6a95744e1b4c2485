//! Topic administration from `topics/`: create (`ordo topics apply`) and verify (`ordo topics
//! check`, and every `ordo run` before it joins the group).

use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigResource, NewPartitions, NewTopic, OwnedResourceSpecifier,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use super::config::{
    KafkaLogError, KafkaOptions, QuietEof, REQUEST_TIMEOUT, kafka, unreachable_or,
};
use crate::core::PartitionCount;
use crate::log::topics::Role;

/// Partition count of `topic`, `None` when it does not exist.
pub fn partition_count(
    client: &BaseConsumer<QuietEof>,
    opts: &KafkaOptions,
    topic: &str,
) -> Result<Option<u32>, KafkaLogError> {
    let md = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| unreachable_or(opts, e, "fetch metadata"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| match t.error() {
            Some(_) => None,
            None if t.partitions().is_empty() => None,
            None => Some(t.partitions().len() as u32),
        }))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
        .block_on(f)
}

fn admin_client(opts: &KafkaOptions) -> Result<AdminClient<QuietEof>, KafkaLogError> {
    opts.base(&[])
        .create_with_context(QuietEof)
        .map_err(kafka("create admin client"))
}

/// Creates topic `name` with `partitions` partitions (outside `topics/`: the benchmark's
/// scratch topic); an existing one is left as it is.
pub fn create_topic(opts: &KafkaOptions, name: &str, partitions: u32) -> Result<(), KafkaLogError> {
    let admin = admin_client(opts)?;
    let spec = TopicSpec {
        name: name.to_owned(),
        partitions,
        config: Vec::new(),
    };
    for r in create_once(&admin, opts, &[spec])? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaLogError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Creates the topics of `topics/` with `n` partitions (existing ones are checked instead).
/// Returns one line per topic.
pub fn apply_topics(opts: &KafkaOptions, n: PartitionCount) -> Result<Vec<String>, KafkaLogError> {
    let client = opts.metadata_client()?;
    partition_count(&client, opts, &opts.topic(Role::Events))?;
    let admin = admin_client(opts)?;
    let defs = opts.topic_defs();
    let specs: Vec<TopicSpec> = defs
        .iter()
        .map(|d| TopicSpec {
            name: d.name.clone(),
            partitions: d.partition_count(n).get(),
            config: d.config.clone().into_iter().collect(),
        })
        .collect();
    let results = create_once(&admin, opts, &specs)?;
    let created: Vec<TopicSpec> = specs
        .iter()
        .filter(|spec| {
            results
                .iter()
                .any(|r| r.as_ref().is_ok_and(|n| *n == spec.name))
        })
        .cloned()
        .collect();
    wait_visible(
        opts,
        &created,
        std::time::Instant::now() + std::time::Duration::from_secs(30),
    )?;
    let mut lines = Vec::new();
    for r in results {
        match r {
            Ok(name) => {
                let count = defs
                    .iter()
                    .find(|d| d.name == name)
                    .map_or(n, |d| d.partition_count(n));
                lines.push(format!("created {name} ({count} partitions)"))
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                lines.push(format!("exists  {name}"))
            }
            Err((name, code)) => {
                return Err(KafkaLogError::CreateTopic { topic: name, code });
            }
        }
    }
    lines.extend(check_topics(opts, n)?);
    Ok(lines)
}

/// Verifies that every topic of `topics/` exists with `n` partitions and its configs: one
/// metadata request for every topic, then one request describing every topic's configs.
pub fn check_topics(opts: &KafkaOptions, n: PartitionCount) -> Result<Vec<String>, KafkaLogError> {
    let client = opts.metadata_client()?;
    let md = client
        .fetch_metadata(None, REQUEST_TIMEOUT)
        .map_err(|e| unreachable_or(opts, e, "fetch metadata"))?;
    let defs = opts.topic_defs();
    for d in &defs {
        let actual = md
            .topics()
            .iter()
            .find(|t| t.name() == d.name)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as u32);
        match actual {
            None => {
                return Err(KafkaLogError::MissingTopic {
                    topic: d.name.clone(),
                });
            }
            Some(actual) if actual != n.get() && d.is_partitioned() => {
                return Err(KafkaLogError::PartitionMismatch {
                    topic: d.name.clone(),
                    actual,
                    expected: n.get(),
                });
            }
            Some(actual) if actual != d.partition_count(n).get() => {
                return Err(KafkaLogError::FixedPartitions {
                    expected: d.partition_count(n).get(),
                    topic: d.name.clone(),
                    actual,
                });
            }
            Some(_) => {}
        }
    }
    let admin = admin_client(opts)?;
    let resources: Vec<ResourceSpecifier<'_>> = defs
        .iter()
        .map(|d| ResourceSpecifier::Topic(&d.name))
        .collect();
    let described = block_on(admin.describe_configs(
        &resources,
        &AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT)),
    ));
    // A broker that cannot describe configs leaves them unverified, not failed.
    let described: Vec<Option<ConfigResource>> = match described {
        Ok(results) => results.into_iter().map(Result::ok).collect(),
        Err(e)
            if matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::OperationTimedOut)
            ) =>
        {
            return Err(unreachable_or(opts, e, "describe configs"));
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot describe topic configs");
            Vec::new()
        }
    };
    // rdkafka joins an admin client's polling thread on drop, which sleeps up to 100 ms: let
    // that happen off the start-up path.
    let _ = std::thread::Builder::new()
        .name("ordo-admin-drop".into())
        .spawn(move || drop(admin));
    let mut lines = Vec::new();
    for d in defs {
        let resource = described
            .iter()
            .flatten()
            .find(|r| matches!(&r.specifier, OwnedResourceSpecifier::Topic(t) if *t == d.name));
        let mut unreported = Vec::new();
        for (key, expected) in &d.config {
            let actual = resource
                .and_then(|r| r.get(key))
                .and_then(|e| e.value.clone());
            match actual {
                // Some brokers (tansu) do not report every config; say so rather than fail.
                None => unreported.push(key.clone()),
                Some(v) if &v == expected => {}
                Some(v) => {
                    return Err(KafkaLogError::ConfigMismatch {
                        topic: d.name,
                        key: key.clone(),
                        actual: Some(v),
                        expected: expected.clone(),
                    });
                }
            }
        }
        let note = if unreported.is_empty() {
            String::new()
        } else {
            format!(" (not reported by the broker: {})", unreported.join(", "))
        };
        lines.push(format!(
            "ok      {} ({} partitions){note}",
            d.name,
            d.partition_count(n)
        ));
    }
    Ok(lines)
}

/// One CreateTopics request for `specs`: per topic, its name or its error.
fn create_once(
    admin: &AdminClient<QuietEof>,
    opts: &KafkaOptions,
    specs: &[TopicSpec],
) -> Result<Vec<rdkafka::admin::TopicResult>, KafkaLogError> {
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|t| {
            t.config.iter().fold(
                NewTopic::new(&t.name, t.partitions as i32, TopicReplication::Fixed(-1)),
                |n, (k, v)| n.set(k, v),
            )
        })
        .collect();
    block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
    ))
    .map_err(|e| unreachable_or(opts, e, "create topics"))
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    pub config: Vec<(String, String)>,
}

/// Creates topics; an existing one is an error naming it
/// (a topic of a repartition must start empty). Topic deletion is asynchronous on some
/// brokers, so a name still being deleted is retried for up to a minute.
pub fn create_topics(opts: &KafkaOptions, specs: &[TopicSpec]) -> Result<(), KafkaLogError> {
    let admin = admin_client(opts)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut todo: Vec<&TopicSpec> = specs.iter().collect();
    while !todo.is_empty() {
        let batch: Vec<TopicSpec> = todo.iter().map(|t| (*t).clone()).collect();
        let results = create_once(&admin, opts, &batch)?;
        let mut again = Vec::new();
        for r in results {
            match r {
                Ok(_) => {}
                Err((name, RDKafkaErrorCode::TopicAlreadyExists))
                    if std::time::Instant::now() < deadline =>
                {
                    again.push(name)
                }
                Err((topic, code)) => return Err(KafkaLogError::CreateTopic { topic, code }),
            }
        }
        todo.retain(|t| again.contains(&t.name));
        if !todo.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    wait_visible(opts, specs, deadline)
}

/// Waits until the cluster's metadata shows every topic of `specs` with all its partitions
/// (a created topic reaches the brokers' metadata a moment after CreateTopics answers).
fn wait_visible(
    opts: &KafkaOptions,
    specs: &[TopicSpec],
    deadline: std::time::Instant,
) -> Result<(), KafkaLogError> {
    let client = opts.metadata_client()?;
    loop {
        let md = client
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| unreachable_or(opts, e, "fetch metadata"))?;
        let visible = specs.iter().all(|spec| {
            md.topics().iter().any(|t| {
                t.name() == spec.name
                    && t.error().is_none()
                    && t.partitions().len() == spec.partitions as usize
            })
        });
        if visible {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaLogError::CreateTopic {
                topic: specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                code: RDKafkaErrorCode::RequestTimedOut,
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether the cluster can add partitions to an existing topic (CreatePartitions): asked with
/// a validate-only request to grow `topic` to `to` partitions, which changes nothing. `Err`
/// carries the broker's answer when it cannot (tansu 0.6 has no CreatePartitions).
pub fn can_add_partitions(
    opts: &KafkaOptions,
    topic: &str,
    to: PartitionCount,
) -> Result<Result<(), RDKafkaErrorCode>, KafkaLogError> {
    let admin = admin_client(opts)?;
    let grow = [NewPartitions::new(topic, to.get() as usize)];
    let results = block_on(
        admin.create_partitions(
            &grow,
            &AdminOptions::new()
                .operation_timeout(Some(REQUEST_TIMEOUT))
                .validate_only(true),
        ),
    );
    match results {
        Ok(results) => Ok(match results.into_iter().next() {
            Some(Err((_, code))) => Err(code),
            _ => Ok(()),
        }),
        Err(e) => match e {
            rdkafka::error::KafkaError::AdminOp(
                code @ (RDKafkaErrorCode::UnsupportedVersion
                | RDKafkaErrorCode::UnsupportedFeature
                | RDKafkaErrorCode::InvalidRequest),
            ) => Ok(Err(code)),
            e => Err(unreachable_or(opts, e, "create partitions")),
        },
    }
}

/// Grows each topic of `names` to `to` partitions (CreatePartitions; one already there is
/// left as it is) and waits until the cluster's metadata shows them all. The records a topic
/// holds stay where they are.
pub fn add_partitions(
    opts: &KafkaOptions,
    names: &[String],
    to: PartitionCount,
) -> Result<(), KafkaLogError> {
    let client = opts.metadata_client()?;
    let mut grow = Vec::new();
    for name in names {
        match partition_count(&client, opts, name)? {
            None => {
                return Err(KafkaLogError::MissingTopic {
                    topic: name.clone(),
                });
            }
            Some(n) if n < to.get() => grow.push(NewPartitions::new(name, to.get() as usize)),
            Some(_) => {}
        }
    }
    if !grow.is_empty() {
        let admin = admin_client(opts)?;
        let results = block_on(admin.create_partitions(
            &grow,
            &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
        ))
        .map_err(|e| unreachable_or(opts, e, "create partitions"))?;
        for r in results {
            match r {
                // Grown meanwhile by an earlier run whose answer was lost.
                Ok(_) | Err((_, RDKafkaErrorCode::InvalidPartitions)) => {}
                Err((topic, code)) => return Err(KafkaLogError::AddPartitions { topic, code }),
            }
        }
    }
    let specs: Vec<TopicSpec> = names
        .iter()
        .map(|n| TopicSpec {
            name: n.clone(),
            partitions: to.get(),
            config: Vec::new(),
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    wait_visible(opts, &specs, deadline)
}

/// Deletes `names` (those that exist) and waits until the cluster's metadata no longer lists
/// them.
pub fn delete_topics(opts: &KafkaOptions, names: &[String]) -> Result<(), KafkaLogError> {
    let client = opts.metadata_client()?;
    let existing = |client: &BaseConsumer<QuietEof>| -> Result<Vec<String>, KafkaLogError> {
        let md = client
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(|e| unreachable_or(opts, e, "fetch metadata"))?;
        Ok(names
            .iter()
            .filter(|n| {
                md.topics()
                    .iter()
                    .any(|t| t.name() == n.as_str() && t.error().is_none())
            })
            .cloned()
            .collect())
    };
    let present = existing(&client)?;
    if present.is_empty() {
        return Ok(());
    }
    let admin = admin_client(opts)?;
    let refs: Vec<&str> = present.iter().map(String::as_str).collect();
    let results = block_on(admin.delete_topics(
        &refs,
        &AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)),
    ))
    .map_err(|e| unreachable_or(opts, e, "delete topics"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => return Err(KafkaLogError::DeleteTopic { topic, code }),
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = existing(&client)?;
        if left.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(KafkaLogError::DeleteTopic {
                topic: left.join(", "),
                code: RDKafkaErrorCode::RequestTimedOut,
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Commits `offsets` (per partition of `topic`) as the committed offsets of the consumer group
/// in `opts`, outside any group membership: where the group resumes after its topics were
/// rebuilt.
pub fn commit_group_offsets(
    opts: &KafkaOptions,
    topic: &str,
    offsets: &[(crate::core::Partition, crate::core::Offset)],
) -> Result<(), KafkaLogError> {
    use rdkafka::consumer::CommitMode;
    let consumer: BaseConsumer<QuietEof> = opts
        .group_consumer_config()
        .create_with_context(QuietEof)
        .map_err(kafka("create consumer"))?;
    consumer
        .commit(
            &super::ids::partition_list(topic, offsets.iter().copied()),
            CommitMode::Sync,
        )
        .map_err(|e| unreachable_or(opts, e, "commit offsets"))?;
    drop(super::config::Closing::new(consumer));
    Ok(())
}

/// The partitions of `role`'s topic; an error naming it when it does not exist.
pub fn topic_partitions(opts: &KafkaOptions, role: Role) -> Result<PartitionCount, KafkaLogError> {
    let client = opts.metadata_client()?;
    let topic = opts.topic(role);
    partition_count(&client, opts, &topic)?
        .and_then(PartitionCount::new)
        .ok_or(KafkaLogError::MissingTopic { topic })
}

/// N on Kafka: the input topic's partition count, which must equal `expected` when given.
pub fn input_partitions(
    opts: &KafkaOptions,
    expected: Option<PartitionCount>,
) -> Result<PartitionCount, KafkaLogError> {
    let actual = topic_partitions(opts, Role::Events)?;
    match expected {
        Some(n) if n != actual => Err(KafkaLogError::PartitionMismatch {
            topic: opts.topic(Role::Events),
            actual: actual.get(),
            expected: n.get(),
        }),
        _ => Ok(actual),
    }
}
