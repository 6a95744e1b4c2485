//! Ownership records (`reservation-owners`, contract §4 and §7): who serves each partition, and the
//! table every member folds them into. An owner publishes its record once its epoch marker is
//! durable and before it reports ready, and the same record with `"url": null` when it lets the
//! partition go; the table keeps, per partition, the record of the highest epoch. Pure.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::ids::{Epoch, Offset, Partition, PartitionCount};
use super::partitioner::Partitioner;

/// One ownership record, keyed on the log by its partition number in decimal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipRecord {
    pub partition: Partition,
    pub epoch: Epoch,
    /// Who owns it (host and process), as in its epoch marker.
    pub owner: String,
    /// The base URL at which the owner serves the partition; `None` once released (and for
    /// an owner without an HTTP listener).
    pub url: Option<String>,
    /// Epoch milliseconds when the record was written.
    pub ts: i64,
    /// Whether the owner still holds the partition (`false` once released). Records written
    /// without it hold the partition while they carry a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
    /// The offset of the owner's epoch marker in the partition's changelog: an owner of a lower
    /// epoch that sees this record, released before it noticed, reads that one record to learn
    /// whether its own writes are fenced (records of earlier versions have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<Offset>,
    /// With a deployment key (`--http-token-file`): HMAC-SHA-256 of the record without this
    /// field, under the key, in hex. Members with the key fold only records signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// A record on `reservation-owners` that is not an ownership record.
#[derive(Debug, thiserror::Error)]
#[error("not an ownership record: {0}")]
pub struct BadOwnership(String);

impl OwnershipRecord {
    /// The record's key on the log: the partition number in decimal.
    pub fn key(&self) -> String {
        self.partition.to_string()
    }

    /// The record as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ownership record always serialises")
    }

    /// Decodes a record's value.
    pub fn decode(value: &[u8]) -> Result<Self, BadOwnership> {
        serde_json::from_slice(value).map_err(|e| BadOwnership(e.to_string()))
    }

    /// Whether an owner holds the partition under this record (it may have died holding it).
    pub fn is_held(&self) -> bool {
        self.held.unwrap_or(self.url.is_some())
    }

    /// The MAC of the record without its signature, under `key`.
    fn mac(&self, key: &OwnersKey) -> Hmac<Sha256> {
        let unsigned = OwnershipRecord {
            sig: None,
            ..self.clone()
        };
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes a key of any length");
        mac.update(&unsigned.to_json());
        mac
    }

    /// Signs the record with the deployment's key.
    pub fn sign(&mut self, key: &OwnersKey) {
        let tag = self.mac(key).finalize().into_bytes();
        self.sig = Some(tag.iter().map(|b| format!("{b:02x}")).collect());
    }

    /// Whether the record carries a signature made with `key` (compared in constant time).
    pub fn is_signed_with(&self, key: &OwnersKey) -> bool {
        let Some(tag) = self.sig.as_deref().and_then(unhex) else {
            return false;
        };
        self.mac(key).verify_slice(&tag).is_ok()
    }
}

/// The deployment's key for ownership records (the members' shared `--http-token-file`
/// token); never printed.
#[derive(Clone)]
pub struct OwnersKey(std::sync::Arc<[u8]>);

impl OwnersKey {
    pub fn new(key: &[u8]) -> Self {
        OwnersKey(key.into())
    }
}

impl std::fmt::Debug for OwnersKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnersKey(…)")
    }
}

/// Bytes from lower-case or upper-case hex; `None` for anything else.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Key of the repartition record on `reservation-owners`: one key, so compaction keeps the
/// latest.
pub const REPARTITION_KEY: &str = "__ordo.repartition";

/// How far a change of N on Kafka (`ordo repartition --brokers --apply`) has come. Every
/// member reads it before it joins the group and refuses to start while a change is under way.
///
/// Two paths: the rebuild (`Copying`, `Copied`, `Rebuilt`) rewrites the three N-partitioned
/// topics; growing in place (`Growing`, `Moving`) adds partitions and moves only state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// In place: partitions are being added to the three topics; nothing else has changed.
    Growing,
    /// In place: the topics have M partitions; the state of the keys that change partition is
    /// being written into their new changelog partitions and tombstoned in the old ones.
    Moving,
    /// Copying the N-partitioned topics into staging topics; the originals are untouched.
    Copying,
    /// The staging copies are complete: the originals may be deleted and rebuilt with M
    /// partitions from them.
    Copied,
    /// The originals hold the new layout; the staging topics may go.
    Rebuilt,
    /// Finished: the deployment runs at N = `to`.
    Done,
}

/// The record of a change of N on Kafka, written at each phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepartitionRecord {
    pub from: PartitionCount,
    pub to: PartitionCount,
    pub phase: Phase,
    /// Above every epoch of the old changelog: the markers of the new one carry it, so a
    /// zombie of the old layout is fenced in the new one too.
    pub epoch: Epoch,
    /// Who runs the change (host and process).
    pub by: String,
    /// Epoch milliseconds when the record was written.
    pub ts: i64,
    /// How the input topic's records are routed, layer by layer, once this change is done
    /// (while a rebuild is under way: before it). Empty: every record is routed with the
    /// current N. Growing in place appends a layer; a rebuild routes the whole input anew and
    /// leaves it empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Layer>,
    /// A rebuild, once its copy is made: what it copied, which the rebuilt topics are checked
    /// against, and where the originals ended, so that a record written to them since (by a
    /// producer or a member still running) stops the move before they are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied: Option<Copied>,
}

/// What a rebuild copied from the N-partitioned topics into staging.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copied {
    /// Input records, dead letters and reservations (state records) copied.
    pub records: u64,
    pub dead_letters: u64,
    pub reservations: u64,
    /// Per old partition, the offset after the last input record copied, and after the last
    /// dead letter.
    pub events_end: Vec<Offset>,
    pub dead_letters_end: Vec<Offset>,
}

/// One layout of the input topic's history: from `starts[p]` on (up to the next layer's
/// start), partition `p`'s records were routed with N = `partitions`. Growing N in place
/// leaves the records written under the old N where they are, so the input holds one layer per
/// growth; every reader that routes records again (replay, a rebuild) takes them layer by
/// layer, which keeps each key's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    pub partitions: PartitionCount,
    /// Per partition of this layout, the first offset routed with it.
    pub starts: Vec<Offset>,
}

impl Layer {
    /// The first layout of an input: every partition from its beginning.
    pub fn base(n: PartitionCount) -> Self {
        Layer {
            partitions: n,
            starts: vec![Offset(0); n.get() as usize],
        }
    }
}

/// The layer (index into `layers`) the record at `offset` of partition `p` belongs to: the
/// last one that has `p` and starts at or before `offset`. 0 when `layers` is empty.
pub fn layer_of(layers: &[Layer], p: Partition, offset: Offset) -> usize {
    layers
        .iter()
        .rposition(|l| l.starts.get(p.index()).is_some_and(|s| offset >= *s))
        .unwrap_or(0)
}

#[derive(Serialize, Deserialize)]
struct RepartitionWire {
    repartition: RepartitionRecord,
}

impl RepartitionRecord {
    /// The record as JSON, wrapped so it cannot be mistaken for an ownership record.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&RepartitionWire {
            repartition: self.clone(),
        })
        .expect("a repartition record always serialises")
    }

    /// Whether a change of N is under way: members must not start.
    pub fn in_progress(&self) -> bool {
        self.phase != Phase::Done
    }
}

/// Key of the layout record on `reservation-owners`: one key, so compaction keeps the latest.
pub const LAYOUT_KEY: &str = "__ordo.layout";

/// How a Kafka deployment routes keys, recorded by the first command that writes to it
/// (`ordo topics apply`, a member, `ordo produce`): every later command with another
/// `--partitioner` is refused, and one without `--partitioner` adopts it, as a data dir's
/// stored partitioner is on the embedded log. N needs no record: it is the input topic's
/// partition count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutRecord {
    pub partitioner: Partitioner,
    /// Who wrote it (host and process).
    pub by: String,
    /// Epoch milliseconds when the record was written.
    pub ts: i64,
}

#[derive(Serialize, Deserialize)]
struct LayoutWire {
    layout: LayoutRecord,
}

impl LayoutRecord {
    /// The record as JSON, wrapped so it cannot be mistaken for an ownership record.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&LayoutWire {
            layout: self.clone(),
        })
        .expect("a layout record always serialises")
    }
}

/// Prefix of the key of a lease record on `reservation-owners`; the sequence number and the
/// holder follow, so compaction keeps every claim (the fold needs the order of rival claims).
pub const LEASE_KEY_PREFIX: &str = "__ordo.lease/";

/// A claim to, or the release of, the deployment's one lease: the tools that change a Kafka
/// deployment (`repartition --apply`, `replay --apply`) hold it while they work, so two of
/// them never run at once. Claims are numbered: a claim takes the lease when its number is
/// above the current one's and the lease is free (or the claim takes it over); of two rival
/// claims with one number, the first on the log wins. Every reader folds the records in log
/// order with [`Lease::apply`], so all agree on the holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub seq: u64,
    /// Who claims it (host and process), unique to one run of a tool.
    pub holder: String,
    /// What it is for, for operators: the command.
    pub tool: String,
    /// Epoch milliseconds when the record was written.
    pub ts: i64,
    /// Taken from a holder that did not let go (killed), on the operator's word.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub takeover: bool,
    /// The holder let the lease go.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

#[derive(Serialize, Deserialize)]
struct LeaseWire {
    lease: LeaseRecord,
}

impl LeaseRecord {
    /// The record's key on the log.
    pub fn key(&self) -> String {
        format!("{LEASE_KEY_PREFIX}{}/{}", self.seq, self.holder)
    }

    /// The record as JSON, wrapped so it cannot be mistaken for an ownership record.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&LeaseWire {
            lease: self.clone(),
        })
        .expect("a lease record always serialises")
    }

    /// The release of this claim.
    pub fn released(&self, ts: i64) -> LeaseRecord {
        LeaseRecord {
            released: true,
            takeover: false,
            ts,
            ..self.clone()
        }
    }
}

/// The deployment's lease as the log says: the latest claim that took it, released or not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    pub current: Option<LeaseRecord>,
}

impl Lease {
    /// Folds in the next lease record of the log; returns whether it changed the lease.
    pub fn apply(&mut self, r: LeaseRecord) -> bool {
        let taken = match &self.current {
            None => !r.released,
            Some(c) if r.released => c.seq == r.seq && c.holder == r.holder && !c.released,
            Some(c) => r.seq > c.seq && (c.released || r.takeover),
        };
        if taken {
            self.current = Some(r);
        }
        taken
    }

    /// The claim that holds the lease now, if any.
    pub fn holder(&self) -> Option<&LeaseRecord> {
        self.current.as_ref().filter(|c| !c.released)
    }

    /// The number a new claim takes.
    pub fn next_seq(&self) -> u64 {
        self.current.as_ref().map_or(1, |c| c.seq + 1)
    }

    /// Whether `claim` holds the lease now.
    pub fn is_held_by(&self, claim: &LeaseRecord) -> bool {
        self.holder()
            .is_some_and(|c| c.seq == claim.seq && c.holder == claim.holder)
    }
}

/// One record of `reservation-owners`, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnersEntry {
    Owner(OwnershipRecord),
    Repartition(RepartitionRecord),
    Layout(LayoutRecord),
    Lease(LeaseRecord),
}

impl OwnersEntry {
    /// Decodes a record of `reservation-owners` from its key and value.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, BadOwnership> {
        if key == REPARTITION_KEY.as_bytes() {
            return serde_json::from_slice::<RepartitionWire>(value)
                .map(|w| OwnersEntry::Repartition(w.repartition))
                .map_err(|e| BadOwnership(e.to_string()));
        }
        if key.starts_with(LEASE_KEY_PREFIX.as_bytes()) {
            return serde_json::from_slice::<LeaseWire>(value)
                .map(|w| OwnersEntry::Lease(w.lease))
                .map_err(|e| BadOwnership(e.to_string()));
        }
        if key == LAYOUT_KEY.as_bytes() {
            return serde_json::from_slice::<LayoutWire>(value)
                .map(|w| OwnersEntry::Layout(w.layout))
                .map_err(|e| BadOwnership(e.to_string()));
        }
        OwnershipRecord::decode(value).map(OwnersEntry::Owner)
    }
}

/// Per partition, the ownership record of the highest epoch seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerTable {
    records: Vec<Option<OwnershipRecord>>,
}

impl OwnerTable {
    /// An empty table for `n` partitions.
    pub fn new(n: PartitionCount) -> Self {
        OwnerTable {
            records: vec![None; n.get() as usize],
        }
    }

    /// Folds in the next record of the log; returns whether it changed the table. A record of
    /// a lower epoch than the one held is stale (a former owner's late release); at the same
    /// epoch the later record wins (the owner's own release). Records for partitions outside
    /// the table are ignored.
    pub fn apply(&mut self, record: OwnershipRecord) -> bool {
        let Some(slot) = self.records.get_mut(record.partition.index()) else {
            return false;
        };
        match slot {
            Some(held) if held.epoch > record.epoch => false,
            _ => {
                *slot = Some(record);
                true
            }
        }
    }

    /// The record held for `p`.
    pub fn get(&self, p: Partition) -> Option<&OwnershipRecord> {
        self.records.get(p.index()).and_then(Option::as_ref)
    }

    /// The URL that serves `p`, if any owner holds it now.
    pub fn url(&self, p: Partition) -> Option<&str> {
        self.get(p).and_then(|r| r.url.as_deref())
    }

    /// Every partition's record, in partition order.
    pub fn iter(&self) -> impl Iterator<Item = (Partition, Option<&OwnershipRecord>)> {
        self.records
            .iter()
            .enumerate()
            .map(|(p, r)| (Partition(p as u32), r.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(partition: u32, epoch: u64, url: Option<&str>) -> OwnershipRecord {
        OwnershipRecord {
            partition: Partition(partition),
            epoch: Epoch(epoch),
            owner: format!("host/{epoch}"),
            url: url.map(str::to_owned),
            ts: 1,
            held: None,
            marker: None,
            sig: None,
        }
    }

    #[test]
    fn the_highest_epoch_wins_and_a_release_clears_its_own_epoch_only() {
        let mut t = OwnerTable::new(PartitionCount::new(2).unwrap());
        assert!(t.apply(record(0, 1, Some("http://a"))));
        assert!(t.apply(record(0, 2, Some("http://b"))));
        // The former owner's release comes late: ignored.
        assert!(!t.apply(record(0, 1, None)));
        assert_eq!(t.url(Partition(0)), Some("http://b"));
        // The owner's own release clears it.
        assert!(t.apply(record(0, 2, None)));
        assert_eq!(t.url(Partition(0)), None);
        assert_eq!(t.get(Partition(0)).unwrap().epoch, Epoch(2));
        assert!(!t.apply(record(7, 9, Some("http://c"))));
        assert_eq!(t.url(Partition(1)), None);
    }

    #[test]
    fn round_trips_through_json() {
        let r = record(3, 4, Some("http://ordo-0.ordo:8080"));
        assert_eq!(OwnershipRecord::decode(&r.to_json()).unwrap(), r);
        assert_eq!(r.key(), "3");
        let released = record(3, 4, None);
        assert!(
            String::from_utf8(released.to_json())
                .unwrap()
                .contains("\"url\":null")
        );
        assert!(OwnershipRecord::decode(b"{}").is_err());
        // Held: said outright, or (records without the field) while there is a URL.
        assert!(r.is_held() && !released.is_held());
        let no_http = OwnershipRecord {
            held: Some(true),
            ..released.clone()
        };
        assert_eq!(
            OwnershipRecord::decode(&no_http.to_json()).unwrap(),
            no_http
        );
        assert!(no_http.is_held());
        // Where the owner's epoch marker is; records of earlier versions have no such field.
        let with_marker = OwnershipRecord {
            marker: Some(Offset(17)),
            ..r.clone()
        };
        let json = String::from_utf8(with_marker.to_json()).unwrap();
        assert!(json.contains("\"marker\":17"), "{json}");
        assert_eq!(
            OwnershipRecord::decode(json.as_bytes()).unwrap(),
            with_marker
        );
        assert!(!String::from_utf8(r.to_json()).unwrap().contains("marker"));
    }

    #[test]
    fn repartition_records_are_told_apart_by_their_key() {
        let r = RepartitionRecord {
            from: PartitionCount::new(4).unwrap(),
            to: PartitionCount::new(6).unwrap(),
            phase: Phase::Copied,
            epoch: Epoch(9),
            by: "host/1".into(),
            ts: 5,
            layers: Vec::new(),
            copied: None,
        };
        let json = r.to_json();
        assert!(String::from_utf8_lossy(&json).contains("\"phase\":\"copied\""));
        // Records of earlier versions have no layers, and an empty list is not written.
        assert!(!String::from_utf8_lossy(&json).contains("layers"));
        let grown = RepartitionRecord {
            phase: Phase::Moving,
            layers: vec![
                Layer::base(r.from),
                Layer {
                    partitions: r.to,
                    starts: [7, 0, 3, 2, 0, 0].map(Offset).to_vec(),
                },
            ],
            ..r.clone()
        };
        assert_eq!(
            OwnersEntry::decode(REPARTITION_KEY.as_bytes(), &grown.to_json()).unwrap(),
            OwnersEntry::Repartition(grown)
        );
        assert_eq!(
            OwnersEntry::decode(REPARTITION_KEY.as_bytes(), &json).unwrap(),
            OwnersEntry::Repartition(r.clone())
        );
        assert!(r.in_progress());
        assert!(OwnersEntry::decode(b"0", &json).is_err());
        let owner = record(0, 1, Some("http://a"));
        assert_eq!(
            OwnersEntry::decode(b"0", &owner.to_json()).unwrap(),
            OwnersEntry::Owner(owner)
        );
    }

    #[test]
    fn only_a_record_signed_with_the_key_and_unchanged_since_is_admitted() {
        let key = OwnersKey::new(b"members-share-this");
        let mut r = record(2, 7, Some("http://10.0.0.7:8080"));
        assert!(!r.is_signed_with(&key), "unsigned");
        r.sign(&key);
        assert!(r.is_signed_with(&key));
        assert_eq!(r.sig.as_deref().map(str::len), Some(64));
        // The signature survives the log; any changed field, or another key, breaks it.
        assert!(
            OwnershipRecord::decode(&r.to_json())
                .unwrap()
                .is_signed_with(&key)
        );
        assert!(!r.is_signed_with(&OwnersKey::new(b"members-share-that")));
        for forged in [
            OwnershipRecord {
                epoch: Epoch(8),
                ..r.clone()
            },
            OwnershipRecord {
                url: Some("http://10.0.0.9:8080".into()),
                ..r.clone()
            },
            OwnershipRecord {
                held: Some(false),
                ..r.clone()
            },
            OwnershipRecord {
                partition: Partition(3),
                ..r.clone()
            },
            OwnershipRecord {
                sig: Some("zz".repeat(32)),
                ..r.clone()
            },
            OwnershipRecord {
                sig: Some("00".into()),
                ..r.clone()
            },
        ] {
            assert!(!forged.is_signed_with(&key), "{forged:?}");
        }
        assert_eq!(format!("{key:?}"), "OwnersKey(…)");
    }

    #[test]
    fn a_layout_record_decodes_by_its_key_and_names_its_partitioner() {
        let layout = LayoutRecord {
            partitioner: Partitioner::Murmur2,
            by: "host/1".into(),
            ts: 3,
        };
        let json = layout.to_json();
        assert_eq!(
            String::from_utf8_lossy(&json),
            r#"{"layout":{"partitioner":"murmur2","by":"host/1","ts":3}}"#
        );
        assert_eq!(
            OwnersEntry::decode(LAYOUT_KEY.as_bytes(), &json).unwrap(),
            OwnersEntry::Layout(layout)
        );
        // Neither an ownership record nor an unknown partitioner is a layout.
        assert!(OwnersEntry::decode(b"0", &json).is_err());
        let unknown = br#"{"layout":{"partitioner":"crc32","by":"h","ts":1}}"#;
        assert!(OwnersEntry::decode(LAYOUT_KEY.as_bytes(), unknown).is_err());
    }

    #[test]
    fn a_record_belongs_to_the_last_layer_started_at_or_before_it() {
        let layers = vec![
            Layer::base(PartitionCount::new(2).unwrap()),
            Layer {
                partitions: PartitionCount::new(3).unwrap(),
                starts: [5, 0, 0].map(Offset).to_vec(),
            },
            Layer {
                partitions: PartitionCount::new(4).unwrap(),
                starts: [9, 4, 2, 0].map(Offset).to_vec(),
            },
        ];
        let at = |p, o| layer_of(&layers, Partition(p), Offset(o));
        assert_eq!(
            [at(0, 0), at(0, 4), at(0, 5), at(0, 8), at(0, 9)],
            [0, 0, 1, 1, 2]
        );
        // Partition 1 was empty when the second layer began: it starts there at 0.
        assert_eq!([at(1, 0), at(1, 3), at(1, 4)], [1, 1, 2]);
        assert_eq!([at(2, 0), at(2, 2), at(3, 0)], [1, 2, 2]);
        assert_eq!(layer_of(&[], Partition(5), Offset(100)), 0);
    }

    fn claim(seq: u64, holder: &str, takeover: bool) -> LeaseRecord {
        LeaseRecord {
            seq,
            holder: holder.into(),
            tool: "ordo repartition".into(),
            ts: 1,
            takeover,
            released: false,
        }
    }

    #[test]
    fn the_first_claim_on_the_log_takes_the_lease_until_it_lets_go_or_is_taken_over() {
        let mut l = Lease::default();
        assert_eq!((l.holder(), l.next_seq()), (None, 1));
        let a = claim(1, "a/1", false);
        assert!(l.apply(a.clone()));
        // A rival that read the same free lease and claimed the same number comes second.
        let b = claim(1, "b/2", false);
        assert!(!l.apply(b.clone()));
        assert!(l.is_held_by(&a) && !l.is_held_by(&b));
        // A later number does not take a held lease either, unless it takes it over.
        assert!(!l.apply(claim(2, "b/2", false)));
        // Nor does another holder's release, or a release of another number.
        assert!(!l.apply(b.released(2)));
        assert!(!l.apply(claim(7, "a/1", false).released(2)));
        assert!(l.is_held_by(&a));
        // Released: the next claim takes it.
        assert!(l.apply(a.released(3)));
        assert_eq!((l.holder(), l.next_seq()), (None, 2));
        let c = claim(2, "c/3", false);
        assert!(l.apply(c.clone()));
        // Taken over from c (killed): c's late release changes nothing.
        let d = claim(3, "d/4", true);
        assert!(l.apply(d.clone()));
        assert!(!l.apply(c.released(4)));
        assert!(l.is_held_by(&d));
        // Its records round-trip, told apart by their key.
        assert_eq!(d.key(), "__ordo.lease/3/d/4");
        assert_eq!(
            OwnersEntry::decode(d.key().as_bytes(), &d.to_json()).unwrap(),
            OwnersEntry::Lease(d.clone())
        );
        assert!(OwnersEntry::decode(b"3", &d.to_json()).is_err());
    }

    proptest! {
        /// Any readers folding the same log agree on the holder, and a holder is only ever
        /// replaced by a takeover or after its release.
        #[test]
        fn a_lease_changes_hands_only_when_free_or_taken_over(
            ops in prop::collection::vec((0u64..6, 0usize..3, any::<bool>(), any::<bool>()), 1..40)
        ) {
            let mut l = Lease::default();
            for (seq, who, takeover, released) in ops {
                let r = LeaseRecord { released, ..claim(seq, ["a", "b", "c"][who], takeover) };
                let before = l.holder().cloned();
                if l.apply(r.clone()) && !r.released && let Some(b) = before {
                    prop_assert!(r.takeover, "{b:?} replaced by {r:?}");
                    prop_assert!(r.seq > b.seq);
                }
            }
        }

        /// In any order of arrival, the table ends with the record of the highest epoch (the
        /// last of that epoch in arrival order).
        #[test]
        fn any_order_ends_at_the_highest_epoch(epochs in prop::collection::vec(0u64..6, 1..20)) {
            let mut t = OwnerTable::new(PartitionCount::new(1).unwrap());
            for (i, e) in epochs.iter().enumerate() {
                let mut r = record(0, *e, Some("http://x"));
                r.ts = i as i64;
                t.apply(r);
            }
            let top = *epochs.iter().max().unwrap();
            let last = epochs.iter().rposition(|e| *e == top).unwrap() as i64;
            let held = t.get(Partition(0)).unwrap();
            prop_assert_eq!(held.epoch, Epoch(top));
            prop_assert_eq!(held.ts, last);
        }
    }
}
