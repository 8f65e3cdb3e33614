//! The highest datum version this process has seen, from any data server or client.
//!
//! Versions are hybrid logical clocks issued by data servers; every one is a valid floor for
//! the next. Sessions send the highest they have seen with every write
//! (`WriteRequest::version_floor`), so a data server whose wall clock is behind, or that
//! restarted empty, issues versions above what subscribers hold instead of below (where
//! sessions and SDKs would drop them as old, and subscribers would freeze).

use std::sync::atomic::{AtomicU64, Ordering};

static HIGHEST: AtomicU64 = AtomicU64::new(0);

/// Records a version seen (a datum learnt, a client's `knownVersion`). A version further
/// ahead of this machine's clock than [`registry_common::version::MAX_FLOOR_AHEAD_MS`] is no
/// version a data server issued: ignored, so no client can push the cluster's clocks to the
/// end of their range.
pub fn observe(version: u64) {
    if registry_common::version::plausible_floor(version) {
        HIGHEST.fetch_max(version, Ordering::AcqRel);
    }
}

/// The highest version seen so far.
pub fn get() -> u64 {
    HIGHEST.load(Ordering::Acquire)
}
