//! Publishers, datums and subscriber scopes: the data the registry exists to move.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::{validate_part, DataInfoId, IdError};
use crate::member::MemberId;

/// Most data strings one publisher may carry.
pub const MAX_DATA_ITEMS: usize = 1024;
/// Most payload bytes (sum of data strings) one publisher may carry.
pub const MAX_DATA_BYTES: usize = 512 * 1024;

/// Why a publisher was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublisherError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("publisher carries {0} data items, more than {MAX_DATA_ITEMS}")]
    TooManyItems(usize),
    #[error("publisher carries {0} payload bytes, more than {MAX_DATA_BYTES}")]
    TooLarge(usize),
}

/// Checks the client-supplied parts of a registration: ids and payload bounds.
pub fn validate_registration(
    client_id: &str,
    regist_id: &str,
    data: &[String],
) -> Result<(), PublisherError> {
    validate_part("clientId", client_id)?;
    validate_part("registId", regist_id)?;
    if data.len() > MAX_DATA_ITEMS {
        return Err(PublisherError::TooManyItems(data.len()));
    }
    let bytes: usize = data.iter().map(String::len).sum();
    if bytes > MAX_DATA_BYTES {
        return Err(PublisherError::TooLarge(bytes));
    }
    Ok(())
}

/// Identity of one publisher across reconnects and session moves: the SDK instance that
/// registered it and the registration id that instance chose. The connection it came in on is
/// not part of the identity (that changes on every reconnect); it is the *owner*, see
/// [`Publisher::session`] and [`Publisher::conn_id`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherKey {
    /// Random id the SDK instance picked at start; stable while the process lives.
    pub client_id: String,
    /// Registration id, unique within the client.
    pub regist_id: String,
}

/// One registration of data under a dataInfoId by one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Publisher {
    /// The service this publisher belongs to.
    pub data_info_id: DataInfoId,
    /// Who published it (stable across reconnects).
    pub key: PublisherKey,
    /// What it published: usually one address with metadata.
    pub data: Vec<String>,
    /// Client-side version, bumped on every republish.
    pub version: u64,
    /// Session server that holds the authoritative copy.
    pub session: MemberId,
    /// Connection on that session it arrived through; an unpublish only removes the
    /// publisher if it still belongs to the same connection.
    pub conn_id: u64,
    /// When the session accepted this (re)registration; breaks ties between two sessions
    /// that both carry the same client version after a reconnect.
    pub registered_at_ms: u64,
    /// Zone of the publishing client.
    #[serde(default)]
    pub zone: String,
    /// Application name of the publishing client.
    #[serde(default)]
    pub app: String,
}

impl Publisher {
    /// Whether this registration replaces `old` (same key) on a data server: a higher client
    /// version wins, then a later registration.
    pub fn supersedes(&self, old: &Publisher) -> bool {
        (self.version, self.registered_at_ms) > (old.version, old.registered_at_ms)
    }

    /// Whether this publisher is owned by that connection of that session.
    pub fn owned_by(&self, session: &MemberId, conn_id: u64) -> bool {
        self.conn_id == conn_id && &self.session == session
    }

    /// Checks ids and payload bounds (the dataInfoId was checked when it was parsed).
    pub fn validate(&self) -> Result<(), PublisherError> {
        validate_registration(&self.key.client_id, &self.key.regist_id, &self.data)
    }

    /// XXH3 of what reconciliation compares (dataInfoId, key, connection, version,
    /// registration time): the same on every build, so a session and a data server of
    /// different releases agree on it. The data itself is not part of it: one version of a
    /// publisher carries one payload (see `supersedes`).
    pub fn fingerprint(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        // 0xff never occurs in UTF-8, so it cannot be confused with a part's bytes.
        h.update(self.data_info_id.as_str().as_bytes());
        h.update(&[0xff]);
        h.update(self.key.client_id.as_bytes());
        h.update(&[0xff]);
        h.update(self.key.regist_id.as_bytes());
        h.update(&[0xff]);
        h.update(&self.conn_id.to_le_bytes());
        h.update(&self.version.to_le_bytes());
        h.update(&self.registered_at_ms.to_le_bytes());
        h.digest()
    }

    /// Bytes of payload (sum of the data strings), for accounting.
    pub fn payload_len(&self) -> usize {
        self.data.iter().map(String::len).sum()
    }
}

/// A held publisher, hashed, compared and ordered by its key, so that a set of them is a map
/// from the key that does not copy the key (two strings) out of the publisher.
#[derive(Clone, Debug)]
pub struct ByKey(pub Arc<Publisher>);

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

impl Hash for ByKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state)
    }
}

impl Borrow<PublisherKey> for ByKey {
    fn borrow(&self) -> &PublisherKey {
        &self.0.key
    }
}

impl std::ops::Deref for ByKey {
    type Target = Arc<Publisher>;

    fn deref(&self) -> &Arc<Publisher> {
        &self.0
    }
}

/// What a set of publishers adds up to, for comparing two copies of it without sending it:
/// how many there are and the wrapping sum of their [`Publisher::fingerprint`]s. Kept up to
/// date one publisher at a time on both sides (a data server per slot and owning session, a
/// session per slot), so comparing a slot costs the same whatever it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub publishers: u64,
    pub fingerprint: u64,
}

impl Tally {
    pub fn add(&mut self, p: &Publisher) {
        self.publishers += 1;
        self.fingerprint = self.fingerprint.wrapping_add(p.fingerprint());
    }

    pub fn sub(&mut self, p: &Publisher) {
        self.publishers = self.publishers.saturating_sub(1);
        self.fingerprint = self.fingerprint.wrapping_sub(p.fingerprint());
    }

    pub fn is_empty(&self) -> bool {
        self.publishers == 0
    }
}

/// Every publisher of one dataInfoId, as a data server holds it, with its datum version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Datum {
    pub data_info_id: DataInfoId,
    /// Grows on every change of this dataInfoId, also across failover.
    pub version: u64,
    /// Sorted by key, so two copies of the same version compare equal.
    pub publishers: Vec<Publisher>,
    /// The change that produced this version removed publishers for a server-side reason
    /// (their session server left the cluster), not because a client asked. Sessions hold
    /// back a datum emptied this way for a protection window instead of pushing it empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server_removal: bool,
}

impl Datum {
    /// An empty datum (no publisher has ever been seen, or all left) at `version`.
    pub fn empty(data_info_id: DataInfoId, version: u64) -> Self {
        Self {
            data_info_id,
            version,
            publishers: Vec::new(),
            server_removal: false,
        }
    }

    /// Every publisher's data strings, in publisher-key order: what a subscriber receives.
    pub fn flat_data(&self) -> Vec<String> {
        self.publishers
            .iter()
            .flat_map(|p| p.data.iter().cloned())
            .collect()
    }
}

/// A datum as a session needs it to push: every publisher's data, flattened. What change
/// notifications carry and sessions fetch; a fraction of the size of a full [`Datum`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushDatum {
    pub data_info_id: DataInfoId,
    pub version: u64,
    /// Number of publishers (a publisher may publish no data string).
    pub publishers: u32,
    /// Every publisher's data strings, in publisher-key order.
    pub data: Vec<String>,
    /// See [`Datum::server_removal`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server_removal: bool,
}

impl PushDatum {
    /// About how many bytes this datum takes on the wire.
    pub fn approx_bytes(&self) -> usize {
        128 + self.data_info_id.as_str().len()
            + self.data.iter().map(|d| d.len() + 3).sum::<usize>()
    }

    pub fn empty(data_info_id: DataInfoId, version: u64) -> Self {
        Self {
            data_info_id,
            version,
            publishers: 0,
            data: Vec::new(),
            server_removal: false,
        }
    }
}

impl From<&Datum> for PushDatum {
    fn from(d: &Datum) -> Self {
        Self {
            data_info_id: d.data_info_id.clone(),
            version: d.version,
            publishers: d.publishers.len() as u32,
            data: d.flat_data(),
            server_removal: d.server_removal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(regist_id: &str, version: u64) -> Publisher {
        Publisher {
            data_info_id: DataInfoId::new("com.example.Echo", None, None).unwrap(),
            key: PublisherKey {
                client_id: "5f0c3a9e".into(),
                regist_id: regist_id.into(),
            },
            data: vec!["10.0.0.1:8080".into()],
            version,
            session: MemberId("s".into()),
            conn_id: 42,
            registered_at_ms: 1_763_870_000_000,
            zone: String::new(),
            app: String::new(),
        }
    }

    /// Sessions and data servers of different releases compare fingerprints: the function
    /// must never change. The value is the one `docs/protocol.md` shows for this publisher,
    /// computed from that definition by another XXH3 implementation (Python's `xxhash`).
    #[test]
    fn the_fingerprint_is_fixed() {
        assert_eq!(publisher("p1", 1).fingerprint(), 18_270_603_209_161_686_218);
    }

    /// A tally depends on the set, not on the order of adds and removes, and sees a version
    /// change.
    #[test]
    fn tallies_follow_the_set() {
        let (a, b, c) = (publisher("a", 1), publisher("b", 1), publisher("c", 1));
        let mut x = Tally::default();
        for p in [&a, &b, &c] {
            x.add(p);
        }
        x.sub(&b);
        let mut y = Tally::default();
        y.add(&c);
        y.add(&a);
        assert_eq!(x, y);
        y.sub(&a);
        y.add(&publisher("a", 2));
        assert_ne!(x, y);
        assert_eq!(y.publishers, 2);
        y.sub(&c);
        y.sub(&publisher("a", 2));
        assert!(y.is_empty());
        assert_eq!(y, Tally::default());
    }
}
