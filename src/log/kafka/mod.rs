//! The Kafka backend's transport: client configuration and errors, topic administration from
//! `topics/`, an idempotent producer that reports each record's offset, and reading partitions
//! to their end. rdkafka types stay inside this module and the partition owner's
//! consumer-group driver.
//!
//! * [`config`]: `KafkaOptions`, the client settings of each role, errors, librdkafka logging.
//! * [`admin`]: topics apply and check, partition counts, topic creation and deletion and the
//!   group's offsets for `ordo repartition`.
//! * [`producer`]: the idempotent producer that waits for acknowledgements.
//! * [`reader`]: reading a partition to its end, and the gateway's [`reader::KafkaIngest`].

pub mod admin;
pub mod config;
pub mod producer;
pub mod reader;

pub use admin::{
    apply_topics, check_topics, commit_group_offsets, create_topic, create_topics, delete_topics,
    partition_count,
};
pub use config::{
    Closing, DEFAULT_GROUP, GroupProtocol, KafkaLogError, KafkaOptions, QuietEof, REQUEST_TIMEOUT,
    log_client_error, log_client_message,
};
pub use producer::{KafkaProducer, Outgoing, Pending};
pub use reader::{
    BulkReader, KafkaIngest, OwnersLog, PartitionReader, check_no_repartition, count_all, pipe,
    read_owners, read_range, read_to_end, snapshot, tail, to_record,
};
