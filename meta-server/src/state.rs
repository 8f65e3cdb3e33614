//! The replicated state machine of the MetaServer: members, epoch, slot table, settings,
//! and the access control list (principals, keys, permissions).
//!
//! Commands are applied in log order on every meta node, so `apply` must be deterministic:
//! it reads no clock (times come inside the command) and computes the slot table from the
//! member set alone.

use std::collections::BTreeSet;

use registry_common::acl::{AccessKey, Acl, Permissions};
use registry_common::member::{ClusterSettings, ClusterView, Member, MemberId, Role};
use registry_common::slot::SlotTable;
use serde::{Deserialize, Serialize};

/// A change to the cluster, proposed through Raft by the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "cmd",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum MetaCommand {
    /// Adds a member. A member of the same role at the same address is an earlier
    /// incarnation of the same server (the new process holds its port), so it is replaced.
    Register { member: Member, now_ms: u64 },
    /// Removes members (lease expired, connection lost, graceful leave).
    Remove { ids: Vec<MemberId>, reason: String },
    /// Marks data servers as draining: they keep serving but get no slots.
    SetDraining { ids: Vec<MemberId>, draining: bool },
    /// Replaces the cluster settings.
    UpdateSettings { settings: ClusterSettings },
    /// Turns pushes to subscribers off (the emergency switch) or on again.
    SetPushEnabled { enabled: bool },
    /// Takes a client address off (its connections are closed, its publishers withdrawn,
    /// its reconnects refused) or on again.
    SetClientOff { address: String, off: bool },
    /// Creates a principal or replaces its permissions (its keys stay).
    AclPut {
        name: String,
        permissions: Permissions,
    },
    /// Removes a principal and its keys.
    AclDelete { name: String },
    /// Gives a principal one more key (at most two).
    AclAddKey { principal: String, key: AccessKey },
    /// Revokes a key.
    AclRevokeKey { key_id: String },
    /// Installs the first admin principal, once in the cluster's life.
    AclBootstrap { name: String, key: AccessKey },
}

impl MetaCommand {
    /// Whether the command changes the ACL (its revision), not the cluster view (its epoch).
    pub fn is_acl(&self) -> bool {
        matches!(
            self,
            MetaCommand::AclPut { .. }
                | MetaCommand::AclDelete { .. }
                | MetaCommand::AclAddKey { .. }
                | MetaCommand::AclRevokeKey { .. }
                | MetaCommand::AclBootstrap { .. }
        )
    }
}

/// What applying a command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaResponse {
    /// Epoch after the command.
    pub epoch: u64,
    /// Whether the command changed anything.
    pub changed: bool,
    /// Why an ACL command changed nothing (unknown principal, key cap reached, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The state machine's data. Serialised whole into snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaState {
    pub view: ClusterView,
    /// Data servers that are being drained (excluded from placement).
    #[serde(default)]
    pub draining: BTreeSet<MemberId>,
    /// Principals, keys and permissions.
    #[serde(default)]
    pub acl: Acl,
}

impl MetaState {
    pub fn apply(&mut self, cmd: &MetaCommand) -> MetaResponse {
        if cmd.is_acl() {
            return self.apply_acl(cmd);
        }
        let changed = match cmd {
            MetaCommand::Register { member, now_ms } => self.register(member, *now_ms),
            MetaCommand::Remove { ids, .. } => {
                let mut changed = false;
                for id in ids {
                    changed |= self.view.members.remove(id).is_some();
                    self.draining.remove(id);
                }
                changed
            }
            MetaCommand::SetDraining { ids, draining } => {
                let mut changed = false;
                for id in ids {
                    let is_data = self
                        .view
                        .members
                        .get(id)
                        .is_some_and(|m| m.role == Role::Data);
                    if *draining && is_data {
                        changed |= self.draining.insert(id.clone());
                    } else if !*draining {
                        changed |= self.draining.remove(id);
                    }
                }
                changed
            }
            MetaCommand::UpdateSettings { settings } => {
                let mut settings = settings.clone();
                // The slot count is fixed for the life of a cluster.
                settings.slot_count = self.view.settings.slot_count;
                settings.copies = settings.copies.max(1);
                let changed = settings != self.view.settings;
                self.view.settings = settings;
                changed
            }
            MetaCommand::SetPushEnabled { enabled } => {
                let changed = self.view.settings.push_enabled != *enabled;
                self.view.settings.push_enabled = *enabled;
                changed
            }
            MetaCommand::SetClientOff { address, off } => {
                let list = &mut self.view.settings.client_blacklist;
                let held = list.iter().position(|a| a == address);
                match (held, off) {
                    (None, true) => {
                        list.push(address.clone());
                        true
                    }
                    (Some(i), false) => {
                        list.remove(i);
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if changed {
            self.view.epoch += 1;
            self.view.slots = self.placement();
            self.view.draining = self.draining.clone();
        }
        MetaResponse {
            epoch: self.view.epoch,
            changed,
            refused: None,
        }
    }

    fn apply_acl(&mut self, cmd: &MetaCommand) -> MetaResponse {
        let result = match cmd {
            MetaCommand::AclPut { name, permissions } => {
                self.acl.put(name, permissions.clone()).map(|_| ())
            }
            MetaCommand::AclDelete { name } => self.acl.delete(name),
            MetaCommand::AclAddKey { principal, key } => self.acl.add_key(principal, key.clone()),
            MetaCommand::AclRevokeKey { key_id } => self.acl.revoke_key(key_id),
            MetaCommand::AclBootstrap { name, key } => {
                if self.acl.bootstrapped {
                    return self.unchanged(Some("already bootstrapped".into()));
                }
                let admin = Permissions {
                    admin: true,
                    ..Permissions::default()
                };
                self.acl.bootstrapped = true;
                self.acl
                    .put(name, admin)
                    .and_then(|_| self.acl.add_key(name, key.clone()))
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                self.acl.revision += 1;
                MetaResponse {
                    epoch: self.view.epoch,
                    changed: true,
                    refused: None,
                }
            }
            Err(e) => self.unchanged(Some(e.to_string())),
        }
    }

    fn unchanged(&self, refused: Option<String>) -> MetaResponse {
        MetaResponse {
            epoch: self.view.epoch,
            changed: false,
            refused,
        }
    }

    fn register(&mut self, member: &Member, now_ms: u64) -> bool {
        if let Some(existing) = self.view.members.get(&member.id) {
            // A retried registration of the same incarnation: keep the first commit.
            let same = existing.addr == member.addr
                && existing.role == member.role
                && existing.zone == member.zone;
            if same {
                return false;
            }
        }
        let stale: Vec<MemberId> = self
            .view
            .members
            .values()
            .filter(|m| m.role == member.role && m.addr == member.addr && m.id != member.id)
            .map(|m| m.id.clone())
            .collect();
        for id in stale {
            self.view.members.remove(&id);
            self.draining.remove(&id);
        }
        let mut member = member.clone();
        member.registered_at_ms = now_ms;
        self.view.members.insert(member.id.clone(), member);
        true
    }

    /// The slot table for the current members and settings.
    fn placement(&self) -> SlotTable {
        let servers: Vec<MemberId> = self
            .view
            .members_of(Role::Data)
            .map(|m| m.id.clone())
            .filter(|id| !self.draining.contains(id))
            .collect();
        SlotTable::compute(
            &servers,
            self.view.settings.slot_count,
            self.view.settings.copies,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, role: Role, addr: &str) -> Member {
        Member {
            id: MemberId(id.into()),
            role,
            addr: addr.into(),
            zone: String::new(),
            registered_at_ms: 0,
        }
    }

    #[test]
    fn register_bumps_epoch_and_places_slots() {
        let mut s = MetaState::default();
        let r = s.apply(&MetaCommand::Register {
            member: member("d1", Role::Data, "a:1"),
            now_ms: 5,
        });
        assert_eq!(
            r,
            MetaResponse {
                epoch: 1,
                changed: true,
                refused: None,
            }
        );
        assert!(s.view.slots.slots.iter().all(|a| a.primary.is_some()));
        // Idempotent retry.
        let r = s.apply(&MetaCommand::Register {
            member: member("d1", Role::Data, "a:1"),
            now_ms: 6,
        });
        assert!(!r.changed);
        assert_eq!(s.view.members[&MemberId("d1".into())].registered_at_ms, 5);
    }

    #[test]
    fn new_incarnation_replaces_old_and_drain_excludes() {
        let mut s = MetaState::default();
        s.apply(&MetaCommand::Register {
            member: member("d1", Role::Data, "a:1"),
            now_ms: 1,
        });
        s.apply(&MetaCommand::Register {
            member: member("d2", Role::Data, "a:2"),
            now_ms: 1,
        });
        s.apply(&MetaCommand::Register {
            member: member("d1b", Role::Data, "a:1"),
            now_ms: 2,
        });
        assert_eq!(s.view.members.len(), 2);
        assert!(!s.view.members.contains_key(&MemberId("d1".into())));
        s.apply(&MetaCommand::SetDraining {
            ids: vec![MemberId("d2".into())],
            draining: true,
        });
        assert!(s
            .view
            .slots
            .slots
            .iter()
            .all(|a| a.primary == Some(MemberId("d1b".into())) && a.replicas.is_empty()));
        let epoch = s.view.epoch;
        let r = s.apply(&MetaCommand::Remove {
            ids: vec![MemberId("nope".into())],
            reason: "test".into(),
        });
        assert!(!r.changed);
        assert_eq!(s.view.epoch, epoch);
    }
}
