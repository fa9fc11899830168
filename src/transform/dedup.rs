//! Deduplication: one first evaluation and one supplementary evaluation per case.
//!
//! State is per Kafka partition (producers key by `projectNo`, so a case never spans partitions): key =
//! xxh3 of (`projectNo`, `assessNumber`), value = the evaluation's day (16 bits) and a 48-bit
//! fingerprint of its content, held in at most 16 bytes a key ([`DedupState`]).
//! A redelivered identical event has the same fingerprint and is dropped; a different event for a
//! slot already taken is a conflict for the dead-letter topic.
//!
//! The state holds the days from its *horizon* on (`dedup.window_days` before today, set by
//! [`DedupState::evict_before`]); older keys are forgotten. An event dated before the horizon whose
//! slot the state does not hold cannot be checked, since its slot may have been taken and forgotten:
//! it is [`DedupOutcome::OutsideWindow`], for the dead-letter topic, never accepted. Without that, a
//! redelivery of an evicted evaluation would be accepted a second time. The state is never persisted on its
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
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

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
    /// Dated before the state's horizon, and its slot is not held: whether it was taken is
    /// forgotten, so it cannot be accepted (to the DLQ).
    OutsideWindow,
}

/// The dedup key of a case's first or supplementary evaluation.
pub fn dedup_key(project_no: &str, assess_number: AssessNumber) -> u64 {
    xxh3_64_with_seed(project_no.as_bytes(), u64::from(assess_number.code()))
}

/// The fields of a record being fingerprinted ([`hash_fields`]).
pub struct Fields<'a>(&'a mut Vec<u8>);

impl Fields<'_> {
    /// Adds one field, then the unit separator (0x1f), so that moving bytes from one field to the
    /// next changes the fingerprint.
    pub fn field(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        self.0.push(0x1f);
    }
}

/// The xxh3-64 of the fields `write` adds, each followed by 0x1f: the value a streaming hasher
/// fed field by field gives, computed in one pass over a per-thread scratch buffer instead of one
/// hasher update per small piece. Lakes written before keep their fingerprints. The buffer keeps
/// the capacity of the largest record its thread fingerprinted (messages are bounded by
/// `max_message_bytes`).
pub fn hash_fields(write: impl FnOnce(&mut Fields<'_>)) -> u64 {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        write(&mut Fields(scratch));
        xxh3_64(scratch)
    })
}

/// A fingerprint of everything an evaluation says (identity only as its key), so that an identical
/// redelivery is recognised however the producer formatted the JSON.
pub fn fingerprint(e: &Evaluation<'_>, evaluator_key: Option<&str>) -> u64 {
    hash_fields(|f| {
        f.field(e.project_no.as_bytes());
        f.field(&[
            e.assess_number.code(),
            e.satisfaction.level(),
            e.channel.code(),
            e.evaluator_kind.code(),
            u8::from(e.anonymous),
        ]);
        f.field(e.area.as_str().as_bytes());
        f.field(e.dept_code.as_bytes());
        f.field(e.dept_name.as_deref().unwrap_or("").as_bytes());
        f.field(e.task_code.as_bytes());
        f.field(e.task_name.as_bytes());
        f.field(e.staff_id.as_deref().unwrap_or("").as_bytes());
        f.field(e.staff_name.as_deref().unwrap_or("").as_bytes());
        for tag in &e.tags {
            f.field(&tag.to_le_bytes());
        }
        f.field(e.text.as_deref().unwrap_or("").as_bytes());
        f.field(&e.assessed_at_us.to_le_bytes());
        f.field(evaluator_key.unwrap_or("").as_bytes());
    })
}

/// Bits of a key that choose its bucket; the other 48 are stored.
const BUCKET_BITS: u32 = 16;
const BUCKETS: usize = 1 << BUCKET_BITS;
const LOW_BITS: u32 = 64 - BUCKET_BITS;
const LOW_MASK: u64 = (1 << LOW_BITS) - 1;
/// Below this many keys the recent table is merged at this size (not at a share of the sorted part).
const MIN_MERGE: usize = 16_384;
/// The recent table is merged once it holds this share of the sorted part's keys.
const MERGE_SHARE: usize = 32;

fn pack(fingerprint: u64, day: u16) -> u64 {
    (u64::from(day) << FINGERPRINT_BITS) | (fingerprint & FINGERPRINT_MASK)
}

fn day_of(value: u64) -> u16 {
    (value >> FINGERPRINT_BITS) as u16
}

fn bucket_of(key: u64) -> usize {
    (key >> LOW_BITS) as usize
}

/// One entry of the sorted part, 14 bytes: the key's low 48 bits (its bucket gives the rest) and the
/// packed day and fingerprint. `u16`s, so that a `Vec` of them has no padding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Packed([u16; 7]);

impl Packed {
    fn new(key: u64, value: u64) -> Self {
        let w = |x: u64, i: u32| (x >> (16 * i)) as u16;
        Self([
            w(key, 0),
            w(key, 1),
            w(key, 2),
            w(value, 0),
            w(value, 1),
            w(value, 2),
            w(value, 3),
        ])
    }

    fn low(self) -> u64 {
        let p = self.0;
        u64::from(p[0]) | u64::from(p[1]) << 16 | u64::from(p[2]) << 32
    }

    fn value(self) -> u64 {
        let p = self.0;
        u64::from(p[3]) | u64::from(p[4]) << 16 | u64::from(p[5]) << 32 | u64::from(p[6]) << 48
    }
}

/// The part of a (non-empty) bucket where `low` is, if it is there at all. The keys are uniform,
/// so the entry at `low`'s share of the bucket is within a few entries of it: galloping outward
/// from there touches one or two cache lines where a binary search of the whole bucket touches
/// one per step (at 20 M keys, ≈ 300 entries a bucket, most steps miss the cache). Keys that are
/// not uniform cost a binary search's steps twice, never a wrong answer.
fn bracket(bucket: &[Packed], low: u64) -> (usize, usize) {
    let n = bucket.len();
    // `low` < 2^48, so the guess is below n.
    let guess = ((u128::from(low) * n as u128) >> LOW_BITS) as usize;
    if bucket[guess].low() < low {
        // Everything before `from` is below `low`.
        let (mut from, mut step) = (guess + 1, 1);
        while from + step <= n && bucket[from + step - 1].low() < low {
            from += step;
            step *= 2;
        }
        (from, (from + step).min(n))
    } else {
        // `bucket[to - 1]` is at least `low`, so `low` is not after it.
        let (mut to, mut step) = (guess + 1, 1);
        while to > step && bucket[to - 1 - step].low() >= low {
            to -= step;
            step *= 2;
        }
        (to.saturating_sub(step + 1), to)
    }
}

/// The dedup state of one Kafka partition: key → day and fingerprint, at most 16 bytes a key.
///
/// A hash table costs 29–31 bytes a key at its load factor, and twice that while it resizes. Here
/// the keys live in a sorted array of 14-byte entries, split into 65 536 buckets by the key's top
/// 16 bits (the keys are xxh3, uniform), so each entry stores only the low 48 bits and a lookup
/// starts where the key's value says it should be in its bucket (`bracket`). New keys go to a
/// small hash table first, merged into the array in place (from the back, after one exact
/// reallocation) once it holds 1/32 of the array's keys, and at least 16 384: about 1 byte a key
/// on top of the 14 in a large state, and never a second copy of the array.
#[derive(Debug, Clone, Default)]
pub struct DedupState {
    /// Bucket by bucket, each sorted by its keys' low bits.
    sorted: Vec<Packed>,
    /// `starts[b]..starts[b + 1]` is bucket `b` in `sorted`; empty while `sorted` is.
    starts: Vec<u32>,
    /// Keys added since the last merge, by full key.
    recent: HashMap<u64, u64, BuildNoHashHasher<u64>>,
    /// Days before this one were evicted (or never loaded): see [`DedupOutcome::OutsideWindow`].
    /// 0 (1970-01-01) until the first eviction, so a state nobody evicts (the offline path's)
    /// checks every day.
    horizon: u16,
}

impl DedupState {
    /// Builds a state from (key, packed day and fingerprint) entries at once: a counting pass by
    /// bucket, a scatter, and a sort of each small bucket. Of entries with the same key the first
    /// is kept.
    fn from_entries(entries: Vec<(u64, u64)>) -> Self {
        if entries.is_empty() {
            return Self::default();
        }
        let mut starts = vec![0u32; BUCKETS + 1];
        for (key, _) in &entries {
            starts[bucket_of(*key) + 1] += 1;
        }
        for b in 0..BUCKETS {
            starts[b + 1] += starts[b];
        }
        let mut cursor: Vec<u32> = starts[..BUCKETS].to_vec();
        let mut sorted = vec![Packed::default(); entries.len()];
        for (key, value) in entries {
            let at = &mut cursor[bucket_of(key)];
            sorted[*at as usize] = Packed::new(key, value);
            *at += 1;
        }
        let mut state = Self {
            sorted,
            starts,
            recent: HashMap::default(),
            horizon: 0,
        };
        // Stable, so that of equal keys the first stays first and is the one kept.
        state.retain_entries(|_, _| true, &mut |bucket| bucket.sort_by_key(|p| p.low()));
        state
    }

    /// Keeps the entries for which `keep(key, value)` holds (and the first of equal keys), bucket
    /// order kept; `prepare` runs on each bucket before it is filtered.
    fn retain_entries(
        &mut self,
        mut keep: impl FnMut(u64, u64) -> bool,
        prepare: &mut impl FnMut(&mut [Packed]),
    ) {
        if self.sorted.is_empty() {
            return;
        }
        let mut write = 0usize;
        let mut bucket_start = 0usize;
        for b in 0..BUCKETS {
            let end = self.starts[b + 1] as usize;
            prepare(&mut self.sorted[bucket_start..end]);
            let written_from = write;
            for read in bucket_start..end {
                let entry = self.sorted[read];
                let key = (b as u64) << LOW_BITS | entry.low();
                let repeated = write > written_from && self.sorted[write - 1].low() == entry.low();
                if !repeated && keep(key, entry.value()) {
                    self.sorted[write] = entry;
                    write += 1;
                }
            }
            bucket_start = end;
            self.starts[b + 1] = write as u32;
        }
        self.sorted.truncate(write);
        self.sorted.shrink_to_fit();
        if self.sorted.is_empty() {
            self.starts = Vec::new();
        }
    }

    /// Where a key is in the sorted part.
    fn find(&self, key: u64) -> Option<usize> {
        let b = bucket_of(key);
        let (start, end) = (
            *self.starts.get(b)? as usize,
            *self.starts.get(b + 1)? as usize,
        );
        let bucket = self.sorted.get(start..end).filter(|b| !b.is_empty())?;
        let low = key & LOW_MASK;
        let (from, to) = bracket(bucket, low);
        bucket[from..to]
            .binary_search_by_key(&low, |p| p.low())
            .ok()
            .map(|i| start + from + i)
    }

    fn get(&self, key: u64) -> Option<u64> {
        match self.recent.get(&key) {
            Some(value) => Some(*value),
            None => self.find(key).map(|i| self.sorted[i].value()),
        }
    }

    /// Adds a key known to be absent.
    fn add(&mut self, key: u64, value: u64) {
        self.recent.insert(key, value);
        if self.recent.len() >= MIN_MERGE.max(self.sorted.len() / MERGE_SHARE) {
            self.merge_recent();
        }
    }

    /// Moves the recent keys into the sorted part: one exact reallocation, then from the top
    /// bucket down, each bucket with new keys merged from its back and each run of buckets without
    /// any moved as one block, so that no entry is overwritten before it is moved.
    fn merge_recent(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let mut delta: Vec<(u64, u64)> = self.recent.drain().collect();
        delta.sort_unstable_by_key(|(key, _)| *key);
        if self.sorted.is_empty() {
            *self = Self {
                recent: std::mem::take(&mut self.recent),
                horizon: self.horizon,
                ..Self::from_entries(delta)
            };
            return;
        }
        // below[b]: new keys in the buckets before b, so bucket b moves up by below[b].
        let mut below = vec![0u32; BUCKETS + 1];
        for (key, _) in &delta {
            below[bucket_of(*key) + 1] += 1;
        }
        for b in 0..BUCKETS {
            below[b + 1] += below[b];
        }
        let old_len = self.sorted.len();
        self.sorted.reserve_exact(delta.len());
        self.sorted.resize(old_len + delta.len(), Packed::default());
        let mut block_end = old_len;
        for b in (0..BUCKETS).rev() {
            let (d_lo, d_hi) = (below[b] as usize, below[b + 1] as usize);
            if d_lo == d_hi {
                continue; // no new key: part of the block above the next bucket that has one
            }
            let (old_start, old_end) = (self.starts[b] as usize, self.starts[b + 1] as usize);
            if block_end > old_end {
                self.sorted.copy_within(old_end..block_end, old_end + d_hi);
            }
            let (mut old, mut next, mut write) = (old_end, d_hi, old_end + d_hi);
            while next > d_lo {
                let (key, value) = delta[next - 1];
                if old > old_start && self.sorted[old - 1].low() > key & LOW_MASK {
                    self.sorted[write - 1] = self.sorted[old - 1];
                    old -= 1;
                } else {
                    self.sorted[write - 1] = Packed::new(key, value);
                    next -= 1;
                }
                write -= 1;
            }
            if d_lo > 0 && old > old_start {
                self.sorted.copy_within(old_start..old, old_start + d_lo);
            }
            block_end = old_start;
        }
        // The buckets below the lowest new key stay where they are.
        for (start, shift) in self.starts.iter_mut().zip(&below) {
            *start += shift;
        }
    }

    /// Checks one evaluation and records it when new. `day` is its date as days since 1970-01-01.
    /// A slot the state holds is answered whatever the day; one it does not hold is new only from
    /// the horizon on.
    pub fn check(&mut self, key: u64, fingerprint: u64, day: u16) -> DedupOutcome {
        match self.get(key) {
            None if day < self.horizon => DedupOutcome::OutsideWindow,
            None => {
                self.add(key, pack(fingerprint, day));
                DedupOutcome::New
            }
            Some(value) if value & FINGERPRINT_MASK == fingerprint & FINGERPRINT_MASK => {
                DedupOutcome::Duplicate
            }
            Some(_) => DedupOutcome::Conflict,
        }
    }

    /// Records a row already in the lake (state rebuild); a key already here takes the new value.
    pub fn insert(&mut self, key: u64, fingerprint: u64, day: u16) {
        let value = pack(fingerprint, day);
        if let Some(slot) = self.recent.get_mut(&key) {
            *slot = value;
        } else if let Some(i) = self.find(key) {
            self.sorted[i] = Packed::new(key, value);
        } else {
            self.add(key, value);
        }
    }

    /// Forgets evaluations dated before `day` (the dedup window), and from then on answers
    /// [`DedupOutcome::OutsideWindow`] for a slot dated before it that it does not hold. The
    /// horizon never moves back.
    pub fn evict_before(&mut self, day: u16) {
        self.horizon = self.horizon.max(day);
        self.recent.retain(|_, value| day_of(*value) >= day);
        self.retain_entries(|_, value| day_of(value) >= day, &mut |_| {});
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// The oldest day the state answers for (see [`DedupOutcome::OutsideWindow`]).
    pub fn horizon(&self) -> u16 {
        self.horizon
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held: 14 a sorted entry, the bucket starts, and the recent table (16 bytes a slot
    /// and a control byte, slots being 8/7 of its capacity).
    pub fn heap_bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<Packed>()
            + self.starts.capacity() * std::mem::size_of::<u32>()
            + self.recent.capacity() * 8 / 7 * (std::mem::size_of::<(u64, u64)>() + 1)
    }

    /// Every (key, packed day and fingerprint), the sorted part first, then the recent keys.
    fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let sorted = (0..BUCKETS).flat_map(move |b| {
            let range = match (self.starts.get(b), self.starts.get(b + 1)) {
                (Some(s), Some(e)) => *s as usize..*e as usize,
                _ => 0..0,
            };
            self.sorted[range]
                .iter()
                .map(move |p| ((b as u64) << LOW_BITS | p.low(), p.value()))
        });
        sorted.chain(self.recent.iter().map(|(k, v)| (*k, *v)))
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
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER + self.len() * 16 + 8);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&upto.to_le_bytes());
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        for (key, value) in self.entries() {
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
        let pairs = entries
            .chunks_exact(16)
            .map(|pair| {
                let (mut key, mut value) = ([0u8; 8], [0u8; 8]);
                key.copy_from_slice(&pair[..8]);
                value.copy_from_slice(&pair[8..]);
                (u64::from_le_bytes(key), u64::from_le_bytes(value))
            })
            .collect();
        Ok((upto, DedupState::from_entries(pairs)))
    }

    /// A state rebuilt from rows of the lake: (key, fingerprint, day) each; of a key met twice the
    /// first is kept.
    pub fn from_rows(rows: impl IntoIterator<Item = (u64, u64, u16)>) -> Self {
        Self::from_entries(
            rows.into_iter()
                .map(|(key, fingerprint, day)| (key, pack(fingerprint, day)))
                .collect(),
        )
    }

    /// Adds another state's entries (a rebuild's parts); an entry already here is kept, and the
    /// later of the two horizons is kept.
    pub fn absorb(&mut self, other: DedupState) {
        let horizon = self.horizon.max(other.horizon);
        if self.is_empty() {
            *self = other;
            self.horizon = horizon;
            return;
        }
        self.horizon = horizon;
        for (key, value) in other.entries() {
            if self.get(key).is_none() {
                self.add(key, value);
            }
        }
    }

    /// Every (key, packed day and fingerprint), sorted: for comparing two tables.
    pub fn sorted_entries(&self) -> Vec<(u64, u64)> {
        let mut entries: Vec<(u64, u64)> = self.entries().collect();
        entries.sort_unstable();
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprints of lakes written with a streaming hasher (field, then 0x1f, piece by piece)
    /// must not change: the one-shot hash over the same bytes gives the same value, whatever the
    /// lengths (xxh3 switches algorithm at 16, 128 and 240 bytes and streams in 1 KiB stripes).
    #[test]
    fn one_shot_fields_hash_as_the_streaming_hasher_did() {
        let lengths: &[&[usize]] = &[
            &[],
            &[0],
            &[1, 0, 3],
            &[15],
            &[16, 16],
            &[100, 27],
            &[239],
            &[240, 1],
            &[1023],
            &[1024, 0, 5],
            &[3000, 7, 70_000],
        ];
        for (round, fields) in lengths.iter().enumerate() {
            let data: Vec<Vec<u8>> = fields
                .iter()
                .enumerate()
                .map(|(i, &len)| (0..len).map(|j| (j * 31 + i * 7 + round) as u8).collect())
                .collect();
            let mut streaming = xxhash_rust::xxh3::Xxh3::new();
            for field in &data {
                streaming.update(field);
                streaming.update(&[0x1f]);
            }
            let one_shot = hash_fields(|f| data.iter().for_each(|field| f.field(field)));
            assert_eq!(one_shot, streaming.digest(), "field lengths {fields:?}");
        }
    }

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

    /// The state against a plain map, over many merges, evictions, absorptions and snapshots;
    /// keys crowd a few buckets too (shared top bits), where the binary searches and the in-place
    /// merge have the most to get wrong.
    #[test]
    fn the_compact_state_answers_as_a_map_would() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut state = DedupState::default();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let outcome = |model: &HashMap<u64, u64>, key: u64, fp: u64| match model.get(&key) {
            None => DedupOutcome::New,
            Some(v) if v & FINGERPRINT_MASK == fp & FINGERPRINT_MASK => DedupOutcome::Duplicate,
            Some(_) => DedupOutcome::Conflict,
        };
        let mut keys: Vec<u64> = Vec::new();
        for step in 0..120_000u32 {
            let key = match rng.random_range(0..10) {
                // A key seen before (a redelivery or a conflict).
                0..=2 if !keys.is_empty() => keys[rng.random_range(0..keys.len())],
                // Crowded buckets: only the low bits differ, at the bottom or the top of the
                // range, where a lookup's first guess is furthest off.
                3 => rng.random_range(0..4u64) << LOW_BITS | rng.random_range(0..5_000u64),
                4 => {
                    rng.random_range(4..8u64) << LOW_BITS
                        | (LOW_MASK - rng.random_range(0..5_000u64))
                }
                _ => rng.random(),
            };
            let fp = if rng.random_bool(0.9) {
                key.rotate_left(9)
            } else {
                rng.random()
            };
            let day = 100 + (step / 10_000) as u16;
            let expected = outcome(&model, key, fp);
            assert_eq!(state.check(key, fp, day), expected, "step {step}");
            if expected == DedupOutcome::New {
                model.insert(key, pack(fp, day));
                keys.push(key);
            }
            match step {
                40_000 | 90_000 => {
                    state.evict_before(day - 2);
                    model.retain(|_, v| day_of(*v) >= day - 2);
                    keys.retain(|k| model.contains_key(k));
                }
                60_000 => {
                    let (_, back) = DedupState::from_snapshot(&state.to_snapshot(1)).unwrap();
                    assert_eq!(back.sorted_entries(), state.sorted_entries());
                    state = back;
                }
                75_000 => {
                    let extra: Vec<(u64, u64, u16)> =
                        (0..3_000).map(|_| (rng.random(), 7, day)).collect();
                    let mut other = DedupState::from_rows(extra.iter().copied());
                    // An entry already here is kept: the other's value for it is ignored.
                    let known = keys[0];
                    other.insert(known, 12_345, day);
                    for (k, fp, d) in &extra {
                        model.entry(*k).or_insert(pack(*fp, *d));
                        keys.push(*k);
                    }
                    state.absorb(other);
                }
                _ => {}
            }
        }
        let mut expected: Vec<(u64, u64)> = model.into_iter().collect();
        expected.sort_unstable();
        assert_eq!(state.len(), expected.len());
        assert_eq!(state.sorted_entries(), expected);
        assert!(state.len() > 10_000, "{} keys", state.len());
    }

    /// Wherever a bucket's keys lie, the part [`bracket`] picks holds the key if the bucket does,
    /// and the search in it answers as a search of the whole bucket would.
    #[test]
    fn a_lookup_starting_from_the_guess_finds_what_a_full_search_finds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let shapes: [fn(&mut rand::rngs::StdRng) -> u64; 4] = [
            |r| r.random_range(0..=LOW_MASK),
            |r| r.random_range(0..1_000),
            |r| LOW_MASK - r.random_range(0..1_000),
            |r| {
                if r.random_bool(0.5) {
                    r.random_range(0..50)
                } else {
                    LOW_MASK - r.random_range(0..50)
                }
            },
        ];
        for (shape, draw) in shapes.iter().enumerate() {
            for len in [1usize, 2, 3, 7, 64, 300, 2_000] {
                let mut lows: Vec<u64> = (0..len).map(|_| draw(&mut rng)).collect();
                lows.sort_unstable();
                lows.dedup();
                let bucket: Vec<Packed> = lows.iter().map(|l| Packed::new(*l, 0)).collect();
                let probes = lows.iter().copied().chain((0..200).map(|_| draw(&mut rng)));
                for low in probes.chain([0, LOW_MASK]) {
                    let (from, to) = bracket(&bucket, low);
                    assert!(from <= to && to <= bucket.len(), "shape {shape}, len {len}");
                    let found = bucket[from..to]
                        .binary_search_by_key(&low, |p| p.low())
                        .ok()
                        .map(|i| from + i);
                    let expected = bucket.binary_search_by_key(&low, |p| p.low()).ok();
                    assert_eq!(found, expected, "shape {shape}, len {len}, low {low}");
                }
            }
        }
    }

    #[test]
    fn a_large_state_costs_at_most_16_bytes_a_key() {
        let mut state = DedupState::default();
        for i in 0..1_000_000u64 {
            let key = xxh3_64_with_seed(&i.to_le_bytes(), 0);
            assert_eq!(state.check(key, i, 20_000), DedupOutcome::New);
        }
        let per_key = state.heap_bytes() as f64 / state.len() as f64;
        assert!(per_key <= 16.0, "{per_key:.2} bytes a key");
        let rebuilt = DedupState::from_rows(
            state
                .sorted_entries()
                .iter()
                .map(|(k, v)| (*k, v & FINGERPRINT_MASK, day_of(*v))),
        );
        assert_eq!(rebuilt.sorted_entries(), state.sorted_entries());
        assert!(rebuilt.heap_bytes() as f64 / rebuilt.len() as f64 <= 14.5);
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
        assert_eq!(state.horizon(), 15);
        // The evicted slot is not new again: a redelivery of it is not accepted twice.
        assert_eq!(
            state.check(dedup_key("old", AssessNumber::First), 1, 10),
            DedupOutcome::OutsideWindow
        );
        assert_eq!(
            state.check(dedup_key("new", AssessNumber::First), 2, 20),
            DedupOutcome::Duplicate
        );
        // The horizon never moves back.
        state.evict_before(12);
        assert_eq!(state.horizon(), 15);
        assert_eq!(state.len(), 1);
    }

    /// What a state with horizon 15 answers, by whether it holds the slot and the event's day.
    #[test]
    fn outside_the_window_only_what_the_state_cannot_answer() {
        use DedupOutcome::*;
        /// The slot's day and fingerprint, if the state holds it.
        type Held = Option<(u16, u64)>;
        // (held, event day, event fingerprint, outcome)
        let cases: [(Held, u16, u64, DedupOutcome); 9] = [
            (None, 14, 1, OutsideWindow),
            (None, 0, 1, OutsideWindow),
            (None, 15, 1, New),
            (None, 400, 1, New),
            // A slot held is answered from what it holds, whatever the event's day.
            (Some((20, 1)), 14, 1, Duplicate),
            (Some((20, 1)), 3, 2, Conflict),
            (Some((20, 1)), 20, 1, Duplicate),
            (Some((20, 1)), 20, 2, Conflict),
            (Some((15, 1)), 15, 1, Duplicate),
        ];
        for (i, (held, day, fingerprint, outcome)) in cases.into_iter().enumerate() {
            let key = dedup_key(&format!("P-{i}"), AssessNumber::First);
            let mut state = DedupState::default();
            state.insert(dedup_key("other", AssessNumber::First), 9, 30);
            state.evict_before(15);
            if let Some((held_day, held_fingerprint)) = held {
                state.insert(key, held_fingerprint, held_day);
            }
            assert_eq!(state.check(key, fingerprint, day), outcome, "case {i}");
            // An event outside the window is not recorded: it stays unanswerable.
            if outcome == OutsideWindow {
                assert_eq!(state.check(key, fingerprint, day), OutsideWindow);
            }
        }
        // A state never evicted (the offline path's) takes any day.
        let mut state = DedupState::default();
        assert_eq!(state.check(1, 1, 0), New);
        // A rebuild's parts keep the later horizon, whichever side is empty.
        for (mine, theirs) in [
            (DedupState::default(), state.clone()),
            (state.clone(), DedupState::default()),
        ] {
            let (mut mine, mut theirs) = (mine, theirs);
            mine.evict_before(7);
            theirs.evict_before(9);
            mine.absorb(theirs);
            assert_eq!(mine.horizon(), 9);
        }
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
