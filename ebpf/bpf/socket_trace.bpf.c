// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Socket capture on syscall tracepoints (kprobes and fentry are not available
 * everywhere we run; syscall tracepoints are).
 *
 * Entry programs resolve the fd through the current task's file table and keep
 * only AF_INET/AF_INET6 sockets speaking TCP or UDP; everything else (files,
 * pipes, unix sockets, the agent's own process) returns before touching any map
 * except the read-only globals. What the exit program needs is parked in
 * `active`, keyed by pid_tgid; the exit program emits one record per successful
 * call into the `events` ring buffer and always deletes the entry.
 *
 * A record is a struct fm_socket_event (socket_trace.h) followed by payload_len
 * bytes: the contiguous prefix of the bytes the call actually transferred.
 *
 * TLS plaintext comes from uprobes on OpenSSL (attached per library file from
 * user space, see the end of this file); those records carry FM_FLAG_TLS.
 *
 * Rebuild the committed object with ./build.sh after any change here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "socket_trace.h"

char LICENSE[] SEC("license") = "GPL";

#define FM_AF_INET 2
#define FM_AF_INET6 10
#define FM_S_IFMT 00170000
#define FM_S_IFSOCK 0140000
#define FM_EINPROGRESS 115
/* iovecs copied per readv/writev/sendmsg/recvmsg; later ones still count in byte_count.
 * gRPC (C core) writes a frame per iovec: with 8, its trailers fell past the copy. */
#define FM_MAX_IOV 32
/* Copy lengths are masked with FM_CHUNK_MASK and copy offsets with
 * FM_MAX_PAYLOAD - 1 (no-ops for the values that occur) so that the verifier can
 * prove every copy lands inside a payload area of FM_SCRATCH_PAYLOAD bytes. */
#define FM_CHUNK_MASK (2 * FM_MAX_PAYLOAD - 1)
#define FM_SCRATCH_PAYLOAD (FM_MAX_PAYLOAD + 2 * FM_MAX_PAYLOAD)

/* Set from user space before load (EbpfLoader::override_global). */
const volatile __u32 fm_exclude_tgid = 0;
const volatile __u32 fm_payload_cap = 1024;
/* Inode number of the only network namespace whose sockets are traced; 0: all. */
const volatile __u32 fm_netns_ino = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* replaced from user space before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost_events SEC(".maps");

/* Last forced ring-buffer wakeup on this CPU (ktime ns); see fm_wakeup_flags. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} wakeup_ns SEC(".maps");

struct fm_scratch {
	struct fm_socket_event hdr;
	__u8 payload[FM_SCRATCH_PAYLOAD];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fm_scratch);
} scratch SEC(".maps");

/* One in-flight syscall of one thread. */
struct fm_active {
	__u64 enter_ns;
	__u64 sk;     /* struct sock * of the fd (the listener for accept) */
	__u64 buf;    /* user buffer, or user iovec array when iov_count > 0 */
	__u64 addr;   /* user sockaddr (sendto/recvfrom addr, sendmsg/recvmsg msg_name) or 0 */
	__u64 size;   /* buffer size for plain buffers (MSG_TRUNC can return more) */
	__u32 iov_count;
	__s32 fd;
	__u32 tcp_seq;
	__u8 syscall; /* enum fm_syscall: the exit must match the entry */
	__u8 l4_proto;
	__u8 _pad[2];
};

/* LRU so that entries of threads killed inside a syscall (no sys_exit) age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct fm_active);
} active SEC(".maps");

/* One OpenSSL call in progress in one thread (uprobe entry to uretprobe). */
struct fm_tls_call {
	__u64 enter_ns;
	__u64 ssl;     /* SSL * argument */
	__u64 buf;     /* user plaintext buffer */
	__u64 len_ptr; /* _ex variants: size_t * that receives the byte count; else 0 */
	__u64 sk;      /* struct sock * of the first traced syscall made inside the call, or 0 */
	__s32 fd;      /* its fd */
	__u8 fn;       /* enum fm_syscall: FM_SYS_SSL_* */
	__u8 _pad[3];
};

/* LRU so that entries of threads that never return (killed, longjmp) age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct fm_tls_call);
} tls_calls SEC(".maps");

/* SSL objects are process addresses: the key needs the process. */
struct fm_tls_key {
	__u64 ssl;
	__u32 tgid;
	__u32 _pad;
};

struct fm_tls_conn {
	__u64 sk;
	__s32 fd;
	__u32 _pad;
};

/* (process, SSL *) -> the socket its last syscall-making call used, for calls
 * that are served from OpenSSL's buffers without a syscall. LRU: SSL_free is
 * not traced, so entries of finished connections age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fm_tls_key);
	__type(value, struct fm_tls_conn);
} tls_conns SEC(".maps");

/*
 * Syscall trace ids (AutoTracing): which requests a thread makes on behalf of the
 * request it is serving. Per thread:
 * - reading from a socket starts a trace (a fresh id, that socket its origin) unless the
 *   read continues the request (the origin, before any write to it) or is a reply on a
 *   socket the thread wrote to during the trace;
 * - writing to another socket while the trace is open is a request made on its behalf:
 *   it carries the id and the socket is remembered (up to FM_TRACE_DOWNSTREAM of them);
 * - writing to the origin is the response: it carries the id and closes the trace, so
 *   later writes elsewhere carry none and the next read starts a new trace.
 * A thread that serves one request at a time (or a worker that finishes each before the
 * next) links its server and client sessions this way; requests handed to other threads
 * or interleaved on one thread are not linked (user space falls back to TCP sequence
 * numbers and header ids). Ids are unique per node: the ktime of the first read, shifted,
 * with the CPU in the low bits.
 */
#define FM_TRACE_DOWNSTREAM 4

struct fm_trace_ctx {
	__u64 id;
	__u64 origin_sk;
	__u64 down_sk[FM_TRACE_DOWNSTREAM];
	__u8 n_down;
	__u8 responded;
	__u8 _pad[6];
};

/* LRU so that contexts of exited threads age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct fm_trace_ctx);
} trace_ctx SEC(".maps");

/* TLS plaintext that was dropped because its socket could not be identified. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tls_unattributed SEC(".maps");

static __always_inline bool fm_excluded(__u64 pid_tgid)
{
	return (__u32)(pid_tgid >> 32) == fm_exclude_tgid;
}

/* fd of the current task -> struct sock *, or NULL unless it is an inet TCP/UDP
 * socket. Like the kernel, only the low 32 bits of the argument count. */
static __always_inline struct sock *fm_fd_to_sock(__u64 fd_arg, __u8 *l4_proto)
{
	__u32 fd = (__u32)fd_arg;
	struct task_struct *task;
	struct fdtable *fdt;
	struct file **fds;
	struct file *file = NULL;
	struct socket *socket;
	struct sock *sk;
	__u16 family, proto;
	umode_t mode;

	task = (struct task_struct *)bpf_get_current_task();
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & FM_S_IFMT) != FM_S_IFSOCK)
		return NULL;
	socket = (struct socket *)BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(socket, sk);
	if (!sk)
		return NULL;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != FM_AF_INET && family != FM_AF_INET6)
		return NULL;
	proto = BPF_CORE_READ(sk, sk_protocol);
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return NULL;
	if (fm_netns_ino && BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) != fm_netns_ino)
		return NULL;
	*l4_proto = (__u8)proto;
	return sk;
}

/* Header fields common to every kind; addresses from the socket. Returns NULL on
 * the (impossible) missing scratch slot. */
static __always_inline struct fm_scratch *fm_begin(__u64 pid_tgid, struct sock *sk, __s32 fd, __u8 kind,
						   __u8 direction, __u8 syscall, __u64 enter_ns)
{
	__u32 zero = 0;
	struct fm_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	struct fm_socket_event *e;
	__u16 family;

	if (!s)
		return NULL;
	e = &s->hdr;
	__builtin_memset(e, 0, sizeof(*e));
	e->enter_ns = enter_ns;
	e->exit_ns = bpf_ktime_get_ns();
	e->sock_id = (__u64)sk;
	e->tgid = (__u32)(pid_tgid >> 32);
	e->tid = (__u32)pid_tgid;
	e->fd = fd;
	e->kind = kind;
	e->direction = direction;
	e->syscall = syscall;

	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->family = (__u8)family;
	e->l4_proto = (__u8)BPF_CORE_READ(sk, sk_protocol);
	e->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == FM_AF_INET) {
		bpf_core_read(e->local_addr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->remote_addr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(e->local_addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->remote_addr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return s;
}

/* Unconnected UDP: the peer is in the syscall's sockaddr (the caller's for sends,
 * filled by the kernel for receives; both readable at exit). */
static __always_inline void fm_peer_from_sockaddr(struct fm_socket_event *e, __u64 uaddr)
{
	struct sockaddr_in sin = {};
	struct sockaddr_in6 sin6 = {};

	if (bpf_probe_read_user(&sin, sizeof(sin), (void *)uaddr))
		return;
	if (sin.sin_family == FM_AF_INET) {
		if (e->family == FM_AF_INET) {
			__builtin_memcpy(e->remote_addr, &sin.sin_addr.s_addr, 4);
		} else {
			/* dual-stack socket sending to a v4 sockaddr: v4-mapped v6 */
			__builtin_memset(e->remote_addr, 0, 10);
			e->remote_addr[10] = 0xff;
			e->remote_addr[11] = 0xff;
			__builtin_memcpy(&e->remote_addr[12], &sin.sin_addr.s_addr, 4);
		}
		e->remote_port = bpf_ntohs(sin.sin_port);
	} else if (sin.sin_family == FM_AF_INET6 && e->family == FM_AF_INET6) {
		if (bpf_probe_read_user(&sin6, sizeof(sin6), (void *)uaddr))
			return;
		__builtin_memcpy(e->remote_addr, &sin6.sin6_addr, 16);
		e->remote_port = bpf_ntohs(sin6.sin6_port);
	}
}

/*
 * Waking the reader on every record (the default when it is caught up) costs an
 * irq_work per record: measured at several microseconds per syscall in a VM.
 * Instead wake it at most once per FM_WAKEUP_INTERVAL_NS per CPU, and then
 * unconditionally, so a steady stream is delivered with that latency while the
 * reader sleeps; records that trail a burst wait for the reader's poll timeout.
 */
#define FM_WAKEUP_INTERVAL_NS 1000000ULL

static __always_inline __u64 fm_wakeup_flags(__u64 now)
{
	__u32 zero = 0;
	__u64 *last = bpf_map_lookup_elem(&wakeup_ns, &zero);

	if (!last)
		return 0;
	if (now - *last < FM_WAKEUP_INTERVAL_NS)
		return BPF_RB_NO_WAKEUP;
	*last = now;
	return BPF_RB_FORCE_WAKEUP;
}

static __always_inline void fm_submit(struct fm_scratch *s, __u32 payload_len)
{
	__u32 zero = 0;
	__u64 *lost;
	__u64 flags = fm_wakeup_flags(s->hdr.exit_ns);

	if (payload_len > FM_MAX_PAYLOAD)
		payload_len = FM_MAX_PAYLOAD;
	if (bpf_ringbuf_output(&events, s, sizeof(struct fm_socket_event) + payload_len, flags)) {
		lost = bpf_map_lookup_elem(&lost_events, &zero);
		if (lost)
			*lost += 1;
	}
}

static __always_inline __u32 fm_payload_cap_clamped(void)
{
	__u32 cap = fm_payload_cap;

	return cap > FM_MAX_PAYLOAD ? FM_MAX_PAYLOAD : cap;
}

/* Copies the first `want` (<= FM_MAX_PAYLOAD) bytes spread over the user iovecs,
 * in order, stopping at the first unreadable one: the result is always a prefix. */
static __always_inline __u32 fm_copy_iov(__u8 *dst, __u64 uiov, __u32 iov_count, __u32 want)
{
	__u32 off = 0;

#pragma unroll
	for (int i = 0; i < FM_MAX_IOV; i++) {
		struct iovec iov;
		__u64 chunk;

		if (i >= iov_count || off >= want)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(uiov + i * sizeof(struct iovec))))
			break;
		chunk = iov.iov_len;
		if (chunk > want - off)
			chunk = want - off;
		/* no-ops (off < want <= FM_MAX_PAYLOAD, chunk <= want - off) that give
		 * the verifier its bounds */
		off &= FM_MAX_PAYLOAD - 1;
		chunk &= FM_CHUNK_MASK;
		if (bpf_probe_read_user(dst + off, chunk, iov.iov_base))
			break;
		off += chunk;
	}
	return off;
}

/* The syscall trace id a data syscall of this thread on `sk` carries (see trace_ctx). */
static __always_inline __u64 fm_trace_step(__u64 pid_tgid, __u64 sk, __u8 direction, __u64 now)
{
	struct fm_trace_ctx *c = bpf_map_lookup_elem(&trace_ctx, &pid_tgid);
	struct fm_trace_ctx fresh = {};

	if (direction == FM_DIR_INGRESS) {
		if (c && c->id) {
			if (sk == c->origin_sk && !c->responded)
				return c->id;
			if (sk != c->origin_sk) {
#pragma unroll
				for (int i = 0; i < FM_TRACE_DOWNSTREAM; i++) {
					if (i < c->n_down && c->down_sk[i] == sk)
						return c->id;
				}
			}
		}
		fresh.id = (now << 8) | (bpf_get_smp_processor_id() & 0xff);
		fresh.origin_sk = sk;
		bpf_map_update_elem(&trace_ctx, &pid_tgid, &fresh, BPF_ANY);
		return fresh.id;
	}
	if (!c || !c->id)
		return 0;
	if (sk == c->origin_sk) {
		c->responded = 1;
		return c->id;
	}
	if (c->responded)
		return 0;
#pragma unroll
	for (int i = 0; i < FM_TRACE_DOWNSTREAM; i++) {
		if (i < c->n_down && c->down_sk[i] == sk)
			return c->id;
	}
	if (c->n_down < FM_TRACE_DOWNSTREAM) {
		c->down_sk[c->n_down & (FM_TRACE_DOWNSTREAM - 1)] = sk;
		c->n_down++;
	}
	return c->id;
}

/* The id of the thread's open or last trace, without changing it (TLS plaintext: the
 * syscalls inside the OpenSSL call have already moved the context). */
static __always_inline __u64 fm_trace_current(__u64 pid_tgid)
{
	struct fm_trace_ctx *c = bpf_map_lookup_elem(&trace_ctx, &pid_tgid);

	return c ? c->id : 0;
}

/* Inside an OpenSSL call, the first traced data syscall names the call's socket. */
static __always_inline void fm_tls_note_socket(__u64 pid_tgid, struct sock *sk, __s64 fd)
{
	struct fm_tls_call *call = bpf_map_lookup_elem(&tls_calls, &pid_tgid);

	if (call && !call->sk) {
		call->sk = (__u64)sk;
		call->fd = (__s32)fd;
	}
}

/* ---- data syscalls ---- */

static __always_inline int fm_enter_data(__s64 fd, __u64 buf, __u64 size, __u32 iov_count, __u64 addr,
					 __u8 syscall, bool egress)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fm_active a = {};
	struct sock *sk;
	__u8 l4_proto = 0;

	if (fm_excluded(pid_tgid))
		return 0;
	sk = fm_fd_to_sock(fd, &l4_proto);
	if (!sk)
		return 0;
	fm_tls_note_socket(pid_tgid, sk, fd);
	a.enter_ns = bpf_ktime_get_ns();
	a.sk = (__u64)sk;
	a.buf = buf;
	a.size = size;
	a.addr = addr;
	a.iov_count = iov_count;
	a.fd = (__s32)fd;
	a.syscall = syscall;
	a.l4_proto = l4_proto;
	if (l4_proto == IPPROTO_TCP) {
		struct tcp_sock *tp = (struct tcp_sock *)sk;

		a.tcp_seq = egress ? BPF_CORE_READ(tp, write_seq) : BPF_CORE_READ(tp, copied_seq);
	}
	bpf_map_update_elem(&active, &pid_tgid, &a, BPF_ANY);
	return 0;
}

static __always_inline int fm_exit_data(long ret, __u8 syscall, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fm_active *a = bpf_map_lookup_elem(&active, &pid_tgid);
	struct fm_scratch *s;
	struct fm_socket_event *e;
	__u32 want = 0, copied = 0;

	if (!a)
		return 0;
	if (a->syscall != syscall || ret <= 0)
		goto out;
	s = fm_begin(pid_tgid, (struct sock *)a->sk, a->fd, FM_KIND_DATA, direction, syscall, a->enter_ns);
	if (!s)
		goto out;
	e = &s->hdr;
	e->byte_count = (__u32)ret;
	e->tcp_seq = a->tcp_seq;
	e->syscall_trace_id = fm_trace_step(pid_tgid, a->sk, direction, e->exit_ns);
	if (a->l4_proto == IPPROTO_UDP && e->remote_port == 0 && a->addr)
		fm_peer_from_sockaddr(e, a->addr);

	if (syscall != FM_SYS_SENDFILE) {
		want = fm_payload_cap_clamped();
		if ((__u64)ret < want)
			want = (__u32)ret;
		if (a->iov_count) {
			copied = fm_copy_iov(s->payload, a->buf, a->iov_count, want);
		} else {
			if (a->size < want)
				want = (__u32)a->size;
			want &= FM_CHUNK_MASK; /* no-op: want <= FM_MAX_PAYLOAD */
			if (bpf_probe_read_user(s->payload, want, (void *)a->buf) == 0)
				copied = want;
		}
	}
	e->payload_len = copied;
	fm_submit(s, copied);
out:
	bpf_map_delete_elem(&active, &pid_tgid);
	return 0;
}

/* Reads msg_iov, msg_iovlen and msg_name of a user struct user_msghdr. */
static __always_inline int fm_enter_msg(__s64 fd, __u64 umsg, __u8 syscall, bool egress)
{
	struct user_msghdr msg = {};

	if (fm_excluded(bpf_get_current_pid_tgid()))
		return 0;
	if (bpf_probe_read_user(&msg, sizeof(msg), (void *)umsg))
		return 0;
	return fm_enter_data(fd, (__u64)msg.msg_iov, 0, msg.msg_iovlen > FM_MAX_IOV ? FM_MAX_IOV : msg.msg_iovlen,
			     (__u64)msg.msg_name, syscall, egress);
}

SEC("tracepoint/syscalls/sys_enter_read")
int fm_enter_read(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_data(ctx->args[0], ctx->args[1], ctx->args[2], 0, 0, FM_SYS_READ, false);
}

SEC("tracepoint/syscalls/sys_exit_read")
int fm_exit_read(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_data(ctx->ret, FM_SYS_READ, FM_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_write")
int fm_enter_write(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_data(ctx->args[0], ctx->args[1], ctx->args[2], 0, 0, FM_SYS_WRITE, true);
}

SEC("tracepoint/syscalls/sys_exit_write")
int fm_exit_write(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_data(ctx->ret, FM_SYS_WRITE, FM_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_readv")
int fm_enter_readv(struct trace_event_raw_sys_enter *ctx)
{
	__u64 vlen = ctx->args[2];

	return fm_enter_data(ctx->args[0], ctx->args[1], 0, vlen > FM_MAX_IOV ? FM_MAX_IOV : vlen, 0,
			     FM_SYS_READV, false);
}

SEC("tracepoint/syscalls/sys_exit_readv")
int fm_exit_readv(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_data(ctx->ret, FM_SYS_READV, FM_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int fm_enter_writev(struct trace_event_raw_sys_enter *ctx)
{
	__u64 vlen = ctx->args[2];

	return fm_enter_data(ctx->args[0], ctx->args[1], 0, vlen > FM_MAX_IOV ? FM_MAX_IOV : vlen, 0,
			     FM_SYS_WRITEV, true);
}

SEC("tracepoint/syscalls/sys_exit_writev")
int fm_exit_writev(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_data(ctx->ret, FM_SYS_WRITEV, FM_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int fm_enter_sendto(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_data(ctx->args[0], ctx->args[1], ctx->args[2], 0, ctx->args[4], FM_SYS_SENDTO, true);
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int fm_exit_sendto(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_data(ctx->ret, FM_SYS_SENDTO, FM_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int fm_enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_data(ctx->args[0], ctx->args[1], ctx->args[2], 0, ctx->args[4], FM_SYS_RECVFROM, false);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int fm_exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_data(ctx->ret, FM_SYS_RECVFROM, FM_DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int fm_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_msg(ctx->args[0], ctx->args[1], FM_SYS_SENDMSG, true);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int fm_exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_data(ctx->ret, FM_SYS_SENDMSG, FM_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int fm_enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_msg(ctx->args[0], ctx->args[1], FM_SYS_RECVMSG, false);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int fm_exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_data(ctx->ret, FM_SYS_RECVMSG, FM_DIR_INGRESS);
}

/* sendmmsg/recvmmsg(fd, struct mmsghdr *vec, vlen, flags, ...): the entry keeps the
 * vector; the exit (ret = messages transferred) emits one event per message, each with
 * its own msg_len, payload from its iovecs and, for unconnected UDP, its msg_name peer. */
#define FM_MAX_MMSG 8

static __always_inline int fm_exit_mmsg(long ret, __u8 syscall, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fm_active *a = bpf_map_lookup_elem(&active, &pid_tgid);
	__u32 seq;
	__u64 trace_id;

	if (!a)
		return 0;
	if (a->syscall != syscall || ret <= 0)
		goto out;
	seq = a->tcp_seq;
	trace_id = fm_trace_step(pid_tgid, a->sk, direction, bpf_ktime_get_ns());
	for (int i = 0; i < FM_MAX_MMSG; i++) {
		struct mmsghdr m = {};
		struct fm_scratch *s;
		struct fm_socket_event *e;
		__u32 want, iovs;

		if (i >= ret)
			break;
		if (bpf_probe_read_user(&m, sizeof(m), (void *)(a->buf + (__u64)i * sizeof(m))))
			break;
		if (m.msg_len == 0)
			continue;
		s = fm_begin(pid_tgid, (struct sock *)a->sk, a->fd, FM_KIND_DATA, direction, syscall, a->enter_ns);
		if (!s)
			break;
		e = &s->hdr;
		e->byte_count = m.msg_len;
		e->syscall_trace_id = trace_id;
		e->tcp_seq = a->l4_proto == IPPROTO_TCP ? seq : 0;
		seq += m.msg_len;
		if (a->l4_proto == IPPROTO_UDP && e->remote_port == 0 && m.msg_hdr.msg_name)
			fm_peer_from_sockaddr(e, (__u64)m.msg_hdr.msg_name);
		want = fm_payload_cap_clamped();
		if (m.msg_len < want)
			want = m.msg_len;
		iovs = m.msg_hdr.msg_iovlen > FM_MAX_IOV ? FM_MAX_IOV : (__u32)m.msg_hdr.msg_iovlen;
		e->payload_len = fm_copy_iov(s->payload, (__u64)m.msg_hdr.msg_iov, iovs, want);
		fm_submit(s, e->payload_len);
	}
out:
	bpf_map_delete_elem(&active, &pid_tgid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int fm_enter_sendmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_data(ctx->args[0], ctx->args[1], 0, 0, 0, FM_SYS_SENDMMSG, true);
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int fm_exit_sendmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_mmsg(ctx->ret, FM_SYS_SENDMMSG, FM_DIR_EGRESS);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int fm_enter_recvmmsg(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_data(ctx->args[0], ctx->args[1], 0, 0, 0, FM_SYS_RECVMMSG, false);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int fm_exit_recvmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_mmsg(ctx->ret, FM_SYS_RECVMMSG, FM_DIR_INGRESS);
}

/* sendfile(out_fd, in_fd, offset, count): the body never passes through user
 * memory, so the event carries the byte count only. */
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int fm_enter_sendfile64(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_data(ctx->args[0], 0, 0, 0, 0, FM_SYS_SENDFILE, true);
}

SEC("tracepoint/syscalls/sys_exit_sendfile64")
int fm_exit_sendfile64(struct trace_event_raw_sys_exit *ctx)
{
	return fm_exit_data(ctx->ret, FM_SYS_SENDFILE, FM_DIR_EGRESS);
}

/* ---- connection lifecycle ---- */

static __always_inline int fm_enter_conn(__s64 fd, __u8 syscall)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fm_active a = {};
	struct sock *sk;
	__u8 l4_proto = 0;

	if (fm_excluded(pid_tgid))
		return 0;
	sk = fm_fd_to_sock(fd, &l4_proto);
	if (!sk)
		return 0;
	a.enter_ns = bpf_ktime_get_ns();
	a.sk = (__u64)sk;
	a.fd = (__s32)fd;
	a.syscall = syscall;
	a.l4_proto = l4_proto;
	bpf_map_update_elem(&active, &pid_tgid, &a, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int fm_enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_conn(ctx->args[0], FM_SYS_CONNECT);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int fm_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fm_active *a = bpf_map_lookup_elem(&active, &pid_tgid);
	struct fm_scratch *s;
	long ret = ctx->ret;

	if (!a)
		return 0;
	if (a->syscall == FM_SYS_CONNECT && (ret == 0 || ret == -FM_EINPROGRESS)) {
		s = fm_begin(pid_tgid, (struct sock *)a->sk, a->fd, FM_KIND_CONNECT, FM_DIR_NONE, FM_SYS_CONNECT,
			     a->enter_ns);
		if (s)
			fm_submit(s, 0);
	}
	bpf_map_delete_elem(&active, &pid_tgid);
	return 0;
}

/* The listener is checked at entry (only inet listeners are followed); the
 * accepted socket is resolved from the returned fd at exit. */
static __always_inline int fm_accept_exit(long ret, __u8 syscall)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fm_active *a = bpf_map_lookup_elem(&active, &pid_tgid);
	struct fm_scratch *s;
	struct sock *sk;
	__u8 l4_proto = 0;

	if (!a)
		return 0;
	if (a->syscall == syscall && ret >= 0) {
		sk = fm_fd_to_sock(ret, &l4_proto);
		if (sk) {
			s = fm_begin(pid_tgid, sk, (__s32)ret, FM_KIND_ACCEPT, FM_DIR_NONE, syscall, a->enter_ns);
			if (s)
				fm_submit(s, 0);
		}
	}
	bpf_map_delete_elem(&active, &pid_tgid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_accept")
int fm_enter_accept(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_conn(ctx->args[0], FM_SYS_ACCEPT);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int fm_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return fm_accept_exit(ctx->ret, FM_SYS_ACCEPT);
}

SEC("tracepoint/syscalls/sys_enter_accept4")
int fm_enter_accept4(struct trace_event_raw_sys_enter *ctx)
{
	return fm_enter_conn(ctx->args[0], FM_SYS_ACCEPT4);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int fm_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return fm_accept_exit(ctx->ret, FM_SYS_ACCEPT4);
}

/* close is reported at entry, while the fd still resolves; nothing to do at exit. */
SEC("tracepoint/syscalls/sys_enter_close")
int fm_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fm_scratch *s;
	struct sock *sk;
	__s64 fd = ctx->args[0];
	__u8 l4_proto = 0;

	if (fm_excluded(pid_tgid))
		return 0;
	sk = fm_fd_to_sock(fd, &l4_proto);
	if (!sk)
		return 0;
	s = fm_begin(pid_tgid, sk, (__s32)fd, FM_KIND_CLOSE, FM_DIR_NONE, FM_SYS_CLOSE, bpf_ktime_get_ns());
	if (s)
		fm_submit(s, 0);
	return 0;
}

/* ---- OpenSSL plaintext (uprobes on libssl) ----
 *
 * int SSL_write(SSL *ssl, const void *buf, int num);   returns bytes written or <= 0
 * int SSL_read(SSL *ssl, void *buf, int num);          returns bytes read or <= 0
 * int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written);   1 or 0
 * int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes);       1 or 0
 *
 * The entry probe parks the call in `tls_calls` (by thread). The OpenSSL
 * structures are opaque and change between versions, so the socket is not read
 * from the SSL object: the first traced data syscall the thread makes while
 * inside the call (fm_tls_note_socket, from the syscall entry programs) records
 * its fd and struct sock. The return probe emits the plaintext as a DATA event
 * of that socket and remembers (process, SSL *) -> socket in `tls_conns` for
 * later calls that make no syscall (served from data OpenSSL already
 * buffered); such a remembered socket is only used while its fd still resolves
 * to the same struct sock, since SSL objects are freed and their addresses
 * reused. Plaintext whose socket is unknown (no syscall yet on this SSL object,
 * memory BIOs, non-inet sockets) is dropped and counted in `tls_unattributed`.
 *
 * The syscalls themselves are still reported, unflagged, with the ciphertext.
 *
 * Nested calls in one thread (an SSL_write_ex implemented with SSL_write, TLS
 * inside TLS through a BIO) share one slot: the innermost call reports, the
 * outer one finds its slot gone. The same rule makes a library attached twice
 * (two paths to one file) harmless: both entry probes park the same call, the
 * first return probe reports it and deletes the slot.
 */

static __always_inline int fm_tls_enter(__u64 ssl, __u64 buf, __u64 len_ptr, __u8 fn)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fm_tls_call call = {};

	if (fm_excluded(pid_tgid))
		return 0;
	call.enter_ns = bpf_ktime_get_ns();
	call.ssl = ssl;
	call.buf = buf;
	call.len_ptr = len_ptr;
	call.fd = -1;
	call.fn = fn;
	bpf_map_update_elem(&tls_calls, &pid_tgid, &call, BPF_ANY);
	return 0;
}

static __always_inline void fm_tls_count_unattributed(void)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&tls_unattributed, &zero);

	if (count)
		*count += 1;
}

static __always_inline int fm_tls_exit(long ret, __u8 fn, __u8 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fm_tls_call *call = bpf_map_lookup_elem(&tls_calls, &pid_tgid);
	struct fm_tls_key key = {};
	struct fm_tls_conn conn = {};
	struct fm_tls_conn *known;
	struct fm_scratch *s;
	struct fm_socket_event *e;
	struct sock *sk;
	__u64 count;
	__u32 want, copied = 0;
	__u8 l4_proto = 0;

	if (!call)
		return 0;
	if (call->fn != fn || (int)ret <= 0)
		goto out;
	if (fn == FM_SYS_SSL_WRITE_EX || fn == FM_SYS_SSL_READ_EX) {
		/* 1 on success, the count is in *len_ptr */
		if (!call->len_ptr || bpf_probe_read_user(&count, sizeof(count), (void *)call->len_ptr))
			goto out;
	} else {
		count = (__u64)(int)ret;
	}
	if (count == 0)
		goto out;

	key.ssl = call->ssl;
	key.tgid = (__u32)(pid_tgid >> 32);
	if (call->sk) {
		conn.sk = call->sk;
		conn.fd = call->fd;
		bpf_map_update_elem(&tls_conns, &key, &conn, BPF_ANY);
	} else {
		known = bpf_map_lookup_elem(&tls_conns, &key);
		if (!known) {
			fm_tls_count_unattributed();
			goto out;
		}
		conn = *known;
		if ((__u64)fm_fd_to_sock(conn.fd, &l4_proto) != conn.sk) {
			/* the fd was closed or reused: a stale entry of a freed SSL object */
			bpf_map_delete_elem(&tls_conns, &key);
			fm_tls_count_unattributed();
			goto out;
		}
	}
	sk = (struct sock *)conn.sk;

	s = fm_begin(pid_tgid, sk, conn.fd, FM_KIND_DATA, direction, fn, call->enter_ns);
	if (!s)
		goto out;
	e = &s->hdr;
	e->flags = FM_FLAG_TLS;
	e->syscall_trace_id = fm_trace_current(pid_tgid);
	e->byte_count = count > 0xffffffffULL ? 0xffffffffU : (__u32)count;
	want = fm_payload_cap_clamped();
	if (count < want)
		want = (__u32)count;
	want &= FM_CHUNK_MASK; /* no-op: want <= FM_MAX_PAYLOAD */
	if (bpf_probe_read_user(s->payload, want, (void *)call->buf) == 0)
		copied = want;
	e->payload_len = copied;
	fm_submit(s, copied);
out:
	bpf_map_delete_elem(&tls_calls, &pid_tgid);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(fm_ssl_write_enter, void *ssl, const void *buf)
{
	return fm_tls_enter((__u64)ssl, (__u64)buf, 0, FM_SYS_SSL_WRITE);
}

SEC("uretprobe")
int BPF_KRETPROBE(fm_ssl_write_exit, int ret)
{
	return fm_tls_exit(ret, FM_SYS_SSL_WRITE, FM_DIR_EGRESS);
}

SEC("uprobe")
int BPF_KPROBE(fm_ssl_read_enter, void *ssl, void *buf)
{
	return fm_tls_enter((__u64)ssl, (__u64)buf, 0, FM_SYS_SSL_READ);
}

SEC("uretprobe")
int BPF_KRETPROBE(fm_ssl_read_exit, int ret)
{
	return fm_tls_exit(ret, FM_SYS_SSL_READ, FM_DIR_INGRESS);
}

SEC("uprobe")
int BPF_KPROBE(fm_ssl_write_ex_enter, void *ssl, const void *buf, __u64 num, __u64 *written)
{
	return fm_tls_enter((__u64)ssl, (__u64)buf, (__u64)written, FM_SYS_SSL_WRITE_EX);
}

SEC("uretprobe")
int BPF_KRETPROBE(fm_ssl_write_ex_exit, int ret)
{
	return fm_tls_exit(ret, FM_SYS_SSL_WRITE_EX, FM_DIR_EGRESS);
}

SEC("uprobe")
int BPF_KPROBE(fm_ssl_read_ex_enter, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return fm_tls_enter((__u64)ssl, (__u64)buf, (__u64)readbytes, FM_SYS_SSL_READ_EX);
}

SEC("uretprobe")
int BPF_KRETPROBE(fm_ssl_read_ex_exit, int ret)
{
	return fm_tls_exit(ret, FM_SYS_SSL_READ_EX, FM_DIR_INGRESS);
}
