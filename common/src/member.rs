//! Cluster members and the cluster view the MetaServer hands out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::slot::SlotTable;

/// Identity of one server process: unique per start, so a restarted process at the same
/// address is a new member (its predecessor's state is not silently inherited).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MemberId(pub Arc<str>);

impl MemberId {
    /// `<role>-<addr>-<nonce>`: readable in logs, unique per process start.
    pub fn generate(role: Role, addr: &str) -> Self {
        let nonce = crate::time::now_us() ^ u64::from(std::process::id()).rotate_left(40);
        MemberId(format!("{}-{addr}-{:x}", role.as_str(), nonce & 0xffff_ffff_ffff).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What a member does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Data,
    Session,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Data => "data",
            Role::Session => "session",
        }
    }
}

/// A data or session server known to the MetaServer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: MemberId,
    pub role: Role,
    /// `host:port` of its HTTP endpoint (also its WebSocket endpoint for sessions).
    pub addr: String,
    #[serde(default)]
    pub zone: String,
    /// When the MetaServer committed its registration.
    #[serde(default)]
    pub registered_at_ms: u64,
}

/// Cluster-wide settings, held in the MetaServer's state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    /// Copies of every datum (primary + replicas).
    pub copies: usize,
    /// Number of slots dataInfoIds hash into. Fixed for the life of a cluster.
    pub slot_count: u32,
    /// When false, sessions hold pushes back (operators' emergency switch).
    pub push_enabled: bool,
    /// Client addresses or app names refused at registration.
    #[serde(default)]
    pub client_blacklist: Vec<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            copies: 2,
            slot_count: crate::slot::DEFAULT_SLOT_COUNT,
            push_enabled: true,
            client_blacklist: Vec::new(),
        }
    }
}

/// Everything a server needs to route: the epoch, the members and the slot table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// Bumped on every membership or table change.
    pub epoch: u64,
    pub members: BTreeMap<MemberId, Member>,
    pub slots: SlotTable,
    pub settings: ClusterSettings,
    /// Data servers being drained: they hand their slots over and get none.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub draining: BTreeSet<MemberId>,
}

impl Default for ClusterView {
    fn default() -> Self {
        let settings = ClusterSettings::default();
        Self {
            epoch: 0,
            members: BTreeMap::new(),
            slots: SlotTable::empty(settings.slot_count),
            settings,
            draining: BTreeSet::new(),
        }
    }
}

impl ClusterView {
    pub fn members_of(&self, role: Role) -> impl Iterator<Item = &Member> {
        self.members.values().filter(move |m| m.role == role)
    }

    pub fn addr_of(&self, id: &MemberId) -> Option<&str> {
        self.members.get(id).map(|m| m.addr.as_str())
    }
}
