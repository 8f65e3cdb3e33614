//! Where this process's outgoing cluster connections come from.
//!
//! By default the kernel picks the source address. `REGISTRY_CONNECT_FROM=IP` makes every
//! server-to-server connection of the process (HTTP calls, the meta heartbeat WebSocket)
//! start from `IP`. A fault drill that gives each server its own loopback address
//! (`127.0.0.x`, all routed to `lo`) then sees, on every link, which server opened it, and can
//! cut the links between two servers alone (`registry-chaos` does so with packet filter rules
//! on source and destination).

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// The environment variable naming the source address.
pub const CONNECT_FROM_ENV: &str = "REGISTRY_CONNECT_FROM";

/// The source address of outgoing connections, if one is configured (read once).
pub fn connect_from() -> Option<IpAddr> {
    static FROM: OnceLock<Option<IpAddr>> = OnceLock::new();
    *FROM.get_or_init(|| {
        let raw = std::env::var(CONNECT_FROM_ENV).ok()?;
        match raw.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(e) => {
                tracing::warn!("{CONNECT_FROM_ENV}={raw:?} is not an IP address ({e}); ignored");
                None
            }
        }
    })
}

/// Opens a TCP connection to `addr` (`host:port`) from [`connect_from`], within `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let attempt = async {
        let target: SocketAddr = match addr.parse() {
            Ok(a) => a,
            Err(_) => tokio::net::lookup_host(addr)
                .await?
                .next()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?,
        };
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = connect_from().filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}
