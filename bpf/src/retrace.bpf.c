// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * retrace's kernel side. Only tp_btf programs (BTF-typed raw tracepoints): they need neither
 * tracefs nor kprobes, which this project's kernels do not have.
 *
 * Streams (each switched off at load time through a `const volatile` flag, so that the
 * verifier drops the dead code):
 *   proc: sched_process_exec/fork/exit, mark_victim
 *   tcp:  inet_sock_set_state + connect/accept/listen/close syscalls, tcp_retransmit_skb,
 *         tcp_send_reset/tcp_receive_reset, tcp_probe (RTT, sampled per socket)
 *   l7:   read/write family syscalls on tracked TCP sockets, one record per message start
 *   dns:  UDP send/recv family syscalls to or from port 53
 *   logs: write/writev to fd 1 and 2 and to files opened under /var/log/
 *
 * Socket ownership: a socket is attributed to the process that connected or accepted it (or
 * that held it at capture start, seeded by user space in map `fds`), recorded in map `socks`
 * keyed by the socket pointer. Softirq-context events (state changes, retransmits) are joined
 * to it by that pointer, never by bpf_get_current_pid_tgid().
 *
 * Ring buffers: `rb_ctl` (proc and tcp) and `rb_data` (payload records). Records are
 * submitted without wakeup until the ring holds more than a threshold; user space also
 * consumes on a short timer. Every failed reserve is counted in the per-CPU `drops` map.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "retrace.h"

char LICENSE[] SEC("license") = "GPL";

#if !defined(__TARGET_ARCH_x86)
#error "syscall numbers and registers below are for x86_64 only"
#endif

/* x86_64 syscall numbers */
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile 40
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_listen 50
#define NR_openat 257
#define NR_accept4 288
#define NR_recvmmsg 299
#define NR_sendmmsg 307

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define S_IFMT 00170000
#define S_IFSOCK 0140000

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_LISTEN 10

#define EINTR 4
#define EISCONN 106
#define EALREADY 114
#define EINPROGRESS 115

/* ---- configuration, set by user space before load ---- */
const volatile __u32 self_tgid = 0;
const volatile __u32 filter_tgid = 0;
const volatile __u8 filter_comm_set = 0;
const volatile char filter_comm[RT_COMM_LEN] = {};
const volatile __u16 filter_port = 0;
const volatile __u32 payload_bytes = 512;
const volatile __u8 en_proc = 1;
const volatile __u8 en_tcp = 1;
const volatile __u8 en_l7 = 1;
const volatile __u8 en_dns = 1;
const volatile __u8 en_logs = 1;
const volatile __u64 rtt_interval_ns = 1000000000ULL;
const volatile __u64 wakeup_ctl_bytes = 64 * 1024;
const volatile __u64 wakeup_data_bytes = 1024 * 1024;

/* ---- maps ---- */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} rb_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} rb_data SEC(".maps");

/* failed reserves, per rt_kind, per CPU */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RT_K__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* state flags of struct sock_state */
#define SK_SYN_SEEN 0x100
#define SK_CLOSED 0x200
#define SK_LISTENER 0x400
#define SK_TUPLE 0x800

/* What we know of a tracked socket (kernel-only). */
struct sock_state {
	__u64 start_ns;
	__u64 attempt_ns;
	__u64 last_rtt_ns;
	__u64 sent;
	__u64 received;
	__u64 folded_bytes;
	__u32 folded_calls;
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__u32 flags;    /* rt_hdr_flags | SK_* */
	__u32 last_dir; /* 0 none, 1 + enum rt_dir */
	struct rt_tuple t; /* the 4-tuple once established (SK_TUPLE) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_state);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct rt_fd_key);
	__type(value, struct rt_fd_val);
} fds SEC(".maps");

/* what a syscall in flight is about */
enum call_mode {
	CM_TCP = 1,
	CM_LOG = 2,
	CM_DNS = 3,
	CM_OPEN = 4,
	CM_CONNECT = 5,
	CM_ACCEPT = 6,
	CM_LISTEN = 7,
};

struct call {
	__u64 sk;
	__u64 buf;   /* buffer, iovec, msghdr or sockaddr pointer */
	__u64 name;  /* user sockaddr for unconnected UDP, 0 otherwise */
	__u64 start_ns;
	__s32 fd;
	__u32 id;
	__u32 mode;
	__u32 flags;
};

/* the syscall in flight, per thread (task local storage: no hashing, freed with the task) */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct call);
} calls SEC(".maps");

/* Records the syscall in flight of the current thread. */
static __always_inline void put_call(struct call *c)
{
	struct call *slot = bpf_task_storage_get(&calls, bpf_get_current_task_btf(), 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (slot)
		*slot = *c;
}

/* The syscall in flight of the current thread, or NULL. */
static __always_inline struct call *get_call(void)
{
	struct call *slot = bpf_task_storage_get(&calls, bpf_get_current_task_btf(), 0, 0);
	return slot && slot->mode ? slot : NULL;
}

struct data_buf {
	struct rt_data d;
	__u8 payload[RT_PAYLOAD_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct data_buf);
} scratch SEC(".maps");

/* Make the shared record types visible in BTF, hence in the generated Rust `types`. */
struct rt_proc _rt_proc = {};
struct rt_tcp _rt_tcp = {};
struct rt_data _rt_data = {};
struct rt_fd_key _rt_fd_key = {};
struct rt_fd_val _rt_fd_val = {};
enum rt_kind _rt_kind = RT_K_NONE;
enum rt_tcp_step _rt_tcp_step = RT_TCP_CONNECT;
enum rt_dir _rt_dir = RT_DIR_EGRESS;
enum rt_hdr_flags _rt_hdr_flags = RT_F_NO_OWNER;
enum rt_fd_kind _rt_fd_kind = RT_FD_TCP;

/* ---- helpers ---- */

static __always_inline void count_drop(__u32 kind)
{
	__u64 *v = bpf_map_lookup_elem(&drops, &kind);
	if (v)
		*v += 1;
}

static __always_inline __u64 wake_flags(void *rb, __u64 threshold)
{
	return bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA) >= threshold ? BPF_RB_FORCE_WAKEUP
								     : BPF_RB_NO_WAKEUP;
}

static __always_inline void fill_hdr(struct rt_hdr *h, __u16 kind, __u32 pid, __u32 tid)
{
	h->ts = bpf_ktime_get_ns();
	h->kind = kind;
	h->flags = 0;
	h->pid = pid;
	h->tid = tid;
	h->cpu = bpf_get_smp_processor_id();
}

/* True when the current task must not be traced (ourselves, or outside the filters). */
static __always_inline bool skip_task(__u32 tgid)
{
	if (tgid == self_tgid)
		return true;
	if (filter_tgid && tgid != filter_tgid)
		return true;
	if (filter_comm_set) {
		char c[RT_COMM_LEN];
		bpf_get_current_comm(c, sizeof(c));
		for (int i = 0; i < RT_COMM_LEN; i++) {
			if (c[i] != filter_comm[i])
				return true;
			if (c[i] == 0)
				break;
		}
	}
	return false;
}

static __always_inline bool port_ok(__u16 a, __u16 b)
{
	return !filter_port || a == filter_port || b == filter_port;
}

/* The file behind `fd` in the current task, or NULL. */
static __always_inline struct file *fd_file(int fd)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file **arr;
	struct file *f = NULL;

	if (fd < 0 || (unsigned int)fd >= max)
		return NULL;
	arr = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &arr[fd]))
		return NULL;
	return f;
}

/* The socket behind `fd` in the current task, or NULL when it is not a socket. */
static __always_inline struct sock *fd_sock(int fd)
{
	struct file *f = fd_file(fd);
	if (!f)
		return NULL;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *so = BPF_CORE_READ(f, private_data);
	if (!so)
		return NULL;
	return BPF_CORE_READ(so, sk);
}

/* Kernels before 6.13 count file references in f_count. */
struct file___old {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

/* How many references the open file behind `fd` has (dup, fork, fd passing share it). */
static __always_inline long fd_refs(int fd)
{
	struct file *f = fd_file(fd);
	if (!f)
		return 0;
	if (bpf_core_field_exists(f->f_ref))
		return BPF_CORE_READ(f, f_ref.refcnt.counter) + 1; /* FILE_REF_ONEREF is 0 */
	struct file___old *o = (void *)f;
	return BPF_CORE_READ(o, f_count.counter);
}

static __always_inline __u16 sk_proto(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_protocol);
}

static __always_inline void read_tuple(const struct sock *sk, struct rt_tuple *t)
{
	__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);

	__builtin_memset(t, 0, sizeof(*t));
	t->family = fam;
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (fam == AF_INET6) {
		BPF_CORE_READ_INTO(&t->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&t->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		__u32 s = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(t->saddr, &s, 4);
		__builtin_memcpy(t->daddr, &d, 4);
	}
}

/* Reads the family and port of a user sockaddr; returns the port (host order) or 0. */
static __always_inline __u16 user_sockaddr(const void *addr, struct rt_tuple *remote)
{
	struct sockaddr_in6 sa = {};

	if (!addr || bpf_probe_read_user(&sa, sizeof(sa), addr))
		return 0;
	if (sa.sin6_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&sa;
		if (remote) {
			__builtin_memcpy(remote->daddr, &in->sin_addr.s_addr, 4);
			remote->dport = bpf_ntohs(in->sin_port);
		}
		return bpf_ntohs(in->sin_port);
	}
	if (sa.sin6_family == AF_INET6) {
		if (remote) {
			__builtin_memcpy(remote->daddr, &sa.sin6_addr, 16);
			remote->dport = bpf_ntohs(sa.sin6_port);
		}
		return bpf_ntohs(sa.sin6_port);
	}
	return 0;
}

static __always_inline void emit_tcp(const struct sock *sk, struct sock_state *st, __u32 step,
				     __u16 kind, __s32 err, __u32 state)
{
	struct rt_tcp *e = bpf_ringbuf_reserve(&rb_ctl, sizeof(*e), 0);
	if (!e) {
		count_drop(kind);
		return;
	}
	__u64 now = bpf_ktime_get_ns();
	e->h.ts = now;
	e->h.kind = kind;
	e->h.cpu = bpf_get_smp_processor_id();
	e->h.flags = 0;
	if (st) {
		e->h.pid = st->tgid;
		e->h.tid = st->tid;
		e->h.flags = st->flags & (RT_F_SEEDED | RT_F_INBOUND);
		e->start_ns = st->start_ns;
		e->fd = st->fd;
		e->bytes_sent = st->sent;
		e->bytes_received = st->received;
		e->latency_ns = st->attempt_ns ? now - st->attempt_ns : 0;
	} else {
		e->h.pid = 0;
		e->h.tid = 0;
		e->h.flags = RT_F_NO_OWNER;
		e->start_ns = 0;
		e->fd = -1;
		e->bytes_sent = 0;
		e->bytes_received = 0;
		e->latency_ns = 0;
	}
	read_tuple(sk, &e->t);
	e->sk = (__u64)sk;
	e->step = step;
	e->err = err;
	e->srtt_us = 0;
	e->state = state;
	e->_pad = 0;
	if (step == RT_TCP_RTT)
		e->srtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	bpf_ringbuf_submit(e, wake_flags(&rb_ctl, wakeup_ctl_bytes));
}

/* ---- proc ---- */

static __always_inline bool proc_filtered(__u32 pid, __u32 ppid)
{
	if (pid == self_tgid)
		return true;
	if (filter_tgid && pid != filter_tgid && ppid != filter_tgid)
		return true;
	return false;
}

static __always_inline struct rt_proc *proc_reserve(__u16 kind, __u32 pid, __u32 tid)
{
	struct rt_proc *e = bpf_ringbuf_reserve(&rb_ctl, sizeof(*e), 0);
	if (!e) {
		count_drop(kind);
		return NULL;
	}
	fill_hdr(&e->h, kind, pid, tid);
	e->ppid = 0;
	e->child_pid = 0;
	e->exit_code = 0;
	e->signal = 0;
	e->args_len = 0;
	e->_pad = 0;
	e->filename[0] = 0;
	return e;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(rt_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (!en_proc)
		return 0;
	__u32 pid = BPF_CORE_READ(p, tgid);
	__u32 ppid = BPF_CORE_READ(p, real_parent, tgid);
	if (proc_filtered(pid, ppid) || skip_task(pid))
		return 0;
	struct rt_proc *e = proc_reserve(RT_K_EXEC, pid, BPF_CORE_READ(p, pid));
	if (!e)
		return 0;
	e->ppid = ppid;
	BPF_CORE_READ_STR_INTO(&e->comm, p, comm);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, interp));
	unsigned long a0 = BPF_CORE_READ(p, mm, arg_start);
	unsigned long a1 = BPF_CORE_READ(p, mm, arg_end);
	__u64 len = a1 > a0 ? a1 - a0 : 0;
	if (len > RT_ARGS_LEN)
		len = RT_ARGS_LEN;
	if (len && bpf_probe_read_user(e->args, len, (void *)a0) == 0)
		e->args_len = len;
	bpf_ringbuf_submit(e, wake_flags(&rb_ctl, wakeup_ctl_bytes));
	return 0;
}

/* Fds inherited across fork are looked at up to this number. */
#define FORK_FDS 256

struct fork_ctx {
	__u32 parent;
	__u32 child;
};

static long copy_fd(__u64 i, struct fork_ctx *c)
{
	struct rt_fd_key pk = {.tgid = c->parent, .fd = (int)i};
	struct rt_fd_val *v = bpf_map_lookup_elem(&fds, &pk);
	if (v) {
		struct rt_fd_key ck = {.tgid = c->child, .fd = (int)i};
		struct rt_fd_val nv = *v;
		bpf_map_update_elem(&fds, &ck, &nv, BPF_NOEXIST);
	}
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(rt_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 cpid = BPF_CORE_READ(child, pid);
	if (cpid != BPF_CORE_READ(child, tgid))
		return 0; /* a thread */
	__u32 ppid = BPF_CORE_READ(parent, tgid);
	if (en_tcp || en_logs) {
		/* a pre-fork server's child keeps using the sockets it inherits */
		struct fork_ctx c = {.parent = ppid, .child = cpid};
		unsigned int max = BPF_CORE_READ(child, files, fdt, max_fds);
		bpf_loop(max < FORK_FDS ? max : FORK_FDS, copy_fd, &c, 0);
	}
	if (!en_proc)
		return 0;
	if (proc_filtered(cpid, ppid) || skip_task(ppid))
		return 0;
	struct rt_proc *e = proc_reserve(RT_K_FORK, ppid, BPF_CORE_READ(parent, pid));
	if (!e)
		return 0;
	e->ppid = ppid;
	e->child_pid = cpid;
	BPF_CORE_READ_STR_INTO(&e->comm, parent, comm);
	bpf_ringbuf_submit(e, wake_flags(&rb_ctl, wakeup_ctl_bytes));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(rt_exit, struct task_struct *p)
{
	if (!en_proc)
		return 0;
	/* the last thread out: signal->live has just dropped to zero */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	__u32 pid = BPF_CORE_READ(p, tgid);
	__u32 ppid = BPF_CORE_READ(p, real_parent, tgid);
	if (proc_filtered(pid, ppid))
		return 0;
	struct rt_proc *e = proc_reserve(RT_K_EXIT, pid, BPF_CORE_READ(p, pid));
	if (!e)
		return 0;
	int code = BPF_CORE_READ(p, exit_code);
	e->ppid = ppid;
	e->exit_code = (code >> 8) & 0xff;
	e->signal = code & 0x7f;
	BPF_CORE_READ_STR_INTO(&e->comm, p, comm);
	bpf_ringbuf_submit(e, wake_flags(&rb_ctl, wakeup_ctl_bytes));
	return 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(rt_oom, struct task_struct *p)
{
	if (!en_proc)
		return 0;
	__u32 pid = BPF_CORE_READ(p, tgid);
	if (pid == self_tgid)
		return 0;
	struct rt_proc *e = proc_reserve(RT_K_OOM, pid, BPF_CORE_READ(p, pid));
	if (!e)
		return 0;
	BPF_CORE_READ_STR_INTO(&e->comm, p, comm);
	bpf_ringbuf_submit(e, wake_flags(&rb_ctl, wakeup_ctl_bytes));
	return 0;
}

/* ---- tcp lifecycle ---- */

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(rt_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (!en_tcp || sk_proto(sk) != IPPROTO_TCP)
		return 0;
	__u64 key = (__u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&socks, &key);

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		if (!st)
			return 0;
		st->attempt_ns = bpf_ktime_get_ns();
		st->flags |= SK_SYN_SEEN;
		emit_tcp(sk, st, RT_TCP_CONNECT, RT_K_TCP, 0, newstate);
		return 0;
	}
	if (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED) {
		if (st) {
			read_tuple(sk, &st->t);
			st->flags |= SK_TUPLE;
			emit_tcp(sk, st, RT_TCP_ESTABLISHED, RT_K_TCP, 0, newstate);
		}
		return 0;
	}
	if (oldstate == TCP_CLOSE && newstate == TCP_LISTEN) {
		/* listen(2), in process context */
		__u64 id = bpf_get_current_pid_tgid();
		__u32 tid = (__u32)id, tgid = id >> 32;
		struct call *c = get_call();
		if (!c || c->mode != CM_LISTEN || skip_task(tgid))
			return 0;
		struct sock_state ns = {};
		ns.start_ns = bpf_ktime_get_ns();
		ns.tgid = tgid;
		ns.tid = tid;
		ns.fd = c->fd;
		ns.flags = SK_LISTENER;
		struct rt_tuple t;
		read_tuple(sk, &t);
		if (!port_ok(t.sport, t.sport))
			return 0;
		bpf_map_update_elem(&socks, &key, &ns, BPF_ANY);
		emit_tcp(sk, &ns, RT_TCP_LISTEN, RT_K_TCP, 0, newstate);
		return 0;
	}
	if (newstate != TCP_CLOSE || !st)
		return 0;
	if (oldstate == TCP_LISTEN) {
		emit_tcp(sk, st, RT_TCP_LISTEN_CLOSE, RT_K_TCP, 0, newstate);
	} else if (oldstate == TCP_SYN_SENT) {
		emit_tcp(sk, st, RT_TCP_FAILED, RT_K_TCP, BPF_CORE_READ(sk, sk_err), newstate);
	} else if (!(st->flags & SK_CLOSED)) {
		/* the owner never called close() on it (exit, exec with CLOEXEC, fd passing) */
		st->attempt_ns = 0;
		emit_tcp(sk, st, RT_TCP_CLOSED, RT_K_TCP, 0, newstate);
	}
	bpf_map_delete_elem(&socks, &key);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(rt_retransmit, const struct sock *sk)
{
	if (!en_tcp || !sk)
		return 0;
	__u64 key = (__u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&socks, &key);
	if (!st && filter_port) {
		struct rt_tuple t;
		read_tuple(sk, &t);
		if (!port_ok(t.sport, t.dport))
			return 0;
	}
	emit_tcp(sk, st, RT_TCP_RETRANSMIT, RT_K_TCP_SAMPLE, 0,
		 BPF_CORE_READ(sk, __sk_common.skc_state));
	return 0;
}

static __always_inline void reset_sample(const struct sock *sk, __u32 step)
{
	if (!en_tcp || !sk)
		return;
	__u64 key = (__u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&socks, &key);
	if (!st && filter_port) {
		struct rt_tuple t;
		read_tuple(sk, &t);
		if (!port_ok(t.sport, t.dport))
			return;
	}
	emit_tcp(sk, st, step, RT_K_TCP_SAMPLE, 0, BPF_CORE_READ(sk, __sk_common.skc_state));
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(rt_send_reset, const struct sock *sk)
{
	reset_sample(sk, RT_TCP_RESET_SENT);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(rt_receive_reset, struct sock *sk)
{
	reset_sample(sk, RT_TCP_RESET_RECV);
	return 0;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(rt_tcp_probe, struct sock *sk)
{
	if (!en_tcp || !sk)
		return 0;
	__u64 key = (__u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&socks, &key);
	if (!st)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (now - st->last_rtt_ns < rtt_interval_ns)
		return 0;
	st->last_rtt_ns = now;
	emit_tcp(sk, st, RT_TCP_RTT, RT_K_TCP_SAMPLE, 0, BPF_CORE_READ(sk, __sk_common.skc_state));
	return 0;
}

/* ---- syscalls ---- */

static __always_inline bool is_egress(__u32 id)
{
	return id == NR_write || id == NR_writev || id == NR_sendto || id == NR_sendmsg ||
	       id == NR_sendmmsg || id == NR_sendfile;
}

/* A socket seen for the first time through an fd seeded by user space. */
static __always_inline struct sock *adopt_seeded(struct rt_fd_key *k, struct rt_fd_val *v)
{
	struct sock *sk = fd_sock(k->fd);
	if (!sk || sk_proto(sk) != IPPROTO_TCP) {
		bpf_map_delete_elem(&fds, k);
		return NULL;
	}
	struct sock_state ns = {};
	ns.start_ns = v->start_ns;
	ns.tgid = k->tgid;
	ns.fd = k->fd;
	ns.flags = v->flags | RT_F_SEEDED | SK_TUPLE;
	read_tuple(sk, &ns.t);
	__u64 key = (__u64)sk;
	bpf_map_update_elem(&socks, &key, &ns, BPF_NOEXIST);
	v->sk = key;
	return sk;
}

static __always_inline void on_close(__u32 tgid, int fd)
{
	struct rt_fd_key k = {.tgid = tgid, .fd = fd};
	struct rt_fd_val *v = bpf_map_lookup_elem(&fds, &k);
	if (!v)
		return;
	__u64 key = v->sk;
	__u32 kind = v->kind;
	/* Only the last reference closes the socket: a pre-fork server's parent closing its
	 * copy after fork, or one of two dup'ed fds, leaves the connection open. */
	if (kind == RT_FD_TCP && en_tcp && fd_refs(fd) <= 1) {
		if (!key) {
			/* seeded and never used: adopt it now to report its close */
			struct sock *sk = adopt_seeded(&k, v);
			key = (__u64)sk;
		}
		struct sock_state *st = key ? bpf_map_lookup_elem(&socks, &key) : NULL;
		if (st && !(st->flags & (SK_CLOSED | SK_LISTENER))) {
			st->flags |= SK_CLOSED;
			st->attempt_ns = 0;
			emit_tcp((const struct sock *)key, st, RT_TCP_CLOSED, RT_K_TCP, 0,
				 BPF_CORE_READ((struct sock *)key, __sk_common.skc_state));
		}
	}
	bpf_map_delete_elem(&fds, &k);
}

static __always_inline bool is_udp_call(__u32 id)
{
	return id == NR_sendto || id == NR_sendmsg || id == NR_sendmmsg || id == NR_recvfrom ||
	       id == NR_recvmsg || id == NR_recvmmsg;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(rt_sys_enter, struct pt_regs *regs, long id)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32, tid = (__u32)pt;
	struct call c = {};

	switch (id) {
	case NR_read:
	case NR_write:
	case NR_readv:
	case NR_writev:
	case NR_sendto:
	case NR_recvfrom:
	case NR_sendmsg:
	case NR_recvmsg:
	case NR_sendmmsg:
	case NR_recvmmsg:
	case NR_sendfile:
		break;
	case NR_close:
		if (en_tcp || en_logs)
			on_close(tgid, (int)regs->di);
		return 0;
	case NR_connect: {
		if (!en_tcp || skip_task(tgid))
			return 0;
		int fd = regs->di;
		struct rt_tuple rt = {};
		__u16 port = user_sockaddr((void *)regs->si, &rt);
		if (!port || !port_ok(port, port))
			return 0;
		struct sock *sk = fd_sock(fd);
		if (!sk || sk_proto(sk) != IPPROTO_TCP)
			return 0;
		struct sock_state ns = {};
		__u64 now = bpf_ktime_get_ns();
		ns.start_ns = now;
		ns.attempt_ns = now;
		ns.tgid = tgid;
		ns.tid = tid;
		ns.fd = fd;
		__u64 key = (__u64)sk;
		bpf_map_update_elem(&socks, &key, &ns, BPF_ANY);
		struct rt_fd_key k = {.tgid = tgid, .fd = fd};
		struct rt_fd_val v = {.sk = key, .start_ns = now, .kind = RT_FD_TCP};
		bpf_map_update_elem(&fds, &k, &v, BPF_ANY);
		c.mode = CM_CONNECT;
		c.sk = key;
		c.fd = fd;
		c.id = id;
		c.buf = regs->si;
		put_call(&c);
		return 0;
	}
	case NR_accept:
	case NR_accept4:
		if (!en_tcp || skip_task(tgid))
			return 0;
		c.mode = CM_ACCEPT;
		c.id = id;
		c.fd = regs->di;
		put_call(&c);
		return 0;
	case NR_listen:
		if (!en_tcp || skip_task(tgid))
			return 0;
		c.mode = CM_LISTEN;
		c.id = id;
		c.fd = regs->di;
		put_call(&c);
		return 0;
	case NR_open:
	case NR_openat: {
		if (!en_logs || skip_task(tgid))
			return 0;
		const char *path = (const char *)(id == NR_open ? regs->di
							       : regs->si);
		char p[9] = {};
		if (bpf_probe_read_user(p, sizeof(p), path))
			return 0;
		if (p[0] != '/' || p[1] != 'v' || p[2] != 'a' || p[3] != 'r' || p[4] != '/' ||
		    p[5] != 'l' || p[6] != 'o' || p[7] != 'g' || p[8] != '/')
			return 0;
		c.mode = CM_OPEN;
		c.id = id;
		c.buf = (__u64)path;
		put_call(&c);
		return 0;
	}
	default:
		return 0;
	}

	/* read/write family */
	int fd = regs->di;
	struct rt_fd_key k = {.tgid = tgid, .fd = fd};
	struct rt_fd_val *v = bpf_map_lookup_elem(&fds, &k);
	c.id = id;
	c.fd = fd;
	c.buf = regs->si;
	if (v) {
		if (v->kind == RT_FD_TCP) {
			if (!en_tcp)
				return 0;
			__u64 key = v->sk;
			if (!key)
				key = (__u64)adopt_seeded(&k, v);
			if (!key)
				return 0;
			c.mode = CM_TCP;
			c.sk = key;
			c.start_ns = v->start_ns;
		} else if (v->kind == RT_FD_LOG && en_logs && (id == NR_write || id == NR_writev)) {
			c.mode = CM_LOG;
		} else {
			return 0;
		}
		put_call(&c);
		return 0;
	}
	if (en_logs && (fd == 1 || fd == 2) && (id == NR_write || id == NR_writev)) {
		if (skip_task(tgid))
			return 0;
		c.mode = CM_LOG;
		put_call(&c);
		return 0;
	}
	if (en_dns && is_udp_call(id)) {
		if (skip_task(tgid))
			return 0;
		struct sock *sk = fd_sock(fd);
		if (!sk || sk_proto(sk) != IPPROTO_UDP)
			return 0;
		__u16 sport = BPF_CORE_READ(sk, __sk_common.skc_num);
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		if (dport == 0) {
			/* unconnected: the peer is in the call's sockaddr */
			if (id == NR_sendto || id == NR_recvfrom) {
				c.name = regs->r8;
			} else if (id == NR_sendmsg || id == NR_recvmsg) {
				struct user_msghdr *m = (struct user_msghdr *)c.buf;
				void *name = NULL;
				bpf_probe_read_user(&name, sizeof(name), &m->msg_name);
				c.name = (__u64)name;
			} else {
				struct mmsghdr *mm = (struct mmsghdr *)c.buf;
				void *name = NULL;
				bpf_probe_read_user(&name, sizeof(name), &mm->msg_hdr.msg_name);
				c.name = (__u64)name;
			}
		}
		if (sport != 53 && dport != 53) {
			if (dport != 0 || !c.name)
				return 0; /* connected elsewhere, or no peer to look at */
			if (is_egress(id) && user_sockaddr((void *)c.name, NULL) != 53)
				return 0;
		}
		c.mode = CM_DNS;
		c.sk = (__u64)sk;
		put_call(&c);
	}
	return 0;
}

/* Source and available length of the `i`th message's first buffer, for each call shape. */
static __always_inline int msg_buf(struct call *c, long ret, int i, void **src, __u64 *avail)
{
	struct iovec iov = {};
	struct user_msghdr m = {};

	switch (c->id) {
	case NR_read:
	case NR_write:
	case NR_sendto:
	case NR_recvfrom:
		if (i)
			return -1;
		*src = (void *)c->buf;
		*avail = ret;
		return 0;
	case NR_readv:
	case NR_writev:
		if (i || bpf_probe_read_user(&iov, sizeof(iov), (void *)c->buf))
			return -1;
		*src = iov.iov_base;
		*avail = iov.iov_len < (__u64)ret ? iov.iov_len : (__u64)ret;
		return 0;
	case NR_sendmsg:
	case NR_recvmsg:
		if (i || bpf_probe_read_user(&m, sizeof(m), (void *)c->buf))
			return -1;
		if (!m.msg_iov || bpf_probe_read_user(&iov, sizeof(iov), m.msg_iov))
			return -1;
		*src = iov.iov_base;
		*avail = iov.iov_len < (__u64)ret ? iov.iov_len : (__u64)ret;
		return 0;
	case NR_sendmmsg:
	case NR_recvmmsg: {
		struct mmsghdr mm = {};
		if (i >= ret)
			return -1;
		if (bpf_probe_read_user(&mm, sizeof(mm), (struct mmsghdr *)c->buf + i))
			return -1;
		if (!mm.msg_hdr.msg_iov ||
		    bpf_probe_read_user(&iov, sizeof(iov), mm.msg_hdr.msg_iov))
			return -1;
		*src = iov.iov_base;
		*avail = iov.iov_len < mm.msg_len ? iov.iov_len : mm.msg_len;
		return 0;
	}
	default: /* sendfile: no user buffer */
		if (i)
			return -1;
		*src = NULL;
		*avail = 0;
		return 0;
	}
}

/* Emits one payload record; returns 0 on success. */
static __always_inline int emit_data(struct call *c, long ret, int i, __u16 kind, __u32 tgid,
				     __u32 tid, struct sock_state *st)
{
	__u32 zero = 0;
	struct data_buf *b = bpf_map_lookup_elem(&scratch, &zero);
	void *src = NULL;
	__u64 avail = 0;

	if (!b)
		return -1;
	if (msg_buf(c, ret, i, &src, &avail))
		return -1;
	struct rt_data *d = &b->d;
	fill_hdr(&d->h, kind, tgid, tid);
	d->sk = c->sk;
	d->start_ns = c->start_ns;
	d->size = c->id == NR_sendmmsg || c->id == NR_recvmmsg ? avail : (__u64)ret;
	d->folded_bytes = 0;
	d->folded_calls = 0;
	d->fd = c->fd;
	d->dir = is_egress(c->id) ? RT_DIR_EGRESS : RT_DIR_INGRESS;
	d->syscall = c->id;
	d->_pad = 0;
	if (st) {
		d->h.flags = st->flags & (RT_F_SEEDED | RT_F_INBOUND);
		d->folded_bytes = st->folded_bytes;
		d->folded_calls = st->folded_calls;
	}
	if (st && (st->flags & SK_TUPLE))
		d->t = st->t;
	else if (c->sk)
		read_tuple((const struct sock *)c->sk, &d->t);
	else
		__builtin_memset(&d->t, 0, sizeof(d->t));
	if (c->name && d->t.dport == 0) {
		/* unconnected UDP: the peer is in the call's sockaddr */
		__u16 peer = user_sockaddr((void *)c->name, &d->t);
		if (kind == RT_K_UDP && peer != 53 && d->t.sport != 53)
			return -1;
	}
	__u64 len = avail < payload_bytes ? avail : payload_bytes;
	if (len > RT_PAYLOAD_MAX)
		len = RT_PAYLOAD_MAX;
	if (len && src) {
		if (bpf_probe_read_user(b->payload, len, src))
			len = 0;
	} else {
		len = 0;
	}
	d->payload_len = len;
	__u64 size = sizeof(struct rt_data) + len;
	if (size > sizeof(*b))
		return -1;
	if (bpf_ringbuf_output(&rb_data, b, size, wake_flags(&rb_data, wakeup_data_bytes))) {
		count_drop(kind);
		return -1;
	}
	return 0;
}

/* Tells user space the path of a log file just opened (the process may be gone before it
 * could read /proc/PID/fd). */
static __always_inline void emit_log_open(struct call *c, long fd, __u32 tgid, __u32 tid)
{
	__u32 zero = 0;
	struct data_buf *b = bpf_map_lookup_elem(&scratch, &zero);
	if (!b)
		return;
	struct rt_data *d = &b->d;
	fill_hdr(&d->h, RT_K_LOG, tgid, tid);
	d->h.flags = RT_F_LOG_OPEN;
	__builtin_memset(&d->t, 0, sizeof(d->t));
	d->sk = 0;
	d->start_ns = 0;
	d->size = 0;
	d->folded_bytes = 0;
	d->folded_calls = 0;
	d->fd = fd;
	d->dir = RT_DIR_EGRESS;
	d->syscall = c->id;
	d->_pad = 0;
	long n = bpf_probe_read_user_str(b->payload, RT_PATH_LEN, (void *)c->buf);
	if (n <= 0)
		return;
	__u64 len = n - 1; /* without the NUL */
	if (len > RT_PATH_LEN)
		len = RT_PATH_LEN;
	d->payload_len = len;
	if (bpf_ringbuf_output(&rb_data, b, sizeof(struct rt_data) + len,
			       wake_flags(&rb_data, wakeup_data_bytes)))
		count_drop(RT_K_LOG);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(rt_sys_exit, struct pt_regs *regs, long ret)
{
	long id = regs->orig_ax;

	switch (id) {
	case NR_read:
	case NR_write:
	case NR_readv:
	case NR_writev:
	case NR_sendto:
	case NR_recvfrom:
	case NR_sendmsg:
	case NR_recvmsg:
	case NR_sendmmsg:
	case NR_recvmmsg:
	case NR_sendfile:
	case NR_connect:
	case NR_accept:
	case NR_accept4:
	case NR_listen:
	case NR_open:
	case NR_openat:
		break;
	default:
		return 0;
	}
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32, tid = (__u32)pt;
	struct call *cp = get_call();
	struct call c = {};
	if (cp) {
		c = *cp;
		cp->mode = 0;
		if (c.id != id)
			return 0;
	} else if ((id == NR_accept || id == NR_accept4) && en_tcp && !skip_task(tgid)) {
		/* an accept that was already waiting when the capture started */
		c.mode = CM_ACCEPT;
		c.id = id;
	} else {
		return 0;
	}

	switch (c.mode) {
	case CM_CONNECT: {
		if (ret >= 0 || ret == -EINPROGRESS || ret == -EINTR || ret == -EALREADY ||
		    ret == -EISCONN)
			return 0;
		struct sock_state *st = bpf_map_lookup_elem(&socks, &c.sk);
		if (!st || (st->flags & SK_SYN_SEEN))
			return 0;
		/* failed before any SYN left (no route, bad address...) */
		emit_tcp((const struct sock *)c.sk, st, RT_TCP_FAILED, RT_K_TCP, -ret, 0);
		bpf_map_delete_elem(&socks, &c.sk);
		return 0;
	}
	case CM_ACCEPT: {
		if (ret < 0)
			return 0;
		int fd = ret;
		struct sock *sk = fd_sock(fd);
		if (!sk || sk_proto(sk) != IPPROTO_TCP)
			return 0;
		struct rt_tuple t;
		read_tuple(sk, &t);
		if (!port_ok(t.sport, t.dport))
			return 0;
		struct sock_state ns = {};
		__u64 now = bpf_ktime_get_ns();
		ns.start_ns = now;
		ns.tgid = tgid;
		ns.tid = tid;
		ns.fd = fd;
		ns.flags = RT_F_INBOUND | SK_TUPLE;
		ns.t = t;
		__u64 key = (__u64)sk;
		bpf_map_update_elem(&socks, &key, &ns, BPF_ANY);
		struct rt_fd_key k = {.tgid = tgid, .fd = fd};
		struct rt_fd_val v = {.sk = key, .start_ns = now, .kind = RT_FD_TCP,
				      .flags = RT_F_INBOUND};
		bpf_map_update_elem(&fds, &k, &v, BPF_ANY);
		emit_tcp(sk, &ns, RT_TCP_ACCEPTED, RT_K_TCP, 0, TCP_ESTABLISHED);
		return 0;
	}
	case CM_OPEN: {
		if (ret < 0)
			return 0;
		struct rt_fd_key k = {.tgid = tgid, .fd = ret};
		struct rt_fd_val v = {.kind = RT_FD_LOG};
		bpf_map_update_elem(&fds, &k, &v, BPF_ANY);
		emit_log_open(&c, ret, tgid, tid);
		return 0;
	}
	case CM_TCP: {
		if (ret <= 0)
			return 0;
		struct sock_state *st = bpf_map_lookup_elem(&socks, &c.sk);
		if (!st)
			return 0;
		bool eg = is_egress(id);
		__u64 bytes = ret;
		if (id == NR_sendmmsg || id == NR_recvmmsg) {
			void *src;
			__u64 avail = 0;
			bytes = 0;
			if (msg_buf(&c, ret, 0, &src, &avail) == 0)
				bytes = avail;
		}
		if (eg)
			__sync_fetch_and_add(&st->sent, bytes);
		else
			__sync_fetch_and_add(&st->received, bytes);
		if (!en_l7)
			return 0;
		__u32 dir = 1 + (eg ? RT_DIR_EGRESS : RT_DIR_INGRESS);
		if (st->last_dir == dir) {
			st->folded_calls += 1;
			st->folded_bytes += bytes;
			return 0;
		}
		emit_data(&c, ret, 0, RT_K_L7, st->tgid, tid, st);
		st->last_dir = dir;
		st->folded_calls = 0;
		st->folded_bytes = 0;
		return 0;
	}
	case CM_LOG:
		if (ret > 0)
			emit_data(&c, ret, 0, RT_K_LOG, tgid, tid, NULL);
		return 0;
	case CM_DNS:
		if (ret <= 0)
			return 0;
		emit_data(&c, ret, 0, RT_K_UDP, tgid, tid, NULL);
		if (id == NR_sendmmsg || id == NR_recvmmsg)
			emit_data(&c, ret, 1, RT_K_UDP, tgid, tid, NULL);
		return 0;
	default:
		return 0;
	}
}
