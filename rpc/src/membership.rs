//! Keeping a data or session server joined to the cluster.
//!
//! [`Membership::join`] registers with the MetaServer (retrying with backoff), then runs two
//! background loops until shutdown: a renewal every `renew_interval` (liveness is its own
//! heartbeat, never a side effect of writes; a member the meta no longer knows registers
//! again), and a blocking watch of the cluster view that publishes every newer epoch on a
//! `tokio::sync::watch` channel. A third loop keeps a WebSocket heartbeat open to the meta
//! leader: when this process dies the kernel closes it, and the leader removes the member
//! after a short grace instead of a whole lease later. The renewals and the heartbeat run on
//! a thread of their own (`crate::liveness`), so a busy server stays a member. Servers read
//! the current view with [`Membership::view`]
//! and react to changes through [`Membership::subscribe`]. With auth on, a fourth loop keeps
//! the server's [`Guard`] on the newest ACL (fetched once before `join` returns, so the first
//! client is checked against it) and announces each revision on [`Membership::acl_revisions`].
//!
//! [`listen_and_join`] is how a data or session server starts: it binds its listener, builds
//! its guard, transport and HTTP client from its settings, and joins.

use std::sync::Arc;
use std::time::Duration;

use registry_common::member::{ClusterView, Member, MemberId, Role};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::{Guard, SecurityArgs, Transport};
use crate::backoff::Backoff;
use crate::client::{HttpClient, RpcError};
use crate::meta_client::MetaClient;
use crate::server::{bind, StartError};

/// The settings of a data or session server that [`listen_and_join`] reads.
pub struct JoinSettings<'a> {
    /// What it joins as.
    pub role: Role,
    /// `host:port` to listen on (port 0: any free port).
    pub listen: &'a str,
    /// `host:port` the other servers and the clients reach it at (default: the bound one).
    pub advertise: Option<&'a str>,
    /// Its zone, as it registers.
    pub zone: &'a str,
    /// The meta servers' addresses.
    pub meta: &'a [String],
    /// Its cluster secret, ACL and TLS settings.
    pub security: &'a SecurityArgs,
    /// How long a call to another server may take.
    pub rpc_timeout: Duration,
}

/// A server that listens and has joined the cluster: what the rest of its start needs.
pub struct Joined {
    /// Bound, not yet serving.
    pub listener: TcpListener,
    /// Checks what it is called with, and signs what it calls.
    pub guard: Arc<Guard>,
    /// What it serves with and calls the other servers with.
    pub transport: Transport,
    /// Its client for the other servers (signed and with TLS as the settings say).
    pub http: HttpClient,
    /// Its membership, joined.
    pub membership: Arc<Membership>,
    /// The id it registered with.
    pub id: MemberId,
}

/// Binds `settings.listen`, then registers with the meta as `settings.role` (retrying until
/// `shutdown` fires) and starts keeping the membership.
pub async fn listen_and_join(
    settings: JoinSettings<'_>,
    shutdown: &CancellationToken,
) -> Result<Joined, StartError> {
    let guard = settings
        .security
        .guard(settings.role.as_str(), settings.listen)
        .map_err(StartError::Other)?;
    let bind_error = |source| StartError::Bind {
        addr: settings.listen.to_owned(),
        source,
    };
    let listener = bind(settings.listen).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    let advertise = settings
        .advertise
        .map_or_else(|| local.to_string(), str::to_owned);
    let transport = settings.security.transport().map_err(StartError::Other)?;
    let http = HttpClient::new(settings.rpc_timeout)
        .with_signer(guard.signer())
        .with_tls(transport.client.clone());
    let meta = Arc::new(MetaClient::new(http.clone(), settings.meta.to_vec()));
    let id = MemberId::generate(settings.role, &advertise);
    let member = Member {
        id: id.clone(),
        role: settings.role,
        addr: advertise,
        zone: settings.zone.to_owned(),
        registered_at_ms: 0,
    };
    let membership = Arc::new(Membership::join(meta, member, guard.clone(), shutdown).await?);
    Ok(Joined {
        listener,
        guard,
        transport,
        http,
        membership,
        id,
    })
}

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
        crate::liveness::start(
            crate::liveness::Liveness {
                meta: meta.clone(),
                member: member.clone(),
                view_tx: view_tx.clone(),
                renew,
                lease,
                renewed: renewed.clone(),
                rejoins: rejoins.clone(),
            },
            stop.clone(),
        );
        tokio::spawn(watch_loop(meta.clone(), view_tx.clone(), stop.clone()));
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

pub(crate) fn publish(tx: &watch::Sender<Arc<ClusterView>>, view: ClusterView) {
    tx.send_if_modified(|cur| {
        if view.epoch > cur.epoch {
            *cur = Arc::new(view);
            true
        } else {
            false
        }
    });
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
