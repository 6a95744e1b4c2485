//! `ordo bench kafka-latency`: end-to-end latency on Kafka, from an input record's append to
//! its state record becoming visible to a plain `read_committed` consumer, under a paced load.
//! One `ordo run` member, one producer appending at a fixed rate, and one consumer tailing
//! `reservation-state`, all in this process (one clock).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use super::percentile;
use crate::app::{self, RunError, RunOptions};
use crate::core::changelog::StateRecord;
use crate::core::{Offset, Partition, PartitionCount};
use crate::log::kafka::{
    KafkaOptions, KafkaProducer, Outgoing, QuietEof, apply_topics, partition_list,
};
use crate::log::topics::Role;
use crate::log::{Logs, now_millis};
use crate::metrics::Metrics;
use crate::owner::Guarantee;
use crate::shutdown::Shutdown;

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

/// How often the producer appends a slice of the load.
const TICK: Duration = Duration::from_millis(10);

/// Runs one member at `guarantee` while appending `rate` events/s for `secs` seconds, and
/// measures append → visible for every state record after the first 3 s (start-up and warm-up).
pub fn kafka_latency(
    opts: &KafkaOptions,
    n: PartitionCount,
    rate: u64,
    secs: u64,
    guarantee: Guarantee,
) -> Result<Latency, RunError> {
    apply_topics(opts, n)?;
    let shutdown = Shutdown::new();
    let member = {
        let (mut opts, shutdown) = (opts.clone(), shutdown.clone());
        opts.group = format!("ordo-bench-latency-{}", std::process::id());
        std::thread::spawn(move || {
            app::run(
                Logs::Kafka { options: opts, n },
                RunOptions {
                    http: None,
                    until_idle: false,
                    batch_size: crate::owner::DEFAULT_BATCH_SIZE,
                    advertise: None,
                    guarantee,
                },
                Arc::new(Metrics::fresh()),
                shutdown,
            )
        })
    };
    // The tail of reservation-state: (visible at, source partition, source offset).
    let done = Arc::new(AtomicBool::new(false));
    let tail = {
        let (opts, done) = (opts.clone(), done.clone());
        std::thread::spawn(move || tail_state(&opts, n, &done))
    };
    let producer = KafkaProducer::new(opts)?;
    let topic = opts.topic(Role::Events);
    let mut generator = crate::tools::generate::Generator::new(7);
    let mut appended: HashMap<(Partition, Offset), i64> = HashMap::new();
    let per_tick = (rate as f64 * TICK.as_secs_f64()).max(1.0);
    let started = Instant::now();
    let warm_up = Duration::from_secs(3);
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
    // Let the member apply and commit the rest, then stop everything.
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::Release);
    let seen = tail.join().unwrap_or_default();
    shutdown.trigger();
    if let Ok(Err(e)) = member.join() {
        return Err(e);
    }
    let mut latencies: Vec<f64> = seen
        .iter()
        .filter_map(|(visible, p, o)| appended.get(&(*p, *o)).map(|ts| (visible - ts) as f64))
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(Latency {
        samples: latencies.len(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        rate,
    })
}

/// Reads every partition of `reservation-state` as a plain `read_committed` consumer until
/// `done`, noting when each state record became visible and which input record it applied.
fn tail_state(
    opts: &KafkaOptions,
    n: PartitionCount,
    done: &AtomicBool,
) -> Vec<(i64, Partition, Offset)> {
    let Ok(consumer) = opts
        .reader_config()
        .set("fetch.wait.max.ms", "5")
        .create_with_context::<_, BaseConsumer<QuietEof>>(QuietEof)
    else {
        return Vec::new();
    };
    let topic = opts.topic(Role::State);
    if consumer
        .assign(&partition_list(&topic, n.iter().map(|p| (p, Offset(0)))))
        .is_err()
    {
        return Vec::new();
    }
    let mut seen = Vec::new();
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
                seen.push((visible, r.source_partition, r.source_offset));
            }
        }
    }
    seen
}
