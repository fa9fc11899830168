//! Deduplication: one first evaluation and one supplementary evaluation per case.
//!
//! State is per Kafka partition (producers key by `projectNo`, so a case never spans partitions) and is
//! a fixed-width hash table: key = xxh3 of (`projectNo`, `assessNumber`), value = the evaluation's day
//! (16 bits) and a 48-bit fingerprint of its content, 16 bytes a key before the table's own overhead.
//! A redelivered identical event has the same fingerprint and is dropped; a different event for a
//! slot already taken is a conflict for the dead-letter topic. The state is never persisted on its
//! own: after a restart or a rebalance it is rebuilt from the rows the lake holds for the partition
//! ([`crate::lake`]), so the lake and the state always agree. A 64-bit key makes a false
//! conflict possible but rare (about 3·10⁻⁶ at ten million cases); a false conflict parks the event in
//! the dead-letter topic, where it is not lost.
//!
//! So that a rebuild does not read every file of the window, the lake keeps a *snapshot* of each
//! partition's table ([`DedupState::to_snapshot`]): derived data, 16 bytes a key, with a checksum.
//! A snapshot that is missing or damaged is rebuilt from the Parquet files (see
//! [`crate::engine::recovery`]).

use std::collections::HashMap;

use nohash_hasher::BuildNoHashHasher;
use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

use crate::transform::validate::{AssessNumber, Evaluation};

const FINGERPRINT_BITS: u32 = 48;
const FINGERPRINT_MASK: u64 = (1 << FINGERPRINT_BITS) - 1;

/// What dedup decided for one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupOutcome {
    /// First time this slot is seen: write it.
    New,
    /// An identical redelivery: drop it (counted).
    Duplicate,
    /// A different evaluation for a slot already taken: to the DLQ.
    Conflict,
}

/// The dedup key of a case's first or supplementary evaluation.
pub fn dedup_key(project_no: &str, assess_number: AssessNumber) -> u64 {
    xxh3_64_with_seed(project_no.as_bytes(), u64::from(assess_number.code()))
}

/// A fingerprint of everything an evaluation says (identity only as its key), so that an identical
/// redelivery is recognised however the producer formatted the JSON.
pub fn fingerprint(e: &Evaluation<'_>, evaluator_key: Option<&str>) -> u64 {
    let mut h = Xxh3::new();
    let mut field = |bytes: &[u8]| {
        h.update(bytes);
        h.update(&[0x1f]);
    };
    field(e.project_no.as_bytes());
    field(&[
        e.assess_number.code(),
        e.satisfaction.level(),
        e.channel.code(),
        e.evaluator_kind.code(),
        u8::from(e.anonymous),
    ]);
    field(e.area.as_str().as_bytes());
    field(e.dept_code.as_bytes());
    field(e.dept_name.as_deref().unwrap_or("").as_bytes());
    field(e.task_code.as_bytes());
    field(e.task_name.as_bytes());
    field(e.staff_id.as_deref().unwrap_or("").as_bytes());
    field(e.staff_name.as_deref().unwrap_or("").as_bytes());
    for tag in &e.tags {
        field(&tag.to_le_bytes());
    }
    field(e.text.as_deref().unwrap_or("").as_bytes());
    field(&e.assessed_at_us.to_le_bytes());
    field(evaluator_key.unwrap_or("").as_bytes());
    h.digest()
}

/// The dedup state of one Kafka partition.
#[derive(Debug, Default, Clone)]
pub struct DedupState {
    slots: HashMap<u64, u64, BuildNoHashHasher<u64>>,
}

impl DedupState {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            slots: HashMap::with_capacity_and_hasher(capacity, BuildNoHashHasher::default()),
        }
    }

    /// Checks one evaluation and records it when new. `day` is its date as days since 1970-01-01.
    pub fn check(&mut self, key: u64, fingerprint: u64, day: u16) -> DedupOutcome {
        let value = (u64::from(day) << FINGERPRINT_BITS) | (fingerprint & FINGERPRINT_MASK);
        match self.slots.entry(key) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(value);
                DedupOutcome::New
            }
            std::collections::hash_map::Entry::Occupied(slot) => {
                if slot.get() & FINGERPRINT_MASK == fingerprint & FINGERPRINT_MASK {
                    DedupOutcome::Duplicate
                } else {
                    DedupOutcome::Conflict
                }
            }
        }
    }

    /// Records a row already in the lake (state rebuild).
    pub fn insert(&mut self, key: u64, fingerprint: u64, day: u16) {
        self.slots.insert(
            key,
            (u64::from(day) << FINGERPRINT_BITS) | (fingerprint & FINGERPRINT_MASK),
        );
    }

    /// Forgets evaluations dated before `day` (the dedup window).
    pub fn evict_before(&mut self, day: u16) {
        self.slots
            .retain(|_, value| (*value >> FINGERPRINT_BITS) as u16 >= day);
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Heap bytes held by the table (16 bytes a slot plus one control byte, at the table's capacity).
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * (std::mem::size_of::<(u64, u64)>() + 1)
    }
}

/// The first bytes of a dedup snapshot, and its format's version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"HCPDEDUP";
const SNAPSHOT_VERSION: u32 = 1;
/// magic, version, `upto`, entry count.
const SNAPSHOT_HEADER: usize = 8 + 4 + 8 + 8;

/// Why a snapshot cannot be used (it is then rebuilt from the lake).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("dedup snapshot is {0} bytes, shorter than its header")]
    TooShort(usize),
    #[error("dedup snapshot checksum does not match: damaged")]
    Checksum,
    #[error("not a dedup snapshot")]
    Magic,
    #[error("dedup snapshot of version {0}, this build reads version 1")]
    Version(u32),
    #[error("dedup snapshot says {0} entries but holds another number")]
    Length(u64),
}

impl DedupState {
    /// The table as a snapshot: header (magic, version, `upto`, count), the (key, packed value)
    /// pairs, and an xxh3-64 of everything before it. `upto` is the caller's: the lake's number
    /// below which every file's rows are in the table.
    pub fn to_snapshot(&self, upto: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER + self.slots.len() * 16 + 8);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&upto.to_le_bytes());
        out.extend_from_slice(&(self.slots.len() as u64).to_le_bytes());
        for (key, value) in &self.slots {
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        let checksum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    /// Reads a snapshot back: its `upto` and the table. Any damage is an error, never a panic.
    pub fn from_snapshot(bytes: &[u8]) -> Result<(u64, DedupState), SnapshotError> {
        let word = |at: usize| -> u64 {
            let mut buf = [0u8; 8];
            if let Some(b) = bytes.get(at..at + 8) {
                buf.copy_from_slice(b);
            }
            u64::from_le_bytes(buf)
        };
        if bytes.len() < SNAPSHOT_HEADER + 8 {
            return Err(SnapshotError::TooShort(bytes.len()));
        }
        let body = bytes.len() - 8;
        if xxhash_rust::xxh3::xxh3_64(&bytes[..body]) != word(body) {
            return Err(SnapshotError::Checksum);
        }
        if &bytes[..8] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Magic);
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[8..12]);
        let version = u32::from_le_bytes(version);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(version));
        }
        let upto = word(12);
        let count = word(20);
        let entries = &bytes[SNAPSHOT_HEADER..body];
        if !entries.len().is_multiple_of(16) || (entries.len() / 16) as u64 != count {
            return Err(SnapshotError::Length(count));
        }
        let mut state = DedupState::with_capacity(entries.len() / 16);
        for pair in entries.chunks_exact(16) {
            let (mut key, mut value) = ([0u8; 8], [0u8; 8]);
            key.copy_from_slice(&pair[..8]);
            value.copy_from_slice(&pair[8..]);
            state
                .slots
                .insert(u64::from_le_bytes(key), u64::from_le_bytes(value));
        }
        Ok((upto, state))
    }

    /// Adds another table's entries (a rebuild's parts); an entry already here is kept.
    pub fn absorb(&mut self, other: DedupState) {
        self.slots.reserve(other.slots.len());
        for (key, value) in other.slots {
            self.slots.entry(key).or_insert(value);
        }
    }

    /// Every (key, packed day and fingerprint), sorted: for comparing two tables.
    pub fn sorted_entries(&self) -> Vec<(u64, u64)> {
        let mut entries: Vec<(u64, u64)> = self.slots.iter().map(|(k, v)| (*k, *v)).collect();
        entries.sort_unstable();
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_damage_is_an_error() {
        let mut state = DedupState::default();
        for i in 0..1000u64 {
            state.insert(
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                i,
                20_000 + (i % 7) as u16,
            );
        }
        let bytes = state.to_snapshot(42);
        assert_eq!(
            bytes.len(),
            SNAPSHOT_HEADER + 1000 * 16 + 8,
            "16 bytes a key"
        );
        let (upto, back) = DedupState::from_snapshot(&bytes).unwrap();
        assert_eq!(upto, 42);
        assert_eq!(back.sorted_entries(), state.sorted_entries());
        let empty = DedupState::default().to_snapshot(0);
        assert!(DedupState::from_snapshot(&empty).unwrap().1.is_empty());

        // (how it is damaged, expected error)
        let flipped = |at: usize| {
            let mut b = bytes.clone();
            b[at] ^= 1;
            b
        };
        let resealed = |mut b: Vec<u8>| {
            let body = b.len() - 8;
            let sum = xxhash_rust::xxh3::xxh3_64(&b[..body]);
            b[body..].copy_from_slice(&sum.to_le_bytes());
            b
        };
        let mut wrong_count = bytes.clone();
        wrong_count[20] ^= 1;
        let mut wrong_version = bytes.clone();
        wrong_version[8] = 9;
        let cases: Vec<(&str, Vec<u8>, SnapshotError)> = vec![
            ("empty", vec![], SnapshotError::TooShort(0)),
            (
                "cut short",
                bytes[..20].to_vec(),
                SnapshotError::TooShort(20),
            ),
            (
                "torn tail",
                bytes[..bytes.len() - 5].to_vec(),
                SnapshotError::Checksum,
            ),
            (
                "a flipped entry bit",
                flipped(SNAPSHOT_HEADER + 3),
                SnapshotError::Checksum,
            ),
            (
                "a flipped checksum bit",
                flipped(bytes.len() - 1),
                SnapshotError::Checksum,
            ),
            (
                "another file",
                resealed(b"PAR1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_vec()),
                SnapshotError::Magic,
            ),
            (
                "another version",
                resealed(wrong_version),
                SnapshotError::Version(9),
            ),
            (
                "a count that lies",
                resealed(wrong_count),
                SnapshotError::Length(1001),
            ),
        ];
        for (name, damaged, expected) in cases {
            assert_eq!(
                DedupState::from_snapshot(&damaged).err(),
                Some(expected),
                "{name}"
            );
        }
    }

    #[test]
    fn first_and_supplementary_are_separate_slots() {
        let mut state = DedupState::default();
        let first = dedup_key("P1", AssessNumber::First);
        let supplementary = dedup_key("P1", AssessNumber::Supplementary);
        assert_ne!(first, supplementary);
        assert_eq!(state.check(first, 11, 100), DedupOutcome::New);
        assert_eq!(state.check(supplementary, 22, 100), DedupOutcome::New);
        assert_eq!(state.check(first, 11, 100), DedupOutcome::Duplicate);
        assert_eq!(state.check(supplementary, 22, 101), DedupOutcome::Duplicate);
        assert_eq!(state.check(first, 12, 100), DedupOutcome::Conflict);
        assert_eq!(state.len(), 2);
    }

    #[test]
    fn window_eviction_forgets_old_days() {
        let mut state = DedupState::default();
        state.insert(dedup_key("old", AssessNumber::First), 1, 10);
        state.insert(dedup_key("new", AssessNumber::First), 2, 20);
        state.evict_before(15);
        assert_eq!(state.len(), 1);
        assert_eq!(
            state.check(dedup_key("old", AssessNumber::First), 1, 10),
            DedupOutcome::New
        );
        assert_eq!(
            state.check(dedup_key("new", AssessNumber::First), 2, 20),
            DedupOutcome::Duplicate
        );
    }

    #[test]
    fn fingerprint_ignores_nothing_that_matters() {
        let json = |sat: u8, text: &str| {
            serde_json::to_vec(&serde_json::json!({
                "projectNo": "P1", "taskCode": "T", "taskName": "N", "deptCode": "11410328MB00000015",
                "areaCode": "410328000000", "pf": 1, "satisfaction": sat, "assessTime": "2026-01-01 00:00:00",
                "assessNumber": 1, "userProp": 1, "writingEvaluation": text
            }))
            .unwrap()
        };
        let fp = |bytes: &[u8]| {
            let wire = crate::decode::decode(bytes, 1 << 16).unwrap();
            let e = crate::transform::validate::validate(wire, &Default::default(), i64::MAX / 2)
                .unwrap();
            fingerprint(&e, None)
        };
        assert_eq!(fp(&json(5, "好")), fp(&json(5, "好")));
        assert_ne!(fp(&json(5, "好")), fp(&json(4, "好")));
        assert_ne!(fp(&json(5, "好")), fp(&json(5, "很好")));
        // Formatting differences do not matter.
        let spaced = String::from_utf8(json(5, "好"))
            .unwrap()
            .replace(',', " , ");
        assert_eq!(fp(spaced.as_bytes()), fp(&json(5, "好")));
    }
}
