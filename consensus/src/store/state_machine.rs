//! The dictionary state machine on sled (openraft's [`RaftStateMachine`]) and its snapshots.
//!
//! Applying `Intern { kind, strings }` gives each string without an id the next free id of
//! its kind, in log order; ids of a kind are therefore dense (`1..next`) and identical on
//! every replica. Nothing config-dependent is checked here (limits live in the client), so
//! every replica applies every entry the same way.
//!
//! One apply call is one atomic sled batch, which carries the new entries together with the
//! last applied log id: after a crash the dictionary and `applied` agree, and openraft
//! re-applies the committed entries after `applied` from the log. The state machine is not
//! fsynced on its own: the next log flush (same database) makes it durable, and building a
//! snapshot flushes it before openraft may purge the log entries behind that snapshot.
//!
//! A snapshot is the whole dictionary: per kind, its strings in id order. Because the
//! dictionary only grows and ids are dense, a builder only needs the per-kind `next` ids at
//! the moment it is created; it scans `1..next` later without blocking `apply`.

// `StorageError` is openraft's type, fixed by the storage traits; boxing it is not an option.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{StoreInner, keys};
use crate::error::{ConsensusError, Result};
use crate::types::{
    DictionaryCommand, DictionaryId, DictionaryResponse, EMPTY_ID, NodeId, TagKind, TypeConfig,
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
}

/// The snapshot payload: every kind's strings in id order (`strings[i]` has id `i + 1`).
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotPayload {
    format: u32,
    kinds: Vec<KindStrings>,
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
        };
        replies.push(reply);
    }
    for kind in touched_kinds {
        let next = state.next_ids.get(&kind).copied().unwrap_or(1);
        batch.insert(&keys::next(kind), &next.to_be_bytes());
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

/// Reads the dictionary as of `state` and encodes it as a snapshot payload.
fn build_payload(inner: &StoreInner, state: &AppliedState) -> Result<Vec<u8>> {
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
        let data = blocking(move || {
            let data = build_payload(&inner, &state).map_err(|e| snapshot_err(None, e))?;
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
        SnapshotBuilder {
            inner: Arc::clone(&self.inner),
            state: self.state.clone(),
            snapshots: Arc::clone(&self.snapshots),
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
    use crate::store::open_store;

    fn entry(index: u64, kind: TagKind, strings: &[&str]) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(DictionaryCommand::Intern {
                kind,
                strings: strings.iter().map(|s| s.to_string()).collect(),
            }),
        }
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
