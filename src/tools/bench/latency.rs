//! `ordo bench kafka-latency`: end-to-end latency on Kafka, from an input record's append to
//! its state record becoming visible to a plain `read_committed` consumer, under a paced load.
//! One member (`ordo run`, or the Kafka Streams peer) as a child process, and one producer
//! appending at a fixed rate and one consumer tailing the member's state topic in this process
//! (one clock).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use super::BenchError;
use super::gateway::percentile;
use super::peer::System;
use crate::core::changelog::StateRecord;
use crate::core::{Offset, Partition, PartitionCount};
use crate::log::kafka::{
    KafkaOptions, KafkaProducer, Outgoing, QuietEof, apply_topics, create_topic, partition_list,
};
use crate::log::now_millis;
use crate::log::topics::Role;
use crate::owner::Guarantee;

/// Latency figures of one paced run.
#[derive(Debug, Clone)]
pub struct Latency {
    /// State records matched to their input record.
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The rate the producer held, events/s.
    pub rate: f64,
}

/// The paced load: `rate` events/s for `secs` seconds, of which the first `warm_up` are not
/// measured.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub rate: u64,
    pub secs: u64,
    pub warm_up: u64,
}

/// How often the producer appends a slice of the load.
const TICK: Duration = Duration::from_millis(10);

/// Runs one member of `system` at `guarantee` as a child process while appending the paced
/// load, and measures append → visible for every state record after the warm-up. The load starts once the member has applied one probe event on
/// each partition, so its start-up is not in the figure.
pub fn kafka_latency(
    opts: &KafkaOptions,
    n: PartitionCount,
    pace: Pace,
    guarantee: Guarantee,
    system: &System,
) -> Result<Latency, BenchError> {
    apply_topics(opts, n)?;
    let state_topic = system.state_topic(opts);
    if state_topic != opts.topic(Role::State) {
        // The peer's output topics, made here so the tail can follow them from the start.
        create_topic(opts, &state_topic, n.get())?;
    }
    let scratch = tempfile::tempdir()?;
    let group = format!(
        "ordo-bench-latency-{}-{}",
        system.name(),
        std::process::id()
    );
    let log = scratch.path().join("member.log");
    let mut member = system
        .command(
            opts,
            n,
            &group,
            guarantee,
            Some(&scratch.path().join("state")),
            false,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let result = measure(opts, n, pace, &state_topic, &mut member, &log);
    // SIGTERM: both systems commit what they processed and leave the group.
    let _ = Command::new("kill")
        .args(["-TERM", &member.id().to_string()])
        .status();
    let status = member.wait()?;
    let latency = result?;
    // The JVM exits with 128 + SIGTERM once its shutdown hooks (the peer's close) are done.
    if !(status.success() || status.code() == Some(143)) {
        return Err(member_failed(system.name(), &log));
    }
    Ok(latency)
}

fn member_failed(name: &str, log: &std::path::Path) -> BenchError {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    BenchError::Io(std::io::Error::other(format!(
        "the {name} member failed: {}",
        tail.join(" | ")
    )))
}

fn measure(
    opts: &KafkaOptions,
    n: PartitionCount,
    pace: Pace,
    state_topic: &str,
    member: &mut std::process::Child,
    log: &std::path::Path,
) -> Result<Latency, BenchError> {
    // The tail of the state topic: (visible at, source partition, source offset).
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tail = {
        let (opts, done, seen, topic) = (
            opts.clone(),
            done.clone(),
            seen.clone(),
            state_topic.to_owned(),
        );
        std::thread::spawn(move || tail_state(&opts, n, &topic, &done, &seen))
    };
    let producer = KafkaProducer::new(opts)?;
    let topic = opts.topic(Role::Events);
    // One probe reservation per partition; the load starts once all are visible.
    let probes: Vec<crate::core::event::Event> = (0u64..)
        .map(|i| {
            let no = format!("latency-probe-{}-{i}", std::process::id());
            crate::core::event::Event {
                kind: crate::core::event::EventKind::Reservation,
                event_id: no.as_str().into(),
                reservation_no: no.as_str().into(),
                user_id: "latency-probe".into(),
                target: None,
                ts: None,
            }
        })
        .scan(std::collections::HashSet::new(), |covered, e| {
            let p = opts.partitioner.partition(e.reservation_no.as_str(), n);
            Some(covered.insert(p).then_some(e))
        })
        .flatten()
        .take(n.get() as usize)
        .collect();
    let chunk: Vec<Outgoing<'_>> = probes
        .iter()
        .map(|e| {
            let (partition, record) =
                crate::tools::produce::route(e, e.to_json().into_bytes(), n, opts.partitioner);
            Outgoing {
                topic: &topic,
                partition,
                record,
            }
        })
        .collect();
    let partitions: Vec<Partition> = chunk.iter().map(|o| o.partition).collect();
    let offsets = producer.send(&chunk).wait()?;
    let probe_at: Vec<(Partition, Offset)> = partitions.into_iter().zip(offsets).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let visible = {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            probe_at
                .iter()
                .all(|probe| seen.iter().any(|(_, p, o)| (*p, *o) == *probe))
        };
        if visible {
            break;
        }
        if member.try_wait()?.is_some() {
            done.store(true, Ordering::Release);
            return Err(member_failed("benchmarked", log));
        }
        if Instant::now() > deadline {
            done.store(true, Ordering::Release);
            return Err(BenchError::Io(std::io::Error::other(
                "the member did not apply its probe events within 300 s",
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut generator = crate::tools::generate::Generator::new(7);
    let mut appended: HashMap<(Partition, Offset), i64> = HashMap::new();
    let Pace {
        rate,
        secs,
        warm_up,
    } = pace;
    let per_tick = (rate as f64 * TICK.as_secs_f64()).max(1.0);
    let started = Instant::now();
    let warm_up = Duration::from_secs(warm_up);
    let mut owed = 0.0;
    let mut sent = 0u64;
    let mut next = started;
    let mut in_flight = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        owed += per_tick;
        let take = owed as usize;
        owed -= take as f64;
        let chunk: Vec<Outgoing<'_>> = (&mut generator)
            .take(take)
            .map(|e| {
                let value = e.to_json().into_bytes();
                let (partition, record) =
                    crate::tools::produce::route(&e, value, n, opts.partitioner);
                Outgoing {
                    topic: &topic,
                    partition,
                    record,
                }
            })
            .collect();
        let stamps: Vec<(Partition, i64)> = chunk
            .iter()
            .map(|o| (o.partition, o.record.timestamp))
            .collect();
        // Not waited for here: the load keeps its pace while acknowledgements come back.
        in_flight.push((stamps, producer.send(&chunk), started.elapsed() >= warm_up));
        sent += chunk.len() as u64;
        next += TICK;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let rate = sent as f64 / started.elapsed().as_secs_f64();
    for (stamps, pending, measured) in in_flight {
        let offsets = pending.wait()?;
        if measured {
            for ((p, ts), o) in stamps.into_iter().zip(offsets) {
                appended.insert((p, o), ts);
            }
        }
    }
    // Let the member apply and commit the rest: the tail stops once no state record has come
    // for 2 s (a member behind its load is still catching up), or after 120 s.
    let settle = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    while settle.elapsed() < Duration::from_secs(120) {
        let len = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        if len != last.0 {
            last = (len, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done.store(true, Ordering::Release);
    let _ = tail.join();
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let mut latencies: Vec<f64> = seen
        .iter()
        .filter_map(|(visible, p, o)| appended.get(&(*p, *o)).map(|ts| (visible - ts) as f64))
        .collect();
    latencies.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        return Err(BenchError::Io(std::io::Error::other(
            "no state record of the measured load became visible; a longer --secs or a shorter \
             --warm-up leaves more to measure",
        )));
    }
    Ok(Latency {
        samples: latencies.len(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        rate,
    })
}

/// Seen state records: (visible at, source partition, source offset).
type Seen = Mutex<Vec<(i64, Partition, Offset)>>;

/// Reads every partition of the state topic as a plain `read_committed` consumer until
/// `done`, noting when each state record became visible and which input record it applied.
fn tail_state(opts: &KafkaOptions, n: PartitionCount, topic: &str, done: &AtomicBool, seen: &Seen) {
    let Ok(consumer) = opts
        .reader_config()
        .set("fetch.wait.max.ms", "5")
        .create_with_context::<_, BaseConsumer<QuietEof>>(QuietEof)
    else {
        return;
    };
    if consumer
        .assign(&partition_list(topic, n.iter().map(|p| (p, Offset(0)))))
        .is_err()
    {
        return;
    }
    while !done.load(Ordering::Acquire) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            let visible = now_millis();
            let key = m.key().unwrap_or_default();
            if key.starts_with(b"__ordo.") {
                continue;
            }
            if let Some(r) = m
                .payload()
                .and_then(|v| serde_json::from_slice::<StateRecord>(v).ok())
            {
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((
                    visible,
                    r.source_partition,
                    r.source_offset,
                ));
            }
        }
    }
}
