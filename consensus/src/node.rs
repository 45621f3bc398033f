//! One dictionary replica: the Raft node, its peer server and its background tasks, with a
//! start/stop lifecycle.
//!
//! Membership rule: the voters are the `max_voters` lowest ids among the group's nodes;
//! every other node is a learner. The lowest id among `peers` ∪ self initializes a group
//! that does not exist yet (after asking the peers whether one does). Every node that is
//! not in the membership asks the leader to add it as a learner (join); the leader moves
//! the voter set towards the rule once the nodes to promote have caught up. `leave`
//! removes a node. A restart recovers everything from sled.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};
use parking_lot::RwLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::client::{self, BatchRequest, DictionaryClient};
use crate::config::{ConsensusConfig, choose_voters};
use crate::error::{ConsensusError, Result};
use crate::network::{
    CallError, InternReply, InternRequest, JoinRequest, LeaderHint, LeaveRequest, NetworkFactory,
    PATH_INTERN, PATH_JOIN, PATH_LEAVE, PATH_RESOURCE, PATH_STATUS, PeerError, PeerErrorCode,
    PeerHttp, PeerStatus, ResourceReply, UnitReply,
};
use crate::stats::Counters;
use crate::store::{DictionaryView, StoreHandle, open_store_with_handle};
use crate::types::{
    DictionaryCommand, DictionaryId, DictionaryRaft, DictionaryResponse, NodeId, ResourceVersion,
    TagKind,
};

/// Learners within this many entries of the leader's last log may be promoted to voter.
const PROMOTION_LAG_ENTRIES: u64 = 100;

/// The role of a node in the group, as it sees itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Accepts proposals.
    Leader,
    /// A voter following the leader.
    Follower,
    /// A voter running for leader.
    Candidate,
    /// A read replica (or a node not yet in the group).
    Learner,
    /// Raft has stopped.
    Shutdown,
}

/// A snapshot of a node's view of the group.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// This node.
    pub node_id: NodeId,
    /// Its Raft role.
    pub role: NodeRole,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its current Raft term.
    pub term: u64,
    /// Voters of the membership it knows.
    pub voters: BTreeSet<NodeId>,
    /// Learners of the membership it knows.
    pub learners: BTreeSet<NodeId>,
    /// Index of its last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied to its dictionary.
    pub last_applied_index: Option<u64>,
}

/// State shared by the node's tasks, its peer server and its clients.
pub(crate) struct NodeCore {
    pub(crate) id: NodeId,
    pub(crate) config: ConsensusConfig,
    pub(crate) advertise: String,
    pub(crate) raft: DictionaryRaft,
    pub(crate) http: PeerHttp,
    pub(crate) counters: Counters,
    /// The local replica; `None` once the node has shut down, so that clients that outlive
    /// the node do not keep the database open.
    pub(crate) view: RwLock<Option<DictionaryView>>,
    pub(crate) cancel: CancellationToken,
    leaving: AtomicBool,
}

fn metrics_of(raft: &DictionaryRaft) -> RaftMetrics<NodeId, BasicNode> {
    raft.metrics().borrow().clone()
}

impl NodeCore {
    pub(crate) fn view(&self) -> Option<DictionaryView> {
        self.view.read().clone()
    }

    fn shutting_down(&self) -> ConsensusError {
        ConsensusError::ShuttingDown { node_id: self.id }
    }

    /// Time a leader spends on a forwarded request, so that its reply beats the sender's
    /// request timeout.
    pub(crate) fn leader_side_timeout(&self) -> Duration {
        self.config.request_timeout.mul_f64(0.75)
    }

    /// Validation shared by the client and the forwarded-intern handler. The state machine
    /// checks nothing config-dependent: replicas must apply entries identically.
    pub(crate) fn check_intern_input<S: AsRef<str>>(
        &self,
        strings: &[S],
    ) -> std::result::Result<(), String> {
        if strings.is_empty() {
            return Err("the list of strings is empty".into());
        }
        if strings.len() > self.config.max_intern_strings {
            return Err(format!(
                "{} strings exceed the limit of {} per request",
                strings.len(),
                self.config.max_intern_strings
            ));
        }
        if let Some((index, s)) = strings
            .iter()
            .enumerate()
            .find(|(_, s)| s.as_ref().len() > self.config.max_string_bytes)
        {
            return Err(format!(
                "string {index} has {} bytes, over the limit of {}",
                s.as_ref().len(),
                self.config.max_string_bytes
            ));
        }
        Ok(())
    }

    fn node_addr(&self, metrics: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> Option<String> {
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .or_else(|| self.config.region_nodes().get(&id).map(|a| a.to_string()))
    }

    /// The leader this node knows of, with its address.
    pub(crate) fn leader_hint(&self) -> Option<LeaderHint> {
        let metrics = metrics_of(&self.raft);
        let id = metrics.current_leader?;
        let addr = self.node_addr(&metrics, id)?;
        Some(LeaderHint { id, addr })
    }

    fn not_leader(&self) -> PeerError {
        PeerError {
            code: PeerErrorCode::NotLeader,
            message: format!("node {} is not the dictionary leader", self.id),
            leader: self.leader_hint().filter(|h| h.id != self.id),
        }
    }

    pub(crate) fn status(&self) -> PeerStatus {
        let metrics = metrics_of(&self.raft);
        let membership = metrics.membership_config.membership();
        PeerStatus {
            node_id: self.id,
            initialized: membership.voter_ids().next().is_some(),
            leader: metrics.current_leader,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            last_applied_index: metrics.last_applied.map(|l| l.index),
        }
    }

    /// Proposes `command` on this node, which must be the leader, waits up to `timeout`
    /// for it to be applied, and reads the reply with `expected` (which hands back a reply
    /// of the wrong variant: an internal error).
    async fn write_as_leader<T>(
        &self,
        command: DictionaryCommand,
        timeout: Duration,
        expected: fn(DictionaryResponse) -> std::result::Result<T, DictionaryResponse>,
    ) -> std::result::Result<T, PeerError> {
        let write = self.raft.client_write(command);
        let result = match tokio::time::timeout(timeout, write).await {
            Err(_) => {
                return Err(PeerError::new(
                    PeerErrorCode::Unavailable,
                    format!("proposal not committed within {timeout:?}"),
                ));
            }
            Ok(result) => result,
        };
        match result {
            Ok(response) => match response.data {
                DictionaryResponse::Rejected { reason } => {
                    Err(PeerError::new(PeerErrorCode::Rejected, reason))
                }
                data => expected(data).map_err(|other| {
                    PeerError::new(
                        PeerErrorCode::Internal,
                        format!("unexpected reply to a proposal: {other:?}"),
                    )
                }),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                let leader = match (forward.leader_id, forward.leader_node) {
                    (Some(id), Some(node)) => Some(LeaderHint {
                        id,
                        addr: node.addr,
                    }),
                    _ => None,
                };
                Err(PeerError {
                    code: PeerErrorCode::NotLeader,
                    message: format!("node {} is not the dictionary leader", self.id),
                    leader,
                })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => Err(
                PeerError::new(PeerErrorCode::Internal, format!("unexpected: {e}")),
            ),
            Err(RaftError::Fatal(fatal)) => Err(PeerError::new(
                PeerErrorCode::Unavailable,
                format!("raft on node {} stopped: {fatal}", self.id),
            )),
        }
    }

    /// Proposes `Intern` on this node, which must be the leader.
    pub(crate) async fn intern_as_leader(
        &self,
        kind: TagKind,
        strings: Vec<String>,
        timeout: Duration,
    ) -> InternReply {
        let command = DictionaryCommand::Intern { kind, strings };
        self.write_as_leader(command, timeout, DictionaryResponse::into_ids)
            .await
    }

    /// Proposes a `Resource` version on this node, which must be the leader.
    pub(crate) async fn resource_as_leader(
        &self,
        version: ResourceVersion,
        timeout: Duration,
    ) -> ResourceReply {
        let command = DictionaryCommand::Resource(version);
        self.write_as_leader(command, timeout, DictionaryResponse::into_changed)
            .await
    }

    /// Proposes `strings` through the leader, forwarding from followers and learners and
    /// retrying retryable failures until `intern_timeout`.
    pub(crate) async fn propose(
        &self,
        kind: TagKind,
        strings: Vec<String>,
    ) -> Result<Vec<DictionaryId>> {
        Counters::add(&self.counters.proposals, 1);
        Counters::add(&self.counters.proposed_strings, strings.len() as u64);
        let request = InternRequest {
            kind,
            strings: strings.clone(),
        };
        let ids = self
            .through_leader(kind, "intern", PATH_INTERN, &request, |timeout| {
                self.intern_as_leader(kind, strings.clone(), timeout)
            })
            .await?;
        if ids.len() != strings.len() {
            return Err(ConsensusError::Protocol {
                peer: "leader".into(),
                reason: format!("{} ids for {} strings", ids.len(), strings.len()),
            });
        }
        Ok(ids)
    }

    /// Proposes a resource version through the leader, like [`Self::propose`]; returns
    /// whether the resource's versions changed.
    pub(crate) async fn propose_resource(&self, version: ResourceVersion) -> Result<bool> {
        Counters::add(&self.counters.resource_proposals, 1);
        let kind = version.kind;
        self.through_leader(
            kind,
            "resource registration",
            PATH_RESOURCE,
            &version,
            |timeout| self.resource_as_leader(version.clone(), timeout),
        )
        .await
    }

    /// Runs `as_leader` when this node leads, else sends `request` to the leader's `path`
    /// (or, with no leader known, to the configured peers in turn); follows leader hints
    /// and retries retryable failures until `intern_timeout`. `kind` and `action` name the
    /// request in errors.
    async fn through_leader<Req, T, Fut>(
        &self,
        kind: TagKind,
        action: &'static str,
        path: &'static str,
        request: &Req,
        as_leader: impl Fn(Duration) -> Fut,
    ) -> Result<T>
    where
        Req: Serialize,
        T: DeserializeOwned,
        Fut: Future<Output = std::result::Result<T, PeerError>>,
    {
        let started = Instant::now();
        let deadline = started + self.config.intern_timeout;
        let mut backoff = Duration::from_millis(10);
        let mut hint: Option<LeaderHint> = None;
        let others: Vec<SocketAddr> = self
            .config
            .peers
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(_, addr)| *addr)
            .collect();
        let mut next_peer = 0usize;
        let mut last_error: Option<ConsensusError> = None;
        let mut attempt = 0u32;
        let mut redirects_in_a_row = 0u32;
        loop {
            if self.cancel.is_cancelled() {
                return Err(self.shutting_down());
            }
            if attempt > 0 {
                Counters::add(&self.counters.proposal_retries, 1);
            }
            attempt += 1;
            let target = hint.take().or_else(|| self.leader_hint());
            let outcome: std::result::Result<T, PeerError> = match target {
                Some(leader) if leader.id == self.id => {
                    // A deposed leader that has not noticed yet would wait forever.
                    let remaining = deadline
                        .saturating_duration_since(Instant::now())
                        .min(self.leader_side_timeout())
                        .max(Duration::from_millis(1));
                    as_leader(remaining).await
                }
                target => {
                    // No leader known (e.g. not yet a member): ask the configured peers in turn.
                    let addr = match target {
                        Some(leader) => Some(leader.addr),
                        None if !others.is_empty() => {
                            next_peer = (next_peer + 1) % others.len();
                            Some(others[next_peer].to_string())
                        }
                        None => None,
                    };
                    match addr {
                        None => Err(PeerError::new(
                            PeerErrorCode::Unavailable,
                            "no leader elected yet",
                        )),
                        Some(addr) => {
                            Counters::add(&self.counters.forwarded_requests, 1);
                            match self
                                .http
                                .post::<_, std::result::Result<T, PeerError>>(
                                    &addr, path, request, None,
                                )
                                .await
                            {
                                Ok(reply) => reply,
                                Err(CallError::Unauthorized) => {
                                    return Err(ConsensusError::Unauthorized { peer: addr });
                                }
                                Err(CallError::Unreachable(e)) => {
                                    last_error = Some(ConsensusError::Unreachable {
                                        peer: addr,
                                        reason: e.to_string(),
                                    });
                                    Err(PeerError::new(PeerErrorCode::Unavailable, "unreachable"))
                                }
                                Err(CallError::Protocol(reason)) => {
                                    return Err(ConsensusError::Protocol { peer: addr, reason });
                                }
                            }
                        }
                    }
                }
            };
            let error = match outcome {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            match error.code {
                PeerErrorCode::InvalidInput => {
                    return Err(ConsensusError::InvalidInput {
                        kind,
                        reason: error.message,
                    });
                }
                PeerErrorCode::Rejected => {
                    return Err(ConsensusError::Rejected {
                        kind,
                        reason: error.message,
                    });
                }
                PeerErrorCode::Unauthorized => {
                    return Err(ConsensusError::Unauthorized {
                        peer: "leader".into(),
                    });
                }
                PeerErrorCode::Internal => {
                    return Err(ConsensusError::Raft {
                        node_id: self.id,
                        action,
                        reason: error.message,
                        retryable: false,
                    });
                }
                PeerErrorCode::NotLeader | PeerErrorCode::Unavailable => {}
            }
            // Follow a leader hint at once, but not forever: views can be stale for a
            // moment during an election.
            if error.leader.is_some() {
                redirects_in_a_row += 1;
            } else {
                redirects_in_a_row = 0;
            }
            let redirected = error.leader.is_some() && redirects_in_a_row <= 3;
            hint = error.leader;
            if Instant::now() >= deadline {
                return Err(match (last_error, self.leader_hint()) {
                    (_, None) => ConsensusError::NoLeader {
                        node_id: self.id,
                        waited: started.elapsed(),
                    },
                    (Some(e @ ConsensusError::Unreachable { .. }), _) => e,
                    _ => ConsensusError::Timeout {
                        action,
                        timeout: self.config.intern_timeout,
                    },
                });
            }
            if !redirected {
                let sleep = backoff.min(deadline.saturating_duration_since(Instant::now()));
                tokio::select! {
                    _ = self.cancel.cancelled() => return Err(self.shutting_down()),
                    _ = tokio::time::sleep(sleep) => {}
                }
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }

    pub(crate) async fn handle_join(&self, request: JoinRequest) -> UnitReply {
        let metrics = metrics_of(&self.raft);
        if metrics.state != ServerState::Leader {
            return Err(self.not_leader());
        }
        if metrics
            .membership_config
            .membership()
            .get_node(&request.node_id)
            .is_some()
        {
            return Ok(());
        }
        tracing::info!(node_id = self.id, joiner = request.node_id, addr = %request.addr, "adding dictionary learner");
        let add = self
            .raft
            .add_learner(request.node_id, BasicNode::new(&request.addr), false);
        match tokio::time::timeout(self.leader_side_timeout(), add).await {
            Err(_) => Err(PeerError::new(
                PeerErrorCode::Unavailable,
                "adding the learner did not commit in time",
            )),
            Ok(result) => self.membership_reply(result.map(|_| ())),
        }
    }

    pub(crate) async fn handle_leave(&self, request: LeaveRequest) -> UnitReply {
        let metrics = metrics_of(&self.raft);
        if metrics.state != ServerState::Leader {
            return Err(self.not_leader());
        }
        let membership = metrics.membership_config.membership();
        if membership.get_node(&request.node_id).is_none() {
            return Ok(());
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&request.node_id) {
            let remaining: BTreeSet<NodeId> = voters
                .iter()
                .copied()
                .filter(|id| *id != request.node_id)
                .collect();
            if remaining.is_empty() {
                return Err(PeerError::new(
                    PeerErrorCode::InvalidInput,
                    format!(
                        "node {} is the last voter and cannot leave",
                        request.node_id
                    ),
                ));
            }
            // The reconciler promotes learners to fill the voter set once they are caught up.
            ChangeMembers::ReplaceAllVoters(remaining)
        } else {
            ChangeMembers::RemoveNodes([request.node_id].into_iter().collect())
        };
        tracing::info!(
            node_id = self.id,
            leaver = request.node_id,
            "removing dictionary node"
        );
        let change = self.raft.change_membership(change, false);
        match tokio::time::timeout(self.leader_side_timeout(), change).await {
            Err(_) => Err(PeerError::new(
                PeerErrorCode::Unavailable,
                "removing the node did not commit in time",
            )),
            Ok(result) => self.membership_reply(result.map(|_| ())),
        }
    }

    fn membership_reply(
        &self,
        result: std::result::Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
    ) -> UnitReply {
        match result {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(self.not_leader())
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                e @ ChangeMembershipError::InProgress(_),
            ))) => Err(PeerError::new(PeerErrorCode::Unavailable, e.to_string())),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(PeerError::new(PeerErrorCode::InvalidInput, e.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(PeerError::new(
                PeerErrorCode::Unavailable,
                format!("raft on node {} stopped: {fatal}", self.id),
            )),
        }
    }

    fn is_initializer(&self) -> bool {
        self.config.region_nodes().keys().next() == Some(&self.id)
    }

    /// Initializes the group with the rule's voters unless a peer reports one exists.
    async fn try_initialize(&self) {
        for (id, addr) in &self.config.peers {
            if *id == self.id {
                continue;
            }
            if let Ok(status) = self
                .http
                .get::<PeerStatus>(&addr.to_string(), PATH_STATUS)
                .await
                && status.initialized
            {
                tracing::info!(
                    node_id = self.id,
                    peer = id,
                    "dictionary group exists; joining instead of initializing"
                );
                return;
            }
        }
        let nodes = self.config.region_nodes();
        let voters: BTreeMap<NodeId, BasicNode> =
            choose_voters(nodes.keys().copied(), self.config.max_voters)
                .into_iter()
                .filter_map(|id| nodes.get(&id).map(|addr| (id, BasicNode::new(addr))))
                .collect();
        tracing::info!(node_id = self.id, voters = ?voters.keys().collect::<Vec<_>>(), "initializing dictionary group");
        match self.raft.initialize(voters).await {
            Ok(()) => {}
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(error) => {
                tracing::warn!(node_id = self.id, %error, "failed to initialize dictionary group")
            }
        }
    }

    /// Asks the leader (or, not knowing it, a peer) to add this node as a learner.
    async fn join_once(&self, redirect: &mut Option<LeaderHint>, next_peer: &mut usize) {
        let others: Vec<String> = self
            .config
            .peers
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(_, addr)| addr.to_string())
            .collect();
        let target = redirect
            .take()
            .or_else(|| self.leader_hint())
            .filter(|h| h.id != self.id)
            .map(|h| h.addr)
            .or_else(|| {
                (!others.is_empty()).then(|| {
                    *next_peer = (*next_peer + 1) % others.len();
                    others[*next_peer].clone()
                })
            });
        let Some(addr) = target else { return };
        let request = JoinRequest {
            node_id: self.id,
            addr: self.advertise.clone(),
        };
        match self
            .http
            .post::<_, UnitReply>(&addr, PATH_JOIN, &request, None)
            .await
        {
            Ok(Ok(())) => tracing::debug!(node_id = self.id, %addr, "join accepted"),
            Ok(Err(error)) => {
                tracing::debug!(node_id = self.id, %addr, message = %error.message, "join not accepted yet");
                *redirect = error.leader;
            }
            Err(CallError::Unauthorized) => {
                tracing::error!(node_id = self.id, %addr, "peer rejected our cluster token; cannot join");
            }
            Err(error) => tracing::debug!(node_id = self.id, %addr, %error, "join request failed"),
        }
    }

    /// On the leader: moves the voter set towards the rule's once the nodes to promote
    /// have caught up.
    async fn reconcile_voters(&self, metrics: &RaftMetrics<NodeId, BasicNode>) {
        let membership = metrics.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            return;
        }
        let nodes: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let desired = choose_voters(nodes, self.config.max_voters);
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if desired == voters {
            return;
        }
        let last = metrics.last_log_index.unwrap_or(0);
        let empty = BTreeMap::new();
        let replication = metrics.replication.as_ref().unwrap_or(&empty);
        let caught_up = desired.iter().all(|id| {
            voters.contains(id)
                || replication
                    .get(id)
                    .copied()
                    .flatten()
                    .is_some_and(|matched| matched.index + PROMOTION_LAG_ENTRIES >= last)
        });
        if !caught_up {
            return;
        }
        tracing::info!(node_id = self.id, from = ?voters, to = ?desired, "changing dictionary voters");
        let change = self
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(desired), true);
        match tokio::time::timeout(self.config.request_timeout * 2, change).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::debug!(node_id = self.id, %error, "voter change not done"),
            Err(_) => tracing::debug!(node_id = self.id, "voter change did not commit in time"),
        }
    }

    /// Background loop: initialize, join, promote.
    async fn run_membership(self: Arc<Self>) {
        let period = (self.config.heartbeat_interval * 2).max(Duration::from_millis(100));
        let join_every = (self.config.heartbeat_interval * 5).max(Duration::from_millis(250));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut init_checked = false;
        let mut last_join: Option<Instant> = None;
        let mut redirect = None;
        let mut next_peer = 0;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let metrics = metrics_of(&self.raft);
            let member = metrics
                .membership_config
                .membership()
                .get_node(&self.id)
                .is_some();
            if !init_checked {
                init_checked = true;
                let initialized = metrics
                    .membership_config
                    .membership()
                    .voter_ids()
                    .next()
                    .is_some();
                if !initialized && self.is_initializer() {
                    self.try_initialize().await;
                    continue;
                }
            }
            if !member
                && !self.leaving.load(Ordering::Relaxed)
                && last_join.is_none_or(|t| t.elapsed() >= join_every)
            {
                last_join = Some(Instant::now());
                self.join_once(&mut redirect, &mut next_peer).await;
            }
            if metrics.state == ServerState::Leader {
                self.reconcile_voters(&metrics).await;
            }
        }
    }
}

/// A running dictionary replica. Stop it with [`DictionaryNode::shutdown`] (or
/// [`DictionaryNode::leave`] to also leave the group); dropping it only cancels its tasks.
pub struct DictionaryNode {
    core: Arc<NodeCore>,
    client: DictionaryClient,
    tasks: TaskTracker,
    store: StoreHandle,
    local_addr: SocketAddr,
    tls: Option<crate::tls::PeerTls>,
}

impl DictionaryNode {
    /// Opens the store in `config.data_dir` (recovering log, vote and dictionary), starts
    /// Raft, the peer server on `config.listen` and the background tasks. Returns once the
    /// server listens; the group may still be electing a leader.
    /// The peer TLS this node serves and dials with, when configured: other peer clients
    /// of the node (its query fragments) use the same certificates.
    pub fn peer_tls(&self) -> Option<&crate::tls::PeerTls> {
        self.tls.as_ref()
    }

    pub async fn start(config: ConsensusConfig) -> Result<DictionaryNode> {
        Self::start_with_routes(config, Router::new()).await
    }

    /// [`DictionaryNode::start`], serving `routes` on the peer port too. They are not behind
    /// the dictionary's token check: each route authenticates its own requests (the node's
    /// peer Flight service checks the same cluster token in its gRPC metadata).
    pub async fn start_with_routes(
        config: ConsensusConfig,
        routes: Router,
    ) -> Result<DictionaryNode> {
        config.validate()?;
        let raft_config = Arc::new(config.raft_config()?);
        let data_dir = config.data_dir.clone();
        let (log_store, state_machine, view, store) =
            tokio::task::spawn_blocking(move || open_store_with_handle(&data_dir))
                .await
                .map_err(|e| ConsensusError::Raft {
                    node_id: config.node_id,
                    action: "open store",
                    reason: e.to_string(),
                    retryable: false,
                })??;
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::PeerTls::load)
            .transpose()?;
        let http = PeerHttp::new(
            config.cluster_token.clone(),
            config.request_timeout,
            tls.as_ref(),
        )
        .map_err(|e| ConsensusError::config(format!("cannot build the peer http client: {e}")))?;
        let network = NetworkFactory {
            http: http.clone(),
            retry_backoff: (config.heartbeat_interval * 2).max(Duration::from_millis(50)),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ConsensusError::Io {
                action: "bind peer listener",
                path: config.listen.to_string().into(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ConsensusError::Io {
            action: "read peer listener address",
            path: config.listen.to_string().into(),
            source,
        })?;
        let raft = DictionaryRaft::new(
            config.node_id,
            raft_config,
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ConsensusError::Raft {
            node_id: config.node_id,
            action: "start",
            reason: e.to_string(),
            retryable: false,
        })?;
        let cancel = CancellationToken::new();
        let core = Arc::new(NodeCore {
            id: config.node_id,
            advertise: config.advertise_addr().to_string(),
            config,
            raft,
            http,
            counters: Counters::default(),
            view: RwLock::new(Some(view)),
            cancel: cancel.clone(),
            leaving: AtomicBool::new(false),
        });
        let tasks = TaskTracker::new();
        let (batch_tx, batch_rx) = mpsc::channel::<BatchRequest>(1024);
        let client = DictionaryClient::new(Arc::clone(&core), batch_tx);
        let node_id = core.id;

        let router = crate::server::router(Arc::clone(&core)).merge(routes);
        let server_cancel = cancel.clone();
        let acceptor = tls.as_ref().map(crate::tls::PeerTls::acceptor);
        let refused = Arc::clone(&core.counters.tls_refused_connections);
        tasks.spawn(
            async move {
                if let Some(acceptor) = acceptor {
                    crate::tls::serve(listener, router, acceptor, server_cancel, refused).await;
                    return;
                }
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(server_cancel.cancelled_owned())
                    .await;
                if let Err(error) = served {
                    tracing::error!(%error, "dictionary peer server failed");
                }
            }
            .instrument(tracing::info_span!("dictionary-peer-server", node_id)),
        );
        tasks.spawn(
            client::run_batcher(Arc::clone(&core), batch_rx, tasks.clone())
                .instrument(tracing::info_span!("dictionary-batcher", node_id)),
        );
        tasks.spawn(
            Arc::clone(&core)
                .run_membership()
                .instrument(tracing::info_span!("dictionary-membership", node_id)),
        );
        tracing::info!(node_id, %local_addr, tls = tls.is_some(), "dictionary node started");
        Ok(DictionaryNode {
            core,
            client,
            tasks,
            store,
            local_addr,
            tls,
        })
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> NodeId {
        self.core.id
    }

    /// The address the peer server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A client of this node's dictionary service (cheap to clone, shares the cache).
    pub fn client(&self) -> DictionaryClient {
        self.client.clone()
    }

    /// The local replica, read-only.
    pub fn replica(&self) -> Result<DictionaryView> {
        self.core.view().ok_or_else(|| self.core.shutting_down())
    }

    /// The underlying openraft handle, for diagnostics.
    pub fn raft(&self) -> &DictionaryRaft {
        &self.core.raft
    }

    /// This node's current view of the group.
    pub fn status(&self) -> NodeStatus {
        let metrics = metrics_of(&self.core.raft);
        let membership = metrics.membership_config.membership();
        NodeStatus {
            node_id: self.core.id,
            role: match metrics.state {
                ServerState::Leader => NodeRole::Leader,
                ServerState::Follower => NodeRole::Follower,
                ServerState::Candidate => NodeRole::Candidate,
                ServerState::Learner => NodeRole::Learner,
                ServerState::Shutdown => NodeRole::Shutdown,
            },
            leader: metrics.current_leader,
            term: metrics.current_term,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            last_log_index: metrics.last_log_index,
            last_applied_index: metrics.last_applied.map(|l| l.index),
        }
    }

    /// Removes this node from the group (through the leader), then shuts it down.
    /// Its data directory should be discarded afterwards: restarted with the same id and
    /// data it would not know it had left.
    pub async fn leave(self) -> Result<()> {
        self.core.leaving.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let deadline = started + self.core.config.intern_timeout;
        let mut backoff = Duration::from_millis(20);
        let mut redirect: Option<LeaderHint> = None;
        let request = LeaveRequest {
            node_id: self.core.id,
        };
        loop {
            let metrics = metrics_of(&self.core.raft);
            if metrics
                .membership_config
                .membership()
                .get_node(&self.core.id)
                .is_none()
            {
                break;
            }
            let target = redirect.take().or_else(|| self.core.leader_hint());
            let reply = match target {
                None => Err(PeerError::new(PeerErrorCode::Unavailable, "no leader")),
                Some(leader) if leader.id == self.core.id => {
                    self.core
                        .handle_leave(LeaveRequest {
                            node_id: self.core.id,
                        })
                        .await
                }
                Some(leader) => match self
                    .core
                    .http
                    .post::<_, UnitReply>(&leader.addr, PATH_LEAVE, &request, None)
                    .await
                {
                    Ok(reply) => reply,
                    Err(CallError::Unauthorized) => {
                        return Err(ConsensusError::Unauthorized { peer: leader.addr });
                    }
                    Err(e) => Err(PeerError::new(PeerErrorCode::Unavailable, e.to_string())),
                },
            };
            match reply {
                // Removed; our own log may not show it (a removed node stops receiving it).
                Ok(()) => break,
                Err(e) if e.code == PeerErrorCode::InvalidInput => {
                    return Err(ConsensusError::Membership {
                        node_id: self.core.id,
                        reason: e.message,
                    });
                }
                Err(e) => redirect = e.leader,
            }
            if Instant::now() >= deadline {
                return Err(ConsensusError::Timeout {
                    action: "leave the dictionary group",
                    timeout: self.core.config.intern_timeout,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        tracing::info!(node_id = self.core.id, "left the dictionary group");
        self.shutdown().await
    }

    /// Stops the background tasks, Raft and the peer server, and closes the store. When it
    /// returns, the data directory can be opened again (in this process or another).
    pub async fn shutdown(self) -> Result<()> {
        let node_id = self.core.id;
        self.core.cancel.cancel();
        if let Err(error) = self.core.raft.shutdown().await {
            tracing::warn!(node_id, %error, "raft task ended abnormally");
        }
        self.tasks.close();
        let grace = self.core.config.request_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(node_id, "dictionary tasks did not stop in time");
        }
        self.core.view.write().take();
        // Openraft drops the log store and state machine as its tasks wind down.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.store.closed() {
            if Instant::now() >= deadline {
                return Err(ConsensusError::Timeout {
                    action: "close the dictionary store",
                    timeout: Duration::from_secs(10),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::info!(node_id, "dictionary node stopped");
        Ok(())
    }
}

impl Drop for DictionaryNode {
    fn drop(&mut self) {
        self.core.cancel.cancel();
    }
}
