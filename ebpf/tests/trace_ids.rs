//! Syscall trace ids and the network-namespace filter in the real kernel (needs root).
//!
//! A python3 child plays three parts on loopback, one thread each: a client that sends two
//! requests on one keep-alive connection, a service (the main thread) that serves each by
//! asking an upstream, and the upstream. The service thread's four syscalls per request
//! (read the request, write downstream, read the reply, write the response) must carry one
//! id, a different one per request; the upstream's own server work gets its own id, and the
//! client, which never read a request, carries none on its writes.
//!
//! The tracer is loaded with this process's network namespace as its filter, and a second
//! child in a namespace of its own (`unshare -n`) does the same traffic: none of it may be
//! seen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowmesh_ebpf::{Direction, EventKind, SocketEvent, SocketTracer, TracerConfig};

const SCRIPT: &str = r#"
import socket, sys, threading
tag = sys.argv[1].encode()

def exactly(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise EOFError
        got += chunk
    return got

front = socket.socket(); front.bind(("127.0.0.1", 0)); front.listen()
up = socket.socket(); up.bind(("127.0.0.1", 0)); up.listen()

def upstream():
    conn, _ = up.accept()
    for _ in range(2):
        exactly(conn, 10)
        conn.sendall(tag + b"-UPREPL")

def client():
    c = socket.create_connection(front.getsockname())
    for i in (1, 2):
        c.sendall(tag + b"-REQ" + str(i).encode() + b"__")
        exactly(c, 10)

threads = [threading.Thread(target=upstream), threading.Thread(target=client)]
for t in threads:
    t.start()
server, _ = front.accept()
down = socket.create_connection(up.getsockname())
for i in (1, 2):
    exactly(server, 11)
    down.sendall(tag + b"-DOWN_")
    exactly(down, 11)
    server.sendall(tag + b"-RESP_")
for t in threads:
    t.join()
print("done", flush=True)
"#;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF programs: run it as root"
    );
}

#[derive(Debug, Clone)]
struct Seen {
    tid: u32,
    tgid: u32,
    direction: Direction,
    trace: u64,
    payload: Vec<u8>,
}

/// Keeps the data events of either child (their payloads start with its tag).
fn keep(seen: &mut Vec<Seen>, ev: SocketEvent<'_>) {
    let h = ev.header;
    let tagged = ev.payload.starts_with(b"HERE-") || ev.payload.starts_with(b"ELSE-");
    if h.event_kind() == Some(EventKind::Data) && tagged {
        seen.push(Seen {
            tid: h.tid,
            tgid: h.tgid,
            direction: h.data_direction().unwrap(),
            trace: h.syscall_trace_id,
            payload: ev.payload.to_vec(),
        });
    }
}

#[test]
fn ids_follow_a_request_through_a_thread_and_other_namespaces_are_filtered() {
    require_root();
    let own_netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
    let mut tracer = SocketTracer::load(&TracerConfig {
        netns_inode: own_netns,
        ..TracerConfig::default()
    })
    .expect("load tracer");

    let mut here = Command::new("python3")
        .args(["-c", SCRIPT, "HERE"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    // Another network namespace with its loopback up: the same traffic, never traced.
    let mut other = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            "ip link set lo up && exec python3 -c \"$0\" ELSE",
        ])
        .arg(SCRIPT)
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) and ip (iproute2)");

    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut exited = Vec::new();
    while exited.len() < 2 {
        tracer
            .poll(Duration::from_millis(50), &mut |ev: SocketEvent<'_>| {
                keep(&mut seen, ev)
            })
            .unwrap();
        for child in [&mut here, &mut other] {
            if let Some(status) = child.try_wait().unwrap()
                && !exited.contains(&child.id())
            {
                assert!(status.success(), "child failed: {status}");
                exited.push(child.id());
            }
        }
        assert!(Instant::now() < deadline, "children did not finish");
    }
    // drain what is still in the ring
    for _ in 0..5 {
        tracer
            .poll(Duration::from_millis(50), &mut |ev: SocketEvent<'_>| {
                keep(&mut seen, ev)
            })
            .unwrap();
    }

    assert!(
        !seen.iter().any(|s| s.payload.starts_with(b"ELSE-")),
        "traffic of another network namespace was traced"
    );
    let pid = here.id();
    let one = |payload: &[u8], direction: Direction| -> Seen {
        let matching: Vec<_> = seen
            .iter()
            .filter(|s| s.tgid == pid && s.payload == payload && s.direction == direction)
            .collect();
        assert_eq!(matching.len(), 1, "{payload:?} {direction:?}: {seen:#?}");
        matching[0].clone()
    };
    // the i-th ('1' or '2') of two identical messages, by the order they were captured
    let one_of = |payload: &[u8], direction: Direction, i: u8| -> Seen {
        let matching: Vec<_> = seen
            .iter()
            .filter(|s| s.tgid == pid && s.payload == payload && s.direction == direction)
            .collect();
        assert_eq!(matching.len(), 2, "{payload:?} {direction:?}: {seen:#?}");
        matching[usize::from(i - b'1')].clone()
    };
    use Direction::{Egress, Ingress};
    let mut ids = Vec::new();
    for i in [b'1', b'2'] {
        let request = [b"HERE-REQ".as_slice(), &[i], b"__"].concat();
        // the service is the main thread
        let read_request = one(&request, Ingress);
        let responds = one_of(b"HERE-RESP_", Egress, i);
        assert_eq!(read_request.tid, pid);
        assert_ne!(read_request.trace, 0);
        assert_eq!(responds.trace, read_request.trace);
        ids.push(read_request.trace);
        // the client never read a request before it wrote: no trace
        let sent = one(&request, Egress);
        assert_ne!(sent.tid, pid);
        if i == b'1' {
            assert_eq!(sent.trace, 0, "the client's first request carries no id");
        }
    }
    assert_ne!(ids[0], ids[1], "each request gets its own id");
    // The downstream request and its reply carry the id of the request being served: the
    // two DOWN writes and UPREPL reads are told apart by order.
    let service = |payload: &[u8], direction| -> Vec<u64> {
        let mut v: Vec<_> = seen
            .iter()
            .filter(|s| {
                s.tgid == pid && s.tid == pid && s.payload == payload && s.direction == direction
            })
            .map(|s| s.trace)
            .collect();
        v.sort();
        v
    };
    let mut want = ids.clone();
    want.sort();
    assert_eq!(service(b"HERE-DOWN_", Egress), want, "{seen:#?}");
    assert_eq!(service(b"HERE-UPREPL", Ingress), want, "{seen:#?}");
    // the upstream serves in its own thread: its own ids, one per request it read
    let upstream: Vec<_> = seen
        .iter()
        .filter(|s| s.tgid == pid && s.payload == b"HERE-DOWN_" && s.direction == Ingress)
        .collect();
    assert_eq!(upstream.len(), 2);
    for u in &upstream {
        assert_ne!(u.tid, pid);
        assert!(u.trace != 0 && !ids.contains(&u.trace));
    }
    assert_eq!(here.wait().unwrap().code(), Some(0));
    let _ = other.wait();
}
