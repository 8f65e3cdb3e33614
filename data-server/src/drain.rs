//! Leaving the cluster without dropping a copy: the graceful stop a data server runs on
//! SIGTERM (rolling restarts, scale-in).
//!
//! It is `registryctl data drain` run by the server on itself, through the same meta
//! operation: the meta leader marks this server draining, the slot table of the next epoch
//! gives its slots to the others, and they copy them from this server (which still serves,
//! refusing writes for slots it no longer holds). The server waits until the view holds none
//! of its slots, every other data server has applied that view, and none is still copying a
//! slot in, then leaves. Everything is bounded by one deadline: past it, the server leaves
//! anyway and the replicas' copies plus the sessions' repair restore whatever had not moved
//! yet. A zero timeout skips the drain (the server just leaves).

use std::time::{Duration, Instant};

use registry_common::error::ErrorCode;
use registry_common::member::Role;
use registry_rpc::backoff::Backoff;
use registry_rpc::{HttpClient, RpcError};

use crate::server::{DataServer, DataState};

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every slot moved to other servers and they finished copying.
    HandedOff,
    /// Nothing to hand off to: this is the last data server (or drains are refused for it).
    Refused,
    /// The deadline passed first.
    TimedOut,
    /// Not asked for (a zero timeout).
    Skipped,
}

/// Why a drain could not even be asked for.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("the meta cluster did not record the drain: {0}")]
    Meta(#[source] RpcError),
}

impl DataServer {
    /// Graceful stop: drains this server (bounded by `timeout`), then leaves the cluster and
    /// stops serving.
    pub async fn drain_and_shutdown(self, timeout: Duration) -> DrainOutcome {
        let outcome = if timeout.is_zero() {
            DrainOutcome::Skipped
        } else {
            match drain(self.state(), timeout).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::warn!("leaving without a drain: {e}");
                    DrainOutcome::TimedOut
                }
            }
        };
        self.shutdown().await;
        outcome
    }
}

/// Marks this server draining and waits until its slots are copied elsewhere, or `timeout`.
pub async fn drain(state: &DataState, timeout: Duration) -> Result<DrainOutcome, DrainError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let meta = state.membership.meta();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        match meta.drain(std::slice::from_ref(&state.id)).await {
            Ok(_) => break,
            Err(RpcError::Api(e))
                if matches!(
                    e.code,
                    ErrorCode::FailedPrecondition
                        | ErrorCode::NotFound
                        | ErrorCode::InvalidArgument
                ) =>
            {
                tracing::info!("no drain: {}", e.message);
                return Ok(DrainOutcome::Refused);
            }
            Err(e) if Instant::now() >= deadline => return Err(DrainError::Meta(e)),
            Err(e) => {
                tracing::debug!("drain not recorded yet: {e}");
                let _ = tokio::time::timeout_at(deadline.into(), backoff.wait()).await;
            }
        }
    }
    tracing::info!(id = %state.id, "draining: handing every slot to the other data servers");
    let mut rx = state.membership.subscribe();
    let held = |view: &registry_common::member::ClusterView| {
        view.slots
            .slots
            .iter()
            .filter(|a| a.holds(&state.id))
            .count()
    };
    // Our own view reaches the epoch without our slots through the membership watch.
    let wait_view = rx.wait_for(|v| held(v) == 0);
    let drained_epoch = match tokio::time::timeout_at(deadline.into(), wait_view).await {
        Ok(Ok(view)) => view.epoch,
        _ => {
            tracing::warn!(
                held = held(&state.membership.view()),
                "drain timed out before the slot table moved"
            );
            return Ok(DrainOutcome::TimedOut);
        }
    };
    // The gainers copy from us; stay until every other data server has seen that epoch (so
    // it knows what it gained) and none is still copying in.
    let http = HttpClient::new(Duration::from_secs(2)).with_signer(meta.signer().cloned());
    loop {
        let busy = others_busy(state, &http, drained_epoch).await;
        if busy == 0 {
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "drained: every slot is held and copied elsewhere"
            );
            return Ok(DrainOutcome::HandedOff);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                servers = busy,
                "drain timed out while slots were still being copied"
            );
            return Ok(DrainOutcome::TimedOut);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Other data servers of the current view that have not yet applied `epoch` or are still
/// copying a slot in (a server that does not answer counts as done: a dead server copies
/// nothing).
async fn others_busy(state: &DataState, http: &HttpClient, epoch: u64) -> usize {
    let view = state.membership.view();
    let addrs: Vec<String> = view
        .members_of(Role::Data)
        .filter(|m| m.id != state.id)
        .map(|m| m.addr.clone())
        .collect();
    let answers = futures::future::join_all(addrs.iter().map(|addr| {
        http.get::<serde_json::Value>(addr, "/admin/v1/status", Duration::from_secs(2))
    }))
    .await;
    answers
        .into_iter()
        .filter_map(Result::ok)
        .filter(|s| {
            let behind = s
                .get("epoch")
                .and_then(serde_json::Value::as_u64)
                .is_none_or(|e| e < epoch);
            let syncing = s
                .get("syncingSlots")
                .and_then(serde_json::Value::as_u64)
                .is_none_or(|n| n > 0);
            behind || syncing
        })
        .count()
}
