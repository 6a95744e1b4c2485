//! The group consumer's context: librdkafka's errors and logs into ordo's, and the rebalance
//! callbacks that hand partitions to owners and take them back.

use std::collections::HashMap;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset as KafkaOffset, TopicPartitionList};
use tracing::{info, warn};

use super::Member;
use super::driver::RESTORE_QUEUE;
use crate::core::{Offset, Partition};
use crate::log::kafka::{REQUEST_TIMEOUT, partition_of};

/// The group consumer's context: rebalance callbacks hand partitions to owners and take them
/// back.
pub struct MemberContext {
    pub(super) member: Arc<Member>,
}

impl ClientContext for MemberContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::log::kafka::log_client_error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::log::kafka::log_client_message(level, fac, message);
    }
}

pub(super) fn partitions_of(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| partition_of(e.partition()))
        .collect()
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let started = std::time::Instant::now();
                self.member.rebalanced();
                self.member
                    .metrics
                    .rebalances
                    .with_label_values(&["revoke"])
                    .inc();
                let partitions = partitions_of(tpl);
                info!(?partitions, "partitions revoked");
                self.member.stop_owners(consumer, &partitions);
                self.member
                    .metrics
                    .rebalance_seconds
                    .with_label_values(&["revoke"])
                    .observe(started.elapsed().as_secs_f64());
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let started = std::time::Instant::now();
            self.member.rebalanced();
            let _timed = Observe(
                self.member
                    .metrics
                    .rebalance_seconds
                    .with_label_values(&["assign"]),
                started,
            );
            // Every rebalance this member takes part in ends in an assignment, empty when it
            // gains nothing (cooperative and KIP-848 assignments carry only the change).
            self.member
                .metrics
                .rebalances
                .with_label_values(&["assign"])
                .inc();
            if tpl.count() == 0 {
                return;
            }
            // The owners read their partitions themselves: the group consumer fetches nothing.
            if let Err(e) = consumer.pause(tpl) {
                warn!(error = %e, "cannot pause the group consumer's partitions");
            }
            let committed = consumer
                .committed_offsets((*tpl).clone(), REQUEST_TIMEOUT)
                .ok();
            let mut restores = HashMap::new();
            for e in tpl.elements() {
                let p = partition_of(e.partition());
                let offset = committed
                    .as_ref()
                    .and_then(|c| c.find_partition(e.topic(), e.partition()))
                    .and_then(|c| match c.offset() {
                        KafkaOffset::Offset(o) if o >= 0 => Some(Offset(o as u64)),
                        _ => None,
                    })
                    .unwrap_or_default();
                info!(partition = p.0, committed = offset.0, "partition assigned");
                let (tx, rx) = std::sync::mpsc::sync_channel(RESTORE_QUEUE);
                restores.insert(p, tx);
                self.member.start_owner(p, offset, rx);
            }
            self.member.restore(restores);
        }
    }
}

/// Observes the time since its start into a histogram when dropped, whichever way the scope
/// ends.
struct Observe(prometheus::Histogram, std::time::Instant);

impl Drop for Observe {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed().as_secs_f64());
    }
}
