//! The offline run's rejected-lines file, `<lake>/_haochaping/rejected/<name>.<hash>.ndjson`: one
//! JSON record a line, appended while the run goes and made durable before the batch covering the
//! lines is handed to the writer. A disk that refuses a write because it is full, over a quota,
//! read-only or not writable by us is waited out as the lake's commits wait it out: the write
//! resumes at the byte where it stopped, so while the run lives no record is torn or written twice
//! (a kill, or `lake.give_up_after` running out, can leave a torn last record, which the next run
//! cuts off). Any other write error, and an fsync that fails, end the run: after a failed fsync the
//! kernel may have dropped the pages it could not write, and a second fsync can succeed without
//! them. The batch was not committed, so the rerun parks its lines again. A filesystem that
//! reports a full disk only at fsync (some network filesystems) therefore ends the run.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CutLine;
use crate::decode::Rejection;
use crate::engine::EngineError;
use crate::retry::Persistence;
use crate::sink::dlq::protect::{rejected_line, Protector};

/// Parked records are written once this many bytes wait, so a batch of rejected lines costs this
/// much memory (plus one record, up to `validation.max_message_bytes` encoded), not the batch's
/// size.
const WRITE_AT_BYTES: usize = 1 << 20;

pub(super) struct RejectedLines {
    path: PathBuf,
    file: std::fs::File,
    /// Records parked and not yet written.
    pending: Vec<u8>,
    persistence: Persistence,
}

impl RejectedLines {
    /// Opens (or creates) the file for appending, without the torn line a killed run may have
    /// left at its end.
    pub(super) fn open(path: PathBuf, persistence: Persistence) -> Result<Self, EngineError> {
        let file = open_rejected(&path).map_err(|source| EngineError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            file,
            pending: Vec::with_capacity(WRITE_AT_BYTES),
            persistence,
        })
    }

    /// Parks a rejected line with its reason: redacted, encrypted or withheld by the same rule as
    /// the dead-letter topic (see [`crate::sink::dlq::protect`]).
    pub(super) fn park(
        &mut self,
        protector: &Protector,
        offset: i64,
        line: &[u8],
        rejection: &Rejection,
        cut: Option<&CutLine>,
        abandon: &dyn Fn() -> bool,
    ) -> Result<(), EngineError> {
        let parked = match cut {
            None => protector.protect(line, usize::MAX),
            Some(cut) => protector.protect_head(line, usize::MAX, (cut.size, cut.sha256.clone())),
        };
        let record = rejected_line(&parked, rejection.reason.code(), &rejection.message, offset);
        serde_json::to_writer(&mut self.pending, &record).map_err(|e| self.io(e.into()))?;
        self.pending.push(b'\n');
        if self.pending.len() >= WRITE_AT_BYTES {
            self.write_pending(abandon)?;
        }
        Ok(())
    }

    /// Writes what is parked and makes the file durable. A refused write is waited out unless
    /// `abandon` says the run is over (its writer failed).
    pub(super) fn make_durable(&mut self, abandon: &dyn Fn() -> bool) -> Result<(), EngineError> {
        self.write_pending(abandon)?;
        self.file.sync_data().map_err(|e| self.io(e))
    }

    fn write_pending(&mut self, abandon: &dyn Fn() -> bool) -> Result<(), EngineError> {
        let path = &self.path;
        let written = write_retrying(
            &mut self.file,
            &self.pending,
            self.persistence,
            abandon,
            |error, attempt, delay| {
                tracing::warn!(file = %path.display(), %error, attempt, retry_in_ms = delay.as_millis() as u64, "the disk refused rejected lines; the run waits and retries");
                crate::telemetry::rejected_lines_write_retried();
            },
        );
        written.map_err(|e| self.io(e))?;
        self.pending.clear();
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> EngineError {
        EngineError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

/// Whether a refused write is waited out: the refusals an operator fixes while the run waits
/// (space freed, a quota raised, the disk remounted writable, permissions set right).
fn waited_out(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{PermissionDenied, QuotaExceeded, ReadOnlyFilesystem, StorageFull};
    matches!(
        kind,
        StorageFull | QuotaExceeded | ReadOnlyFilesystem | PermissionDenied
    )
}

/// Writes all of `bytes` to `out`. A write refused for a reason that is [`waited_out`] is tried
/// again after `persistence`'s backoff (`on_retry` is told first) from where the last one stopped,
/// until `persistence` gives up or `abandon` holds; any other error is returned at once.
fn write_retrying(
    out: &mut impl Write,
    bytes: &[u8],
    persistence: Persistence,
    abandon: &dyn Fn() -> bool,
    mut on_retry: impl FnMut(&std::io::Error, u32, Duration),
) -> std::io::Result<()> {
    let mut written = 0;
    let mut attempt = 0u32;
    let mut failing_since = None;
    while written < bytes.len() {
        match out.write(&bytes[written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n;
                (attempt, failing_since) = (0, None);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if !waited_out(e.kind()) || abandon() => return Err(e),
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                let Some(delay) = persistence.next_delay(attempt, since) else {
                    return Err(e);
                };
                attempt = attempt.saturating_add(1);
                on_retry(&e, attempt, delay);
                std::thread::sleep(delay);
            }
        }
    }
    Ok(())
}

/// Opens the rejected-lines file for appending. A run killed while writing can leave a torn last
/// line; it is cut off (its batch never committed, so its lines are parked again), or the next
/// line would be glued to it.
fn open_rejected(path: &Path) -> std::io::Result<std::fs::File> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(file);
    }
    // Look back in blocks for the last newline.
    let mut end = len;
    let mut block = vec![0u8; 64 << 10];
    let whole_lines = loop {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    if whole_lines < len {
        tracing::warn!(file = %path.display(), torn_bytes = len - whole_lines, "cutting off a torn rejected line left by a killed run");
        file.set_len(whole_lines)?;
        file.sync_all()?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind, Write};
    use std::time::Duration;

    use crate::retry::{Backoff, Persistence};

    /// A disk that takes at most `step` bytes a write and refuses the writes whose number is in
    /// `refused` (0-based, counting every call) with `error` (an errno).
    struct Disk {
        taken: Vec<u8>,
        step: usize,
        refused: Vec<usize>,
        calls: usize,
        error: i32,
    }

    impl Disk {
        fn new(step: usize, refused: Vec<usize>) -> Self {
            Self {
                taken: Vec::new(),
                step,
                refused,
                calls: 0,
                error: 28, // ENOSPC
            }
        }
    }

    impl Write for Disk {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let call = self.calls;
            self.calls += 1;
            if self.refused.contains(&call) {
                return Err(Error::from_raw_os_error(self.error));
            }
            let n = bytes.len().min(self.step);
            self.taken.extend_from_slice(&bytes[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn persistence(give_up_after: Option<Duration>) -> Persistence {
        Persistence {
            backoff: Backoff {
                first: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            give_up_after,
        }
    }

    #[test]
    fn a_refused_write_resumes_where_it_stopped() {
        let bytes: Vec<u8> = (0..=255).cycle().take(1000).collect();
        // (bytes a write takes, the calls refused, the retries expected)
        let cases: [(usize, &[usize], usize); 5] = [
            (1000, &[], 0),
            (1000, &[0], 1),
            (300, &[1, 2, 3], 3),
            (7, &[0, 5, 6, 50, 140], 5),
            (1, &[999], 1),
        ];
        for (step, refused, retries) in cases {
            let mut disk = Disk::new(step, refused.to_vec());
            let mut told = Vec::new();
            let never = || false;
            super::write_retrying(
                &mut disk,
                &bytes,
                persistence(None),
                &never,
                |e, attempt, _| {
                    told.push((e.raw_os_error(), attempt));
                },
            )
            .unwrap();
            assert_eq!(disk.taken, bytes, "{step} {refused:?}");
            assert_eq!(told.len(), retries, "{step} {refused:?}");
            assert!(told.iter().all(|(code, _)| *code == Some(28)));
        }
    }

    #[test]
    fn a_write_ends_when_told_to_or_when_waiting_cannot_help() {
        // (errno of the refusals, how long persistence waits, abandon, the error returned)
        let cases: [(i32, Option<u64>, bool, i32); 6] = [
            (28, Some(20), false, 28),   // ENOSPC, for longer than allowed
            (122, Some(20), false, 122), // EDQUOT
            (30, Some(20), false, 30),   // EROFS
            (1, Some(20), false, 1),     // EPERM (an immutable folder)
            (28, None, true, 28),        // the run is over: its writer failed
            (5, None, false, 5),         // EIO: not waited out
        ];
        for (errno, limit, abandon, expected) in cases {
            let mut disk = Disk::new(10, (1..10_000).collect());
            disk.error = errno;
            let limit = limit.map(Duration::from_millis);
            let abandon = move || abandon;
            let error = super::write_retrying(
                &mut disk,
                &[b'x'; 100],
                persistence(limit),
                &abandon,
                |_, _, _| {},
            )
            .unwrap_err();
            assert_eq!(error.raw_os_error(), Some(expected), "{errno}");
            assert_eq!(disk.taken, [b'x'; 10], "the first write's bytes stay taken");
        }
        let never = || false;
        let mut zero = Disk::new(0, Vec::new());
        let error = super::write_retrying(&mut zero, b"x", persistence(None), &never, |_, _, _| {});
        assert_eq!(error.unwrap_err().kind(), ErrorKind::WriteZero);
    }

    #[test]
    fn a_torn_rejected_line_is_cut_off_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        // (content left by a killed run, content after reopening)
        let cases: [(&[u8], &[u8]); 5] = [
            (b"", b""),
            (b"{\"a\":1}\n", b"{\"a\":1}\n"),
            (b"{\"a\":1}\n{\"b\":", b"{\"a\":1}\n"),
            (b"{\"b\":", b""),
            (b"{\"a\":1}\n{\"b\":2}\n", b"{\"a\":1}\n{\"b\":2}\n"),
        ];
        for (left, kept) in cases {
            std::fs::write(&path, left).unwrap();
            let mut file = super::open_rejected(&path).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), kept);
            file.write_all(b"{\"c\":3}\n").unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                [kept, b"{\"c\":3}\n"].concat()
            );
        }
        // A torn line longer than one look-back block.
        let long = [b"{\"a\":1}\n".as_slice(), &vec![b'x'; 200 << 10]].concat();
        std::fs::write(&path, long).unwrap();
        super::open_rejected(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
    }
}
