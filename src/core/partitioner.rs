//! Routing keys to partitions: the Java-compatible `abs-hash-mod-N` (the default) and Kafka's
//! `murmur2`.
//!
//! Pure and synchronous: no I/O, no clock.

use std::fmt;
use std::str::FromStr;

pub use super::ids::{Partition, PartitionCount};

/// How keys are mapped to partitions; stored by its [`Partitioner::name`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Partitioner {
    /// `|String.hashCode()| mod N`, equal to Java's `Math.abs(key.hashCode() % n)`.
    #[default]
    AbsHashModN,
    /// Kafka's Java default: `(murmur2(key bytes) & 0x7fffffff) mod N`.
    Murmur2,
}

impl Partitioner {
    /// The partition of `key` among `n` partitions; always `< n`.
    pub fn partition(self, key: &str, n: PartitionCount) -> Partition {
        let n = n.get();
        Partition(match self {
            Self::AbsHashModN => java_hash_code(key).unsigned_abs() % n,
            Self::Murmur2 => (murmur2(key.as_bytes()) as u32 & 0x7fff_ffff) % n,
        })
    }

    /// The arithmetic that puts `key` in its partition, for people: e.g.
    /// `|hashCode("R-1")| = |-1866789456| = 1866789456, mod 6 = 0`.
    pub fn explain(self, key: &str, n: PartitionCount) -> String {
        let p = self.partition(key, n);
        match self {
            Self::AbsHashModN => {
                let h = java_hash_code(key);
                format!(
                    "|hashCode({key:?})| = |{h}| = {}, mod {n} = {p}",
                    h.unsigned_abs()
                )
            }
            Self::Murmur2 => {
                let h = murmur2(key.as_bytes());
                format!(
                    "murmur2({key:?}) & 0x7fffffff = {}, mod {n} = {p}",
                    h as u32 & 0x7fff_ffff
                )
            }
        }
    }

    /// The name used on the command line and in stored metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::AbsHashModN => "abs-hash-mod-n",
            Self::Murmur2 => "murmur2",
        }
    }
}

impl fmt::Display for Partitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Partitioner> for &'static str {
    fn from(p: Partitioner) -> Self {
        p.name()
    }
}

impl TryFrom<String> for Partitioner {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for Partitioner {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "abs-hash-mod-n" => Ok(Self::AbsHashModN),
            "murmur2" => Ok(Self::Murmur2),
            other => Err(format!(
                "unknown partitioner `{other}`; use abs-hash-mod-n or murmur2"
            )),
        }
    }
}

/// Java's `String.hashCode()`: `h = 31*h + unit` over UTF-16 code units, wrapping at 32 bits.
pub fn java_hash_code(key: &str) -> i32 {
    let step = |h: i32, unit: u16| h.wrapping_mul(31).wrapping_add(i32::from(unit));
    // An ASCII byte is its own UTF-16 unit; reservation numbers are ASCII in practice.
    if key.is_ascii() {
        key.bytes().fold(0, |h, b| step(h, u16::from(b)))
    } else {
        key.encode_utf16().fold(0, step)
    }
}

/// Kafka's `Utils.murmur2` (seed `0x9747b28c`), as the Java client computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(v: u32) -> PartitionCount {
        PartitionCount::new(v).unwrap()
    }

    #[test]
    fn the_explanation_ends_in_the_partition_it_explains() {
        // "Aa" and "BB" share Java's hash code 2112.
        assert_eq!(
            Partitioner::AbsHashModN.explain("Aa", n(6)),
            "|hashCode(\"Aa\")| = |2112| = 2112, mod 6 = 0"
        );
        for key in ["R-1", "R-<script>", "", "ünï"] {
            for p in [Partitioner::AbsHashModN, Partitioner::Murmur2] {
                let text = p.explain(key, n(7));
                assert!(
                    text.ends_with(&format!("mod 7 = {}", p.partition(key, n(7)))),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn spec_vectors() {
        // key, hashCode, partitions for N = 3, 4, 5, 10 (contract §3).
        let table: &[(&str, i32, [u32; 4])] = &[
            ("polygenelubricants", i32::MIN, [2, 0, 3, 8]),
            ("R-0001", -1_904_340_836, [2, 0, 1, 6]),
            ("reservation-42", 266_160_159, [0, 3, 4, 9]),
            ("预约-7", 1_194_318_796, [1, 0, 1, 6]),
        ];
        for &(key, hash, parts) in table {
            assert_eq!(java_hash_code(key), hash, "hashCode of {key}");
            for (count, want) in [3, 4, 5, 10].into_iter().zip(parts) {
                let got = Partitioner::AbsHashModN.partition(key, n(count));
                assert_eq!(got, Partition(want), "{key} with N={count}");
            }
        }
    }

    #[test]
    fn java_hash_uses_utf16_units() {
        // U+1F600 is a surrogate pair in UTF-16: two units, not one code point.
        assert_eq!(java_hash_code("😀"), 0xd83d * 31 + 0xde00);
        assert_eq!(java_hash_code(""), 0);
    }

    #[test]
    fn murmur2_matches_kafka() {
        // Kafka's UtilsTest and the Java client's partitioner agree on these.
        assert_eq!(murmur2(b"kafka") as u32, 0xd067_cf64);
        assert_eq!(murmur2(b"") as u32, 0x106e_08d9);
        assert_eq!(murmur2(b"21") as u32, -973_932_308i32 as u32);
        assert_eq!(murmur2(b"foobar") as u32, -790_332_482i32 as u32);
        assert_eq!(
            murmur2(b"a-little-bit-long-string") as u32,
            -985_981_536i32 as u32
        );
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as u32,
            -1_486_304_829i32 as u32
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as u32,
            -58_897_971i32 as u32
        );
        assert_eq!(murmur2(b"abc") as u32, 479_470_107);
    }

    proptest! {
        #[test]
        fn partition_in_range_and_stable(key in ".{0,64}", count in 1u32..10_000) {
            for p in [Partitioner::AbsHashModN, Partitioner::Murmur2] {
                let a = p.partition(&key, n(count));
                prop_assert!(a.0 < count);
                prop_assert_eq!(a, p.partition(&key.clone(), n(count)));
            }
        }

        /// The ASCII path gives what the UTF-16 fold gives.
        #[test]
        fn java_hash_is_the_fold_over_utf16_units(key in "[ -~]{0,40}|.{0,40}") {
            let units = key.encode_utf16().fold(0i32, |h, unit| {
                h.wrapping_mul(31).wrapping_add(i32::from(unit))
            });
            prop_assert_eq!(java_hash_code(&key), units);
        }

        #[test]
        fn abs_hash_equals_java_math_abs_of_remainder(key in ".{0,64}", count in 1u32..10_000) {
            // Java: Math.abs(key.hashCode() % n), computed in i64 so nothing overflows.
            let java = (i64::from(java_hash_code(&key)) % i64::from(count)).abs();
            prop_assert_eq!(i64::from(Partitioner::AbsHashModN.partition(&key, n(count)).0), java);
        }
    }
}
