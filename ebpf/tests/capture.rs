//! End-to-end capture (needs root): load the tracer, run a python3 child that talks
//! TCP (IPv4 and IPv6) and UDP to itself through every traced syscall and also
//! does pipe and file I/O, then check every event the child produced against what
//! it reports it did.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowmesh_ebpf::{
    AF_INET, AF_INET6, Direction, EventKind, IPPROTO_TCP, IPPROTO_UDP, SocketEvent,
    SocketEventHeader, SocketTracer, SyscallKind, TracerConfig,
};

const PAYLOAD_CAP: u32 = 1024;
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
const DRAIN_GRACE: Duration = Duration::from_secs(10);
const SELF_MARKER: &[u8] = b"SELF-MARKER-test-process-5b2d";
const PIPE_MARKER: &[u8] = b"PIPE-MARKER-7f3a";
const FILE_MARKER: &[u8] = b"FILE-MARKER-9c1e";

/// The child. Everything it prints goes to a pipe (stdout), which must not be
/// captured either. Each `step` line is one message: sent with one syscall,
/// received in lock-step (so each message starts a read).
const CHILD_SCRIPT: &str = r#"
import os, socket, sys, tempfile

def out(*fields):
    print(*fields, flush=True)

def recv_exactly(read, n):
    got = bytearray()
    while len(got) < n:
        chunk = read(n - len(got))
        if not chunk:
            raise EOFError("peer closed early")
        got += chunk
    return bytes(got)

def recv_into_exactly(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("peer closed early")
        got += k
    return bytes(buf)

def readv_exactly(fd, n):
    first = bytearray(n // 2)
    second = bytearray(n - n // 2)
    got = os.readv(fd, [first, second])
    data = bytes(first + second)[:got]
    return data + recv_exactly(lambda k: os.read(fd, k), n - got)

def msg(tag, n):
    head = (tag + ":").encode()
    return head + bytes((i * 31 + 7) % 251 for i in range(n - len(head)))

def sent(n, expected):
    assert n == expected, (n, expected)

out("pid", os.getpid())

# Non-socket I/O first, so that these fd numbers are never reused by a socket.
pr, pw = os.pipe()
os.write(pw, PIPE_MARKER)
assert os.read(pr, 100) == PIPE_MARKER
f = tempfile.TemporaryFile()
os.write(f.fileno(), FILE_MARKER)
os.lseek(f.fileno(), 0, 0)
assert os.read(f.fileno(), 100) == FILE_MARKER
sendfile_body = msg("sendfile-body", 300)
body = tempfile.TemporaryFile()
os.write(body.fileno(), sendfile_body)
out("nonsock_fds", pr, pw, f.fileno(), body.fileno())

lsn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lsn.bind(("127.0.0.1", 0))
lsn.listen(8)
listen_port = lsn.getsockname()[1]
cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
cli.connect(("127.0.0.1", listen_port))
srv, _ = lsn.accept()
cfd, sfd = cli.fileno(), srv.fileno()
out("tcp", cfd, cli.getsockname()[1], sfd, lsn.fileno(), listen_port)

def step(name, sender, send_sys, recv_sys, data, send, recv):
    send(data)
    got = recv(len(data))
    assert got == data, name
    out("step", name, sender, send_sys, recv_sys, data.hex())

d = msg("c2s-send", 100)
step("send", "client", "sendto", "recvfrom", d, lambda b: sent(cli.send(b), len(b)), lambda n: recv_exactly(srv.recv, n))
d = msg("c2s-sendto", 120)
step("sendto", "client", "sendto", "recvfrom", d,
     lambda b: sent(cli.sendto(b, ("127.0.0.1", listen_port)), len(b)), lambda n: recv_into_exactly(srv, n))
d = msg("c2s-sendmsg", 140)
step("sendmsg", "client", "sendmsg", "recvmsg", d,
     lambda b: sent(cli.sendmsg([b[:50], b[50:]]), len(b)), lambda n: recv_exactly(lambda k: srv.recvmsg(k)[0], n))
d = msg("c2s-write", 160)
step("write", "client", "write", "read", d,
     lambda b: sent(os.write(cfd, b), len(b)), lambda n: recv_exactly(lambda k: os.read(sfd, k), n))
d = msg("c2s-writev", 180)
step("writev", "client", "writev", "readv", d,
     lambda b: sent(os.writev(cfd, [b[:60], b[60:61], b[61:]]), len(b)), lambda n: readv_exactly(sfd, n))

d = msg("s2c-big", 10000)
step("big", "server", "sendto", "recvfrom", d,
     lambda b: sent(srv.send(b), len(b)), lambda n: recv_exactly(lambda k: cli.recv(k, socket.MSG_WAITALL), n))
d = msg("s2c-writev-across-iovecs", 1200)
step("writev-across", "server", "writev", "readv", d,
     lambda b: sent(os.writev(sfd, [b[:600], b[600:]]), len(b)), lambda n: readv_exactly(cfd, n))
d = msg("s2c-sendmsg", 200)
step("sendmsg-s2c", "server", "sendmsg", "recvmsg", d,
     lambda b: sent(srv.sendmsg([b[:1], b[1:]]), len(b)), lambda n: recv_exactly(lambda k: cli.recvmsg(k)[0], n))
step("sendfile", "server", "sendfile", "recvfrom", sendfile_body,
     lambda b: sent(os.sendfile(sfd, body.fileno(), 0, len(b)), len(b)), lambda n: recv_exactly(cli.recv, n))
d = msg("s2c-write", 90)
step("write-s2c", "server", "write", "read", d,
     lambda b: sent(os.write(sfd, b), len(b)), lambda n: recv_exactly(lambda k: os.read(cfd, k), n))

u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u2.bind(("127.0.0.1", 0))
ping = msg("udp-ping", 64)
pong = msg("udp-pong", 72)
sent(u1.sendto(ping, u2.getsockname()), len(ping))
data, peer = u2.recvfrom(2048)
assert data == ping and peer == u1.getsockname()
sent(u2.sendmsg([pong[:8], pong[8:]], [], 0, peer), len(pong))
data, _, _, peer2 = u1.recvmsg(2048)
assert data == pong and peer2 == u2.getsockname()
out("udp", u1.fileno(), u1.getsockname()[1], u2.fileno(), u2.getsockname()[1], ping.hex(), pong.hex())

nb = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
nb.setblocking(False)
rc = nb.connect_ex(("127.0.0.1", listen_port))
acc, _ = lsn.accept()
out("nonblocking", rc, nb.fileno(), nb.getsockname()[1], acc.fileno())

l6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
l6.bind(("::1", 0))
l6.listen(1)
c6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
c6.connect(l6.getsockname()[:2])
s6, _ = l6.accept()
v6 = msg("v6-hello", 48)
sent(c6.send(v6), len(v6))
assert recv_exactly(s6.recv, len(v6)) == v6
out("v6", c6.fileno(), c6.getsockname()[1], s6.fileno(), l6.fileno(), l6.getsockname()[1], v6.hex())

for sock in (cli, srv, nb, acc, c6, s6, l6, u1, u2, lsn):
    sock.close()
os.close(pr)
os.close(pw)
f.close()
body.close()
out("done")
"#;

/// An event copied out of the ring buffer.
#[derive(Debug, Clone)]
struct Captured {
    header: SocketEventHeader,
    payload: Vec<u8>,
}

impl Captured {
    fn kind(&self) -> EventKind {
        EventKind::try_from(self.header.kind).expect("valid kind")
    }
    fn direction(&self) -> Direction {
        Direction::try_from(self.header.direction).expect("valid direction")
    }
    fn syscall(&self) -> SyscallKind {
        SyscallKind::try_from(self.header.syscall).expect("valid syscall")
    }
}

#[derive(Debug)]
struct Step {
    name: String,
    from_client: bool,
    send_syscall: SyscallKind,
    recv_syscall: SyscallKind,
    data: Vec<u8>,
}

/// What the child printed.
#[derive(Debug, Default)]
struct Report {
    lines: HashMap<String, Vec<String>>,
    steps: Vec<Step>,
}

impl Report {
    fn parse(stdout: &str) -> Report {
        let mut report = Report::default();
        for line in stdout.lines() {
            let mut fields = line.split_whitespace().map(str::to_owned);
            let Some(key) = fields.next() else { continue };
            let rest: Vec<String> = fields.collect();
            if key == "step" {
                assert_eq!(rest.len(), 5, "bad step line {line:?}");
                report.steps.push(Step {
                    name: rest[0].clone(),
                    from_client: rest[1] == "client",
                    send_syscall: syscall_named(&rest[2]),
                    recv_syscall: syscall_named(&rest[3]),
                    data: from_hex(&rest[4]),
                });
            } else {
                report.lines.insert(key, rest);
            }
        }
        report
    }

    fn field(&self, key: &str, index: usize) -> &str {
        self.lines
            .get(key)
            .and_then(|fields| fields.get(index))
            .unwrap_or_else(|| panic!("child report lacks {key}[{index}]"))
    }

    fn int(&self, key: &str, index: usize) -> i64 {
        self.field(key, index).parse().expect("integer field")
    }

    fn fd(&self, key: &str, index: usize) -> i32 {
        i32::try_from(self.int(key, index)).expect("fd")
    }

    fn port(&self, key: &str, index: usize) -> u16 {
        u16::try_from(self.int(key, index)).expect("port")
    }

    fn hex(&self, key: &str, index: usize) -> Vec<u8> {
        from_hex(self.field(key, index))
    }
}

fn syscall_named(name: &str) -> SyscallKind {
    match name {
        "read" => SyscallKind::Read,
        "write" => SyscallKind::Write,
        "readv" => SyscallKind::Readv,
        "writev" => SyscallKind::Writev,
        "sendto" => SyscallKind::Sendto,
        "recvfrom" => SyscallKind::Recvfrom,
        "sendmsg" => SyscallKind::Sendmsg,
        "recvmsg" => SyscallKind::Recvmsg,
        "sendfile" => SyscallKind::Sendfile,
        other => panic!("unknown syscall name {other}"),
    }
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn expected_payload(data: &[u8]) -> &[u8] {
    &data[..data.len().min(PAYLOAD_CAP as usize)]
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

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "tests/capture.rs loads eBPF programs and must run as root (euid is {euid}); \
         run the test suite as root (CI does)"
    );
}

/// Talks to itself over loopback TCP: the tracer excludes this process, so none
/// of it may show up.
fn generate_own_traffic() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind own listener");
    let mut client =
        TcpStream::connect(listener.local_addr().expect("addr")).expect("connect to own listener");
    let (mut server, _) = listener.accept().expect("accept own connection");
    client.write_all(SELF_MARKER).expect("write own marker");
    let mut buf = vec![0u8; SELF_MARKER.len()];
    server.read_exact(&mut buf).expect("read own marker");
    assert_eq!(buf, SELF_MARKER);
}

fn read_all_in_thread(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

fn spawn_child() -> Child {
    let python_bytes = |marker: &[u8]| format!("b\"{}\"", String::from_utf8_lossy(marker));
    let script = CHILD_SCRIPT
        .replace("PIPE_MARKER", &python_bytes(PIPE_MARKER))
        .replace("FILE_MARKER", &python_bytes(FILE_MARKER));
    Command::new("/usr/bin/env")
        .args(["python3", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3 (it must be on PATH)")
}

/// Runs the child under the tracer; returns its report and the events from
/// python3 processes and from this process.
fn capture_child(tracer: &mut SocketTracer) -> (Report, Vec<Captured>) {
    let own_pid = std::process::id();
    let mut child = spawn_child();
    let child_pid = child.id();
    let stdout = read_all_in_thread(child.stdout.take().expect("child stdout"));
    let stderr = read_all_in_thread(child.stderr.take().expect("child stderr"));

    let mut events = Vec::new();
    let latest_exit_ns = Cell::new(0u64);
    let mut keep = |event: SocketEvent<'_>| {
        let header = event.header;
        latest_exit_ns.set(latest_exit_ns.get().max(header.exit_ns));
        let interesting = header.tgid == child_pid
            || header.tgid == own_pid
            || header.comm_str() == "python3"
            || contains(event.payload, SELF_MARKER);
        if interesting {
            events.push(Captured {
                header,
                payload: event.payload.to_vec(),
            });
        }
    };

    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        tracer
            .poll(Duration::from_millis(50), &mut keep)
            .expect("poll ring buffer");
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 child did not finish within {CHILD_TIMEOUT:?}");
        }
    };
    // Every record of the child was reserved before it exited, so before
    // `exited_ns`; records are consumed in reservation order, so the child's are
    // all in once the ring is empty or a record stamped after `exited_ns` shows up
    // (other processes keep producing).
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

    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    assert!(
        status.success(),
        "python3 child failed ({status}):\n{stderr}"
    );
    let report = Report::parse(&stdout);
    assert!(
        report.lines.contains_key("done"),
        "child did not finish its script:\n{stdout}\n{stderr}"
    );
    (report, events)
}

struct Socket {
    fd: i32,
    local_port: u16,
    remote_port: u16,
}

/// All events of one socket fd (as the child reported it), checked for
/// consistent addressing; sorted by syscall entry time.
fn socket_events<'a>(
    events: &'a [Captured],
    socket: &Socket,
    family: u8,
    l4_proto: u8,
) -> Vec<&'a Captured> {
    let mut mine: Vec<&Captured> = events.iter().filter(|e| e.header.fd == socket.fd).collect();
    mine.sort_by_key(|e| e.header.enter_ns);
    assert!(!mine.is_empty(), "no events for fd {}", socket.fd);
    let loopback = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let sock_id = mine[0].header.sock_id;
    for e in &mine {
        let h = &e.header;
        assert_eq!(h.family, family, "family of {e:?}");
        assert_eq!(h.l4_proto, l4_proto, "l4 protocol of {e:?}");
        assert_eq!(h.local_port, socket.local_port, "local port of {e:?}");
        assert_eq!(h.local_ip(), loopback, "local address of {e:?}");
        assert_eq!(
            h.sock_id, sock_id,
            "sock_id changes within fd {}: {e:?}",
            socket.fd
        );
        // Unconnected UDP sockets report their peer only on data events.
        if l4_proto == IPPROTO_TCP || e.kind() == EventKind::Data {
            assert_eq!(h.remote_port, socket.remote_port, "remote port of {e:?}");
            assert_eq!(h.remote_ip(), loopback, "remote address of {e:?}");
        }
    }
    assert_ne!(sock_id, 0);
    mine
}

fn only<'a>(events: &[&'a Captured], kind: EventKind, what: &str) -> &'a Captured {
    let matching: Vec<&Captured> = events
        .iter()
        .copied()
        .filter(|e| e.kind() == kind)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected exactly one {kind:?} event for {what}: {matching:?}"
    );
    matching[0]
}

fn data(events: &[&Captured], direction: Direction) -> Vec<Captured> {
    events
        .iter()
        .filter(|e| e.kind() == EventKind::Data && e.direction() == direction)
        .map(|e| (*e).clone())
        .collect()
}

/// Checks one direction of a TCP connection: every step was one egress event
/// with the right syscall, byte count, payload prefix and contiguous sequence
/// numbers; the receiver's reads carry the same sequence numbers and payloads
/// that are slices of the same byte stream.
fn check_tcp_direction(steps: &[&Step], egress: &[Captured], ingress: &[Captured], what: &str) {
    assert_eq!(
        egress.len(),
        steps.len(),
        "{what}: one egress event per message expected, got {egress:#?}"
    );
    let stream: Vec<u8> = steps.iter().flat_map(|s| s.data.iter().copied()).collect();
    let first_seq = egress[0].header.tcp_seq;
    let mut next_seq = first_seq;
    for (step, event) in steps.iter().zip(egress) {
        let h = &event.header;
        assert_eq!(
            event.syscall(),
            step.send_syscall,
            "{what} {}: syscall",
            step.name
        );
        assert_eq!(
            h.byte_count as usize,
            step.data.len(),
            "{what} {}: byte count",
            step.name
        );
        if step.send_syscall == SyscallKind::Sendfile {
            assert_eq!(
                h.payload_len, 0,
                "{what} {}: sendfile carries no payload",
                step.name
            );
        } else {
            assert_eq!(
                event.payload,
                expected_payload(&step.data),
                "{what} {}: payload",
                step.name
            );
            assert_eq!(h.payload_len as usize, expected_payload(&step.data).len());
        }
        assert_eq!(
            h.tcp_seq, next_seq,
            "{what} {}: egress sequence is not contiguous",
            step.name
        );
        next_seq = next_seq.wrapping_add(h.byte_count);

        // The receiver's first read of this message starts at the same byte.
        let reads: Vec<&Captured> = ingress
            .iter()
            .filter(|i| i.header.tcp_seq == h.tcp_seq)
            .collect();
        assert_eq!(
            reads.len(),
            1,
            "{what} {}: ingress reads starting at seq {}: {reads:#?}",
            step.name,
            h.tcp_seq
        );
        assert_eq!(
            reads[0].syscall(),
            step.recv_syscall,
            "{what} {}: receiving syscall",
            step.name
        );
    }

    let mut received = 0usize;
    for event in ingress {
        let h = &event.header;
        let offset = h.tcp_seq.wrapping_sub(first_seq) as usize;
        let count = h.byte_count as usize;
        assert!(
            offset + count <= stream.len(),
            "{what}: ingress {event:?} beyond the stream"
        );
        let expected = expected_payload(&stream[offset..offset + count]);
        assert_eq!(
            event.payload, expected,
            "{what}: ingress payload at stream offset {offset}"
        );
        received += count;
    }
    assert_eq!(
        received,
        stream.len(),
        "{what}: ingress byte counts do not add up to what was sent"
    );
}

#[test]
fn captures_tcp_udp_and_lifecycle_of_a_child_process() {
    require_root();
    let config = TracerConfig {
        payload_cap: PAYLOAD_CAP,
        ..TracerConfig::default()
    };
    assert_eq!(config.exclude_tgid, std::process::id());
    let mut tracer = SocketTracer::load(&config).expect("load socket tracer");
    generate_own_traffic();
    let (report, all_events) = capture_child(&mut tracer);
    let own_pid = std::process::id();

    // The tracer's own process is excluded in the kernel.
    let own: Vec<&Captured> = all_events
        .iter()
        .filter(|e| e.header.tgid == own_pid || contains(&e.payload, SELF_MARKER))
        .collect();
    assert!(
        own.is_empty(),
        "events from the excluded test process: {own:#?}"
    );

    let pid = u32::try_from(report.int("pid", 0)).expect("pid");
    let events: Vec<Captured> = all_events
        .into_iter()
        .filter(|e| e.header.tgid == pid)
        .collect();
    assert!(!events.is_empty(), "no events from the child {pid}");

    // Generic invariants of every event of the child.
    let nonsock_fds: Vec<i32> = (0..4).map(|i| report.fd("nonsock_fds", i)).collect();
    for e in &events {
        let h = &e.header;
        assert_eq!(h.comm_str(), "python3", "comm of {e:?}");
        assert!(
            !nonsock_fds.contains(&h.fd),
            "event for a pipe or file fd: {e:?}"
        );
        assert!(
            !contains(&e.payload, PIPE_MARKER) && !contains(&e.payload, FILE_MARKER),
            "pipe or file bytes captured: {e:?}"
        );
        let _ = (e.kind(), e.syscall(), e.direction());
        assert!(matches!(h.family, AF_INET | AF_INET6), "family of {e:?}");
        assert!(
            matches!(h.l4_proto, IPPROTO_TCP | IPPROTO_UDP),
            "l4 protocol of {e:?}"
        );
        assert!(
            h.payload_len <= h.byte_count && h.payload_len <= PAYLOAD_CAP,
            "payload length of {e:?}"
        );
        assert_eq!(h.payload_len as usize, e.payload.len());
        assert!(
            h.exit_ns >= h.enter_ns && h.enter_ns > 0,
            "timestamps of {e:?}"
        );
        assert_eq!(h.tid, pid, "the child is single-threaded: {e:?}");
        if e.kind() == EventKind::Data {
            assert_ne!(e.direction(), Direction::None);
            if h.l4_proto == IPPROTO_UDP {
                assert_eq!(h.tcp_seq, 0, "UDP events carry no sequence number: {e:?}");
            }
        } else {
            assert_eq!(
                (e.direction(), h.byte_count, h.payload_len),
                (Direction::None, 0, 0)
            );
        }
    }

    // --- the IPv4 TCP connection
    let listen_port = report.port("tcp", 4);
    let client = Socket {
        fd: report.fd("tcp", 0),
        local_port: report.port("tcp", 1),
        remote_port: listen_port,
    };
    let server = Socket {
        fd: report.fd("tcp", 2),
        local_port: listen_port,
        remote_port: report.port("tcp", 1),
    };
    let client_events = socket_events(&events, &client, AF_INET, IPPROTO_TCP);
    let server_events = socket_events(&events, &server, AF_INET, IPPROTO_TCP);
    assert_ne!(
        client_events[0].header.sock_id,
        server_events[0].header.sock_id
    );

    let connect = only(&client_events, EventKind::Connect, "the client");
    assert_eq!(connect.syscall(), SyscallKind::Connect);
    let accept = only(&server_events, EventKind::Accept, "the server");
    assert!(matches!(
        accept.syscall(),
        SyscallKind::Accept | SyscallKind::Accept4
    ));
    for (what, mine) in [("client", &client_events), ("server", &server_events)] {
        let close = only(mine, EventKind::Close, what);
        assert_eq!(close.syscall(), SyscallKind::Close);
        assert!(
            std::ptr::eq(*mine.last().expect("events"), close),
            "{what}: close is not the last event"
        );
    }
    assert!(
        matches!(client_events[0].kind(), EventKind::Connect),
        "connect is not the client's first event"
    );
    assert!(matches!(server_events[0].kind(), EventKind::Accept));

    let client_steps: Vec<&Step> = report.steps.iter().filter(|s| s.from_client).collect();
    let server_steps: Vec<&Step> = report.steps.iter().filter(|s| !s.from_client).collect();
    assert_eq!(
        (client_steps.len(), server_steps.len()),
        (5, 5),
        "child steps: {:?}",
        report.steps
    );
    check_tcp_direction(
        &client_steps,
        &data(&client_events, Direction::Egress),
        &data(&server_events, Direction::Ingress),
        "client->server",
    );
    check_tcp_direction(
        &server_steps,
        &data(&server_events, Direction::Egress),
        &data(&client_events, Direction::Ingress),
        "server->client",
    );

    // The 10 000-byte message: counted in full, payload capped to its first 1024 bytes.
    let big = report
        .steps
        .iter()
        .find(|s| s.name == "big")
        .expect("big step");
    assert_eq!(big.data.len(), 10_000);
    let big_sends: Vec<Captured> = data(&server_events, Direction::Egress)
        .into_iter()
        .filter(|e| e.header.byte_count == 10_000)
        .collect();
    let big_reads: Vec<Captured> = data(&client_events, Direction::Ingress)
        .into_iter()
        .filter(|e| e.header.byte_count == 10_000)
        .collect();
    assert_eq!(big_sends.len(), 1, "the 10 000-byte send: {big_sends:#?}");
    assert_eq!(
        big_reads.len(),
        1,
        "the 10 000-byte MSG_WAITALL read: {big_reads:#?}"
    );
    for event in big_sends.iter().chain(&big_reads) {
        assert_eq!(event.header.payload_len, PAYLOAD_CAP);
        assert_eq!(event.payload, &big.data[..PAYLOAD_CAP as usize]);
    }

    // --- UDP: unconnected sockets; the peer comes from the sockaddr arguments.
    let (u1_port, u2_port) = (report.port("udp", 1), report.port("udp", 3));
    let u1 = Socket {
        fd: report.fd("udp", 0),
        local_port: u1_port,
        remote_port: u2_port,
    };
    let u2 = Socket {
        fd: report.fd("udp", 2),
        local_port: u2_port,
        remote_port: u1_port,
    };
    let (ping, pong) = (report.hex("udp", 4), report.hex("udp", 5));
    let u1_events = socket_events(&events, &u1, AF_INET, IPPROTO_UDP);
    let u2_events = socket_events(&events, &u2, AF_INET, IPPROTO_UDP);
    let expect_udp = |mine: &[&Captured], direction, syscall, bytes: &[u8], what: &str| {
        let all = data(mine, direction);
        assert_eq!(all.len(), 1, "{what}: {all:#?}");
        assert_eq!(all[0].syscall(), syscall, "{what}");
        assert_eq!(all[0].header.byte_count as usize, bytes.len(), "{what}");
        assert_eq!(all[0].payload, bytes, "{what}");
    };
    expect_udp(
        &u1_events,
        Direction::Egress,
        SyscallKind::Sendto,
        &ping,
        "udp sendto",
    );
    expect_udp(
        &u2_events,
        Direction::Ingress,
        SyscallKind::Recvfrom,
        &ping,
        "udp recvfrom",
    );
    expect_udp(
        &u2_events,
        Direction::Egress,
        SyscallKind::Sendmsg,
        &pong,
        "udp sendmsg",
    );
    expect_udp(
        &u1_events,
        Direction::Ingress,
        SyscallKind::Recvmsg,
        &pong,
        "udp recvmsg",
    );
    only(&u1_events, EventKind::Close, "udp socket 1");
    only(&u2_events, EventKind::Close, "udp socket 2");

    // --- non-blocking connect (EINPROGRESS) and its accepted socket
    let nb_rc = report.int("nonblocking", 0);
    assert!(
        nb_rc == 0 || nb_rc == i64::from(libc::EINPROGRESS),
        "connect_ex returned {nb_rc}"
    );
    let nb_port = report.port("nonblocking", 2);
    let nb_events = socket_events(
        &events,
        &Socket {
            fd: report.fd("nonblocking", 1),
            local_port: nb_port,
            remote_port: listen_port,
        },
        AF_INET,
        IPPROTO_TCP,
    );
    only(&nb_events, EventKind::Connect, "the non-blocking client");
    only(&nb_events, EventKind::Close, "the non-blocking client");
    let acc_events = socket_events(
        &events,
        &Socket {
            fd: report.fd("nonblocking", 3),
            local_port: listen_port,
            remote_port: nb_port,
        },
        AF_INET,
        IPPROTO_TCP,
    );
    only(&acc_events, EventKind::Accept, "the second accepted socket");

    // --- IPv6 TCP
    let v6_listen_port = report.port("v6", 4);
    let v6_client_port = report.port("v6", 1);
    let v6_payload = report.hex("v6", 5);
    let c6_events = socket_events(
        &events,
        &Socket {
            fd: report.fd("v6", 0),
            local_port: v6_client_port,
            remote_port: v6_listen_port,
        },
        AF_INET6,
        IPPROTO_TCP,
    );
    let s6_events = socket_events(
        &events,
        &Socket {
            fd: report.fd("v6", 2),
            local_port: v6_listen_port,
            remote_port: v6_client_port,
        },
        AF_INET6,
        IPPROTO_TCP,
    );
    only(&c6_events, EventKind::Connect, "the IPv6 client");
    only(&s6_events, EventKind::Accept, "the IPv6 server");
    let c6_sent = data(&c6_events, Direction::Egress);
    let s6_read = data(&s6_events, Direction::Ingress);
    assert_eq!(c6_sent.len(), 1);
    assert_eq!(c6_sent[0].payload, v6_payload);
    assert_eq!(s6_read.len(), 1);
    assert_eq!(s6_read[0].payload, v6_payload);
    assert_eq!(c6_sent[0].header.tcp_seq, s6_read[0].header.tcp_seq);

    // --- listeners: only their close is reported (accepts carry the new fd).
    for (fd, port) in [
        (report.fd("tcp", 3), listen_port),
        (report.fd("v6", 3), v6_listen_port),
    ] {
        let listener: Vec<&Captured> = events.iter().filter(|e| e.header.fd == fd).collect();
        assert_eq!(listener.len(), 1, "listener fd {fd}: {listener:#?}");
        assert_eq!(listener[0].kind(), EventKind::Close);
        assert_eq!(
            (
                listener[0].header.local_port,
                listener[0].header.remote_port
            ),
            (port, 0)
        );
    }

    let lost = tracer.lost_events().expect("read lost_events");
    assert_eq!(tracer.malformed_events(), 0);
    eprintln!(
        "child {pid}: {} events checked; lost_events {lost}; non-blocking connect returned {nb_rc}",
        events.len()
    );
}
