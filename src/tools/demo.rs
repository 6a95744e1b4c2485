//! `ordo demo`: one command that shows the whole path on the embedded log: generate a realistic
//! workload (with malformed lines mixed in), append it, run every partition until idle, and
//! check the result against the independent reference model.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::app::{self, RunError, RunOptions};
use crate::core::partitioner::Partitioner;
use crate::core::record::headers;
use crate::core::reference::Model;
use crate::core::{Offset, PartitionCount};
use crate::log::Logs;
use crate::log::embedded::{EmbeddedLog, LogError, OpenOptions};
use crate::log::topics::Role;
use crate::metrics::Metrics;
use crate::owner::DEFAULT_BATCH_SIZE;
use crate::shutdown::Shutdown;
use crate::tools::produce::{self, ProduceError};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub events: usize,
    pub seed: u64,
    pub containers: u32,
    pub servers: u32,
    /// Keep the data dir here (it must be new or empty) instead of a temporary one.
    pub data_dir: Option<PathBuf>,
}

/// What went wrong in the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "{path} is not empty; the demo writes synthetic events and only runs in a new or empty \
         directory: pass another --data-dir, or none for a temporary one"
    )]
    NotEmpty { path: PathBuf },
    #[error("--containers × --servers is not a partition count; pass two positive numbers")]
    BadCount,
    #[error("cannot create a temporary data dir: {0}")]
    TempDir(std::io::Error),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("demo check failed: {0} mismatches against the reference model")]
    Mismatch(usize),
}

/// Malformed lines mixed into the demo workload, one per this many events.
const DEMO_MALFORMED_EVERY: usize = 1000;

fn demo_malformed(i: usize) -> String {
    match i % 4 {
        0 => "{\"type\":\"reservation\",\"event_id\":".to_owned(),
        1 => format!(
            "{{\"type\":\"refund\",\"event_id\":\"bad-{i}\",\"reservation_no\":\"R-x\",\"user_id\":\"u\"}}"
        ),
        2 => format!(
            "{{\"type\":\"association\",\"event_id\":\"bad-{i}\",\"reservation_no\":\"\",\"user_id\":\"u\"}}"
        ),
        _ => "not json at all".to_owned(),
    }
}

/// Whether `dir` holds anything (a missing directory holds nothing).
fn holds_anything(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
        || (dir.exists() && !dir.is_dir())
}

/// Runs the demo, printing its summary to `out`; a mismatch with the reference is an error.
pub fn run(a: &DemoOptions, out: &mut dyn Write) -> Result<(), DemoError> {
    let n = PartitionCount::product(a.containers, a.servers).ok_or(DemoError::BadCount)?;
    let temp;
    let dir = match &a.data_dir {
        Some(d) if holds_anything(d) => return Err(DemoError::NotEmpty { path: d.clone() }),
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().map_err(DemoError::TempDir)?;
            temp.path().to_path_buf()
        }
    };
    let partitioner = Partitioner::AbsHashModN;
    writeln!(
        out,
        "ordo demo: {} events, N = {} containers × {} servers = {n} partitions, data dir {}",
        a.events,
        a.containers,
        a.servers,
        dir.display()
    )?;
    let events = crate::tools::generate::generate(a.events, a.seed);
    let mut lines: Vec<Vec<u8>> =
        Vec::with_capacity(events.len() + events.len() / DEMO_MALFORMED_EVERY);
    let mut malformed = 0u64;
    for (i, e) in events.iter().enumerate() {
        if i % DEMO_MALFORMED_EVERY == DEMO_MALFORMED_EVERY - 1 {
            lines.push(demo_malformed(i).into_bytes());
            malformed += 1;
        }
        lines.push(e.to_json().into_bytes());
    }
    let records: Vec<_> = lines
        .iter()
        .map(|l| produce::route_raw(l, n, partitioner))
        .collect();

    let log = Arc::new(EmbeddedLog::open(
        &dir,
        OpenOptions {
            partitions: Some(n),
            partitioner: Some(partitioner),
            create: true,
            cache_bytes: None,
            read_only: false,
        },
    )?);
    let total = records.len() as f64;
    let t0 = Instant::now();
    Logs::Embedded(log.clone())
        .append(Role::Events, records)
        .map_err(ProduceError::from)?;
    let produce_secs = t0.elapsed().as_secs_f64();
    let metrics = Arc::new(Metrics::fresh());
    let summary = app::run(
        Logs::Embedded(log.clone()),
        RunOptions {
            http: None,
            until_idle: true,
            batch_size: DEFAULT_BATCH_SIZE,
            advertise: None,
            guarantee: Default::default(),
            token: None,
        },
        metrics,
        Shutdown::new(),
    )?;
    let process_secs = summary.elapsed.as_secs_f64();

    // The independent check: a plain model over the same events in log order.
    let model = Model::run(&events);
    let snapshot = log.snapshot()?.states;
    let mut dead_letters: BTreeMap<String, u64> = BTreeMap::new();
    for p in n.iter() {
        log.scan(Role::DeadLetters, p, Offset(0), |r| {
            let reason = r.header(headers::REASON).unwrap_or("?");
            *dead_letters.entry(reason.to_owned()).or_default() += 1;
            Ok(true)
        })?;
    }
    let mut problems = Vec::new();
    if snapshot.len() != model.states.len() {
        problems.push(format!(
            "{} reservations in state, {} in the reference",
            snapshot.len(),
            model.states.len()
        ));
    }
    for (no, want) in &model.states {
        match snapshot.get(no.as_str()) {
            None => problems.push(format!("{no}: missing")),
            Some(got) => {
                let same = got.state.as_str() == want.state
                    && got.user_id == want.user.as_str()
                    && got.target.as_deref() == want.target.as_deref()
                    && got.version as usize == want.applied.len()
                    && got
                        .applied_event_ids
                        .iter()
                        .map(|s| s.as_str())
                        .eq(want.applied.iter().map(String::as_str));
                if !same {
                    problems.push(format!(
                        "{no}: got {} v{}, want {} v{}",
                        got.state,
                        got.version,
                        want.state,
                        want.applied.len()
                    ));
                }
            }
        }
    }
    let mut want_dead: BTreeMap<String, u64> = model
        .rejects
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    if malformed > 0 {
        want_dead.insert("malformed".to_owned(), malformed);
    }
    if dead_letters != want_dead {
        problems.push(format!(
            "dead letters {dead_letters:?}, reference {want_dead:?}"
        ));
    }

    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for r in snapshot.values() {
        *by_state.entry(r.state.as_str()).or_default() += 1;
    }
    writeln!(
        out,
        "  produce   {produce_secs:>7.2} s  {:>9.0} events/s",
        total / produce_secs
    )?;
    writeln!(
        out,
        "  process   {process_secs:>7.2} s  {:>9.0} events/s  (restore, {n} partition threads, durable commits)",
        total / process_secs
    )?;
    writeln!(
        out,
        "  state     {} reservations: {}",
        snapshot.len(),
        by_state
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "  outcomes  {} transitions, {} duplicates, {} malformed",
        model.applied, model.duplicates, malformed
    )?;
    writeln!(
        out,
        "  rejects   {}",
        model
            .rejects
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    if problems.is_empty() {
        writeln!(
            out,
            "  check     OK: every reservation (state, user, target, version, applied ids) and every dead letter equals the reference model"
        )?;
        Ok(())
    } else {
        for p in problems.iter().take(10) {
            writeln!(out, "  mismatch  {p}")?;
        }
        Err(DemoError::Mismatch(problems.len()))
    }
}
