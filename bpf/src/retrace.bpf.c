// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * retrace's kernel side. Only tp_btf programs (BTF-typed raw tracepoints) and one task_file
 * iterator: they need neither tracefs nor kprobes, which this project's kernels do not have.
 *
 * Streams (each switched off at load time through a `const volatile` flag, so that the
 * verifier drops the dead code):
 *   proc: sched_process_exec/fork/exit, mark_victim
 *   tcp:  inet_sock_set_state (connect attempts and listen are taken there, in the calling
 *         task, with the fd from its syscall registers), accept/close/failed connect at
 *         sys_exit, tcp_retransmit_skb, tcp_send_reset/tcp_receive_reset; RTT (srtt) sampled
 *         per socket at most every rtt_interval_ns, read on the socket's own syscalls
 *   l7:   read/write family syscalls on tracked TCP sockets, one record per message start
 *   dns:  UDP send/recv family syscalls to or from port 53
 *   logs: write/writev to fd 1 and 2 and to files opened under /var/log/
 *
 * Syscalls: ONE program, at raw sys_exit, runs for every syscall of every task. It needs no
 * entry program: on x86_64 the argument registers saved in pt_regs are intact at exit for
 * every syscall it follows, orig_ax holds the number. So its first instructions reject on the
 * number alone, and nothing is stored between entry and exit.
 *
 * Socket ownership: a socket is attributed to the process that connected or accepted it (or
 * that held it at capture start, seeded by user space in map `fds` and resolved by the
 * `rt_seed` iterator), recorded in map `socks` keyed by the socket pointer. Softirq-context
 * events (state changes, retransmits) are joined to it by that pointer, never by
 * bpf_get_current_pid_tgid().
 *
 * Ring buffers: `rb_ctl` (proc and tcp) and `rb_data`, one ring per CPU for the payload records
 * (reserved in a few size classes and filled in place): two CPUs never contend for a payload
 * ring's lock and producer position. Records are submitted without wakeup until the ring holds
 * more than a threshold; user space also consumes on a short timer. Every failed reserve is
 * counted in the per-CPU `drops` map.
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
#define NR_dup 32
#define NR_dup2 33
#define NR_sendfile 40
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_listen 50
#define NR_fcntl 72
#define NR_openat 257
#define NR_accept4 288
#define NR_dup3 292
#define NR_recvmmsg 299
#define NR_sendmmsg 307
#define NR_close_range 436

#define F_DUPFD 0
#define F_DUPFD_CLOEXEC 1030
#define CLOSE_RANGE_CLOEXEC (1U << 2)

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define S_IFMT 00170000
#define S_IFSOCK 0140000

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LISTEN 10

#define EINTR 4
#define EBADF 9
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
/* The kernel has bpf_loop (5.17+); without it (Ubuntu 22.04's 5.15) the fd walks are bounded
 * loops, which the verifier walks iteration by iteration (the bpf_loop calls are then dead code
 * it never looks at). */
const volatile __u8 has_bpf_loop = 1;
const volatile __u64 wakeup_ctl_bytes = 64 * 1024;
const volatile __u64 wakeup_data_bytes = 1024 * 1024;

/* ---- maps ---- */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} rb_ctl SEC(".maps");

/* The payload rings: slot N is CPU N's ring. User space sizes the array to the possible CPUs
 * and creates the rings (this inner definition is only their template). */
struct rb_data_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct rb_data_ring);
} rb_data SEC(".maps");

/* This CPU's payload ring, or NULL (not created: the record is counted as dropped). */
static __always_inline void *data_ring(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	return bpf_map_lookup_elem(&rb_data, &cpu);
}

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
#define SK_CLOSE_PENDING 0x1000 /* closed by the kernel (a reset) while its owner holds it */

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

/* Fds that fork, exec, exit and close_range look at: those below this number (higher ones are
 * left to the LRU). */
#define FORK_FDS 256

/* Processes that were given an entry in `fds`: fork, exec and exit walk a process's fds only
 * when it is here, so processes that never touch a followed socket or log file (a shell
 * loop's children) cost a lookup, not a walk. User space adds the seeded ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} fd_owners SEC(".maps");

static __always_inline void note_fd_owner(__u32 tgid)
{
	__u8 one = 1;
	if (!bpf_map_lookup_elem(&fd_owners, &tgid))
		bpf_map_update_elem(&fd_owners, &tgid, &one, BPF_ANY);
}

static __always_inline bool fd_owner(__u32 tgid)
{
	return bpf_map_lookup_elem(&fd_owners, &tgid) != NULL;
}

/* What the exit program knows of the syscall it looks at (on its stack, nothing kept
 * between entry and exit: every argument is still in pt_regs at sys_exit). */
struct call {
	__u64 sk;
	__u64 buf;   /* buffer, iovec, msghdr or sockaddr pointer */
	__u64 name;  /* user sockaddr for unconnected UDP, 0 otherwise */
	__u64 start_ns;
	__s32 fd;
	__u32 id;
	__u32 tgid; /* pid of the record */
	__u32 tid;
	__u16 kind; /* enum rt_kind of the record */
	__u64 ts;   /* the record's time, 0: now */
};

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

/* Payload records submitted on each CPU (kernel-only). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} data_submits SEC(".maps");

/* Only one payload record in (wake_check_mask + 1) per CPU looks at the fill level of its
 * ring: reading the ring's positions touches cache lines that its consumer writes. User space
 * sizes the mask so that what a CPU adds between two looks stays well below the wakeup
 * threshold. */
const volatile __u64 wake_check_mask = 0;
static __always_inline __u64 data_wake_flags(void *rb)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&data_submits, &zero);
	if (n && (++*n & wake_check_mask) != 0)
		return BPF_RB_NO_WAKEUP;
	return wake_flags(rb, wakeup_data_bytes);
}

static __always_inline void fill_hdr_ts(struct rt_hdr *h, __u64 ts, __u16 kind, __u32 pid,
					__u32 tid)
{
	h->ts = ts;
	h->kind = kind;
	h->flags = 0;
	h->pid = pid;
	h->tid = tid;
	h->cpu = bpf_get_smp_processor_id();
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

/* How many references an open file has (dup, fork, fd passing share it); 0 or less once the
 * last one was put. */
static __always_inline long file_refs(struct file *f)
{
	if (bpf_core_field_exists(f->f_ref))
		return BPF_CORE_READ(f, f_ref.refcnt.counter) + 1; /* FILE_REF_ONEREF is 0 */
	struct file___old *o = (void *)f;
	return BPF_CORE_READ(o, f_count.counter);
}

/* True once the last reference to a socket's file is gone: close(2) of the last fd released
 * it (the socket is orphaned: sk_socket is NULL; before Linux 6.15 the final put runs after
 * the syscall, then the file's count is already 0 at sys_exit). */
static __always_inline bool sock_released(const struct sock *sk)
{
	struct socket *so = BPF_CORE_READ(sk, sk_socket);
	if (!so)
		return true;
	struct file *f = BPF_CORE_READ(so, file);
	return !f || file_refs(f) <= 0;
}

/* The user registers of the current task's syscall (its arguments, even from a tracepoint
 * deep in the kernel). */
static __always_inline struct pt_regs *cur_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
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
			remote->family = AF_INET;
			__builtin_memcpy(remote->daddr, &in->sin_addr.s_addr, 4);
			remote->dport = bpf_ntohs(in->sin_port);
		}
		return bpf_ntohs(in->sin_port);
	}
	if (sa.sin6_family == AF_INET6) {
		if (remote) {
			remote->family = AF_INET6;
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
	/* the tuple known since established/accepted: a socket being torn down has already
	 * given its local port back by the time close(2) returns */
	if (st && (st->flags & SK_TUPLE))
		e->t = st->t;
	else
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

static void close_fds(__u32 tgid, __u32 first, __u32 n, bool only_gone, bool at_exit);

SEC("tp_btf/sched_process_exec")
int BPF_PROG(rt_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 pid = BPF_CORE_READ(p, tgid);
	/* exec has just closed the close-on-exec fds, without a close(2) */
	if ((en_tcp || en_logs) && fd_owner(pid))
		close_fds(pid, 0, FORK_FDS, true, false);
	if (!en_proc)
		return 0;
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


struct fork_ctx {
	__u32 parent;
	__u32 child;
	__u32 copied;
};

static long copy_fd(__u64 i, struct fork_ctx *c)
{
	struct rt_fd_key pk = {.tgid = c->parent, .fd = (int)i};
	struct rt_fd_val *v = bpf_map_lookup_elem(&fds, &pk);
	if (v) {
		struct rt_fd_key ck = {.tgid = c->child, .fd = (int)i};
		struct rt_fd_val nv = *v;
		bpf_map_update_elem(&fds, &ck, &nv, BPF_NOEXIST);
		c->copied = 1;
	}
	return 0;
}

/* The bounded-loop fallback of bpf_loop(n, copy_fd, c) for kernels before 5.17. It walks all
 * FORK_FDS numbers (copy_fd finds nothing past the table's end): a loop of constant length is
 * the cheapest for the verifier, which walks it iteration by iteration. A subprogram of its own:
 * its caller's rest is verified once, not from each of the loop's exits; static: where bpf_loop
 * is used, the verifier drops it as dead code. */
static __noinline int copy_fds_bounded(struct fork_ctx *c)
{
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < FORK_FDS; i++)
		copy_fd(i, c);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(rt_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 cpid = BPF_CORE_READ(child, pid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (cpid != ctgid) {
		/* A thread of a process that has sockets: which thread started it, so that the
		 * analysis can follow a request's work handed to a new thread (the header holds the
		 * starting thread). Other processes' threads cost one map lookup. */
		if (en_proc && en_l7 && fd_owner(ctgid) && !proc_filtered(ctgid, ctgid)) {
			struct rt_proc *e = proc_reserve(RT_K_THREAD, ctgid, BPF_CORE_READ(parent, pid));
			if (!e)
				return 0;
			e->ppid = ctgid;
			e->child_pid = cpid;
			BPF_CORE_READ_STR_INTO(&e->comm, parent, comm);
			bpf_ringbuf_submit(e, wake_flags(&rb_ctl, wakeup_ctl_bytes));
		}
		return 0;
	}
	__u32 ppid = BPF_CORE_READ(parent, tgid);
	if ((en_tcp || en_logs) && fd_owner(ppid)) {
		/* a pre-fork server's child keeps using the sockets it inherits */
		struct fork_ctx c = {.parent = ppid, .child = cpid};
		unsigned int max = BPF_CORE_READ(child, files, fdt, max_fds);
		__u32 n = max < FORK_FDS ? max : FORK_FDS;
		if (has_bpf_loop)
			bpf_loop(n, copy_fd, &c, 0);
		else
			copy_fds_bounded(&c);
		if (c.copied)
			note_fd_owner(cpid);
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
	/* the last thread out: signal->live has just dropped to zero */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	__u32 pid = BPF_CORE_READ(p, tgid);
	/* its fds die with it */
	if ((en_tcp || en_logs) && fd_owner(pid)) {
		close_fds(pid, 0, FORK_FDS, false, false);
		bpf_map_delete_elem(&fd_owners, &pid);
	}
	if (!en_proc)
		return 0;
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
	/* Before Linux 6.8 the tracepoint's argument is the victim's pid (an int: its task's pid),
	 * not its task, and its event has no comm field: the record then has no comm (user space
	 * names the process from its table). */
	if (!bpf_core_field_exists(((struct trace_event_raw_mark_victim *)0)->__data_loc_comm)) {
		__u32 old_pid = (__u32)ctx[0];
		if (old_pid == self_tgid)
			return 0;
		struct rt_proc *e = proc_reserve(RT_K_OOM, old_pid, old_pid);
		if (!e)
			return 0;
		__builtin_memset(e->comm, 0, sizeof(e->comm));
		bpf_ringbuf_submit(e, wake_flags(&rb_ctl, wakeup_ctl_bytes));
		return 0;
	}
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
		/* connect(2) (or a fast-open sendto/sendmsg), in the connecting task: the fd is its
		 * first argument. The socket is followed from here on. */
		__u64 pt = bpf_get_current_pid_tgid();
		__u32 tgid = pt >> 32;
		struct pt_regs *regs = cur_regs();
		long nr = regs->orig_ax;
		if (nr != NR_connect && nr != NR_sendto && nr != NR_sendmsg)
			return 0;
		if (skip_task(tgid))
			return 0;
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		if (!port_ok(dport, dport))
			return 0;
		int fd = regs->di;
		struct sock_state ns = {};
		__u64 now = bpf_ktime_get_ns();
		ns.start_ns = now;
		ns.attempt_ns = now;
		ns.tgid = tgid;
		ns.tid = (__u32)pt;
		ns.fd = fd;
		ns.flags = SK_SYN_SEEN;
		bpf_map_update_elem(&socks, &key, &ns, BPF_ANY);
		struct rt_fd_key k = {.tgid = tgid, .fd = fd};
		struct rt_fd_val v = {.sk = key, .start_ns = now, .kind = RT_FD_TCP};
		bpf_map_update_elem(&fds, &k, &v, BPF_ANY);
		note_fd_owner(tgid);
		emit_tcp(sk, &ns, RT_TCP_CONNECT, RT_K_TCP, 0, newstate);
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
		/* listen(2), in process context: the fd is its first argument */
		__u64 id = bpf_get_current_pid_tgid();
		__u32 tid = (__u32)id, tgid = id >> 32;
		struct pt_regs *regs = cur_regs();
		if (regs->orig_ax != NR_listen || skip_task(tgid))
			return 0;
		struct sock_state ns = {};
		ns.start_ns = bpf_ktime_get_ns();
		ns.tgid = tgid;
		ns.tid = tid;
		ns.fd = regs->di;
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
		/* Reset (or timed out) while its owner still holds it: the write whose bytes the
		 * peer answered with this reset may not have returned yet (over loopback the reset
		 * is processed within that write), and the owner may still read or write before it
		 * closes the socket. Kept, so that those calls are recorded; the close is reported
		 * when the owner closes it (on_close). */
		if (!sock_released(sk)) {
			st->flags |= SK_CLOSE_PENDING;
			return 0;
		}
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
	/* Newer kernels also fire it for a retransmit that could not leave (its third argument,
	 * err, is not 0: the kernel counts those as TCPRetransFail, not RetransSegs): no segment
	 * went out. Older ones have no such argument (CO-RE: no err field in its event). */
	if (bpf_core_field_exists(((struct trace_event_raw_tcp_retransmit_skb *)0)->err) &&
	    (int)ctx[2] != 0)
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

/*
 * A listener sent a SYN-ACK again: the handshake's last ACK did not come, or came while the
 * accept queue was full (the listen backlog: the kernel drops it and retries). The sample is
 * the connection's, from the request socket's tuple; the listener's owner is its process.
 */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(rt_retransmit_synack, const struct sock *sk, const struct request_sock *req)
{
	if (!en_tcp || !sk || !req)
		return 0;
	struct rt_tcp *e;
	/* a request socket starts with the same sock_common as a full socket */
	const struct sock *rsk = (const struct sock *)req;
	struct rt_tuple t;
	read_tuple(rsk, &t);
	if (filter_port && !port_ok(t.sport, t.dport))
		return 0;
	__u64 key = (__u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&socks, &key);
	e = bpf_ringbuf_reserve(&rb_ctl, sizeof(*e), 0);
	if (!e) {
		count_drop(RT_K_TCP_SAMPLE);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->h.ts = bpf_ktime_get_ns();
	e->h.kind = RT_K_TCP_SAMPLE;
	e->h.cpu = bpf_get_smp_processor_id();
	if (st) {
		e->h.pid = st->tgid;
		e->h.tid = st->tid;
	} else {
		e->h.flags = RT_F_NO_OWNER;
	}
	e->fd = -1;
	e->t = t;
	e->sk = (__u64)rsk;
	e->step = RT_TCP_SYNACK_RETRANSMIT;
	e->state = BPF_CORE_READ(rsk, __sk_common.skc_state);
	bpf_ringbuf_submit(e, wake_flags(&rb_ctl, wakeup_ctl_bytes));
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

/* ---- syscalls ---- */

static __always_inline bool is_egress(__u32 id)
{
	return id == NR_write || id == NR_writev || id == NR_sendto || id == NR_sendmsg ||
	       id == NR_sendmmsg || id == NR_sendfile;
}

/* Follows a socket that user space seeded in `fds` (sk == 0) once its kernel socket is known. */
static __always_inline __u64 adopt_sock(struct rt_fd_key *k, struct rt_fd_val *v,
					const struct sock *sk)
{
	if (!sk || sk_proto(sk) != IPPROTO_TCP) {
		bpf_map_delete_elem(&fds, k);
		return 0;
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
	return key;
}

/*
 * The socket sampler, run by the daemon every --sock-interval over the TCP sockets of its
 * network namespace: each connection of a followed process (established or close-wait) gives
 * an RTT sample, idle or not (the syscall path samples only sockets in use), and a zero-window
 * sample when its peer advertises no room (the peer's application stopped reading: this end
 * cannot send).
 */
SEC("iter/tcp")
int rt_sock_sample(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc || !en_tcp)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	const struct sock *sk = (const struct sock *)tp;
	__u32 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state != TCP_ESTABLISHED && state != TCP_CLOSE_WAIT)
		return 0;
	__u64 key = (__u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&socks, &key);
	if (!st)
		return 0;
	emit_tcp(sk, st, RT_TCP_RTT, RT_K_TCP_SAMPLE, 0, state);
	if (BPF_CORE_READ(tp, snd_wnd) == 0)
		emit_tcp(sk, st, RT_TCP_ZERO_WINDOW, RT_K_TCP_SAMPLE, 0, state);
	return 0;
}

/*
 * Resolves the sockets user space seeded from /proc (run once by the daemon right after
 * seeding, through an iterator over every task's open files): a seeded socket closed before
 * it is ever read or written still gets its close reported.
 */
SEC("iter/task_file")
int rt_seed(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	if (!task || !file || !en_tcp)
		return 0;
	struct rt_fd_key k = {.tgid = task->tgid, .fd = ctx->fd};
	struct rt_fd_val *v = bpf_map_lookup_elem(&fds, &k);
	if (!v || v->kind != RT_FD_TCP || v->sk)
		return 0;
	struct socket *so = bpf_sock_from_file(file);
	if (!so)
		return 0;
	adopt_sock(&k, v, BPF_CORE_READ(so, sk));
	return 0;
}

/*
 * close(2) of a followed fd, at its exit: the fd is gone, the socket may be too.
 *
 * The number is free from the moment the kernel released it, before this program runs at the
 * syscall's exit (`at_exit`: close(2), close_range(2)): another thread of the process may
 * already have been given the same number by socket(2) or accept(2) and connected it, and its
 * entry is the one in `fds` now. Deleting
 * it would lose that connection's reads and writes (its close then reports 0 bytes received,
 * and its requests look unanswered). So an entry whose socket the fd names right now belongs
 * to the new owner and is left alone.
 */
static __noinline void on_close(__u32 tgid, int fd, bool at_exit)
{
	struct rt_fd_key k = {.tgid = tgid, .fd = fd};
	struct rt_fd_val *v = bpf_map_lookup_elem(&fds, &k);
	if (!v)
		return;
	__u64 key = v->sk;
	if (at_exit && v->kind == RT_FD_TCP && key && (__u64)fd_sock(fd) == key)
		return;
	/* Only the last reference closes the socket: a pre-fork server's parent closing its
	 * copy after fork, or one of two dup'ed fds, leaves the connection open. A seeded socket
	 * the iterator could not resolve (key 0) is forgotten silently. */
	if (v->kind == RT_FD_TCP && en_tcp && key) {
		struct sock_state *st = bpf_map_lookup_elem(&socks, &key);
		/* A socket the kernel closed already (SK_CLOSE_PENDING) is reported closed by its
		 * process's exit too: no state change comes after its file is let go. */
		if (st && !(st->flags & (SK_CLOSED | SK_LISTENER)) &&
		    (sock_released((const struct sock *)key) ||
		     (!at_exit && (st->flags & SK_CLOSE_PENDING)))) {
			st->flags |= SK_CLOSED;
			st->attempt_ns = 0;
			emit_tcp((const struct sock *)key, st, RT_TCP_CLOSED, RT_K_TCP, 0,
				 BPF_CORE_READ((struct sock *)key, __sk_common.skc_state));
			/* already in TCP_CLOSE: no state change will come to let go of it */
			if (st->flags & SK_CLOSE_PENDING)
				bpf_map_delete_elem(&socks, &key);
		}
	}
	bpf_map_delete_elem(&fds, &k);
}

/*
 * Fds that stop naming what `fds` says without a close(2) of their own: exec closes the
 * close-on-exec ones, close_range(2) closes a range, dup2(2)/dup3(2) close the target first,
 * exit closes them all. Left in the map, the next file or socket on that number would be
 * taken for the old one. Fds at or above FORK_FDS are left to the LRU.
 */
struct fd_span {
	__u32 tgid;
	__u32 first;
	bool only_gone;
	bool at_exit;
};

static long close_span_fd(__u64 i, struct fd_span *r)
{
	int fd = r->first + i;
	if (r->only_gone) {
		struct rt_fd_key k = {.tgid = r->tgid, .fd = fd};
		if (!bpf_map_lookup_elem(&fds, &k) || fd_file(fd))
			return 0;
	}
	on_close(r->tgid, fd, r->at_exit);
	return 0;
}

/* Treats fds first .. first + n - 1 of `tgid` as closed; `only_gone`: those the current task
 * (the exec'ing one) no longer has; `at_exit`: at the exit of the syscall that closed them
 * (see on_close). */
static __noinline int close_fds_bounded(__u32 tgid, __u32 first, __u32 n, __u32 flags);

static void close_fds(__u32 tgid, __u32 first, __u32 n, bool only_gone, bool at_exit)
{
	struct fd_span r = {.tgid = tgid, .first = first, .only_gone = only_gone, .at_exit = at_exit};
	if (has_bpf_loop)
		bpf_loop(n, close_span_fd, &r, 0);
	else
		close_fds_bounded(tgid, first, n, (only_gone ? 1 : 0) | (at_exit ? 2 : 0));
}

/* The bounded-loop fallback of close_fds' bpf_loop (see copy_fds_bounded); `flags`: 1 only_gone,
 * 2 at_exit. The span is rebuilt from plain values: measured on 6.1's verifier, a pointer to
 * the caller's span, or two bool arguments, cost rt_exec 440-500 k instructions, these flags
 * 240 k (the limit is 1 M). */
static __noinline int close_fds_bounded(__u32 tgid, __u32 first, __u32 n, __u32 flags)
{
	struct fd_span r = {.tgid = tgid, .first = first, .only_gone = flags & 1, .at_exit = flags & 2};
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < FORK_FDS && i < n; i++)
		close_span_fd(i, &r);
	return 0;
}

/* close_range(first, last, flags) succeeded. */
static __noinline void on_close_range(struct pt_regs *regs)
{
	__u32 first = regs->di, last = regs->si, flags = regs->dx;
	if (flags & CLOSE_RANGE_CLOEXEC)
		return; /* only marked: exec will close them */
	if (first >= FORK_FDS || last < first)
		return;
	__u32 n = last - first + 1;
	if (n > FORK_FDS - first)
		n = FORK_FDS - first;
	close_fds(bpf_get_current_pid_tgid() >> 32, first, n, false, true);
}

/* `to` is now a copy of `from` (dup, dup2, dup3, fcntl F_DUPFD): a copy of a followed fd is
 * followed; for dup2/dup3 whatever `to` named before was closed first. */
static __noinline void on_dup(int from, int to, bool closes_target)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (from == to)
		return;
	if (closes_target)
		on_close(tgid, to, false);
	struct rt_fd_key fk = {.tgid = tgid, .fd = from};
	struct rt_fd_key tk = {.tgid = tgid, .fd = to};
	struct rt_fd_val *v = bpf_map_lookup_elem(&fds, &fk);
	if (v) {
		struct rt_fd_val nv = *v;
		bpf_map_update_elem(&fds, &tk, &nv, BPF_ANY);
	} else {
		bpf_map_delete_elem(&fds, &tk);
	}
}

static __always_inline bool is_udp_call(__u32 id)
{
	return id == NR_sendto || id == NR_sendmsg || id == NR_sendmmsg || id == NR_recvfrom ||
	       id == NR_recvmsg || id == NR_recvmmsg;
}

/* Source and available length of the `i`th message's first buffer, for each call shape. Only
 * the fields needed are read from user memory (an iovec, a msghdr's iov pointer, an mmsghdr's
 * length), never whole structs: this runs under on_data and emit_data, whose combined stack
 * must stay within the classic 512-byte limit. */
static __always_inline int msg_buf(struct call *c, long ret, int i, void **src, __u64 *avail)
{
	struct iovec iov = {};
	void *iov_ptr = NULL;
	__u64 limit = ret;

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
		if (i)
			return -1;
		iov_ptr = (void *)c->buf;
		break;
	case NR_sendmsg:
	case NR_recvmsg:
		if (i || bpf_probe_read_user(&iov_ptr, sizeof(iov_ptr),
					     &((struct user_msghdr *)c->buf)->msg_iov))
			return -1;
		break;
	case NR_sendmmsg:
	case NR_recvmmsg: {
		struct mmsghdr *mm = (struct mmsghdr *)c->buf + i;
		unsigned int mlen = 0;
		if (i >= ret)
			return -1;
		if (bpf_probe_read_user(&iov_ptr, sizeof(iov_ptr), &mm->msg_hdr.msg_iov) ||
		    bpf_probe_read_user(&mlen, sizeof(mlen), &mm->msg_len))
			return -1;
		limit = mlen;
		break;
	}
	default: /* sendfile: no user buffer */
		if (i)
			return -1;
		*src = NULL;
		*avail = 0;
		return 0;
	}
	if (!iov_ptr || bpf_probe_read_user(&iov, sizeof(iov), iov_ptr))
		return -1;
	*src = iov.iov_base;
	*avail = iov.iov_len < limit ? iov.iov_len : limit;
	return 0;
}

/*
 * Reserves a payload record in this CPU's ring `rb` for up to `n` payload bytes (n a
 * constant: the verifier needs one per reserve), and copies `len` (<= n) bytes from `src` right into it:
 * no staging buffer, no second copy. Records come in a few size classes so that short
 * messages do not take the room of the longest. A failed reserve leaves at once: were `d`
 * tested again after the classes, Linux 6.1's verifier (which does not take a record it has
 * seen non-NULL for non-NULL at a second test) would follow the NULL branch with the record
 * still held and refuse rt_sys_exit ("Unreleased reference").
 */
#define DATA_CLASS(n)                                                                       \
	if (len <= (n)) {                                                                   \
		d = bpf_ringbuf_reserve(rb, sizeof(struct rt_data) + (n), 0);                \
		if (!d)                                                                     \
			goto drop;                                                          \
		if (len && bpf_probe_read_user((void *)(d + 1), len, src))                  \
			len = 0;                                                            \
	} else

/* Emits one payload record (message `i` of the call, kind c->kind); returns 0 on success. A
 * subprogram of its own: one copy of this code and of its stack frame. */
static __noinline int emit_data(struct call *c, long ret, int i, struct sock_state *st)
{
	__u16 kind = c->kind;
	void *src = NULL;
	__u64 avail = 0;
	struct rt_tuple t;

	if (msg_buf(c, ret, i, &src, &avail))
		return -1;
	if (st && (st->flags & SK_TUPLE))
		t = st->t;
	else if (c->sk)
		read_tuple((const struct sock *)c->sk, &t);
	else
		__builtin_memset(&t, 0, sizeof(t));
	if (c->name && t.dport == 0) {
		/* unconnected UDP: the peer is in the call's sockaddr */
		__u16 peer = user_sockaddr((void *)c->name, &t);
		if (kind == RT_K_UDP && peer != 53 && t.sport != 53)
			return -1;
	}
	__u64 len = avail < payload_bytes ? avail : payload_bytes;
	if (!src)
		len = 0;
	void *rb = data_ring();
	if (!rb) {
		count_drop(kind);
		return -1;
	}
	struct rt_data *d = NULL;
	DATA_CLASS(128)
	DATA_CLASS(512)
	DATA_CLASS(1024)
	DATA_CLASS(RT_PAYLOAD_MAX)
	{
		return -1;
	}
	fill_hdr_ts(&d->h, c->ts ? c->ts : bpf_ktime_get_ns(), kind, c->tgid, c->tid);
	d->t = t;
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
	d->payload_len = len;
	bpf_ringbuf_submit(d, data_wake_flags(rb));
	return 0;
drop:
	count_drop(kind);
	return -1;
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
	void *rb = data_ring();
	if (!rb || bpf_ringbuf_output(rb, b, sizeof(struct rt_data) + len,
				      wake_flags(rb, wakeup_data_bytes)))
		count_drop(RT_K_LOG);
}

#define NR_BIT(n) (1ULL << (n))
/* The read/write family (syscall numbers below 64; recvmmsg and sendmmsg are above). */
#define DATA_BITS                                                                          \
	(NR_BIT(NR_read) | NR_BIT(NR_write) | NR_BIT(NR_readv) | NR_BIT(NR_writev) |       \
	 NR_BIT(NR_sendto) | NR_BIT(NR_recvfrom) | NR_BIT(NR_sendmsg) | NR_BIT(NR_recvmsg) | \
	 NR_BIT(NR_sendfile))

/* Emits the RTT sample of a followed socket at most every rtt_interval_ns. */
static __always_inline void sample_rtt(const struct sock *sk, struct sock_state *st, __u64 now)
{
	if (now - st->last_rtt_ns < rtt_interval_ns)
		return;
	st->last_rtt_ns = now;
	emit_tcp(sk, st, RT_TCP_RTT, RT_K_TCP_SAMPLE, 0, BPF_CORE_READ(sk, __sk_common.skc_state));
}

/* A read/write family syscall that transferred `ret` > 0 bytes. */
static __noinline void on_data(struct pt_regs *regs, long id, long ret)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32, tid = (__u32)pt;
	int fd = regs->di;
	struct call c = {};
	c.id = id;
	c.fd = fd;
	c.buf = regs->si;
	c.tgid = tgid;
	c.tid = tid;

	struct rt_fd_key k = {.tgid = tgid, .fd = fd};
	struct rt_fd_val *v = bpf_map_lookup_elem(&fds, &k);
	if (v) {
		if (v->kind == RT_FD_TCP) {
			if (!en_tcp)
				return;
			__u64 key = v->sk;
			if (!key)
				key = adopt_sock(&k, v, fd_sock(fd));
			if (!key)
				return;
			struct sock_state *st = bpf_map_lookup_elem(&socks, &key);
			if (!st)
				return;
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
			if (!en_l7) {
				/* no messages to cut: the clock is read for an RTT sample on the first
				 * call, then once every 64 calls */
				if ((st->folded_calls++ & 63) == 0)
					sample_rtt((const struct sock *)key, st, bpf_ktime_get_ns());
				return;
			}
			/* RTT samples and L7 records at message starts only: folded calls (the
			 * rest of a message) cost no clock read */
			__u32 dir = 1 + (eg ? RT_DIR_EGRESS : RT_DIR_INGRESS);
			if (st->last_dir == dir) {
				st->folded_calls += 1;
				st->folded_bytes += bytes;
				/* a one-way stream still gets its RTT samples */
				if ((st->folded_calls & 63) == 0)
					sample_rtt((const struct sock *)key, st, bpf_ktime_get_ns());
				return;
			}
			c.ts = bpf_ktime_get_ns();
			sample_rtt((const struct sock *)key, st, c.ts);
			c.sk = key;
			c.start_ns = v->start_ns;
			c.kind = RT_K_L7;
			c.tgid = st->tgid;
			emit_data(&c, ret, 0, st);
			st->last_dir = dir;
			st->folded_calls = 0;
			st->folded_bytes = 0;
		} else if (v->kind == RT_FD_LOG && en_logs && (id == NR_write || id == NR_writev)) {
			c.kind = RT_K_LOG;
			emit_data(&c, ret, 0, NULL);
		}
		return;
	}
	if (en_logs && (fd == 1 || fd == 2) && (id == NR_write || id == NR_writev)) {
		if (!skip_task(tgid)) {
			c.kind = RT_K_LOG;
			emit_data(&c, ret, 0, NULL);
		}
		return;
	}
	if (en_dns && is_udp_call(id)) {
		if (skip_task(tgid))
			return;
		struct sock *sk = fd_sock(fd);
		if (!sk || sk_proto(sk) != IPPROTO_UDP)
			return;
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
				return; /* connected elsewhere, or no peer to look at */
			if (is_egress(id) && user_sockaddr((void *)c.name, NULL) != 53)
				return;
		}
		c.sk = (__u64)sk;
		c.kind = RT_K_UDP;
		emit_data(&c, ret, 0, NULL);
		if (id == NR_sendmmsg || id == NR_recvmmsg)
			emit_data(&c, ret, 1, NULL);
	}
}

/* accept(2)/accept4(2) returned a new fd: follow its socket. */
static __noinline void on_accept(long ret)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32, tid = (__u32)pt;
	if (skip_task(tgid))
		return;
	int fd = ret;
	struct sock *sk = fd_sock(fd);
	if (!sk || sk_proto(sk) != IPPROTO_TCP)
		return;
	struct rt_tuple t;
	read_tuple(sk, &t);
	if (!port_ok(t.sport, t.dport))
		return;
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
	struct rt_fd_val v = {.sk = key, .start_ns = now, .kind = RT_FD_TCP, .flags = RT_F_INBOUND};
	bpf_map_update_elem(&fds, &k, &v, BPF_ANY);
	note_fd_owner(tgid);
	emit_tcp(sk, &ns, RT_TCP_ACCEPTED, RT_K_TCP, 0, TCP_ESTABLISHED);
}

/* connect(2) failed: when no SYN ever left (no route, bad address...), the socket state
 * never changed and this is the only trace of the attempt. */
static __noinline void on_connect_error(struct pt_regs *regs, long ret)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32;
	if (ret == -EINPROGRESS || ret == -EINTR || ret == -EALREADY || ret == -EISCONN)
		return;
	int fd = regs->di;
	struct rt_fd_key k = {.tgid = tgid, .fd = fd};
	if (bpf_map_lookup_elem(&fds, &k))
		return; /* a SYN left: the state change reports the failure */
	if (skip_task(tgid))
		return;
	struct rt_tuple rt = {};
	__u16 port = user_sockaddr((void *)regs->si, &rt);
	if (!port || !port_ok(port, port))
		return;
	struct sock *sk = fd_sock(fd);
	if (!sk || sk_proto(sk) != IPPROTO_TCP)
		return;
	struct sock_state ns = {};
	ns.start_ns = bpf_ktime_get_ns();
	ns.tgid = tgid;
	ns.tid = (__u32)pt;
	ns.fd = fd;
	/* the socket may not hold the peer yet: report the address asked for */
	ns.t = rt;
	ns.flags = SK_TUPLE;
	emit_tcp(sk, &ns, RT_TCP_FAILED, RT_K_TCP, -ret, 0);
}

/* open(2)/openat(2) of a file under /var/log/ returned `fd`. */
static __noinline void on_open(struct pt_regs *regs, long id, long fd)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32, tid = (__u32)pt;
	const char *path = (const char *)(id == NR_open ? regs->di : regs->si);
	char p[9] = {};
	if (bpf_probe_read_user(p, sizeof(p), path))
		return;
	if (p[0] != '/' || p[1] != 'v' || p[2] != 'a' || p[3] != 'r' || p[4] != '/' || p[5] != 'l' ||
	    p[6] != 'o' || p[7] != 'g' || p[8] != '/')
		return;
	if (skip_task(tgid))
		return;
	struct rt_fd_key k = {.tgid = tgid, .fd = fd};
	struct rt_fd_val v = {.kind = RT_FD_LOG};
	bpf_map_update_elem(&fds, &k, &v, BPF_ANY);
	note_fd_owner(tgid);
	struct call c = {.id = id, .buf = (__u64)path};
	emit_log_open(&c, fd, tgid, tid);
}

/*
 * The one syscall program. It runs at the exit of every syscall of every task, so its first
 * instructions reject what it does not follow on the syscall number alone; the arguments are
 * still in the saved user registers (x86_64: di, si, dx, r10, r8, r9; orig_ax is the number).
 */
SEC("tp_btf/sys_exit")
int BPF_PROG(rt_sys_exit, struct pt_regs *regs, long ret)
{
	long id = regs->orig_ax;

	if ((unsigned long)id < 64) {
		__u64 bit = NR_BIT(id);
		if (bit & DATA_BITS) {
			if (ret > 0)
				on_data(regs, id, ret);
			return 0;
		}
		if (id == NR_close) {
			/* EBADF: nothing was closed; any other result released the fd */
			if ((en_tcp || en_logs) && ret != -EBADF)
				on_close(bpf_get_current_pid_tgid() >> 32, (int)regs->di, true);
			return 0;
		}
		if (id == NR_accept) {
			if (en_tcp && ret >= 0)
				on_accept(ret);
			return 0;
		}
		if (id == NR_connect) {
			if (en_tcp && ret < 0)
				on_connect_error(regs, ret);
			return 0;
		}
		if (id == NR_open) {
			if (en_logs && ret >= 0)
				on_open(regs, id, ret);
			return 0;
		}
		if (id == NR_dup || id == NR_dup2) {
			if ((en_tcp || en_logs) && ret >= 0)
				on_dup(regs->di, ret, id == NR_dup2);
			return 0;
		}
		return 0;
	}
	switch (id) {
	case NR_dup3:
		if ((en_tcp || en_logs) && ret >= 0)
			on_dup(regs->di, ret, true);
		return 0;
	case NR_fcntl:
		if ((en_tcp || en_logs) && ret >= 0 &&
		    (regs->si == F_DUPFD || regs->si == F_DUPFD_CLOEXEC))
			on_dup(regs->di, ret, false);
		return 0;
	case NR_close_range:
		if ((en_tcp || en_logs) && ret == 0)
			on_close_range(regs);
		return 0;
	case NR_recvmmsg:
	case NR_sendmmsg:
		if (ret > 0)
			on_data(regs, id, ret);
		return 0;
	case NR_accept4:
		if (en_tcp && ret >= 0)
			on_accept(ret);
		return 0;
	case NR_openat:
		if (en_logs && ret >= 0)
			on_open(regs, id, ret);
		return 0;
	default:
		return 0;
	}
}
