//! `ordo repartition --brokers`: change N of a Kafka deployment, keeping every key's order,
//! its state and the dead letters.
//!
//! Growing, where the broker can add partitions, is done in place ([`super::grow`]): only state
//! moves. Otherwise — shrinking (Kafka cannot remove partitions), `--rebuild`,
//! `--allow-unprocessed`, or a broker without CreatePartitions (tansu 0.6) — the three
//! N-partitioned topics are rebuilt through staging copies, and the topic names stay
//! (producers only switch to the new N):
//!
//! 1. **copying**: the input and the dead letters are copied as they are into staging topics
//!    (`<topic>.repartition`), each record with its original offset in a header, and the
//!    changelog's current state (one record per reservation) into a third; the originals are
//!    untouched.
//! 2. **copied**: the originals are deleted and created again with M partitions, then filled
//!    from the staging copies: every input record routed by its key with N = M, each old
//!    partition in offset order and the processed records first, so each key keeps its order;
//!    dead letters routed by key with their headers; each reservation's state record carried
//!    to its new partition under an epoch above every old one, after a marker that resumes
//!    after the partition's processed records. The group's offsets are committed there. The
//!    new state is read back and must equal the old.
//! 3. **rebuilt**: the staging topics are deleted; then **done**.
//!
//! An input grown in place holds several layers ([`crate::core::ownership::Layer`]): the rebuild routes them layer by
//! layer, so each key keeps its order, and leaves one layer.
//!
//! Each phase is recorded on `reservation-owners` before the next begins; killed at any
//! moment, a rerun carries on from the last phase recorded (a phase is redone from its start),
//! and `ordo run` refuses to start until the record says done.

use super::staging::{copy_to_staging, rebuild_topics, staging, written_since};
use super::{How, Plan, grow, route, stall_at};
use crate::core::ownership::{Phase, REPARTITION_KEY, RepartitionRecord};
use crate::core::{Partition, PartitionCount};
use crate::log::kafka::{
    BulkReader, Changelog, KafkaOptions, KafkaProducer, can_add_partitions, check_topics,
    delete_topics, partition_count, read_changelog, read_owners,
};
use crate::log::now_millis;
use crate::log::topics::Role;
use crate::tools::deployment::{
    KafkaToolError, LeaseHeld, Overrides, record, refuse_held, write_owners,
};

/// The topics rebuilt with M partitions, in order: input, changelog, dead letters.
pub(super) const ROLES: [Role; 3] = [Role::Events, Role::State, Role::DeadLetters];

/// What `repartition --brokers --apply` found or did.
#[derive(Debug)]
pub enum Outcome {
    /// The deployment already has M partitions and no change is under way.
    NothingToDo,
    /// The change done (or finished, when a rerun picked it up at `resumed_at`).
    Done {
        plan: Plan,
        resumed_at: Option<Phase>,
    },
}

/// The current N of the deployment: the input topic's partition count.
fn current_n(opts: &KafkaOptions) -> Result<PartitionCount, KafkaToolError> {
    let topic = opts.topic(Role::Events);
    let client = opts.metadata_client()?;
    partition_count(&client, opts, &topic)?
        .and_then(PartitionCount::new)
        .ok_or_else(|| {
            KafkaToolError::Refused(format!(
                "topic {topic} does not exist; run `ordo topics apply --brokers ...` first"
            ))
        })
}

/// N of a deployment no change of N is under way in, once its topics are as `topics/` says
/// at that N (the check `run` makes): a layout that is already wrong is named at once, before
/// anything is read or moved.
fn settled_n(opts: &KafkaOptions) -> Result<PartitionCount, KafkaToolError> {
    let from = current_n(opts)?;
    check_topics(opts, from)?;
    Ok(from)
}

/// The change of N under way, per `reservation-owners`, if any.
pub fn under_way(opts: &KafkaOptions) -> Result<Option<RepartitionRecord>, KafkaToolError> {
    Ok(read_owners(opts)?
        .repartition
        .filter(RepartitionRecord::in_progress))
}

/// How the move from `from` to `to` partitions goes: in place when growing on a broker that
/// can add partitions, unless `rebuild` or `allow_unprocessed` (which only a rebuild can do)
/// asks otherwise.
pub fn how(
    opts: &KafkaOptions,
    from: PartitionCount,
    to: PartitionCount,
    rebuild: bool,
    allow_unprocessed: bool,
) -> Result<How, KafkaToolError> {
    let why = if to.get() < from.get() {
        "Kafka cannot remove partitions".to_owned()
    } else if rebuild {
        "asked with --rebuild".to_owned()
    } else if allow_unprocessed {
        "--allow-unprocessed: only a rebuild moves unprocessed input".to_owned()
    } else {
        match can_add_partitions(opts, &opts.topic(Role::Events), to)? {
            Ok(()) => return Ok(How::InPlace),
            Err(code) => format!("the broker cannot add partitions: {code:?}"),
        }
    };
    Ok(How::Rebuild { why })
}

/// The plan of moving the deployment to `to` partitions (the dry run); changes nothing. The
/// rebuild's plan reads the whole input; the in-place one only the changelog and what is not
/// processed yet.
pub fn plan(
    opts: &KafkaOptions,
    to: PartitionCount,
    rebuild: bool,
    allow_unprocessed: bool,
) -> Result<Plan, KafkaToolError> {
    let from = settled_n(opts)?;
    if from == to {
        return Ok(Plan::empty(from, to, opts.partitioner));
    }
    match how(opts, from, to, rebuild, allow_unprocessed)? {
        How::InPlace => grow::plan(opts, from, to),
        how => Ok(Plan {
            how,
            ..survey(opts, to)?.0
        }),
    }
}

/// The rebuild's plan, and the changelog it read.
fn survey(opts: &KafkaOptions, to: PartitionCount) -> Result<(Plan, Changelog), KafkaToolError> {
    let from = current_n(opts)?;
    let changelog = read_changelog(opts, &opts.topic(Role::State), from)?;
    let mut plan = Plan::empty(from, to, opts.partitioner);
    for (p, states) in changelog.states.iter().enumerate() {
        plan.state_entries += states.len() as u64;
        plan.keys += states.len() as u64;
        plan.keys_moving += states
            .keys()
            .filter(|k| route(k.as_str().as_bytes(), b"", opts.partitioner, to).index() != p)
            .count() as u64;
    }
    let partitions: Vec<Partition> = from.iter().collect();
    BulkReader::new(opts, &opts.topic(Role::Events))?.read_to_end(&partitions, |p, r| {
        let Some(r) = r else { return };
        plan.records += 1;
        plan.unprocessed += u64::from(r.offset >= changelog.resume[p.index()]);
        plan.bytes += (r.key.len() + r.value.len()) as u64;
        plan.per_partition[route(&r.key, &r.value, opts.partitioner, to).index()] += 1;
    })?;
    BulkReader::new(opts, &opts.topic(Role::DeadLetters))?.read_to_end(&partitions, |_, r| {
        plan.dead_letters += u64::from(r.is_some())
    })?;
    Ok((plan, changelog))
}

/// Moves the deployment to `to` partitions, or finishes a move to `to` that was interrupted.
pub fn apply(
    opts: &KafkaOptions,
    to: PartitionCount,
    by: &str,
    overrides: Overrides,
    allow_unprocessed: bool,
    rebuild: bool,
) -> Result<Outcome, KafkaToolError> {
    // One tool that changes the deployment at a time: taken before anything is read for the
    // move, checked again before each phase.
    let lease = LeaseHeld::take(
        opts,
        &format!("ordo repartition --to-partitions {to} --apply"),
        overrides.take_over_lease,
    )?;
    let owners = read_owners(opts)?;
    let producer = KafkaProducer::new(opts)?;
    let (record, resumed_at, plan, changelog) = match owners
        .repartition
        .clone()
        .filter(|r| r.in_progress())
    {
        Some(r) if r.to != to => {
            return Err(KafkaToolError::Refused(format!(
                "a change of N from {} to {} is under way; finish it first with \
                 --to-partitions {} --apply",
                r.from, r.to, r.to
            )));
        }
        Some(r) => {
            eprintln!(
                "ordo: carrying on with the change of N from {} to {} (phase {:?})",
                r.from, r.to, r.phase
            );
            let phase = r.phase;
            if matches!(phase, Phase::Growing | Phase::Moving) {
                let plan = grow::carry_on(opts, &producer, r, None, &lease)?;
                return Ok(Outcome::Done {
                    plan,
                    resumed_at: Some(phase),
                });
            }
            let plan = Plan {
                how: How::Rebuild {
                    why: "carrying on".into(),
                },
                ..Plan::empty(r.from, to, opts.partitioner)
            };
            (r, Some(phase), plan, None)
        }
        None => {
            let from = settled_n(opts)?;
            if from == to {
                return Ok(Outcome::NothingToDo);
            }
            refuse_held(&owners, overrides.assume_stopped)?;
            let prior = owners.repartition.map(|r| r.layers).unwrap_or_default();
            let why = match how(opts, from, to, rebuild, allow_unprocessed)? {
                How::InPlace => {
                    let (r, plan, changelog) = grow::start(opts, &producer, from, to, by, prior)?;
                    let plan = grow::carry_on(opts, &producer, r, Some((plan, changelog)), &lease)?;
                    return Ok(Outcome::Done {
                        plan,
                        resumed_at: None,
                    });
                }
                How::Rebuild { why } => why,
                How::DataDir => "a data dir".into(),
            };
            let (plan, changelog) = survey(opts, to)?;
            if plan.unprocessed > 0 && !allow_unprocessed {
                return Err(KafkaToolError::Refused(format!(
                    "{} input records are not processed yet; run the members at N = {from} until \
                     idle (`ordo run --until-idle`), or pass --allow-unprocessed to move them \
                     unprocessed",
                    plan.unprocessed
                )));
            }
            let r = RepartitionRecord {
                from,
                to,
                phase: Phase::Copying,
                epoch: changelog.max_epoch().successor(),
                by: by.to_owned(),
                ts: now_millis(),
                layers: prior,
                copied: None,
            };
            write_record(opts, &producer, &r)?;
            (
                r,
                None,
                Plan {
                    how: How::Rebuild { why },
                    ..plan
                },
                Some(changelog),
            )
        }
    };
    let (mut record, mut changelog) = (record, changelog);
    let from = record.from;
    let mut plan = plan;
    loop {
        lease.check()?;
        match record.phase {
            Phase::Copying => {
                // The changelog already read serves the first attempt; another reads it again.
                let mut read = changelog.take();
                record.copied = Some(over_again(|| {
                    copy_to_staging(opts, from, plan.copied(), read.take())
                })?);
            }
            Phase::Copied => {
                stall_at("copied");
                lease.check()?;
                // Right before the originals are deleted: nothing may have been written to
                // them since the copy, and no member may be running.
                if let Some((topic, p)) = record
                    .copied
                    .as_ref()
                    .map(|c| written_since(opts, c))
                    .transpose()?
                    .flatten()
                {
                    record.phase = Phase::Copying;
                    record.copied = None;
                    record.ts = now_millis();
                    write_record(opts, &producer, &record)?;
                    return Err(KafkaToolError::Refused(format!(
                        "{topic} partition {p} was written to after it was copied (a producer, \
                         a gateway or a member still running); nothing was deleted: stop them, \
                         then run `ordo repartition --brokers ... --to-partitions {to} --apply` \
                         again to copy anew and finish the move"
                    )));
                }
                refuse_held(&read_owners(opts)?, overrides.assume_stopped).map_err(|e| {
                    KafkaToolError::Refused(format!(
                        "{e}; nothing was deleted: then run `ordo repartition --brokers ... \
                         --to-partitions {to} --apply` again to finish the move"
                    ))
                })?;
                plan = over_again(|| rebuild_topics(opts, &record, plan.clone()))?
            }
            Phase::Rebuilt => {
                let names: Vec<String> = ROLES.iter().map(|r| staging(opts, *r)).collect();
                delete_topics(opts, &names)?;
            }
            Phase::Done => break,
            Phase::Growing | Phase::Moving => {
                return Err(KafkaToolError::Check(format!(
                    "phase {:?} belongs to growing in place, not to a rebuild",
                    record.phase
                )));
            }
        }
        record.phase = match record.phase {
            Phase::Copying => Phase::Copied,
            Phase::Copied => Phase::Rebuilt,
            Phase::Rebuilt | Phase::Done | Phase::Growing | Phase::Moving => Phase::Done,
        };
        if record.phase == Phase::Done {
            // The rebuilt input is routed with M throughout: one layer.
            record.layers.clear();
        }
        record.ts = now_millis();
        write_record(opts, &producer, &record)?;
        tracing::info!(phase = ?record.phase, "repartition phase recorded");
    }
    producer.flush();
    Ok(Outcome::Done { plan, resumed_at })
}

/// How often a phase that recreates topics is started over after a record landed out of place.
const ATTEMPTS: u32 = 3;

/// Runs a phase that deletes its topics, creates them again and writes them from sources it
/// leaves intact (so running it again is what a rerun of the command does), starting it over
/// when a record landed where it should not: seen once on Apache Kafka 4.4 under load, right
/// after the topics were created again.
fn over_again<T>(
    mut phase: impl FnMut() -> Result<T, KafkaToolError>,
) -> Result<T, KafkaToolError> {
    let mut attempt = 1;
    loop {
        match phase() {
            Err(KafkaToolError::Log(crate::log::LogsError::Kafka(
                e @ crate::log::kafka::KafkaLogError::Misplaced { .. },
            ))) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "repartition: starting the phase over");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Records `r`, the change of N's phase, on `reservation-owners`.
pub(super) fn write_record(
    opts: &KafkaOptions,
    producer: &KafkaProducer,
    r: &RepartitionRecord,
) -> Result<(), KafkaToolError> {
    let mut rec = record(REPARTITION_KEY.as_bytes().to_vec(), r.to_json());
    rec.timestamp = r.ts;
    write_owners(opts, producer, rec)
}

#[cfg(test)]
mod over_again_tests {
    use super::*;
    use crate::log::kafka::KafkaLogError;

    fn misplaced() -> KafkaToolError {
        KafkaLogError::Misplaced {
            landed: 0,
            expected: 1,
        }
        .into()
    }

    /// A phase is started over after a record landed out of place, at most `ATTEMPTS` times in
    /// all; any other error ends it at once.
    #[test]
    fn a_misplaced_record_starts_the_phase_over_a_bounded_number_of_times() {
        let mut runs = 0;
        let r = over_again(|| {
            runs += 1;
            if runs < ATTEMPTS {
                Err(misplaced())
            } else {
                Ok(runs)
            }
        });
        assert_eq!(r.unwrap(), ATTEMPTS);
        let mut runs = 0;
        let r: Result<(), _> = over_again(|| {
            runs += 1;
            Err(misplaced())
        });
        assert!(matches!(r, Err(KafkaToolError::Log(_))));
        assert_eq!(runs, ATTEMPTS);
        let mut runs = 0;
        let r: Result<(), _> = over_again(|| {
            runs += 1;
            Err(KafkaToolError::Check("no".into()))
        });
        assert!(matches!(r, Err(KafkaToolError::Check(_))));
        assert_eq!(runs, 1);
    }
}
