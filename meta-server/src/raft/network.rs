//! The client side of the meta nodes' Raft RPCs: openraft's `RaftNetworkFactory` and
//! `RaftNetworkV2` over HTTP/JSON with reqwest, plus the wire paths and the snapshot message
//! shared with the server side ([`crate::raft::api`]).
//!
//! Every call is `POST http://{addr}/raft/<rpc>` with a JSON body and a timeout, signed with
//! the cluster secret when auth is on. Failures are
//! classified the way openraft's backoff expects: a connection that cannot be made (refused,
//! no route, connect timeout) or a peer whose Raft is stopped is `Unreachable` (openraft backs
//! off at once); a request that ran out of time is `Timeout`; anything else (a 4xx/5xx answer,
//! a body we cannot decode) is a `Network` error (repeated ones back off too).
//! One `reqwest::Client` (one keep-alive connection pool) serves all peers; it ignores any
//! proxy configured in the environment and, when the node listens on one specific address,
//! connects from that address.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use registry_common::error::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::raft::types::{NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::state::MetaState;

/// Path of the AppendEntries RPC.
pub const PATH_APPEND: &str = "/raft/append";
/// Path of the RequestVote RPC.
pub const PATH_VOTE: &str = "/raft/vote";
/// Path of the Pre-Vote RPC.
pub const PATH_PRE_VOTE: &str = "/raft/pre-vote";
/// Path of the full-snapshot RPC.
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
/// Path of the leadership-transfer RPC.
pub const PATH_TRANSFER_LEADER: &str = "/raft/transfer-leader";

/// The body of a full-snapshot RPC: the leader's vote and the whole snapshot in one message
/// (the state is small).
#[derive(Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// The sending leader's vote; the receiver refuses a snapshot from a stale leader.
    pub vote: Vote,
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The state machine's state.
    pub data: MetaState,
}

/// Makes one [`NetworkClient`] per peer; all share one HTTP client.
pub struct NetworkFactory {
    /// The id of this node (named in timeout errors).
    id: NodeId,
    /// The shared HTTP client: one connection pool with keep-alive for all peers.
    client: reqwest::Client,
    /// The least time an RPC may take before it fails with `Timeout`.
    rpc_timeout: Duration,
    /// Signs every RPC when set.
    signer: Option<registry_common::auth::Credential>,
    /// `http` or `https`.
    scheme: &'static str,
}

impl NetworkFactory {
    /// `local_ip`: the address to connect from (see [`crate::raft::RaftSettings::local_ip`]).
    pub fn new(
        id: NodeId,
        rpc_timeout: Duration,
        local_ip: Option<IpAddr>,
        signer: Option<registry_common::auth::Credential>,
        tls: Option<&registry_common::tls::ClientTls>,
    ) -> Result<Self, reqwest::Error> {
        // Peers are reached directly: a proxy from the environment (`HTTP_PROXY`) must never
        // sit between meta nodes.
        let builder = reqwest::Client::builder()
            .connect_timeout(rpc_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .no_proxy()
            .local_address(local_ip);
        let builder = match tls {
            Some(tls) => builder.tls_backend_preconfigured(tls.config_owned()),
            // Plaintext peers: no trust roots, so the system's certificate store (absent in
            // the container image) is never read.
            None => builder.tls_certs_only(Vec::new()),
        };
        Ok(Self {
            id,
            client: builder.build()?,
            rpc_timeout,
            signer,
            scheme: if tls.is_some() { "https" } else { "http" },
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        NetworkClient {
            id: self.id,
            target,
            base: format!("{}://{}", self.scheme, node.addr),
            client: self.client.clone(),
            rpc_timeout: self.rpc_timeout,
            signer: self.signer.clone(),
        }
    }
}

/// The RPC client to one peer.
pub struct NetworkClient {
    /// This node (for timeout errors).
    id: NodeId,
    /// The peer.
    target: NodeId,
    /// `http(s)://host:port` of the peer.
    base: String,
    /// The shared HTTP client.
    client: reqwest::Client,
    /// The least time an RPC may take; openraft's own TTL is used when it is longer.
    rpc_timeout: Duration,
    /// Signs every RPC when set.
    signer: Option<registry_common::auth::Credential>,
}

/// Why an RPC failed, before it is shaped into the error type each openraft method wants.
enum CallError {
    Timeout(Duration),
    Unreachable(String),
    Network(String),
}

impl CallError {
    fn into_rpc(self, id: NodeId, target: NodeId, action: RPCTypes) -> RPCError<TypeConfig> {
        match self {
            CallError::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id,
                target,
                timeout,
            }),
            CallError::Unreachable(msg) => RPCError::Unreachable(Unreachable::from_string(msg)),
            CallError::Network(msg) => RPCError::Network(NetworkError::from_string(msg)),
        }
    }

    fn into_streaming(self, id: NodeId, target: NodeId) -> StreamingError<TypeConfig> {
        self.into_rpc(id, target, RPCTypes::InstallSnapshot).into()
    }
}

impl NetworkClient {
    /// POSTs `body` to `path` and decodes the answer.
    async fn call<Req, Resp>(
        &self,
        path: &str,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let url = format!("{}{}", self.base, path);
        let body = serde_json::to_vec(body)
            .map_err(|e| CallError::Network(format!("{url}: cannot encode: {e}")))?;
        let mut request = self
            .client
            .post(&url)
            .timeout(timeout)
            .header("content-type", "application/json");
        if let Some(signer) = &self.signer {
            for (name, value) in signer.sign_request("POST", path, &body).pairs() {
                request = request.header(name, value);
            }
        }
        let sent = request.body(body).send().await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return Err(classify(&e, timeout, &url)),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(classify(&e, timeout, &url)),
        };
        if !status.is_success() {
            let api: Option<ApiError> = serde_json::from_slice(&bytes).ok();
            return Err(match api {
                // The peer's Raft is stopped or starting: treat like a dead peer.
                Some(api) if api.code == ErrorCode::Unavailable => {
                    CallError::Unreachable(format!("{url}: {}", api.message))
                }
                Some(api) => CallError::Network(format!("{url}: HTTP {status}: {}", api.message)),
                None => CallError::Network(format!("{url}: HTTP {status}")),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Network(format!("{url}: undecodable answer: {e}")))
    }

    /// The timeout of one call: openraft's hard TTL, but never less than our RPC timeout, so
    /// an fsync on a busy follower does not fail every heartbeat-sized request.
    fn timeout_for(&self, option: &RPCOption) -> Duration {
        option.hard_ttl().max(self.rpc_timeout)
    }
}

fn classify(e: &reqwest::Error, timeout: Duration, url: &str) -> CallError {
    if e.is_timeout() {
        CallError::Timeout(timeout)
    } else if e.is_connect() {
        CallError::Unreachable(format!("{url}: {e}"))
    } else {
        CallError::Network(format!("{url}: {e}"))
    }
}

impl RaftNetworkV2<TypeConfig> for NetworkClient {
    type SnapshotData = MetaState;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = self.timeout_for(&option);
        self.call(PATH_APPEND, &rpc, timeout)
            .await
            .map_err(|e| e.into_rpc(self.id, self.target, RPCTypes::AppendEntries))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = self.timeout_for(&option);
        self.call(PATH_VOTE, &rpc, timeout)
            .await
            .map_err(|e| e.into_rpc(self.id, self.target, RPCTypes::Vote))
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = self.timeout_for(&option);
        self.call(PATH_PRE_VOTE, &rpc, timeout)
            .await
            .map_err(|e| e.into_rpc(self.id, self.target, RPCTypes::Vote))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let timeout = self.timeout_for(&option);
        let req = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            res = self.call(PATH_SNAPSHOT, &req, timeout) => {
                res.map_err(|e| e.into_streaming(self.id, self.target))
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = self.timeout_for(&option);
        self.call(PATH_TRANSFER_LEADER, &req, timeout)
            .await
            .map_err(|e| e.into_rpc(self.id, self.target, RPCTypes::TransferLeader))
    }
}
