//! The dictionary service as the rest of the node sees it: [`DictionaryClient`], and the
//! batcher that turns concurrent callers' misses into few Raft proposals.
//!
//! Encode path: cache → local replica → batched proposal through the leader. Decode and
//! lookup: cache → local replica, never the network, so any replica (a learner cut off from
//! the voters included) answers for everything it has applied.
//!
//! Resource tables: `register_resource` checks the local replica first (re-registering an
//! unchanged resource costs no Raft write), else proposes one `Resource` entry through the
//! leader; `resource_at` and `resource_versions` read the local replica only. They are not
//! cached: a resource's versions change, and the replica answers with one range read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::cache::{DecodeCache, EncodeCache, EncodeKey, EncodeQuery};
use crate::error::{ConsensusError, Result};
use crate::node::NodeCore;
use crate::stats::{Counters, DictionaryStats};
use crate::store::DictionaryView;
use crate::types::{DictionaryId, EMPTY_ID, NodeId, ResourceVersion, TagKind};

/// Proposals in flight at once per node; further misses wait and join the next batch.
const MAX_INFLIGHT_BATCHES: usize = 4;

/// Cache misses at or above this count are looked up in the replica on a blocking thread.
const BLOCKING_LOOKUP_THRESHOLD: usize = 64;

/// Strings of one caller waiting for ids.
pub(crate) struct BatchRequest {
    kind: TagKind,
    /// Distinct, non-empty strings.
    strings: Vec<String>,
    reply: oneshot::Sender<Result<Vec<DictionaryId>>>,
}

struct ClientShared {
    core: Arc<NodeCore>,
    encode: EncodeCache,
    decode: DecodeCache,
    batches: mpsc::Sender<BatchRequest>,
}

/// Interns, looks up and decodes tag strings through one node's replica. Cheap to clone;
/// all clones share the node's caches and batcher.
#[derive(Clone)]
pub struct DictionaryClient {
    shared: Arc<ClientShared>,
}

impl std::fmt::Debug for DictionaryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DictionaryClient")
            .field("node_id", &self.shared.core.id)
            .finish()
    }
}

impl DictionaryClient {
    pub(crate) fn new(core: Arc<NodeCore>, batches: mpsc::Sender<BatchRequest>) -> Self {
        let capacity = core.config.cache_capacity;
        Self {
            shared: Arc::new(ClientShared {
                core,
                encode: EncodeCache::new(capacity),
                decode: DecodeCache::new(capacity),
                batches,
            }),
        }
    }

    /// The node this client talks to.
    pub fn node_id(&self) -> NodeId {
        self.shared.core.id
    }

    /// The ids of `strings` in `kind`, in order, assigning ids to strings that have none.
    ///
    /// Served from the cache and the local replica when possible; the rest goes to the
    /// leader in one batched proposal (shared with concurrent callers), forwarded from
    /// followers and learners, retried through elections until `intern_timeout`. The empty
    /// string is always [`EMPTY_ID`]. Bad input (no strings, too many, a string too long)
    /// is refused without side effects.
    pub async fn intern<S: AsRef<str>>(
        &self,
        kind: TagKind,
        strings: &[S],
    ) -> Result<Vec<DictionaryId>> {
        let shared = &*self.shared;
        let core = &shared.core;
        core.check_intern_input(strings)
            .map_err(|reason| ConsensusError::InvalidInput { kind, reason })?;
        if core.cancel.is_cancelled() {
            return Err(ConsensusError::ShuttingDown { node_id: core.id });
        }
        let mut ids = vec![EMPTY_ID; strings.len()];
        let mut misses: Vec<usize> = Vec::new();
        for (index, string) in strings.iter().enumerate() {
            let string = string.as_ref();
            if string.is_empty() {
                continue;
            }
            match shared.encode.get(&EncodeQuery { kind, string }) {
                Some(id) => ids[index] = id,
                None => misses.push(index),
            }
        }
        let hits = strings.len() - misses.len();
        Counters::add(&core.counters.cache_hits, hits as u64);
        if misses.is_empty() {
            return Ok(ids);
        }
        Counters::add(&core.counters.cache_misses, misses.len() as u64);

        // The local replica knows every string committed and applied here.
        let view = core
            .view()
            .ok_or(ConsensusError::ShuttingDown { node_id: core.id })?;
        let missed: Vec<String> = misses
            .iter()
            .map(|&i| strings[i].as_ref().to_string())
            .collect();
        let found = lookup_many(core, view, kind, missed).await?;
        let mut pending: Vec<String> = Vec::new();
        let mut pending_positions: HashMap<String, Vec<usize>> = HashMap::new();
        for (&index, (string, id)) in misses.iter().zip(found) {
            match id {
                Some(id) => {
                    Counters::add(&core.counters.replica_hits, 1);
                    ids[index] = id;
                    self.remember(kind, string, id);
                }
                None => {
                    let positions = pending_positions.entry(string.clone()).or_default();
                    if positions.is_empty() {
                        pending.push(string);
                    }
                    positions.push(index);
                }
            }
        }
        if pending.is_empty() {
            return Ok(ids);
        }

        let (reply, receiver) = oneshot::channel();
        let request = BatchRequest {
            kind,
            strings: pending.clone(),
            reply,
        };
        shared
            .batches
            .send(request)
            .await
            .map_err(|_| ConsensusError::ShuttingDown { node_id: core.id })?;
        let assigned = receiver
            .await
            .map_err(|_| ConsensusError::ShuttingDown { node_id: core.id })??;
        for (string, id) in pending.into_iter().zip(assigned) {
            for &index in pending_positions.get(&string).into_iter().flatten() {
                ids[index] = id;
            }
            self.remember(kind, string, id);
        }
        Ok(ids)
    }

    fn remember(&self, kind: TagKind, string: String, id: DictionaryId) {
        let string: Box<str> = string.into_boxed_str();
        self.shared.decode.insert((kind, id), Arc::from(&*string));
        self.shared.encode.insert(EncodeKey { kind, string }, id);
    }

    /// The id of `string` in `kind` if this replica has it. Local only: no proposal, no
    /// network. `None` means "not known here"; replica read failures are logged, counted
    /// (`replica_errors`) and reported as `None`.
    pub fn lookup(&self, kind: TagKind, string: &str) -> Option<DictionaryId> {
        if string.is_empty() {
            return Some(EMPTY_ID);
        }
        let shared = &*self.shared;
        let counters = &shared.core.counters;
        if let Some(id) = shared.encode.get(&EncodeQuery { kind, string }) {
            Counters::add(&counters.cache_hits, 1);
            return Some(id);
        }
        Counters::add(&counters.cache_misses, 1);
        match shared.core.view()?.lookup(kind, string) {
            Ok(Some(id)) => {
                Counters::add(&counters.replica_hits, 1);
                self.remember(kind, string.to_string(), id);
                Some(id)
            }
            Ok(None) => None,
            Err(error) => {
                Counters::add(&counters.replica_errors, 1);
                tracing::warn!(%error, %kind, "dictionary replica lookup failed");
                None
            }
        }
    }

    /// The string of `id` in `kind` if this replica has it. Local only, like
    /// [`Self::lookup`]; [`EMPTY_ID`] decodes to `""`.
    pub fn decode(&self, kind: TagKind, id: DictionaryId) -> Option<String> {
        if id == EMPTY_ID {
            return Some(String::new());
        }
        let shared = &*self.shared;
        let counters = &shared.core.counters;
        if let Some(string) = shared.decode.get(&(kind, id)) {
            Counters::add(&counters.cache_hits, 1);
            return Some(string.to_string());
        }
        Counters::add(&counters.cache_misses, 1);
        match shared.core.view()?.decode(kind, id) {
            Ok(Some(string)) => {
                Counters::add(&counters.replica_hits, 1);
                self.remember(kind, string.clone(), id);
                Some(string)
            }
            Ok(None) => None,
            Err(error) => {
                Counters::add(&counters.replica_errors, 1);
                tracing::warn!(%error, %kind, id, "dictionary replica decode failed");
                None
            }
        }
    }

    /// Records that resource (kind, id) has `attrs` from `valid_from_us` on (a row of the
    /// resource tables, DESIGN.md §5).
    ///
    /// Returns `Ok(false)` without proposing when the local replica's version in force at
    /// `valid_from_us` (see [`Self::resource_at`]) already has exactly these attrs: the
    /// common case, re-registering an unchanged resource, costs no Raft write. Otherwise
    /// proposes one entry through the leader (forwarded from followers and learners like
    /// [`Self::intern`], retried through elections until `intern_timeout`) and returns
    /// whether the replicated versions changed — `true` unless a lagging local replica made
    /// an unneeded proposal that the leader or the state machine found already in force.
    /// A version at the same (kind, id, valid_from_us) is replaced.
    ///
    /// Bad input (resource id [`EMPTY_ID`], more than [`crate::MAX_RESOURCE_ATTRS`]
    /// attrs) is refused with [`ConsensusError::InvalidInput`]; a version naming an id the
    /// dictionary does not hold is refused by every replica alike with
    /// [`ConsensusError::Rejected`]. Intern the strings first.
    pub async fn register_resource(&self, version: ResourceVersion) -> Result<bool> {
        let core = &self.shared.core;
        version
            .check()
            .map_err(|reason| ConsensusError::InvalidInput {
                kind: version.kind,
                reason,
            })?;
        if core.cancel.is_cancelled() {
            return Err(ConsensusError::ShuttingDown { node_id: core.id });
        }
        let view = core
            .view()
            .ok_or(ConsensusError::ShuttingDown { node_id: core.id })?;
        if resource_in_force(core, &view, &version) {
            return Ok(false);
        }
        core.propose_resource(version).await
    }

    /// The attrs of resource (kind, id) in force at `time_us`: those of the version with
    /// the greatest `valid_from_us` ≤ `time_us`, or for times before the first version, of
    /// the first version (old rows still get the tags first seen). `None` if the resource
    /// is unknown here. Local only, like [`Self::lookup`]: replica read failures are
    /// logged, counted (`replica_errors`) and reported as `None`.
    pub fn resource_at(
        &self,
        kind: TagKind,
        id: DictionaryId,
        time_us: i64,
    ) -> Option<BTreeMap<TagKind, DictionaryId>> {
        let core = &self.shared.core;
        replica_resource_at(core, &core.view()?, kind, id, time_us)
    }

    /// Every version of resource (kind, id) in the local replica, in time order. Local
    /// only: what the query side derives a row's tags from.
    pub fn resource_history(
        &self,
        kind: TagKind,
        id: DictionaryId,
    ) -> Result<Vec<ResourceVersion>> {
        let core = &self.shared.core;
        core.view()
            .ok_or(ConsensusError::ShuttingDown { node_id: core.id })?
            .resource_history(kind, id)
    }

    /// Every version of every resource of `kind` in the local replica, ordered by
    /// (id, valid_from_us). Local only; it reads all of the kind's versions.
    pub fn resource_versions(&self, kind: TagKind) -> Result<Vec<ResourceVersion>> {
        let core = &self.shared.core;
        core.view()
            .ok_or(ConsensusError::ShuttingDown { node_id: core.id })?
            .resource_versions(kind)
    }

    /// The local replica's whole mapping, read from both sides: (kind, id, string) from
    /// the id side and (kind, string, id) from the string side. It reads everything (for
    /// `system.dictionary` and consistency checks); the two scans are not one snapshot, so
    /// entries applied meanwhile may show on one side only.
    #[allow(clippy::type_complexity)]
    pub fn replica_entries(
        &self,
    ) -> Result<(
        Vec<(TagKind, DictionaryId, String)>,
        Vec<(TagKind, String, DictionaryId)>,
    )> {
        let core = &self.shared.core;
        let view = core
            .view()
            .ok_or(ConsensusError::ShuttingDown { node_id: core.id })?;
        Ok((view.entries()?, view.forward_entries()?))
    }

    /// The node's dictionary counters.
    pub fn stats(&self) -> DictionaryStats {
        self.shared.core.counters.snapshot()
    }
}

/// Whether the replica already has `version`'s attrs in force at its start, so that
/// proposing it would change nothing. A replica read failure counts as "no": the state
/// machine decides then.
pub(crate) fn resource_in_force(
    core: &NodeCore,
    view: &DictionaryView,
    version: &ResourceVersion,
) -> bool {
    replica_resource_at(core, view, version.kind, version.id, version.valid_from_us)
        .is_some_and(|attrs| attrs == version.attrs)
}

/// [`DictionaryView::resource_at`], with read failures logged, counted and read as `None`.
fn replica_resource_at(
    core: &NodeCore,
    view: &DictionaryView,
    kind: TagKind,
    id: DictionaryId,
    time_us: i64,
) -> Option<BTreeMap<TagKind, DictionaryId>> {
    view.resource_at(kind, id, time_us).unwrap_or_else(|error| {
        Counters::add(&core.counters.replica_errors, 1);
        tracing::warn!(%error, %kind, id, "dictionary replica resource read failed");
        None
    })
}

/// Looks `strings` up in the replica; returns each with its id if known. Replica errors
/// count as unknown: the proposal that follows is idempotent.
pub(crate) async fn lookup_many(
    core: &NodeCore,
    view: DictionaryView,
    kind: TagKind,
    strings: Vec<String>,
) -> Result<Vec<(String, Option<DictionaryId>)>> {
    let lookup = move |view: DictionaryView, strings: Vec<String>| {
        let mut errors = 0u64;
        let found: Vec<(String, Option<DictionaryId>)> = strings
            .into_iter()
            .map(|s| {
                let id = view.lookup(kind, &s).unwrap_or_else(|error| {
                    errors += 1;
                    tracing::warn!(%error, %kind, "dictionary replica lookup failed");
                    None
                });
                (s, id)
            })
            .collect();
        (found, errors)
    };
    let (found, errors) = if strings.len() >= BLOCKING_LOOKUP_THRESHOLD {
        tokio::task::spawn_blocking(move || lookup(view, strings))
            .await
            .map_err(|e| ConsensusError::Raft {
                node_id: core.id,
                action: "look up the replica",
                reason: e.to_string(),
                retryable: true,
            })?
    } else {
        lookup(view, strings)
    };
    Counters::add(&core.counters.replica_errors, errors);
    Ok(found)
}

/// Collects concurrent callers' misses into batches and proposes them, with up to
/// [`MAX_INFLIGHT_BATCHES`] proposals in flight; while they are, new misses queue up and
/// form the next, larger batch.
pub(crate) async fn run_batcher(
    core: Arc<NodeCore>,
    mut requests: mpsc::Receiver<BatchRequest>,
    tasks: TaskTracker,
) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_BATCHES));
    loop {
        let permit = tokio::select! {
            _ = core.cancel.cancelled() => break,
            permit = Arc::clone(&inflight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let first = tokio::select! {
            _ = core.cancel.cancelled() => break,
            request = requests.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let mut total = first.strings.len();
        let mut batch = vec![first];
        while total < core.config.max_proposal_strings {
            match requests.try_recv() {
                Ok(request) => {
                    total += request.strings.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let core = Arc::clone(&core);
        tasks.spawn(async move {
            let _permit = permit;
            propose_batch(&core, batch).await;
        });
    }
    requests.close();
    while let Ok(request) = requests.try_recv() {
        let _ = request
            .reply
            .send(Err(ConsensusError::ShuttingDown { node_id: core.id }));
    }
}

async fn propose_batch(core: &NodeCore, batch: Vec<BatchRequest>) {
    // Distinct strings per kind, in arrival order.
    let mut groups: BTreeMap<TagKind, Vec<String>> = BTreeMap::new();
    let mut seen: HashSet<(TagKind, &str)> = HashSet::new();
    for request in &batch {
        for string in &request.strings {
            if seen.insert((request.kind, string.as_str())) {
                groups.entry(request.kind).or_default().push(string.clone());
            }
        }
    }
    let max = core.config.max_proposal_strings;
    let proposals = groups.into_iter().flat_map(|(kind, strings)| {
        strings
            .chunks(max)
            .map(|chunk| (kind, chunk.to_vec()))
            .collect::<Vec<_>>()
    });
    let results = futures::future::join_all(proposals.map(|(kind, strings)| async move {
        let result = core.propose(kind, strings.clone()).await;
        (kind, strings, result)
    }))
    .await;
    let mut assigned: HashMap<(TagKind, String), DictionaryId> = HashMap::new();
    let mut failures: HashMap<TagKind, ConsensusError> = HashMap::new();
    for (kind, strings, result) in results {
        match result {
            Ok(ids) => assigned.extend(strings.into_iter().map(|s| (kind, s)).zip(ids)),
            Err(error) => {
                tracing::debug!(%kind, %error, "dictionary proposal failed");
                failures.entry(kind).or_insert(error);
            }
        }
    }
    for request in batch {
        let kind = request.kind;
        let reply: Result<Vec<DictionaryId>> = request
            .strings
            .iter()
            .map(|s| {
                assigned.get(&(kind, s.clone())).copied().ok_or_else(|| {
                    failures.get(&kind).map_or_else(
                        || ConsensusError::Raft {
                            node_id: core.id,
                            action: "intern",
                            reason: format!("no id came back for a {kind} string"),
                            retryable: true,
                        },
                        ConsensusError::duplicate,
                    )
                })
            })
            .collect();
        // The caller may have given up; nothing to do then.
        let _ = request.reply.send(reply);
    }
}
