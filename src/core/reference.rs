//! A plain reference model of contract §2, written independently of [`super::state_machine`]:
//! strings instead of enums, one `if` chain instead of a table. `ordo demo` checks its result
//! against this, and the property tests compare the two.

use std::collections::BTreeMap;

use crate::core::event::{Event, EventKind};

/// One reservation as the reference model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefState {
    pub state: &'static str,
    pub user: String,
    pub target: Option<String>,
    pub applied: Vec<String>,
}

/// The result of running events through the reference model in order.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub states: BTreeMap<String, RefState>,
    pub rejects: BTreeMap<&'static str, u64>,
    pub duplicates: u64,
    pub applied: u64,
}

impl Model {
    /// Runs `events` in order (per-key order is all that matters).
    pub fn run<'a>(events: impl IntoIterator<Item = &'a Event>) -> Model {
        let mut m = Model::default();
        for e in events {
            m.push(e);
        }
        m
    }

    /// Applies one event; returns the reason it was rejected, if it was.
    pub fn push(&mut self, e: &Event) -> Option<&'static str> {
        let key = e.reservation_no.as_str();
        let user = e.user_id.as_str();
        let reject = |m: &mut Model, reason: &'static str| {
            *m.rejects.entry(reason).or_default() += 1;
            Some(reason)
        };
        let Some(s) = self.states.get_mut(key) else {
            if e.kind == EventKind::Reservation {
                self.states.insert(
                    key.to_owned(),
                    RefState {
                        state: "reserved",
                        user: user.to_owned(),
                        target: None,
                        applied: vec![e.event_id.to_string()],
                    },
                );
                self.applied += 1;
                return None;
            }
            return reject(self, "not_reserved");
        };
        if s.applied.iter().any(|id| id == e.event_id.as_str()) {
            self.duplicates += 1;
            return None;
        }
        let verdict: Result<&'static str, &'static str> = if s.state == "associated" {
            Err("already_associated")
        } else if s.state == "cancelled" {
            Err("cancelled")
        } else if e.kind == EventKind::Reservation {
            Err("already_reserved")
        } else if s.user != user {
            Err("user_mismatch")
        } else if e.kind == EventKind::Association {
            Ok("associated")
        } else {
            Ok("cancelled")
        };
        match verdict {
            Ok(next) => {
                s.state = next;
                if e.kind == EventKind::Association {
                    s.target = e.target.as_ref().map(|t| t.to_string());
                }
                s.applied.push(e.event_id.to_string());
                self.applied += 1;
                None
            }
            Err(reason) => reject(self, reason),
        }
    }
}
