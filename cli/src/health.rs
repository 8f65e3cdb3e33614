//! `registry health`: one HTTP GET of a server's `/health` (or `/ready`), for container health
//! checks in an image that has no curl. Exit status 0 when the server answered 2xx within the
//! timeout, 1 otherwise. Without `--addr` it asks the default ports of the three roles on
//! loopback in turn (a container runs one role on its default port), passing if one answers.

use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Server to ask (`host:port`). Default: the first of 127.0.0.1:9600 (session), :9610
    /// (meta) and :9620 (data) that answers.
    #[arg(long, env = "REGISTRY_HEALTH_ADDR")]
    pub addr: Option<String>,
    /// Path to GET (`/health` for liveness, `/ready` for readiness).
    #[arg(long, default_value = "/health")]
    pub path: String,
    /// Give up after this many milliseconds (connect, send and answer together).
    #[arg(long, default_value_t = 2_000)]
    pub timeout_ms: u64,
}

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("cannot reach {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}{path} answered `{status_line}`")]
    Status {
        addr: String,
        path: String,
        status_line: String,
    },
    #[error("{addr} sent no HTTP status line")]
    Malformed { addr: String },
}

/// The addresses asked when `--addr` is not given: each role's default port on loopback.
pub const DEFAULT_ADDRS: [&str; 3] = ["127.0.0.1:9600", "127.0.0.1:9610", "127.0.0.1:9620"];

/// GETs `args.path` from `args.addr` (or the default addresses in turn); `Ok` with the status
/// line of the first 2xx answer, otherwise the last failure.
pub async fn check(args: &HealthArgs) -> Result<String, HealthError> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let addrs: Vec<&str> = match &args.addr {
        Some(a) => vec![a.as_str()],
        None => DEFAULT_ADDRS.to_vec(),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout_at(deadline, get(addr, &args.path)).await {
            Ok(Ok(status)) => return Ok(status),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                return Err(HealthError::Timeout {
                    addr: addr.to_owned(),
                    timeout,
                })
            }
        }
    }
    Err(last.unwrap_or(HealthError::Malformed {
        addr: String::new(),
    }))
}

async fn get(addr: &str, path: &str) -> Result<String, HealthError> {
    let io = |source| HealthError::Io {
        addr: addr.to_owned(),
        source,
    };
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: registry-health\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    // The status line is all we need; a server's health answer is small, but read no more
    // than a few KiB whatever it sends.
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let status_line = String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut parts = status_line.split_whitespace();
    let code = match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    };
    match code {
        Some(c) if (200..300).contains(&c) => Ok(status_line),
        Some(_) => Err(HealthError::Status {
            addr: addr.to_owned(),
            path: path.to_owned(),
            status_line,
        }),
        None => Err(HealthError::Malformed {
            addr: addr.to_owned(),
        }),
    }
}
