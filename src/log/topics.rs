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
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 3] = [Role::Events, Role::State, Role::DeadLetters];
}

/// One topic definition.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDef {
    pub name: String,
    pub role: Role,
    /// Always `"N"`: every topic has the partition count of the deployment.
    pub partitions: String,
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// The files of `topics/`, as compiled into the binary.
const SOURCES: [(&str, &str); 3] = [
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
];

/// All topic definitions, one per role.
pub fn all() -> Vec<TopicDef> {
    let mut defs: Vec<TopicDef> = SOURCES
        .iter()
        .map(|(path, text)| {
            toml::from_str(text).unwrap_or_else(|e| panic!("{path} is not a valid topic file: {e}"))
        })
        .collect();
    defs.sort_by_key(|d| d.role);
    defs
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
        .map(|d| (d.name, n.get(), d.config))
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
        assert!(defs.iter().all(|d| d.partitions == "N"));
        assert_eq!(get(Role::State).config["cleanup.policy"], "compact");
        assert_eq!(get(Role::Events).name, "reservation-events");
        assert_eq!(get(Role::DeadLetters).name, "reservation-events.dlq");
    }
}
