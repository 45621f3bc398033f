//! TLS plaintext capture end to end (needs root, python3 with its `ssl` module,
//! the `openssl` CLI, curl, unshare and a C compiler): load the tracer, attach it to the libssl
//! that the traffic uses, run TLS over loopback, and check every plaintext event
//! against what the programs report they sent, and against the unflagged
//! syscall events of the same sockets.
//!
//! - `python_pair_*`: one python3 process runs a TLS server thread and a TLS
//!   client over loopback, exchanging known messages both ways with
//!   `sendall`/`recv` and `write`/`read` (CPython calls `SSL_write_ex` and
//!   `SSL_read_ex`), including a read served from OpenSSL's buffer without a
//!   syscall.
//! - `curl_*`: curl (which calls `SSL_write`/`SSL_read`) against a python3 TLS
//!   server answering a small HTTP response.
//! - `libssl_in_another_mount_namespace_*`: the same python3 pair in a private
//!   mount namespace, using a copy of libssl that only that namespace can see,
//!   found by `find_libssl_paths` through `/proc/<pid>/root`.
//! - `attach_tls_skips_*`: libraries built here with only some (or none) of the
//!   hooked functions.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowmesh_ebpf::{
    AF_INET, Direction, EventKind, FLAG_TLS, IPPROTO_TCP, SocketEvent, SocketEventHeader,
    SocketTracer, SyscallKind, TracerConfig, find_libssl_paths,
};

const PAYLOAD_CAP: u32 = 1024;
const CHILD_TIMEOUT: Duration = Duration::from_secs(90);
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// A TLS server thread and a TLS client in one process. Prints `ready <pid>`
/// once `ssl` is loaded, waits for `go` on stdin (the test attaches the probes
/// in between), then runs the plan below and reports it.
const PAIR_SCRIPT: &str = r#"
import os, socket, ssl, sys, threading

cert, key = sys.argv[1], sys.argv[2]
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server_ctx.load_cert_chain(cert, key)
client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
client_ctx.check_hostname = False
client_ctx.verify_mode = ssl.CERT_NONE

def out(*fields):
    print(*fields, flush=True)

out("ready", os.getpid())
if sys.stdin.readline().strip() != "go":
    sys.exit("no go from the test")

def msg(tag, n):
    head = (tag + ":").encode()
    return head + bytes((i * 31 + 7) % 251 for i in range(n - len(head)))

def recv_exactly(read, n):
    got = bytearray()
    while len(got) < n:
        chunk = read(n - len(got))
        if not chunk:
            raise EOFError("peer closed early")
        got += chunk
    return bytes(got)

# (name, sender, api, data): one message, sent with one call and read in lock-step
# by the other side with the matching api (sendall/recv or write/read).
plan = [
    ("c2s-sendall", "client", "sendall", msg("c2s-sendall", 100)),
    ("s2c-sendall", "server", "sendall", msg("s2c-sendall", 300)),
    ("c2s-write", "client", "write", msg("c2s-write", 2000)),
    ("s2c-write", "server", "write", msg("s2c-write", 10000)),
]
split = msg("c2s-split", 300)
SPLIT_AT = 100

def run(me, tls):
    for name, sender, api, data in plan:
        if sender == me:
            if api == "sendall":
                tls.sendall(data)
            else:
                assert tls.write(data) == len(data), name
        else:
            read = tls.recv if api == "sendall" else tls.read
            assert recv_exactly(read, len(data)) == data, name

lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lsn.bind(("127.0.0.1", 0))
lsn.listen(1)
listen_port = lsn.getsockname()[1]
server_side = {}
failure = []

def server():
    try:
        conn, _ = lsn.accept()
        tls = server_ctx.wrap_socket(conn, server_side=True)
        server_side["fd"] = tls.fileno()
        run("server", tls)
        # One 300-byte record read as 100 + 200 bytes: the second read is served
        # from OpenSSL's buffer without a syscall.
        first = tls.recv(SPLIT_AT)
        rest = recv_exactly(tls.recv, len(split) - len(first))
        assert first + rest == split
        server_side["first"] = len(first)
        tls.close()
    except BaseException as e:
        failure.append(repr(e))
        raise

thread = threading.Thread(target=server)
thread.start()
cli = client_ctx.wrap_socket(socket.create_connection(lsn.getsockname()))
client_fd, client_port = cli.fileno(), cli.getsockname()[1]
run("client", cli)
cli.sendall(split)
thread.join()
assert not failure, failure
cli.close()
lsn.close()
out("conn", client_fd, client_port, server_side["fd"], listen_port)
for name, sender, api, data in plan:
    out("step", name, sender, api, data.hex())
out("split", split.hex(), server_side["first"])
out("done")
"#;

/// A TLS server answering one HTTP/1.1 request. Prints `ready <pid> <port>`.
const HTTPS_SERVER_SCRIPT: &str = r#"
import os, socket, ssl, sys

cert, key = sys.argv[1], sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lsn.bind(("127.0.0.1", 0))
lsn.listen(1)
print("ready", os.getpid(), lsn.getsockname()[1], flush=True)
conn, peer = lsn.accept()
tls = ctx.wrap_socket(conn, server_side=True)
request = b""
while b"\r\n\r\n" not in request:
    chunk = tls.recv(4096)
    if not chunk:
        raise EOFError("client closed before the end of its request")
    request += chunk
body = b"hello over tls\n"
response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body)) + body
tls.sendall(response)
print("conn", tls.fileno(), peer[1], lsn.getsockname()[1], flush=True)
print("request", request.hex(), flush=True)
print("response", response.hex(), flush=True)
print("body", body.hex(), flush=True)
tls.close()
lsn.close()
print("done", flush=True)
"#;

// ---------------------------------------------------------------- prerequisites

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "tests/tls.rs loads eBPF programs and must run as root (euid is {euid}); \
         run the test suite as root (CI does)"
    );
}

fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn require_python_ssl() {
    assert!(
        runs("python3", &["-c", "import ssl"]),
        "python3 with its ssl module is needed on PATH for tests/tls.rs \
         (Debian: apt-get install -y python3)"
    );
}

fn require_tool(tool: &str, package: &str) {
    assert!(
        runs(tool, &["--version"]),
        "{tool} is needed on PATH for tests/tls.rs (Debian: apt-get install -y {package})"
    );
}

/// The `openssl` CLI, installed with apt-get when missing.
fn require_openssl() {
    if !runs("openssl", &["version"]) {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "openssl"])
            .stdin(Stdio::null())
            .status();
    }
    assert!(
        runs("openssl", &["version"]),
        "the openssl CLI is needed for tests/tls.rs and `apt-get install -y openssl` \
         did not provide it"
    );
}

/// A self-signed certificate and its key in a temp dir.
struct Certificate {
    dir: tempfile::TempDir,
}

impl Certificate {
    fn generate() -> Certificate {
        require_openssl();
        let dir = tempfile::tempdir().expect("temp dir");
        let output = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .stdin(Stdio::null())
            .output()
            .expect("run openssl req");
        assert!(
            output.status.success(),
            "openssl req failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Certificate { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

// ---------------------------------------------------------------- child processes

/// A child whose stdout lines arrive through a channel (so waiting for one has
/// a timeout) and whose stderr is collected for failure messages.
struct ScriptChild {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    received: Vec<String>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<String>>,
    status: Option<ExitStatus>,
}

impl ScriptChild {
    fn spawn(what: &str, command: &mut Command) -> ScriptChild {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = child.stdout.take().expect("child stdout");
        let mut stderr = child.stderr.take().expect("child stderr");
        let (sender, lines) = channel();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        ScriptChild {
            what: what.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            received: Vec::new(),
            stdout_reader: Some(stdout_reader),
            stderr_reader: Some(stderr_reader),
            status: None,
        }
    }

    fn python(what: &str, script: &str, cert: &Certificate) -> ScriptChild {
        ScriptChild::spawn(
            what,
            Command::new("python3")
                .arg("-c")
                .arg(script)
                .arg(cert.cert())
                .arg(cert.key()),
        )
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, split into fields; panics (with stderr) when the
    /// child ends or stays silent.
    fn next_line(&mut self) -> Vec<String> {
        match self.lines.recv_timeout(CHILD_TIMEOUT) {
            Ok(line) => {
                self.received.push(line.clone());
                line.split_whitespace().map(str::to_owned).collect()
            }
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                panic!("{} printed nothing for {CHILD_TIMEOUT:?}", self.what);
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().expect("wait for child");
                let stderr = self.take_stderr();
                panic!(
                    "{} ended ({status}) before printing an expected line:\n{stderr}",
                    self.what
                );
            }
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("child stdin");
        writeln!(stdin, "{line}").expect("write to child stdin");
        stdin.flush().expect("flush child stdin");
    }

    fn poll_exit(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for child");
        }
        self.status.is_some()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn take_stderr(&mut self) -> String {
        self.stderr_reader
            .take()
            .map(|reader| reader.join().expect("stderr reader"))
            .unwrap_or_default()
    }

    /// After exit: checks success and returns every stdout line (fields).
    fn report(mut self) -> Report {
        let status = self.status.expect("child has exited");
        if let Some(reader) = self.stdout_reader.take() {
            reader.join().expect("stdout reader");
        }
        while let Ok(line) = self.lines.try_recv() {
            self.received.push(line);
        }
        let stderr = self.take_stderr();
        assert!(
            status.success(),
            "{} failed ({status}):\n{}\n{stderr}",
            self.what,
            self.received.join("\n")
        );
        Report {
            lines: self
                .received
                .iter()
                .map(|line| line.split_whitespace().map(str::to_owned).collect())
                .collect(),
            stderr,
        }
    }
}

impl Drop for ScriptChild {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

/// The lines a child printed.
struct Report {
    lines: Vec<Vec<String>>,
    stderr: String,
}

impl Report {
    fn all(&self, key: &str) -> Vec<&[String]> {
        self.lines
            .iter()
            .filter(|fields| fields.first().is_some_and(|k| k == key))
            .map(|fields| &fields[1..])
            .collect()
    }

    fn one(&self, key: &str) -> &[String] {
        let all = self.all(key);
        assert_eq!(all.len(), 1, "expected one {key:?} line:\n{:?}", self.lines);
        all[0]
    }

    fn int(&self, key: &str, index: usize) -> i64 {
        self.one(key)
            .get(index)
            .unwrap_or_else(|| panic!("{key} line lacks field {index}"))
            .parse()
            .expect("integer field")
    }

    fn hex(&self, key: &str, index: usize) -> Vec<u8> {
        from_hex(&self.one(key)[index])
    }
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

// ---------------------------------------------------------------- capture

/// An event copied out of the ring buffer.
#[derive(Debug, Clone)]
struct Captured {
    header: SocketEventHeader,
    payload: Vec<u8>,
}

impl Captured {
    fn kind(&self) -> EventKind {
        self.header.event_kind().expect("valid kind")
    }
    fn direction(&self) -> Direction {
        self.header.data_direction().expect("valid direction")
    }
    fn syscall(&self) -> SyscallKind {
        self.header.syscall_kind().expect("valid syscall")
    }
    fn is_data(&self) -> bool {
        self.kind() == EventKind::Data
    }
}

fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    u64::try_from(ts.tv_sec).expect("seconds") * 1_000_000_000
        + u64::try_from(ts.tv_nsec).expect("nanoseconds")
}

fn load_tracer() -> SocketTracer {
    let config = TracerConfig {
        payload_cap: PAYLOAD_CAP,
        ..TracerConfig::default()
    };
    SocketTracer::load(&config).expect("load socket tracer")
}

/// Polls the ring buffer until every child has exited, then drains what they
/// produced; returns the events of the children's processes.
fn capture_until_exit(
    tracer: &mut SocketTracer,
    children: &mut [&mut ScriptChild],
) -> Vec<Captured> {
    let pids: HashSet<u32> = children.iter().map(|c| c.pid()).collect();
    let mut events = Vec::new();
    let latest_exit_ns = Cell::new(0u64);
    let mut keep = |event: SocketEvent<'_>| {
        latest_exit_ns.set(latest_exit_ns.get().max(event.header.exit_ns));
        if pids.contains(&event.header.tgid) {
            events.push(Captured {
                header: event.header,
                payload: event.payload.to_vec(),
            });
        }
    };
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        tracer
            .poll(Duration::from_millis(50), &mut keep)
            .expect("poll ring buffer");
        let mut all_exited = true;
        for child in children.iter_mut() {
            all_exited &= child.poll_exit();
        }
        if all_exited {
            break;
        }
        if Instant::now() > deadline {
            for child in children.iter_mut() {
                child.kill();
            }
            panic!("children did not finish within {CHILD_TIMEOUT:?}");
        }
    }
    // Records are consumed in reservation order: the children's are all in once
    // the ring is empty or a record stamped after their exit shows up.
    let exited_ns = monotonic_now_ns();
    let grace = Instant::now() + DRAIN_GRACE;
    loop {
        let delivered = tracer
            .poll(Duration::from_millis(10), &mut keep)
            .expect("poll ring buffer");
        if delivered == 0 || latest_exit_ns.get() > exited_ns {
            break;
        }
        assert!(
            Instant::now() < grace,
            "ring buffer did not drain within {DRAIN_GRACE:?}"
        );
    }
    events
}

/// The libssl files in a process's maps, as that process names them.
fn mapped_libssl(pid: u32) -> Vec<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read child maps");
    let mut found: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let path = PathBuf::from(path);
        let is_libssl = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("libssl.so"));
        if is_libssl && !found.contains(&path) {
            found.push(path);
        }
    }
    found
}

fn file_id(path: &Path) -> (u64, u64) {
    let metadata =
        std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (metadata.dev(), metadata.ino())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn prefix(data: &[u8]) -> &[u8] {
    &data[..data.len().min(PAYLOAD_CAP as usize)]
}

/// What identifies a socket in an event: equal for its syscall and TLS events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketIdentity {
    fd: i32,
    sock_id: u64,
    family: u8,
    l4_proto: u8,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
}

impl SocketIdentity {
    fn of(h: &SocketEventHeader) -> SocketIdentity {
        SocketIdentity {
            fd: h.fd,
            sock_id: h.sock_id,
            family: h.family,
            l4_proto: h.l4_proto,
            local: (h.local_ip(), h.local_port),
            remote: (h.remote_ip(), h.remote_port),
        }
    }
}

/// The identity that all unflagged events of `fd` agree on, checked against the
/// ports the program reported. Events read after the connection was torn down
/// (curl's close_notify to a server that already closed: the RST arrives
/// within the send on loopback, and the kernel releases the local port before
/// the exit program reads it) are left out.
fn syscall_identity(
    events: &[Captured],
    fd: i32,
    local_port: u16,
    remote_port: u16,
    what: &str,
) -> SocketIdentity {
    let plain: Vec<&Captured> = events
        .iter()
        .filter(|e| e.header.fd == fd && !e.header.is_tls() && e.header.local_port != 0)
        .collect();
    assert!(
        plain.iter().any(|e| e.is_data()),
        "{what}: no syscall data events on fd {fd}"
    );
    let identity = SocketIdentity::of(&plain[0].header);
    for e in &plain {
        assert_eq!(SocketIdentity::of(&e.header), identity, "{what}: {e:?}");
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(identity.family, AF_INET, "{what}");
    assert_eq!(identity.l4_proto, IPPROTO_TCP, "{what}");
    assert_eq!(identity.local, (loopback, local_port), "{what}: local end");
    assert_eq!(
        identity.remote,
        (loopback, remote_port),
        "{what}: remote end"
    );
    assert_ne!(identity.sock_id, 0, "{what}");
    identity
}

/// The TLS events of one socket and direction, in call order.
fn tls_events<'a>(
    events: &'a [Captured],
    identity: &SocketIdentity,
    direction: Direction,
) -> Vec<&'a Captured> {
    let mut mine: Vec<&Captured> = events
        .iter()
        .filter(|e| e.header.is_tls() && e.header.fd == identity.fd && e.direction() == direction)
        .collect();
    mine.sort_by_key(|e| e.header.enter_ns);
    mine
}

/// Invariants of every TLS event.
fn check_tls_event(e: &Captured, comm: &str, identities: &[SocketIdentity]) {
    let h = &e.header;
    assert_eq!(h.flags, FLAG_TLS, "flags of {e:?}");
    assert_eq!(e.kind(), EventKind::Data, "kind of {e:?}");
    assert_eq!(h.tcp_seq, 0, "TLS plaintext has no tcp_seq: {e:?}");
    assert_eq!(h.comm_str(), comm, "comm of {e:?}");
    assert_eq!(h.payload_len as usize, e.payload.len());
    assert!(
        h.payload_len <= PAYLOAD_CAP && h.payload_len <= h.byte_count,
        "payload length of {e:?}"
    );
    assert!(
        h.exit_ns >= h.enter_ns && h.enter_ns > 0,
        "timestamps of {e:?}"
    );
    let expected_syscalls = match e.direction() {
        Direction::Egress => [SyscallKind::SslWrite, SyscallKind::SslWriteEx],
        Direction::Ingress => [SyscallKind::SslRead, SyscallKind::SslReadEx],
        Direction::None => panic!("TLS event without direction: {e:?}"),
    };
    assert!(expected_syscalls.contains(&e.syscall()), "syscall of {e:?}");
    assert!(
        identities.contains(&SocketIdentity::of(h)),
        "TLS event whose socket identity matches none of the syscall events' \
         {identities:#?}: {e:?}"
    );
}

/// Unflagged events of the same socket and thread made while the TLS call ran.
fn syscalls_inside<'a>(events: &'a [Captured], tls: &Captured) -> Vec<&'a Captured> {
    events
        .iter()
        .filter(|e| {
            !e.header.is_tls()
                && e.is_data()
                && e.header.fd == tls.header.fd
                && e.header.tid == tls.header.tid
                && e.header.enter_ns >= tls.header.enter_ns
                && e.header.exit_ns <= tls.header.exit_ns
        })
        .collect()
}

/// Checks the pair script's events: `pid`'s TLS events against its report.
fn check_pair(report: &Report, events: &[Captured], pid: u32) {
    let events: Vec<Captured> = events
        .iter()
        .filter(|e| e.header.tgid == pid)
        .cloned()
        .collect();
    let client_port = u16::try_from(report.int("conn", 1)).expect("port");
    let listen_port = u16::try_from(report.int("conn", 3)).expect("port");
    let client = syscall_identity(
        &events,
        i32::try_from(report.int("conn", 0)).expect("fd"),
        client_port,
        listen_port,
        "client socket",
    );
    let server = syscall_identity(
        &events,
        i32::try_from(report.int("conn", 2)).expect("fd"),
        listen_port,
        client_port,
        "server socket",
    );
    assert_ne!(client.sock_id, server.sock_id);

    let tls: Vec<&Captured> = events.iter().filter(|e| e.header.is_tls()).collect();
    for e in &tls {
        check_tls_event(e, "python3", &[client, server]);
        // CPython's ssl module calls the _ex variants.
        assert!(
            matches!(
                e.syscall(),
                SyscallKind::SslWriteEx | SyscallKind::SslReadEx
            ),
            "python3 TLS event not from SSL_write_ex/SSL_read_ex: {e:?}"
        );
    }

    // The messages, per direction, in order.
    let mut c2s: Vec<(String, Vec<u8>)> = Vec::new();
    let mut s2c: Vec<(String, Vec<u8>)> = Vec::new();
    for step in report.all("step") {
        let entry = (step[0].clone(), from_hex(&step[3]));
        if step[1] == "client" {
            c2s.push(entry);
        } else {
            s2c.push(entry);
        }
    }
    assert_eq!((c2s.len(), s2c.len()), (2, 2), "steps: {:?}", report.lines);
    let split = report.hex("split", 0);
    let split_at = usize::try_from(report.int("split", 1)).expect("split length");
    assert_eq!(
        split_at, 100,
        "the first split read returned {split_at} bytes"
    );

    // Sends: one event per message, with the whole byte count and the prefix.
    let mut client_sends = c2s.clone();
    client_sends.push(("c2s-split".into(), split.clone()));
    // Reads: one per message (one record each), and the split message in two.
    let mut server_reads = c2s.clone();
    server_reads.push(("c2s-split first read".into(), split[..split_at].to_vec()));
    server_reads.push(("c2s-split buffered read".into(), split[split_at..].to_vec()));
    let expectations = [
        ("client egress", &client, Direction::Egress, &client_sends),
        ("server ingress", &server, Direction::Ingress, &server_reads),
        ("server egress", &server, Direction::Egress, &s2c),
        ("client ingress", &client, Direction::Ingress, &s2c),
    ];
    let mut checked = 0;
    for (what, identity, direction, messages) in expectations {
        let got = tls_events(&events, identity, direction);
        assert_eq!(
            got.len(),
            messages.len(),
            "{what}: one TLS event per message expected, got {got:#?}"
        );
        for ((name, data), e) in messages.iter().zip(&got) {
            assert_eq!(
                e.header.byte_count as usize,
                data.len(),
                "{what} {name}: byte count"
            );
            assert_eq!(e.payload, prefix(data), "{what} {name}: payload");
            let inside = syscalls_inside(&events, e);
            if name.ends_with("buffered read") {
                assert!(
                    inside.is_empty(),
                    "{what} {name}: expected a read served from OpenSSL's buffer, \
                     but it made syscalls {inside:#?}"
                );
            } else {
                assert!(
                    inside.iter().any(|s| s.direction() == direction),
                    "{what} {name}: no {direction:?} syscall inside the TLS call"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        tls.len(),
        "TLS events beyond the messages: {tls:#?}"
    );

    // The syscalls still report the ciphertext, unflagged, and no plaintext.
    for identity in [&client, &server] {
        for direction in [Direction::Egress, Direction::Ingress] {
            assert!(
                events.iter().any(|e| !e.header.is_tls()
                    && e.is_data()
                    && e.header.fd == identity.fd
                    && e.direction() == direction),
                "no ciphertext {direction:?} event on fd {}",
                identity.fd
            );
        }
    }
    for e in events.iter().filter(|e| !e.header.is_tls()) {
        assert_eq!(e.header.flags, 0, "flags of {e:?}");
        for tag in [&b"c2s-"[..], b"s2c-"] {
            assert!(
                !contains(&e.payload, tag),
                "plaintext in a syscall event: {e:?}"
            );
        }
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn python_pair_plaintext_is_captured_with_its_socket() {
    require_root();
    require_python_ssl();
    let cert = Certificate::generate();
    let mut tracer = load_tracer();
    let mut child = ScriptChild::python("python3 TLS pair", PAIR_SCRIPT, &cert);
    let ready = child.next_line();
    assert_eq!(
        ready.first().map(String::as_str),
        Some("ready"),
        "{ready:?}"
    );
    let pid = child.pid();

    // The libssl python's ssl module loaded, as discovery sees it.
    let mapped = mapped_libssl(pid);
    assert_eq!(
        mapped.len(),
        1,
        "libssl files mapped by python3: {mapped:?}"
    );
    let library = &mapped[0];
    let discovered = find_libssl_paths();
    assert!(
        discovered.iter().any(|p| file_id(p) == file_id(library)),
        "find_libssl_paths() {discovered:?} lacks {}",
        library.display()
    );

    tracer.attach_tls(library).expect("attach TLS probes");
    // Idempotent per file, whatever the path.
    tracer.attach_tls(library).expect("attach TLS probes again");
    let canonical = std::fs::canonicalize(library).expect("canonical libssl path");
    tracer
        .attach_tls(&canonical)
        .expect("attach TLS probes by canonical path");
    let libraries: Vec<_> = tracer.tls_libraries().cloned().collect();
    assert_eq!(libraries.len(), 1, "{libraries:?}");
    assert_eq!(
        libraries[0].symbols,
        ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"],
        "OpenSSL 3 exports all four hooked functions"
    );

    child.send_line("go");
    let events = capture_until_exit(&mut tracer, &mut [&mut child]);
    let report = child.report();
    check_pair(&report, &events, pid);
    assert_eq!(tracer.malformed_events(), 0);
    eprintln!(
        "python3 pair {pid}: {} events; lost {}; unattributed TLS {}; {}",
        events.len(),
        tracer.lost_events().expect("lost_events"),
        tracer.unattributed_tls_events().expect("tls_unattributed"),
        report.stderr.trim()
    );
}

#[test]
fn curl_request_and_response_plaintext_are_captured() {
    require_root();
    require_python_ssl();
    require_tool("curl", "curl");
    let cert = Certificate::generate();
    let mut tracer = load_tracer();
    let mut server = ScriptChild::python("python3 HTTPS server", HTTPS_SERVER_SCRIPT, &cert);
    let ready = server.next_line();
    assert_eq!(
        ready.first().map(String::as_str),
        Some("ready"),
        "{ready:?}"
    );
    let port: u16 = ready[2].parse().expect("port");

    // Every libssl in use, as the node does it: this includes the server's and
    // the distro's libssl that curl loads.
    let attached = tracer
        .attach_tls_discovered()
        .expect("attach discovered TLS libraries");
    assert!(attached >= 1, "nothing attached");
    for library in mapped_libssl(server.pid()) {
        assert!(
            tracer
                .tls_libraries()
                .any(|l| file_id(&l.path) == file_id(&library)),
            "the server's {} is not attached",
            library.display()
        );
    }
    assert_eq!(
        tracer.attach_tls_discovered().expect("attach again"),
        0,
        "a second scan attached files again"
    );

    let mut curl = ScriptChild::spawn(
        "curl",
        Command::new("curl").args([
            "-sk",
            "--http1.1",
            "--max-time",
            "60",
            &format!("https://127.0.0.1:{port}/"),
        ]),
    );
    let events = capture_until_exit(&mut tracer, &mut [&mut server, &mut curl]);
    let curl_pid = curl.pid();
    let server_pid = server.pid();
    let curl_report = curl.report();
    let report = server.report();
    let request = report.hex("request", 0);
    let response = report.hex("response", 0);
    let body = String::from_utf8(report.hex("body", 0)).expect("utf-8 body");
    let body_fields: Vec<String> = body.split_whitespace().map(str::to_owned).collect();
    assert_eq!(curl_report.lines, [body_fields], "curl output");
    assert!(
        request.starts_with(b"GET / HTTP/1.1\r\n"),
        "request {request:?}"
    );
    assert!(request.len() < PAYLOAD_CAP as usize && response.len() < PAYLOAD_CAP as usize);

    let server_events: Vec<Captured> = events
        .iter()
        .filter(|e| e.header.tgid == server_pid)
        .cloned()
        .collect();
    let curl_events: Vec<Captured> = events
        .iter()
        .filter(|e| e.header.tgid == curl_pid)
        .cloned()
        .collect();
    let curl_port = u16::try_from(report.int("conn", 1)).expect("port");
    let server_socket = syscall_identity(
        &server_events,
        i32::try_from(report.int("conn", 0)).expect("fd"),
        port,
        curl_port,
        "server socket",
    );
    let curl_fds: HashSet<i32> = curl_events
        .iter()
        .filter(|e| e.kind() == EventKind::Connect && e.header.remote_port == port)
        .map(|e| e.header.fd)
        .collect();
    assert_eq!(curl_fds.len(), 1, "curl connects: {curl_events:#?}");
    let curl_fd = *curl_fds.iter().next().expect("curl fd");
    let curl_socket = syscall_identity(&curl_events, curl_fd, curl_port, port, "curl socket");

    for e in server_events.iter().filter(|e| e.header.is_tls()) {
        check_tls_event(e, "python3", &[server_socket]);
    }
    for e in curl_events.iter().filter(|e| e.header.is_tls()) {
        check_tls_event(e, "curl", &[curl_socket]);
        // curl 7.88 calls SSL_write/SSL_read: this covers the non-_ex probes.
        assert!(
            matches!(e.syscall(), SyscallKind::SslWrite | SyscallKind::SslRead),
            "curl TLS event not from SSL_write/SSL_read: {e:?}"
        );
    }
    let joined = |events: &[Captured], identity: &SocketIdentity, direction| {
        let got = tls_events(events, identity, direction);
        for e in &got {
            assert_eq!(e.header.byte_count as usize, e.payload.len(), "{e:?}");
        }
        got.iter()
            .flat_map(|e| e.payload.clone())
            .collect::<Vec<u8>>()
    };
    let curl_sent = joined(&curl_events, &curl_socket, Direction::Egress);
    assert!(
        curl_sent.starts_with(b"GET / HTTP/1.1\r\n"),
        "curl's plaintext request: {:?}",
        String::from_utf8_lossy(&curl_sent)
    );
    assert_eq!(curl_sent, request, "curl's plaintext request");
    assert_eq!(
        joined(&server_events, &server_socket, Direction::Ingress),
        request,
        "the server's plaintext request"
    );
    assert_eq!(
        joined(&server_events, &server_socket, Direction::Egress),
        response,
        "the server's plaintext response"
    );
    assert_eq!(
        joined(&curl_events, &curl_socket, Direction::Ingress),
        response,
        "curl's plaintext response"
    );
    for e in events.iter().filter(|e| !e.header.is_tls()) {
        assert!(
            !contains(&e.payload, b"HTTP/1.1"),
            "plaintext in a syscall event: {e:?}"
        );
    }
}

#[test]
fn libssl_in_another_mount_namespace_is_found_and_traced() {
    require_root();
    require_python_ssl();
    require_tool("unshare", "util-linux");
    let cert = Certificate::generate();

    // The libssl python uses, copied onto a tmpfs that only the child's private
    // mount namespace sees, and loaded from there through LD_LIBRARY_PATH.
    let mut probe = ScriptChild::spawn(
        "python3 libssl probe",
        Command::new("python3").args([
            "-c",
            "import os, ssl, sys; print('ready', os.getpid(), flush=True); sys.stdin.readline()",
        ]),
    );
    probe.next_line();
    let system_libssl = mapped_libssl(probe.pid());
    probe.send_line("bye");
    assert_eq!(system_libssl.len(), 1, "{system_libssl:?}");
    let scratch = tempfile::tempdir().expect("temp dir");
    let private_dir = scratch.path().join("private-lib");
    std::fs::create_dir(&private_dir).expect("create mount point");
    let file_name = system_libssl[0].file_name().expect("libssl file name");
    let private_libssl = private_dir.join(file_name);

    let mut tracer = load_tracer();
    let mut child = ScriptChild::spawn(
        "python3 TLS pair in a private mount namespace",
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs \"$1\" && cp \"$2\" \"$1\"/ && \
                 LD_LIBRARY_PATH=\"$1\" exec python3 -c \"$3\" \"$4\" \"$5\"",
            )
            .arg("sh")
            .arg(&private_dir)
            .arg(&system_libssl[0])
            .arg(PAIR_SCRIPT)
            .arg(cert.cert())
            .arg(cert.key()),
    );
    let ready = child.next_line();
    assert_eq!(
        ready.first().map(String::as_str),
        Some("ready"),
        "{ready:?}"
    );
    let pid = child.pid();
    assert_eq!(
        mapped_libssl(pid),
        vec![private_libssl.clone()],
        "the child must use only its private libssl"
    );
    assert!(
        !private_libssl.exists(),
        "{} is visible outside the child's namespace",
        private_libssl.display()
    );

    let expected = Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(private_libssl.strip_prefix("/").expect("absolute path"));
    let discovered = find_libssl_paths();
    assert!(
        discovered.contains(&expected),
        "find_libssl_paths() {discovered:?} lacks {}",
        expected.display()
    );
    assert!(
        tracer
            .attach_tls_discovered()
            .expect("attach discovered TLS libraries")
            >= 1
    );
    assert!(
        tracer.tls_libraries().any(|l| l.path == expected),
        "{} not attached",
        expected.display()
    );

    child.send_line("go");
    let events = capture_until_exit(&mut tracer, &mut [&mut child]);
    let report = child.report();
    check_pair(&report, &events, pid);
}

/// Builds a shared object exporting `functions` (each `int f(void *, ...)`).
fn fake_library(dir: &Path, name: &str, functions: &[&str]) -> PathBuf {
    let source = dir.join(format!("{name}.c"));
    let library = dir.join(format!("{name}.so"));
    let body: String = functions
        .iter()
        .map(|f| format!("int {f}(void *ssl, void *buf, int num) {{ return num; }}\n"))
        .collect();
    std::fs::write(
        &source,
        format!("{body}int fm_unrelated(void) {{ return 0; }}\n"),
    )
    .expect("write fake library source");
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .expect("run cc (a C compiler is needed for this test)");
    assert!(
        output.status.success(),
        "building {name}.so failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    library
}

#[test]
fn attach_tls_skips_missing_functions_and_rejects_libraries_without_any() {
    require_root();
    let dir = tempfile::tempdir().expect("temp dir");
    // OpenSSL before 1.1.1: no _ex variants.
    let old = fake_library(dir.path(), "libssl-old", &["SSL_write", "SSL_read"]);
    let none = fake_library(dir.path(), "libnotssl", &[]);
    let mut tracer = load_tracer();

    tracer
        .attach_tls(&old)
        .expect("attach to a library without _ex");
    let libraries: Vec<_> = tracer.tls_libraries().cloned().collect();
    assert_eq!(libraries.len(), 1);
    assert_eq!(libraries[0].path, old);
    assert_eq!(libraries[0].symbols, ["SSL_write", "SSL_read"]);

    let error = tracer
        .attach_tls(&none)
        .expect_err("a library without any hooked function");
    assert!(
        matches!(error, flowmesh_ebpf::EbpfError::NoTlsSymbols { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("libnotssl.so"), "{error}");
    let error = tracer
        .attach_tls(&dir.path().join("missing.so"))
        .expect_err("a missing file");
    assert!(
        matches!(error, flowmesh_ebpf::EbpfError::TlsLibrary { .. }),
        "{error:?}"
    );
    let error = tracer.attach_tls(dir.path()).expect_err("a directory");
    assert!(
        matches!(error, flowmesh_ebpf::EbpfError::TlsLibrary { .. }),
        "{error:?}"
    );
    assert_eq!(
        tracer.tls_libraries().count(),
        1,
        "failed attaches left nothing behind"
    );
}
