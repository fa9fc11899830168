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
//! | `commit` | the same writer, right after its intent | the batch at `seq - 1` is in the lake |
//!
//! A batch is committed exactly when the record after its intent is a `commit` of the same batch;
//! the commit put is the commit point. Data files carry their intent's sequence number in their
//! name, so two writers never write the same file, and a fenced writer's files are told apart from
//! the owner's by the log alone.

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
}

impl LogRecord {
    /// Whether `other` is the same record put again (a retried put whose first attempt landed).
    pub fn same_put(&self, other: &LogRecord) -> bool {
        self.kind == other.kind && self.writer == other.writer && self.batch == other.batch
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
    /// Records that no reader needs any more.
    pub deletable: Vec<u64>,
}

impl LogState {
    /// First offset not yet in the lake; `None` when the lake has nothing of the partition.
    pub fn next_offset(&self) -> Option<i64> {
        self.newest_commit
            .as_ref()
            .map(|(_, b)| b.range.last_offset + 1)
    }
}

/// Reads a log (sorted by sequence number). Pure: the rules of the protocol in one place.
///
/// Records below the newest commit are deletable, except intents that never committed and are
/// younger than [`ABORTED_INTENT_RETENTION_US`], with the record after each; torn records are
/// deletable once their possible files are swept, which the caller does before deleting anything.
///
/// Deleting makes numbers free again. A stale writer that puts into such a hole finds the newest
/// commit above it (that one is never deleted) and counts itself fenced: see `Lake::put_record`.
pub fn read_log(entries: &[(u64, Option<LogRecord>)], now_us: i64) -> LogState {
    let record_at = |seq: u64| -> Option<&LogRecord> {
        entries
            .binary_search_by_key(&seq, |(s, _)| *s)
            .ok()
            .and_then(|i| entries[i].1.as_ref())
    };
    let mut state = LogState {
        next_seq: entries.last().map_or(0, |(s, _)| s + 1),
        ..Default::default()
    };
    for (seq, record) in entries {
        let Some(record) = record else {
            state.torn.push(*seq);
            continue;
        };
        match (record.kind, &record.batch) {
            // A commit stands on its own: its intent is tidied away once it lands. Only a writer
            // whose intent was in sequence puts one (see `Lake::put_record`).
            (RecordKind::Commit, Some(batch)) => {
                state.newest_commit = Some((*seq, batch.clone()));
            }
            (RecordKind::Intent, Some(batch)) => {
                let committed = record_at(seq + 1).is_some_and(|c| {
                    c.kind == RecordKind::Commit && c.batch.as_ref() == Some(batch)
                });
                if !committed {
                    state.uncommitted.push((*seq, batch.clone()));
                }
            }
            _ => {}
        }
    }
    let newest = state.newest_commit.as_ref().map(|(s, _)| *s);
    // An aborted intent is kept with the record after it: while that number stays taken, the
    // intent's writer can never put its commit there.
    let kept: Vec<u64> = entries
        .iter()
        .filter(|(seq, record)| {
            record.as_ref().is_some_and(|r| {
                state.uncommitted.iter().any(|(s, _)| s == seq)
                    && now_us.saturating_sub(r.written_at_us) < ABORTED_INTENT_RETENTION_US
            })
        })
        .flat_map(|(seq, _)| [*seq, seq + 1])
        .collect();
    for (seq, record) in entries {
        let below_newest = newest.is_some_and(|n| *seq < n);
        if record.is_none() || (below_newest && !kept.contains(seq)) {
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
                name: "a torn commit is absent: its intent rolls back",
                log: log(vec![claim("a"), intent("a", 0, 9), commit("a", 0, 9), intent("a", 10, 19), None]),
                next_offset: Some(10),
                uncommitted: vec![13],
                torn: vec![14],
                deletable: vec![10, 11, 14],
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
