//! The dictionary's vocabulary: tag kinds, ids, the Raft log command and its reply, and the
//! openraft type configuration that ties them together.

use std::collections::BTreeMap;
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
    /// A process instance (`node/pid/start ticks`): the resource rows name for each side.
    pub const GPROCESS: TagKind = TagKind(19);
    /// A process's command line.
    pub const CMDLINE: TagKind = TagKind(20);
    /// A process's executable path.
    pub const EXE: TagKind = TagKind(21);
    /// The container a process runs in (from its cgroup).
    pub const CONTAINER_ID: TagKind = TagKind(22);
    /// A metric's name: a Prometheus metric, an Influx measurement or field.
    pub const METRIC: TagKind = TagKind(23);
    /// A series' labels (or a point's tags) in canonical form, `a="x",b="y"` sorted by name.
    pub const SERIES: TagKind = TagKind(24);
    /// A Kubernetes pod as a resource: `namespace/name`, unique in a cluster at any time.
    pub const K8S_POD: TagKind = TagKind(25);
    /// A Kubernetes namespace (`pod_ns_*`).
    pub const POD_NS: TagKind = TagKind(26);
    /// The Kubernetes node a pod is scheduled on (`pod_node_*`).
    pub const POD_NODE: TagKind = TagKind(27);
    /// A pod's workload, its controlling owner (`pod_group_*`: a Deployment's name, …).
    pub const POD_GROUP: TagKind = TagKind(28);
    /// The workload's kind (`pod_group_type_*`: `Deployment`, `StatefulSet`, …).
    pub const POD_GROUP_TYPE: TagKind = TagKind(29);
    /// Every well-known kind, in id order.
    pub const WELL_KNOWN: [TagKind; 29] = [
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
        Self::GPROCESS,
        Self::CMDLINE,
        Self::EXE,
        Self::CONTAINER_ID,
        Self::METRIC,
        Self::SERIES,
        Self::K8S_POD,
        Self::POD_NS,
        Self::POD_NODE,
        Self::POD_GROUP,
        Self::POD_GROUP_TYPE,
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
            Self::GPROCESS => "gprocess",
            Self::CMDLINE => "cmdline",
            Self::EXE => "exe",
            Self::CONTAINER_ID => "container_id",
            Self::METRIC => "metric",
            Self::SERIES => "series",
            Self::K8S_POD => "k8s_pod",
            Self::POD_NS => "pod_ns",
            Self::POD_NODE => "pod_node",
            Self::POD_GROUP => "pod_group",
            Self::POD_GROUP_TYPE => "pod_group_type",
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

/// Most attributes one [`ResourceVersion`] may carry; more is refused as bad input (by the
/// client, the leader and, identically on every replica, the state machine).
pub const MAX_RESOURCE_ATTRS: usize = 64;

/// The attributes of one resource from one point in time on: a row of a resource table
/// ("meta tags", DESIGN.md §5). Attributes that follow from a resource (a pod's service,
/// namespace and node; a process's name, command line and container) are stored once per
/// resource and version, not copied into every row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceVersion {
    /// The resource's kind (e.g. TagKind::POD, or a process-instance kind) and its id in
    /// that kind (an id interned in the same dictionary).
    pub kind: TagKind,
    pub id: DictionaryId,
    /// Start of validity, µs since the Unix epoch; the version is valid until the next
    /// version's start.
    pub valid_from_us: i64,
    /// Attribute kind → id of the attribute's string in that kind (e.g. SERVICE → id of
    /// "cart"). In JSON a list of `[kind, id]` pairs: JSON object keys are strings, which
    /// the internally tagged [`DictionaryCommand`] could not read back as kinds.
    #[serde(with = "attr_pairs")]
    pub attrs: BTreeMap<TagKind, DictionaryId>,
}

impl ResourceVersion {
    /// Why this version cannot be stored, judged from the version alone (no
    /// configuration), so that the client, the leader and every replica agree.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.id == EMPTY_ID {
            return Err(format!(
                "resource id {EMPTY_ID} of {} is the empty string",
                self.kind
            ));
        }
        if self.attrs.len() > MAX_RESOURCE_ATTRS {
            return Err(format!(
                "{} attributes exceed the limit of {MAX_RESOURCE_ATTRS} per resource version",
                self.attrs.len()
            ));
        }
        Ok(())
    }
}

/// `attrs` as `[[kind, id], …]`, in kind order; a kind given twice is refused.
mod attr_pairs {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{DictionaryId, TagKind};

    pub(super) fn serialize<S: Serializer>(
        attrs: &BTreeMap<TagKind, DictionaryId>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(attrs)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<TagKind, DictionaryId>, D::Error> {
        let pairs = Vec::<(TagKind, DictionaryId)>::deserialize(deserializer)?;
        let mut attrs = BTreeMap::new();
        for (kind, id) in pairs {
            if attrs.insert(kind, id).is_some() {
                return Err(D::Error::custom(format!(
                    "attribute kind {kind} given twice"
                )));
            }
        }
        Ok(attrs)
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
    /// Record that a resource has `attrs` from `valid_from_us` on. A no-op when the version
    /// in force at that time already has exactly these attrs; a version at the same
    /// (kind, id, valid_from_us) is replaced. Rejected (identically on every replica) when
    /// [`ResourceVersion`]'s limits are exceeded or an id is not in the dictionary.
    Resource(ResourceVersion),
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
    /// Whether a `Resource` entry changed the resource's versions (`false`: the version
    /// in force already had these attrs).
    Resource { changed: bool },
    /// The entry was applied without effect; every replica rejects it the same way.
    Rejected { reason: String },
}

impl DictionaryResponse {
    /// The ids of an `Intern` reply; any other reply back as the error.
    pub(crate) fn into_ids(self) -> Result<Vec<DictionaryId>, Self> {
        match self {
            Self::Ids { ids } => Ok(ids),
            other => Err(other),
        }
    }

    /// Whether a `Resource` reply changed anything; any other reply back as the error.
    pub(crate) fn into_changed(self) -> Result<bool, Self> {
        match self {
            Self::Resource { changed } => Ok(changed),
            other => Err(other),
        }
    }
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

        let cmd = DictionaryCommand::Resource(ResourceVersion {
            kind: TagKind::POD,
            id: 7,
            valid_from_us: -5,
            attrs: BTreeMap::from([(TagKind::SERVICE, 3), (TagKind::NODE, 1)]),
        });
        let text = serde_json::to_string(&cmd).unwrap();
        assert_eq!(
            text,
            r#"{"op":"resource","kind":5,"id":7,"valid_from_us":-5,"attrs":[[1,1],[4,3]]}"#
        );
        assert_eq!(
            serde_json::from_str::<DictionaryCommand>(&text).unwrap(),
            cmd
        );
        let twice = r#"{"op":"resource","kind":5,"id":7,"valid_from_us":0,"attrs":[[1,1],[1,2]]}"#;
        let error = serde_json::from_str::<DictionaryCommand>(twice).unwrap_err();
        assert!(error.to_string().contains("given twice"), "{error}");
    }

    #[test]
    fn resource_version_limits() {
        let mut version = ResourceVersion {
            kind: TagKind::POD,
            id: 1,
            valid_from_us: 0,
            attrs: (0..MAX_RESOURCE_ATTRS as u16)
                .map(|k| (TagKind::custom(k), 1))
                .collect(),
        };
        assert_eq!(version.check(), Ok(()));
        version.attrs.insert(TagKind::NODE, 1);
        let reason = version.check().unwrap_err();
        assert!(
            reason.contains("65 attributes exceed the limit of 64"),
            "{reason}"
        );
        version.attrs.clear();
        version.id = EMPTY_ID;
        assert!(version.check().unwrap_err().contains("empty string"));
    }
}
