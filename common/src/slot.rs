//! Placement: dataInfoId -> slot -> (primary, replicas).
//!
//! Step one hashes a dataInfoId into one of a fixed number of slots with CRC-32C, which is
//! the same on every build, platform and Rust version. Step two, done by the meta leader,
//! assigns each slot an ordered list of distinct data servers by rendezvous (highest random
//! weight) hashing with XXH3: a join or leave only moves the slots whose top-`copies` set
//! changes, and when a primary leaves, its first replica becomes primary.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::id::DataInfoId;
use crate::member::MemberId;

pub const DEFAULT_SLOT_COUNT: u32 = 256;

/// Index of a slot in the table.
pub type SlotId = u32;

/// The slot a dataInfoId lives in.
pub fn slot_of(id: &DataInfoId, slot_count: u32) -> SlotId {
    crc32c::crc32c(id.as_str().as_bytes()) % slot_count.max(1)
}

/// Holders of one slot, best first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotAssignment {
    /// Takes writes for the slot; `None` when no data server is alive.
    pub primary: Option<MemberId>,
    /// Receive the primary's operations asynchronously.
    pub replicas: Vec<MemberId>,
}

impl SlotAssignment {
    /// Primary then replicas.
    pub fn holders(&self) -> impl Iterator<Item = &MemberId> {
        self.primary.iter().chain(self.replicas.iter())
    }

    pub fn holds(&self, id: &MemberId) -> bool {
        self.holders().any(|h| h == id)
    }
}

/// The slot table of one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotTable {
    pub slots: Vec<SlotAssignment>,
}

fn score(slot: SlotId, member: &MemberId) -> u64 {
    xxh3_64_with_seed(member.as_str().as_bytes(), u64::from(slot))
}

impl SlotTable {
    /// A table with every slot unassigned.
    pub fn empty(slot_count: u32) -> Self {
        Self {
            slots: vec![SlotAssignment::default(); slot_count as usize],
        }
    }

    /// Rendezvous placement of `slot_count` slots on `servers`, `copies` distinct holders each
    /// (fewer if there are fewer servers). Deterministic in the set of servers.
    pub fn compute(servers: &[MemberId], slot_count: u32, copies: usize) -> Self {
        let slots = (0..slot_count)
            .map(|slot| {
                let mut ranked: Vec<(u64, &MemberId)> =
                    servers.iter().map(|m| (score(slot, m), m)).collect();
                // Highest score first; ties (practically impossible) broken by id.
                ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
                ranked.dedup_by(|a, b| a.1 == b.1);
                let mut holders = ranked
                    .into_iter()
                    .take(copies.max(1))
                    .map(|(_, m)| m.clone());
                SlotAssignment {
                    primary: holders.next(),
                    replicas: holders.collect(),
                }
            })
            .collect();
        Self { slots }
    }

    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn get(&self, slot: SlotId) -> Option<&SlotAssignment> {
        self.slots.get(slot as usize)
    }

    /// The assignment of the slot `id` hashes into.
    pub fn assignment_of(&self, id: &DataInfoId) -> Option<&SlotAssignment> {
        self.get(slot_of(id, self.slot_count()))
    }

    pub fn primary_of(&self, id: &DataInfoId) -> Option<&MemberId> {
        self.assignment_of(id).and_then(|a| a.primary.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn servers(n: usize) -> Vec<MemberId> {
        (0..n)
            .map(|i| MemberId(format!("data-{i}").into()))
            .collect()
    }

    #[test]
    fn slot_hash_is_stable() {
        // Pinned values: changing the hash would split the ring in a rolling upgrade.
        let id = DataInfoId::new("com.example.Echo", None, None).unwrap();
        assert_eq!(
            slot_of(&id, 256),
            crc32c::crc32c(id.as_str().as_bytes()) % 256
        );
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn distinct_holders_and_failover_to_first_replica() {
        let all = servers(4);
        let table = SlotTable::compute(&all, 256, 2);
        for a in &table.slots {
            let holders: HashSet<_> = a.holders().collect();
            assert_eq!(holders.len(), 2);
        }
        // Removing a server promotes the first replica of each slot it was primary for.
        let gone = &all[0];
        let rest: Vec<_> = all[1..].to_vec();
        let after = SlotTable::compute(&rest, 256, 2);
        for (before, now) in table.slots.iter().zip(&after.slots) {
            if before.primary.as_ref() == Some(gone) {
                assert_eq!(now.primary.as_ref(), before.replicas.first());
            } else {
                assert_eq!(now.primary, before.primary);
            }
        }
    }

    #[test]
    fn fewer_servers_than_copies() {
        let table = SlotTable::compute(&servers(1), 8, 3);
        assert!(table
            .slots
            .iter()
            .all(|a| a.primary.is_some() && a.replicas.is_empty()));
        let table = SlotTable::compute(&[], 8, 2);
        assert!(table.slots.iter().all(|a| a.primary.is_none()));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const SLOTS: u32 = 256;

    fn ids(names: &BTreeSet<u16>) -> Vec<MemberId> {
        names
            .iter()
            .map(|n| MemberId(format!("data-{n}").into()))
            .collect()
    }

    fn changed(a: &SlotTable, b: &SlotTable) -> Vec<SlotId> {
        (0..SLOTS)
            .filter(|s| {
                let x: BTreeSet<_> = a.slots[*s as usize].holders().collect();
                let y: BTreeSet<_> = b.slots[*s as usize].holders().collect();
                x != y
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random join/leave sequences: the placement depends only on the set of servers,
        /// every slot has min(copies, servers) distinct holders, a leave moves exactly the
        /// slots the leaver held, and a join moves only slots the joiner enters, about
        /// copies/N of them.
        #[test]
        fn placement_is_deterministic_balanced_and_minimal(
            start in proptest::collection::btree_set(0u16..500, 1..8),
            steps in proptest::collection::vec((any::<bool>(), 0u16..500), 1..12),
            copies in 1usize..4,
        ) {
            let mut servers = start;
            let mut table = SlotTable::compute(&ids(&servers), SLOTS, copies);
            for (join, name) in steps {
                let before = servers.clone();
                if join { servers.insert(name); } else if servers.len() > 1 { servers.remove(&name); }
                if servers == before { continue; }
                let list = ids(&servers);
                let next = SlotTable::compute(&list, SLOTS, copies);
                // Deterministic whatever the order of the input.
                let mut reversed = list.clone();
                reversed.reverse();
                prop_assert_eq!(&next, &SlotTable::compute(&reversed, SLOTS, copies));
                let want = copies.min(servers.len());
                for a in &next.slots {
                    let distinct: BTreeSet<_> = a.holders().collect();
                    prop_assert_eq!(distinct.len(), want);
                    prop_assert!(a.primary.is_some());
                }
                let moved = changed(&table, &next);
                if join {
                    let joiner = MemberId(format!("data-{name}").into());
                    for s in &moved {
                        prop_assert!(next.slots[*s as usize].holds(&joiner), "slot {} moved without the joiner", s);
                    }
                    let n = servers.len() as f64;
                    let expected = f64::from(SLOTS) * (want as f64) / n;
                    prop_assert!((moved.len() as f64) <= expected * 1.5 + 12.0,
                        "join moved {} slots, expected about {}", moved.len(), expected);
                } else {
                    let leaver = MemberId(format!("data-{name}").into());
                    let held: Vec<SlotId> = (0..SLOTS).filter(|s| table.slots[*s as usize].holds(&leaver)).collect();
                    prop_assert_eq!(moved, held);
                }
                table = next;
            }
        }
    }
}
