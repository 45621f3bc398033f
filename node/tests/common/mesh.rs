//! A mesh of `flowmesh` processes brought up by `deploy/mesh.sh` (the script users run),
//! each node in its own network namespace, `down` on drop: the chaos harness's
//! [`MeshSh`] with a [`NodeApi`] per node.

use std::time::Duration;

use flowmesh_chaos_tests::{MeshSh, check};

use super::NodeApi;

pub const MESH_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/mesh.sh");

pub struct Mesh {
    inner: MeshSh,
    pub nodes: Vec<NodeApi>,
    pub names: Vec<String>,
}

impl Mesh {
    /// `nodes` nodes in `regions` regions of this build's binary, with `extra` options for
    /// `mesh.sh up`; `tag` keeps meshes of different test binaries apart.
    pub fn up(tag: u8, nodes: usize, regions: usize, token: &str, extra: &[&str]) -> Self {
        let inner = MeshSh::up(
            MESH_SH.as_ref(),
            env!("CARGO_BIN_EXE_flowmesh").as_ref(),
            tag,
            nodes,
            regions,
            token,
            extra,
        );
        Self {
            nodes: (0..nodes).map(|i| NodeApi::new(inner.base(i))).collect(),
            names: (0..nodes).map(|i| inner.name(i)).collect(),
            inner,
        }
    }

    pub fn script(&self, args: &[&str]) -> std::process::Output {
        self.inner.run(args)
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
        check::wait_all_alive(&self.inner, Duration::from_secs(60)).unwrap();
    }
}

impl std::ops::Deref for Mesh {
    type Target = MeshSh;

    fn deref(&self) -> &MeshSh {
        &self.inner
    }
}
