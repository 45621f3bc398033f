/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Event layout shared by the kernel programs (socket_trace.bpf.c) and the Rust
 * loader (ebpf/src/event.rs). Only fixed-width __uN/__sN types, so that it can be
 * included from vmlinux.h-based BPF code and from a plain C program after
 * <linux/types.h> (tests/layout.rs compares sizes and offsets with Rust).
 *
 * Changing anything here means changing SocketEventHeader in event.rs, then
 * rebuilding the object with ebpf/bpf/build.sh.
 */
#ifndef FLOWMESH_SOCKET_TRACE_H
#define FLOWMESH_SOCKET_TRACE_H

#define FM_MAX_PAYLOAD 4096

enum fm_kind { FM_KIND_DATA = 1, FM_KIND_CONNECT = 2, FM_KIND_ACCEPT = 3, FM_KIND_CLOSE = 4 };

enum fm_direction {
	FM_DIR_NONE = 0,
	FM_DIR_EGRESS = 1,  /* process wrote/sent */
	FM_DIR_INGRESS = 2, /* process read/received */
};

enum fm_syscall {
	FM_SYS_READ = 0,
	FM_SYS_WRITE,
	FM_SYS_READV,
	FM_SYS_WRITEV,
	FM_SYS_SENDTO,
	FM_SYS_RECVFROM,
	FM_SYS_SENDMSG,
	FM_SYS_RECVMSG,
	FM_SYS_SENDFILE,
	FM_SYS_CONNECT,
	FM_SYS_ACCEPT,
	FM_SYS_ACCEPT4,
	FM_SYS_CLOSE,
	/* FM_FLAG_TLS events: the OpenSSL call whose plaintext the event carries */
	FM_SYS_SSL_WRITE,
	FM_SYS_SSL_READ,
	FM_SYS_SSL_WRITE_EX,
	FM_SYS_SSL_READ_EX,
	/* one event per message of the vector (libuv sends UDP with sendmmsg) */
	FM_SYS_SENDMMSG,
	FM_SYS_RECVMMSG,
};

/*
 * struct fm_socket_event.flags. FM_FLAG_TLS: a DATA event whose payload is TLS
 * plaintext, captured by uprobes on OpenSSL's SSL_write/SSL_read(_ex) of the
 * socket the other fields identify. The same socket also produces unflagged DATA
 * events for the ciphertext its syscalls carry: the two are separate byte
 * streams and must be reassembled separately.
 */
#define FM_FLAG_TLS 1

/*
 * No interior padding: sizeof is 120 (114 bytes of fields, then 6 bytes of
 * trailing padding to the 8-byte alignment of the __u64 fields; the kernel
 * zeroes them).
 */
struct fm_socket_event {
	__u64 enter_ns;    /* bpf_ktime_get_ns() at syscall entry (CLOCK_MONOTONIC) */
	__u64 exit_ns;     /* bpf_ktime_get_ns() at syscall exit */
	__u64 sock_id;     /* kernel address of the struct sock: unique while the socket lives */
	__u64 syscall_trace_id; /* DATA: the thread's syscall trace id (see trace_ctx in
				 * socket_trace.bpf.c), 0 for none; else 0 */
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__u32 byte_count;  /* DATA: bytes transferred (the syscall's return value, or the plaintext
			    * bytes of an FM_FLAG_TLS event); else 0 */
	__u32 payload_len; /* bytes of payload that follow this header; <= byte_count and <= payload cap */
	__u32 tcp_seq;     /* TCP only: sequence number of the first byte: tcp_sock.write_seq read at
			    * ENTRY for egress, tcp_sock.copied_seq read at ENTRY for ingress; 0 otherwise,
			    * and 0 for FM_FLAG_TLS events (plaintext bytes have no sequence numbers) */
	__u8 kind;         /* enum fm_kind */
	__u8 direction;    /* enum fm_direction */
	__u8 family;       /* AF_INET (2) or AF_INET6 (10) */
	__u8 l4_proto;     /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u8 syscall;      /* enum fm_syscall */
	__u8 flags;        /* FM_FLAG_* */
	__u16 local_port;  /* host byte order */
	__u16 remote_port; /* host byte order */
	__u8 local_addr[16]; /* IPv4: first 4 bytes, network order; IPv6: 16 bytes */
	__u8 remote_addr[16];
	char comm[16];     /* current task comm */
};
/* struct is followed by payload_len bytes of payload */

#endif /* FLOWMESH_SOCKET_TRACE_H */
