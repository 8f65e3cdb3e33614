//! Client of the MetaServer cluster.
//!
//! Knows every meta node's address and remembers which one answered as leader. Writes
//! (register, renew, deregister) go to the remembered leader first; a `not_leader` answer
//! with a redirect is followed once, an unreachable node is skipped. Reads of the cluster
//! view go to any node: each answers from its own applied state, and the epoch in the view
//! says how fresh it is.

use std::time::Duration;

use parking_lot::Mutex;
use registry_common::error::ErrorCode;
use registry_common::member::{ClusterView, Member, MemberId};
use registry_common::proto::meta::{
    MemberRequest, RegisterRequest, RegisterResponse, RenewResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::{HttpClient, RpcError};

#[derive(Debug)]
pub struct MetaClient {
    http: HttpClient,
    /// Every meta node, as configured.
    addrs: Vec<String>,
    /// The node that last answered a write; tried first.
    leader: Mutex<Option<String>>,
}

impl MetaClient {
    pub fn new(http: HttpClient, addrs: Vec<String>) -> Self {
        Self {
            http,
            addrs,
            leader: Mutex::new(None),
        }
    }

    /// A client of the same nodes, starting from the same remembered leader, with a
    /// connection pool of its own (see [`HttpClient::with_own_pool`]).
    pub fn with_own_pool(&self) -> Self {
        Self {
            http: self.http.with_own_pool(),
            addrs: self.addrs.clone(),
            leader: Mutex::new(self.leader.lock().clone()),
        }
    }

    /// What this client signs with, if anything.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    pub fn signer(&self) -> Option<&registry_common::auth::Credential> {
        self.http.signer()
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Remembers `addr` as the leader.
    pub fn set_leader(&self, addr: Option<String>) {
        *self.leader.lock() = addr;
    }

    /// Candidate nodes, remembered leader first.
    pub fn candidates(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.addrs.len() + 1);
        if let Some(l) = self.leader.lock().clone() {
            out.push(l);
        }
        for a in &self.addrs {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> Result<Resp, RpcError> {
        let mut last = RpcError::Unreachable("no meta server configured".into());
        let mut queue = self.candidates();
        let mut tried: Vec<String> = Vec::new();
        while let Some(addr) = (!queue.is_empty()).then(|| queue.remove(0)) {
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr.clone());
            match self.http.post::<Req, Resp>(&addr, path, body).await {
                Ok(resp) => {
                    *self.leader.lock() = Some(addr);
                    return Ok(resp);
                }
                Err(RpcError::Api(e)) if e.code == ErrorCode::NotLeader => {
                    if let Some(to) = e.redirect.clone() {
                        queue.insert(0, to);
                    }
                    last = RpcError::Api(e);
                }
                Err(e @ (RpcError::Unreachable(_) | RpcError::Timeout(_))) => last = e,
                Err(RpcError::Api(e)) if e.code == ErrorCode::Unavailable => {
                    last = RpcError::Api(e)
                }
                Err(e) => return Err(e),
            }
        }
        *self.leader.lock() = None;
        Err(last)
    }

    pub async fn register(&self, member: &Member) -> Result<RegisterResponse, RpcError> {
        let req = RegisterRequest {
            member: member.clone(),
        };
        self.call("/meta/v1/register", &req).await
    }

    pub async fn renew(&self, id: &MemberId) -> Result<RenewResponse, RpcError> {
        self.call("/meta/v1/renew", &MemberRequest { id: id.clone() })
            .await
    }

    pub async fn deregister(&self, id: &MemberId) -> Result<RenewResponse, RpcError> {
        self.call("/meta/v1/deregister", &MemberRequest { id: id.clone() })
            .await
    }

    /// Marks data servers draining, so the slot table moves their slots to the others (the
    /// request `registryctl data drain` sends; a data server sends it for itself on SIGTERM).
    pub async fn drain(&self, ids: &[MemberId]) -> Result<RenewResponse, RpcError> {
        let body = serde_json::json!({ "ids": ids, "draining": true });
        self.call("/admin/v1/drain", &body).await
    }

    /// The ACL once its revision is above `after_revision`, or the current one after `wait`
    /// (secrets included: only cluster members may read it).
    pub async fn acl(
        &self,
        after_revision: u64,
        wait: Duration,
    ) -> Result<registry_common::acl::Acl, RpcError> {
        let path = format!(
            "/meta/v1/acl?afterRevision={after_revision}&timeoutMs={}",
            wait.as_millis()
        );
        let timeout = wait + Duration::from_secs(2);
        let mut last = RpcError::Unreachable("no meta server configured".into());
        for addr in self.candidates() {
            match self.http.get(&addr, &path, timeout).await {
                Ok(acl) => return Ok(acl),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The cluster view once its epoch is above `after_epoch`, or the current one after `wait`.
    pub async fn view(&self, after_epoch: u64, wait: Duration) -> Result<ClusterView, RpcError> {
        let path = format!(
            "/meta/v1/view?afterEpoch={after_epoch}&timeoutMs={}",
            wait.as_millis()
        );
        let timeout = wait + Duration::from_secs(2);
        let mut last = RpcError::Unreachable("no meta server configured".into());
        for addr in self.candidates() {
            match self.http.get::<ClusterView>(&addr, &path, timeout).await {
                Ok(view) => return Ok(view),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
