//! The status page's memory of the last five minutes: a sample of this member's partitions
//! every second, and the rates and charts drawn from them (no Prometheus needed for the page).
//! The sampler also keeps the lag-seconds and memory gauges.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::state::AppState;
use super::status::{lag_seconds, local_offsets};
use crate::core::Partition;

/// How often [`History`] samples, and how much it keeps.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const KEEP: usize = 301;
/// The charts' resolution: one point per this many samples (5 s), 60 points for 5 minutes.
const CHART_STEP: usize = 5;

/// One second's look at the partitions this member owns.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    at: Instant,
    /// Per partition, the position and input end, when owned and ready here.
    partitions: Vec<Option<(u64, u64)>>,
    /// `ordo_commit_seconds`: cumulative bucket counts.
    commits: Vec<u64>,
}

/// The last five minutes of samples.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    fn push(&self, sample: Sample) {
        let mut s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.push_back(sample);
        while s.len() > KEEP {
            s.pop_front();
        }
    }

    pub(super) fn snapshot(&self) -> Vec<Sample> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().cloned().collect()
    }
}

/// Per second over the samples `a` → `b`: records processed and appended in partition `p`,
/// when it was owned in both.
fn rates(a: &Sample, b: &Sample, p: usize) -> Option<(f64, f64)> {
    let ((pa, ea), (pb, eb)) = ((*a.partitions.get(p)?)?, (*b.partitions.get(p)?)?);
    let secs = b.at.duration_since(a.at).as_secs_f64();
    (secs > 0.0).then(|| {
        (
            pb.saturating_sub(pa) as f64 / secs,
            eb.saturating_sub(ea) as f64 / secs,
        )
    })
}

/// Per second over about the last `secs` samples: records processed and appended in
/// partition `p`, from the oldest sample in that window where this member owned it.
pub(super) fn rate_over(samples: &[Sample], p: usize, secs: usize) -> Option<(f64, f64)> {
    let last = samples.last()?;
    let from = samples.len().saturating_sub(secs + 1);
    let first = samples[from..samples.len() - 1]
        .iter()
        .find(|s| s.partitions.get(p).is_some_and(Option::is_some))?;
    rates(first, last, p)
}

/// The p99 of commits between two cumulative bucket snapshots, in seconds.
fn p99(bounds: &[f64], a: &[u64], b: &[u64]) -> f64 {
    let deltas: Vec<u64> = b
        .iter()
        .zip(a.iter().chain(std::iter::repeat(&0)))
        .map(|(b, a)| b.saturating_sub(*a))
        .collect();
    let total = deltas.last().copied().unwrap_or(0);
    if total == 0 {
        return 0.0;
    }
    let want = (total as f64 * 0.99).ceil() as u64;
    bounds
        .iter()
        .zip(&deltas)
        .find(|(_, n)| **n >= want)
        .map_or_else(|| bounds.last().copied().unwrap_or(0.0), |(b, _)| *b)
}

/// Cumulative counts and upper bounds of a histogram's buckets.
fn buckets(h: &prometheus::Histogram) -> (Vec<f64>, Vec<u64>) {
    use prometheus::core::Metric;
    let m = h.metric();
    let b = m.get_histogram().get_bucket();
    (
        b.iter().map(|b| b.upper_bound()).collect(),
        b.iter().map(|b| b.cumulative_count()).collect(),
    )
}

/// Samples every second until the member stops; also keeps the lag-seconds and memory gauges.
pub async fn sample(state: AppState) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.shutdown.wait() => return,
        }
        let partitions = (0..state.partitions.statuses.len())
            .map(|p| {
                let (position, end) = local_offsets(&state, Partition(p as u32))?;
                Some((position.0, end.0))
            })
            .collect();
        for p in 0..state.partitions.statuses.len() {
            let p = Partition(p as u32);
            let label = p.to_string();
            let lag = lag_seconds(&state, p).unwrap_or(0.0);
            if state.partitions.status(p).is_owned() {
                state
                    .metrics
                    .lag_seconds
                    .with_label_values(&[&label])
                    .set(lag);
            }
        }
        if let Some(rss) = resident_bytes() {
            state.metrics.resident_memory.set(rss as i64);
        }
        state.about.history.push(Sample {
            at: Instant::now(),
            partitions,
            commits: buckets(&state.metrics.commit).1,
        });
    }
}

/// This process's resident memory, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The charts: one point per 5 s over the last 5 minutes, this member's partitions.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Charts {
    pub interval_seconds: u64,
    pub processed_per_s: Vec<f64>,
    pub appended_per_s: Vec<f64>,
    pub commit_p99_seconds: Vec<f64>,
}

pub(super) fn charts(state: &AppState, samples: &[Sample]) -> Charts {
    let bounds = buckets(&state.metrics.commit).0;
    let mut c = Charts {
        interval_seconds: CHART_STEP as u64,
        ..Charts::default()
    };
    let points: Vec<&Sample> = samples.iter().rev().step_by(CHART_STEP).collect();
    for pair in points.windows(2).rev() {
        let (b, a) = (pair[0], pair[1]);
        let (mut processed, mut appended) = (0.0, 0.0);
        for p in 0..b.partitions.len() {
            if let Some((r, w)) = rates(a, b, p) {
                processed += r;
                appended += w;
            }
        }
        c.processed_per_s.push(processed);
        c.appended_per_s.push(appended);
        c.commit_p99_seconds
            .push(p99(&bounds, &a.commits, &b.commits));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, partitions: Vec<Option<(u64, u64)>>) -> Sample {
        Sample {
            at,
            partitions,
            commits: Vec::new(),
        }
    }

    #[test]
    fn rates_count_only_partitions_owned_at_both_ends() {
        let t0 = Instant::now();
        let a = sample(t0, vec![Some((10, 20)), None, Some((0, 0))]);
        let b = sample(
            t0 + Duration::from_secs(2),
            vec![Some((30, 60)), Some((5, 5)), None],
        );
        assert_eq!(rates(&a, &b, 0), Some((10.0, 20.0)));
        assert_eq!(rates(&a, &b, 1), None);
        assert_eq!(rates(&a, &b, 2), None);
        assert_eq!(rates(&a, &b, 9), None);
    }

    #[test]
    fn p99_is_the_bucket_that_holds_the_99th_percent() {
        let bounds = [0.001, 0.01, 0.1, f64::INFINITY];
        // 100 commits in the window: 98 under 1 ms, 1 under 10 ms, 1 under 100 ms.
        assert_eq!(p99(&bounds, &[5, 5, 5, 5], &[103, 104, 105, 105]), 0.01);
        assert_eq!(p99(&bounds, &[5, 5, 5, 5], &[5, 5, 5, 5]), 0.0);
        assert_eq!(p99(&bounds, &[], &[0, 0, 10, 10]), 0.1);
    }
}
