//! What a member connects before it joins the group: the idempotent producer and the
//! changelog reader, side by side.

use std::sync::Arc;

use crate::log::kafka::{BulkReader, KafkaLogError, KafkaOptions, KafkaProducer};
use crate::log::topics::Role;

/// The member's long-lived connections, made before it joins the group.
pub struct Connections {
    /// The idempotent producer, holding its producer id.
    pub producer: Arc<KafkaProducer>,
    /// The changelog reader every restore goes through.
    pub restorer: BulkReader,
}

impl Connections {
    /// Connects the producer (taking its idempotence id) and the restore reader, each on its
    /// own thread, while `also` (the topic checks) runs on this one: start-up pays for the
    /// slowest of them, not their sum.
    pub fn open<T: Send>(
        kafka: &KafkaOptions,
        also: impl FnOnce() -> T + Send,
    ) -> (Result<Connections, KafkaLogError>, T) {
        std::thread::scope(|s| {
            let producer = s.spawn(|| KafkaProducer::new(kafka));
            let restorer = s.spawn(|| BulkReader::new(kafka, &kafka.topic(Role::State)));
            let also = also();
            let connections = joined(producer).and_then(|producer| {
                Ok(Connections {
                    producer: Arc::new(producer),
                    restorer: joined(restorer)?,
                })
            });
            (connections, also)
        })
    }
}

/// A connecting thread's result (its panic as an error).
fn joined<T>(
    h: std::thread::ScopedJoinHandle<'_, Result<T, KafkaLogError>>,
) -> Result<T, KafkaLogError> {
    h.join().unwrap_or_else(|_| {
        Err(KafkaLogError::Restore(
            "a connecting thread panicked".into(),
        ))
    })
}
