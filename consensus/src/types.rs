//! The dictionary's vocabulary: tag kinds, ids, the Raft log command and its reply, and the
//! openraft type configuration that ties them together.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A dictionary id. Ids are assigned per [`TagKind`], densely from 1 upwards; an id never
/// changes meaning once assigned.
pub type DictionaryId = u32;

/// The reserved id of the empty string: `intern(kind, [""])` is always `[0]` and
/// `decode(kind, 0)` is always `""`. It is never stored and never proposed.
pub const EMPTY_ID: DictionaryId = 0;

/// The Raft node id of a dictionary replica.
pub type NodeId = u64;

/// Which dictionary a string belongs to. Each kind has its own id space, so
/// `(TagKind::POD, 7)` and `(TagKind::ENDPOINT, 7)` are unrelated.
///
/// Kinds below [`TagKind::FIRST_CUSTOM`] are the well-known tag columns of DESIGN.md §4;
/// [`TagKind::custom`] makes kinds for everything else (label names, label values, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TagKind(pub u16);

impl TagKind {
    /// `node` column.
    pub const NODE: TagKind = TagKind(1);
    /// `cluster` column.
    pub const CLUSTER: TagKind = TagKind(2);
    /// `process_kname_*`.
    pub const PROCESS: TagKind = TagKind(3);
    /// `auto_service_*`.
    pub const SERVICE: TagKind = TagKind(4);
    /// `pod_*`.
    pub const POD: TagKind = TagKind(5);
    /// `request_domain`.
    pub const REQUEST_DOMAIN: TagKind = TagKind(6);
    /// `request_resource`.
    pub const REQUEST_RESOURCE: TagKind = TagKind(7);
    /// `endpoint`.
    pub const ENDPOINT: TagKind = TagKind(8);
    /// Prometheus / custom label names.
    pub const LABEL_NAME: TagKind = TagKind(9);
    /// Prometheus / custom label values.
    pub const LABEL_VALUE: TagKind = TagKind(10);
    /// `region` column.
    pub const REGION: TagKind = TagKind(11);
    /// `signal_source` column.
    pub const SIGNAL_SOURCE: TagKind = TagKind(12);
    /// `observation_point` column.
    pub const OBSERVATION_POINT: TagKind = TagKind(13);
    /// `l7_protocol` column.
    pub const L7_PROTOCOL: TagKind = TagKind(14);
    /// `response_status` column.
    pub const RESPONSE_STATUS: TagKind = TagKind(15);
    /// `protocol` (L4) column.
    pub const PROTOCOL: TagKind = TagKind(16);
    /// `version` (protocol version) column.
    pub const VERSION: TagKind = TagKind(17);
    /// `request_type` column (method, command, op code).
    pub const REQUEST_TYPE: TagKind = TagKind(18);
    /// Every well-known kind, in id order.
    pub const WELL_KNOWN: [TagKind; 18] = [
        Self::NODE,
        Self::CLUSTER,
        Self::PROCESS,
        Self::SERVICE,
        Self::POD,
        Self::REQUEST_DOMAIN,
        Self::REQUEST_RESOURCE,
        Self::ENDPOINT,
        Self::LABEL_NAME,
        Self::LABEL_VALUE,
        Self::REGION,
        Self::SIGNAL_SOURCE,
        Self::OBSERVATION_POINT,
        Self::L7_PROTOCOL,
        Self::RESPONSE_STATUS,
        Self::PROTOCOL,
        Self::VERSION,
        Self::REQUEST_TYPE,
    ];
    /// The first value free for [`TagKind::custom`].
    pub const FIRST_CUSTOM: u16 = 1024;

    /// A kind outside the well-known set: `TagKind::custom(0)` is `TagKind(1024)`.
    /// Saturates at `u16::MAX`.
    pub const fn custom(n: u16) -> TagKind {
        TagKind(Self::FIRST_CUSTOM.saturating_add(n))
    }

    /// The raw value, as stored in keys.
    pub const fn get(self) -> u16 {
        self.0
    }

    fn well_known_name(self) -> Option<&'static str> {
        Some(match self {
            Self::NODE => "node",
            Self::CLUSTER => "cluster",
            Self::PROCESS => "process",
            Self::SERVICE => "service",
            Self::POD => "pod",
            Self::REQUEST_DOMAIN => "request_domain",
            Self::REQUEST_RESOURCE => "request_resource",
            Self::ENDPOINT => "endpoint",
            Self::LABEL_NAME => "label_name",
            Self::LABEL_VALUE => "label_value",
            Self::REGION => "region",
            Self::SIGNAL_SOURCE => "signal_source",
            Self::OBSERVATION_POINT => "observation_point",
            Self::L7_PROTOCOL => "l7_protocol",
            Self::RESPONSE_STATUS => "response_status",
            Self::PROTOCOL => "protocol",
            Self::VERSION => "version",
            Self::REQUEST_TYPE => "request_type",
            _ => return None,
        })
    }

    /// The kind a name from [`fmt::Display`] stands for: a well-known name or `kind-N`.
    pub fn from_name(name: &str) -> Option<TagKind> {
        if let Some(n) = name.strip_prefix("kind-") {
            return n.parse().ok().map(TagKind);
        }
        Self::WELL_KNOWN
            .into_iter()
            .find(|k| k.well_known_name() == Some(name))
    }
}

impl fmt::Display for TagKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.well_known_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "kind-{}", self.0),
        }
    }
}

/// A command in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DictionaryCommand {
    /// Give every string of `strings` that has no id yet the next free id of `kind`, in
    /// order. Strings that already have an id keep it; the empty string is always
    /// [`EMPTY_ID`]. Applying is deterministic, so every replica computes the same ids.
    Intern { kind: TagKind, strings: Vec<String> },
}

/// What applying one log entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum DictionaryResponse {
    /// Blank and membership entries.
    #[default]
    Empty,
    /// The id of each string of an `Intern`, in request order.
    Ids { ids: Vec<DictionaryId> },
    /// The entry was applied without effect; every replica rejects it the same way.
    Rejected { reason: String },
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the dictionary group.
    pub TypeConfig:
        D = DictionaryCommand,
        R = DictionaryResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of the dictionary group.
pub type DictionaryRaft = openraft::Raft<TypeConfig>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_display_and_custom() {
        assert_eq!(TagKind::POD.to_string(), "pod");
        assert_eq!(TagKind::custom(3), TagKind(1027));
        assert_eq!(TagKind::custom(3).to_string(), "kind-1027");
        assert_eq!(TagKind::custom(u16::MAX), TagKind(u16::MAX));
        for kind in TagKind::WELL_KNOWN.into_iter().chain([TagKind::custom(7)]) {
            assert_eq!(TagKind::from_name(&kind.to_string()), Some(kind));
        }
        assert_eq!(TagKind::from_name("nope"), None);
    }

    #[test]
    fn command_json_shape() {
        let cmd = DictionaryCommand::Intern {
            kind: TagKind::POD,
            strings: vec!["a".into()],
        };
        let text = serde_json::to_string(&cmd).unwrap();
        assert_eq!(text, r#"{"op":"intern","kind":5,"strings":["a"]}"#);
        assert_eq!(
            serde_json::from_str::<DictionaryCommand>(&text).unwrap(),
            cmd
        );
    }
}
