//! One server in its own Tokio runtime.
//!
//! A node owns a runtime; everything the server spawns runs there. [`Node::kill`] shuts the
//! runtime down in the background: every task is dropped and every socket closed at once,
//! which peers observe like a process crash. [`Node::stop`] is the graceful path.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use data_server::DataServer;
use meta_server::MetaServer;
use registry_rpc::server::StartError;
use registry_rpc::CancellationToken;
use session_server::SessionServer;
use tokio::runtime::Runtime;

/// What the harness needs from a server.
pub trait Server: Send + 'static {
    fn addr(&self) -> SocketAddr;
    fn shutdown(self) -> impl Future<Output = ()> + Send;
}

impl Server for MetaServer {
    fn addr(&self) -> SocketAddr {
        MetaServer::addr(self)
    }
    fn shutdown(self) -> impl Future<Output = ()> + Send {
        MetaServer::shutdown(self)
    }
}

impl Server for DataServer {
    fn addr(&self) -> SocketAddr {
        DataServer::addr(self)
    }
    fn shutdown(self) -> impl Future<Output = ()> + Send {
        DataServer::shutdown(self)
    }
}

impl Server for SessionServer {
    fn addr(&self) -> SocketAddr {
        SessionServer::addr(self)
    }
    fn shutdown(self) -> impl Future<Output = ()> + Send {
        SessionServer::shutdown(self)
    }
}

pub struct Node<S: Server> {
    pub name: String,
    pub addr: SocketAddr,
    rt: Option<Runtime>,
    shutdown: CancellationToken,
    server: Option<S>,
}

impl<S: Server> Node<S> {
    /// Starts a server on a fresh runtime with `start(shutdown_token)`.
    pub async fn start<F, Fut>(name: impl Into<String>, start: F) -> anyhow::Result<Self>
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<S, StartError>> + Send + 'static,
    {
        let name = name.into();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name.clone())
            .enable_all()
            .build()
            .context("cannot build a node runtime")?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let started = rt.spawn(async move { start(token).await }).await;
        let server = match started {
            Ok(Ok(server)) => server,
            // A runtime must not be dropped inside an async context: shut it down first.
            Ok(Err(e)) => {
                rt.shutdown_background();
                return Err(anyhow::Error::new(e).context(format!("{name} did not start")));
            }
            Err(e) => {
                rt.shutdown_background();
                return Err(anyhow::Error::new(e).context("node start task failed"));
            }
        };
        Ok(Self {
            name,
            addr: server.addr(),
            rt: Some(rt),
            shutdown,
            server: Some(server),
        })
    }

    pub fn server(&self) -> &S {
        self.server.as_ref().expect("node is running")
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Runs a future on this node's runtime (for calls that must happen "inside" the node).
    pub async fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        self.rt
            .as_ref()
            .expect("node is running")
            .spawn(fut)
            .await
            .expect("node task panicked")
    }

    /// Crashes the node: every task and socket is dropped at once.
    pub fn kill(&mut self) {
        // The runtime goes first: cancelling the shutdown token while the server's tasks can
        // still run would let them act on it (a session would withdraw its clients'
        // publishers as they disconnect), which a crashed process never does.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        drop(self.server.take());
        self.shutdown.cancel();
    }

    /// Cancels the server's shutdown token and nothing else, as a program embedding the server
    /// does that stops it by its token alone (no drain, the runtime keeps running).
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Stops the node gracefully (leaves the cluster, closes connections).
    pub async fn stop(&mut self) {
        if let (Some(server), Some(rt)) = (self.server.take(), self.rt.as_ref()) {
            let _ = rt.spawn(async move { server.shutdown().await }).await;
        }
        self.shutdown.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl<S: Server> Drop for Node<S> {
    fn drop(&mut self) {
        self.kill();
    }
}
