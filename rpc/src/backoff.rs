//! Retry backoff of the servers' loops: [`Backoff`] (the registry's one backoff, shared
//! with the SDK) and [`LaneBackoff`], the pair a batching loop towards one server waits on.

use std::time::Duration;

pub use registry_common::backoff::Backoff;

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
