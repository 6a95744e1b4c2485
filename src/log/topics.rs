//! Topic definitions, read from the files in `topics/` (compiled in): the single source for
//! creating and checking the three logs on any backend.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::partitioner::PartitionCount;

/// What a topic is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `reservation-events`: input.
    Events,
    /// `reservation-state`: changelog.
    State,
    /// `reservation-events.dlq`: dead letters.
    DeadLetters,
    /// `reservation-owners`: who serves each partition (Kafka only; one partition).
    Owners,
}

/// What a staging copy's name adds to its topic's (`reservation-events.repartition`).
pub const STAGING_SUFFIX: &str = ".repartition";

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 4] = [Role::Events, Role::State, Role::DeadLetters, Role::Owners];
}

/// One topic definition.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDef {
    pub name: String,
    pub role: Role,
    /// `"N"` (the partition count of the deployment) or a fixed count.
    pub partitions: String,
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// The files of `topics/`, as compiled into the binary.
const SOURCES: [(&str, &str); 4] = [
    (
        "topics/reservation-events.toml",
        include_str!("../../topics/reservation-events.toml"),
    ),
    (
        "topics/reservation-state.toml",
        include_str!("../../topics/reservation-state.toml"),
    ),
    (
        "topics/reservation-events.dlq.toml",
        include_str!("../../topics/reservation-events.dlq.toml"),
    ),
    (
        "topics/reservation-owners.toml",
        include_str!("../../topics/reservation-owners.toml"),
    ),
];

/// All topic definitions, one per role.
pub fn all() -> Vec<TopicDef> {
    static DEFS: std::sync::LazyLock<Vec<TopicDef>> = std::sync::LazyLock::new(|| {
        let mut defs: Vec<TopicDef> = SOURCES
            .iter()
            .map(|(path, text)| {
                toml::from_str(text)
                    .unwrap_or_else(|e| panic!("{path} is not a valid topic file: {e}"))
            })
            .collect();
        defs.sort_by_key(|d| d.role);
        defs
    });
    DEFS.clone()
}

/// The longest topic prefix: Kafka topic names have at most 249 characters, and the longest
/// name ordo derives (a staging copy, `reservation-events.dlq.repartition`) has 34.
pub const MAX_PREFIX_LEN: usize = 200;

/// Checks a topic prefix (`--topic-prefix`): the characters Kafka allows in a topic name
/// (ASCII letters, digits, `.`, `_`, `-`), at most [`MAX_PREFIX_LEN`] of them.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "is {} characters long; use at most {MAX_PREFIX_LEN}",
            prefix.len()
        ));
    }
    match prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "contains {c:?}; Kafka topic names allow only ASCII letters, digits, '.', '_' and '-'"
        )),
        None => Ok(()),
    }
}

/// The definitions with every name under `prefix`.
pub fn prefixed(prefix: &str) -> Vec<TopicDef> {
    let mut defs = all();
    for d in &mut defs {
        d.name.insert_str(0, prefix);
    }
    defs
}

impl TopicDef {
    /// The topic's partition count in a deployment of `n` partitions.
    pub fn partition_count(&self, n: PartitionCount) -> PartitionCount {
        match self.partitions.as_str() {
            "N" => n,
            fixed => fixed
                .parse()
                .ok()
                .and_then(PartitionCount::new)
                .expect("topics/ gives N or a positive count; a test checks every file"),
        }
    }

    /// Whether the topic has N partitions (co-partitioned with the input).
    pub fn is_partitioned(&self) -> bool {
        self.partitions == "N"
    }
}

/// The definition of the topic with `role`.
pub fn get(role: Role) -> TopicDef {
    all()
        .into_iter()
        .find(|d| d.role == role)
        .expect("topics/ defines every role")
}

/// A topic's settings for a deployment of `n` partitions, as `ordo plan` prints them.
pub fn describe(n: PartitionCount) -> Vec<(String, u32, BTreeMap<String, String>)> {
    all()
        .into_iter()
        .map(|d| (d.name.clone(), d.partition_count(n).get(), d.config))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_defined_once_with_n_partitions() {
        let defs = all();
        assert_eq!(
            defs.iter().map(|d| d.role).collect::<Vec<_>>(),
            Role::ALL.to_vec()
        );
        let n = PartitionCount::new(6).unwrap();
        for d in &defs {
            let want = if d.role == Role::Owners { 1 } else { 6 };
            assert_eq!(d.partition_count(n).get(), want, "{}", d.name);
        }
        assert_eq!(get(Role::Owners).config["cleanup.policy"], "compact");
        assert_eq!(get(Role::State).config["cleanup.policy"], "compact");
        assert_eq!(get(Role::Events).name, "reservation-events");
        assert_eq!(get(Role::DeadLetters).name, "reservation-events.dlq");
        assert_eq!(prefixed("staging.")[0].name, "staging.reservation-events");
    }

    #[test]
    fn prefixes_are_what_kafka_allows_in_names() {
        for ok in ["", "prod.", "team_a-", "v2"] {
            assert_eq!(check_prefix(ok), Ok(()), "{ok}");
        }
        for bad in ["a/b", "ä", "a b", "x:"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
        assert!(check_prefix(&"a".repeat(MAX_PREFIX_LEN + 1)).is_err());
    }
}
