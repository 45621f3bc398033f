//! A mesh of `flowmesh` processes brought up by `deploy/mesh.sh` (the script users run):
//! each node in its own network namespace with its own address, `down` on drop.

use std::{path::PathBuf, process::Command, time::Duration};

use super::{NodeApi, run_ok, wait_for};

const MESH_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/mesh.sh");

pub struct Mesh {
    pub dir: PathBuf,
    _root: tempfile::TempDir,
    pub nodes: Vec<NodeApi>,
    pub names: Vec<String>,
    pub prefix: String,
    pub subnet: String,
}

impl Mesh {
    /// `nodes` nodes in `regions` regions, with `extra` options for `mesh.sh up`. `tag`
    /// (a byte of the subnet and the namespace prefix) keeps meshes of different test
    /// binaries apart; the process id keeps runs apart.
    pub fn up(tag: u8, nodes: usize, regions: usize, token: &str, extra: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mesh");
        let id = std::process::id();
        let prefix = format!("fm{tag}{}", id % 1000);
        let subnet = format!("10.{tag}.{}", id % 200 + 20);
        let mesh = Self {
            dir,
            _root: root,
            nodes: (0..nodes)
                .map(|i| NodeApi::new(format!("http://{subnet}.{}:20416", 11 + i)))
                .collect(),
            names: (1..=nodes).map(|i| format!("n{i}")).collect(),
            prefix,
            subnet,
        };
        let (n, r) = (nodes.to_string(), regions.to_string());
        let mut args = vec![
            "up",
            "--nodes",
            &n,
            "--regions",
            &r,
            "--bin",
            env!("CARGO_BIN_EXE_flowmesh"),
            "--prefix",
            &mesh.prefix,
            "--subnet",
            &mesh.subnet,
            "--token",
            token,
        ];
        args.extend_from_slice(extra);
        mesh.script(&args);
        mesh
    }

    pub fn script(&self, args: &[&str]) -> std::process::Output {
        run_ok(Command::new(MESH_SH).args(args).arg("--dir").arg(&self.dir))
    }

    /// Node `k`'s (1-based) network namespace.
    pub fn netns(&self, k: usize) -> String {
        format!("{}-n{k}", self.prefix)
    }

    /// Node `k`'s (1-based) address.
    pub fn ip(&self, k: usize) -> String {
        format!("{}.{}", self.subnet, 10 + k)
    }

    /// A command that runs `program` in node `k`'s namespace.
    pub fn exec_in(&self, k: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns(k), program]);
        cmd
    }

    /// Node `i`'s (0-based) log.
    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("n{}/node.log", i + 1))).unwrap_or_default()
    }

    pub fn warnings(&self, i: usize) -> String {
        self.log_text(i)
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Until every node sees every node alive.
    pub fn wait_all_alive(&self) {
        let n = self.nodes.len();
        for node in &self.nodes {
            wait_for(
                Duration::from_secs(60),
                &format!("every node to see {n} alive"),
                || {
                    let s = node.status();
                    let alive = s["mesh"]["nodes"]
                        .as_array()?
                        .iter()
                        .filter(|n| n["alive"] == true)
                        .count();
                    (alive == n).then_some(())
                },
            );
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // also kills whatever else the test started in the namespaces
        let _ = Command::new(MESH_SH)
            .arg("down")
            .arg("--dir")
            .arg(&self.dir)
            .status();
    }
}
