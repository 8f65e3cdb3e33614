//! Every decoder of bytes a meta node reads from disk or from a peer, by name, with a valid
//! sample of each: what the decoder robustness tests mutate (`integration::fuzz`).

use openraft::entry::RaftEntry;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use serde::de::DeserializeOwned;

use super::network::SnapshotRequest;
use super::types::{Entry, MetaRequest, TypeConfig, Vote};
use crate::state::{MetaCommand, MetaState};

fn check<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
    super::store::decode::<T>(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Decodes `bytes` as the named kind; `None` for an unknown name.
pub fn decode(name: &str, bytes: &[u8]) -> Option<Result<(), String>> {
    Some(match name {
        "raft_log_entry" => check::<Entry>(bytes),
        "raft_vote" => check::<Vote>(bytes),
        "raft_snapshot_state" => check::<MetaState>(bytes),
        "raft_snapshot_request" => check::<SnapshotRequest>(bytes),
        "raft_append_request" => check::<AppendEntriesRequest<TypeConfig>>(bytes),
        "raft_vote_request" => check::<VoteRequest<TypeConfig>>(bytes),
        "meta_request" => check::<MetaRequest>(bytes),
        _ => return None,
    })
}

/// A valid encoding of each kind [`decode`] knows.
pub fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let log_id = openraft::testing::log_id::<TypeConfig>(3, 1, 42);
    let request = MetaRequest {
        cmd: MetaCommand::Register {
            member: registry_common::member::Member {
                id: registry_common::member::MemberId("data-127.0.0.1:9620-abe9d023ff66".into()),
                role: registry_common::member::Role::Data,
                addr: "127.0.0.1:9620".into(),
                zone: "default".into(),
                registered_at_ms: 1_763_870_000_000,
            },
            now_ms: 1_763_870_000_000,
        },
        expect_epoch: Some(9),
    };
    let entry = Entry::new_normal(log_id, request.clone());
    let vote = Vote::new(3, 1);
    let state = MetaState::default();
    let json = |v: serde_json::Result<Vec<u8>>| v.unwrap_or_default();
    let snapshot = serde_json::json!({
        "vote": serde_json::to_value(vote).unwrap_or_default(),
        "meta": {"last_log_id": serde_json::to_value(log_id).unwrap_or_default(),
                 "last_membership": {"log_id": null, "membership": {"configs": [[1, 2, 3]], "nodes": {"1": {"addr": "127.0.0.1:9610"}, "2": {"addr": "127.0.0.1:9611"}, "3": {"addr": "127.0.0.1:9612"}}}},
                 "snapshot_id": "3-42"},
        "data": serde_json::to_value(&state).unwrap_or_default(),
    });
    let append = serde_json::json!({
        "vote": serde_json::to_value(vote).unwrap_or_default(),
        "prev_log_id": serde_json::to_value(log_id).unwrap_or_default(),
        "entries": [serde_json::to_value(&entry).unwrap_or_default()],
        "leader_commit": serde_json::to_value(log_id).unwrap_or_default(),
    });
    let vote_req = serde_json::json!({
        "vote": serde_json::to_value(vote).unwrap_or_default(),
        "last_log_id": serde_json::to_value(log_id).unwrap_or_default(),
    });
    vec![
        ("raft_log_entry", json(serde_json::to_vec(&entry))),
        ("raft_vote", json(serde_json::to_vec(&vote))),
        ("raft_snapshot_state", json(serde_json::to_vec(&state))),
        ("raft_snapshot_request", json(serde_json::to_vec(&snapshot))),
        ("raft_append_request", json(serde_json::to_vec(&append))),
        ("raft_vote_request", json(serde_json::to_vec(&vote_req))),
        ("meta_request", json(serde_json::to_vec(&request))),
    ]
}
