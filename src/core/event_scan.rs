//! The common shape of an input event, read without a general JSON parser: one flat object
//! whose values are plain strings (no escapes) or small integers. Anything else — an escape,
//! a nested value, a fraction, `null`, a duplicate field, a syntax error — is left to serde
//! ([`scan`] returns `None`), so what is accepted, refused and how a refusal is worded stays
//! serde's; a property test holds the two to the same answer. In a profile of the core loop,
//! serde's decode was two thirds of the work per event. Pure: no I/O.

use std::borrow::Cow;

use super::event::{Json, WireEvent};

/// The event's fields, if `text` has the common shape; `None` sends it to serde.
pub(super) fn scan(text: &str) -> Option<WireEvent<'_>> {
    let b = text.as_bytes();
    let mut at = skip_ws(b, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(b, at + 1);
    let mut wire = WireEvent::default();
    if b.get(at) == Some(&b'}') {
        return end(b, at + 1).then_some(wire);
    }
    loop {
        let (key, next) = string(text, at)?;
        at = skip_ws(b, next);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(b, at + 1);
        let (value, next) = value(text, at)?;
        let slot = match key {
            "type" => &mut wire.kind,
            "event_id" => &mut wire.event_id,
            "reservation_no" => &mut wire.reservation_no,
            "user_id" => &mut wire.user_id,
            "target" => &mut wire.target,
            "ts" => &mut wire.ts,
            _ => &mut None,
        };
        if slot.is_some() {
            // serde's "duplicate field" error.
            return None;
        }
        *slot = Some(value);
        at = skip_ws(b, next);
        match b.get(at)? {
            b',' => at = skip_ws(b, at + 1),
            b'}' => return end(b, at + 1).then_some(wire),
            _ => return None,
        }
    }
}

/// JSON's whitespace.
fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while matches!(b.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Whether only whitespace follows `at`.
fn end(b: &[u8], at: usize) -> bool {
    skip_ws(b, at) == b.len()
}

/// A string without escapes or control characters at `at` (its opening quote), and the
/// position after its closing quote.
fn string(text: &str, at: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let len = b[start..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    if b[start + len] != b'"' {
        return None;
    }
    // Quotes are ASCII: both ends are char boundaries.
    Some((&text[start..start + len], start + len + 1))
}

/// A value at `at`: a plain string, or an integer of at most 18 digits (no fraction, no
/// exponent, no leading zero), and the position after it.
fn value(text: &str, at: usize) -> Option<(Json<'_>, usize)> {
    let b = text.as_bytes();
    match *b.get(at)? {
        b'"' => string(text, at).map(|(s, next)| (Json::Str(Cow::Borrowed(s)), next)),
        b'-' | b'0'..=b'9' => {
            let digits_from = at + usize::from(b[at] == b'-');
            let digits = b[digits_from..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let next = digits_from + digits;
            let leading_zero = digits > 1 && b[digits_from] == b'0';
            // serde reads `-0` as a fraction (negative zero).
            let negative_zero = b[at] == b'-' && digits == 1 && b[digits_from] == b'0';
            if digits == 0
                || negative_zero
                || digits > 18
                || leading_zero
                || matches!(b.get(next), Some(b'.' | b'e' | b'E'))
            {
                return None;
            }
            text[at..next].parse().ok().map(|n| (Json::Int(n), next))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::event::{Event, Malformed};
    use proptest::prelude::*;

    /// What serde alone makes of `bytes`.
    fn by_serde(bytes: &[u8]) -> Result<Event, Malformed> {
        Event::decode_with_serde(bytes)
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just("\"type\"".to_owned()),
            Just("\"reservation\"".to_owned()),
            Just("\"association\"".to_owned()),
            Just("\"event_id\"".to_owned()),
            Just("\"reservation_no\"".to_owned()),
            Just("\"user_id\"".to_owned()),
            Just("\"target\"".to_owned()),
            Just("\"ts\"".to_owned()),
            Just("\"other\"".to_owned()),
            Just("\"a\\\"b\"".to_owned()),
            Just("\"\\u00e9\"".to_owned()),
            Just("\"é😀\"".to_owned()),
            Just("\"\"".to_owned()),
            Just("\"\t\"".to_owned()),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("[1]".to_owned()),
            Just("{}".to_owned()),
            Just("0".to_owned()),
            Just("-7".to_owned()),
            Just("007".to_owned()),
            Just("1.5".to_owned()),
            Just("2e3".to_owned()),
            Just("-".to_owned()),
            Just("12345678901234567890".to_owned()),
            Just("1700000000000".to_owned()),
            Just("-0".to_owned()),
            Just("-0.0".to_owned()),
            Just("1E2".to_owned()),
            Just("123456789012345678".to_owned()),
            Just("-123456789012345678".to_owned()),
            Just("\"typ\\u0065\"".to_owned()),
            Just("\"\\n\"".to_owned()),
            "[a-z0-9-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    /// An event whose fields are mostly valid, each of them sometimes any piece instead, with
    /// optional `target`, `ts` and unknown fields, sometimes a field twice, and whitespace.
    fn object() -> impl Strategy<Value = String> {
        let id = || prop_oneof![3 => "[a-zA-Z0-9é-]{1,10}".prop_map(|s| format!("\"{s}\"")), 1 => piece()];
        let kind = prop_oneof![
            3 => prop_oneof![Just("\"reservation\""), Just("\"association\""), Just("\"cancellation\"")]
                .prop_map(str::to_owned),
            1 => piece(),
        ];
        let field = |name: &'static str, value: BoxedStrategy<String>| {
            proptest::option::weighted(0.9, value).prop_map(move |v| v.map(|v| (name, v)))
        };
        (
            (
                field("type", kind.boxed()),
                field("event_id", id().boxed()),
                field("reservation_no", id().boxed()),
                field("user_id", id().boxed()),
            ),
            (
                proptest::option::of(id()).prop_map(|v| v.map(|v| ("target", v))),
                proptest::option::of(prop_oneof![Just("1700000000000".to_owned()), piece()])
                    .prop_map(|v| v.map(|v| ("ts", v))),
                proptest::option::of(piece()).prop_map(|v| v.map(|v| ("extra", v))),
                proptest::option::of((0usize..6, piece())),
            ),
            prop_oneof![Just(""), Just(" "), Just("\r\n\t")],
        )
            .prop_map(|((a, b, c, d), (t, ts, extra, twice), ws)| {
                let mut fields: Vec<(&str, String)> =
                    [a, b, c, d, t, ts, extra].into_iter().flatten().collect();
                if let Some((at, value)) = twice
                    && let Some((name, _)) = fields.get(at % fields.len().max(1)).cloned()
                {
                    fields.push((name, value));
                }
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}"))
                    .collect();
                format!("{ws}{{{}{ws}}}{ws}", body.join(","))
            })
    }

    proptest! {
        /// On any input, the decode with the scan gives what serde alone gives: the same
        /// event, or the same refusal in the same words.
        #[test]
        fn the_scan_and_serde_agree_on_random_pieces(pieces in proptest::collection::vec(piece(), 0..14)) {
            let text = pieces.concat();
            prop_assert_eq!(Event::decode(text.as_bytes()), by_serde(text.as_bytes()), "{}", text);
        }

        #[test]
        fn the_scan_and_serde_agree_on_objects(text in object()) {
            prop_assert_eq!(Event::decode(text.as_bytes()), by_serde(text.as_bytes()), "{}", text);
        }
    }

    /// The common case is scanned (not left to serde), so the fast path is the one measured.
    #[test]
    fn a_plain_event_is_scanned() {
        for json in [
            r#"{"type":"reservation","event_id":"evt-1","reservation_no":"R-1","user_id":"u-1"}"#,
            r#"{"type":"association","event_id":"e2","reservation_no":"R-1","user_id":"u","target":"dev","ts":1700000000000}"#,
            r#" { "type" : "cancellation" , "event_id" : "é", "reservation_no":"R-😀","user_id":"u","ts":-5 } "#,
        ] {
            let wire = super::scan(json).expect("the common shape");
            let event = Event::try_from(wire);
            assert!(event.is_ok(), "{json}: {event:?}");
            assert_eq!(event, by_serde(json.as_bytes()), "{json}");
        }
    }
}
