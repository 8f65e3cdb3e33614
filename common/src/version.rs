//! Datum versions: a hybrid logical clock.
//!
//! A version is `wall_ms << SEQ_BITS | seq`. It grows for every change of a dataInfoId, even
//! when two changes fall in one millisecond or the wall clock steps back (the clock then
//! counts on from the last issued value), and a server that takes over a dataInfoId issues
//! versions above anything it has seen (`next_after(seen)`) and, clocks being roughly in step,
//! above what the previous primary issued.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::now_ms;

/// Low bits of a version that count changes within one millisecond.
pub const SEQ_BITS: u32 = 20;

/// Wall-clock milliseconds encoded in a version.
pub fn version_ms(version: u64) -> u64 {
    version >> SEQ_BITS
}

/// How far ahead of the local clock a version learnt from elsewhere may be and still raise a
/// clock ([`plausible_floor`]): clocks of one cluster are not ten minutes apart.
pub const MAX_FLOOR_AHEAD_MS: u64 = 10 * 60 * 1000;

/// Whether `version` may serve as a floor: not absurdly far ahead of this machine's clock.
pub fn plausible_floor(version: u64) -> bool {
    version_ms(version) <= now_ms().saturating_add(MAX_FLOOR_AHEAD_MS)
}

/// Issues strictly increasing versions; one per data server process.
#[derive(Debug, Default)]
pub struct VersionClock {
    last: AtomicU64,
}

impl VersionClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A version greater than `floor`, than every version this clock issued before, and at
    /// least the current wall-clock millisecond.
    pub fn next_after(&self, floor: u64) -> u64 {
        let wall = now_ms() << SEQ_BITS;
        let mut issued = 0;
        // fetch_update only fails if the closure returns None, which it never does.
        let _ = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                issued = wall.max(last + 1).max(floor.saturating_add(1));
                Some(issued)
            });
        issued
    }

    /// Makes sure later versions are above `seen` (a version learnt from a peer).
    pub fn observe(&self, seen: u64) {
        self.last.fetch_max(seen, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increasing_within_a_millisecond() {
        let clock = VersionClock::new();
        let mut prev = 0;
        for _ in 0..10_000 {
            let v = clock.next_after(0);
            assert!(v > prev);
            prev = v;
        }
        assert!(version_ms(prev) >= now_ms() - 1_000);
    }

    #[test]
    fn issues_above_floor_and_observed() {
        let clock = VersionClock::new();
        let far = (now_ms() + 60_000) << SEQ_BITS;
        assert!(clock.next_after(far) > far);
        let clock = VersionClock::new();
        clock.observe(far + 5);
        assert!(clock.next_after(0) > far + 5);
    }
}
