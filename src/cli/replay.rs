//! The replay tooling's commands: `export`, `replay` (`--diff`, `--apply`), `repartition`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Instant;

use super::Error;
use super::args::{ExportArgs, RepartitionArgs, ReplayArgs};
use super::options::{Setting, from_flags, kafka_partitions};
use super::sources::sources;
use crate::core::changelog::StateRecord;
use crate::core::ownership::Phase;
use crate::core::{PartitionCount, ReservationNo};
use crate::log::embedded::{DB_FILE, EmbeddedLog, OpenOptions};
use crate::log::kafka;
use crate::log::topics::{self, Role};
use crate::owner::owner_id;
use crate::tools::replay::kafka::{self as kafka_tool, repartition::Outcome};
use crate::tools::replay::{OffsetSpec, export, rebuild, repartition};

fn role_of(topic: &str) -> Result<Role, Error> {
    topics::all()
        .into_iter()
        .find(|d| d.name == topic)
        .map(|d| d.role)
        .ok_or_else(|| {
            Error::usage(format!(
                "unknown topic `{topic}`; use reservation-events, reservation-state, \
                 reservation-events.dlq or reservation-owners"
            ))
        })
}

/// `ordo export`.
pub fn export(a: ExportArgs) -> Result<(), Error> {
    let role = role_of(&a.topic)?;
    let spec = OffsetSpec::parse(&a.offsets).map_err(Error::Usage)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some(kafka) = a.kafka.options(None)? {
        let topic = kafka.topic(role);
        export::export_kafka(&kafka, &topic, a.partition, spec, a.count, &mut out)?;
        out.flush()?;
        return Ok(());
    }
    let log = EmbeddedLog::open(&a.store.data_dir, OpenOptions::reading())?;
    export::export(&log, role, a.partition, spec, a.count, &mut out)?;
    out.flush()?;
    Ok(())
}

/// `ordo replay`.
pub fn replay(a: ReplayArgs) -> Result<(), Error> {
    let spec = OffsetSpec::parse(&a.offsets).map_err(Error::Usage)?;
    if let Some(kafka) = a.kafka.options(a.topology.partitioner)? {
        let n = kafka_partitions(&kafka, a.topology.count()?)?;
        if a.apply {
            if !spec.is_everything() {
                return Err(Error::usage("--apply needs a full replay; drop -o"));
            }
            let t0 = Instant::now();
            let applied = kafka_tool::apply_replay(&kafka, n, &owner_id(), a.assume_stopped)?;
            report_replay(&applied.replay, t0.elapsed().as_secs_f64());
            eprintln!(
                "ordo: the replayed state of {} reservations is now the live changelog ({} keys \
                 deleted; new epochs {:?})",
                applied.replay.states.len(),
                applied.deleted,
                applied.epochs.iter().map(|e| e.0).collect::<Vec<_>>()
            );
            return Ok(());
        }
        let t0 = Instant::now();
        let result = match &a.file {
            Some(path) => rebuild::replay_file(path, n, kafka.partitioner)?,
            None => rebuild::replay_kafka(&kafka, n, spec)?,
        };
        let live = if a.diff {
            Some(kafka::snapshot(&kafka)?.states)
        } else {
            None
        };
        return replay_output(&result, t0.elapsed().as_secs_f64(), live.as_ref());
    }
    let needs_log = a.diff || a.apply || a.file.is_none();
    let log = if needs_log {
        Some(EmbeddedLog::open(
            &a.store.data_dir,
            OpenOptions {
                // Only --apply writes.
                read_only: !a.apply,
                ..a.topology.open_options(false)?
            },
        )?)
    } else {
        None
    };
    let t0 = Instant::now();
    let result = match (&a.file, &log) {
        (Some(path), _) => {
            let n = match &log {
                Some(l) => l.partitions(),
                None => a
                    .topology
                    .count()?
                    .unwrap_or(PartitionCount::new(1).expect("1 > 0")),
            };
            let partitioner = log
                .as_ref()
                .map_or(a.topology.partitioner.unwrap_or_default(), |l| {
                    l.partitioner()
                });
            rebuild::replay_file(path, n, partitioner)?
        }
        (None, Some(log)) => {
            if a.apply && !spec.is_everything() {
                return Err(Error::usage("--apply needs a full replay; drop -o"));
            }
            rebuild::replay_log(log, spec, None)?
        }
        (None, None) => unreachable!("a log is opened unless --file is given"),
    };
    let secs = t0.elapsed().as_secs_f64();
    if a.apply {
        let log = log.as_ref().expect("--apply opens the log");
        report_replay(&result, secs);
        rebuild::apply(log, &result, &owner_id())?;
        eprintln!(
            "ordo: the replayed state of {} reservations is now the live changelog",
            result.states.len()
        );
        return Ok(());
    }
    let live = match (&log, a.diff) {
        (Some(log), true) => Some(log.snapshot()?.states),
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
    writeln!(
        out,
        "  input     {} records ({} MiB), {} not yet processed",
        plan.records,
        plan.bytes >> 20,
        plan.unprocessed
    )?;
    let pct = if plan.keys == 0 {
        0.0
    } else {
        plan.keys_moving as f64 * 100.0 / plan.keys as f64
    };
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
    if let Some(kafka) = a.kafka.options(a.partitioner)? {
        return repartition_kafka(&kafka, to, &a);
    }
    let dir = &a.store.data_dir;
    let mut out = io::stdout().lock();
    if !a.apply {
        let log = EmbeddedLog::open(dir, OpenOptions::reading())?;
        if log.partitions() == to {
            writeln!(
                out,
                "{} already has {to} partitions; nothing to do",
                dir.display()
            )?;
            return Ok(());
        }
        print_plan(&mut out, &dir.display(), &repartition::plan(&log, to)?)?;
        writeln!(out, "  dry run: pass --apply to do it")?;
        return Ok(());
    }
    let t0 = Instant::now();
    match repartition::apply(dir, to, &owner_id())? {
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
                 the previous generation is kept as {}.n{}.bak",
                t0.elapsed().as_secs_f64(),
                DB_FILE,
                plan.from
            )?;
        }
    }
    Ok(())
}

/// `ordo repartition --brokers`.
fn repartition_kafka(
    kafka: &kafka::KafkaOptions,
    to: PartitionCount,
    a: &RepartitionArgs,
) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    let what = format!("of the Kafka deployment at {}", kafka.brokers);
    if !a.apply {
        let owners = kafka::read_owners(kafka)?;
        if let Some(r) = owners.repartition.filter(|r| r.in_progress()) {
            writeln!(
                out,
                "a change of N from {} to {} is under way (phase {:?}, by {}); \
                 `ordo repartition --brokers ... --to-partitions {} --apply` finishes it",
                r.from, r.to, r.phase, r.by, r.to
            )?;
            return Ok(());
        }
        let plan = kafka_tool::repartition::plan(kafka, to)?;
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
    match kafka_tool::repartition::apply(
        kafka,
        to,
        &owner_id(),
        a.assume_stopped,
        a.allow_unprocessed,
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
