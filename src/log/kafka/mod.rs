//! The Kafka backend's transport: client configuration and errors, topic administration from
//! `topics/`, an idempotent producer that reports each record's offset, and reading partitions
//! to their end. rdkafka types stay inside this module and the partition owner's
//! consumer-group driver.
//!
//! * [`config`]: `KafkaOptions`, the client settings of each role, errors, librdkafka logging.
//! * [`ids`]: partitions, offsets and partition lists as librdkafka numbers them.
//! * [`admin`]: topics apply and check, partition counts, topic creation and deletion and the
//!   group's offsets for `ordo repartition`.
//! * [`producer`]: the idempotent producer that waits for acknowledgements.
//! * [`reader`]: reading a partition to its end, a range of it, or from an owner's thread.
//! * [`partition`]: one partition from an offset on: the owner's reader and the tools' scan.
//! * [`ingest`]: the gateway's [`ingest::KafkaIngest`].
//! * [`changelog`]: every changelog partition folded, and the checked bulk sender of the tools.
//! * [`bench`]: the raw consumer and pipe `ordo bench kafka` compares against.

pub mod admin;
pub mod bench;
pub mod changelog;
pub mod config;
pub mod ids;
pub mod ingest;
pub mod partition;
pub mod producer;
pub mod reader;

pub use admin::{
    add_partitions, apply_topics, can_add_partitions, check_topics, commit_group_offsets,
    create_topic, create_topics, delete_topics, input_partitions, partition_count,
    topic_partitions,
};
pub use bench::{count_all, pipe};
pub use changelog::{Changelog, Sender, read_changelog};
pub use config::{
    Closing, DEFAULT_GROUP, GroupProtocol, KafkaLogError, KafkaOptions, QuietEof, REQUEST_TIMEOUT,
    log_client_error, log_client_message,
};
pub use ids::{kafka_offset, kafka_partition, partition_list, partition_of};
pub use ingest::{INGEST_WAIT, KafkaIngest};
pub use partition::{PartitionReader, Tail, scan};
pub use producer::{
    KafkaProducer, Outgoing, Pending, check_transactions, delivery_in_transaction,
    transaction_group,
};
pub use reader::{
    BulkReader, OwnersLog, check_no_repartition, read_at, read_owners, read_range, read_to_end,
    settle_partitioner, tail, to_record,
};
