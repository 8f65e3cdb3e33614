//! Keeping a data or session server joined to the cluster.
//!
//! [`Membership::join`] registers with the MetaServer (retrying with backoff), then runs two
//! background loops until shutdown: a renewal every `renew_interval` (liveness is its own
//! heartbeat, never a side effect of writes; a member the meta no longer knows registers
//! again), and a blocking watch of the cluster view that publishes every newer epoch on a
//! `tokio::sync::watch` channel. A third loop keeps a WebSocket heartbeat open to the meta
//! leader: when this process dies the kernel closes it, and the leader removes the member
//! after a short grace instead of a whole lease later. Servers read the current view with [`Membership::view`]
//! and react to changes through [`Membership::subscribe`]. With auth on, a fourth loop keeps
//! the server's [`Guard`] on the newest ACL (fetched once before `join` returns, so the first
//! client is checked against it) and announces each revision on [`Membership::acl_revisions`].

use std::sync::Arc;
use std::time::Duration;

use registry_common::error::ErrorCode;
use registry_common::member::{ClusterView, Member};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Guard;
use crate::backoff::Backoff;
use crate::client::RpcError;
use crate::meta_client::MetaClient;

/// How long one blocking watch waits at the meta before it answers with no change.
const WATCH_WAIT: Duration = Duration::from_secs(20);

pub struct Membership {
    /// This server as registered.
    member: Member,
    meta: Arc<MetaClient>,
    /// Latest cluster view (highest epoch seen).
    view_tx: Arc<watch::Sender<Arc<ClusterView>>>,
    /// Stops the loops (child of the server's shutdown token).
    stop: CancellationToken,
    /// The ACL revision the guard holds, after every change.
    acl_tx: Arc<watch::Sender<u64>>,
    /// When the meta last took a renewal of this member (or its registration).
    renewed: Arc<parking_lot::Mutex<std::time::Instant>>,
    /// The lease the meta grants: a member not renewed for this long is removed.
    lease: Duration,
    /// Counts the times the meta had removed this member and it registered again.
    rejoins: Arc<watch::Sender<u64>>,
}

impl Membership {
    /// Registers `member` and starts renewing and watching. Retries registration with
    /// backoff until it succeeds or `shutdown` fires.
    pub async fn join(
        meta: Arc<MetaClient>,
        member: Member,
        guard: Arc<Guard>,
        shutdown: &CancellationToken,
    ) -> Result<Self, RpcError> {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let registered = loop {
            match meta.register(&member).await {
                Ok(r) => break r,
                Err(e) => {
                    if backoff.attempts().is_multiple_of(10) {
                        tracing::warn!(member = %member.id, "cannot register with meta yet: {e}");
                    }
                    tokio::select! {
                        _ = backoff.wait() => {}
                        _ = shutdown.cancelled() => return Err(e),
                    }
                }
            }
        };
        tracing::info!(member = %member.id, epoch = registered.view.epoch, "joined the cluster");
        let (view_tx, _) = watch::channel(Arc::new(registered.view));
        let view_tx = Arc::new(view_tx);
        let stop = shutdown.child_token();
        let renew = Duration::from_millis(registered.lease.renew_interval_ms.max(10));
        let lease = Duration::from_millis(registered.lease.lease_ms.max(1));
        let renewed = Arc::new(parking_lot::Mutex::new(std::time::Instant::now()));
        let rejoins = Arc::new(watch::channel(0).0);
        tokio::spawn(renew_loop(
            meta.clone(),
            member.clone(),
            view_tx.clone(),
            renew,
            (renewed.clone(), rejoins.clone()),
            stop.clone(),
        ));
        tokio::spawn(watch_loop(meta.clone(), view_tx.clone(), stop.clone()));
        tokio::spawn(heartbeat_loop(
            meta.clone(),
            member.id.clone(),
            renew,
            stop.clone(),
        ));
        let (acl_tx, _) = watch::channel(0);
        let acl_tx = Arc::new(acl_tx);
        if guard.enabled() {
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
            loop {
                match meta.acl(0, Duration::ZERO).await {
                    Ok(acl) => {
                        let revision = acl.revision;
                        guard.set_acl(&guard.open_acl(acl));
                        acl_tx.send_replace(revision);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(member = %member.id, "cannot read the ACL yet: {e}");
                        tokio::select! {
                            _ = backoff.wait() => {}
                            _ = shutdown.cancelled() => return Err(e),
                        }
                    }
                }
            }
            tokio::spawn(acl_loop(meta.clone(), guard, acl_tx.clone(), stop.clone()));
        }
        Ok(Self {
            member,
            meta,
            view_tx,
            stop,
            acl_tx,
            renewed,
            lease,
            rejoins,
        })
    }

    /// Wakes each time the meta had removed this member and it registered again (after a
    /// partition or a freeze longer than the lease): whatever it held may have moved on
    /// without it.
    pub fn rejoins(&self) -> watch::Receiver<u64> {
        self.rejoins.subscribe()
    }

    /// How many times this member has joined again so far (see [`Membership::rejoins`]).
    pub fn rejoin_count(&self) -> u64 {
        *self.rejoins.borrow()
    }

    /// How long since the meta last took this member's renewal: past the lease, the meta
    /// has removed it (or will as soon as it has a leader).
    pub fn since_renewed(&self) -> Duration {
        self.renewed.lock().elapsed()
    }

    /// The lease the meta grants this member.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The client of the meta cluster this server joined through.
    pub fn meta(&self) -> &Arc<MetaClient> {
        &self.meta
    }

    /// The latest cluster view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view_tx.borrow().clone()
    }

    /// A receiver that wakes on every newer view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view_tx.subscribe()
    }

    /// A receiver that wakes on every newer ACL revision installed in the guard.
    pub fn acl_revisions(&self) -> watch::Receiver<u64> {
        self.acl_tx.subscribe()
    }

    /// Asks the meta for its current view now and publishes it if newer (after a peer said
    /// our epoch is stale).
    pub async fn refresh(&self) {
        if let Ok(view) = self.meta.view(0, Duration::ZERO).await {
            publish(&self.view_tx, view);
        }
    }

    /// Waits until the view's epoch is at least `epoch`, up to `timeout`.
    pub async fn wait_for_epoch(&self, epoch: u64, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|v| v.epoch >= epoch))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Leaves the cluster: stops renewing and deregisters.
    pub async fn leave(&self) {
        self.stop.cancel();
        if let Err(e) = self.meta.deregister(&self.member.id).await {
            tracing::warn!(member = %self.member.id, "deregistration failed: {e}");
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn publish(tx: &watch::Sender<Arc<ClusterView>>, view: ClusterView) {
    tx.send_if_modified(|cur| {
        if view.epoch > cur.epoch {
            *cur = Arc::new(view);
            true
        } else {
            false
        }
    });
}

async fn renew_loop(
    meta: Arc<MetaClient>,
    member: Member,
    view_tx: Arc<watch::Sender<Arc<ClusterView>>>,
    every: Duration,
    (renewed, rejoins): (
        Arc<parking_lot::Mutex<std::time::Instant>>,
        Arc<watch::Sender<u64>>,
    ),
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        let asked = std::time::Instant::now();
        match meta.renew(&member.id).await {
            Ok(_) => *renewed.lock() = asked,
            Err(RpcError::Api(e)) if e.code == ErrorCode::NotFound => {
                tracing::warn!(member = %member.id, "meta no longer knows this member; registering again");
                match meta.register(&member).await {
                    Ok(r) => {
                        // Counted before the view and the renewal time are published: a
                        // server fencing itself on either sees the rejoin first.
                        rejoins.send_modify(|n| *n += 1);
                        publish(&view_tx, r.view);
                        *renewed.lock() = asked;
                    }
                    Err(e) => tracing::warn!(member = %member.id, "re-registration failed: {e}"),
                }
            }
            Err(e) => tracing::debug!(member = %member.id, "renewal failed: {e}"),
        }
    }
}

async fn watch_loop(
    meta: Arc<MetaClient>,
    view_tx: Arc<watch::Sender<Arc<ClusterView>>>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let after = view_tx.borrow().epoch;
        let answer = tokio::select! {
            r = meta.view(after, WATCH_WAIT) => r,
            _ = stop.cancelled() => return,
        };
        match answer {
            Ok(view) => {
                backoff.reset();
                publish(&view_tx, view);
            }
            Err(e) => {
                tracing::debug!("cluster view watch failed: {e}");
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Keeps `guard` on the newest ACL.
async fn acl_loop(
    meta: Arc<MetaClient>,
    guard: Arc<Guard>,
    acl_tx: Arc<watch::Sender<u64>>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let after = guard.acl_revision();
        let answer = tokio::select! {
            r = meta.acl(after, WATCH_WAIT) => r,
            _ = stop.cancelled() => return,
        };
        match answer {
            Ok(acl) => {
                backoff.reset();
                if acl.revision > after {
                    let acl = guard.open_acl(acl);
                    let revoked = guard.set_acl(&acl);
                    if !revoked.is_empty() {
                        tracing::info!(revision = acl.revision, keys = ?revoked, "access keys revoked");
                    }
                    acl_tx.send_replace(acl.revision);
                }
            }
            Err(e) => {
                tracing::debug!("ACL watch failed: {e}");
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Keeps a heartbeat WebSocket open to the meta leader, following redirects.
async fn heartbeat_loop(
    meta: Arc<MetaClient>,
    id: registry_common::member::MemberId,
    every: Duration,
    stop: CancellationToken,
) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut next: Option<String> = None;
    loop {
        let candidates = match next.take() {
            Some(a) => vec![a],
            None => meta.candidates(),
        };
        for addr in candidates {
            let path = format!("/meta/v1/heartbeat?id={}", id.as_str());
            let url = format!("{}://{addr}{path}", meta.http().ws_scheme());
            let Ok(request) = signed_upgrade(&url, &path, meta.signer()) else {
                continue;
            };
            let connector = meta
                .http()
                .tls()
                .map(|tls| tokio_tungstenite::Connector::Rustls(tls.config()));
            let connect = tokio::time::timeout(Duration::from_secs(2), async {
                let stream = crate::net::connect(&addr, Duration::from_secs(2)).await?;
                tokio_tungstenite::client_async_tls_with_config(request, stream, None, connector)
                    .await
            });
            let mut ws = tokio::select! {
                r = connect => match r {
                    Ok(Ok((ws, _))) => ws,
                    Ok(Err(WsError::Http(resp))) => {
                        let redirect = resp
                            .body()
                            .as_deref()
                            .and_then(|b| serde_json::from_slice::<registry_common::ApiError>(b).ok())
                            .and_then(|e| e.redirect);
                        if let Some(r) = redirect {
                            next = Some(r);
                            break;
                        }
                        continue;
                    }
                    _ => continue,
                },
                _ = stop.cancelled() => return,
            };
            backoff.reset();
            meta.set_leader(Some(addr.clone()));
            let mut ticker = tokio::time::interval(every);
            // The leader answers every ping: one silent for three intervals (at least 3 s)
            // is cut off or frozen, and another meta node may lead by now.
            let silence = (every * 3).max(Duration::from_secs(3));
            let mut heard = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        if heard.elapsed() > silence {
                            tracing::info!(meta = %addr, "meta leader silent; looking for the leader again");
                            meta.set_leader(None);
                            break;
                        }
                        let sent = tokio::time::timeout(every.max(Duration::from_secs(1)), ws.send(Message::Text("ping".into()))).await;
                        if !matches!(sent, Ok(Ok(()))) { break; }
                    }
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => heard = tokio::time::Instant::now(),
                    },
                    _ = stop.cancelled() => {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            }
            break;
        }
        tokio::select! {
            _ = backoff.wait() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// A WebSocket upgrade request for `url`, signed when `signer` is set.
fn signed_upgrade(
    url: &str,
    path_and_query: &str,
    signer: Option<&registry_common::auth::Credential>,
) -> Result<
    tokio_tungstenite::tungstenite::handshake::client::Request,
    tokio_tungstenite::tungstenite::Error,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut request = url.into_client_request()?;
    if let Some(signer) = signer {
        for (name, value) in signer.sign_request("GET", path_and_query, b"").pairs() {
            if let Ok(v) = HeaderValue::from_str(&value) {
                request.headers_mut().insert(name, v);
            }
        }
    }
    Ok(request)
}
