//! The reservation state machine (contract §2): `none → reserved → associated`, `reserved →
//! cancelled`. One transition table, in [`apply`]; pure, no I/O, no clock.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::event::{Event, EventKind};

/// The state of an entity that exists (`none` is the absence of an entity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Reserved,
    Associated,
    Cancelled,
}

impl Status {
    /// The state's name as written in state records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Associated => "associated",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was refused. The string forms are the contract's reason codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    NotReserved,
    AlreadyReserved,
    UserMismatch,
    AlreadyAssociated,
    Cancelled,
}

impl RejectReason {
    /// Every reason, in the contract's order.
    pub const ALL: [RejectReason; 5] = [
        Self::NotReserved,
        Self::AlreadyReserved,
        Self::UserMismatch,
        Self::AlreadyAssociated,
        Self::Cancelled,
    ];

    /// The reason code used in dead letters and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotReserved => "not_reserved",
            Self::AlreadyReserved => "already_reserved",
            Self::UserMismatch => "user_mismatch",
            Self::AlreadyAssociated => "already_associated",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use super::entity::{Entity, Parts};

/// A state change made by one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<Status>,
    pub entity: Entity,
}

/// What applying an event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied(Transition),
    /// The event id was already applied to this entity: nothing changes.
    Duplicate,
    Rejected(RejectReason),
}

/// Applies `event` to the entity's current state (`None` = no entity yet).
pub fn apply(state: Option<&Entity>, event: &Event) -> Outcome {
    use EventKind::*;
    use Status::*;

    // The stored state, read once.
    let parts = state.map(Entity::parts);
    if let Some(p) = &parts
        && p.has_applied(&event.event_id)
    {
        return Outcome::Duplicate;
    }
    let same_user = |p: &Parts<'_>| p.user_id == event.user_id;
    let next = match (&parts, event.kind) {
        (None, Reservation) => Ok(Reserved),
        (None, Association | Cancellation) => Err(RejectReason::NotReserved),
        (Some(p), _) => match (p.status, event.kind) {
            (Reserved, Reservation) => Err(RejectReason::AlreadyReserved),
            (Reserved, Association) if same_user(p) => Ok(Associated),
            (Reserved, Cancellation) if same_user(p) => Ok(Cancelled),
            (Reserved, Association | Cancellation) => Err(RejectReason::UserMismatch),
            (Associated, Reservation | Association | Cancellation) => {
                Err(RejectReason::AlreadyAssociated)
            }
            (Cancelled, Reservation | Association | Cancellation) => Err(RejectReason::Cancelled),
        },
    };
    match next {
        Err(reason) => Outcome::Rejected(reason),
        Ok(status) => {
            let entity = match &parts {
                None => Entity::new(&event.user_id, status, None, 1, [event.event_id.as_str()]),
                Some(p) => Entity::new(
                    p.user_id,
                    status,
                    match event.kind {
                        Association => event.target.as_deref(),
                        Reservation | Cancellation => p.target,
                    },
                    p.version + 1,
                    p.applied_event_ids.clone().chain([event.event_id.as_str()]),
                ),
            };
            Outcome::Applied(Transition {
                from: parts.as_ref().map(|p| p.status),
                entity,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::ReservationNo;
    use crate::core::reference;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ev(kind: EventKind, id: &str, user: &str) -> Event {
        Event {
            kind,
            event_id: id.into(),
            reservation_no: ReservationNo::from("R"),
            user_id: user.into(),
            target: (kind == EventKind::Association).then(|| "dev".into()),
            ts: None,
        }
    }

    fn entity(status: Status) -> Entity {
        Entity::new("u", status, None, 1, ["e0"])
    }

    #[test]
    fn transition_table() {
        use EventKind::*;
        use RejectReason as R;
        // (state, event kind, same user?, expected next state or reject)
        type Row = (Option<Status>, EventKind, bool, Result<Status, R>);
        let table: &[Row] = &[
            (None, Reservation, true, Ok(Status::Reserved)),
            (None, Association, true, Err(R::NotReserved)),
            (None, Cancellation, true, Err(R::NotReserved)),
            (
                Some(Status::Reserved),
                Reservation,
                true,
                Err(R::AlreadyReserved),
            ),
            (
                Some(Status::Reserved),
                Reservation,
                false,
                Err(R::AlreadyReserved),
            ),
            (
                Some(Status::Reserved),
                Association,
                true,
                Ok(Status::Associated),
            ),
            (
                Some(Status::Reserved),
                Association,
                false,
                Err(R::UserMismatch),
            ),
            (
                Some(Status::Reserved),
                Cancellation,
                true,
                Ok(Status::Cancelled),
            ),
            (
                Some(Status::Reserved),
                Cancellation,
                false,
                Err(R::UserMismatch),
            ),
            (
                Some(Status::Associated),
                Reservation,
                true,
                Err(R::AlreadyAssociated),
            ),
            (
                Some(Status::Associated),
                Association,
                true,
                Err(R::AlreadyAssociated),
            ),
            (
                Some(Status::Associated),
                Cancellation,
                false,
                Err(R::AlreadyAssociated),
            ),
            (
                Some(Status::Cancelled),
                Reservation,
                true,
                Err(R::Cancelled),
            ),
            (
                Some(Status::Cancelled),
                Association,
                true,
                Err(R::Cancelled),
            ),
            (
                Some(Status::Cancelled),
                Cancellation,
                false,
                Err(R::Cancelled),
            ),
        ];
        for &(state, kind, same_user, want) in table {
            let current = state.map(entity);
            let event = ev(kind, "e1", if same_user { "u" } else { "other" });
            let got = apply(current.as_ref(), &event);
            match want {
                Ok(to) => {
                    let Outcome::Applied(t) = got else {
                        panic!("{state:?} + {kind:?}: expected {to:?}, got {got:?}")
                    };
                    assert_eq!(t.from, state);
                    assert_eq!(t.entity.status(), to);
                    assert_eq!(
                        t.entity.version(),
                        current.as_ref().map_or(1, |e| e.version() + 1)
                    );
                    assert_eq!(t.entity.applied_event_ids().last().unwrap(), "e1");
                }
                Err(reason) => assert_eq!(got, Outcome::Rejected(reason), "{state:?} + {kind:?}"),
            }
        }
    }

    #[test]
    fn association_sets_target_and_keeps_owner() {
        let reserved = entity(Status::Reserved);
        let Outcome::Applied(t) = apply(Some(&reserved), &ev(EventKind::Association, "e1", "u"))
        else {
            panic!()
        };
        assert_eq!(t.entity.target(), Some("dev"));
        assert_eq!(t.entity.user_id(), "u");
    }

    #[test]
    fn applied_id_is_a_duplicate_even_where_it_would_be_rejected() {
        let reserved = entity(Status::Reserved);
        assert_eq!(
            apply(Some(&reserved), &ev(EventKind::Reservation, "e0", "u")),
            Outcome::Duplicate
        );
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            prop_oneof![
                Just(EventKind::Reservation),
                Just(EventKind::Association),
                Just(EventKind::Cancellation)
            ],
            0u8..6,
            0u8..3,
            0u8..3,
        )
            .prop_map(|(kind, id, key, user)| Event {
                kind,
                event_id: format!("e{id}").into(),
                reservation_no: ReservationNo::from(format!("R{key}").as_str()),
                user_id: format!("u{user}").into(),
                target: (kind == EventKind::Association).then(|| format!("t{id}").into()),
                ts: None,
            })
    }

    fn run(events: &[Event]) -> HashMap<ReservationNo, Entity> {
        let mut states: HashMap<ReservationNo, Entity> = HashMap::new();
        for e in events {
            if let Outcome::Applied(t) = apply(states.get(&e.reservation_no), e) {
                states.insert(e.reservation_no.clone(), t.entity);
            }
        }
        states
    }

    proptest! {
        #[test]
        fn applying_an_event_twice_equals_once(events in prop::collection::vec(arb_event(), 0..12), last in arb_event()) {
            let before = run(&events);
            let first = apply(before.get(&last.reservation_no), &last);
            let once = run(&[events.clone(), vec![last.clone()]].concat());
            let twice = run(&[events, vec![last.clone(), last.clone()]].concat());
            // The repeat changes nothing, whatever the first did.
            prop_assert_eq!(&once, &twice);
            // And it is a duplicate of an applied event, or the same reject again.
            let again = apply(once.get(&last.reservation_no), &last);
            match first {
                Outcome::Applied(_) | Outcome::Duplicate => {
                    prop_assert_eq!(again, Outcome::Duplicate)
                }
                Outcome::Rejected(reason) => prop_assert_eq!(again, Outcome::Rejected(reason)),
            }
        }

        #[test]
        fn matches_the_reference_model(events in prop::collection::vec(arb_event(), 0..40)) {
            let ours = run(&events);
            let reference = reference::Model::run(events.iter());
            prop_assert_eq!(ours.len(), reference.states.len());
            for (no, want) in &reference.states {
                let got = &ours[no.as_str()];
                prop_assert_eq!(got.status().as_str(), want.state);
                prop_assert_eq!(got.user_id(), want.user.as_str());
                prop_assert_eq!(got.target(), want.target.as_deref());
                prop_assert_eq!(got.version() as usize, want.applied.len());
            }
        }
    }
}
