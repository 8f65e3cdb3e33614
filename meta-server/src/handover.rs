//! The graceful stop of a meta node on SIGTERM: a leader first hands its leadership to the
//! most caught-up voter, so the cluster has a serving leader again within a round trip
//! instead of after an election timeout, and members' writes and heartbeats move at once.

use std::time::{Duration, Instant};

use crate::server::MetaServer;

impl MetaServer {
    /// Hands leadership over if this node leads (waiting up to `timeout` for another node to
    /// take it), then stops.
    pub async fn hand_over_and_shutdown(self, timeout: Duration) {
        let started = Instant::now();
        match self.raft().transfer_leadership(timeout).await {
            Ok(Some(to)) => tracing::info!(
                to,
                took_ms = started.elapsed().as_millis() as u64,
                "handed leadership over before stopping"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot hand leadership over: {e}"),
        }
        self.shutdown().await;
    }
}
