//! Errors of the node as a whole.

/// Why a node could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("storage: {0}")]
    Storage(#[from] flowmesh_storage::StorageError),
    #[error("capture: {0}")]
    Capture(#[from] flowmesh_ebpf::EbpfError),
    #[error("packet capture: {0}")]
    Packet(#[from] flowmesh_packet::PacketError),
    #[error("tag dictionary: {0}")]
    Dictionary(#[from] flowmesh_consensus::ConsensusError),
    #[error("kubernetes: {0}")]
    Kubernetes(#[from] crate::k8s::K8sError),
    #[error("mesh: {0}")]
    Mesh(#[from] flowmesh_federation::FederationError),
    #[error("query engine: {0}")]
    Query(#[from] flowmesh_query_planner::QueryError),
    #[error("failed to {action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}
