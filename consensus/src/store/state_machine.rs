//! The dictionary state machine on sled (openraft's [`RaftStateMachine`]) and its snapshots.
//!
//! Applying `Intern { kind, strings }` gives each string without an id the next free id of
//! its kind, in log order; ids of a kind are therefore dense (`1..next`) and identical on
//! every replica. Nothing config-dependent is checked here (configured limits live in the
//! client; the only limits here are constants), so every replica applies every entry the
//! same way.
//!
//! One apply call is one atomic sled batch, which carries the new entries together with the
//! last applied log id: after a crash the dictionary and `applied` agree, and openraft
//! re-applies the committed entries after `applied` from the log. The state machine is not
//! fsynced on its own: the next log flush (same database) makes it durable, and building a
//! snapshot flushes it before openraft may purge the log entries behind that snapshot.
//!
//! Applying `Resource(version)` records a resource's attrs from `valid_from_us` on (the
//! resource tables). Every replica decides the same way, from the entry and the replicated
//! state alone: refused if the version breaks [`ResourceVersion`]'s fixed limits or names an
//! id the dictionary does not hold (ids are dense, so "held" is `id < next`); a no-op when
//! the version in force at `valid_from_us` (the latest at or before it, else the first)
//! already has these attrs; otherwise stored, replacing a version at the same time. A
//! resource's versions are kept canonical — no two consecutive versions with the same
//! attrs — so a stored version that became redundant (the next one, or the replaced one
//! when it now repeats its predecessor) is removed. This changes no answer of "the attrs in
//! force at t", and keeps a resource's history as long as its real changes.
//!
//! A snapshot is the whole dictionary: per kind, its strings in id order, and every resource
//! version. Because the dictionary only grows and ids are dense, a builder only needs the
//! per-kind `next` ids at the moment it is created; it scans `1..next` later without
//! blocking `apply`. Resource versions change in place, so the builder copies them when it is
//! created, while `apply` waits: one prefix scan of small records.

// `StorageError` is openraft's type, fixed by the storage traits; boxing it is not an option.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{Cursor, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::dictionary_view::scan_resources;
use super::{StoreInner, keys};
use crate::error::{ConsensusError, Result};
use crate::types::{
    DictionaryCommand, DictionaryId, DictionaryResponse, EMPTY_ID, NodeId, ResourceVersion,
    TagKind, TypeConfig,
};

type Entry = openraft::Entry<TypeConfig>;
type StoreResult<T> = std::result::Result<T, StorageError<NodeId>>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

const SNAPSHOT_MAGIC: &[u8; 8] = b"FMDSNAP1";
const SNAPSHOT_FORMAT: u32 = 1;

/// What the state machine has applied, kept in memory beside sled.
#[derive(Debug, Clone, Default)]
struct AppliedState {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// The next free id per kind; a kind with no entry starts at 1. Kept as u64 so that
    /// assigning `u32::MAX` does not overflow.
    next_ids: BTreeMap<TagKind, u64>,
}

/// The state machine half of the store.
pub struct StateMachine {
    inner: Arc<StoreInner>,
    state: AppliedState,
    snapshots: Arc<SnapshotFile>,
}

/// Builds a snapshot of the dictionary as it was when the builder was made.
pub struct SnapshotBuilder {
    inner: Arc<StoreInner>,
    state: AppliedState,
    snapshots: Arc<SnapshotFile>,
    /// Every resource version when the builder was made (or why reading them failed).
    resources: std::result::Result<Arc<Vec<ResourceVersion>>, String>,
}

/// The snapshot payload: every kind's strings in id order (`strings[i]` has id `i + 1`),
/// and every resource version in key order.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotPayload<'a> {
    format: u32,
    kinds: Vec<KindStrings>,
    /// Absent from snapshots written before resource tables existed.
    #[serde(default)]
    resources: Cow<'a, [ResourceVersion]>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KindStrings {
    kind: TagKind,
    strings: Vec<String>,
}

fn sm_write_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write_state_machine(AnyError::error(e)).into()
}

fn sm_read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::read_state_machine(AnyError::error(e)).into()
}

fn snapshot_err(meta: Option<&Meta>, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write_snapshot(meta.map(Meta::signature), AnyError::error(e)).into()
}

impl StateMachine {
    pub(crate) fn open(inner: Arc<StoreInner>) -> Result<Self> {
        let tree = &inner.dictionary;
        let corrupt = |key: &str, reason: String| ConsensusError::Corrupt {
            key: key.to_string(),
            reason,
        };
        let read = |key: &[u8]| {
            tree.get(key)
                .map_err(|e| ConsensusError::store("read state machine meta", e))
        };
        let mut state = AppliedState::default();
        if let Some(bytes) = read(keys::APPLIED)? {
            state.applied =
                serde_json::from_slice(&bytes).map_err(|e| corrupt("m:applied", e.to_string()))?;
        }
        if let Some(bytes) = read(keys::MEMBERSHIP)? {
            state.membership = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt("m:membership", e.to_string()))?;
        }
        for item in tree.scan_prefix([keys::NEXT]) {
            let (key, value) = item.map_err(|e| ConsensusError::store("scan next ids", e))?;
            let kind = keys::kind_of_next(&key)
                .ok_or_else(|| corrupt("next", format!("malformed key {key:?}")))?;
            let next = <[u8; 8]>::try_from(value.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt("next", format!("value of {kind} is not 8 bytes")))?;
            state.next_ids.insert(kind, next);
        }
        let snapshots = Arc::new(SnapshotFile::open(inner.snapshot_path.clone())?);
        Ok(Self {
            inner,
            state,
            snapshots,
        })
    }
}

/// Applies `entries` in order as one sled batch; returns the new state and one reply per
/// entry. Runs on a blocking thread: a large batch reads one key per string.
fn apply_blocking(
    inner: &StoreInner,
    mut state: AppliedState,
    entries: Vec<Entry>,
) -> StoreResult<(AppliedState, Vec<DictionaryResponse>)> {
    let mut batch = sled::Batch::default();
    // Ids assigned by earlier entries of this call, not yet in sled.
    let mut assigned: HashMap<(TagKind, String), DictionaryId> = HashMap::new();
    // Resources changed by earlier entries of this call, not yet in sled.
    let mut resources = TouchedResources::default();
    let mut touched_kinds = HashSet::new();
    let mut replies = Vec::with_capacity(entries.len());
    for entry in entries {
        state.applied = Some(entry.log_id);
        let reply = match entry.payload {
            EntryPayload::Blank => DictionaryResponse::Empty,
            EntryPayload::Membership(membership) => {
                state.membership = StoredMembership::new(Some(entry.log_id), membership);
                DictionaryResponse::Empty
            }
            EntryPayload::Normal(DictionaryCommand::Intern { kind, strings }) => {
                let next = state.next_ids.entry(kind).or_insert(1);
                let reply = intern(inner, kind, strings, next, &mut assigned, &mut batch)?;
                touched_kinds.insert(kind);
                reply
            }
            EntryPayload::Normal(DictionaryCommand::Resource(version)) => {
                apply_resource(inner, &state, &mut resources, version)?
            }
        };
        replies.push(reply);
    }
    for kind in touched_kinds {
        let next = state.next_ids.get(&kind).copied().unwrap_or(1);
        batch.insert(&keys::next(kind), &next.to_be_bytes());
    }
    resources.write_to(&mut batch);
    batch.insert(
        keys::APPLIED,
        serde_json::to_vec(&state.applied).map_err(sm_write_err)?,
    );
    batch.insert(
        keys::MEMBERSHIP,
        serde_json::to_vec(&state.membership).map_err(sm_write_err)?,
    );
    inner.dictionary.apply_batch(batch).map_err(sm_write_err)?;
    Ok((state, replies))
}

fn intern(
    inner: &StoreInner,
    kind: TagKind,
    strings: Vec<String>,
    next: &mut u64,
    assigned: &mut HashMap<(TagKind, String), DictionaryId>,
    batch: &mut sled::Batch,
) -> StoreResult<DictionaryResponse> {
    // Pass 1: resolve known strings and count the distinct new ones, so that a request
    // that does not fit in the id space is rejected whole, identically on every replica.
    let mut ids: Vec<Option<DictionaryId>> = Vec::with_capacity(strings.len());
    let mut new_strings: HashSet<&str> = HashSet::new();
    for string in &strings {
        let id = if string.is_empty() {
            Some(EMPTY_ID)
        } else if let Some(id) = assigned.get(&(kind, string.clone())) {
            Some(*id)
        } else {
            match inner
                .dictionary
                .get(keys::forward(kind, string))
                .map_err(sm_read_err)?
            {
                Some(value) => Some(keys::decode_id(&value).ok_or_else(|| {
                    sm_read_err(format!("forward entry of {kind}/{string} is not 4 bytes"))
                })?),
                None => {
                    new_strings.insert(string);
                    None
                }
            }
        };
        ids.push(id);
    }
    let fresh = new_strings.len() as u64;
    if fresh > 0 && *next + fresh - 1 > u64::from(DictionaryId::MAX) {
        return Ok(DictionaryResponse::Rejected {
            reason: format!("id space is full: {fresh} new strings, next id {}", *next),
        });
    }
    // Pass 2: assign ids in request order.
    let mut out = Vec::with_capacity(strings.len());
    for (string, id) in strings.into_iter().zip(ids) {
        let id = match id {
            Some(id) => id,
            None => {
                if let Some(id) = assigned.get(&(kind, string.clone())) {
                    *id
                } else {
                    // Checked above: `next` stays within the id space.
                    let id = DictionaryId::try_from(*next).map_err(sm_write_err)?;
                    *next += 1;
                    batch.insert(keys::forward(kind, &string), &id.to_be_bytes());
                    batch.insert(&keys::reverse(kind, id), string.as_bytes());
                    assigned.insert((kind, string), id);
                    id
                }
            }
        };
        out.push(id);
    }
    Ok(DictionaryResponse::Ids { ids: out })
}

/// The versions of the resources that one apply call touches: each read from sled at its
/// first touch, changed in memory by this call's entries, written to the batch at the end.
#[derive(Default)]
struct TouchedResources {
    histories: HashMap<(TagKind, DictionaryId), ResourceHistory>,
}

/// One resource's versions by `valid_from_us`, and which of them changed.
#[derive(Default)]
struct ResourceHistory {
    versions: BTreeMap<i64, BTreeMap<TagKind, DictionaryId>>,
    changed: BTreeSet<i64>,
}

impl TouchedResources {
    fn history(
        &mut self,
        inner: &StoreInner,
        kind: TagKind,
        id: DictionaryId,
    ) -> StoreResult<&mut ResourceHistory> {
        match self.histories.entry((kind, id)) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let stored = scan_resources(&inner.dictionary, &keys::resource_prefix(kind, id))
                    .map_err(sm_read_err)?;
                let versions = stored
                    .into_iter()
                    .map(|version| (version.valid_from_us, version.attrs))
                    .collect();
                Ok(entry.insert(ResourceHistory {
                    versions,
                    changed: BTreeSet::new(),
                }))
            }
        }
    }

    fn write_to(self, batch: &mut sled::Batch) {
        for ((kind, id), history) in self.histories {
            for time in history.changed {
                let key = keys::resource(kind, id, time);
                match history.versions.get(&time) {
                    Some(attrs) => batch.insert(&key, keys::encode_attrs(attrs)),
                    None => batch.remove(&key),
                }
            }
        }
    }
}

impl ResourceHistory {
    /// Records `attrs` from `time` on; returns whether anything changed. Keeps the history
    /// canonical (see the module docs).
    fn set(&mut self, time: i64, attrs: BTreeMap<TagKind, DictionaryId>) -> bool {
        let in_force = self
            .versions
            .range(..=time)
            .next_back()
            .or_else(|| self.versions.first_key_value())
            .map(|(_, attrs)| attrs);
        if in_force == Some(&attrs) {
            return false;
        }
        let repeats_previous = self
            .versions
            .range(..time)
            .next_back()
            .is_some_and(|(_, previous)| *previous == attrs);
        if repeats_previous {
            // Only reached when a version at `time` differs: dropping it lets the previous
            // one, with these attrs, run on.
            self.versions.remove(&time);
        } else {
            self.versions.insert(time, attrs.clone());
        }
        self.changed.insert(time);
        let following = self
            .versions
            .range((Bound::Excluded(time), Bound::Unbounded))
            .next()
            .filter(|(_, next)| **next == attrs)
            .map(|(next_time, _)| *next_time);
        if let Some(next_time) = following {
            self.versions.remove(&next_time);
            self.changed.insert(next_time);
        }
        true
    }
}

/// Applies one `Resource` entry; the refusals depend only on the entry and the replicated
/// state, so every replica answers alike.
fn apply_resource(
    inner: &StoreInner,
    state: &AppliedState,
    resources: &mut TouchedResources,
    version: ResourceVersion,
) -> StoreResult<DictionaryResponse> {
    if let Err(reason) = version.check() {
        return Ok(DictionaryResponse::Rejected { reason });
    }
    // Ids are dense from 1, so `next` tells which exist; this call's interns count too.
    let held = |kind: TagKind, id: DictionaryId| {
        id == EMPTY_ID || u64::from(id) < state.next_ids.get(&kind).copied().unwrap_or(1)
    };
    if !held(version.kind, version.id) {
        return Ok(DictionaryResponse::Rejected {
            reason: format!(
                "resource {}/{} is not in the dictionary",
                version.kind, version.id
            ),
        });
    }
    if let Some((kind, id)) = version.attrs.iter().find(|(kind, id)| !held(**kind, **id)) {
        return Ok(DictionaryResponse::Rejected {
            reason: format!(
                "attribute {kind}/{id} of resource {}/{} is not in the dictionary",
                version.kind, version.id
            ),
        });
    }
    let history = resources.history(inner, version.kind, version.id)?;
    let changed = history.set(version.valid_from_us, version.attrs);
    Ok(DictionaryResponse::Resource { changed })
}

/// Reads the dictionary as of `state` and encodes it, with `resources`, as a snapshot
/// payload.
fn build_payload(
    inner: &StoreInner,
    state: &AppliedState,
    resources: &[ResourceVersion],
) -> Result<Vec<u8>> {
    let mut kinds = Vec::with_capacity(state.next_ids.len());
    for (&kind, &next) in &state.next_ids {
        if next <= 1 {
            continue;
        }
        let last = DictionaryId::try_from(next - 1).unwrap_or(DictionaryId::MAX);
        let mut strings = Vec::with_capacity((last as usize).min(1 << 20));
        for item in inner
            .dictionary
            .range(keys::reverse(kind, 1)..=keys::reverse(kind, last))
        {
            let (key, value) = item.map_err(|e| ConsensusError::store("scan for snapshot", e))?;
            let expected = strings.len() as u64 + 1;
            match keys::parse_reverse(&key) {
                Some((k, id)) if k == kind && u64::from(id) == expected => {}
                other => {
                    return Err(ConsensusError::Corrupt {
                        key: format!("reverse/{kind}"),
                        reason: format!("expected id {expected}, found {other:?}"),
                    });
                }
            }
            let string =
                String::from_utf8(value.to_vec()).map_err(|e| ConsensusError::Corrupt {
                    key: format!("reverse/{kind}/{expected}"),
                    reason: e.to_string(),
                })?;
            strings.push(string);
        }
        if strings.len() as u64 != next - 1 {
            return Err(ConsensusError::Corrupt {
                key: format!("reverse/{kind}"),
                reason: format!("{} ids present, next id is {next}", strings.len()),
            });
        }
        kinds.push(KindStrings { kind, strings });
    }
    serde_json::to_vec(&SnapshotPayload {
        format: SNAPSHOT_FORMAT,
        kinds,
        resources: Cow::Borrowed(resources),
    })
    .map_err(|e| ConsensusError::Corrupt {
        key: "snapshot".into(),
        reason: e.to_string(),
    })
}

/// Replaces the dictionary with a snapshot's, atomically, and flushes it.
fn install_blocking(inner: &StoreInner, meta: &Meta, data: &[u8]) -> StoreResult<AppliedState> {
    let payload: SnapshotPayload =
        serde_json::from_slice(data).map_err(|e| snapshot_err(Some(meta), e))?;
    if payload.format != SNAPSHOT_FORMAT {
        return Err(snapshot_err(
            Some(meta),
            format!("unknown snapshot format {}", payload.format),
        ));
    }
    let mut batch = sled::Batch::default();
    for item in inner.dictionary.iter() {
        let (key, _) = item.map_err(sm_read_err)?;
        batch.remove(key);
    }
    let mut state = AppliedState {
        applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
        next_ids: BTreeMap::new(),
    };
    for KindStrings { kind, strings } in payload.kinds {
        let mut seen = HashSet::with_capacity(strings.len());
        for (index, string) in strings.iter().enumerate() {
            let id = DictionaryId::try_from(index + 1).map_err(|e| snapshot_err(Some(meta), e))?;
            if string.is_empty() || !seen.insert(string.as_str()) {
                return Err(snapshot_err(
                    Some(meta),
                    format!("snapshot maps {kind} string {string:?} twice or empty"),
                ));
            }
            batch.insert(keys::forward(kind, string), &id.to_be_bytes());
            batch.insert(&keys::reverse(kind, id), string.as_bytes());
        }
        let next = strings.len() as u64 + 1;
        batch.insert(&keys::next(kind), &next.to_be_bytes());
        state.next_ids.insert(kind, next);
    }
    for version in payload.resources.iter() {
        batch.insert(
            &keys::resource(version.kind, version.id, version.valid_from_us),
            keys::encode_attrs(&version.attrs),
        );
    }
    batch.insert(
        keys::APPLIED,
        serde_json::to_vec(&state.applied).map_err(sm_write_err)?,
    );
    batch.insert(
        keys::MEMBERSHIP,
        serde_json::to_vec(&state.membership).map_err(sm_write_err)?,
    );
    inner.dictionary.apply_batch(batch).map_err(sm_write_err)?;
    inner.db.flush().map_err(sm_write_err)?;
    Ok(state)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| sm_write_err(format!("state machine task failed: {e}")))?
}

static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        let index = self.state.applied.map(|id| id.index).unwrap_or(0);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let meta = Meta {
            last_log_id: self.state.applied,
            last_membership: self.state.membership.clone(),
            snapshot_id: format!(
                "{index}-{millis}-{}",
                SNAPSHOT_SEQ.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let inner = Arc::clone(&self.inner);
        let state = self.state.clone();
        let snapshots = Arc::clone(&self.snapshots);
        let saved_meta = meta.clone();
        let resources = match &self.resources {
            Ok(resources) => Arc::clone(resources),
            Err(e) => return Err(snapshot_err(None, e)),
        };
        let data = blocking(move || {
            let data =
                build_payload(&inner, &state, &resources).map_err(|e| snapshot_err(None, e))?;
            // Openraft purges the log behind a snapshot; what the snapshot covers must be
            // durable in the state machine by then, since `apply` does not flush.
            inner.db.flush().map_err(|e| snapshot_err(None, e))?;
            snapshots
                .save(&saved_meta, &data)
                .map_err(|e| snapshot_err(Some(&saved_meta), e))?;
            Ok(data)
        })
        .await?;
        tracing::debug!(snapshot_id = %meta.snapshot_id, bytes = data.len(), "built dictionary snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StoreResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.state.applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<DictionaryResponse>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let state = self.state.clone();
        let (state, replies) = blocking(move || apply_blocking(&inner, state, entries)).await?;
        self.state = state;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Read now, while no apply runs: resource versions change in place.
        let inner = Arc::clone(&self.inner);
        let resources = tokio::task::spawn_blocking(move || {
            scan_resources(&inner.dictionary, &[keys::RESOURCE])
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("resource scan task failed: {e}")));
        SnapshotBuilder {
            inner: Arc::clone(&self.inner),
            state: self.state.clone(),
            snapshots: Arc::clone(&self.snapshots),
            resources,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let data = snapshot.into_inner();
        let inner = Arc::clone(&self.inner);
        let snapshots = Arc::clone(&self.snapshots);
        let meta = meta.clone();
        let state = blocking(move || {
            let state = install_blocking(&inner, &meta, &data)?;
            snapshots
                .save(&meta, &data)
                .map_err(|e| snapshot_err(Some(&meta), e))?;
            tracing::info!(snapshot_id = %meta.snapshot_id, bytes = data.len(), "installed dictionary snapshot");
            Ok(state)
        })
        .await?;
        self.state = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let snapshots = Arc::clone(&self.snapshots);
        let loaded = blocking(move || snapshots.load().map_err(|e| snapshot_err(None, e))).await?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// The current snapshot as one file: magic, meta length (u32 BE), meta JSON, payload.
/// Written to a temporary file, fsynced and renamed, so a crash leaves the old or the new.
struct SnapshotFile {
    path: PathBuf,
    /// Meta of the file on disk; a save never replaces a newer snapshot with an older one.
    current: parking_lot::Mutex<Option<Meta>>,
}

impl SnapshotFile {
    fn open(path: PathBuf) -> Result<Self> {
        let file = Self {
            path,
            current: parking_lot::Mutex::new(None),
        };
        let meta = file.load()?.map(|(meta, _)| meta);
        *file.current.lock() = meta;
        Ok(file)
    }

    fn io(&self, action: &'static str, path: &Path, source: std::io::Error) -> ConsensusError {
        ConsensusError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    fn load(&self) -> Result<Option<(Meta, Vec<u8>)>> {
        let mut bytes = Vec::new();
        match std::fs::File::open(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("open snapshot", &self.path, e)),
            Ok(mut file) => file
                .read_to_end(&mut bytes)
                .map_err(|e| self.io("read snapshot", &self.path, e))?,
        };
        let corrupt = |reason: &str| ConsensusError::Corrupt {
            key: self.path.display().to_string(),
            reason: reason.to_string(),
        };
        if bytes.len() < 12 || &bytes[..8] != SNAPSHOT_MAGIC {
            return Err(corrupt("bad snapshot header"));
        }
        let meta_len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        let Some(meta_bytes) = bytes.get(12..12 + meta_len) else {
            return Err(corrupt("snapshot meta is truncated"));
        };
        let meta: Meta = serde_json::from_slice(meta_bytes).map_err(|e| corrupt(&e.to_string()))?;
        let data = bytes.split_off(12 + meta_len);
        Ok(Some((meta, data)))
    }

    fn save(&self, meta: &Meta, data: &[u8]) -> Result<()> {
        let mut current = self.current.lock();
        if let Some(existing) = current.as_ref()
            && existing.last_log_id > meta.last_log_id
        {
            return Ok(());
        }
        let meta_bytes = serde_json::to_vec(meta).map_err(|e| ConsensusError::Corrupt {
            key: "snapshot meta".into(),
            reason: e.to_string(),
        })?;
        let meta_len = u32::try_from(meta_bytes.len()).map_err(|_| ConsensusError::Corrupt {
            key: "snapshot meta".into(),
            reason: "meta larger than 4 GiB".into(),
        })?;
        let tmp = self.path.with_extension("tmp");
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| self.io("create snapshot", &tmp, e))?;
        file.write_all(SNAPSHOT_MAGIC)
            .and_then(|()| file.write_all(&meta_len.to_be_bytes()))
            .and_then(|()| file.write_all(&meta_bytes))
            .and_then(|()| file.write_all(data))
            .and_then(|()| file.sync_all())
            .map_err(|e| self.io("write snapshot", &tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io("rename snapshot", &tmp, e))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.io("sync directory", dir, e))?;
        }
        *current = Some(meta.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::store::{DictionaryView, open_store};

    fn normal(index: u64, command: DictionaryCommand) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    fn entry(index: u64, kind: TagKind, strings: &[&str]) -> Entry {
        normal(
            index,
            DictionaryCommand::Intern {
                kind,
                strings: strings.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    type Attrs = BTreeMap<TagKind, DictionaryId>;

    fn version(id: DictionaryId, valid_from_us: i64, attrs: &Attrs) -> ResourceVersion {
        ResourceVersion {
            kind: TagKind::POD,
            id,
            valid_from_us,
            attrs: attrs.clone(),
        }
    }

    fn resource(index: u64, id: DictionaryId, valid_from_us: i64, attrs: &Attrs) -> Entry {
        normal(
            index,
            DictionaryCommand::Resource(version(id, valid_from_us, attrs)),
        )
    }

    const CHANGED: DictionaryResponse = DictionaryResponse::Resource { changed: true };
    const UNCHANGED: DictionaryResponse = DictionaryResponse::Resource { changed: false };

    /// A fresh store holding pods 1 and 2, services 1 ("cart") and 2 ("shop") and node 1.
    struct PodStore {
        dir: tempfile::TempDir,
        _log: crate::store::LogStore,
        sm: StateMachine,
        view: DictionaryView,
    }

    /// A [`PodStore`] and three attribute sets over it: {service cart, node 1},
    /// {service shop, node 1} and {service shop}.
    async fn pod_store() -> (PodStore, [Attrs; 3]) {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm, view) = open_store(dir.path()).unwrap();
        sm.apply([
            entry(1, TagKind::POD, &["p1", "p2"]),
            entry(2, TagKind::SERVICE, &["cart", "shop"]),
            entry(3, TagKind::NODE, &["n1"]),
        ])
        .await
        .unwrap();
        let attrs = [
            BTreeMap::from([(TagKind::SERVICE, 1), (TagKind::NODE, 1)]),
            BTreeMap::from([(TagKind::SERVICE, 2), (TagKind::NODE, 1)]),
            BTreeMap::from([(TagKind::SERVICE, 2)]),
        ];
        let store = PodStore {
            dir,
            _log,
            sm,
            view,
        };
        (store, attrs)
    }

    /// Applies the entries of `steps` as one call and checks each reply.
    async fn apply_expecting(sm: &mut StateMachine, steps: Vec<(Entry, DictionaryResponse)>) {
        let (entries, expected): (Vec<Entry>, Vec<DictionaryResponse>) = steps.into_iter().unzip();
        assert_eq!(sm.apply(entries).await.unwrap(), expected);
    }

    fn history(view: &DictionaryView, id: DictionaryId) -> Vec<(i64, Attrs)> {
        view.resource_versions(TagKind::POD)
            .unwrap()
            .into_iter()
            .filter(|v| v.id == id)
            .map(|v| (v.valid_from_us, v.attrs))
            .collect()
    }

    #[tokio::test]
    async fn resource_versions_apply_with_no_ops_and_replacement() {
        let (mut store, [a, b, c]) = pod_store().await;
        assert_eq!(store.view.resource_at(TagKind::POD, 1, 0).unwrap(), None);

        // Each stage: entries applied in one call with their replies, then pod 1's
        // versions, then what is in force at some times.
        type Stage = (
            Vec<(Entry, DictionaryResponse)>,
            Vec<(i64, Attrs)>,
            Vec<(i64, Attrs)>,
        );
        let stages: Vec<Stage> = vec![
            (
                vec![
                    (resource(4, 1, 100, &a), CHANGED),
                    // The version in force at 200 is the one from 100: nothing to record.
                    (resource(5, 1, 200, &a), UNCHANGED),
                    // Before the first version, the first is in force.
                    (resource(6, 1, 50, &a), UNCHANGED),
                    (resource(7, 1, 300, &b), CHANGED),
                ],
                vec![(100, a.clone()), (300, b.clone())],
                vec![
                    (i64::MIN, a.clone()),
                    (50, a.clone()),
                    (100, a.clone()),
                    (299, a.clone()),
                    (300, b.clone()),
                    (i64::MAX, b.clone()),
                ],
            ),
            (
                vec![
                    // Same time, new attrs: replaced.
                    (resource(8, 1, 300, &c), CHANGED),
                    // Between versions: stored, and the version at 300 now repeats it.
                    (resource(9, 1, 200, &c), CHANGED),
                    // Earlier than the first, different attrs: a new first version.
                    (resource(10, 1, 10, &b), CHANGED),
                ],
                vec![(10, b.clone()), (100, a.clone()), (200, c.clone())],
                vec![(5, b.clone()), (150, a.clone()), (300, c.clone())],
            ),
            (
                // Replacing a version with its predecessor's attrs removes it.
                vec![(resource(11, 1, 200, &a), CHANGED)],
                vec![(10, b.clone()), (100, a.clone())],
                vec![(300, a.clone())],
            ),
        ];
        for (index, (steps, versions, in_force)) in stages.into_iter().enumerate() {
            apply_expecting(&mut store.sm, steps).await;
            assert_eq!(history(&store.view, 1), versions, "stage {index}");
            for (time, attrs) in in_force {
                assert_eq!(
                    store.view.resource_at(TagKind::POD, 1, time).unwrap(),
                    Some(attrs),
                    "stage {index}, at {time}"
                );
            }
        }
        assert_eq!(store.view.resource_at(TagKind::POD, 2, 300).unwrap(), None);
        assert_eq!(store.view.resource_at(TagKind::NODE, 1, 300).unwrap(), None);
    }

    #[tokio::test]
    async fn resource_versions_refused_alike_everywhere() {
        let (mut store, [a, _, _]) = pod_store().await;
        let unknown_service = BTreeMap::from([(TagKind::SERVICE, 3)]);
        let too_many: Attrs = (0..=crate::MAX_RESOURCE_ATTRS as u16)
            .map(|k| (TagKind::custom(k), EMPTY_ID))
            .collect();
        let replies = store
            .sm
            .apply([
                resource(4, 3, 0, &a),
                resource(5, EMPTY_ID, 0, &a),
                resource(6, 1, 0, &unknown_service),
                resource(7, 1, 0, &too_many),
                // The empty string (id 0) is a valid attribute value.
                resource(8, 1, 0, &BTreeMap::from([(TagKind::SERVICE, EMPTY_ID)])),
            ])
            .await
            .unwrap();
        let reasons: Vec<String> = replies[..4]
            .iter()
            .map(|reply| match reply {
                DictionaryResponse::Rejected { reason } => reason.clone(),
                other => panic!("expected a rejection, got {other:?}"),
            })
            .collect();
        assert!(
            reasons[0].contains("resource pod/3 is not in the dictionary"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("empty string"), "{reasons:?}");
        assert!(reasons[2].contains("attribute service/3"), "{reasons:?}");
        assert!(reasons[3].contains("65 attributes exceed"), "{reasons:?}");
        assert_eq!(replies[4], CHANGED);
        assert_eq!(history(&store.view, 1).len(), 1);
        assert_eq!(history(&store.view, 3), vec![]);
    }

    #[tokio::test]
    async fn one_apply_call_sees_its_own_interns_and_versions() {
        let (mut store, [a, b, _]) = pod_store().await;
        apply_expecting(
            &mut store.sm,
            vec![
                (
                    entry(4, TagKind::POD, &["p3"]),
                    DictionaryResponse::Ids { ids: vec![3] },
                ),
                // Pod 3 exists only in this call's batch, and so does its first version.
                (resource(5, 3, 0, &a), CHANGED),
                (resource(6, 3, 0, &b), CHANGED),
                (resource(7, 3, 5, &b), UNCHANGED),
                (resource(8, 2, -7, &a), CHANGED),
            ],
        )
        .await;
        let all = store.view.resource_versions(TagKind::POD).unwrap();
        assert_eq!(all, vec![version(2, -7, &a), version(3, 0, &b)]);
        let PodStore {
            dir,
            _log,
            sm,
            view,
        } = store;
        drop((_log, sm, view));
        let (_log, _sm, view) = open_store(dir.path()).unwrap();
        assert_eq!(view.resource_versions(TagKind::POD).unwrap(), all);
    }

    #[tokio::test]
    async fn snapshot_carries_resources_as_of_its_builder() {
        let (mut store, [a, b, c]) = pod_store().await;
        store
            .sm
            .apply([
                resource(4, 1, 100, &a),
                resource(5, 1, 200, &b),
                resource(6, 2, 0, &c),
            ])
            .await
            .unwrap();
        let at_builder = store.view.resource_versions(TagKind::POD).unwrap();
        let mut builder = store.sm.get_snapshot_builder().await;
        // Changed in place after the builder was made: the snapshot must not see it.
        let later = || [resource(7, 1, 200, &c), resource(8, 2, 50, &a)];
        store.sm.apply(later()).await.unwrap();
        let source = store.view.resource_versions(TagKind::POD).unwrap();
        assert_eq!(
            source,
            vec![
                version(1, 100, &a),
                version(1, 200, &c),
                version(2, 0, &c),
                version(2, 50, &a)
            ]
        );
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(6));

        let other = tempfile::tempdir().unwrap();
        let (_log2, mut sm2, view2) = open_store(other.path()).unwrap();
        sm2.install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(view2.resource_versions(TagKind::POD).unwrap(), at_builder);
        assert_eq!(view2.resource_at(TagKind::POD, 1, 250).unwrap(), Some(b));
        assert_eq!(view2.lookup(TagKind::SERVICE, "shop").unwrap(), Some(2));
        // Applying the entries after the snapshot reaches the source's state.
        sm2.apply(later()).await.unwrap();
        assert_eq!(view2.resource_versions(TagKind::POD).unwrap(), source);
    }

    #[tokio::test]
    async fn snapshot_without_resources_still_installs() {
        let (mut store, [a, _, _]) = pod_store().await;
        store.sm.apply([resource(4, 1, 0, &a)]).await.unwrap();
        // A payload written before resource tables existed.
        let data = br#"{"format":1,"kinds":[{"kind":5,"strings":["old-pod"]}]}"#.to_vec();
        let meta = Meta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 9)),
            last_membership: StoredMembership::default(),
            snapshot_id: "old".into(),
        };
        store
            .sm
            .install_snapshot(&meta, Box::new(Cursor::new(data)))
            .await
            .unwrap();
        assert_eq!(store.view.lookup(TagKind::POD, "old-pod").unwrap(), Some(1));
        assert_eq!(store.view.resource_versions(TagKind::POD).unwrap(), vec![]);
        assert_eq!(store.view.resource_at(TagKind::POD, 1, 0).unwrap(), None);
    }

    #[tokio::test]
    async fn apply_assigns_dense_ids_in_log_order() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, mut sm, view) = open_store(dir.path()).unwrap();
        let replies = sm
            .apply([
                entry(1, TagKind::POD, &["a", "b", "a", ""]),
                entry(2, TagKind::POD, &["c", "b"]),
                entry(3, TagKind::ENDPOINT, &["a"]),
            ])
            .await
            .unwrap();
        assert_eq!(
            replies,
            vec![
                DictionaryResponse::Ids {
                    ids: vec![1, 2, 1, 0]
                },
                DictionaryResponse::Ids { ids: vec![3, 2] },
                DictionaryResponse::Ids { ids: vec![1] },
            ]
        );
        assert_eq!(view.lookup(TagKind::POD, "c").unwrap(), Some(3));
        assert_eq!(
            view.decode(TagKind::ENDPOINT, 1).unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(view.decode(TagKind::POD, 0).unwrap().as_deref(), Some(""));
        assert_eq!(view.decode(TagKind::POD, 4).unwrap(), None);
        // Re-applying the same strings later changes nothing.
        let replies = sm
            .apply([entry(4, TagKind::POD, &["b", "d"])])
            .await
            .unwrap();
        assert_eq!(replies, vec![DictionaryResponse::Ids { ids: vec![2, 4] }]);
    }

    #[tokio::test]
    async fn state_survives_reopen_and_snapshot_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_log, mut sm, _view) = open_store(dir.path()).unwrap();
            sm.apply([
                entry(1, TagKind::POD, &["x", "y"]),
                Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
                    payload: EntryPayload::Membership(Membership::new(
                        vec![[1u64].into_iter().collect()],
                        None,
                    )),
                },
            ])
            .await
            .unwrap();
            let snapshot = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(2));
        }
        let (_log, mut sm, view) = open_store(dir.path()).unwrap();
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
        assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![1]);
        assert_eq!(view.lookup(TagKind::POD, "y").unwrap(), Some(2));
        let replies = sm.apply([entry(3, TagKind::POD, &["z"])]).await.unwrap();
        assert_eq!(replies, vec![DictionaryResponse::Ids { ids: vec![3] }]);

        // Install the snapshot (ids 1, 2) into a fresh store and check both directions.
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        let other = tempfile::tempdir().unwrap();
        let (_log2, mut sm2, view2) = open_store(other.path()).unwrap();
        sm2.install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(view2.entries().unwrap().len(), 2);
        assert_eq!(view2.lookup(TagKind::POD, "x").unwrap(), Some(1));
        // The next id continues after the snapshot's.
        let replies = sm2.apply([entry(3, TagKind::POD, &["q"])]).await.unwrap();
        assert_eq!(replies, vec![DictionaryResponse::Ids { ids: vec![3] }]);
    }

    #[tokio::test]
    async fn full_id_space_rejects_the_whole_entry() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path().join("sled")).unwrap();
            let tree = db.open_tree("dictionary").unwrap();
            tree.insert(keys::next(TagKind::POD), &u64::from(u32::MAX).to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let (_log, mut sm, view) = open_store(dir.path()).unwrap();
        let replies = sm
            .apply([
                entry(1, TagKind::POD, &["last", "one-too-many"]),
                entry(2, TagKind::POD, &["last"]),
                entry(3, TagKind::POD, &["late"]),
            ])
            .await
            .unwrap();
        assert!(matches!(replies[0], DictionaryResponse::Rejected { .. }));
        assert_eq!(
            replies[1],
            DictionaryResponse::Ids {
                ids: vec![u32::MAX]
            }
        );
        assert!(matches!(replies[2], DictionaryResponse::Rejected { .. }));
        assert_eq!(view.lookup(TagKind::POD, "one-too-many").unwrap(), None);
    }
}
