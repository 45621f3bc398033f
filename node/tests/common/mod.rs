//! Harness for end-to-end tests: the real `flowmesh` binary, real nginx, real clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod mesh;
pub mod prometheus;
pub mod servers;

/// Starts `cmd` with its stdout piped and returns it with the first line it prints (a
/// server's port, or that it is ready).
pub fn spawn_first_line(cmd: &mut Command) -> (Child, String) {
    use std::io::BufRead;
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_owned())
}

/// Fails the test with a clear message when a required program is missing.
pub fn require(programs: &[&str]) {
    for p in programs {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {p}"))
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{p} is not installed; run the README's test command (scripts/test.sh), which installs it"
        );
    }
    assert!(
        unsafe { libc::geteuid() } == 0,
        "end-to-end capture tests need root (eBPF); run them as root"
    );
}

/// Runs `cmd` to its end; fails the test with its output unless it succeeded.
pub use flowmesh_chaos_tests::run_ok;

/// A free loopback TCP port.
/// Writes `key.pem` and a self-signed `cert.pem` for `localhost` (one day) into `dir`.
pub fn self_signed_cert(dir: &Path) {
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem")),
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node's HTTP API at `base` (`http://host:port`), wherever the node runs.
pub struct NodeApi {
    pub base: String,
}

impl NodeApi {
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into() }
    }

    /// `/v1/status`.
    pub fn status(&self) -> Value {
        reqwest::blocking::get(format!("{}/v1/status", self.base))
            .unwrap()
            .json()
            .unwrap()
    }

    /// The value of one of the node's own metrics in `/metrics`.
    #[allow(dead_code)] // not every test binary reads metrics
    pub fn metric(&self, name: &str) -> f64 {
        let text = reqwest::blocking::get(format!("{}/metrics", self.base))
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    }

    /// Runs SQL; returns (status, body).
    pub fn sql_raw(&self, sql: &str) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/sql", self.base))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap())
    }

    /// Runs SQL at `scope` (`node`, `region`, `global` …), strict or not; returns (status,
    /// body).
    #[allow(dead_code)] // only mesh tests choose a scope
    pub fn sql_scoped(&self, sql: &str, scope: &str, strict: bool) -> (u16, Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/sql", self.base))
            .query(&[
                ("scope", scope),
                ("strict", if strict { "true" } else { "false" }),
            ])
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap())
    }

    /// Runs SQL that must succeed; returns its rows.
    pub fn sql(&self, sql: &str) -> Vec<Vec<Value>> {
        let (status, body) = self.sql_raw(sql);
        assert_eq!(status, 200, "query failed: {sql}: {body}");
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().clone())
            .collect()
    }

    /// GET `/prom/api/v1/<path>` that must succeed; its `data`.
    pub fn prom_api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let response = reqwest::blocking::Client::new()
            .get(format!("{}/prom/api/v1/{path}", self.base))
            .query(params)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap();
        assert_eq!(status, 200, "{path} {params:?}: {body}");
        assert_eq!(body["status"], "success", "{body}");
        body["data"].clone()
    }

    /// An instant PromQL query at `time` (unix seconds) that must give a vector; its
    /// samples as (labels, value), sorted.
    pub fn promql(&self, query: &str, time: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.prom_api("query", &[("query", query), ("time", time)]);
        assert_eq!(data["resultType"], "vector", "{query}: {data}");
        let mut out: Vec<(BTreeMap<String, String>, f64)> = data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (labels, s["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// `SELECT k, count(*) ... GROUP BY k` as a sorted list of (k, n).
    pub fn counts(&self, sql: &str) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = self
            .sql(sql)
            .into_iter()
            .map(|r| {
                (
                    r[0].to_string().trim_matches('"').to_string(),
                    r[1].as_i64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }
}

/// A `flowmesh up` child process.
pub struct FlowmeshNode {
    pub child: Child,
    pub api: NodeApi,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl FlowmeshNode {
    pub fn start(data_dir: &Path, port: u16, extra_env: &[(&str, &str)]) -> Self {
        let mut node = Self::spawn(data_dir, port, extra_env);
        node.wait_ready();
        node
    }

    /// Starts the process without waiting for it (nodes of one Raft group must start
    /// together: none has a leader alone).
    pub fn spawn(data_dir: &Path, port: u16, extra_env: &[(&str, &str)]) -> Self {
        let log = PathBuf::from(format!("{}.{}.log", data_dir.display(), std::process::id()));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowmesh"));
        cmd.args(["up", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // the peer port on a free port unless the test chose one (20418 would clash)
        if !extra_env
            .iter()
            .any(|(k, _)| *k == "FLOWMESH__CONSENSUS__LISTEN")
        {
            cmd.args(["--peer-listen", "127.0.0.1:0"]);
        }
        // Flight SQL on a free port unless the test chose one (20417 would clash)
        if !extra_env
            .iter()
            .any(|(k, _)| *k == "FLOWMESH__FLIGHT_SQL__LISTEN")
        {
            cmd.args(["--flight-listen", "127.0.0.1:0"]);
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn flowmesh");
        Self {
            child,
            api: NodeApi::new(format!("http://127.0.0.1:{port}")),
            port,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// Waits until the node answers `/v1/status`; panics with its log if it exited.
    pub fn wait_ready(&mut self) {
        let port = self.port;
        let node = self;
        wait_for(
            Duration::from_secs(60),
            "flowmesh to answer /v1/status",
            || {
                if let Ok(Some(status)) = node.child.try_wait() {
                    panic!(
                        "flowmesh exited early with {status}; log:\n{}",
                        node.log_text()
                    );
                }
                reqwest::blocking::get(format!("http://127.0.0.1:{port}/v1/status"))
                    .ok()
                    .filter(|r| r.status().is_success())
            },
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_for(Duration::from_secs(30), "flowmesh to exit", || {
            self.child.try_wait().unwrap()
        })
    }
}

/// A node's API methods (`sql`, `metric` …) on the process that serves it.
impl std::ops::Deref for FlowmeshNode {
    type Target = NodeApi;

    fn deref(&self) -> &NodeApi {
        &self.api
    }
}

impl Drop for FlowmeshNode {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// An nginx master with one worker, serving /ok (200), /missing (404) and /fail (500) on
/// each of `ports`.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
}

impl Nginx {
    pub fn start(ports: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let servers: String = ports
            .iter()
            .map(|p| {
                format!(
                    "server {{ listen 127.0.0.1:{p}; keepalive_requests 100000;
                       location = /ok {{ return 200 \"ok\\n\"; }}
                       location = /missing {{ return 404 \"missing\\n\"; }}
                       location = /fail {{ return 500 \"fail\\n\"; }} }}\n"
                )
            })
            .collect();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1; daemon on; pid {d}/nginx.pid; error_log {d}/error.log;
             events {{ worker_connections 1024; }}
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};
                     fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
                     {servers} }}"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let out = Command::new("nginx")
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nginx = Self {
            dir,
            ports: ports.to_vec(),
        };
        for p in ports {
            wait_for(Duration::from_secs(10), "nginx to listen", || {
                std::net::TcpStream::connect(("127.0.0.1", *p)).ok()
            });
        }
        nginx
    }

    pub fn master_pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("nginx.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The worker's pid (the process that serves requests).
    pub fn worker_pid(&self) -> u32 {
        let out = Command::new("pgrep")
            .args(["-P", &self.master_pid().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `curl` for one URL in its own process; returns (curl's pid, time_connect,
/// time_total) in seconds. curl records time_connect before it sends the request (its
/// time_pretransfer can come after), so [time_connect, time_total] spans the exchange.
pub fn curl_timed(url: &str, request_id: &str) -> (u32, f64, f64) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$; exec curl -s -o /dev/null -H 'X-Request-ID: {request_id}' -w '%{{time_connect}} %{{time_total}}' {url}"
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let pid = lines.next().unwrap().trim().parse().unwrap();
    let mut times = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|t| t.parse::<f64>().unwrap());
    (pid, times.next().unwrap(), times.next().unwrap())
}

/// Runs `n` curl processes (a few at a time), one request each; asserts each got `code`.
pub fn curl_many(url: &str, n: usize, code: u16) {
    let parallel = 4;
    let per = n.div_ceil(parallel);
    let handles: Vec<_> = (0..parallel)
        .map(|i| {
            let url = url.to_string();
            let count = per.min(n.saturating_sub(i * per));
            std::thread::spawn(move || {
                for _ in 0..count {
                    let out = Command::new("curl")
                        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                        .output()
                        .unwrap();
                    assert_eq!(
                        String::from_utf8_lossy(&out.stdout),
                        code.to_string(),
                        "curl {url}"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
