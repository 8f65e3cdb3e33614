//! The one retry backoff of the registry, used by every server loop (through
//! `registry_rpc::backoff`) and by the SDK's reconnects: exponential with jitter, so a crowd
//! of retrying callers spreads out instead of hammering a recovering server in lockstep.
//! The delay before retry `n` is uniform in `[c/10, c]` with `c = min(max, base * 2^n)`: a
//! tenth of the ceiling at least, so a retry loop never spins.

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

    /// `min(max, base * 2^attempt)`: the ceiling of retry `attempt`'s delay, and the schedule
    /// of anything else that doubles per attempt up to a cap (the session's push-ack waits).
    pub fn ceiling(base: Duration, max: Duration, attempt: u32) -> Duration {
        base.saturating_mul(1u32 << attempt.min(20)).min(max)
    }

    /// The delay to wait before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = Self::ceiling(self.base, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_us = ceiling.as_micros().max(1) as u64;
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

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(3), Duration::from_secs(3 * 64));
        let got: Vec<u64> = (0..9)
            .map(|n| Backoff::ceiling(base, max, n).as_secs())
            .collect();
        assert_eq!(got, vec![3, 6, 12, 24, 48, 96, 192, 192, 192]);
        assert_eq!(Backoff::ceiling(base, max, u32::MAX), max);
    }
}
