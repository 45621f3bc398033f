//! Kernel-side socket capture for flowmesh: the CO-RE eBPF programs under
//! `ebpf/bpf/`, their committed object, and the user-space loader that attaches
//! them and hands their events to the capture pipeline.
//!
//! # Main types
//! - [`SocketTracer`]: loads the embedded `socket_trace.bpf.o`, attaches one program
//!   to the entry and exit tracepoint of each traced syscall (read, write, readv,
//!   writev, sendto, recvfrom, sendmsg, recvmsg, sendfile64, connect, accept,
//!   accept4, close) and drains the shared ring buffer with [`SocketTracer::poll`].
//!   [`SocketTracer::attach_tls`] / [`SocketTracer::attach_tls_discovered`] add
//!   uprobes on OpenSSL's `SSL_write`, `SSL_read`, `SSL_write_ex` and `SSL_read_ex`
//!   in a libssl file (for every process using it), so HTTPS is seen as plaintext.
//! - [`find_libssl_paths`]: the libssl files processes have mapped, also inside
//!   other mount namespaces.
//! - [`SocketEvent`]: one record, a [`SocketEventHeader`] (the `#[repr(C)]` mirror of
//!   `struct fm_socket_event` in `bpf/socket_trace.h`) plus a borrowed payload.
//! - [`TracerConfig`]: payload cap, ring buffer size, the excluded process.
//!
//! # Invariants
//! - Only AF_INET/AF_INET6 sockets speaking TCP or UDP produce events; files, pipes
//!   and unix sockets are filtered in the kernel. The excluded process (the agent)
//!   produces none, so capture never sees its own traffic.
//! - A data event's payload is the contiguous prefix of the bytes the syscall
//!   (for TLS events, the OpenSSL call) actually transferred:
//!   `payload_len <= byte_count` and `<= payload_cap` (`sendfile` events carry no
//!   payload).
//! - For TCP, `tcp_seq` is the sequence number of the first byte: the sender's
//!   egress event and the receiver's ingress event for the same bytes carry the same
//!   value, on any host (AutoTracing relies on this).
//! - TLS plaintext events carry [`FLAG_TLS`], `tcp_seq` 0, and the fd, `sock_id`,
//!   family, addresses and ports of the connection's socket exactly as its syscall
//!   events do. Those syscall events are still emitted, unflagged, with the
//!   ciphertext: a socket with TLS has two byte streams, told apart by the flag.
//!   Plaintext whose socket cannot be identified is dropped and counted
//!   ([`SocketTracer::unattributed_tls_events`]).
//! - Capture never blocks the traced application: when the ring buffer is full the
//!   kernel drops the event and counts it ([`SocketTracer::lost_events`]); records
//!   that reach user space malformed are skipped and counted, never a panic.
//! - Timestamps are CLOCK_MONOTONIC ns; add [`SocketTracer::clock_offset_ns`] (or
//!   [`monotonic_to_unix_offset_ns`]) for Unix-epoch ns.
//! - The committed object is `bpf/build.sh`'s byte-identical output for the
//!   committed sources (checked by `tests/object_fresh.rs`); the header layout is
//!   checked against the C header by `tests/layout.rs`.
//!
//! Loading needs root (CAP_BPF + CAP_PERFMON) and a kernel with BTF and
//! BPF ring buffers (5.8+). Only syscall tracepoints and uprobes are used:
//! kprobes and fentry are not available on every kernel we run on.

mod error;
mod event;
mod loader;
mod tls;

pub use error::EbpfError;
pub use event::{
    AF_INET, AF_INET6, Direction, EventKind, FLAG_TLS, HEADER_LEN, IPPROTO_TCP, IPPROTO_UDP,
    InvalidEnumValue, MAX_PAYLOAD, SocketEventHeader, SyscallKind,
};
pub use loader::{
    MAX_RING_BUFFER_BYTES, SocketEvent, SocketTracer, TracerConfig, monotonic_to_unix_offset_ns,
};
pub use tls::{TlsLibrary, find_libssl_paths};
