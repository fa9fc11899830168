//! The configured ceiling on ingest (`lake.max_events_per_second`): during a backfill or a replay
//! the engine reads no faster than the lake, the alert consumers and whatever reads the topics
//! should take. Counted per message, before decoding; waiting is the backpressure (the consumer is
//! not polled meanwhile, so librdkafka's bounded fetch queue fills and fetching stops).

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// A token bucket of `per_second` messages with a burst of one second's worth.
pub struct Throttle {
    limiter: DefaultDirectRateLimiter,
    burst: NonZeroU32,
}

impl Throttle {
    pub fn new(per_second: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::direct(Quota::per_second(per_second)),
            burst: per_second,
        }
    }

    /// Waits until `messages` more may be taken (in pieces no larger than the burst, so a chunk
    /// larger than one second's worth waits its share instead of failing).
    pub async fn admit(&self, messages: usize) {
        let mut left = u32::try_from(messages).unwrap_or(u32::MAX);
        let mut waited = false;
        while let Some(n) = NonZeroU32::new(left.min(self.burst.get())) {
            if self.limiter.check_n(n).is_ok_and(|r| r.is_ok()) {
                left -= n.get();
                continue;
            }
            waited = true;
            // Never Err: `n` is at most the burst.
            let _ = self.limiter.until_n_ready(n).await;
            left -= n.get();
        }
        if waited {
            crate::telemetry::ingest_throttled();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// governor keeps its own monotonic clock, so this takes real time: about one second.
    #[tokio::test]
    async fn admits_no_more_than_the_rate_after_the_burst() {
        let throttle = Throttle::new(NonZeroU32::new(1000).unwrap());
        let started = Instant::now();
        throttle.admit(1000).await; // the burst: at once
        assert!(started.elapsed() < Duration::from_millis(500));
        // A chunk larger than the burst waits its share, piece by piece.
        throttle.admit(900).await;
        throttle.admit(0).await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(850), "{elapsed:?}");
    }
}
