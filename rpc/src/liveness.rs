//! Lease renewals and the heartbeat connection to the meta leader, on a thread of their own.
//!
//! A server's liveness must say whether the process is alive, not how busy it is. On the
//! server's own runtime (one thread on a shared machine) a renewal or a heartbeat ping waits
//! its turn behind every other ready task, and each one takes several turns (the request, the
//! connection task, the answer): under a saturating load (a million publishers registering
//! on two cores) renewals took 10 s and pings went unsent for 6 s, the meta removed healthy
//! sessions, and they sent every client away. So both loops run on a current-thread runtime
//! on a dedicated OS thread, with a client of their own (a connection pool driven by that
//! runtime), and a busy server stays a member.
//!
//! A wedged server must still lose its membership: a [`Beacon`] task on the server's runtime
//! beats every 250 ms, and while it has not beaten for half the lease, the loops neither renew
//! nor ping, so the meta removes the member as it would a frozen one. The beacon task also
//! holds the thread's life: when the server's runtime drops it (shutdown, or a test killing
//! an in-process server), the thread ends and closes its connections, as a dying process
//! would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry_common::error::ErrorCode;
use registry_common::member::{ClusterView, Member};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::client::RpcError;
use crate::membership::publish;
use crate::meta_client::MetaClient;

/// How often the server's runtime beats.
const BEAT: Duration = Duration::from_millis(250);

/// Proof that the server's runtime polls its tasks: the last beat of a task on it.
pub(crate) struct Beacon {
    start: Instant,
    /// Milliseconds after `start` of the last beat.
    last_ms: AtomicU64,
    /// Longest the runtime may go without a beat before the loops stop vouching for it.
    limit: Duration,
    /// Whether the loops are holding back (for logging the change once).
    holding: std::sync::atomic::AtomicBool,
}

impl Beacon {
    fn new(limit: Duration) -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            limit,
            holding: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    /// Whether the server's runtime has not beaten for longer than the limit.
    fn stalled(&self) -> bool {
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        let stalled = last.elapsed() > self.limit;
        if self.holding.swap(stalled, Ordering::AcqRel) != stalled {
            if stalled {
                tracing::warn!(
                    since_ms = last.elapsed().as_millis() as u64,
                    "the server's runtime is not making progress: no renewals or heartbeats until it does"
                );
            } else {
                tracing::info!("the server's runtime makes progress again: renewing");
            }
        }
        stalled
    }
}

/// What the liveness loops need from the membership.
pub(crate) struct Liveness {
    pub meta: Arc<MetaClient>,
    pub member: Member,
    pub view_tx: Arc<watch::Sender<Arc<ClusterView>>>,
    pub renew: Duration,
    pub lease: Duration,
    pub renewed: Arc<parking_lot::Mutex<Instant>>,
    pub rejoins: Arc<watch::Sender<u64>>,
}

/// Starts the beacon on the current runtime and the renewal and heartbeat loops on their own
/// thread (on the current runtime if no thread can be started), until `stop`.
pub(crate) fn start(l: Liveness, stop: CancellationToken) {
    let beacon = Arc::new(Beacon::new(l.lease / 2));
    beacon.beat();
    // Cancelled when the beacon task ends or is dropped with the server's runtime.
    let alive = CancellationToken::new();
    let guard = alive.clone().drop_guard();
    tokio::spawn({
        let beacon = beacon.clone();
        let stop = stop.clone();
        async move {
            let _guard = guard;
            let mut ticker = tokio::time::interval(BEAT);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => beacon.beat(),
                    _ = stop.cancelled() => return,
                }
            }
        }
    });
    let handle = tokio::runtime::Handle::current();
    // Taken by whoever runs the loops: the thread, or this runtime if no thread starts.
    let payload = Arc::new(parking_lot::Mutex::new(Some((l, beacon, alive))));
    let spawned = std::thread::Builder::new().name("liveness".into()).spawn({
        let payload = payload.clone();
        move || {
            let Some((l, beacon, alive)) = payload.lock().take() else {
                return;
            };
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run(l, beacon, alive)),
                Err(e) => {
                    tracing::error!(
                        "cannot build the liveness runtime, renewing on the server's: {e}"
                    );
                    handle.spawn(run(l, beacon, alive));
                }
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the liveness thread, renewing on the server's runtime: {e}");
        if let Some((l, beacon, alive)) = payload.lock().take() {
            tokio::spawn(run(l, beacon, alive));
        }
    }
}

/// Both loops, with a connection pool driven by the runtime they run on.
async fn run(l: Liveness, beacon: Arc<Beacon>, stop: CancellationToken) {
    let meta = Arc::new(l.meta.with_own_pool());
    let id = l.member.id.clone();
    let renew = renew_loop(
        meta.clone(),
        l.member,
        l.view_tx,
        l.renew,
        (l.renewed, l.rejoins),
        beacon.clone(),
        stop.clone(),
    );
    let heartbeat = heartbeat_loop(meta, id, l.renew, beacon, stop);
    tokio::join!(renew, heartbeat);
}

/// Renews the lease every `every` while the server's runtime makes progress.
async fn renew_loop(
    meta: Arc<MetaClient>,
    member: Member,
    view_tx: Arc<watch::Sender<Arc<ClusterView>>>,
    every: Duration,
    (renewed, rejoins): (
        Arc<parking_lot::Mutex<std::time::Instant>>,
        Arc<watch::Sender<u64>>,
    ),
    beacon: Arc<Beacon>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        if beacon.stalled() {
            continue;
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

/// Keeps a heartbeat WebSocket open to the meta leader, following redirects.
async fn heartbeat_loop(
    meta: Arc<MetaClient>,
    id: registry_common::member::MemberId,
    every: Duration,
    beacon: Arc<Beacon>,
    stop: CancellationToken,
) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut next: Option<String> = None;
    loop {
        // Connecting counts as a renewal at the meta: a stalled server does not.
        if beacon.stalled() {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            continue;
        }
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
                        // A stalled server says nothing: the leader takes the silence for a
                        // lost connection, as for a frozen process.
                        if beacon.stalled() {
                            continue;
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
