//! `DataInfoId`: the identity of one service, `dataId#@#instanceId#@#group`.
//!
//! It is validated wherever it enters the system (SDK frame, inter-server request,
//! deserialisation), so code holding a `DataInfoId` can trust it: every part is non-empty,
//! at most [`MAX_PART_LEN`] bytes, free of control characters and of the separator.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Separator between the three parts of the canonical string form.
pub const SEPARATOR: &str = "#@#";
/// Instance id used when the client gives none.
pub const DEFAULT_INSTANCE_ID: &str = "DEFAULT_INSTANCE_ID";
/// Group used when the client gives none.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// Longest accepted part (dataId, instanceId or group), in bytes.
pub const MAX_PART_LEN: usize = 256;

/// Why a dataInfoId (or one of its parts) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{part} is empty")]
    Empty { part: &'static str },
    #[error("{part} is {len} bytes, longer than the maximum of {max}")]
    TooLong {
        part: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{part} contains a control character")]
    ControlChar { part: &'static str },
    #[error("{part} contains the reserved separator `#@#`")]
    Separator { part: &'static str },
    #[error("`{0}` is not of the form dataId#@#instanceId#@#group")]
    Malformed(String),
}

/// Checks one part of a dataInfoId (or any other client-supplied identifier with the same
/// rules, such as a registration id).
pub fn validate_part(part: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { part });
    }
    if value.len() > MAX_PART_LEN {
        return Err(IdError::TooLong {
            part,
            len: value.len(),
            max: MAX_PART_LEN,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(IdError::ControlChar { part });
    }
    if value.contains(SEPARATOR) {
        return Err(IdError::Separator { part });
    }
    Ok(())
}

/// The identity of one service. Cheap to clone (one shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DataInfoId(Arc<str>);

impl DataInfoId {
    /// Builds and validates a dataInfoId; `None` parts take their defaults.
    pub fn new(
        data_id: &str,
        instance_id: Option<&str>,
        group: Option<&str>,
    ) -> Result<Self, IdError> {
        let instance_id = instance_id.unwrap_or(DEFAULT_INSTANCE_ID);
        let group = group.unwrap_or(DEFAULT_GROUP);
        validate_part("dataId", data_id)?;
        validate_part("instanceId", instance_id)?;
        validate_part("group", group)?;
        Ok(Self(
            format!("{data_id}{SEPARATOR}{instance_id}{SEPARATOR}{group}").into(),
        ))
    }

    /// Parses and validates the canonical form `dataId#@#instanceId#@#group`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let mut parts = s.split(SEPARATOR);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(i), Some(g), None) => {
                validate_part("dataId", d)?;
                validate_part("instanceId", i)?;
                validate_part("group", g)?;
                // Three valid parts: `s` is already the canonical form.
                Ok(Self(s.into()))
            }
            _ => Err(IdError::Malformed(truncate(s, 80))),
        }
    }

    /// The canonical string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn part(&self, n: usize) -> &str {
        self.0.split(SEPARATOR).nth(n).unwrap_or_default()
    }

    pub fn data_id(&self) -> &str {
        self.part(0)
    }

    pub fn instance_id(&self) -> &str {
        self.part(1)
    }

    pub fn group(&self) -> &str {
        self.part(2)
    }
}

/// Hands out one shared copy of each dataInfoId, so that the many registrations of one
/// service (its publishers, its subscriptions, its cached datum) point at one string instead
/// of holding a copy each: at a million publishers over 100,000 services a session held
/// about 50 MiB of copies.
///
/// Ids nobody else holds any more are dropped by a sweep of one shard when it has doubled
/// since its last sweep, so the work is proportional to the insertions that caused it.
pub struct IdInterner {
    shards: Box<[parking_lot::Mutex<InternShard>]>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct InternShard {
    ids: std::collections::HashSet<DataInfoId>,
    /// How many ids the shard held after its last sweep.
    live: usize,
}

/// Shards of an [`IdInterner`]: an insertion locks one, a sweep walks one.
const INTERN_SHARDS: usize = 16;
/// A shard below this size is never swept.
const INTERN_MIN_SWEEP: usize = 256;

impl Default for IdInterner {
    fn default() -> Self {
        Self {
            shards: (0..INTERN_SHARDS).map(|_| Default::default()).collect(),
            hasher: Default::default(),
        }
    }
}

impl IdInterner {
    /// The shared copy of `id` (`id` itself if it is the first).
    pub fn intern(&self, id: DataInfoId) -> DataInfoId {
        use std::hash::BuildHasher;
        let n = self.hasher.hash_one(&id) as usize % self.shards.len();
        let mut shard = self.shards[n].lock();
        if let Some(held) = shard.ids.get(&id) {
            return held.clone();
        }
        if shard.ids.len() >= 2 * shard.live.max(INTERN_MIN_SWEEP) {
            shard.ids.retain(|held| Arc::strong_count(&held.0) > 1);
            shard.live = shard.ids.len();
        }
        shard.ids.insert(id.clone());
        id
    }

    /// How many ids are held (some may be held by nobody else until the next sweep).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl TryFrom<String> for DataInfoId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<DataInfoId> for String {
    fn from(id: DataInfoId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for DataInfoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DataInfoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interner_hands_out_one_copy_and_drops_what_nobody_holds() {
        let interner = IdInterner::default();
        let first = interner.intern(DataInfoId::new("svc.a", None, None).unwrap());
        let again = interner.intern(DataInfoId::new("svc.a", None, None).unwrap());
        assert!(Arc::ptr_eq(&first.0, &again.0));
        // Ids used once and let go are swept as the shards fill, not kept for ever.
        for n in 0..100_000 {
            interner.intern(DataInfoId::new(&format!("svc.{n}"), None, None).unwrap());
        }
        assert!(
            interner.len() < 2 * INTERN_SHARDS * INTERN_MIN_SWEEP + 1,
            "{} ids held",
            interner.len()
        );
        // The one still held elsewhere survived every sweep.
        let third = interner.intern(DataInfoId::new("svc.a", None, None).unwrap());
        assert!(Arc::ptr_eq(&first.0, &third.0));
    }

    #[test]
    fn defaults_and_round_trip() {
        let id = DataInfoId::new("com.example.Echo", None, None).unwrap();
        assert_eq!(
            id.as_str(),
            "com.example.Echo#@#DEFAULT_INSTANCE_ID#@#DEFAULT_GROUP"
        );
        assert_eq!(id.data_id(), "com.example.Echo");
        assert_eq!(id.instance_id(), DEFAULT_INSTANCE_ID);
        assert_eq!(id.group(), DEFAULT_GROUP);
        let json = serde_json::to_string(&id).unwrap();
        let back: DataInfoId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn rejects_bad_parts() {
        assert_eq!(
            DataInfoId::new("", None, None),
            Err(IdError::Empty { part: "dataId" })
        );
        assert!(matches!(
            DataInfoId::new(&"x".repeat(MAX_PART_LEN + 1), None, None),
            Err(IdError::TooLong { .. })
        ));
        assert_eq!(
            DataInfoId::new("a", None, Some("g\u{7}")),
            Err(IdError::ControlChar { part: "group" })
        );
        assert_eq!(
            DataInfoId::new("a#@#b", None, None),
            Err(IdError::Separator { part: "dataId" })
        );
        assert!(DataInfoId::parse("only#@#two").is_err());
        assert!(DataInfoId::parse("a#@#b#@#c#@#d").is_err());
        assert!(serde_json::from_str::<DataInfoId>("\"a#@##@#c\"").is_err());
    }
}
