//! Input events (contract §1): the JSON wire form, its validation, and the domain [`Event`].
//!
//! Decoding classifies every malformed case ([`Malformed`]) so a dead letter can say exactly
//! what was wrong. Pure: no I/O.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use super::ids::ReservationNo;

/// Longest accepted identifier, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// What an event asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Reservation,
    Association,
    Cancellation,
}

impl EventKind {
    /// All kinds, in the contract's order.
    pub const ALL: [EventKind; 3] = [Self::Reservation, Self::Association, Self::Cancellation];

    /// The wire name (`type` field) of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reservation => "reservation",
            Self::Association => "association",
            Self::Cancellation => "cancellation",
        }
    }
}

/// A validated event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub event_id: CompactString,
    pub reservation_no: ReservationNo,
    pub user_id: CompactString,
    /// Association only: what the reservation is associated with.
    pub target: Option<CompactString>,
    /// Producer timestamp, epoch milliseconds.
    pub ts: Option<i64>,
}

/// Why a record is not a valid event. Every variant ends up as a dead letter with reason
/// `malformed` and this text in the `ordo.error` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object: {0}")]
    NotObject(String),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("field `{0}` is empty")]
    Empty(&'static str),
    #[error("field `{field}` is {chars} characters long; the limit is {MAX_ID_CHARS}")]
    TooLong { field: &'static str, chars: usize },
    #[error("unknown event type `{0}`; use reservation, association or cancellation")]
    UnknownType(String),
    #[error("record key `{key}` differs from reservation_no `{reservation_no}`")]
    KeyMismatch { key: String, reservation_no: String },
}

/// Any JSON value, kept only as far as validation needs: strings and integers by value,
/// everything else by its kind, so a wrong type can be named instead of failing the parse.
#[derive(Debug)]
pub(super) enum Json<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Json<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Json::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Json::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Json::Str(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Json::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Json::Other("an integer out of range"), Json::Int))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Json::Other("a fractional number"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Json::Other("a boolean"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Json::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Json::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Json::Other("an object"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The wire form: every known field as any JSON value; unknown fields are skipped.
#[derive(Deserialize)]
pub(super) struct WireEvent<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(super) kind: Option<Json<'a>>,
    #[serde(borrow, default)]
    pub(super) event_id: Option<Json<'a>>,
    #[serde(borrow, default)]
    pub(super) reservation_no: Option<Json<'a>>,
    #[serde(borrow, default)]
    pub(super) user_id: Option<Json<'a>>,
    #[serde(borrow, default)]
    pub(super) target: Option<Json<'a>>,
    #[serde(borrow, default)]
    pub(super) ts: Option<Json<'a>>,
}

/// The serialisable form of an [`Event`], for producers.
#[derive(Serialize)]
struct WireEventOut<'a> {
    #[serde(rename = "type")]
    kind: EventKind,
    event_id: &'a str,
    reservation_no: &'a str,
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<i64>,
}

/// Whether `s` is an acceptable identifier: not empty, at most [`MAX_ID_CHARS`] characters.
pub(super) fn valid_id(s: &str) -> bool {
    // A byte count within the limit bounds the character count too.
    !s.is_empty() && (s.len() <= MAX_ID_CHARS || s.chars().count() <= MAX_ID_CHARS)
}

fn required_id(field: &'static str, value: Option<Json<'_>>) -> Result<CompactString, Malformed> {
    optional_id(field, value)?.ok_or(Malformed::Missing(field))
}

fn optional_id(
    field: &'static str,
    value: Option<Json<'_>>,
) -> Result<Option<CompactString>, Malformed> {
    match value {
        None => Ok(None),
        Some(Json::Str(s)) => {
            if s.is_empty() {
                return Err(Malformed::Empty(field));
            }
            // A byte count within the limit bounds the character count too.
            if s.len() > MAX_ID_CHARS {
                let chars = s.chars().count();
                if chars > MAX_ID_CHARS {
                    return Err(Malformed::TooLong { field, chars });
                }
            }
            Ok(Some(CompactString::from(s.as_ref())))
        }
        Some(Json::Int(_)) => Err(Malformed::WrongType {
            field,
            expected: "a string",
            found: "a number",
        }),
        Some(Json::Other(found)) => Err(Malformed::WrongType {
            field,
            expected: "a string",
            found,
        }),
    }
}

impl Event {
    /// Decodes and validates one event from its JSON bytes.
    pub fn decode(bytes: &[u8]) -> Result<Event, Malformed> {
        // serde accepts an array for a struct (positionally); an event must be an object.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(match serde_json::from_slice::<IgnoredAny>(bytes) {
                Ok(_) => Malformed::NotObject("expected `{`".to_owned()),
                Err(e) => Malformed::NotJson(e.to_string()),
            });
        }
        // Validated once here, so the parser does not validate each string on its own (per
        // string, that was a tenth of the core's time).
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Malformed::NotJson(format!("the record is not UTF-8: {e}")))?;
        match super::event_scan::scan(text) {
            Some(event) => Ok(event),
            None => Event::try_from(Self::parse(text)?),
        }
    }

    /// serde's reading of an event's fields, for every shape [`event_scan`] leaves to it.
    ///
    /// [`event_scan`]: super::event_scan
    fn parse(text: &str) -> Result<WireEvent<'_>, Malformed> {
        serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                Malformed::NotObject(e.to_string())
            } else {
                Malformed::NotJson(e.to_string())
            }
        })
    }

    /// [`Event::decode`] with serde alone, to hold the scan to serde's answers.
    #[cfg(test)]
    pub(super) fn decode_with_serde(bytes: &[u8]) -> Result<Event, Malformed> {
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Self::decode(bytes);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Malformed::NotJson(format!("the record is not UTF-8: {e}")))?;
        Event::try_from(Self::parse(text)?)
    }

    /// Decodes a record and checks that its log key, when present, is the reservation number.
    pub fn decode_record(key: Option<&[u8]>, value: &[u8]) -> Result<Event, Malformed> {
        let event = Self::decode(value)?;
        match key {
            Some(key) if key != event.reservation_no.as_str().as_bytes() => {
                Err(Malformed::KeyMismatch {
                    key: String::from_utf8_lossy(key).into_owned(),
                    reservation_no: event.reservation_no.to_string(),
                })
            }
            _ => Ok(event),
        }
    }

    /// The event as one line of JSON, without a trailing newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&WireEventOut {
            kind: self.kind,
            event_id: &self.event_id,
            reservation_no: self.reservation_no.as_str(),
            user_id: &self.user_id,
            target: self.target.as_deref(),
            ts: self.ts,
        })
        .expect("an event always serialises")
    }
}

impl TryFrom<WireEvent<'_>> for Event {
    type Error = Malformed;

    fn try_from(wire: WireEvent<'_>) -> Result<Self, Malformed> {
        let kind = match wire.kind {
            None => return Err(Malformed::Missing("type")),
            Some(Json::Str(s)) => match s.as_ref() {
                "reservation" => EventKind::Reservation,
                "association" => EventKind::Association,
                "cancellation" => EventKind::Cancellation,
                "" => return Err(Malformed::Empty("type")),
                other => return Err(Malformed::UnknownType(truncate(other, 64))),
            },
            Some(Json::Int(_)) => {
                return Err(Malformed::WrongType {
                    field: "type",
                    expected: "a string",
                    found: "a number",
                });
            }
            Some(Json::Other(found)) => {
                return Err(Malformed::WrongType {
                    field: "type",
                    expected: "a string",
                    found,
                });
            }
        };
        let event_id = required_id("event_id", wire.event_id)?;
        let reservation_no = ReservationNo(required_id("reservation_no", wire.reservation_no)?);
        let user_id = required_id("user_id", wire.user_id)?;
        let target = optional_id("target", wire.target)?;
        let ts = match wire.ts {
            None => None,
            Some(Json::Int(ts)) => Some(ts),
            Some(Json::Str(_)) => {
                return Err(Malformed::WrongType {
                    field: "ts",
                    expected: "an integer",
                    found: "a string",
                });
            }
            Some(Json::Other(found)) => {
                return Err(Malformed::WrongType {
                    field: "ts",
                    expected: "an integer",
                    found,
                });
            }
        };
        Ok(Event {
            kind,
            event_id,
            reservation_no,
            user_id,
            // Only an association carries a target; elsewhere it has no meaning.
            target: target.filter(|_| kind == EventKind::Association),
            ts,
        })
    }
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_full_event_and_ignores_unknown_fields() {
        let e = Event::decode(
            br#"{"type":"association","event_id":"e1","reservation_no":"R-1","user_id":"u1",
                "target":"dev-9","ts":1700000000000,"extra":{"nested":[1,2]},"more":null}"#,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Association);
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.reservation_no.as_str(), "R-1");
        assert_eq!(e.user_id, "u1");
        assert_eq!(e.target.as_deref(), Some("dev-9"));
        assert_eq!(e.ts, Some(1_700_000_000_000));
        assert_eq!(Event::decode(e.to_json().as_bytes()).unwrap(), e);
    }

    #[test]
    fn target_is_kept_only_on_associations() {
        let e = Event::decode(
            br#"{"type":"reservation","event_id":"e1","reservation_no":"R","user_id":"u","target":"x"}"#,
        )
        .unwrap();
        assert_eq!(e.target, None);
    }

    #[test]
    fn escaped_and_unicode_strings() {
        let e = Event::decode(
            "{\"type\":\"reservation\",\"event_id\":\"e\\u00e9\",\"reservation_no\":\"预约-7\",\"user_id\":\"ü\"}"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(e.event_id, "eé");
        assert_eq!(e.reservation_no.as_str(), "预约-7");
    }

    #[test]
    fn length_limit_counts_characters_not_bytes() {
        let ok = "预".repeat(128);
        let json = format!(
            r#"{{"type":"reservation","event_id":"e","reservation_no":"{ok}","user_id":"u"}}"#
        );
        assert!(Event::decode(json.as_bytes()).is_ok());
        let long = "a".repeat(129);
        let json = format!(
            r#"{{"type":"reservation","event_id":"e","reservation_no":"R","user_id":"{long}"}}"#
        );
        assert_eq!(
            Event::decode(json.as_bytes()),
            Err(Malformed::TooLong {
                field: "user_id",
                chars: 129
            })
        );
    }

    /// Bytes that are not UTF-8 inside a string value: not JSON, and said so.
    #[test]
    fn a_record_that_is_not_utf8_is_not_json() {
        let bytes =
            b"{\"type\":\"reservation\",\"event_id\":\"e\",\"reservation_no\":\"R-\xff\",\"user_id\":\"u\"}";
        assert!(
            matches!(Event::decode(bytes), Err(Malformed::NotJson(m)) if m.contains("not UTF-8")),
            "{:?}",
            Event::decode(bytes)
        );
    }

    #[test]
    fn classifies_every_malformed_case() {
        use Malformed::*;
        type Check = fn(&Malformed) -> bool;
        let cases: &[(&str, Check)] = &[
            ("not json", |m| matches!(m, NotJson(_))),
            (r#"{"type":"reservation""#, |m| matches!(m, NotJson(_))),
            ("[1,2]", |m| matches!(m, NotObject(_))),
            ("\"str\"", |m| matches!(m, NotObject(_))),
            (
                r#"{"type":"reservation","type":"reservation","event_id":"e","reservation_no":"R","user_id":"u"}"#,
                |m| matches!(m, NotObject(_)),
            ),
            (
                r#"{"event_id":"e","reservation_no":"R","user_id":"u"}"#,
                |m| *m == Missing("type"),
            ),
            (
                r#"{"type":"reservation","reservation_no":"R","user_id":"u"}"#,
                |m| *m == Missing("event_id"),
            ),
            (
                r#"{"type":"reservation","event_id":"e","user_id":"u"}"#,
                |m| *m == Missing("reservation_no"),
            ),
            (
                r#"{"type":"reservation","event_id":"e","reservation_no":null,"user_id":"u"}"#,
                |m| *m == Missing("reservation_no"),
            ),
            (
                r#"{"type":"reservation","event_id":"e","reservation_no":"R"}"#,
                |m| *m == Missing("user_id"),
            ),
            (
                r#"{"type":"reservation","event_id":"","reservation_no":"R","user_id":"u"}"#,
                |m| *m == Empty("event_id"),
            ),
            (
                r#"{"type":"","event_id":"e","reservation_no":"R","user_id":"u"}"#,
                |m| *m == Empty("type"),
            ),
            (
                r#"{"type":"refund","event_id":"e","reservation_no":"R","user_id":"u"}"#,
                |m| *m == UnknownType("refund".into()),
            ),
            (
                r#"{"type":"reservation","event_id":7,"reservation_no":"R","user_id":"u"}"#,
                |m| {
                    matches!(
                        m,
                        WrongType {
                            field: "event_id",
                            found: "a number",
                            ..
                        }
                    )
                },
            ),
            (
                r#"{"type":["x"],"event_id":"e","reservation_no":"R","user_id":"u"}"#,
                |m| {
                    matches!(
                        m,
                        WrongType {
                            field: "type",
                            found: "an array",
                            ..
                        }
                    )
                },
            ),
            (
                r#"{"type":"reservation","event_id":"e","reservation_no":{"a":1},"user_id":"u"}"#,
                |m| {
                    matches!(
                        m,
                        WrongType {
                            field: "reservation_no",
                            found: "an object",
                            ..
                        }
                    )
                },
            ),
            (
                r#"{"type":"association","event_id":"e","reservation_no":"R","user_id":"u","target":true}"#,
                |m| {
                    matches!(
                        m,
                        WrongType {
                            field: "target",
                            found: "a boolean",
                            ..
                        }
                    )
                },
            ),
            (
                r#"{"type":"reservation","event_id":"e","reservation_no":"R","user_id":"u","ts":"now"}"#,
                |m| {
                    matches!(
                        m,
                        WrongType {
                            field: "ts",
                            found: "a string",
                            ..
                        }
                    )
                },
            ),
            (
                r#"{"type":"reservation","event_id":"e","reservation_no":"R","user_id":"u","ts":1.5}"#,
                |m| {
                    matches!(
                        m,
                        WrongType {
                            field: "ts",
                            found: "a fractional number",
                            ..
                        }
                    )
                },
            ),
        ];
        for (input, check) in cases {
            let err = Event::decode(input.as_bytes()).expect_err(input);
            assert!(check(&err), "{input}: got {err:?}");
        }
    }

    #[test]
    fn record_key_must_match() {
        let v = br#"{"type":"reservation","event_id":"e","reservation_no":"R","user_id":"u"}"#;
        assert!(Event::decode_record(Some(b"R"), v).is_ok());
        assert!(Event::decode_record(None, v).is_ok());
        assert!(matches!(
            Event::decode_record(Some(b"S"), v),
            Err(Malformed::KeyMismatch { .. })
        ));
    }
}
