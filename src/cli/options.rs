//! From flags to validated values: N from `--containers`/`--servers`/`--partitions`, the Kafka
//! connection from `--brokers`/`-X`, the data dir's open options.

use super::Error;
use super::args::{KafkaArgs, TopologyArgs};
use crate::core::PartitionCount;
use crate::core::partitioner::Partitioner;
use crate::log::embedded::OpenOptions;
use crate::log::kafka::{KafkaLogError, KafkaOptions, partition_count};
use crate::log::topics::{self, Role};

/// Why a partition count could not be formed from the flags.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CountError {
    #[error("--{flag} must be at least 1; pass a positive number")]
    Zero { flag: &'static str },
    #[error("--containers {containers} × --servers {servers} overflows; use smaller numbers")]
    Overflow { containers: u32, servers: u32 },
    #[error(
        "--partitions {partitions} does not equal --containers {containers} × --servers {servers} = {product}; \
         drop --partitions or make them agree"
    )]
    Mismatch {
        partitions: u32,
        containers: u32,
        servers: u32,
        product: u64,
    },
}

/// `N` from the flags: `containers × servers`, or `partitions`, which must equal the product
/// when all three are given. `None` when no flag was given at all.
pub fn from_flags(
    containers: Option<u32>,
    servers: Option<u32>,
    partitions: Option<u32>,
) -> Result<Option<PartitionCount>, CountError> {
    let nonzero = |v: Option<u32>, flag| match v {
        Some(0) => Err(CountError::Zero { flag }),
        other => Ok(other),
    };
    let containers = nonzero(containers, "containers")?;
    let servers = nonzero(servers, "servers")?;
    let partitions = nonzero(partitions, "partitions")?;
    let product = match (containers, servers) {
        (None, None) => None,
        (c, s) => {
            let (c, s) = (c.unwrap_or(1), s.unwrap_or(1));
            let product = PartitionCount::product(c, s).ok_or(CountError::Overflow {
                containers: c,
                servers: s,
            })?;
            Some((c, s, product.get()))
        }
    };
    let n = match (partitions, product) {
        (Some(p), Some((c, s, product))) if p != product => {
            return Err(CountError::Mismatch {
                partitions: p,
                containers: c,
                servers: s,
                product: u64::from(product),
            });
        }
        (Some(p), _) => Some(p),
        (None, Some((_, _, product))) => Some(product),
        (None, None) => None,
    };
    Ok(n.and_then(PartitionCount::new))
}

/// `containers × servers`, both given.
pub fn product(containers: u32, servers: u32) -> Result<PartitionCount, Error> {
    from_flags(Some(containers), Some(servers), None)
        .map_err(|e| Error::usage(e.to_string()))?
        .ok_or_else(|| Error::usage("pass --containers C --servers S"))
}

impl TopologyArgs {
    /// N from the flags, if any was given.
    pub fn count(&self) -> Result<Option<PartitionCount>, Error> {
        from_flags(self.containers, self.servers, self.partitions)
            .map_err(|e| Error::usage(e.to_string()))
    }

    /// How to open the data dir: the flags' N and partitioner, if given, must match it.
    pub fn open_options(&self, create: bool) -> Result<OpenOptions, Error> {
        Ok(OpenOptions {
            partitions: self.count()?,
            partitioner: self.partitioner,
            create,
            cache_bytes: None,
            read_only: false,
        })
    }
}

impl KafkaArgs {
    /// The Kafka connection, `None` without `--brokers` (the embedded log).
    pub fn options(&self, partitioner: Option<Partitioner>) -> Result<Option<KafkaOptions>, Error> {
        let Some(brokers) = &self.brokers else {
            return Ok(None);
        };
        let properties = self
            .properties
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| {
                        Error::usage(format!(
                            "-X {p}: expected key=value, e.g. -X security.protocol=SSL"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(KafkaOptions {
            brokers: brokers.clone(),
            group: self.group.clone(),
            properties,
            partitioner: partitioner.unwrap_or_default(),
        }))
    }
}

/// N on Kafka: the flags', which must match the topics, or the input topic's partition count.
pub fn kafka_partitions(
    opts: &KafkaOptions,
    flags: Option<PartitionCount>,
) -> Result<PartitionCount, Error> {
    let client = opts.metadata_client()?;
    let topic = topics::get(Role::Events).name;
    let actual = partition_count(&client, opts, &topic)?
        .and_then(PartitionCount::new)
        .ok_or_else(|| KafkaLogError::MissingTopic {
            topic: topic.clone(),
        })?;
    match flags {
        Some(n) if n != actual => Err(KafkaLogError::PartitionMismatch {
            topic,
            actual: actual.get(),
            expected: n.get(),
        }
        .into()),
        _ => Ok(actual),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_count_from_flags() {
        let ok = |c, s, p| from_flags(c, s, p).map(|n| n.map(PartitionCount::get));
        assert_eq!(ok(Some(3), Some(2), None), Ok(Some(6)));
        assert_eq!(ok(Some(3), Some(2), Some(6)), Ok(Some(6)));
        assert_eq!(ok(None, None, Some(5)), Ok(Some(5)));
        assert_eq!(ok(Some(4), None, None), Ok(Some(4)));
        assert_eq!(ok(None, None, None), Ok(None));
        assert_eq!(
            ok(Some(0), Some(2), None),
            Err(CountError::Zero { flag: "containers" })
        );
        assert_eq!(
            ok(None, None, Some(0)),
            Err(CountError::Zero { flag: "partitions" })
        );
        assert!(matches!(
            ok(Some(3), Some(2), Some(7)),
            Err(CountError::Mismatch { product: 6, .. })
        ));
        assert!(matches!(
            ok(Some(u32::MAX), Some(2), None),
            Err(CountError::Overflow { .. })
        ));
    }
}
