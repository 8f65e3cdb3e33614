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
}
