//! The replay tooling's commands: `export`, `replay` (`--diff`, `--apply`), `repartition`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Instant;

use super::Error;
use super::args::{ExportArgs, RepartitionArgs, ReplayArgs};
use super::options::{Access, Setting, deployment, from_flags};
use super::sources::sources;
use crate::core::changelog::StateRecord;
use crate::core::ownership::Phase;
use crate::core::{PartitionCount, ReservationNo};
use crate::log::topics::{self, Role};
use crate::log::{Deployment, KafkaOptions, OffsetSpec};
use crate::owner::owner_id;
use crate::tools::repartition::{self, data_dir, kafka::Outcome};
use crate::tools::replay::{self as tools_replay, export, rebuild};

/// The topic `export --topic` names: one of ordo's, or (`….repartition`) the staging copy of
/// one of the three a rebuild of N copies.
fn role_of(topic: &str) -> Result<(Role, bool), Error> {
    let (name, staging) = match topic.strip_suffix(topics::STAGING_SUFFIX) {
        Some(name) => (name, true),
        None => (topic, false),
    };
    topics::all()
        .into_iter()
        .find(|d| d.name == name && !(staging && d.role == Role::Owners))
        .map(|d| (d.role, staging))
        .ok_or_else(|| {
            Error::usage(format!(
                "unknown topic `{topic}`; use reservation-events, reservation-state, \
                 reservation-events.dlq or reservation-owners, or on Kafka the staging copy \
                 of one of the first three during a change of N (e.g. \
                 reservation-events.repartition)"
            ))
        })
}

/// `ordo export`.
pub fn export(a: ExportArgs) -> Result<(), Error> {
    let (role, staging) = role_of(&a.topic)?;
    let spec = OffsetSpec::parse(&a.offsets).map_err(Error::Usage)?;
    let logs = deployment(&a.kafka, &a.store, None, None, Access::Read)?
        .read_uncommitted(a.isolation == "read_uncommitted")
        .open()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    export::export(&logs, role, staging, a.partition, spec, a.count, &mut out)?;
    out.flush()?;
    Ok(())
}

/// `ordo replay`.
pub fn replay(a: ReplayArgs) -> Result<(), Error> {
    let spec = OffsetSpec::parse(&a.offsets).map_err(Error::Usage)?;
    if a.apply && !spec.is_everything() {
        return Err(Error::usage("--apply needs a full replay; drop -o"));
    }
    // Only --apply writes.
    let access = if a.apply { Access::Write } else { Access::Read };
    let deployment = deployment(
        &a.kafka,
        &a.store,
        a.topology.count()?,
        a.topology.partitioner,
        access,
    )?;
    let t0 = Instant::now();
    if a.apply {
        let applied =
            tools_replay::apply(&deployment.open()?, &owner_id(), a.overrides.overrides())?;
        report_replay(&applied.replay, t0.elapsed().as_secs_f64());
        eprintln!(
            "ordo: the replayed state of {} reservations is now the live changelog{}",
            applied.replay.states.len(),
            match applied.deleted {
                Some(deleted) => format!(
                    " ({deleted} keys deleted; new epochs {:?})",
                    applied.epochs.iter().map(|e| e.0).collect::<Vec<_>>()
                ),
                None => String::new(),
            }
        );
        return Ok(());
    }
    let logs = match a.diff || a.file.is_none() {
        true => Some(deployment.clone().open()?),
        false => None,
    };
    let result = match (&a.file, &logs) {
        (Some(path), _) => {
            let (n, partitioner) = match &logs {
                Some(logs) => (logs.partitions(), logs.partitioner()),
                None => deployment.layout()?,
            };
            rebuild::replay_file(path, n, partitioner)?
        }
        (None, Some(logs)) => rebuild::replay(logs, spec, None)?,
        (None, None) => unreachable!("the logs are opened unless --file is given"),
    };
    let secs = t0.elapsed().as_secs_f64();
    let live = match (&logs, a.diff) {
        (Some(logs), true) => {
            let mut live = logs.snapshot()?.states;
            // A range replays only some reservations: those are what it can vouch for, so only
            // they are compared (a forged record of a key outside it needs a full --diff).
            if !spec.is_everything() && a.file.is_none() {
                live.retain(|no, _| result.states.contains_key(no));
            }
            Some(live)
        }
        _ => None,
    };
    replay_output(&result, secs, live.as_ref())
}

fn report_replay(result: &rebuild::Replay, secs: f64) {
    eprintln!(
        "ordo: replayed {} records in {secs:.2}s ({:.0} records/s): {} transitions, {} duplicates, {} malformed, {} misrouted, rejects {:?}",
        result.summary.records,
        result.summary.records as f64 / secs.max(1e-9),
        result.summary.applied,
        result.summary.duplicates,
        result.summary.malformed,
        result.summary.misrouted,
        result.summary.rejects
    );
}

/// Prints a replay: the rebuilt state, or with `live` the differences (exit 3 when any).
fn replay_output(
    result: &rebuild::Replay,
    secs: f64,
    live: Option<&BTreeMap<ReservationNo, StateRecord>>,
) -> Result<(), Error> {
    report_replay(result, secs);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(live) = live {
        let differences = rebuild::diff(&result.states, live);
        for d in &differences {
            serde_json::to_writer(&mut out, d).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        if differences.is_empty() {
            eprintln!(
                "ordo: replay equals the live changelog ({} reservations)",
                live.len()
            );
            return Ok(());
        }
        return Err(Error::Differs(differences.len()));
    }
    for record in result.states.values() {
        serde_json::to_writer(&mut out, record).map_err(io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn print_plan(
    out: &mut impl Write,
    what: &dyn std::fmt::Display,
    plan: &repartition::Plan,
) -> io::Result<()> {
    writeln!(
        out,
        "repartition {}: N {} → {} ({})",
        what, plan.from, plan.to, plan.partitioner
    )?;
    let pct = if plan.keys == 0 {
        0.0
    } else {
        plan.keys_moving as f64 * 100.0 / plan.keys as f64
    };
    match &plan.how {
        repartition::How::InPlace => {
            writeln!(
                out,
                "  how       in place: partitions added; the input and the dead letters stay \
                 where they are, only state moves"
            )?;
            writeln!(
                out,
                "  input     {} records not yet processed{}",
                plan.unprocessed,
                if plan.unprocessed > 0 {
                    " (refused: process them first, or pass --allow-unprocessed to rebuild)"
                } else {
                    ""
                }
            )?;
            writeln!(
                out,
                "  keys      {} reservations, {} move to another partition ({pct:.0}%)",
                plan.keys, plan.keys_moving
            )?;
            return writeln!(
                out,
                "  state     records per partition after the move {:?}",
                plan.per_partition
            );
        }
        repartition::How::Rebuild { why } => writeln!(
            out,
            "  how       rebuild ({why}): the topics are copied, created again with {} \
             partitions and refilled",
            plan.to
        )?,
        repartition::How::DataDir => {}
    }
    writeln!(
        out,
        "  input     {} records ({} MiB), {} not yet processed",
        plan.records,
        plan.bytes >> 20,
        plan.unprocessed
    )?;
    writeln!(
        out,
        "  keys      {} keys, {} move to another partition ({pct:.0}%)",
        plan.keys, plan.keys_moving
    )?;
    writeln!(
        out,
        "  new       records per partition {:?}",
        plan.per_partition
    )?;
    writeln!(
        out,
        "  state     {} reservations carried; {} dead letters",
        plan.state_entries, plan.dead_letters
    )
}

/// `ordo repartition`.
pub fn repartition(a: RepartitionArgs) -> Result<(), Error> {
    let to = match (a.to_partitions, a.containers, a.servers) {
        (None, None, None) => {
            return Err(Error::usage(
                "no target; pass --to-partitions M or --containers C --servers S",
            ));
        }
        (p, c, s) => from_flags(
            Setting::new("containers", c),
            Setting::new("servers", s),
            Setting::new("to_partitions", p),
            sources(),
        )
        .map_err(|e| Error::usage(e.to_string()))?
        .ok_or_else(|| Error::usage("pass --to-partitions M or --containers C --servers S"))?,
    };
    // The two strategies: topics rebuilt on Kafka, the data dir moved on the embedded log.
    let dir = match deployment(&a.kafka, &a.store, None, a.partitioner, Access::Write)? {
        Deployment::Kafka { mut options, .. } => {
            // The move routes every key again: with the partitioner the topics were set up with.
            crate::log::settle_partitioner(&mut options, a.partitioner, false)?;
            options.group = a.group.clone();
            return repartition_kafka(&options, to, &a);
        }
        Deployment::Embedded { dir, .. } => dir,
    };
    let dir = &dir;
    let mut out = io::stdout().lock();
    if !a.apply {
        match data_dir::dry_run(dir, to)? {
            None => writeln!(
                out,
                "{} already has {to} partitions; nothing to do",
                dir.display()
            )?,
            Some(plan) => {
                print_plan(&mut out, &dir.display(), &plan)?;
                writeln!(out, "  dry run: pass --apply to do it")?;
            }
        }
        return Ok(());
    }
    let t0 = Instant::now();
    match data_dir::apply(dir, to, &owner_id())? {
        None => writeln!(
            out,
            "{} already has {to} partitions; nothing to do",
            dir.display()
        )?,
        Some(plan) => {
            print_plan(&mut out, &dir.display(), &plan)?;
            writeln!(
                out,
                "  done      in {:.2}s; check OK (per-key input order, state and dead letters equal); \
                 the previous generation is kept as {}",
                t0.elapsed().as_secs_f64(),
                data_dir::backup_name(plan.from)
            )?;
        }
    }
    Ok(())
}

/// `ordo repartition --brokers`.
fn repartition_kafka(
    kafka: &KafkaOptions,
    to: PartitionCount,
    a: &RepartitionArgs,
) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    let what = format!("of the Kafka deployment at {}", kafka.brokers);
    if !a.apply {
        if let Some(r) = repartition::kafka::under_way(kafka)? {
            writeln!(
                out,
                "a change of N from {} to {} is under way (phase {:?}, by {}); \
                 `ordo repartition --brokers ... --to-partitions {} --apply` finishes it",
                r.from, r.to, r.phase, r.by, r.to
            )?;
            return Ok(());
        }
        let plan = repartition::kafka::plan(kafka, to, a.rebuild, a.allow_unprocessed)?;
        if plan.from == to {
            writeln!(
                out,
                "the deployment already has {to} partitions; nothing to do"
            )?;
            return Ok(());
        }
        print_plan(&mut out, &what, &plan)?;
        writeln!(
            out,
            "  dry run: pass --apply to do it (stop every member first)"
        )?;
        return Ok(());
    }
    let t0 = Instant::now();
    match repartition::kafka::apply(
        kafka,
        to,
        &owner_id(),
        a.overrides.overrides(),
        a.allow_unprocessed,
        a.rebuild,
    )? {
        Outcome::NothingToDo => writeln!(
            out,
            "the deployment already has {to} partitions; nothing to do"
        )?,
        Outcome::Done { plan, resumed_at } => {
            // Resumed after the rebuild, the move's figures are not known any more.
            if resumed_at != Some(Phase::Rebuilt) {
                print_plan(&mut out, &what, &plan)?;
            }
            if let Some(phase) = resumed_at {
                writeln!(
                    out,
                    "  resumed   an interrupted change, from phase {phase:?}"
                )?;
            }
            writeln!(
                out,
                "  done      in {:.2}s; check OK (state equal); start the members with N = {to}, \
                 and switch producers to N = {to}",
                t0.elapsed().as_secs_f64()
            )?;
        }
    }
    Ok(())
}
