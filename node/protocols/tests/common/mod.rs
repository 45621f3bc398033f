//! A simulated socket: turns byte streams into the chunks the kernel side would emit.

#![allow(dead_code)]

pub mod chunks;
pub mod hex;
pub mod nginx;
pub mod recorded;

use std::path::PathBuf;

use flowmesh_protocols::{
    Chunk, Conversation, ConversationConfig, ConversationStats, Direction, L7Record,
};

/// What one emitted chunk looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub seq: u32,
    pub enter_ns: u64,
    pub exit_ns: u64,
    pub tid: u32,
}

/// One socket seen from the observed process, with a clock and TCP sequence numbers.
pub struct Wire {
    pub conversation: Conversation,
    pub records: Vec<L7Record>,
    next_seq: [u32; 2],
    clock_ns: u64,
    pub tid: u32,
    /// Syscall trace id of the chunks sent from now on.
    pub syscall_trace_id: u64,
}

pub const START_NS: u64 = 1_700_000_000_000_000_000;
pub const STEP_NS: u64 = 1_000_000;

fn index(direction: Direction) -> usize {
    match direction {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl Wire {
    pub fn new() -> Self {
        Self::with_config(ConversationConfig::default())
    }

    pub fn with_config(config: ConversationConfig) -> Self {
        Wire {
            conversation: Conversation::new(config),
            records: Vec::new(),
            next_seq: [1_000, 4_000_000_000],
            clock_ns: START_NS,
            tid: 42,
            syscall_trace_id: 0,
        }
    }

    /// Starts the sequence numbers of `direction` at `seq`.
    pub fn set_seq(&mut self, direction: Direction, seq: u32) {
        self.next_seq[index(direction)] = seq;
    }

    pub fn now(&self) -> u64 {
        self.clock_ns
    }

    pub fn advance_clock(&mut self, ns: u64) {
        self.clock_ns += ns;
    }

    /// A syscall that transferred `bytes`, of which the first `cap` were captured.
    pub fn send_capped(&mut self, direction: Direction, bytes: &[u8], cap: usize) -> Sent {
        let byte_count = u32::try_from(bytes.len()).expect("chunk fits u32");
        self.send_raw(direction, &bytes[..cap.min(bytes.len())], byte_count)
    }

    /// A syscall whose bytes were all captured.
    pub fn send(&mut self, direction: Direction, bytes: &[u8]) -> Sent {
        self.send_capped(direction, bytes, bytes.len())
    }

    /// A syscall that sent `n` bytes none of which were captured (sendfile).
    pub fn sendfile(&mut self, direction: Direction, n: u32) -> Sent {
        self.send_raw(direction, b"", n)
    }

    /// `n` bytes whose events were lost: only the sequence number shows them.
    pub fn lose(&mut self, direction: Direction, n: u32) {
        let i = index(direction);
        self.next_seq[i] = self.next_seq[i].wrapping_add(n);
    }

    pub fn send_raw(&mut self, direction: Direction, payload: &[u8], byte_count: u32) -> Sent {
        let i = index(direction);
        let sent = Sent {
            seq: self.next_seq[i],
            enter_ns: self.clock_ns,
            exit_ns: self.clock_ns + STEP_NS / 2,
            tid: self.tid,
        };
        let chunk = Chunk {
            direction,
            enter_ns: sent.enter_ns,
            exit_ns: sent.exit_ns,
            tcp_seq: Some(sent.seq),
            byte_count,
            payload,
            tid: sent.tid,
            syscall_trace_id: self.syscall_trace_id,
        };
        self.conversation.feed(&chunk, &mut self.records);
        self.next_seq[i] = self.next_seq[i].wrapping_add(byte_count);
        self.clock_ns += STEP_NS;
        sent
    }

    pub fn close(&mut self) {
        let now = self.clock_ns;
        self.conversation.close(now, &mut self.records);
    }

    pub fn expire(&mut self, now_ns: u64) {
        self.conversation.expire(now_ns, &mut self.records);
    }

    pub fn stats(&self) -> ConversationStats {
        self.conversation.stats()
    }
}

/// A UDP socket: chunks without sequence numbers.
pub struct Udp {
    pub conversation: Conversation,
    pub records: Vec<L7Record>,
    pub clock: u64,
}

impl Udp {
    pub fn new() -> Self {
        Udp {
            conversation: Conversation::new(ConversationConfig::default()),
            records: Vec::new(),
            clock: 1_000_000,
        }
    }

    /// A datagram of which `cap` bytes were captured.
    pub fn send(&mut self, direction: Direction, datagram: &[u8], cap: usize) {
        self.clock += 1_000;
        let chunk = Chunk {
            direction,
            enter_ns: self.clock,
            exit_ns: self.clock + 100,
            tcp_seq: None,
            byte_count: datagram.len() as u32,
            payload: &datagram[..cap.min(datagram.len())],
            tid: 7,
            syscall_trace_id: 0,
        };
        self.conversation.feed(&chunk, &mut self.records);
    }
}

/// `tests/fixtures/<dir>`.
pub fn fixture_dir(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
}

/// The bytes of `tests/fixtures/<dir>/<file>`.
pub fn read_fixture(dir: &str, file: &str) -> Vec<u8> {
    let path = fixture_dir(dir).join(file);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("failed to read fixture {}: {e}", path.display()))
}

/// The request and response directions of a role.
pub fn directions(server: bool) -> (Direction, Direction) {
    if server {
        (Direction::Ingress, Direction::Egress)
    } else {
        (Direction::Egress, Direction::Ingress)
    }
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: svc.local\r\nUser-Agent: test\r\n\r\n").into_bytes()
}

pub fn ok_with_body(body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub fn status(code: u16, reason: &str) -> Vec<u8> {
    format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}
