//! Read-only access to the local replica of the dictionary and its resource tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::StoreInner;
use super::keys;
use crate::error::{ConsensusError, Result};
use crate::types::{DictionaryId, EMPTY_ID, ResourceVersion, TagKind};

/// Reads the applied dictionary straight from the local sled tree: no Raft, no network.
/// What it returns is committed and never changes meaning; it may lag the leader.
#[derive(Clone)]
pub struct DictionaryView {
    inner: Arc<StoreInner>,
}

impl DictionaryView {
    pub(crate) fn new(inner: Arc<StoreInner>) -> Self {
        Self { inner }
    }

    /// The id of `string` in `kind`, if the local replica has it.
    pub fn lookup(&self, kind: TagKind, string: &str) -> Result<Option<DictionaryId>> {
        if string.is_empty() {
            return Ok(Some(EMPTY_ID));
        }
        let value = self
            .inner
            .dictionary
            .get(keys::forward(kind, string))
            .map_err(|e| ConsensusError::store("read forward entry", e))?;
        match value {
            None => Ok(None),
            Some(value) => {
                keys::decode_id(&value)
                    .map(Some)
                    .ok_or_else(|| ConsensusError::Corrupt {
                        key: format!("forward/{kind}/{string}"),
                        reason: format!("id has {} bytes, want 4", value.len()),
                    })
            }
        }
    }

    /// The string of `id` in `kind`, if the local replica has it.
    pub fn decode(&self, kind: TagKind, id: DictionaryId) -> Result<Option<String>> {
        if id == EMPTY_ID {
            return Ok(Some(String::new()));
        }
        let value = self
            .inner
            .dictionary
            .get(keys::reverse(kind, id))
            .map_err(|e| ConsensusError::store("read reverse entry", e))?;
        match value {
            None => Ok(None),
            Some(value) => {
                String::from_utf8(value.to_vec())
                    .map(Some)
                    .map_err(|e| ConsensusError::Corrupt {
                        key: format!("reverse/{kind}/{id}"),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Every (kind, id, string) of the replica, in (kind, id) order. For tests and tools:
    /// it reads the whole dictionary.
    pub fn entries(&self) -> Result<Vec<(TagKind, DictionaryId, String)>> {
        let mut out = Vec::new();
        for item in self.inner.dictionary.scan_prefix([keys::REVERSE]) {
            let (key, value) =
                item.map_err(|e| ConsensusError::store("scan reverse entries", e))?;
            let (kind, id) = keys::parse_reverse(&key).ok_or_else(|| ConsensusError::Corrupt {
                key: format!("{key:?}"),
                reason: "malformed reverse key".into(),
            })?;
            let string =
                String::from_utf8(value.to_vec()).map_err(|e| ConsensusError::Corrupt {
                    key: format!("reverse/{kind}/{id}"),
                    reason: e.to_string(),
                })?;
            out.push((kind, id, string));
        }
        Ok(out)
    }

    /// Every (kind, string, id) of the forward map, unordered by id. Tests compare it with
    /// [`Self::entries`] to check that the two directions agree.
    pub fn forward_entries(&self) -> Result<Vec<(TagKind, String, DictionaryId)>> {
        let mut out = Vec::new();
        for item in self.inner.dictionary.scan_prefix([keys::FORWARD]) {
            let (key, value) =
                item.map_err(|e| ConsensusError::store("scan forward entries", e))?;
            let corrupt = |reason: &str| ConsensusError::Corrupt {
                key: format!("{key:?}"),
                reason: reason.to_string(),
            };
            if key.len() < 3 {
                return Err(corrupt("short forward key"));
            }
            let kind = TagKind(u16::from_be_bytes([key[1], key[2]]));
            let string =
                String::from_utf8(key[3..].to_vec()).map_err(|_| corrupt("string is not utf-8"))?;
            let id = keys::decode_id(&value).ok_or_else(|| corrupt("id is not 4 bytes"))?;
            out.push((kind, string, id));
        }
        Ok(out)
    }

    /// The attrs of resource (kind, id) in force at `time_us`: the version with the
    /// greatest `valid_from_us` ≤ `time_us`, or the first version for earlier times.
    /// `None` if the replica has no version of the resource. One range read.
    pub fn resource_at(
        &self,
        kind: TagKind,
        id: DictionaryId,
        time_us: i64,
    ) -> Result<Option<BTreeMap<TagKind, DictionaryId>>> {
        let tree = &self.inner.dictionary;
        let prefix = keys::resource_prefix(kind, id);
        let at = keys::resource(kind, id, time_us);
        let read_err = |e| ConsensusError::store("read resource version", e);
        let found = match tree.range(&prefix[..]..=&at[..]).next_back() {
            Some(item) => Some(item.map_err(read_err)?),
            None => tree
                .scan_prefix(prefix)
                .next()
                .transpose()
                .map_err(read_err)?,
        };
        found
            .map(|(key, value)| decode_resource(&key, &value).map(|version| version.attrs))
            .transpose()
    }

    /// Every version of resource (kind, id), in time order. One prefix scan.
    pub fn resource_history(
        &self,
        kind: TagKind,
        id: DictionaryId,
    ) -> Result<Vec<ResourceVersion>> {
        scan_resources(&self.inner.dictionary, &keys::resource_prefix(kind, id))
    }

    /// Every version of every resource of `kind`, ordered by (id, valid_from_us). It reads
    /// all of the kind's versions.
    pub fn resource_versions(&self, kind: TagKind) -> Result<Vec<ResourceVersion>> {
        scan_resources(&self.inner.dictionary, &keys::resource_kind_prefix(kind))
    }
}

/// Every resource version whose key starts with `prefix` (see `keys.rs`), in key order.
pub(crate) fn scan_resources(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<ResourceVersion>> {
    tree.scan_prefix(prefix)
        .map(|item| {
            let (key, value) =
                item.map_err(|e| ConsensusError::store("scan resource versions", e))?;
            decode_resource(&key, &value)
        })
        .collect()
}

/// The resource version stored as `key` → `value`.
pub(crate) fn decode_resource(key: &[u8], value: &[u8]) -> Result<ResourceVersion> {
    let corrupt = |reason: &str| ConsensusError::Corrupt {
        key: format!("resource/{key:?}"),
        reason: reason.to_string(),
    };
    let (kind, id, valid_from_us) =
        keys::parse_resource(key).ok_or_else(|| corrupt("malformed resource key"))?;
    let attrs = keys::decode_attrs(value).ok_or_else(|| {
        corrupt("attrs are not 6-byte (kind, id) records in increasing kind order")
    })?;
    Ok(ResourceVersion {
        kind,
        id,
        valid_from_us,
        attrs,
    })
}
