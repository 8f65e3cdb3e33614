//! The session server's part of the admin API (`/admin/v1/...`, `docs/admin-api.md`), its
//! readiness, and the operators' levers it applies from the cluster view.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/admin/v1/status` | [`SessionStatus`]: connections, publishers, subscriptions, queues, push rate, readiness |
//! | GET | `/admin/v1/service?dataInfoId=...` | [`SessionServiceView`]: its clients' publishers and subscriptions of one service |
//!
//! Ready means it can do its job: it has a cluster view with data servers, one of them
//! answered the last probe ([`probe_data_tier`], every second), and it is not shutting down.
//! The push switch and the clients taken off are applied from the view ([`apply_levers`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use registry_common::error::{ApiError, ErrorCode};
use registry_common::id::DataInfoId;
use registry_common::member::{ClusterView, Role};
use registry_common::proto::admin::{
    PublisherReport, ServiceQuery, SessionServiceView, SessionStatus, SubscriberReport,
};
use registry_rpc::metrics::{cumulative, quantile};
use registry_rpc::server::ApiQuery;
use registry_rpc::{ApiJson, ErrorReply};

use crate::server::SessionState;

pub fn router(state: Arc<SessionState>) -> Router {
    Router::new()
        .route("/admin/v1/status", get(status))
        .route("/admin/v1/service", get(service))
        .with_state(state)
}

/// What readiness and the push rate are made of, kept up to date by background tasks.
#[derive(Debug)]
pub struct Health {
    /// A data server answered the last probe.
    data_reachable: AtomicBool,
    /// Pushes per second, smoothed (`f64` bits).
    push_rate: AtomicU64,
    /// Push latency p50 and p99 in ms over the last [`LATENCY_WINDOW`] seconds (`f64` bits,
    /// NaN without pushes).
    push_p50_ms: AtomicU64,
    push_p99_ms: AtomicU64,
}

/// Seconds of push latency the status page summarises.
const LATENCY_WINDOW: usize = 10;

impl Default for Health {
    fn default() -> Self {
        Self {
            data_reachable: AtomicBool::new(false),
            push_rate: AtomicU64::new(0f64.to_bits()),
            push_p50_ms: AtomicU64::new(f64::NAN.to_bits()),
            push_p99_ms: AtomicU64::new(f64::NAN.to_bits()),
        }
    }
}

impl Health {
    pub fn pushes_per_sec(&self) -> f64 {
        f64::from_bits(self.push_rate.load(Ordering::Relaxed))
    }

    fn push_latency_ms(&self) -> (Option<f64>, Option<f64>) {
        let read = |a: &AtomicU64| {
            Some(f64::from_bits(a.load(Ordering::Relaxed))).filter(|v| v.is_finite())
        };
        (read(&self.push_p50_ms), read(&self.push_p99_ms))
    }
}

/// The server's status and readiness.
pub fn status_of(s: &SessionState) -> SessionStatus {
    let view = s.membership.view();
    let not_ready = if s.draining.load(Ordering::Acquire) {
        Some("shutting down".to_string())
    } else if s.detached.load(Ordering::Acquire) {
        Some("cut off from the meta cluster".to_string())
    } else if view.epoch == 0 || !view.members.contains_key(&s.id) {
        Some("not a member of the cluster view".to_string())
    } else if view.members_of(Role::Data).next().is_none() {
        Some("no data server in the cluster view".to_string())
    } else if !s.health.data_reachable.load(Ordering::Acquire) {
        Some("no data server answers".to_string())
    } else {
        None
    };
    SessionStatus {
        id: s.id.to_string(),
        epoch: view.epoch,
        ready: not_ready.is_none(),
        not_ready,
        connections: s.metrics.connections.get(),
        publishers: s.metrics.publishers.get(),
        subscribers: s.metrics.subscribers.get(),
        forward_pending: s.forwarder.pending(),
        outbox_frames: s.metrics.outbox_frames.get(),
        pushes_per_sec: s.health.pushes_per_sec(),
        push_enabled: s.pusher.is_enabled(),
        acl_revision: s.guard.acl_revision(),
        push_latency_p50_ms: s.health.push_latency_ms().0,
        push_latency_p99_ms: s.health.push_latency_ms().1,
    }
}

async fn status(State(s): State<Arc<SessionState>>) -> ApiJson<SessionStatus> {
    ApiJson(status_of(&s))
}

/// `GET /ready`: 200 when ready, otherwise `unavailable` (503) with the reason.
pub async fn ready(State(s): State<Arc<SessionState>>) -> Response {
    match status_of(&s).not_ready {
        None => "ready".into_response(),
        Some(why) => ErrorReply(ApiError::new(ErrorCode::Unavailable, why)).into_response(),
    }
}

async fn service(
    State(s): State<Arc<SessionState>>,
    ApiQuery(q): ApiQuery<ServiceQuery>,
) -> Result<ApiJson<SessionServiceView>, ErrorReply> {
    let id = DataInfoId::parse(&q.data_info_id)?;
    let publishers = s
        .registry
        .publishers()
        .into_iter()
        .filter(|p| p.data_info_id == id)
        .map(|p| PublisherReport {
            client_id: p.key.client_id.clone(),
            regist_id: p.key.regist_id.clone(),
            data: p.data.clone(),
            version: p.version,
            session: p.session.clone(),
            client_addr: s.registry.conn(p.conn_id).map(|c| c.remote.to_string()),
            app: p.app.clone(),
            zone: p.zone.clone(),
        })
        .collect();
    let subscribers = s
        .pusher
        .subscriptions_of(&id)
        .into_iter()
        .map(|sub| SubscriberReport {
            session: s.id.clone(),
            client_addr: sub.conn.remote.to_string(),
            client_id: sub.conn.client_id().unwrap_or_default().to_string(),
            regist_id: sub.regist_id,
            acked_version: sub.acked,
            inflight_version: sub.inflight,
            pending_version: sub.pending,
        })
        .collect();
    Ok(ApiJson(SessionServiceView {
        cached_version: s.pusher.cached_version(&id),
        publishers,
        subscribers,
    }))
}

/// Probes one data server's `/health` every second (a different one each time), for
/// readiness; and smooths the push rate.
pub async fn probe_data_tier(s: Arc<SessionState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn = 0usize;
    let mut last_pushes = pushes_total(&s);
    // Cumulative push-latency buckets of the last LATENCY_WINDOW seconds, oldest first.
    let mut window: std::collections::VecDeque<Vec<u64>> = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = s.shutdown.cancelled() => return,
        }
        let pushes = pushes_total(&s);
        let rate = s.health.pushes_per_sec() * 0.5 + (pushes - last_pushes) as f64 * 0.5;
        s.health.push_rate.store(rate.to_bits(), Ordering::Relaxed);
        last_pushes = pushes;
        let now = cumulative(&s.metrics.push_delay);
        let oldest = window.front().cloned().unwrap_or_default();
        for (q, slot) in [(0.5, &s.health.push_p50_ms), (0.99, &s.health.push_p99_ms)] {
            let ms = quantile(&oldest, &now, q).map_or(f64::NAN, |secs| secs * 1000.0);
            slot.store(ms.to_bits(), Ordering::Relaxed);
        }
        window.push_back(now);
        if window.len() > LATENCY_WINDOW {
            window.pop_front();
        }

        let view = s.membership.view();
        let datas: Vec<&str> = view
            .members_of(Role::Data)
            .map(|m| m.addr.as_str())
            .collect();
        let reachable = match datas.get(turn % datas.len().max(1)) {
            Some(addr) => s
                .http
                .probe(addr, "/health", Duration::from_secs(1))
                .await
                .is_ok_and(|status| status == 200),
            None => false,
        };
        turn = turn.wrapping_add(1);
        s.health.data_reachable.store(reachable, Ordering::Release);
    }
}

fn pushes_total(s: &SessionState) -> u64 {
    ["first", "retry"]
        .iter()
        .map(|k| s.metrics.pushes.with_label_values(&[k]).get())
        .sum()
}

/// Applies the operators' levers of a new view: the push switch, and the clients taken off
/// (their connections are closed, which withdraws their publishers; `authorize` refuses
/// their reconnects while they stay off).
pub fn apply_levers(s: &SessionState, view: &ClusterView) {
    s.pusher.set_enabled(view.settings.push_enabled);
    let off = &view.settings.client_blacklist;
    if off.is_empty() {
        return;
    }
    for conn in s.registry.conns() {
        let ip = conn.remote.ip().to_string();
        let app = conn.hello.get().map(|h| h.app.as_str()).unwrap_or_default();
        if off
            .iter()
            .any(|a| *a == ip || (!app.is_empty() && a == app))
        {
            tracing::info!(conn = conn.id, remote = %conn.remote, "closing: client taken off by an operator");
            s.metrics.closed.with_label_values(&["client_off"]).inc();
            conn.outbox
                .close_signal()
                .close(4003, "client taken off by an operator");
        }
    }
}
