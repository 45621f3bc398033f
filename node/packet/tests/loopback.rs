//! Capture on `lo` with real TCP traffic from Python: byte counts, handshake, close, L7
//! rows from packets, and a refused connection. Needs root (CAP_NET_RAW) and `python3`.
//!
//! Each test opens its own capture with a filter for its own port only, so tests running
//! side by side (and anything else on the host's loopback) stay out of each other's way.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowmesh_packet::{
    CaptureStats, CloseType, ConnectionResult, FilterBuilder, L4FlowRecord, L7PacketRecord,
    ObservationPoint, PacketCapture, PacketConfig, PacketProcessor, ProcessorOutput,
    ProcessorStats, TransportProtocol,
};
use flowmesh_protocols::{L7Protocol, ResponseStatus, Role};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the loopback capture tests open AF_PACKET sockets and need root (CAP_NET_RAW); \
         run them as root"
    );
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

fn lock(collected: &Mutex<Collected>) -> std::sync::MutexGuard<'_, Collected> {
    collected
        .lock()
        .expect("capture thread panicked holding the lock")
}

#[derive(Debug, Default)]
struct Collected {
    l4: Vec<L4FlowRecord>,
    l7: Vec<L7PacketRecord>,
    error: Option<String>,
}

/// A capture on `lo` for some TCP ports, run on its own thread like the node runs it.
struct LoopbackCapture {
    stop: Arc<AtomicBool>,
    collected: Arc<Mutex<Collected>>,
    thread: Option<JoinHandle<(CaptureStats, ProcessorStats)>>,
}

impl LoopbackCapture {
    /// Returns once the socket is open and filtered: traffic started afterwards is seen.
    fn start(port: u16) -> LoopbackCapture {
        require_root();
        let config = PacketConfig {
            interfaces: vec!["lo".to_string()],
            filter: Some(FilterBuilder::new().tcp_only().port(port).build(65_535)),
            block_timeout: Duration::from_millis(5),
            poll_timeout: Duration::from_millis(20),
            closed_flow_linger: Duration::from_millis(300),
            report_interval: Duration::from_secs(1),
            ..PacketConfig::default()
        };
        let mut capture = PacketCapture::open(&config).expect("open capture on lo");
        let mut processor = PacketProcessor::new(&config).expect("processor");
        let stop = Arc::new(AtomicBool::new(false));
        let collected = Arc::new(Mutex::new(Collected::default()));
        let thread = {
            let stop = Arc::clone(&stop);
            let collected = Arc::clone(&collected);
            std::thread::spawn(move || {
                let mut out = ProcessorOutput::default();
                while !stop.load(Ordering::Relaxed) {
                    if let Err(error) =
                        capture.poll_frames(|frame| processor.process_frame(frame, &mut out))
                    {
                        lock(&collected).error = Some(error.to_string());
                        break;
                    }
                    processor.tick(now_ns(), &mut out);
                    let mut collected = lock(&collected);
                    collected.l4.append(&mut out.l4);
                    collected.l7.append(&mut out.l7);
                }
                let stats = capture.stats().expect("capture stats");
                (stats, processor.stats())
            })
        };
        LoopbackCapture {
            stop,
            collected,
            thread: Some(thread),
        }
    }

    /// Polls `found` until it returns `Some`, failing after `timeout`.
    fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        found: impl Fn(&Collected) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let collected = lock(&self.collected);
                if let Some(error) = &collected.error {
                    panic!("capture failed: {error}");
                }
                if let Some(value) = found(&collected) {
                    return value;
                }
                if Instant::now() > deadline {
                    panic!("timed out waiting for {what}; collected: {collected:#?}");
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> (CaptureStats, ProcessorStats, Collected) {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self
            .thread
            .take()
            .expect("capture thread runs until stopped")
            .join()
            .expect("capture thread");
        let collected = std::mem::take(&mut *lock(&self.collected));
        (stats.0, stats.1, collected)
    }
}

impl Drop for LoopbackCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A Python program that prints its listening port, waits for a line on stdin, runs,
/// and prints a result line.
struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Python {
    fn spawn(script: &str, args: &[&str]) -> Python {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 must be installed");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Python {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from python");
        assert!(!line.is_empty(), "python exited early");
        line.trim().to_string()
    }

    fn port(&mut self) -> u16 {
        self.line().parse().expect("python prints its port first")
    }

    fn go(&mut self) {
        self.stdin.write_all(b"go\n").expect("write to python");
        self.stdin.flush().expect("flush python stdin");
    }

    fn finish(mut self) -> String {
        let result = self.line();
        let status = self.child.wait().expect("wait for python");
        assert!(status.success(), "python failed: {status}");
        result
    }
}

const TRANSFER: &str = r#"
import socket, sys, threading
to_server, to_client = int(sys.argv[1]), int(sys.argv[2])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
port = listener.getsockname()[1]
print(port, flush=True)
sys.stdin.readline()

def serve():
    conn, _ = listener.accept()
    got = 0
    while got < to_server:
        data = conn.recv(65536)
        if not data:
            break
        got += len(data)
    assert got == to_server, got
    conn.sendall(b"s" * to_client)
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(65536):
        pass
    conn.close()

server = threading.Thread(target=serve)
server.start()
client = socket.create_connection(("127.0.0.1", port))
client.sendall(b"c" * to_server)
got = 0
while True:
    data = client.recv(65536)
    if not data:
        break
    got += len(data)
client.close()
server.join()
print(got, flush=True)
"#;

#[test]
fn byte_counts_equal_what_each_side_wrote() {
    require_root();
    const TO_SERVER: u64 = 100_000;
    const TO_CLIENT: u64 = 250_000;
    let mut python = Python::spawn(TRANSFER, &[&TO_SERVER.to_string(), &TO_CLIENT.to_string()]);
    let port = python.port();
    let capture = LoopbackCapture::start(port);
    python.go();
    assert_eq!(python.finish(), TO_CLIENT.to_string());

    let flow_id = capture.wait_for(Duration::from_secs(20), "the flow's final record", |c| {
        c.l4.iter()
            .find(|r| r.key.server.port() == port && r.close_type.is_final())
            .map(|r| r.flow_id)
    });
    let (capture_stats, processor_stats, collected) = capture.stop();
    let records: Vec<&L4FlowRecord> = collected
        .l4
        .iter()
        .filter(|r| r.flow_id == flow_id)
        .collect();
    let last = records.last().unwrap();

    assert_eq!(last.key.protocol, TransportProtocol::Tcp);
    assert_eq!(last.key.server.port(), port);
    assert_ne!(last.key.client.port(), port);
    assert!(last.key.client.ip().is_loopback());
    assert_eq!(last.observation_point, ObservationPoint::ServerNic);
    // The L4 payload each way is exactly what each side wrote, summed over the records
    // and in the running totals. (Even loopback retransmits now and then on a loaded
    // host — tail loss probes — and those copies must not count twice.)
    let sum = |field: fn(&L4FlowRecord) -> u64| records.iter().map(|r| field(r)).sum::<u64>();
    assert_eq!(sum(|r| r.payload_bytes_tx), TO_SERVER);
    assert_eq!(sum(|r| r.payload_bytes_rx), TO_CLIENT);
    assert_eq!(last.total_payload_bytes_tx, TO_SERVER);
    assert_eq!(last.total_payload_bytes_rx, TO_CLIENT);
    assert!(sum(|r| r.packets_tx) > 0 && sum(|r| r.packets_rx) > 0);
    assert!(sum(|r| r.bytes_tx) > TO_SERVER && sum(|r| r.bytes_rx) > TO_CLIENT);
    // Handshake seen and measured; closed by FIN from both sides.
    assert_eq!(last.result, ConnectionResult::Established);
    assert_eq!(last.close_type, CloseType::Fin);
    assert!(last.rtt_client_us.is_some() && last.rtt_server_us.is_some());
    assert!(last.rtt_us.is_some());
    assert_eq!(records.iter().filter(|r| r.rtt_sample).count(), 1);
    assert_eq!(sum(|r| u64::from(r.syn_count)), 1);
    assert_eq!(sum(|r| u64::from(r.synack_count)), 1);
    assert_eq!(sum(|r| u64::from(r.rst_tx) + u64::from(r.rst_rx)), 0);
    assert!(records[0].is_new_flow);
    // Opaque bytes: an L4 flow, no L7 rows.
    assert_eq!(last.l7_protocol, None);
    assert!(collected.l7.iter().all(|row| row.flow_id != flow_id));
    // The filter let through only this port's packets.
    assert!(
        collected
            .l4
            .iter()
            .all(|r| r.key.server.port() == port || r.key.client.port() == port)
    );
    assert_eq!(capture_stats.kernel_drops(), 0, "{capture_stats:?}");
    assert!(
        capture_stats.interfaces[0].loopback_duplicates > 0,
        "{capture_stats:?}"
    );
    assert_eq!(
        processor_stats.malformed + processor_stats.truncated,
        0,
        "{processor_stats:?}"
    );
}

const HTTP: &str = r#"
import http.server, sys, threading, urllib.request, urllib.error

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/hello"):
            self.reply(200, b"hello, flowmesh")
        else:
            self.reply(404, b"no such thing")

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        self.rfile.read(length)
        self.reply(201, b"created")

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
port = server.server_address[1]
print(port, flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.readline()
base = "http://127.0.0.1:%d" % port
assert urllib.request.urlopen(base + "/hello?name=flowmesh").read() == b"hello, flowmesh"
try:
    urllib.request.urlopen(base + "/missing")
    raise SystemExit("expected a 404")
except urllib.error.HTTPError as error:
    assert error.code == 404
request = urllib.request.Request(base + "/items", data=b"x" * 3000, method="POST")
assert urllib.request.urlopen(request).read() == b"created"
server.shutdown()
print("done", flush=True)
"#;

#[test]
fn http_requests_become_l7_rows_from_packets() {
    require_root();
    let mut python = Python::spawn(HTTP, &[]);
    let port = python.port();
    let capture = LoopbackCapture::start(port);
    python.go();
    assert_eq!(python.finish(), "done");

    capture.wait_for(
        Duration::from_secs(20),
        "three l7 rows and their flows' final records",
        |c| {
            let finals = c.l4.iter().filter(|r| r.close_type.is_final()).count();
            (c.l7.len() >= 3 && finals >= 3).then_some(())
        },
    );
    let (_, _, collected) = capture.stop();
    let mut rows: Vec<&L7PacketRecord> = collected.l7.iter().collect();
    rows.sort_by_key(|row| row.record.request_start_ns);
    let summary: Vec<(&str, &str, &str, Option<u16>, ResponseStatus)> = rows
        .iter()
        .map(|row| {
            (
                row.record.request_type.as_str(),
                row.record.request_resource.as_str(),
                row.record.endpoint.as_str(),
                row.record.response_code,
                row.record.response_status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "GET",
                "/hello?name=flowmesh",
                "/hello",
                Some(200),
                ResponseStatus::Ok
            ),
            (
                "GET",
                "/missing",
                "/missing",
                Some(404),
                ResponseStatus::ClientError
            ),
            ("POST", "/items", "/items", Some(201), ResponseStatus::Ok),
        ]
    );
    for row in &rows {
        assert_eq!(row.record.protocol, L7Protocol::Http1);
        assert_eq!(row.record.role, Role::Client);
        assert_eq!(row.observation_point, ObservationPoint::ServerNic);
        assert_eq!(row.responder().port(), port);
        assert_ne!(row.requester().port(), port);
        assert_eq!(row.record.request_domain, format!("127.0.0.1:{port}"));
        assert!(row.record.response_end_ns >= Some(row.record.request_start_ns));
        assert!(row.record.req_tcp_seq.is_some() && row.record.resp_tcp_seq.is_some());
        // Each request's flow is an established HTTP flow.
        let flow = collected
            .l4
            .iter()
            .rfind(|r| r.flow_id == row.flow_id)
            .expect("the row's flow has records");
        assert_eq!(flow.l7_protocol, Some(L7Protocol::Http1));
        assert_eq!(flow.result, ConnectionResult::Established);
    }
    // One exchange per connection: the flow's payload each way is the request's and the
    // response's length (the POST's 3000-byte body included).
    let post = rows[2];
    assert!(post.record.request_length > 3000);
    for row in &rows {
        let payload = |field: fn(&L4FlowRecord) -> u64| -> u64 {
            collected
                .l4
                .iter()
                .filter(|r| r.flow_id == row.flow_id)
                .map(field)
                .sum()
        };
        assert_eq!(payload(|r| r.payload_bytes_tx), row.record.request_length);
        assert_eq!(
            Some(payload(|r| r.payload_bytes_rx)),
            row.record.response_length
        );
    }
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    require_root();
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().unwrap().port()
    };
    let other_port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().unwrap().port()
    };
    let capture = LoopbackCapture::start(port);
    // A refused connection to another port first: the kernel filter drops its packets.
    let error = TcpStream::connect(("127.0.0.1", other_port)).expect_err("nothing listens");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    let error = TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);

    capture.wait_for(Duration::from_secs(20), "the refused flow's record", |c| {
        c.l4.iter()
            .any(|r| r.key.server.port() == port && r.close_type.is_final())
            .then_some(())
    });
    let (capture_stats, processor_stats, collected) = capture.stop();
    // Only this port's flow (a periodic record may precede its final one).
    let flow_id = collected.l4[0].flow_id;
    assert!(
        collected.l4.iter().all(|r| r.flow_id == flow_id),
        "{:#?}",
        collected.l4
    );
    let record = collected.l4.last().unwrap();
    assert!(record.close_type.is_final());
    let sum = |field: fn(&L4FlowRecord) -> u32| collected.l4.iter().map(field).sum::<u32>();
    // The SYN and the RST, once each (the loopback copies of both were dropped).
    assert_eq!(capture_stats.frames(), 2, "{capture_stats:?}");
    assert_eq!(
        capture_stats.interfaces[0].loopback_duplicates, 2,
        "{capture_stats:?}"
    );
    assert_eq!(processor_stats.packets, 2);
    assert_eq!(record.result, ConnectionResult::Refused);
    assert!(record.result.is_failure());
    assert_eq!(record.close_type, CloseType::ServerRst);
    assert_eq!(sum(|r| r.syn_count), 1);
    assert_eq!(sum(|r| r.rst_rx), 1);
    assert_eq!(
        (record.total_payload_bytes_tx, record.total_payload_bytes_rx),
        (0, 0)
    );
    assert_eq!((record.total_packets_tx, record.total_packets_rx), (1, 1));
    assert_eq!(record.rtt_us, None);
}
