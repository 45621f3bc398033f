//! The node's configuration: one TOML file, layered as defaults → file →
//! `FLOWMESH__SECTION__KEY` environment variables (plus `FLOWMESH_DATA_DIR`) → CLI flags,
//! then validated once. Every key is documented in `deploy/config/flowmesh.example.toml`.

use std::{net::SocketAddr, path::Path, time::Duration};

use flowmesh_storage::StorageConfig;
use serde::{Deserialize, Serialize};

/// Who this node is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Node name shown in the `node` column; empty means the host name.
    pub name: String,
    pub cluster: String,
    pub region: String,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            cluster: "default".into(),
            region: "default".into(),
        }
    }
}

/// The HTTP front end (SQL API, /metrics, UI).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 20416)),
            max_body_bytes: 16 << 20,
        }
    }
}

/// Arrow Flight SQL for external clients (ADBC, JDBC, DBeaver …), DESIGN.md §8.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FlightSqlConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// When set, every call must carry `authorization: Bearer <token>` (or log in with a
    /// handshake whose password is the token); empty means no authentication.
    pub token: String,
    /// Prepared statements kept open at once; the oldest is closed past this.
    pub max_prepared_statements: usize,
}

impl Default for FlightSqlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 20417)),
            token: String::new(),
            max_prepared_statements: 1024,
        }
    }
}

/// OpenTelemetry in: OTLP/HTTP is always served at `/v1/traces` on the HTTP listener;
/// OTLP/gRPC gets its own listener when enabled (DESIGN.md §8).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    pub grpc_enabled: bool,
    pub grpc_listen: SocketAddr,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            grpc_enabled: false,
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 4317)),
        }
    }
}

/// eBPF capture and the pipeline behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    pub enabled: bool,
    /// Also capture TLS plaintext through uprobes on OpenSSL (libssl) in every process.
    pub tls: bool,
    /// Payload bytes captured per syscall (at most 4096).
    pub payload_cap_bytes: u32,
    /// Kernel ring buffer size; events that do not fit are dropped and counted.
    pub ring_buffer_bytes: u32,
    /// Sockets tracked at once; the least recently used is evicted (and counted) past this.
    pub max_sockets: usize,
    /// A request without a response for this long is recorded as a timeout.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A socket with no traffic for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub socket_idle_timeout: Duration,
    /// Captured rows are handed to storage at least this often.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// Row batches waiting for storage; past this, batches are dropped and counted.
    pub max_pending_batches: usize,
    /// Trace only the sockets of the node's own network namespace (one node per namespace,
    /// as deploy/mesh.sh runs them); by default every namespace's, containers included.
    pub own_netns_only: bool,
    /// Headers whose value is a request's id (`x_request_id_0/1`), in order of preference,
    /// case-insensitive.
    pub request_id_headers: Vec<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tls: true,
            payload_cap_bytes: 1024,
            ring_buffer_bytes: 32 << 20,
            max_sockets: 65_536,
            request_timeout: Duration::from_secs(30),
            socket_idle_timeout: Duration::from_secs(300),
            batch_interval: Duration::from_millis(200),
            max_pending_batches: 64,
            own_netns_only: false,
            request_id_headers: vec!["x-request-id".to_owned()],
        }
    }
}

/// The packet path: AF_PACKET capture on interfaces, for L4 flows and L7 rows from packets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PacketSettings {
    /// Interfaces to capture on (e.g. `["eth0"]`, `["lo"]`); empty turns the packet path off.
    pub interfaces: Vec<String>,
    /// Only these TCP/UDP ports (either end); empty means all TCP and UDP.
    pub ports: Vec<u16>,
    /// How often an open flow gets an `l4_flow_log` row (closed flows get one at close).
    #[serde(with = "humantime_serde")]
    pub report_interval: Duration,
    /// A flow with no packets for this long is closed.
    #[serde(with = "humantime_serde")]
    pub flow_idle_timeout: Duration,
    /// Flows tracked at once; the oldest is evicted (and counted) past this.
    pub max_flows: usize,
    /// Parse application protocols from packets too (`signal_source = packet`).
    pub l7: bool,
}

impl Default for PacketSettings {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            ports: Vec::new(),
            report_interval: Duration::from_secs(10),
            flow_idle_timeout: Duration::from_secs(60),
            max_flows: 16_384,
            l7: true,
        }
    }
}

/// Query engine limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySettings {
    pub memory_limit_bytes: usize,
    /// Threads of the runtime queries run on (apart from ingest).
    pub threads: usize,
    /// Nodes a query reads when it does not say (`scope=` on `/v1/sql`): `node`, `cluster`,
    /// `region` (this node's, or the regions its filters name) or `global`.
    pub default_scope: String,
    /// Longest wait for another node's part of an answer; a node slower than this is named
    /// missing and the answer is partial (an error with `strict`).
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
}

impl Default for QuerySettings {
    fn default() -> Self {
        Self {
            memory_limit_bytes: 1 << 30,
            threads: 2,
            default_scope: "region".into(),
            peer_timeout: Duration::from_secs(10),
        }
    }
}

/// Kubernetes AutoTagging (DESIGN.md §5): pods from the API server become resources that
/// rows reach through their process's container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesSettings {
    pub enabled: bool,
    /// The API server's URL; empty means the in-cluster address from
    /// `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, and no watch outside a cluster.
    pub api_server: String,
    /// Bearer token, re-read on every connection (projected tokens rotate); unused if
    /// the file does not exist.
    pub token_file: std::path::PathBuf,
    /// CA bundle (PEM) that signs the API server's certificate, for `https` URLs.
    pub ca_file: std::path::PathBuf,
    /// Only pods scheduled on this Kubernetes node (`spec.nodeName`); empty means all pods.
    pub node_name: String,
    /// Longest wait for the API server to connect or to send the next part of an answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        let account = std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
        Self {
            enabled: true,
            api_server: String::new(),
            token_file: account.join("token"),
            ca_file: account.join("ca.crt"),
            node_name: String::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl KubernetesSettings {
    /// The API server to watch, if any: the configured URL, else the in-cluster one from
    /// `env` (the process environment in the node).
    pub fn api_server(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        if !self.enabled {
            return None;
        }
        if !self.api_server.is_empty() {
            return Some(self.api_server.trim_end_matches('/').to_string());
        }
        let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
        let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Some(format!("https://{host}:{port}"))
    }
}

/// The node's replica of its region's tag dictionary (a Raft group, DESIGN.md §5).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusSettings {
    /// This node's id in the region's group: unique in the region, stable across restarts.
    pub node_id: u64,
    /// Where Raft and dictionary peer requests are served.
    pub listen: SocketAddr,
    /// The address other nodes reach `listen` at; empty means `listen`.
    pub advertise: String,
    /// Shared secret of the region's nodes; required when `peers` names other nodes.
    pub cluster_token: String,
    /// Most voters in the group; every other node is a learner (read replica).
    pub max_voters: usize,
    /// Entries in the local encode cache and, separately, the decode cache.
    pub cache_capacity: usize,
    /// Longest a write waits for new strings to get ids before it retries.
    #[serde(with = "humantime_serde")]
    pub intern_timeout: Duration,
    /// The region's nodes by id (`"2" = "10.0.0.2:20418"`); may include this node.
    pub peers: std::collections::BTreeMap<String, SocketAddr>,
    /// This node's peer TLS certificate (PEM); with `tls_key` and `tls_ca`, mutual TLS on
    /// the peer port. All three or none.
    pub tls_cert: String,
    /// The key of `tls_cert` (PEM).
    pub tls_key: String,
    /// The mesh's CA certificate (PEM): the only issuer of peers' certificates accepted.
    pub tls_ca: String,
}

impl Default for ConsensusSettings {
    fn default() -> Self {
        let base = flowmesh_consensus::ConsensusConfig::default();
        Self {
            node_id: base.node_id,
            listen: base.listen,
            advertise: String::new(),
            cluster_token: String::new(),
            max_voters: base.max_voters,
            cache_capacity: base.cache_capacity,
            intern_timeout: base.intern_timeout,
            peers: Default::default(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
        }
    }
}

impl ConsensusSettings {
    /// The consensus crate's config, with its store under `data_dir/consensus`.
    pub fn to_consensus_config(
        &self,
        data_dir: &Path,
    ) -> Result<flowmesh_consensus::ConsensusConfig, ConfigError> {
        let mut peers = std::collections::BTreeMap::new();
        for (id, addr) in &self.peers {
            let id: u64 = id.parse().map_err(|_| {
                ConfigError::Invalid(format!("consensus.peers: {id:?} is not a node id"))
            })?;
            peers.insert(id, *addr);
        }
        let advertise = match self.advertise.as_str() {
            "" => None,
            a => Some(
                a.parse()
                    .map_err(|e| ConfigError::Invalid(format!("consensus.advertise {a:?}: {e}")))?,
            ),
        };
        let tls = match (
            self.tls_cert.as_str(),
            self.tls_key.as_str(),
            self.tls_ca.as_str(),
        ) {
            ("", "", "") => None,
            (cert, key, ca) if !cert.is_empty() && !key.is_empty() && !ca.is_empty() => {
                Some(flowmesh_consensus::tls::PeerTlsFiles {
                    cert: cert.into(),
                    key: key.into(),
                    ca: ca.into(),
                })
            }
            _ => {
                return Err(ConfigError::Invalid(
                    "consensus.tls_cert, tls_key and tls_ca: set all three or none".into(),
                ));
            }
        };
        let config = flowmesh_consensus::ConsensusConfig {
            node_id: self.node_id,
            tls,
            listen: self.listen,
            advertise,
            data_dir: data_dir.join("consensus"),
            peers,
            cluster_token: self.cluster_token.clone(),
            max_voters: self.max_voters,
            cache_capacity: self.cache_capacity,
            intern_timeout: self.intern_timeout,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("consensus: {e}")))?;
        Ok(config)
    }
}

/// Everything a node reads at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub node: IdentityConfig,
    pub http: HttpConfig,
    pub flight_sql: FlightSqlConfig,
    pub otlp: OtlpConfig,
    pub storage: StorageConfig,
    pub capture: CaptureConfig,
    pub packet: PacketSettings,
    pub query: QuerySettings,
    pub consensus: ConsensusSettings,
    pub kubernetes: KubernetesSettings,
    /// Membership: libp2p, signed node records over gossip (flowmesh-federation).
    pub mesh: flowmesh_federation::MeshConfig,
}

/// A configuration problem, naming the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Layers `file` (if any), then `env` (`FLOWMESH__SECTION__KEY=value` and
    /// `FLOWMESH_DATA_DIR`), over the defaults, and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            let path: Vec<String> = if key == "FLOWMESH_DATA_DIR" {
                vec!["storage".into(), "data_dir".into()]
            } else if let Some(rest) = key.strip_prefix("FLOWMESH__") {
                rest.split("__").map(|p| p.to_ascii_lowercase()).collect()
            } else {
                continue;
            };
            set_path(&mut table, &path, parse_env_value(&value))
                .map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))?;
        }
        let config: NodeConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.storage
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.flight_sql.max_prepared_statements == 0 {
            return Err(ConfigError::Invalid(
                "flight_sql.max_prepared_statements must be at least 1".into(),
            ));
        }
        if !self.kubernetes.api_server.is_empty()
            && !self.kubernetes.api_server.starts_with("http://")
            && !self.kubernetes.api_server.starts_with("https://")
        {
            return Err(ConfigError::Invalid(format!(
                "kubernetes.api_server {:?} must be an http:// or https:// URL",
                self.kubernetes.api_server
            )));
        }
        if self.kubernetes.timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "kubernetes.timeout must be positive".into(),
            ));
        }
        if self.capture.payload_cap_bytes > 4096 {
            return Err(ConfigError::Invalid(
                "capture.payload_cap_bytes must be at most 4096".into(),
            ));
        }
        if self.capture.max_sockets == 0 || self.capture.max_pending_batches == 0 {
            return Err(ConfigError::Invalid(
                "capture.max_sockets and max_pending_batches must be positive".into(),
            ));
        }
        for name in &self.capture.request_id_headers {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(ConfigError::Invalid(format!(
                    "capture.request_id_headers: {name:?} is not a header name"
                )));
            }
        }
        if self.packet.ports.len() > 32 {
            return Err(ConfigError::Invalid(
                "packet.ports holds at most 32 ports".into(),
            ));
        }
        if !self.packet.interfaces.is_empty() && self.packet.max_flows == 0 {
            return Err(ConfigError::Invalid(
                "packet.max_flows must be positive".into(),
            ));
        }
        crate::mesh::Scope::parse(&self.query.default_scope)
            .map_err(|e| ConfigError::Invalid(format!("query.default_scope: {e}")))?;
        if self.query.peer_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "query.peer_timeout must be positive".into(),
            ));
        }
        if self.mesh.enabled {
            self.mesh
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("mesh: {e}")))?;
            if self.consensus.cluster_token.is_empty() {
                return Err(ConfigError::Invalid(
                    "mesh.enabled needs consensus.cluster_token: peers authenticate queries with it"
                        .into(),
                ));
            }
        }
        if self.query.threads == 0 {
            return Err(ConfigError::Invalid(
                "query.threads must be positive".into(),
            ));
        }
        self.consensus.to_consensus_config(&self.storage.data_dir)?;
        for part in [&self.node.cluster, &self.node.region] {
            if part.is_empty() {
                return Err(ConfigError::Invalid(
                    "node.cluster and node.region must not be empty".into(),
                ));
            }
        }
        Ok(())
    }

    /// The node's name: configured, else the host name.
    pub fn node_name(&self) -> String {
        if !self.node.name.is_empty() {
            return self.node.name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }
}

/// Environment values are TOML when they parse as a TOML value, else plain strings.
fn parse_env_value(value: &str) -> toml::Value {
    format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => {
            let entry = table
                .entry(first.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => Err(format!("{first} is not a section")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[node]\nregion = \"eu\"\n[capture]\npayload_cap_bytes = 512\n",
        )
        .unwrap();
        let env = vec![
            (
                "FLOWMESH__CAPTURE__ENABLED".to_string(),
                "false".to_string(),
            ),
            ("FLOWMESH_DATA_DIR".to_string(), "/tmp/x y".to_string()),
            (
                "FLOWMESH__STORAGE__FLUSH_INTERVAL".to_string(),
                "10s".to_string(),
            ),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = NodeConfig::load(Some(&path), env).unwrap();
        assert_eq!(c.node.region, "eu");
        assert_eq!(c.capture.payload_cap_bytes, 512);
        assert!(!c.capture.enabled);
        assert_eq!(c.storage.data_dir, std::path::PathBuf::from("/tmp/x y"));
        assert_eq!(c.storage.flush_interval, Duration::from_secs(10));

        std::fs::write(&path, "[capture]\nbogus = 1\n").unwrap();
        let err = NodeConfig::load(Some(&path), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = NodeConfig::load(
            None,
            vec![("FLOWMESH__CAPTURE__PAYLOAD_CAP_BYTES".into(), "9999".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("payload_cap_bytes"), "{err}");
    }

    #[test]
    fn peer_tls_needs_all_three_files() {
        let mut c = ConsensusSettings {
            tls_cert: "/etc/flowmesh/n1.pem".into(),
            ..Default::default()
        };
        let err = c
            .to_consensus_config(Path::new("/tmp"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("all three or none"), "{err}");
        c.tls_key = "/etc/flowmesh/n1.key".into();
        c.tls_ca = "/etc/flowmesh/ca.pem".into();
        let tls = c
            .to_consensus_config(Path::new("/tmp"))
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(tls.ca, Path::new("/etc/flowmesh/ca.pem"));
        assert!(
            ConsensusSettings::default()
                .to_consensus_config(Path::new("/tmp"))
                .unwrap()
                .tls
                .is_none()
        );
    }

    #[test]
    fn the_example_config_parses_and_documents_every_key() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/flowmesh.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example = NodeConfig::load(Some(&path), vec![]).unwrap();
        // every key of the defaults appears in the example (so none goes undocumented)
        let defaults = toml::Value::try_from(NodeConfig::default()).unwrap();
        let toml::Value::Table(sections) = defaults else {
            panic!("not a table")
        };
        for (section, keys) in sections {
            assert!(
                text.contains(&format!("[{section}]")),
                "example lacks [{section}]"
            );
            if let toml::Value::Table(keys) = keys {
                for (key, value) in keys {
                    if value.is_table() {
                        assert!(
                            text.contains(&format!("[{section}.{key}]")),
                            "example lacks [{section}.{key}]"
                        );
                        continue;
                    }
                    assert!(
                        text.lines().any(|l| l
                            .trim_start()
                            .trim_start_matches('#')
                            .trim_start()
                            .starts_with(&format!("{key} "))),
                        "example lacks {section}.{key}"
                    );
                }
            }
        }
        assert_eq!(example.http.listen, HttpConfig::default().listen);
    }
}
