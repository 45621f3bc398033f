//! Peer traffic over HTTP/JSON: the Raft RPCs (openraft's [`RaftNetwork`]), forwarded
//! interns and resource registrations, join/leave and status, all on the peer port, all carrying the cluster token.
//!
//! The token travels in clear text: TLS on the peer port is a later step (DESIGN.md §9).

use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{DictionaryId, NodeId, ResourceVersion, TagKind, TypeConfig};

/// Header that carries the cluster token on every peer request.
pub const TOKEN_HEADER: &str = "x-flowmesh-cluster-token";

pub(crate) const PATH_APPEND: &str = "/raft/append";
pub(crate) const PATH_VOTE: &str = "/raft/vote";
pub(crate) const PATH_SNAPSHOT: &str = "/raft/snapshot";
pub(crate) const PATH_INTERN: &str = "/dictionary/intern";
pub(crate) const PATH_RESOURCE: &str = "/dictionary/resource";
pub(crate) const PATH_JOIN: &str = "/cluster/join";
pub(crate) const PATH_LEAVE: &str = "/cluster/leave";
pub(crate) const PATH_STATUS: &str = "/cluster/status";

/// A forwarded intern: the strings are already validated and batched by the sender.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InternRequest {
    pub kind: TagKind,
    pub strings: Vec<String>,
}

/// A forwarded resource registration: the body is the [`ResourceVersion`] itself, checked
/// again by the leader.
pub(crate) type ResourceRequest = ResourceVersion;

/// A node asks the leader to add it as a learner.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub node_id: NodeId,
    pub addr: String,
}

/// A node asks the leader to remove it from the group.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LeaveRequest {
    pub node_id: NodeId,
}

/// A peer's view of the group, for joiners and operators.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The replying node.
    pub node_id: NodeId,
    /// Whether it belongs to an initialized group (has a membership with voters).
    pub initialized: bool,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Voters of its current membership.
    pub voters: Vec<NodeId>,
    /// Learners of its current membership.
    pub learners: Vec<NodeId>,
    /// Index of the last log entry it applied to its dictionary.
    pub last_applied_index: Option<u64>,
}

/// The leader as known by the replying peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LeaderHint {
    pub id: NodeId,
    pub addr: String,
}

/// Why a peer refused a dictionary or cluster request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PeerErrorCode {
    /// Not the leader; `leader` says who is, when known.
    NotLeader,
    /// Try again later (election, shutdown, membership change in progress).
    Unavailable,
    InvalidInput,
    Rejected,
    Unauthorized,
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PeerError {
    pub code: PeerErrorCode,
    pub message: String,
    pub leader: Option<LeaderHint>,
}

impl PeerError {
    pub(crate) fn new(code: PeerErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            leader: None,
        }
    }
}

pub(crate) type InternReply = Result<Vec<DictionaryId>, PeerError>;
/// Whether the resource's versions changed.
pub(crate) type ResourceReply = Result<bool, PeerError>;
pub(crate) type UnitReply = Result<(), PeerError>;

/// Why a peer call failed before a typed reply arrived.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Connection refused, reset, timed out: the peer may be down.
    Unreachable(reqwest::Error),
    /// The peer refused our token.
    Unauthorized,
    /// The reply was not what the protocol says.
    Protocol(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "{e}"),
            Self::Unauthorized => f.write_str("cluster token rejected"),
            Self::Protocol(reason) => f.write_str(reason),
        }
    }
}

/// The HTTP client of peer traffic; cheap to clone (one connection pool).
#[derive(Clone)]
pub(crate) struct PeerHttp {
    client: reqwest::Client,
    /// `http` or, with peer TLS, `https`.
    scheme: &'static str,
    token: String,
    timeout: Duration,
}

impl PeerHttp {
    pub(crate) fn new(
        token: String,
        timeout: Duration,
        tls: Option<&crate::tls::PeerTls>,
    ) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(tls) = tls {
            builder = builder.use_preconfigured_tls(tls.client_config());
        }
        Ok(Self {
            client: builder.build()?,
            scheme: if tls.is_some() { "https" } else { "http" },
            token,
            timeout,
        })
    }

    /// POSTs `body` as JSON to `http(s)://{addr}{path}` and decodes the JSON reply, whatever
    /// its status (errors travel as typed JSON too), except 401.
    pub(crate) async fn post<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, CallError> {
        let response = self
            .client
            .post(format!("{}://{addr}{path}", self.scheme))
            .header(TOKEN_HEADER, &self.token)
            .timeout(timeout.unwrap_or(self.timeout))
            .json(body)
            .send()
            .await
            .map_err(CallError::Unreachable)?;
        Self::decode(response).await
    }

    pub(crate) async fn get<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
    ) -> Result<Resp, CallError> {
        let response = self
            .client
            .get(format!("{}://{addr}{path}", self.scheme))
            .header(TOKEN_HEADER, &self.token)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(CallError::Unreachable)?;
        Self::decode(response).await
    }

    async fn decode<Resp: DeserializeOwned>(
        response: reqwest::Response,
    ) -> Result<Resp, CallError> {
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(CallError::Unauthorized);
        }
        let bytes = response.bytes().await.map_err(CallError::Unreachable)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Protocol(format!(
                "status {status}, undecodable body ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })
    }
}

/// Makes one [`PeerConnection`] per replication target.
pub(crate) struct NetworkFactory {
    pub(crate) http: PeerHttp,
    pub(crate) retry_backoff: Duration,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection {
            http: self.http.clone(),
            target,
            addr: node.addr.clone(),
            retry_backoff: self.retry_backoff,
        }
    }
}

/// Raft RPCs to one peer.
pub(crate) struct PeerConnection {
    http: PeerHttp,
    target: NodeId,
    addr: String,
    retry_backoff: Duration,
}

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: Result<Resp, RaftError<NodeId, E>> = self
            .http
            .post(&self.addr, path, request, Some(option.hard_ttl()))
            .await
            .map_err(|e| match e {
                CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Unauthorized => {
                    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
                        "peer {} at {} rejected our cluster token",
                        self.target, self.addr
                    ))))
                }
                CallError::Protocol(reason) => {
                    RPCError::Network(NetworkError::new(&std::io::Error::other(reason)))
                }
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(PATH_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(PATH_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(PATH_VOTE, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        // A restarted peer should be caught up quickly; unreachable peers cost one refused
        // connection per interval.
        Backoff::new(std::iter::repeat(self.retry_backoff))
    }
}
