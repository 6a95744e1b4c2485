//! From flags to validated values: N from `--containers`/`--servers`/`--partitions`, the Kafka
//! connection from `--brokers`/`-X`, the data dir's open options.

use super::Error;
use super::args::{KafkaArgs, StoreArgs, TopologyArgs};
use super::sources::{Sources, sources};
use crate::core::PartitionCount;
use crate::core::partitioner::Partitioner;
use crate::log::{Deployment, KafkaOptions, OpenOptions};

/// Why a partition count could not be formed from the flags. Each names its setting as the
/// user gave it: the flag, or the `ORDO_*` variable the value came from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CountError {
    #[error("{setting} must be at least 1; pass a positive number")]
    Zero { setting: String },
    #[error("{containers} × {servers} overflows; use smaller numbers")]
    Overflow { containers: String, servers: String },
    #[error(
        "{partitions} does not equal {containers} × {servers} = {product}; drop {drop} or make them agree"
    )]
    Mismatch {
        partitions: String,
        containers: String,
        servers: String,
        product: u64,
        drop: String,
    },
}

/// One setting of N: its argument id (for naming it, see [`Sources`]) and value.
#[derive(Debug, Clone, Copy)]
pub struct Setting<'a> {
    pub id: &'a str,
    pub value: Option<u32>,
}

impl<'a> Setting<'a> {
    pub fn new(id: &'a str, value: Option<u32>) -> Setting<'a> {
        Setting { id, value }
    }
}

/// `N` from the flags: `containers × servers`, or `partitions`, which must equal the product
/// when all three are given. `None` when no flag was given at all.
///
/// The two forms are one setting: a form typed on the command line wins over the other form
/// coming from `ORDO_*` variables (`--partitions 6` in a pod with `ORDO_CONTAINERS` and
/// `ORDO_SERVERS` set); where both forms are typed, or both come from variables, they must
/// agree.
pub fn from_flags(
    containers: Setting<'_>,
    servers: Setting<'_>,
    partitions: Setting<'_>,
    sources: &Sources,
) -> Result<Option<PartitionCount>, CountError> {
    fn unset(s: Setting<'_>) -> Setting<'_> {
        Setting { value: None, ..s }
    }
    let typed = |s: Setting<'_>| s.value.is_some() && sources.typed(s.id);
    let product_typed = typed(containers) || typed(servers);
    let (containers, servers, partitions) = if typed(partitions) && !product_typed {
        (unset(containers), unset(servers), partitions)
    } else if product_typed && !typed(partitions) {
        (containers, servers, unset(partitions))
    } else {
        (containers, servers, partitions)
    };
    let nonzero = |s: Setting<'_>| match s.value {
        Some(0) => Err(CountError::Zero {
            setting: sources.label(s.id),
        }),
        other => Ok(other),
    };
    let (c, s, p) = (
        nonzero(containers)?,
        nonzero(servers)?,
        nonzero(partitions)?,
    );
    let product = match (c, s) {
        (None, None) => None,
        (c, s) => {
            let (c, s) = (c.unwrap_or(1), s.unwrap_or(1));
            let product = PartitionCount::product(c, s).ok_or_else(|| CountError::Overflow {
                containers: sources.show(containers.id, c),
                servers: sources.show(servers.id, s),
            })?;
            Some((c, s, product.get()))
        }
    };
    let n = match (p, product) {
        (Some(p), Some((c, s, product))) if p != product => {
            return Err(CountError::Mismatch {
                partitions: sources.show(partitions.id, p),
                containers: sources.show(containers.id, c),
                servers: sources.show(servers.id, s),
                product: u64::from(product),
                drop: sources.label(partitions.id),
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
    from_flags(
        Setting::new("containers", Some(containers)),
        Setting::new("servers", Some(servers)),
        Setting::new("partitions", None),
        sources(),
    )
    .map_err(|e| Error::usage(e.to_string()))?
    .ok_or_else(|| Error::usage("pass --containers C --servers S"))
}

impl TopologyArgs {
    /// N from the flags, if any was given.
    pub fn count(&self) -> Result<Option<PartitionCount>, Error> {
        from_flags(
            Setting::new("containers", self.containers),
            Setting::new("servers", self.servers),
            Setting::new("partitions", self.partitions),
            sources(),
        )
        .map_err(|e| Error::usage(e.to_string()))
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
                let (k, v) = p
                    .split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| {
                        Error::usage(format!(
                            "-X {}: expected key=value, e.g. -X security.protocol=SSL",
                            p.split('=').next().unwrap_or_default()
                        ))
                    })?;
                let v = property_value(&k, &v)?;
                Ok((k, v))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Some(KafkaOptions {
            properties,
            partitioner: partitioner.unwrap_or_default(),
            topic_prefix: self.topic_prefix.clone(),
            ..KafkaOptions::new(brokers.clone())
        }))
    }
}

/// A `-X` value as given, or read from where it points: `@file:PATH` (the file's contents,
/// without a trailing newline: a mounted Secret) or `@env:NAME` (a variable, e.g. one set from a
/// Secret), so a password never has to be written in a flag, a ConfigMap or a process list.
/// An error names the property and where it looked, never the value.
pub fn property_value(key: &str, value: &str) -> Result<String, Error> {
    if let Some(path) = value.strip_prefix("@file:") {
        return std::fs::read_to_string(path)
            .map(|v| v.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| {
                Error::usage(format!(
                    "-X {key}=@file:{path}: cannot read the file ({e}); mount it, or give the \
                     value another way"
                ))
            });
    }
    if let Some(name) = value.strip_prefix("@env:") {
        return std::env::var(name).map_err(|_| {
            Error::usage(format!(
                "-X {key}=@env:{name}: the variable {name} is not set; set it (e.g. from a \
                 Secret), or give the value another way"
            ))
        });
    }
    Ok(value.to_owned())
}

/// How a command uses a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: opened read-only, never created.
    Read,
    /// Writes to an existing one.
    Write,
    /// Writes, creating it when it does not exist.
    Create,
}

/// The one place in the CLI that decides the backend: `--brokers` (or `ORDO_BROKERS`) means
/// the Kafka cluster, otherwise the data dir. N and the partitioner, where given, must match
/// what the deployment has.
pub fn deployment(
    kafka: &KafkaArgs,
    store: &StoreArgs,
    n: Option<PartitionCount>,
    partitioner: Option<Partitioner>,
    access: Access,
) -> Result<Deployment, Error> {
    Ok(match kafka.options(partitioner)? {
        Some(options) => Deployment::Kafka {
            options,
            n,
            partitioner,
            writes: access != Access::Read,
        },
        None => Deployment::Embedded {
            dir: store.data_dir.clone(),
            open: OpenOptions {
                partitions: n,
                partitioner,
                create: access == Access::Create,
                cache_bytes: None,
                read_only: access == Access::Read,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_property_value_comes_from_a_file_or_a_variable_and_errors_never_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret-value\n").unwrap();
        let at_file = format!("@file:{}", file.display());
        assert_eq!(
            property_value("sasl.password", &at_file).unwrap(),
            "s3cret-value"
        );
        assert_eq!(property_value("acks", "all").unwrap(), "all");
        // A variable every process here has.
        assert_eq!(
            property_value("sasl.password", "@env:PATH").unwrap(),
            std::env::var("PATH").unwrap()
        );
        let missing = dir.path().join("absent");
        let e = property_value("sasl.password", &format!("@file:{}", missing.display()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sasl.password") && e.contains("absent"), "{e}");
        let e = property_value("sasl.password", "@env:ORDO_TEST_PROPERTY_UNSET")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ORDO_TEST_PROPERTY_UNSET is not set"), "{e}");
        // A bad -X names the key, never what follows it.
        let args = KafkaArgs {
            brokers: Some("127.0.0.1:1".into()),
            properties: vec!["sasl.password".into()],
            topic_prefix: String::new(),
        };
        let e = args.options(None).unwrap_err().to_string();
        assert!(e.contains("expected key=value"), "{e}");
    }

    #[test]
    fn partition_count_from_flags() {
        let flags = Sources::default();
        let count = |c, s, p| {
            from_flags(
                Setting::new("containers", c),
                Setting::new("servers", s),
                Setting::new("partitions", p),
                &flags,
            )
        };
        let ok = |c, s, p| count(c, s, p).map(|n| n.map(PartitionCount::get));
        assert_eq!(ok(Some(3), Some(2), None), Ok(Some(6)));
        assert_eq!(ok(Some(3), Some(2), Some(6)), Ok(Some(6)));
        assert_eq!(ok(None, None, Some(5)), Ok(Some(5)));
        assert_eq!(ok(Some(4), None, None), Ok(Some(4)));
        assert_eq!(ok(None, None, None), Ok(None));
        assert_eq!(
            ok(Some(0), Some(2), None),
            Err(CountError::Zero {
                setting: "--containers".into()
            })
        );
        assert_eq!(
            ok(None, None, Some(0)),
            Err(CountError::Zero {
                setting: "--partitions".into()
            })
        );
        let mismatch = count(Some(3), Some(2), Some(7)).unwrap_err();
        assert_eq!(
            mismatch.to_string(),
            "--partitions 7 does not equal --containers 3 × --servers 2 = 6; drop --partitions \
             or make them agree"
        );
        assert!(matches!(
            ok(Some(u32::MAX), Some(2), None),
            Err(CountError::Overflow { .. })
        ));
    }
}
