//! Prometheus from Debian scraping prometheus-node-exporter and itself every second and
//! remote_writing to a flowmesh node, for the metrics end-to-end tests.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{FlowmeshNode, free_port};

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// node_exporter and Prometheus, both on loopback. Jobs `node` (the exporter) and
/// `prometheus` (itself). One remote_write shard sends the WAL in order, so a sample
/// stored at flowmesh means every earlier one is stored too.
pub struct Prometheus {
    pub exporter_port: u16,
    pub port: u16,
    _exporter: Killed,
    _prometheus: Killed,
}

impl Prometheus {
    /// Starts both, with Prometheus' config and TSDB under `dir`, writing to the flowmesh
    /// node on `node_port`.
    pub fn start(dir: &Path, node_port: u16) -> Self {
        let exporter_port = free_port();
        let exporter = Killed(
            Command::new("prometheus-node-exporter")
                .arg(format!("--web.listen-address=127.0.0.1:{exporter_port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let port = free_port();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]
  - job_name: prometheus
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
remote_write:
  - url: http://127.0.0.1:{node_port}/api/v1/write
    queue_config: {{batch_send_deadline: 1s, min_shards: 1, max_shards: 1}}
"
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let prometheus = Killed(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        Self {
            exporter_port,
            port,
            _exporter: exporter,
            _prometheus: prometheus,
        }
    }
}

/// A flowmesh node on a free port with capture off (its data under `dir/node`), and
/// Prometheus writing to it.
pub fn node_with_prometheus(dir: &Path) -> (FlowmeshNode, Prometheus) {
    let port = free_port();
    let node = FlowmeshNode::start(
        &dir.join("node"),
        port,
        &[("FLOWMESH__CAPTURE__ENABLED", "false")],
    );
    let prometheus = Prometheus::start(dir, port);
    (node, prometheus)
}
