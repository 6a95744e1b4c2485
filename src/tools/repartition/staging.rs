//! The rebuild of a Kafka deployment's three N-partitioned topics through staging copies
//! (phases 1 and 2 of [`super::kafka`]): the originals copied as they are into
//! `<topic>.repartition`, then deleted, created again with M partitions and filled from the
//! copies, every key in its new partition in its old order.

use std::collections::{HashMap, HashSet};

use super::kafka::ROLES;
use super::{Plan, route};
use crate::core::changelog::{EpochMarker, StateRecord};
use crate::core::ownership::{Copied, RepartitionRecord, layer_of};
use crate::core::record::{NewRecord, Record};
use crate::core::step::MISROUTED_BEFORE;
use crate::core::{Offset, Partition, PartitionCount};
use crate::log::kafka::admin::TopicSpec;
use crate::log::kafka::{
    BulkReader, Changelog, KafkaOptions, KafkaProducer, Sender, commit_group_offsets,
    create_topics, delete_topics, read_at, read_changelog,
};
use crate::log::topics::Role;
use crate::tools::deployment::{KafkaToolError, record};
use crate::tools::progress::Progress;
use crate::tools::replay::rebuild;

/// The header that keeps a staged input record's original offset.
const STAGED_OFFSET: &str = "ordo.staged.offset";

/// The staging copy of `role`'s topic.
pub(super) fn staging(opts: &KafkaOptions, role: Role) -> String {
    opts.staging_topic(role)
}

/// Staging topics: no compaction, no retention (the records keep their original times).
fn staging_config() -> Vec<(String, String)> {
    vec![
        ("cleanup.policy".into(), "delete".into()),
        ("retention.ms".into(), "-1".into()),
    ]
}

/// Phase 1: the originals copied as they are into fresh staging topics; returns what was
/// copied.
pub(super) fn copy_to_staging(
    opts: &KafkaOptions,
    from: PartitionCount,
    total: u64,
    changelog: Option<Changelog>,
) -> Result<Copied, KafkaToolError> {
    let names: Vec<String> = ROLES.iter().map(|r| staging(opts, *r)).collect();
    delete_topics(opts, &names)?;
    let specs: Vec<TopicSpec> = names
        .iter()
        .map(|n| TopicSpec {
            name: n.clone(),
            partitions: from.get(),
            config: staging_config(),
        })
        .collect();
    create_topics(opts, &specs)?;
    // A producer made now knows the new topics' partitions.
    let producer = &KafkaProducer::new(opts)?;
    let partitions: Vec<Partition> = from.iter().collect();
    let (events, dead) = (
        staging(opts, Role::Events),
        staging(opts, Role::DeadLetters),
    );
    let mut progress = Progress::new("repartition: copying to staging", total);
    let mut sent = |n| progress.add(n);
    let mut copied = Copied {
        events_end: vec![Offset(0); from.get() as usize],
        dead_letters_end: vec![Offset(0); from.get() as usize],
        ..Copied::default()
    };
    for (role, to) in [(Role::Events, &events), (Role::DeadLetters, &dead)] {
        let mut sender = Sender::new(producer, Some(from), Some(&mut sent));
        let mut failed = None;
        let (count, ends) = match role {
            Role::Events => (&mut copied.records, &mut copied.events_end),
            _ => (&mut copied.dead_letters, &mut copied.dead_letters_end),
        };
        BulkReader::new(opts, &opts.topic(role))?.read_to_end(&partitions, |p, r| {
            let Some(mut r) = r else { return };
            if failed.is_some() {
                return;
            }
            *count += 1;
            ends[p.index()] = r.offset.next().unwrap_or(r.offset);
            if role == Role::Events {
                r.headers
                    .push((STAGED_OFFSET.to_owned(), r.offset.0.to_string()));
            }
            if let Err(e) = sender.push(to, p, new_record(r)) {
                failed = Some(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        sender.finish()?;
    }
    // The changelog's current state: one record per reservation, in its partition (as read
    // for the plan: no member has written since, or the change would have been refused).
    let changelog = match changelog {
        Some(c) => c,
        None => read_changelog(opts, &opts.topic(Role::State), from)?,
    };
    let state = staging(opts, Role::State);
    let mut sender = Sender::new(producer, Some(from), Some(&mut sent));
    for (p, states) in changelog.states.iter().enumerate() {
        copied.reservations += states.len() as u64;
        for r in states.values() {
            sender.push(
                &state,
                Partition(p as u32),
                record(r.reservation_no.as_str().as_bytes().to_vec(), r.to_json()),
            )?;
        }
    }
    sender.finish()?;
    // Where each old partition's processed input ended, kept with the staged state as a
    // marker per partition.
    let mut sender = Sender::new(producer, None, None);
    for p in from.iter() {
        let marker = EpochMarker {
            epoch: changelog.epochs[p.index()],
            partition: p,
            resume_offset: changelog.resume[p.index()],
            owner: "ordo repartition (staged)".into(),
            carried: false,
            replayed: false,
        };
        sender.push(
            &state,
            p,
            record(marker.key().into_bytes(), marker.to_json()),
        )?;
    }
    sender.finish()?;
    progress.finish();
    Ok(copied)
}

/// Whether a record was written to the original input or dead letters after they were
/// copied (a producer, a gateway or a member still running): the first record past the copy's
/// end of any partition, `None` when there is none.
pub(super) fn written_since(
    opts: &KafkaOptions,
    copied: &Copied,
) -> Result<Option<(String, Partition)>, KafkaToolError> {
    for (role, ends) in [
        (Role::Events, &copied.events_end),
        (Role::DeadLetters, &copied.dead_letters_end),
    ] {
        let topic = opts.topic(role);
        for (p, end) in ends.iter().enumerate() {
            let p = Partition(p as u32);
            if read_at(opts, &topic, p, *end, LOOK_PAST_END)?.is_some() {
                return Ok(Some((topic, p)));
            }
        }
    }
    Ok(None)
}

/// How long the look for records past the copy's end waits for the broker to answer.
const LOOK_PAST_END: std::time::Duration = std::time::Duration::from_secs(10);

fn new_record(r: Record) -> NewRecord {
    NewRecord {
        key: r.key,
        value: r.value,
        timestamp: r.timestamp,
        headers: r.headers,
    }
}

/// Phase 2: the originals deleted, created with M partitions and filled from staging.
pub(super) fn rebuild_topics(
    opts: &KafkaOptions,
    rec: &RepartitionRecord,
    mut plan: Plan,
) -> Result<Plan, KafkaToolError> {
    let (from, to) = (rec.from, rec.to);
    let partitioner = opts.partitioner;
    // The old state and where each old partition's processed input ended.
    let staged = read_changelog(opts, &staging(opts, Role::State), from)?;
    let resume = staged.resume.clone();
    let old_state = staged.into_all();
    // Where each state record's source event was, to find where it lands.
    let sources: HashSet<(Partition, u64)> = old_state
        .values()
        .map(|r| (r.source_partition, r.source_offset.0))
        .collect();

    let names: Vec<String> = ROLES.iter().map(|r| opts.topic(*r)).collect();
    delete_topics(opts, &names)?;
    let specs: Vec<TopicSpec> = ROLES
        .iter()
        .map(|r| {
            let d = opts
                .topic_defs()
                .into_iter()
                .find(|d| d.role == *r)
                .expect("every role");
            TopicSpec {
                name: d.name,
                partitions: to.get(),
                config: d.config.into_iter().collect(),
            }
        })
        .collect();
    create_topics(opts, &specs)?;
    // A producer made now knows the new topics' partitions.
    let producer = &KafkaProducer::new(opts)?;

    // The input: processed records first, then the rest, each old partition in offset order.
    let partitions: Vec<Partition> = from.iter().collect();
    let events = opts.topic(Role::Events);
    let mut landed: HashMap<(Partition, u64), u64> = HashMap::new();
    let mut processed = vec![0u64; to.get() as usize];
    let mut progress = Progress::new("repartition: rebuilding", plan.copied());
    let mut sent = |n| progress.add(n);
    let mut sender = Sender::new(producer, Some(to), Some(&mut sent));
    let (mut records, mut unprocessed) = (0u64, 0u64);
    // Layer by layer within each pass, so a key's records under an older N come first.
    let layers = &rec.layers;
    let passes = [true, false]
        .into_iter()
        .flat_map(|processed| (0..layers.len().max(1)).map(move |layer| (processed, layer)));
    for (pass_processed, layer) in passes {
        if !pass_processed && unprocessed == 0 {
            break;
        }
        let mut failed = None;
        BulkReader::new(opts, &staging(opts, Role::Events))?.read_to_end(&partitions, |p, r| {
            let Some(mut r) = r else { return };
            if failed.is_some() {
                return;
            }
            let original = take_staged_offset(&mut r);
            if layer_of(layers, p, Offset(original)) != layer {
                return;
            }
            if (original < resume[p.index()].0) != pass_processed {
                unprocessed += u64::from(pass_processed);
                return;
            }
            // Misrouted where it was (dead-lettered, never applied): it stays misrouted.
            let old_n = layers.get(layer).map_or(from, |l| l.partitions);
            if route(&r.key, &r.value, partitioner, old_n) != p {
                r.headers
                    .push((MISROUTED_BEFORE.to_owned(), p.0.to_string()));
            }
            let q = route(&r.key, &r.value, partitioner, to);
            match sender.push(&events, q, new_record(r)) {
                Ok(at) => {
                    records += 1;
                    if pass_processed {
                        processed[q.index()] += 1;
                        if sources.contains(&(p, original)) {
                            landed.insert((p, original), at.unwrap_or(0));
                        }
                    }
                }
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    sender.finish()?;
    // Dead letters, routed by key, with their headers (which name the old layout).
    let dead = opts.topic(Role::DeadLetters);
    let mut dead_letters = 0u64;
    let mut failed = None;
    let mut sender = Sender::new(producer, Some(to), Some(&mut sent));
    BulkReader::new(opts, &staging(opts, Role::DeadLetters))?.read_to_end(
        &partitions,
        |_, r| {
            let Some(r) = r else { return };
            if failed.is_some() {
                return;
            }
            let q = route(&r.key, &r.value, partitioner, to);
            dead_letters += 1;
            if let Err(e) = sender.push(&dead, q, new_record(r)) {
                failed = Some(e);
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    sender.finish()?;
    let mut sender = Sender::new(producer, Some(to), Some(&mut sent));
    // The changelog: per new partition a marker that resumes after its processed records,
    // then each reservation's state carried over under the same epoch.
    let state = opts.topic(Role::State);
    for q in to.iter() {
        let marker = EpochMarker {
            epoch: rec.epoch,
            partition: q,
            resume_offset: Offset(processed[q.index()]),
            owner: rec.by.clone(),
            carried: true,
            replayed: false,
        };
        sender.push(
            &state,
            q,
            record(marker.key().into_bytes(), marker.to_json()),
        )?;
    }
    for old in old_state.values() {
        let q = route(old.reservation_no.as_str().as_bytes(), b"", partitioner, to);
        let source = landed
            .get(&(old.source_partition, old.source_offset.0))
            .copied()
            .unwrap_or(0);
        let carried = StateRecord {
            source_partition: q,
            source_offset: Offset(source),
            epoch: rec.epoch,
            ..old.clone()
        };
        sender.push(
            &state,
            q,
            record(
                carried.reservation_no.as_str().as_bytes().to_vec(),
                carried.to_json(),
            ),
        )?;
    }
    sender.finish()?;
    progress.finish();

    // The group resumes after each partition's processed records.
    let offsets: Vec<(Partition, Offset)> = to
        .iter()
        .map(|q| (q, Offset(processed[q.index()])))
        .collect();
    commit_group_offsets(opts, &events, &offsets)?;

    // Check: the new state equals the old, and the new topics hold what the originals held
    // (not only what staging holds).
    let new_state = read_changelog(opts, &state, to)?.into_all();
    if let Some(c) = &rec.copied {
        let counts = [
            ("input records", records, c.records),
            ("dead letters", dead_letters, c.dead_letters),
            ("reservations", new_state.len() as u64, c.reservations),
        ];
        if let Some((what, now, then)) = counts.into_iter().find(|(_, now, then)| now != then) {
            return Err(KafkaToolError::Check(format!(
                "repartition check failed: the rebuilt topics hold {now} {what}, the originals \
                 held {then}; the staging topics are kept, rerun to rebuild again"
            )));
        }
    }
    let differences = rebuild::diff(&new_state, &old_state);
    if let Some(d) = differences.first() {
        return Err(KafkaToolError::Check(format!(
            "repartition check failed: {} reservations differ after the move, first {}; the \
             staging topics are kept, rerun to rebuild again",
            differences.len(),
            d.reservation_no
        )));
    }
    plan.keys_moving = old_state
        .values()
        .filter(|r| {
            route(r.reservation_no.as_str().as_bytes(), b"", partitioner, to) != r.source_partition
        })
        .count() as u64;
    plan.records = records;
    plan.unprocessed = unprocessed;
    plan.dead_letters = dead_letters;
    plan.state_entries = new_state.len() as u64;
    plan.keys = new_state.len() as u64;
    plan.per_partition = processed;
    Ok(plan)
}

/// The staged input record's original offset, its header removed.
fn take_staged_offset(r: &mut Record) -> u64 {
    let at = r.headers.iter().position(|(k, _)| k == STAGED_OFFSET);
    match at {
        Some(i) => r.headers.remove(i).1.parse().unwrap_or(r.offset.0),
        None => r.offset.0,
    }
}
