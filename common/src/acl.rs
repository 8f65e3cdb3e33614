//! Principals, their access keys and what each may do: the access control list the meta
//! cluster replicates and every session server enforces.
//!
//! A [`Principal`] is an application (or an operator). It holds at most
//! [`MAX_KEYS_PER_PRINCIPAL`] access keys, so a key can be rotated without downtime (add the
//! new one, move the clients, revoke the old one), and three permissions:
//! - `publish` / `subscribe`: glob patterns (`*` any run, `?` one character). A pattern
//!   without `#@#` is matched against the dataId alone (any group and instance); a pattern
//!   with it against the whole dataInfoId `dataId#@#instanceId#@#group`.
//! - `admin`: the admin API (cluster changes, the ACL itself).
//!
//! With auth on, whatever is not granted is denied: a principal with no patterns can connect
//! and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

use crate::auth::{Secret, CLUSTER_KEY_ID};
use crate::id::{DataInfoId, SEPARATOR};

/// Keys one principal may hold at once.
pub const MAX_KEYS_PER_PRINCIPAL: usize = 2;

/// Longest principal name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Most patterns in one permission list.
pub const MAX_PATTERNS: usize = 256;

/// The replicated ACL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Acl {
    /// Bumped by every change; servers watch it.
    pub revision: u64,
    /// Whether the first admin key was installed (done once, from the meta nodes' file).
    pub bootstrapped: bool,
    pub principals: BTreeMap<String, Principal>,
}

/// One application or operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    #[serde(flatten)]
    pub permissions: Permissions,
    #[serde(default)]
    pub keys: Vec<AccessKey>,
}

/// What a principal may do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    /// Patterns of services it may publish.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Patterns of services it may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Whether it may use the admin API.
    #[serde(default)]
    pub admin: bool,
}

/// One access key. The secret is replicated to the servers that verify signatures: keep the
/// meta data directory private.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
    pub created_ms: u64,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// Why an ACL change is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("invalid principal name: {0}")]
    BadName(String),
    #[error("invalid pattern `{0}`")]
    BadPattern(String),
    #[error("at most {MAX_PATTERNS} patterns per permission")]
    TooManyPatterns,
    #[error("no principal `{0}`")]
    UnknownPrincipal(String),
    #[error("no key `{0}`")]
    UnknownKey(String),
    #[error("principal `{0}` already holds {MAX_KEYS_PER_PRINCIPAL} keys; revoke one first")]
    TooManyKeys(String),
    #[error("key id `{0}` is taken")]
    KeyTaken(String),
}

/// Checks a principal name: 1..=64 of letters, digits, `-`, `_`, `.`.
pub fn validate_name(name: &str) -> Result<(), AclError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(AclError::BadName(format!(
            "`{}`: use 1..={MAX_NAME_BYTES} letters, digits, `-`, `_` or `.`",
            name.chars().take(80).collect::<String>()
        )))
    }
}

impl Permissions {
    pub fn validate(&self) -> Result<(), AclError> {
        for list in [&self.publish, &self.subscribe] {
            if list.len() > MAX_PATTERNS {
                return Err(AclError::TooManyPatterns);
            }
            for p in list {
                if p.is_empty() || p.len() > 1024 || p.chars().any(char::is_control) {
                    return Err(AclError::BadPattern(p.chars().take(80).collect()));
                }
            }
        }
        Ok(())
    }
}

impl Acl {
    /// Creates or replaces a principal's permissions, keeping its keys.
    pub fn put(&mut self, name: &str, permissions: Permissions) -> Result<bool, AclError> {
        validate_name(name)?;
        permissions.validate()?;
        let p = self.principals.entry(name.to_owned()).or_default();
        let changed = p.permissions != permissions;
        p.permissions = permissions;
        Ok(changed)
    }

    pub fn delete(&mut self, name: &str) -> Result<(), AclError> {
        self.principals
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| AclError::UnknownPrincipal(name.to_owned()))
    }

    /// Adds a key to an existing principal.
    pub fn add_key(&mut self, principal: &str, key: AccessKey) -> Result<(), AclError> {
        if key.id == CLUSTER_KEY_ID || self.find_key(&key.id).is_some() {
            return Err(AclError::KeyTaken(key.id));
        }
        let p = self
            .principals
            .get_mut(principal)
            .ok_or_else(|| AclError::UnknownPrincipal(principal.to_owned()))?;
        if p.keys.len() >= MAX_KEYS_PER_PRINCIPAL {
            return Err(AclError::TooManyKeys(principal.to_owned()));
        }
        p.keys.push(key);
        Ok(())
    }

    /// Removes a key wherever it is.
    pub fn revoke_key(&mut self, key_id: &str) -> Result<(), AclError> {
        for p in self.principals.values_mut() {
            if let Some(i) = p.keys.iter().position(|k| k.id == key_id) {
                p.keys.remove(i);
                return Ok(());
            }
        }
        Err(AclError::UnknownKey(key_id.to_owned()))
    }

    /// The principal holding `key_id`, and the key.
    pub fn find_key(&self, key_id: &str) -> Option<(&str, &Principal, &AccessKey)> {
        self.principals.iter().find_map(|(name, p)| {
            p.keys
                .iter()
                .find(|k| k.id == key_id)
                .map(|k| (name.as_str(), p, k))
        })
    }

    /// This ACL with every secret blanked, for showing.
    pub fn redacted(&self) -> Acl {
        let mut out = self.clone();
        for p in out.principals.values_mut() {
            for k in &mut p.keys {
                k.secret.clear();
            }
        }
        out
    }
}

/// One principal's permissions compiled for matching.
#[derive(Debug)]
pub struct Grants {
    pub principal: Arc<str>,
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
    pub admin: bool,
}

#[derive(Debug)]
struct Pattern {
    /// Whether it names the whole dataInfoId (holds the separator) or the dataId only.
    whole: bool,
    glob: WildMatch,
}

impl Pattern {
    fn new(text: &str) -> Self {
        Self {
            whole: text.contains(SEPARATOR),
            glob: WildMatch::new(text),
        }
    }

    fn matches(&self, id: &DataInfoId) -> bool {
        if self.whole {
            self.glob.matches(id.as_str())
        } else {
            self.glob.matches(id.data_id())
        }
    }
}

impl Grants {
    fn new(name: &str, p: &Permissions) -> Self {
        Self {
            principal: name.into(),
            publish: p.publish.iter().map(|s| Pattern::new(s)).collect(),
            subscribe: p.subscribe.iter().map(|s| Pattern::new(s)).collect(),
            admin: p.admin,
        }
    }

    pub fn may_publish(&self, id: &DataInfoId) -> bool {
        self.publish.iter().any(|p| p.matches(id))
    }

    pub fn may_subscribe(&self, id: &DataInfoId) -> bool {
        self.subscribe.iter().any(|p| p.matches(id))
    }
}

/// The ACL indexed by key id, as a server checks signatures against it.
#[derive(Debug, Default)]
pub struct KeyIndex {
    pub revision: u64,
    keys: HashMap<String, (Secret, Arc<Grants>)>,
}

impl KeyIndex {
    pub fn build(acl: &Acl) -> Self {
        let mut keys = HashMap::new();
        for (name, p) in &acl.principals {
            let grants = Arc::new(Grants::new(name, &p.permissions));
            for k in &p.keys {
                // A secret too short to be accepted cannot sign anything.
                if let Ok(secret) = Secret::new(k.secret.as_bytes()) {
                    keys.insert(k.id.clone(), (secret, grants.clone()));
                }
            }
        }
        Self {
            revision: acl.revision,
            keys,
        }
    }

    pub fn get(&self, key_id: &str) -> Option<&(Secret, Arc<Grants>)> {
        self.keys.get(key_id)
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// Key ids valid here and not in `next`, or whose principal's grants changed.
    pub fn revoked_in(&self, next: &KeyIndex) -> Vec<String> {
        self.keys
            .iter()
            .filter(|(id, (secret, grants))| match next.keys.get(*id) {
                None => true,
                Some((s, g)) => s != secret || g.principal != grants.principal,
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DataInfoId {
        DataInfoId::parse(s).unwrap()
    }

    fn key(id: &str) -> AccessKey {
        AccessKey {
            id: id.into(),
            secret: "0123456789abcdef0123456789abcdef".into(),
            created_ms: 1,
        }
    }

    #[test]
    fn patterns_match_data_id_or_whole_id() {
        let g = Grants::new(
            "a",
            &Permissions {
                publish: vec!["com.acme.*".into(), "x#@#DEFAULT#@#blue".into()],
                subscribe: vec!["*#@#*#@#green".into()],
                admin: false,
            },
        );
        assert!(g.may_publish(&id("com.acme.orders#@#DEFAULT#@#any")));
        assert!(!g.may_publish(&id("com.evil.orders#@#DEFAULT#@#any")));
        assert!(g.may_publish(&id("x#@#DEFAULT#@#blue")));
        assert!(!g.may_publish(&id("x#@#DEFAULT#@#red")));
        assert!(g.may_subscribe(&id("y#@#DEFAULT#@#green")));
        assert!(!g.may_subscribe(&id("y#@#DEFAULT#@#blue")));
        let none = Grants::new("b", &Permissions::default());
        assert!(!none.may_publish(&id("x#@#DEFAULT#@#blue")));
    }

    #[test]
    fn keys_rotate_within_the_cap() {
        let mut acl = Acl::default();
        assert!(acl.add_key("a", key("k1")).is_err());
        acl.put("a", Permissions::default()).unwrap();
        acl.put("b", Permissions::default()).unwrap();
        acl.add_key("a", key("k1")).unwrap();
        acl.add_key("a", key("k2")).unwrap();
        assert_eq!(
            acl.add_key("a", key("k3")),
            Err(AclError::TooManyKeys("a".into()))
        );
        assert_eq!(
            acl.add_key("b", key("k1")),
            Err(AclError::KeyTaken("k1".into()))
        );
        acl.revoke_key("k1").unwrap();
        acl.add_key("a", key("k3")).unwrap();
        assert_eq!(acl.find_key("k3").map(|(n, _, _)| n), Some("a"));
        let index = KeyIndex::build(&acl);
        assert!(index.contains("k2") && index.contains("k3") && !index.contains("k1"));
        assert!(acl.redacted().principals["a"]
            .keys
            .iter()
            .all(|k| k.secret.is_empty()));
        assert!(acl.put("bad name", Permissions::default()).is_err());
    }
}
