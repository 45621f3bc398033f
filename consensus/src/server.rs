//! The peer server: Raft RPCs, forwarded interns and resource registrations, join/leave
//! and status on the peer port.
//! Every request must carry the cluster token; anything else gets 401 and a JSON error.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::client::{lookup_many, resource_in_force};
use crate::network::{
    InternReply, InternRequest, JoinRequest, LeaveRequest, PATH_APPEND, PATH_INTERN, PATH_JOIN,
    PATH_LEAVE, PATH_RESOURCE, PATH_SNAPSHOT, PATH_STATUS, PATH_VOTE, PeerError, PeerErrorCode,
    PeerStatus, ResourceReply, ResourceRequest, TOKEN_HEADER, UnitReply,
};
use crate::node::NodeCore;
use crate::stats::Counters;
use crate::types::{NodeId, TypeConfig};

/// Largest accepted request body. Proposals are bounded by `max_proposal_strings ×
/// max_string_bytes` and Raft payloads by `max_payload_entries` entries.
const MAX_BODY_BYTES: usize = 64 << 20;

pub(crate) fn router(core: Arc<NodeCore>) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_INTERN, post(intern))
        .route(PATH_RESOURCE, post(resource))
        .route(PATH_JOIN, post(join))
        .route(PATH_LEAVE, post(leave))
        .route(PATH_STATUS, get(status))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&core),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(core)
}

/// Compares in time independent of where the first difference is.
fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    presented
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

async fn authenticate(State(core): State<Arc<NodeCore>>, request: Request, next: Next) -> Response {
    let expected = core.config.cluster_token.as_bytes();
    let authorized = !expected.is_empty()
        && request
            .headers()
            .get(TOKEN_HEADER)
            .is_some_and(|value| token_matches(value.as_bytes(), expected));
    if !authorized {
        Counters::add(&core.counters.rejected_peer_requests, 1);
        let path = request.uri().path().to_string();
        tracing::warn!(node_id = core.id, %path, "peer request rejected: missing or wrong cluster token");
        let error = PeerError::new(
            PeerErrorCode::Unauthorized,
            format!("peer request to {path} rejected: missing or wrong cluster token"),
        );
        return (StatusCode::UNAUTHORIZED, Json(Err::<(), _>(error))).into_response();
    }
    next.run(request).await
}

async fn append(
    State(core): State<Arc<NodeCore>>,
    Json(request): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(core.raft.append_entries(request).await)
}

async fn vote(
    State(core): State<Arc<NodeCore>>,
    Json(request): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(core.raft.vote(request).await)
}

async fn snapshot(
    State(core): State<Arc<NodeCore>>,
    Json(request): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(core.raft.install_snapshot(request).await)
}

fn status_of(code: PeerErrorCode) -> StatusCode {
    match code {
        PeerErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
        PeerErrorCode::Rejected => StatusCode::CONFLICT,
        PeerErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        PeerErrorCode::NotLeader | PeerErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        PeerErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn reply<T: serde::Serialize>(result: Result<T, PeerError>) -> Response {
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => status_of(e.code),
    };
    (status, Json(result)).into_response()
}

async fn intern(State(core): State<Arc<NodeCore>>, Json(request): Json<InternRequest>) -> Response {
    let result: InternReply = match core.check_intern_input(&request.strings) {
        Err(reason) => Err(PeerError::new(PeerErrorCode::InvalidInput, reason)),
        Ok(()) => intern_known_first(&core, request).await,
    };
    reply(result)
}

/// Answers what this replica already knows and proposes only the rest: with writers on
/// several nodes, many forwarded strings were interned meanwhile by someone else.
async fn intern_known_first(core: &NodeCore, request: InternRequest) -> InternReply {
    let kind = request.kind;
    let Some(view) = core.view() else {
        return Err(PeerError::new(
            PeerErrorCode::Unavailable,
            format!("node {} is shutting down", core.id),
        ));
    };
    let found = lookup_many(core, view, kind, request.strings)
        .await
        .map_err(|e| PeerError::new(PeerErrorCode::Unavailable, e.to_string()))?;
    let missing: Vec<String> = found
        .iter()
        .filter(|(_, id)| id.is_none())
        .map(|(s, _)| s.clone())
        .collect();
    if missing.is_empty() {
        return Ok(found.into_iter().filter_map(|(_, id)| id).collect());
    }
    let assigned = core
        .intern_as_leader(kind, missing, core.leader_side_timeout())
        .await?;
    let mut assigned = assigned.into_iter();
    found
        .into_iter()
        .map(|(_, id)| id.or_else(|| assigned.next()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| PeerError::new(PeerErrorCode::Internal, "fewer ids than strings"))
}

async fn resource(
    State(core): State<Arc<NodeCore>>,
    Json(version): Json<ResourceRequest>,
) -> Response {
    let result: ResourceReply = match version.check() {
        Err(reason) => Err(PeerError::new(PeerErrorCode::InvalidInput, reason)),
        Ok(()) => resource_known_first(&core, version).await,
    };
    reply(result)
}

/// Like [`intern_known_first`]: the sender's replica may lag, so a version this replica
/// already has in force costs no Raft write either.
async fn resource_known_first(core: &NodeCore, version: ResourceRequest) -> ResourceReply {
    let Some(view) = core.view() else {
        return Err(PeerError::new(
            PeerErrorCode::Unavailable,
            format!("node {} is shutting down", core.id),
        ));
    };
    if resource_in_force(core, &view, &version) {
        return Ok(false);
    }
    core.resource_as_leader(version, core.leader_side_timeout())
        .await
}

async fn join(State(core): State<Arc<NodeCore>>, Json(request): Json<JoinRequest>) -> Response {
    let result: UnitReply = core.handle_join(request).await;
    reply(result)
}

async fn leave(State(core): State<Arc<NodeCore>>, Json(request): Json<LeaveRequest>) -> Response {
    let result: UnitReply = core.handle_leave(request).await;
    reply(result)
}

async fn status(State(core): State<Arc<NodeCore>>) -> Json<PeerStatus> {
    Json(core.status())
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secreT", b"secret"));
        assert!(!token_matches(b"secret!", b"secret"));
        assert!(!token_matches(b"", b"secret"));
    }
}
