//! Retrying what may get better (a broker away, a lake that cannot be written): capped exponential
//! backoff, shared by the dead-letter producer and the lake commit.

use std::time::{Duration, Instant};

/// Capped exponential backoff: `first`, `2·first`, `4·first`, … never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// How long a failing step is retried: with `backoff` between attempts, for ever unless
/// `give_up_after` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub backoff: Backoff,
    pub give_up_after: Option<Duration>,
}

impl Persistence {
    /// The wait before retry number `attempt` (0-based) of a step that first failed at `since`, or
    /// `None` once the step has been failing for longer than `give_up_after`.
    pub fn next_delay(&self, attempt: u32, since: Instant) -> Option<Duration> {
        match self.give_up_after {
            Some(limit) if since.elapsed() >= limit => None,
            _ => Some(self.backoff.delay(attempt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let cases = [
            (0, 100),
            (1, 200),
            (2, 400),
            (5, 3_200),
            (6, 5_000),
            (31, 5_000),
            (32, 5_000),
            (u32::MAX, 5_000),
        ];
        for (attempt, millis) in cases {
            assert_eq!(
                backoff.delay(attempt),
                Duration::from_millis(millis),
                "{attempt}"
            );
        }
    }

    #[test]
    fn persistence_gives_up_only_when_told_to() {
        let backoff = Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(30),
        };
        let for_ever = Persistence {
            backoff,
            give_up_after: None,
        };
        let an_hour_ago = Instant::now() - Duration::from_secs(3600);
        assert_eq!(
            for_ever.next_delay(40, an_hour_ago),
            Some(Duration::from_secs(30))
        );
        let bounded = Persistence {
            backoff,
            give_up_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(bounded.next_delay(40, an_hour_ago), None);
        assert_eq!(
            bounded.next_delay(0, Instant::now()),
            Some(Duration::from_millis(100))
        );
    }
}
