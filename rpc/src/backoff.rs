//! Exponential backoff with full jitter: the delay before retry `n` is uniform in
//! `[0, min(max, base * 2^n)]`, so a crowd of retrying callers spreads out instead of
//! hammering a recovering server in lockstep.

use std::time::Duration;

use rand::RngExt;

#[derive(Debug, Clone)]
pub struct Backoff {
    /// Ceiling of the first delay.
    base: Duration,
    /// Ceiling of every delay.
    max: Duration,
    /// Retries so far.
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay to wait before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_us = ceiling.as_micros().max(1) as u64;
        // Never below a tenth of the ceiling, so a retry loop never spins.
        let us = rand::rng().random_range(ceiling_us / 10..=ceiling_us);
        Duration::from_micros(us)
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// The two backoffs of a retry loop towards one server: one that did not answer is retried
/// slowly (up to seconds), one that answered "not yet" for some items (a slot still being
/// copied in, a table it has not caught up with) soon, since that state lasts milliseconds
/// and a long wait would hold everything else queued for the server.
#[derive(Debug, Clone)]
pub struct LaneBackoff {
    unreachable: Backoff,
    not_ready: Backoff,
}

impl Default for LaneBackoff {
    fn default() -> Self {
        Self {
            unreachable: Backoff::new(Duration::from_millis(20), Duration::from_secs(2)),
            not_ready: Backoff::new(Duration::from_millis(5), Duration::from_millis(100)),
        }
    }
}

impl LaneBackoff {
    /// The backoff to wait on after a round that needs a retry; `answered` says whether the
    /// server answered at all. The other backoff starts over.
    pub fn after(&mut self, answered: bool) -> &mut Backoff {
        if answered {
            self.unreachable.reset();
            &mut self.not_ready
        } else {
            self.not_ready.reset();
            &mut self.unreachable
        }
    }

    /// A round went through: both start over.
    pub fn reset(&mut self) {
        self.unreachable.reset();
        self.not_ready.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        for _ in 0..50 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(100));
            assert!(d >= Duration::from_micros(100));
        }
        assert_eq!(b.attempts(), 50);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }

    #[test]
    fn lane_backoff_retries_not_ready_soon_and_unreachable_slowly() {
        let mut b = LaneBackoff::default();
        for _ in 0..20 {
            assert!(b.after(true).next_delay() <= Duration::from_millis(100));
        }
        let slowest = (0..20)
            .map(|_| b.after(false).next_delay())
            .max()
            .unwrap_or_default();
        assert!(slowest > Duration::from_millis(100));
        assert!(slowest <= Duration::from_secs(2));
        // Switching kinds starts the other one over.
        assert!(b.after(true).next_delay() <= Duration::from_millis(5));
        assert!(b.after(false).next_delay() <= Duration::from_millis(20));
    }
}
