//! kcat-style ranges of a partition (`-o beginning|end|<offset>|-<n>|s@<ms>`, `e@<ms>`), as
//! every reader of a log takes them ([`crate::log::Logs::scan`]).

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    #[default]
    Beginning,
    End,
    Offset(u64),
    /// This many records before the end.
    FromEnd(u64),
    /// The first record at or after this time (epoch ms).
    Timestamp(i64),
}

/// A kcat-style range: a start, and optionally a time at which to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffsetSpec {
    pub start: Start,
    /// Stop before the first record at or after this time (epoch ms).
    pub end_timestamp: Option<i64>,
}

impl OffsetSpec {
    /// Parses the values of repeated `-o` flags: at most one start (`beginning`, `end`,
    /// `<offset>`, `-<n>`, `s@<ms>`) and at most one `e@<ms>`.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        let mut spec = OffsetSpec::default();
        let mut start_seen = false;
        for v in values {
            if let Some(ms) = v.strip_prefix("e@") {
                if spec.end_timestamp.is_some() {
                    return Err("more than one `-o e@<ms>`; give one".into());
                }
                spec.end_timestamp = Some(parse_ms(ms, v)?);
                continue;
            }
            if start_seen {
                return Err(format!(
                    "more than one start offset (`{v}`); give one, plus an optional e@<ms>"
                ));
            }
            start_seen = true;
            spec.start = match v.as_str() {
                "beginning" => Start::Beginning,
                "end" => Start::End,
                s if s.starts_with("s@") => Start::Timestamp(parse_ms(&s[2..], v)?),
                s if s.starts_with('-') => Start::FromEnd(s[1..].parse().map_err(|_| bad(v))?),
                s => Start::Offset(s.parse().map_err(|_| bad(v))?),
            };
        }
        Ok(spec)
    }

    /// Whether the spec reads every record.
    pub fn is_everything(&self) -> bool {
        self.start == Start::Beginning && self.end_timestamp.is_none()
    }
}

fn bad(v: &str) -> String {
    format!("bad offset `{v}`; use beginning, end, <offset>, -<n>, s@<epoch-ms> or e@<epoch-ms>")
}

fn parse_ms(ms: &str, v: &str) -> Result<i64, String> {
    ms.parse().map_err(|_| bad(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<OffsetSpec, String> {
        OffsetSpec::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_kcat_offsets() {
        assert_eq!(p(&[]).unwrap(), OffsetSpec::default());
        assert_eq!(p(&["end"]).unwrap().start, Start::End);
        assert_eq!(p(&["42"]).unwrap().start, Start::Offset(42));
        assert_eq!(p(&["-5"]).unwrap().start, Start::FromEnd(5));
        assert_eq!(
            p(&["s@1700000000000"]).unwrap().start,
            Start::Timestamp(1_700_000_000_000)
        );
        let both = p(&["s@10", "e@20"]).unwrap();
        assert_eq!(
            (both.start, both.end_timestamp),
            (Start::Timestamp(10), Some(20))
        );
        assert!(p(&["e@5"]).unwrap().start == Start::Beginning);
        for bad in [&["x"][..], &["-"], &["s@x"], &["1", "2"], &["e@1", "e@2"]] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
        assert!(p(&[]).unwrap().is_everything());
        assert!(!p(&["e@1"]).unwrap().is_everything());
    }
}
