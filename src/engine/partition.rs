//! One Kafka partition's state on this instance, and the pure rules that decide what to do with each
//! message of it.

use std::time::{Duration, Instant};

use rdkafka::producer::DeliveryFuture;

use crate::lake::{BatchRange, Lease};
use crate::sink::parquet::{PartitionKey, TableError, TableRows};
use crate::transform::dedup::DedupState;

/// A partition of one of the run's streams: the stream's index in the run, and the Kafka
/// partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tp {
    pub stream: usize,
    pub partition: i32,
}

/// One Kafka partition's state on this instance.
pub struct PartitionState {
    pub cursor: Cursor,
    /// The offset the lake has committed up to (exclusive), for the Kafka commit.
    pub committed: Option<i64>,
    /// This instance's hold on the partition's log.
    pub lease: Lease,
    pub dedup: DedupState,
    pub batch: Option<Batch>,
    /// The previous batch, being encoded and committed by a task of its own; not in the lake yet.
    pub committing: Option<Committing>,
    /// Whether fetching is paused because the open batch is full while the previous one still
    /// commits (see [`next_step`]).
    pub held: bool,
}

/// A closed batch on its way into the lake.
pub struct Committing {
    pub range: BatchRange,
    pub task: tokio::task::JoinHandle<Result<super::commit::Committed, super::EngineError>>,
}

/// What to do with a partition's open batch now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Leave it open (not full nor due, or no batch at all).
    Wait,
    /// Close it and start committing it.
    Flush,
    /// It is full but the previous batch still commits (a slow or failing lake or dead-letter
    /// topic): stop fetching the partition until that commit ends. What was already fetched still
    /// joins the batch; librdkafka's fetch queue bounds it.
    Hold,
}

/// Decides a partition's step from its open batch (`None`, or whether it is full and whether its
/// oldest event has waited the flush interval) and whether its previous batch is still committing.
/// Batches of one partition commit one at a time, in offset order. Pure.
pub fn next_step(batch: Option<(bool, bool)>, committing: bool) -> Step {
    match batch {
        None => Step::Wait,
        Some((true, _)) if committing => Step::Hold,
        Some(_) if committing => Step::Wait,
        Some((full, due)) if full || due => Step::Flush,
        Some(_) => Step::Wait,
    }
}

/// Where a partition's reading stands against the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Next offset expected: the lake's position after recovery, then one past the last message
    /// processed. `None` while the lake holds nothing of the partition.
    pub position: Option<i64>,
    /// Whether the consumer has been put where the lake ends (a seek, or a first message that was
    /// already there). Until then the group's committed offset decides what arrives, and that is
    /// only a hint.
    pub positioned: bool,
}

impl Cursor {
    /// A cursor right after recovery.
    pub fn recovered(position: Option<i64>) -> Self {
        Self {
            position,
            positioned: false,
        }
    }
}

/// Where to move the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Beginning,
    Offset(i64),
}

/// What to do with a message, given its partition's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Process,
    /// The message is not where the lake ends: move the consumer and drop what was fetched.
    Seek(SeekTo),
    /// The broker skipped offsets it should hold; processed, but never silently.
    ProcessAfterGap {
        expected: i64,
    },
    /// After the consumer was put at the lake's position, the broker answered with an earlier
    /// offset: it does not hold the lake's position (a recreated topic, a moved cluster).
    Reset {
        lake_position: i64,
    },
    /// The same, accepted by the operator (`kafka.accept_offset_reset`): processed from here.
    AdoptedReset {
        lake_position: i64,
    },
}

/// Decides what to do with the message at `offset`, and moves the cursor past it when it is to be
/// processed. Pure: the whole admission policy, unit-tested below.
///
/// - A partition the lake knows nothing about starts at the topic's beginning, not at the group's
///   committed offset (the group may come from another lake).
/// - A first message anywhere but at the lake's position seeks there; this also skips a replay of
///   what the lake already holds after a crash between the lake's and the group's commits.
/// - Once positioned, a message below the position means the broker reset the offset: the topic no
///   longer holds what the lake has. That is [`Admission::Reset`] unless `accept_reset`.
pub fn admit(cursor: &mut Cursor, offset: i64, accept_reset: bool) -> Admission {
    if !cursor.positioned {
        cursor.positioned = true;
        match cursor.position {
            None => return Admission::Seek(SeekTo::Beginning),
            Some(position) if offset != position => {
                return Admission::Seek(SeekTo::Offset(position))
            }
            Some(_) => {}
        }
    }
    let admission = match cursor.position {
        Some(position) if offset > position => Admission::ProcessAfterGap { expected: position },
        Some(position) if offset < position && !accept_reset => {
            return Admission::Reset {
                lake_position: position,
            }
        }
        Some(position) if offset < position => Admission::AdoptedReset {
            lake_position: position,
        },
        _ => Admission::Process,
    };
    cursor.position = Some(offset + 1);
    admission
}

/// A partition this instance lost to another writer's claim on the lake's log: paused on the
/// consumer until `retake_at`, then recovered (claimed) again.
///
/// Retaking at once is what two instances with different groups on one lake did before: each claim
/// fenced the other's next commit, and neither ever committed. Leaving the partition to the newer
/// claim for longer than a batch takes lets that writer commit; if it has died meanwhile, this
/// instance carries on from where the lake ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    pub retake_at: Instant,
}

/// The longest a fenced partition is left to another writer before this instance looks again.
pub const MAX_RETAKE_DELAY: Duration = Duration::from_secs(120);

/// How long to leave a partition to the writer that fenced us, the `streak`-th time in a row (1 =
/// first): at least one flush interval (and never under a second), doubling with every fence that
/// found no commit of ours in between, up to [`MAX_RETAKE_DELAY`]. `jitter` in [0, 1) spreads
/// instances that were fenced together, by up to a quarter of the delay. Pure.
pub fn retake_delay(flush_interval: Duration, streak: u32, jitter: f64) -> Duration {
    let base = flush_interval.max(Duration::from_secs(1));
    let doubled = base.saturating_mul(1u32 << streak.saturating_sub(1).min(16));
    let delay = doubled.min(MAX_RETAKE_DELAY);
    delay + delay.mul_f64(jitter.clamp(0.0, 0.999) / 4.0)
}

/// What to do with a partition just recovered, given where the broker's log of it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeCheck {
    /// The broker holds the lake's position (or the lake has none): resume there.
    Resume,
    /// The broker's log ends before the lake's position: it is not the log the lake was written
    /// from (a recreated topic, a moved cluster). Seeking there would wait for offsets that belong
    /// to other records, and skip those below as "already in the lake".
    BehindLake,
    /// The same, accepted by the operator: read the broker's log from its beginning.
    Adopt,
}

/// Compares the lake's position with the broker's end of the partition (its high watermark). Pure.
pub fn check_resume(
    lake_position: Option<i64>,
    broker_end: i64,
    accept_reset: bool,
) -> ResumeCheck {
    match lake_position {
        Some(position) if broker_end < position && accept_reset => ResumeCheck::Adopt,
        Some(position) if broker_end < position => ResumeCheck::BehindLake,
        _ => ResumeCheck::Resume,
    }
}

/// A closed batch whose Parquet files are being encoded: the input of [`super::commit::commit_batch`].
pub struct Encoding {
    pub range: BatchRange,
    pub rows: u64,
    pub dead_letters: Vec<DeliveryFuture>,
    pub alerts: Vec<DeliveryFuture>,
    pub files: tokio::task::JoinHandle<Result<Vec<(PartitionKey, bytes::Bytes)>, TableError>>,
}

/// The open batch of one partition: the rows dedup kept, in the parts its chunks were prepared in
/// (on one core or on every core), for [`crate::lake::Lake::encode_parts`].
pub struct Batch {
    pub parts: Vec<Box<dyn TableRows>>,
    /// Rows dedup kept, across `parts`.
    pub kept: usize,
    /// Bytes of the messages read into the batch: a bound on its text, which Arrow caps per column.
    pub bytes: usize,
    pub first_offset: i64,
    pub last_offset: i64,
    pub opened: Instant,
    pub dead_letters: Vec<DeliveryFuture>,
    /// Alerts fired by the batch's evaluations, confirmed before it commits.
    pub alerts: Vec<DeliveryFuture>,
}

impl Batch {
    pub fn new(first_offset: i64) -> Self {
        Self {
            parts: Vec::new(),
            kept: 0,
            bytes: 0,
            first_offset,
            last_offset: first_offset,
            opened: Instant::now(),
            dead_letters: Vec::new(),
            alerts: Vec::new(),
        }
    }
}

/// The open batches that are full. The open batches of every partition together hold at most
/// `flush_rows` rows and `flush_bytes` bytes of messages; once they reach either, the largest of
/// those that can close (by its share of the bound it is nearer) is full, and so is every batch
/// that cannot close yet because its previous batch still commits, so that [`next_step`] holds
/// its partition instead of letting it grow: through a lake outage, every partition is held.
///
/// With one partition this is a batch of `flush_rows` rows. With many, batches are smaller and an
/// instance's memory stays the same however many partitions a rebalance gives it, where a bound
/// per partition would multiply it by their number (an instance left with all sixteen partitions
/// of a topic would hold sixteen batches). `open` is each open batch's partition, rows, bytes and
/// whether its previous batch still commits. Pure.
pub fn full_batches(
    open: impl IntoIterator<Item = (Tp, usize, usize, bool)>,
    flush_rows: usize,
    flush_bytes: usize,
) -> Vec<Tp> {
    let (mut rows, mut bytes) = (0usize, 0usize);
    let mut waiting = Vec::new();
    let mut largest: Option<(f64, Tp)> = None;
    for (tp, batch_rows, batch_bytes, committing) in open {
        rows = rows.saturating_add(batch_rows);
        bytes = bytes.saturating_add(batch_bytes);
        if committing {
            waiting.push(tp);
            continue;
        }
        let share = (batch_rows as f64 / flush_rows.max(1) as f64)
            .max(batch_bytes as f64 / flush_bytes.max(1) as f64);
        // Ties go to the lower partition, so that the choice never depends on a map's order.
        if largest.is_none_or(|(most, at)| share > most || (share == most && tp < at)) {
            largest = Some((share, tp));
        }
    }
    if rows < flush_rows && bytes < flush_bytes {
        return Vec::new();
    }
    waiting.extend(largest.map(|(_, tp)| tp));
    waiting.sort_unstable();
    waiting
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_full_batch_behind_a_slow_commit_holds_the_partition() {
        use super::{next_step, Step::*};
        // (open batch: (full, due), previous batch committing, expected)
        let cases = [
            (None, false, Wait),
            (None, true, Wait),
            (Some((false, false)), false, Wait),
            (Some((false, true)), false, Flush),
            (Some((true, false)), false, Flush),
            (Some((true, true)), false, Flush),
            (Some((false, false)), true, Wait),
            (Some((false, true)), true, Wait), // due, but batches commit in order: later
            (Some((true, false)), true, Hold),
            (Some((true, true)), true, Hold),
        ];
        for (batch, committing, expected) in cases {
            assert_eq!(
                next_step(batch, committing),
                expected,
                "{batch:?}, committing {committing}"
            );
        }
    }

    #[test]
    fn a_broker_log_that_ends_before_the_lake_is_not_resumed() {
        use super::{check_resume, ResumeCheck::*};
        // (lake position, broker end, accept reset, expected)
        let cases = [
            (None, 0, false, Resume),
            (None, 500, false, Resume),
            (Some(2000), 2000, false, Resume), // caught up
            (Some(2000), 2500, false, Resume), // more to read
            (Some(2000), 500, false, BehindLake),
            (Some(2000), 1999, false, BehindLake),
            (Some(2000), 0, false, BehindLake), // recreated and empty
            (Some(2000), 500, true, Adopt),
            (Some(0), 0, false, Resume),
        ];
        for (position, end, accept, expected) in cases {
            assert_eq!(
                check_resume(position, end, accept),
                expected,
                "{position:?} vs {end}, accept {accept}"
            );
        }
    }

    #[test]
    fn retake_delay_grows_from_one_flush_and_is_bounded() {
        use std::time::Duration;
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // (flush interval, streak, jitter, expected)
        let cases = [
            (s(30), 1, 0.0, s(30)),
            (s(30), 2, 0.0, s(60)),
            (s(30), 3, 0.0, s(120)),
            (s(30), 9, 0.0, s(120)),
            (ms(100), 1, 0.0, s(1)), // never under a second: the rival needs time to commit
            (ms(100), 3, 0.0, s(4)),
            (s(10), 1, 0.5, ms(11_250)),
            (s(10), u32::MAX, 0.0, s(120)), // no overflow on a very long streak
            (s(10), 0, 0.0, s(10)),
        ];
        for (interval, streak, jitter, expected) in cases {
            assert_eq!(
                super::retake_delay(interval, streak, jitter),
                expected,
                "{interval:?} × streak {streak}, jitter {jitter}"
            );
        }
        // Jitter outside [0, 1) is clamped, never a longer or negative delay.
        assert_eq!(
            super::retake_delay(s(1), 1, 7.0),
            super::retake_delay(s(1), 1, 0.999)
        );
        assert_eq!(super::retake_delay(s(1), 1, -3.0), s(1));
    }

    use super::*;

    #[test]
    fn admission_rules() {
        use Admission::*;
        struct Case {
            name: &'static str,
            cursor: Cursor,
            offset: i64,
            accept_reset: bool,
            expect: Admission,
            after: Option<i64>,
        }
        let fresh = |position| Cursor::recovered(position);
        let positioned = |position| Cursor {
            position,
            positioned: true,
        };
        let cases = [
            Case {
                name: "lake knows nothing: start at the beginning, not at the group's offset",
                cursor: fresh(None),
                offset: 500,
                accept_reset: false,
                expect: Seek(SeekTo::Beginning),
                after: None,
            },
            Case {
                name: "after the seek to the beginning, whatever comes first is the start",
                cursor: positioned(None),
                offset: 3,
                accept_reset: false,
                expect: Process,
                after: Some(4),
            },
            Case {
                name: "first message at the lake's position",
                cursor: fresh(Some(10)),
                offset: 10,
                accept_reset: false,
                expect: Process,
                after: Some(11),
            },
            Case {
                name: "group ahead of the lake: seek back",
                cursor: fresh(Some(10)),
                offset: 42,
                accept_reset: false,
                expect: Seek(SeekTo::Offset(10)),
                after: Some(10),
            },
            Case {
                name: "group behind the lake (a crash between the commits): seek forward",
                cursor: fresh(Some(10)),
                offset: 4,
                accept_reset: false,
                expect: Seek(SeekTo::Offset(10)),
                after: Some(10),
            },
            Case {
                name: "a gap once positioned is processed and reported",
                cursor: positioned(Some(10)),
                offset: 12,
                accept_reset: false,
                expect: ProcessAfterGap { expected: 10 },
                after: Some(13),
            },
            Case {
                name: "below the position once positioned: the topic was reset",
                cursor: positioned(Some(10)),
                offset: 0,
                accept_reset: false,
                expect: Reset { lake_position: 10 },
                after: Some(10),
            },
            Case {
                name: "a reset that the operator accepted",
                cursor: positioned(Some(10)),
                offset: 0,
                accept_reset: true,
                expect: AdoptedReset { lake_position: 10 },
                after: Some(1),
            },
        ];
        for case in cases {
            let mut cursor = case.cursor;
            assert_eq!(
                admit(&mut cursor, case.offset, case.accept_reset),
                case.expect,
                "{}",
                case.name
            );
            assert_eq!(cursor.position, case.after, "{}", case.name);
            assert!(cursor.positioned, "{}", case.name);
        }
    }

    #[test]
    fn the_largest_batch_is_full_once_all_open_batches_reach_the_bound() {
        use super::{full_batches, Tp};
        let tp = |partition| Tp {
            stream: 0,
            partition,
        };
        let other_stream = Tp {
            stream: 1,
            partition: 0,
        };
        // (open batches as (partition, rows, bytes, previous batch committing), expected full
        // ones), with bounds of 100 rows and 1 000 bytes
        type Open = [(Tp, usize, usize, bool)];
        let cases: [(&Open, &[Tp]); 13] = [
            (&[], &[]),
            (&[(tp(0), 99, 999, false)], &[]),
            (&[(tp(0), 100, 0, false)], &[tp(0)]), // one partition: a batch of flush_rows rows
            (&[(tp(0), 0, 1000, false)], &[tp(0)]), // …or of flush_bytes bytes
            (
                &[
                    (tp(0), 30, 10, false),
                    (tp(1), 30, 10, false),
                    (tp(2), 30, 10, false),
                ],
                &[],
            ),
            (
                &[
                    (tp(0), 30, 10, false),
                    (tp(1), 40, 10, false),
                    (tp(2), 30, 10, false),
                ],
                &[tp(1)],
            ),
            // Nearer its bound by bytes than the other is by rows.
            (
                &[(tp(0), 60, 100, false), (tp(1), 10, 900, false)],
                &[tp(1)],
            ),
            (&[(tp(0), 50, 10, false), (tp(1), 50, 10, false)], &[tp(0)]), // a tie: the lower
            (&[(tp(1), 50, 10, false), (tp(0), 50, 10, false)], &[tp(0)]), // whatever the order
            // Every stream's batches share the bound: memory is memory.
            (
                &[(tp(0), 40, 10, false), (other_stream, 60, 10, false)],
                &[other_stream],
            ),
            // The largest still commits its previous batch: it is held, the next largest closes.
            (
                &[
                    (tp(0), 60, 10, true),
                    (tp(1), 30, 10, false),
                    (tp(2), 10, 10, false),
                ],
                &[tp(0), tp(1)],
            ),
            // A lake outage: nothing can close, everything is held.
            (
                &[(tp(0), 60, 10, true), (tp(1), 40, 10, true)],
                &[tp(0), tp(1)],
            ),
            // Under the bound, a committing partition goes on reading.
            (&[(tp(0), 60, 10, true), (tp(1), 30, 10, false)], &[]),
        ];
        for (open, expected) in cases {
            assert_eq!(
                full_batches(open.iter().copied(), 100, 1000),
                expected,
                "{open:?}"
            );
        }
        // No overflow on absurd sizes.
        assert_eq!(
            full_batches(
                [(tp(0), usize::MAX, 0, false), (tp(1), usize::MAX, 0, false)],
                100,
                1000
            ),
            [tp(0)]
        );
    }
}
