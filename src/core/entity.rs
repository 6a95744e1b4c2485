//! One reservation's state as held in memory, packed into a single allocation.
//!
//! A member holds every reservation of its partitions (a million is ordinary), so the layout
//! is for the common case: a user id, a target, up to three event ids, each a short string. As
//! separate fields (inline strings and a boxed slice of them) an entity took 72 bytes in its
//! map slot plus 24 bytes per event id on the heap; packed it is one 16-byte box of the bytes
//! themselves, about 50 for a typical reservation. The changelog's records are unchanged: a
//! [`StateRecord`](super::changelog::StateRecord) unpacks the strings when it is written.
//!
//! Layout: a flags byte (the status, whether there is a target), then the version, the user
//! id, the target if any, the number of event ids and the ids, every length and number as a
//! varint of ASCII digits (six bits each, `0x40` marking a digit that more follow; one byte
//! below 64). Every byte outside the strings is ASCII, so the whole is one `str` and each
//! string a slice of it at char boundaries: reading a field validates nothing.

use std::fmt;

use super::state_machine::Status;

/// One reservation's state. An entity applies at most three events, so it keeps their ids
/// for duplicate detection.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Entity(Box<str>);

const STATUS_MASK: u8 = 0b11;
const HAS_TARGET: u8 = 0b100;

impl Entity {
    /// An entity with these fields, in one allocation.
    pub fn new<'a>(
        user_id: &str,
        status: Status,
        target: Option<&str>,
        version: u32,
        applied_event_ids: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Entity {
        let sized = |t: &str| varint_len(t.len() as u64) + t.len();
        let (count, id_bytes) = applied_event_ids
            .clone()
            .into_iter()
            .fold((0usize, 0usize), |(n, b), id| (n + 1, b + sized(id)));
        // Exactly sized, so the box takes the buffer as it is.
        let mut out = String::with_capacity(
            1 + varint_len(u64::from(version))
                + sized(user_id)
                + target.map_or(0, sized)
                + varint_len(count as u64)
                + id_bytes,
        );
        let status_bits = match status {
            Status::Reserved => 0,
            Status::Associated => 1,
            Status::Cancelled => 2,
        };
        out.push(char::from(
            status_bits | if target.is_some() { HAS_TARGET } else { 0 },
        ));
        put_varint(&mut out, u64::from(version));
        put_str(&mut out, user_id);
        if let Some(t) = target {
            put_str(&mut out, t);
        }
        put_varint(&mut out, count as u64);
        for id in applied_event_ids {
            put_str(&mut out, id);
        }
        debug_assert_eq!(out.len(), out.capacity());
        Entity(out.into_boxed_str())
    }

    pub fn status(&self) -> Status {
        match self.0.as_bytes()[0] & STATUS_MASK {
            0 => Status::Reserved,
            1 => Status::Associated,
            _ => Status::Cancelled,
        }
    }

    /// Number of applied transitions.
    pub fn version(&self) -> u32 {
        let mut at = 1;
        // Written from a u32.
        take_varint(&self.0, &mut at) as u32
    }

    pub fn user_id(&self) -> &str {
        self.parts().user_id
    }

    pub fn target(&self) -> Option<&str> {
        self.parts().target
    }

    /// The ids of the events applied to this entity, oldest first.
    pub fn applied_event_ids(&self) -> EventIds<'_> {
        self.parts().applied_event_ids
    }

    /// Whether the event `id` was applied to this entity.
    pub fn has_applied(&self, id: &str) -> bool {
        self.parts().has_applied(id)
    }

    /// Every field, read in one pass (each accessor above reads from the start).
    pub fn parts(&self) -> Parts<'_> {
        let b = &self.0;
        let mut at = 1;
        // Written from a u32.
        let version = take_varint(b, &mut at) as u32;
        let user_id = take_str(b, &mut at);
        let target = (b.as_bytes()[0] & HAS_TARGET != 0).then(|| take_str(b, &mut at));
        let left = take_varint(b, &mut at) as usize;
        Parts {
            status: self.status(),
            version,
            user_id,
            target,
            applied_event_ids: EventIds {
                rest: &b[at..],
                left,
            },
        }
    }
}

/// An [`Entity`]'s fields, borrowed from it.
#[derive(Clone, Debug)]
pub struct Parts<'a> {
    pub status: Status,
    pub version: u32,
    pub user_id: &'a str,
    pub target: Option<&'a str>,
    pub applied_event_ids: EventIds<'a>,
}

impl Parts<'_> {
    /// Whether the event `id` was applied to the entity.
    pub fn has_applied(&self, id: &str) -> bool {
        self.applied_event_ids.clone().any(|applied| applied == id)
    }
}

impl fmt::Debug for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entity")
            .field("user_id", &self.user_id())
            .field("status", &self.status())
            .field("target", &self.target())
            .field("version", &self.version())
            .field(
                "applied_event_ids",
                &self.applied_event_ids().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The event ids of an [`Entity`], oldest first.
#[derive(Clone, Debug)]
pub struct EventIds<'a> {
    rest: &'a str,
    left: usize,
}

impl<'a> Iterator for EventIds<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut at = 0;
        let id = take_str(self.rest, &mut at);
        self.rest = &self.rest[at..];
        Some(id)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for EventIds<'_> {}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x40 {
        v >>= 6;
        n += 1;
    }
    n
}

fn put_varint(out: &mut String, mut v: u64) {
    while v >= 0x40 {
        out.push(char::from(0x40 | (v & 0x3f) as u8));
        v >>= 6;
    }
    out.push(char::from(v as u8));
}

fn put_str(out: &mut String, s: &str) {
    put_varint(out, s.len() as u64);
    out.push_str(s);
}

fn take_varint(s: &str, at: &mut usize) -> u64 {
    let b = s.as_bytes();
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let digit = b[*at];
        *at += 1;
        v |= u64::from(digit & 0x3f) << shift;
        if digit < 0x40 {
            return v;
        }
        shift += 6;
    }
}

/// The string at `at` (after its length), moving `at` past it. Its ends are char boundaries:
/// it was copied whole from a `&str` between ASCII digits.
fn take_str<'a>(s: &'a str, at: &mut usize) -> &'a str {
    let len = take_varint(s, at) as usize;
    let out = &s[*at..*at + len];
    *at += len;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status() -> impl Strategy<Value = Status> {
        prop_oneof![
            Just(Status::Reserved),
            Just(Status::Associated),
            Just(Status::Cancelled)
        ]
    }

    proptest! {
        /// Whatever goes in comes out: any strings (empty, long past one varint byte, any
        /// UTF-8), any version, any number of ids.
        #[test]
        fn an_entity_gives_back_its_fields(
            user in ".{0,200}",
            status in status(),
            target in proptest::option::of(".{0,300}"),
            version in any::<u32>(),
            ids in proptest::collection::vec(".{0,150}", 0..5),
        ) {
            let e = Entity::new(&user, status, target.as_deref(), version, ids.iter().map(String::as_str));
            prop_assert_eq!(e.user_id(), user.as_str());
            prop_assert_eq!(e.status(), status);
            prop_assert_eq!(e.target(), target.as_deref());
            prop_assert_eq!(e.version(), version);
            prop_assert_eq!(e.applied_event_ids().len(), ids.len());
            prop_assert_eq!(e.applied_event_ids().collect::<Vec<_>>(), ids.iter().map(String::as_str).collect::<Vec<_>>());
            for id in &ids {
                prop_assert!(e.has_applied(id));
            }
            let absent = "an id never applied \u{1F600}";
            prop_assert_eq!(e.has_applied(absent), ids.iter().any(|i| i == absent));
        }
    }

    #[test]
    fn a_typical_entity_is_small() {
        let e = Entity::new(
            "user-12345",
            Status::Associated,
            Some("device-42"),
            2,
            ["evt-1f-100", "evt-1f-101"],
        );
        assert_eq!(std::mem::size_of::<Entity>(), 16);
        // 1 + 1 + 11 + 10 + 1 + 2 × 11; as fields it was 72 bytes, and 48 more on the heap.
        assert_eq!(e.0.len(), 46);
    }
}
