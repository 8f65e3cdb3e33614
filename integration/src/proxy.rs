//! A fault-injecting TCP proxy owned by the test harness.
//!
//! A [`Proxy`] listens on 127.0.0.1 (port 0) and forwards every connection to a target it can
//! change at any time (a restarted server on a new port, or none while it is down). What it does
//! with a connection depends on the connection's *source* IP, so a test that gives each server
//! its own loopback address (Linux routes all of 127/8 to `lo`) can cut the links between two
//! servers and leave the others alone:
//!
//! - [`Fault::Pass`]: bytes flow both ways;
//! - [`Fault::Blackhole`]: connections stay open (new ones are accepted) but no byte moves in
//!   either direction until the fault is lifted, when what was held flows again. Peers see
//!   silence and time out, as across a network partition or to a frozen host;
//! - [`Fault::Refuse`]: open connections are reset, new ones are reset as soon as accepted.
//!
//! [`Proxy::reset`] drops the open connections of a source once (both sides see the reset)
//! and lets it reconnect at once: a connection that breaks and comes back.
//!
//! The proxy runs on its own Tokio runtime, so it keeps forwarding whatever the test's own
//! runtime is doing; dropping it stops it and closes everything.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use registry_rpc::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// What the proxy does with the traffic of one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward.
    Pass,
    /// Hold every byte, keep connections open.
    Blackhole,
    /// Reset connections.
    Refuse,
}

/// How long the proxy waits to connect to its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One open connection through the proxy.
struct Conn {
    /// Where it came from (what the rules match).
    source: IpAddr,
    /// Cancelled to drop both sides at once.
    kill: CancellationToken,
}

struct Shared {
    /// Where connections go; `None` while the target is down (connections are reset).
    target: Mutex<Option<SocketAddr>>,
    /// Faults by source IP.
    by_source: Mutex<HashMap<IpAddr, Fault>>,
    /// Fault of sources not in `by_source`.
    default: Mutex<Fault>,
    /// Bumped on every rule change; held connections wait on it.
    changes: watch::Sender<u64>,
    /// Open connections by id.
    conns: Mutex<HashMap<u64, Conn>>,
    /// Next connection id.
    next_id: AtomicU64,
}

impl Shared {
    fn fault(&self, source: IpAddr) -> Fault {
        match self.by_source.lock().get(&source) {
            Some(f) => *f,
            None => *self.default.lock(),
        }
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Kills the open connections whose source matches.
    fn kill_where(&self, matches: impl Fn(IpAddr) -> bool) {
        for conn in self.conns.lock().values() {
            if matches(conn.source) {
                conn.kill.cancel();
            }
        }
    }
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// Where it listens (127.0.0.1, port chosen by the system).
    addr: SocketAddr,
    /// Rules and connections, shared with the tasks.
    shared: Arc<Shared>,
    /// The proxy's own runtime.
    rt: Option<Runtime>,
}

impl Proxy {
    /// Starts a proxy to `target` (`None`: no target yet; connections are reset).
    pub fn start(target: Option<SocketAddr>) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("proxy")
            .enable_all()
            .build()
            .context("cannot build the proxy runtime")?;
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("proxy cannot listen")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (changes, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            target: Mutex::new(target),
            by_source: Mutex::new(HashMap::new()),
            default: Mutex::new(Fault::Pass),
            changes,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener)?
        };
        rt.spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            addr,
            shared,
            rt: Some(rt),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points new connections at `target` (`None`: reset them). Open connections keep their
    /// upstream.
    pub fn set_target(&self, target: Option<SocketAddr>) {
        *self.shared.target.lock() = target;
    }

    /// Sets the fault for connections from `source`; open ones follow at once.
    pub fn set_fault(&self, source: IpAddr, fault: Fault) {
        self.shared.by_source.lock().insert(source, fault);
        if fault == Fault::Refuse {
            self.shared.kill_where(|s| s == source);
        }
        self.shared.changed();
    }

    /// Sets the fault for sources without a rule of their own.
    pub fn set_default_fault(&self, fault: Fault) {
        *self.shared.default.lock() = fault;
        if fault == Fault::Refuse {
            let listed: Vec<IpAddr> = self.shared.by_source.lock().keys().copied().collect();
            self.shared.kill_where(|s| !listed.contains(&s));
        }
        self.shared.changed();
    }

    /// Lifts every fault: all traffic passes again, held bytes flow.
    pub fn heal(&self) {
        self.shared.by_source.lock().clear();
        *self.shared.default.lock() = Fault::Pass;
        self.shared.changed();
    }

    /// Resets the open connections from `source` (all sources when `None`); new connections
    /// are served as before.
    pub fn reset(&self, source: Option<IpAddr>) {
        self.shared.kill_where(|s| source.is_none_or(|x| x == s));
    }

    /// How many connections are open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.lock().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.kill_where(|_| true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("proxy accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let kill = CancellationToken::new();
        shared.conns.lock().insert(
            id,
            Conn {
                source: peer.ip(),
                kill: kill.clone(),
            },
        );
        let shared = shared.clone();
        tokio::spawn(async move {
            let source = peer.ip();
            let result = tokio::select! {
                r = serve(stream, source, &shared) => r,
                _ = kill.cancelled() => Ok(()),
            };
            if let Err(e) = result {
                tracing::debug!(%source, "proxied connection ended: {e}");
            }
            shared.conns.lock().remove(&id);
        });
    }
}

/// Resets a socket on drop (RST instead of FIN), as a refused or broken link does.
fn reset_on_drop(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Forwards one connection until both directions end, or the fault becomes `Refuse`.
async fn serve(client: TcpStream, source: IpAddr, shared: &Shared) -> io::Result<()> {
    reset_on_drop(&client);
    // A blackholed source connects (the kernel accepted it) but gets nowhere until healed.
    wait_pass(source, shared).await?;
    let Some(target) = *shared.target.lock() else {
        return Err(io::Error::new(io::ErrorKind::NotConnected, "no target"));
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(r) => r?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
    };
    let _ = upstream.set_nodelay(true);
    reset_on_drop(&upstream);
    let (client_rd, client_wr) = client.into_split();
    let (up_rd, up_wr) = upstream.into_split();
    let (a, b) = tokio::join!(
        pump(client_rd, up_wr, source, shared),
        pump(up_rd, client_wr, source, shared),
    );
    a.and(b)
}

/// Waits until traffic from `source` may pass; `Refuse` is an error (the connection is reset).
async fn wait_pass(source: IpAddr, shared: &Shared) -> io::Result<()> {
    let mut changes = shared.changes.subscribe();
    loop {
        match shared.fault(source) {
            Fault::Pass => return Ok(()),
            Fault::Refuse => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "refused by a fault rule",
                ))
            }
            Fault::Blackhole => {
                if changes.changed().await.is_err() {
                    return Err(io::Error::other("proxy stopped"));
                }
            }
        }
    }
}

/// Copies one direction. Bytes read while a fault holds the link are held and written once it
/// passes again.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    source: IpAddr,
    shared: &Shared,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut changes = shared.changes.subscribe();
    loop {
        wait_pass(source, shared).await?;
        let n = tokio::select! {
            r = from.read(&mut buf) => r?,
            // A rule changed while waiting: check it again before reading on.
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err(io::Error::other("proxy stopped"));
                }
                continue;
            }
        };
        if n == 0 {
            // Half-close: pass the end on, keep the other direction open.
            let _ = to.shutdown().await;
            return Ok(());
        }
        wait_pass(source, shared).await?;
        to.write_all(&buf[..n]).await?;
    }
}
