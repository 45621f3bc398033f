//! Read-only access to the local replica of the dictionary.

use std::sync::Arc;

use super::StoreInner;
use super::keys;
use crate::error::{ConsensusError, Result};
use crate::types::{DictionaryId, EMPTY_ID, TagKind};

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
}
