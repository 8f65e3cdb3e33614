//! The server side of the meta nodes' Raft RPCs: an axum `Router` with one `POST /raft/...`
//! route per openraft RPC (paths in [`crate::raft::network`]), JSON in and out.
//!
//! Handlers parse the body themselves so that a malformed one gets a typed [`ApiError`]
//! (`malformed`, HTTP 400) instead of axum's plain-text rejection; a stopped Raft answers
//! `unavailable` (503), which the client side reads as "peer unreachable"; any other failure
//! of our own is `internal` (500). Nothing here panics on input.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use registry_common::error::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft::error::RaftError;
use crate::raft::network::{
    SnapshotRequest, PATH_APPEND, PATH_PRE_VOTE, PATH_SNAPSHOT, PATH_TRANSFER_LEADER, PATH_VOTE,
};
use crate::raft::types::{Raft, Snapshot, TypeConfig};

/// The largest RPC body accepted (a snapshot carries the whole state in one message).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The router with every Raft RPC endpoint of `raft`.
pub(crate) fn router(raft: Raft) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_PRE_VOTE, post(pre_vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_TRANSFER_LEADER, post(transfer_leader))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(raft)
}

/// An error answer: the status of its code and an [`ApiError`] body.
struct ErrorReply(ApiError);

impl IntoResponse for ErrorReply {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

impl From<RaftError> for ErrorReply {
    fn from(e: RaftError) -> Self {
        if matches!(e.code(), ErrorCode::Internal) {
            tracing::error!("raft rpc failed: {e}");
        }
        ErrorReply(ApiError::new(e.code(), e.to_string()))
    }
}

impl From<openraft::errors::Fatal<TypeConfig>> for ErrorReply {
    fn from(f: openraft::errors::Fatal<TypeConfig>) -> Self {
        RaftError::from(f).into()
    }
}

impl From<openraft::errors::RaftError<TypeConfig>> for ErrorReply {
    fn from(e: openraft::errors::RaftError<TypeConfig>) -> Self {
        RaftError::from(e).into()
    }
}

/// Decodes a JSON body, or answers `malformed`.
fn parse<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ErrorReply> {
    serde_json::from_slice(body).map_err(|e| {
        tracing::warn!("malformed {what} request: {e}");
        ErrorReply(ApiError::new(
            ErrorCode::Malformed,
            format!("malformed {what} request: {e}"),
        ))
    })
}

fn ok<T: Serialize>(value: T) -> Response {
    Json(value).into_response()
}

async fn append(State(raft): State<Raft>, body: Bytes) -> Result<Response, ErrorReply> {
    let req: AppendEntriesRequest<TypeConfig> = parse(&body, "append-entries")?;
    Ok(ok(raft.append_entries(req).await?))
}

async fn vote(State(raft): State<Raft>, body: Bytes) -> Result<Response, ErrorReply> {
    let req: VoteRequest<TypeConfig> = parse(&body, "vote")?;
    Ok(ok(raft.vote(req).await?))
}

async fn pre_vote(State(raft): State<Raft>, body: Bytes) -> Result<Response, ErrorReply> {
    let req: VoteRequest<TypeConfig> = parse(&body, "pre-vote")?;
    Ok(ok(raft.pre_vote(req).await?))
}

async fn snapshot(State(raft): State<Raft>, body: Bytes) -> Result<Response, ErrorReply> {
    let req: SnapshotRequest = parse(&body, "snapshot")?;
    let snapshot = Snapshot {
        meta: req.meta,
        snapshot: req.data,
    };
    Ok(ok(raft.install_full_snapshot(req.vote, snapshot).await?))
}

async fn transfer_leader(State(raft): State<Raft>, body: Bytes) -> Result<Response, ErrorReply> {
    let req: TransferLeaderRequest<TypeConfig> = parse(&body, "transfer-leader")?;
    Ok(ok(raft.handle_transfer_leader(req).await?))
}
