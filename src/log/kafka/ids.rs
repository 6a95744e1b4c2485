//! The one place where ordo's identities meet librdkafka's integers: a partition is an `i32`
//! there and an offset an `i64`, and a list of partitions is a `TopicPartitionList`.

use rdkafka::{Offset as KafkaOffset, TopicPartitionList};

use crate::core::{Offset, Partition};

/// `p` as librdkafka numbers it.
pub fn kafka_partition(p: Partition) -> i32 {
    // A topic has at most i32::MAX partitions: a larger number names none, and the broker
    // answers it as an unknown partition.
    i32::try_from(p.0).unwrap_or(i32::MAX)
}

/// A partition librdkafka names. Its "unassigned" (-1) never reaches here: ordo always sends
/// to an explicit partition, and records and assignments name real ones.
pub fn partition_of(p: i32) -> Partition {
    Partition(u32::try_from(p).unwrap_or(u32::MAX))
}

/// `o` as a librdkafka start position. An offset past `i64::MAX` (only a forged position can
/// say one) is past every partition's end, and is read as that.
pub fn kafka_offset(o: Offset) -> KafkaOffset {
    KafkaOffset::Offset(i64::try_from(o.0).unwrap_or(i64::MAX))
}

/// A list of `topic`'s partitions, each at its start position.
pub fn partition_list(
    topic: &str,
    at: impl IntoIterator<Item = (Partition, Offset)>,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in at {
        // Fails only for a logical offset (beginning, end, stored), which these never are.
        let _ = tpl.add_partition_offset(topic, kafka_partition(p), kafka_offset(o));
    }
    tpl
}
