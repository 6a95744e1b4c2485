//! The common shape of an input event, read without a general JSON parser: one flat object
//! whose values are plain strings (no escapes) or small integers, every field valid. Anything
//! else — an escape, a nested value, a fraction, `null`, a duplicate field, a syntax error, a
//! field of the wrong type, an empty or overlong id, an unknown type — is left to serde
//! ([`scan`] returns `None`), so what is accepted, refused and how a refusal is worded stays
//! serde's; a property test holds the two to the same answer. In a profile of the core loop,
//! serde's decode was two thirds of the work per event. Pure: no I/O.

use compact_str::CompactString;

use super::event::{Event, EventKind, ReservationNo, valid_id};

/// A value of the common shape.
#[derive(Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    Int(i64),
}

/// The event, if `text` has the common shape and every field is valid; `None` sends it to
/// serde.
pub(super) fn scan(text: &str) -> Option<Event> {
    let b = text.as_bytes();
    let mut at = skip_ws(b, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(b, at + 1);
    let mut fields: [Option<Val<'_>>; 6] = [None; 6];
    if b.get(at) == Some(&b'}') {
        // No field: serde names the first one missing.
        return None;
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
            "type" => 0,
            "event_id" => 1,
            "reservation_no" => 2,
            "user_id" => 3,
            "target" => 4,
            "ts" => 5,
            _ => usize::MAX,
        };
        if let Some(field) = fields.get_mut(slot) {
            if field.is_some() {
                // serde's "duplicate field" error.
                return None;
            }
            *field = Some(value);
        }
        at = skip_ws(b, next);
        match b.get(at)? {
            b',' => at = skip_ws(b, at + 1),
            b'}' if end(b, at + 1) => break,
            _ => return None,
        }
    }
    let [kind, event_id, reservation_no, user_id, target, ts] = fields;
    let kind = match kind? {
        Val::Str("reservation") => EventKind::Reservation,
        Val::Str("association") => EventKind::Association,
        Val::Str("cancellation") => EventKind::Cancellation,
        _ => return None,
    };
    let id = |v: Option<Val<'_>>| match v? {
        Val::Str(s) if valid_id(s) => Some(CompactString::from(s)),
        _ => None,
    };
    // A target is checked whatever the kind, as serde's reading does, and kept only on an
    // association.
    let target = match target {
        None => None,
        Some(_) => Some(id(target)?),
    };
    let ts = match ts {
        None => None,
        Some(Val::Int(n)) => Some(n),
        Some(Val::Str(_)) => return None,
    };
    Some(Event {
        kind,
        event_id: id(event_id)?,
        reservation_no: ReservationNo(id(reservation_no)?),
        user_id: id(user_id)?,
        target: target.filter(|_| kind == EventKind::Association),
        ts,
    })
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
#[inline(always)]
fn string(text: &str, at: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let close = plain_end(b, start)?;
    if b[close] != b'"' {
        return None;
    }
    // Quotes are ASCII: both ends are char boundaries.
    Some((&text[start..close], close + 1))
}

/// The position of the first byte from `from` that ends a plain string: a quote, a backslash
/// or a control character. Eight bytes at a time: in each word, a byte equal to `c` is a zero
/// byte of `word ^ c…c`, and a zero byte, or one below 0x20, sets its high bit in
/// `(v - n…n) & !v & 0x80…80`. A borrow only ever runs upward from a byte that is itself
/// found, so the lowest bit set names the first such byte (the bytes are read little-endian).
fn plain_end(b: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGHS;
    let mut at = from;
    while let Some(word) = b.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let v = u64::from_le_bytes(*word);
        let found = below(v ^ (ONES * u64::from(b'"')), 1)
            | below(v ^ (ONES * u64::from(b'\\')), 1)
            | below(v, 0x20);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|i| at + i)
}

/// A value at `at`: a plain string, or an integer of at most 18 digits (no fraction, no
/// exponent, no leading zero), and the position after it.
fn value(text: &str, at: usize) -> Option<(Val<'_>, usize)> {
    let b = text.as_bytes();
    match *b.get(at)? {
        b'"' => string(text, at).map(|(s, next)| (Val::Str(s), next)),
        b'-' | b'0'..=b'9' => {
            let digits_from = at + usize::from(b[at] == b'-');
            // Counted and summed in one pass; the sum is used only when it has at most 18
            // digits, which cannot overflow.
            let (mut digits, mut magnitude) = (0, 0i64);
            while let Some(d) = b.get(digits_from + digits).filter(|c| c.is_ascii_digit()) {
                magnitude = magnitude.wrapping_mul(10).wrapping_add(i64::from(d - b'0'));
                digits += 1;
            }
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
            let n = if b[at] == b'-' { -magnitude } else { magnitude };
            Some((Val::Int(n), next))
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
            // Around the id limit (128 characters), in one and in two bytes a character.
            "[a-z]{126,130}".prop_map(|s| format!("\"{s}\"")),
            "é{62,66}".prop_map(|s| format!("\"{s}\"")),
            "é{126,130}".prop_map(|s| format!("\"{s}\"")),
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

        /// The word-at-a-time search finds what a byte-by-byte one finds, from any start, in
        /// bytes dense with its targets, their neighbours and the high half.
        #[test]
        fn the_string_end_is_found_as_byte_by_byte(
            bytes in proptest::collection::vec(
                prop_oneof![
                    Just(b'"'), Just(b'\\'), Just(0x00u8), Just(0x1f), Just(0x20), Just(0x21),
                    Just(b'#'), Just(b'['), Just(b']'), Just(0x7f), Just(0x80), Just(0xa2),
                    Just(0xdc), Just(0xff), Just(0x01), 0x20u8..0x7f,
                ],
                0..40,
            ),
            from in 0usize..40,
        ) {
            let from = from.min(bytes.len());
            let naive = bytes[from..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .map(|i| from + i);
            prop_assert_eq!(super::plain_end(&bytes, from), naive);
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
            let event = super::scan(json).expect("the common shape");
            assert_eq!(Ok(event), by_serde(json.as_bytes()), "{json}");
        }
    }
}
