//! The hosts: a mesh from `deploy/mesh.sh`, each node in its own network namespace.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

/// A mesh `deploy/mesh.sh up` made; `down` on drop (which also kills whatever else was
/// started in its namespaces).
pub struct MeshSh {
    pub script: PathBuf,
    pub dir: PathBuf,
    _root: tempfile::TempDir,
    pub prefix: String,
    pub subnet: String,
    pub nodes: usize,
}

/// Runs `cmd` to its end; panics with its output unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl MeshSh {
    /// `nodes` nodes of `bin` in `regions` regions, with `extra` options for `mesh.sh up`.
    /// `tag` (a byte of the subnet and the namespace prefix) keeps meshes of different
    /// test binaries apart; the process id keeps runs apart.
    pub fn up(
        script: &Path,
        bin: &Path,
        tag: u8,
        nodes: usize,
        regions: usize,
        token: &str,
        extra: &[&str],
    ) -> Self {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let id = std::process::id();
        let mesh = Self {
            script: script.to_path_buf(),
            dir: root.path().join("mesh"),
            _root: root,
            prefix: format!("fm{tag}{}", id % 1000),
            subnet: format!("10.{tag}.{}", id % 200 + 20),
            nodes,
        };
        let (n, r) = (nodes.to_string(), regions.to_string());
        let bin = bin.display().to_string();
        let mut args = vec![
            "up",
            "--nodes",
            &n,
            "--regions",
            &r,
            "--bin",
            &bin,
            "--prefix",
            &mesh.prefix,
            "--subnet",
            &mesh.subnet,
            "--token",
            token,
        ];
        args.extend_from_slice(extra);
        mesh.run(&args);
        mesh
    }

    /// Runs `mesh.sh` on this mesh; panics with its output if it fails.
    pub fn run(&self, args: &[&str]) -> Output {
        run_ok(
            Command::new(&self.script)
                .args(args)
                .arg("--dir")
                .arg(&self.dir),
        )
    }

    /// Node `i`'s (0-based) name.
    pub fn name(&self, i: usize) -> String {
        format!("n{}", i + 1)
    }

    /// Node `k`'s (1-based) network namespace.
    pub fn netns(&self, k: usize) -> String {
        format!("{}-n{k}", self.prefix)
    }

    /// Node `k`'s (1-based) address.
    pub fn ip(&self, k: usize) -> String {
        format!("{}.{}", self.subnet, 10 + k)
    }

    /// Node `i`'s (0-based) HTTP API.
    pub fn base(&self, i: usize) -> String {
        format!("http://{}:20416", self.ip(i + 1))
    }

    /// A command that runs `program` in node `k`'s (1-based) namespace.
    pub fn exec_in(&self, k: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns(k), program]);
        cmd
    }

    /// Node `i`'s (0-based) log, across its restarts.
    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("n{}/node.log", i + 1))).unwrap_or_default()
    }

    /// Node `i`'s (0-based) process id.
    pub fn pid(&self, i: usize) -> i32 {
        let path = self.dir.join(format!("n{}/pid", i + 1));
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}", path.display()))
    }

    /// `kill -9` node `i`.
    pub fn kill9(&self, i: usize) {
        self.run(&["kill", &self.name(i)]);
    }

    /// Starts node `i` (its data and config as before) and waits until it answers.
    pub fn start(&self, i: usize) {
        self.run(&["start", &self.name(i)]);
    }

    /// SIGSTOP / SIGCONT node `i`.
    pub fn pause(&self, i: usize, paused: bool) {
        let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) with a pid this mesh started; no memory is shared
        let rc = unsafe { libc::kill(self.pid(i), signal) };
        assert_eq!(rc, 0, "signal {signal} to {}", self.name(i));
    }

    /// SIGTERM node `i` and wait (up to 30 s) for it to exit.
    pub fn stop(&self, i: usize) {
        let pid = self.pid(i);
        // SAFETY: as in `pause`
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to {}", self.name(i));
        let deadline = Instant::now() + Duration::from_secs(30);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "{} did not exit within 30 s of SIGTERM",
                self.name(i)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `i`'s resident memory in bytes, if it runs.
    pub fn rss_bytes(&self, i: usize) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(i))).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }
}

/// Running and not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

impl Drop for MeshSh {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("down")
            .arg("--dir")
            .arg(&self.dir)
            .status();
    }
}
