//! A partition's log: sequence-numbered records, each name taken at most once.
//!
//! Every record is put with put-if-absent (`PutMode::Create`), the one conditional write every
//! object store offers. The sequence number a writer puts next is its claim on the partition: when
//! another writer has taken that number first, the put fails and the writer is *fenced* (it must
//! drop the partition). This module holds the records and the pure rules that read a log; the
//! store operations live in [`crate::lake`].
//!
//! | record | put by | meaning |
//! |---|---|---|
//! | `claim` | recovery | "from here on, this writer owns the partition" |
//! | `intent` | a writer, before its data files | the batch's range and every file it will write |
//! | `commit` | the same writer, right after its intent | the batch of its intent is in the lake |
//! | `compact` | a compactor | in one folder, these files of the partition are replaced by those |
//!
//! A batch is committed exactly when the first record after its intent that is not a `compact` is a
//! `commit` of the same batch; the commit put is the commit point. A compaction does not own the
//! partition and does not move its position: a writer that finds its number taken by a `compact`
//! puts its record at the next number instead of counting itself fenced, so a compaction never
//! fences ingest, while a rival's claim still does. Data files carry their intent's sequence number
//! in their name, so two writers never write the same file, and a fenced writer's files are told
//! apart from the owner's by the log alone. Files written by a compaction carry the `compact`
//! record's number with a `c` (`…-<seq>c.parquet`), so no writer's file can ever have their name.

use serde::{Deserialize, Serialize};

/// How long an intent that never committed is kept, so that every recovery and commit deletes its
/// files again: a writer that stalled between its intent and its data puts may still write them
/// after it was fenced, and die before removing them itself.
pub const ABORTED_INTENT_RETENTION_US: i64 = 24 * 3600 * 1_000_000;

/// A batch's identity: one Kafka partition's offset range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRange {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

impl BatchRange {
    /// This range extended to end at `last_offset`: the range of two adjacent batches together.
    pub fn through(self, last_offset: i64) -> Self {
        Self {
            last_offset,
            ..self
        }
    }
}

/// What an intent or a commit says of a batch: its range and the files it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    #[serde(flatten)]
    pub range: BatchRange,
    pub files: Vec<String>,
    pub rows: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Claim,
    Intent,
    Commit,
    Compact,
}

/// One file a compaction writes and the files whose rows it holds, all in one folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionGroup {
    pub merged: String,
    pub replaced: Vec<String>,
}

/// What a `compact` record says: in `folder` (`<table>/dt=…/city=…`), each group's files are
/// replaced by its merged file. The record's put is the compaction's commit point; what follows
/// (exposing the merged files, removing the replaced ones) is rolled forward by any compactor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionRecord {
    pub folder: String,
    pub groups: Vec<CompactionGroup>,
    pub rows: u64,
}

/// One record of a partition's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub kind: RecordKind,
    /// The writer instance that put it (random per process; for people and for idempotent retries).
    pub writer: String,
    /// When it was written, µs since the epoch (for the retention of aborted intents).
    pub written_at_us: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionRecord>,
}

impl LogRecord {
    /// Whether `other` is the same record put again (a retried put whose first attempt landed).
    pub fn same_put(&self, other: &LogRecord) -> bool {
        self.kind == other.kind
            && self.writer == other.writer
            && self.batch == other.batch
            && self.compaction == other.compaction
    }
}

/// What a writer does when the number it wants is taken by `existing` (`None`: torn or gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Its own earlier attempt at the same record landed: done.
    Done,
    /// A compaction took it: the partition is still this writer's; try the next number.
    MoveOn,
    /// Another writer took it: this one no longer owns the partition.
    Fenced,
}

/// The rule for a taken number. Pure. A compactor's own record is never moved: a compactor that
/// finds its number taken reads the log again and plans anew.
pub fn when_taken(mine: &LogRecord, existing: Option<&LogRecord>) -> Taken {
    match existing {
        Some(e) if e.same_put(mine) => Taken::Done,
        Some(e) if e.kind == RecordKind::Compact && mine.kind != RecordKind::Compact => {
            Taken::MoveOn
        }
        _ => Taken::Fenced,
    }
}

/// A log as listed: each sequence number with its record, or `None` when the record is torn (empty
/// or unreadable after a power loss before the store made it durable).
pub type Entries = Vec<(u64, Option<LogRecord>)>;

/// What a log says, and what to do about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogState {
    /// The newest commit: its sequence number and batch.
    pub newest_commit: Option<(u64, BatchRecord)>,
    /// Intents whose next record is not their commit: their files must go.
    pub uncommitted: Vec<(u64, BatchRecord)>,
    /// Torn records: if one was an intent, its files are unknown, so files carrying its sequence
    /// number must be found by listing the partition's data.
    pub torn: Vec<u64>,
    /// The first free sequence number.
    pub next_seq: u64,
    /// Records that no reader needs any more (never a `compact`: see `removable_compactions`).
    pub deletable: Vec<u64>,
    /// The `compact` records, to be rolled forward where unfinished.
    pub compactions: Vec<(u64, CompactionRecord)>,
    /// `compact` records that may go once their compaction is finished: below the newest commit (so
    /// their number is never taken again by a writer in good standing), not between an aborted
    /// intent and the record that stops its writer, and above no intent still in the log.
    pub removable_compactions: Vec<u64>,
}

impl LogState {
    /// First offset not yet in the lake; `None` when the lake has nothing of the partition.
    pub fn next_offset(&self) -> Option<i64> {
        self.newest_commit
            .as_ref()
            .map(|(_, b)| b.range.last_offset + 1)
    }

    /// Whether the data file numbered `seq` holds committed rows, by the log alone. Pure.
    ///
    /// A writer's file (`compacted` false) is committed when its intent lies below the newest
    /// commit and did not abort or tear: intents above the newest commit are in flight. A
    /// compaction's file is committed when its `compact` record is in the log, or lies below the
    /// newest commit (a finished compaction's record is removed only there).
    pub fn file_is_committed(&self, seq: u64, compacted: bool) -> bool {
        let below_newest = self.newest_commit.as_ref().is_some_and(|(n, _)| seq < *n);
        if compacted {
            return below_newest || self.compactions.iter().any(|(s, _)| *s == seq);
        }
        below_newest
            && !self.uncommitted.iter().any(|(s, _)| *s == seq)
            && !self.torn.contains(&seq)
    }

    /// Whether a file is replaced or written by a `compact` record still in the log: such files are
    /// left to that compaction's roll-forward, never planned again.
    pub fn in_pending_compaction(&self, path: &str) -> bool {
        self.compactions.iter().any(|(_, c)| {
            c.groups
                .iter()
                .any(|g| g.merged == path || g.replaced.iter().any(|r| r == path))
        })
    }

    /// The number below which every file is settled (committed, or aborted and known as such), for
    /// a dedup snapshot: the first intent above the newest commit, or the next free number. Pure.
    pub fn settled_below(&self) -> u64 {
        let newest = self.newest_commit.as_ref().map(|(n, _)| *n);
        self.uncommitted
            .iter()
            .map(|(s, _)| *s)
            .chain(self.torn.iter().copied())
            .filter(|s| newest.is_none_or(|n| *s > n))
            .chain(std::iter::once(self.next_seq))
            .min()
            .unwrap_or(self.next_seq)
    }
}

/// The first record after `seq` that is not a `compact` (a torn record counts: it stops an intent).
fn next_decisive(
    entries: &[(u64, Option<LogRecord>)],
    seq: u64,
) -> Option<(u64, Option<&LogRecord>)> {
    entries
        .iter()
        .filter(|(s, _)| *s > seq)
        .find(|(_, r)| r.as_ref().is_none_or(|r| r.kind != RecordKind::Compact))
        .map(|(s, r)| (*s, r.as_ref()))
}

/// What became of a writer's own intent, put at `seq` by an earlier attempt at a batch, as the log
/// reads now (see [`intent_fate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentFate {
    /// Its commit is the first record after it that is not a `compact`, at this number.
    Committed(u64),
    /// Nothing after it but compactions: the batch is still this writer's to finish (if it is
    /// younger than half of [`ABORTED_INTENT_RETENTION_US`]: see `Lake::commit_batch`).
    Open,
    /// Another record stops it (a rival's claim, a torn record): it never commits, and its files
    /// must go.
    Aborted,
    /// No longer in the log (or another record at its number): tidied, which happens to an
    /// intent only below a newer commit, and to an aborted one only after
    /// [`ABORTED_INTENT_RETENTION_US`]. A writer puts files and commits only for intents younger
    /// than half of that (by its clock), so for it this means its commit had landed and another
    /// writer moved on, or the intent aborted and a tidy swept its files before deleting it.
    Tidied,
}

/// The rule for a retry of a batch whose intent `mine` an earlier attempt put at `seq`. Pure.
pub fn intent_fate(entries: &[(u64, Option<LogRecord>)], seq: u64, mine: &LogRecord) -> IntentFate {
    let at_seq = entries
        .iter()
        .find(|(s, _)| *s == seq)
        .map(|(_, r)| r.as_ref());
    match at_seq {
        // Torn: a power loss took the put; recovery sweeps files of that number.
        Some(None) => IntentFate::Aborted,
        Some(Some(record)) if record.same_put(mine) => match next_decisive(entries, seq) {
            None => IntentFate::Open,
            Some((commit, Some(next)))
                if next.kind == RecordKind::Commit && next.batch == mine.batch =>
            {
                IntentFate::Committed(commit)
            }
            Some(_) => IntentFate::Aborted,
        },
        // Gone, or a stale writer's record put into the hole it left.
        _ => IntentFate::Tidied,
    }
}

/// Reads a log (sorted by sequence number). Pure: the rules of the protocol in one place.
///
/// Records below the newest commit are deletable, except intents that never committed and are
/// younger than [`ABORTED_INTENT_RETENTION_US`], with the record after each; torn records are
/// deletable once their possible files are swept, which the caller does before deleting anything
/// (unless one is the record after such an intent). A `compact` record is removable below the
/// newest commit, outside such a span, and above no intent still in the log.
///
/// Deleting makes numbers free again. A stale writer that puts into such a hole finds the newest
/// commit above it (that one is never deleted) and counts itself fenced: see `Lake::put_record`.
pub fn read_log(entries: &[(u64, Option<LogRecord>)], now_us: i64) -> LogState {
    let mut state = LogState {
        next_seq: entries.last().map_or(0, |(s, _)| s + 1),
        ..Default::default()
    };
    for (seq, record) in entries {
        let Some(record) = record else {
            state.torn.push(*seq);
            continue;
        };
        match (record.kind, &record.batch, &record.compaction) {
            // A commit stands on its own: its intent is tidied away once it lands. Only a writer
            // whose intent was in sequence puts one (see `Lake::put_record`).
            (RecordKind::Commit, Some(batch), _) => {
                state.newest_commit = Some((*seq, batch.clone()));
            }
            (RecordKind::Intent, Some(batch), _) => {
                let committed = next_decisive(entries, *seq).is_some_and(|(_, c)| {
                    c.is_some_and(|c| {
                        c.kind == RecordKind::Commit && c.batch.as_ref() == Some(batch)
                    })
                });
                if !committed {
                    state.uncommitted.push((*seq, batch.clone()));
                }
            }
            (RecordKind::Compact, _, Some(compaction)) => {
                state.compactions.push((*seq, compaction.clone()));
            }
            _ => {}
        }
    }
    let newest = state.newest_commit.as_ref().map(|(s, _)| *s);
    // An aborted intent is kept with every record up to the first one after it that is not a
    // `compact`: while that number stays taken, the intent's writer can never put its commit there.
    let mut kept: Vec<u64> = Vec::new();
    for (seq, record) in entries {
        let young_abort = record.as_ref().is_some_and(|r| {
            state.uncommitted.iter().any(|(s, _)| s == seq)
                && now_us.saturating_sub(r.written_at_us) < ABORTED_INTENT_RETENTION_US
        });
        if young_abort {
            let upto = next_decisive(entries, *seq).map_or(u64::MAX, |(s, _)| s);
            kept.extend(
                entries
                    .iter()
                    .map(|(s, _)| *s)
                    .filter(|s| *s >= *seq && *s <= upto),
            );
            // The decisive number itself, even when it is free (a hole).
            kept.push(seq + 1);
        }
    }
    // A `compact` record above an intent still in the log stays: removed first, it would leave a
    // hole between the intent and its commit, and a stale writer's record put there would make a
    // committed intent read as aborted. Writers tidy in ascending order, so the intent goes first.
    let lowest_intent = entries
        .iter()
        .filter(|(_, r)| r.as_ref().is_some_and(|r| r.kind == RecordKind::Intent))
        .map(|(s, _)| *s)
        .min();
    for (seq, record) in entries {
        let below_newest = newest.is_some_and(|n| *seq < n);
        let compact = record
            .as_ref()
            .is_some_and(|r| r.kind == RecordKind::Compact);
        if compact {
            let above_an_intent = lowest_intent.is_some_and(|i| i < *seq);
            if below_newest && !kept.contains(seq) && !above_an_intent {
                state.removable_compactions.push(*seq);
            }
        } else if !kept.contains(seq) && (record.is_none() || below_newest) {
            // A torn record that stops a young aborted intent is kept like any other: deleted,
            // it would free the number for that intent's writer to commit into.
            state.deletable.push(*seq);
        }
    }
    state
}

/// The name of the record with this sequence number.
pub fn record_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

/// The sequence number of a record's name.
pub fn parse_record_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000_000_000;

    fn batch(first: i64, last: i64) -> BatchRecord {
        BatchRecord {
            range: BatchRange {
                topic: "t".into(),
                partition: 0,
                first_offset: first,
                last_offset: last,
            },
            files: vec![format!("f-{first}")],
            rows: 1,
        }
    }

    fn rec(kind: RecordKind, writer: &str, batch: Option<BatchRecord>) -> Option<LogRecord> {
        Some(LogRecord {
            kind,
            writer: writer.into(),
            written_at_us: NOW,
            batch,
            compaction: None,
        })
    }

    fn compact(w: &str, seq: u64) -> Option<LogRecord> {
        Some(LogRecord {
            kind: RecordKind::Compact,
            writer: w.into(),
            written_at_us: NOW,
            batch: None,
            compaction: Some(CompactionRecord {
                folder: "evaluations/dt=2024-10-04/city=410300".into(),
                groups: vec![CompactionGroup {
                    merged: format!("m-{seq}"),
                    replaced: vec!["f-0".into(), "f-10".into()],
                }],
                rows: 2,
            }),
        })
    }

    fn claim(w: &str) -> Option<LogRecord> {
        rec(RecordKind::Claim, w, None)
    }
    fn intent(w: &str, first: i64, last: i64) -> Option<LogRecord> {
        rec(RecordKind::Intent, w, Some(batch(first, last)))
    }
    fn commit(w: &str, first: i64, last: i64) -> Option<LogRecord> {
        rec(RecordKind::Commit, w, Some(batch(first, last)))
    }

    fn log(records: Vec<Option<LogRecord>>) -> Entries {
        records
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i as u64 + 10, r))
            .collect()
    }

    #[test]
    fn what_became_of_an_earlier_attempt_s_intent() {
        let mine = intent("a", 0, 9).unwrap();
        let without = |seq: u64, entries: Entries| -> Entries {
            entries.into_iter().filter(|(s, _)| *s != seq).collect()
        };
        // Every log has the intent's place at 11 (the claim is at 10).
        let cases: Vec<(&str, Entries, IntentFate)> = vec![
            (
                "alone at the top",
                log(vec![claim("a"), intent("a", 0, 9)]),
                IntentFate::Open,
            ),
            (
                "only a compaction after it",
                log(vec![claim("a"), intent("a", 0, 9), compact("c", 12)]),
                IntentFate::Open,
            ),
            (
                "its commit after it",
                log(vec![claim("a"), intent("a", 0, 9), commit("a", 0, 9)]),
                IntentFate::Committed(12),
            ),
            (
                "its commit after a compaction",
                log(vec![
                    claim("a"),
                    intent("a", 0, 9),
                    compact("c", 12),
                    commit("a", 0, 9),
                ]),
                IntentFate::Committed(13),
            ),
            (
                "a rival's claim after it",
                log(vec![claim("a"), intent("a", 0, 9), claim("b")]),
                IntentFate::Aborted,
            ),
            (
                "a torn record after it",
                log(vec![claim("a"), intent("a", 0, 9), None]),
                IntentFate::Aborted,
            ),
            (
                "a commit of another batch after it",
                log(vec![claim("a"), intent("a", 0, 9), commit("a", 0, 19)]),
                IntentFate::Aborted,
            ),
            (
                "itself torn",
                log(vec![claim("a"), None]),
                IntentFate::Aborted,
            ),
            (
                "tidied after its commit",
                without(
                    11,
                    log(vec![claim("a"), intent("a", 0, 9), commit("a", 0, 9)]),
                ),
                IntentFate::Tidied,
            ),
            (
                "tidied, the whole log since moved on",
                log(vec![commit("b", 10, 19)]),
                IntentFate::Tidied,
            ),
            (
                "a stale writer's record in the hole",
                log(vec![claim("a"), intent("s", 0, 9), commit("b", 10, 19)]),
                IntentFate::Tidied,
            ),
        ];
        for (name, entries, fate) in cases {
            assert_eq!(intent_fate(&entries, 11, &mine), fate, "{name}");
        }
    }

    #[test]
    fn an_empty_log_starts_at_zero_and_knows_no_offset() {
        let state = read_log(&[], NOW);
        assert_eq!(state.next_seq, 0);
        assert_eq!(state.next_offset(), None);
    }

    #[test]
    fn rules_of_the_log() {
        struct Case {
            name: &'static str,
            log: Entries,
            next_offset: Option<i64>,
            uncommitted: Vec<u64>,
            torn: Vec<u64>,
            deletable: Vec<u64>,
        }
        let cases = [
            Case {
                name: "a compaction between an intent and its commit does not break the batch",
                log: log(vec![claim("a"), intent("a", 0, 9), compact("x", 12), commit("a", 0, 9)]),
                next_offset: Some(10),
                uncommitted: vec![],
                torn: vec![],
                // The compaction's record is never tidied by writers (see removable_compactions).
                deletable: vec![10, 11],
            },
            Case {
                name: "a claim after an intent and a compaction aborts the intent",
                log: log(vec![claim("a"), intent("a", 0, 9), compact("x", 12), claim("b"), intent("b", 0, 4), commit("b", 0, 4)]),
                next_offset: Some(5),
                uncommitted: vec![11],
                torn: vec![],
                // a's aborted intent is kept with everything up to b's claim that stops it.
                deletable: vec![10, 14],
            },
            Case {
                name: "a torn record after an intent and a compaction aborts the intent, and stays \
                       while the intent is kept (deleted, it would free the number for its commit)",
                log: log(vec![claim("a"), intent("a", 0, 9), compact("x", 12), None]),
                next_offset: None,
                uncommitted: vec![11],
                torn: vec![13],
                deletable: vec![],
            },
            Case {
                name: "a removed compaction leaves a hole between an intent and its commit",
                log: vec![(10, claim("a")), (11, intent("a", 0, 9)), (13, commit("a", 0, 9))],
                next_offset: Some(10),
                uncommitted: vec![],
                torn: vec![],
                deletable: vec![10, 11],
            },
            Case {
                name: "committed batches: resume after the newest, tidy what is below it",
                log: log(vec![
                    claim("a"),
                    intent("a", 0, 9),
                    commit("a", 0, 9),
                    intent("a", 10, 19),
                    commit("a", 10, 19),
                ]),
                next_offset: Some(20),
                uncommitted: vec![],
                torn: vec![],
                deletable: vec![10, 11, 12, 13],
            },
            Case {
                name: "an intent without its commit rolls back and is kept for re-sweeping",
                log: log(vec![claim("a"), intent("a", 0, 9), commit("a", 0, 9), intent("a", 10, 19)]),
                next_offset: Some(10),
                uncommitted: vec![13],
                torn: vec![],
                deletable: vec![10, 11],
            },
            Case {
                name: "a stale writer's intent before the new owner's claim and commit",
                log: log(vec![
                    claim("a"),
                    intent("a", 0, 9),
                    claim("b"),
                    intent("b", 0, 4),
                    commit("b", 0, 4),
                ]),
                next_offset: Some(5),
                uncommitted: vec![11],
                torn: vec![],
                // b's claim at 12 stays while a's aborted intent at 11 does.
                deletable: vec![10, 13],
            },
            Case {
                name: "the newest commit stands alone once its intent is tidied",
                log: log(vec![commit("a", 0, 9), claim("b")]),
                next_offset: Some(10),
                uncommitted: vec![],
                torn: vec![],
                deletable: vec![],
            },
            Case {
                name: "a torn commit is absent: its intent rolls back, and the torn record stays \
                       while the intent is kept",
                log: log(vec![claim("a"), intent("a", 0, 9), commit("a", 0, 9), intent("a", 10, 19), None]),
                next_offset: Some(10),
                uncommitted: vec![13],
                torn: vec![14],
                deletable: vec![10, 11],
            },
            Case {
                name: "a torn intent is swept by its sequence number",
                log: log(vec![claim("a"), None]),
                next_offset: None,
                uncommitted: vec![],
                torn: vec![11],
                deletable: vec![11],
            },
            Case {
                name: "offsets may go backwards (an adopted topic): the newest commit by sequence wins",
                log: log(vec![intent("a", 100, 199), commit("a", 100, 199), claim("b"), intent("b", 0, 9), commit("b", 0, 9)]),
                next_offset: Some(10),
                uncommitted: vec![],
                torn: vec![],
                deletable: vec![10, 11, 12, 13],
            },
        ];
        for case in cases {
            let state = read_log(&case.log, NOW);
            assert_eq!(state.next_offset(), case.next_offset, "{}", case.name);
            let uncommitted: Vec<u64> = state.uncommitted.iter().map(|(s, _)| *s).collect();
            assert_eq!(uncommitted, case.uncommitted, "{}", case.name);
            assert_eq!(state.torn, case.torn, "{}", case.name);
            assert_eq!(state.deletable, case.deletable, "{}", case.name);
            assert_eq!(
                state.next_seq,
                case.log.last().unwrap().0 + 1,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn compaction_records_are_removable_only_below_the_newest_commit_and_outside_an_abort() {
        // (log, removable compactions)
        let cases: Vec<(&str, Entries, Vec<u64>)> = vec![
            (
                "above the newest commit: stays (its number could be reused otherwise)",
                log(vec![intent("a", 0, 9), commit("a", 0, 9), compact("x", 12)]),
                vec![],
            ),
            (
                "below the newest commit: removable",
                log(vec![compact("x", 10), intent("a", 0, 9), commit("a", 0, 9)]),
                vec![10],
            ),
            (
                "between an intent and its commit, the intent not yet tidied: kept",
                log(vec![
                    intent("a", 0, 9),
                    compact("x", 11),
                    commit("a", 0, 9),
                    intent("a", 10, 19),
                    commit("a", 10, 19),
                ]),
                vec![],
            ),
            (
                "the same once the writer tidied below its newest commit: removable",
                log(vec![
                    compact("x", 10),
                    intent("a", 10, 19),
                    commit("a", 10, 19),
                ]),
                vec![10],
            ),
            (
                "between an aborted intent and the claim that stops it: kept",
                log(vec![
                    intent("a", 0, 9),
                    compact("x", 11),
                    claim("b"),
                    intent("b", 0, 4),
                    commit("b", 0, 4),
                ]),
                vec![],
            ),
        ];
        for (name, entries, removable) in cases {
            let state = read_log(&entries, NOW);
            assert_eq!(state.removable_compactions, removable, "{name}");
            assert!(
                state
                    .compactions
                    .iter()
                    .all(|(s, _)| !state.deletable.contains(s)),
                "{name}: writers never tidy a compact record"
            );
        }
    }

    #[test]
    fn a_taken_number_fences_moves_on_or_is_done() {
        let mine_intent = intent("a", 0, 9).unwrap();
        let mine_compact = compact("x", 3).unwrap();
        let cases = [
            (
                "own retry",
                mine_intent.clone(),
                Some(mine_intent.clone()),
                Taken::Done,
            ),
            (
                "a compaction's number: move on",
                mine_intent.clone(),
                compact("x", 3),
                Taken::MoveOn,
            ),
            (
                "a rival's claim",
                mine_intent.clone(),
                claim("b"),
                Taken::Fenced,
            ),
            (
                "a rival's identical-looking intent",
                mine_intent.clone(),
                intent("b", 0, 9),
                Taken::Fenced,
            ),
            ("torn or gone", mine_intent.clone(), None, Taken::Fenced),
            (
                "a compactor never moves on",
                mine_compact.clone(),
                compact("y", 3),
                Taken::Fenced,
            ),
            (
                "a compactor's own retry",
                mine_compact.clone(),
                Some(mine_compact.clone()),
                Taken::Done,
            ),
        ];
        for (name, mine, existing, expected) in cases {
            assert_eq!(when_taken(&mine, existing.as_ref()), expected, "{name}");
        }
    }

    #[test]
    fn which_files_are_committed_and_where_a_snapshot_may_end() {
        // claim 10, intent 11 (committed by 12), compact 13, intent 14 (aborted by 15), claim 15,
        // intent 16 in flight.
        let entries = log(vec![
            claim("a"),
            intent("a", 0, 9),
            commit("a", 0, 9),
            compact("x", 13),
            intent("a", 10, 19),
            claim("b"),
            intent("b", 10, 14),
        ]);
        let state = read_log(&entries, NOW);
        // (seq, compacted, committed)
        let cases = [
            (11, false, true),
            (5, false, true),   // an older batch whose records were tidied
            (12, false, false), // not below the newest commit
            (14, false, false), // aborted
            (16, false, false), // in flight
            (13, true, true),   // its compact record is in the log
            (7, true, true),    // a finished compaction below the newest commit
            (20, true, false),  // no such record
        ];
        for (seq, compacted, committed) in cases {
            assert_eq!(
                state.file_is_committed(seq, compacted),
                committed,
                "seq {seq}, compacted {compacted}"
            );
        }
        assert_eq!(
            state.settled_below(),
            14,
            "the first intent above the newest commit"
        );
        assert_eq!(
            read_log(&entries[..4], NOW).settled_below(),
            14,
            "nothing in flight"
        );
        assert!(state.in_pending_compaction("f-10"));
        assert!(state.in_pending_compaction("m-13"));
        assert!(!state.in_pending_compaction("f-20"));
    }

    #[test]
    fn aborted_intents_are_dropped_after_their_retention() {
        let mut entries = log(vec![
            intent("a", 0, 9),
            claim("b"),
            intent("b", 0, 4),
            commit("b", 0, 4),
        ]);
        if let Some(record) = entries[0].1.as_mut() {
            record.written_at_us = NOW - ABORTED_INTENT_RETENTION_US;
        }
        let state = read_log(&entries, NOW);
        assert_eq!(state.deletable, vec![10, 11, 12]);
        entries[0].1.as_mut().unwrap().written_at_us = NOW;
        assert_eq!(read_log(&entries, NOW).deletable, vec![12]);
        assert_eq!(state.uncommitted.len(), 1, "still swept once more");
    }

    #[test]
    fn record_names_round_trip_and_reject_strangers() {
        assert_eq!(record_name(7), "00000000000000000007.json");
        assert_eq!(parse_record_name(&record_name(u64::MAX)), Some(u64::MAX));
        for stranger in [
            "7.json",
            "00000000000000000007.json#1",
            "0000000000000000000x.json",
            "x",
        ] {
            assert_eq!(parse_record_name(stranger), None, "{stranger}");
        }
    }
}
