// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * retrace's profiling programs, a BPF object of their own, loaded only when a profile stream
 * is on (capture/src/profile/):
 *
 *   cpu:    a perf_event program on every CPU (software cpu-clock, `--cpu-hz`): kernel stack
 *           (bpf_get_stack) and the user registers plus a copy of the top of the user stack,
 *           unwound in user space with the binaries' .eh_frame.
 *   heap:   uprobes on the allocator of chosen processes (malloc, calloc, realloc,
 *           posix_memalign, aligned_alloc/memalign, free), sampled by bytes in the kernel: a
 *           per-CPU countdown of bytes drawn from an exponential distribution of mean
 *           `heap_period` (a Poisson process over allocated bytes, as tcmalloc and jemalloc
 *           do); an unsampled call returns after one map lookup. A sampled call is recorded
 *           at the allocator's return, with the pointer, the size and the caller's stack; its
 *           pointer goes to `heap_live` so that its free is recorded too (unsampled frees cost
 *           one hash lookup).
 *   faults: user page faults on pages not present (memory touched for the first time: RSS
 *           growing), one in `fault_every` per CPU, with the user stack: growth attributed to
 *           code without allocator probes.
 *   offcpu: sched_switch notes when a thread leaves the CPU voluntarily and adds the time
 *           until it runs again; at the exit of the syscall it blocked in, a thread whose
 *           off-CPU time reached `offcpu_min_ns` gets one record with its user stack (the
 *           syscall's registers are the user's). Aggregated in the kernel per syscall.
 *
 * Every failed reserve or full map is counted in `prof_drops` (per CPU, by kind).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "profile.h"
#include "exp_table.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by user space before load. */
const volatile __u64 heap_period = 524288; /* mean bytes between samples; 1: every call */
const volatile __u64 offcpu_min_ns = 1000000;
const volatile __u32 self_tgid = 0;         /* the daemon: never sampled */
const volatile __u32 filter_tgid = 0;       /* `--pid`: only this process (0: all) */
const volatile __u32 ustack_chunks = RT_USTACK_MAX / RT_USTACK_CHUNK;
const volatile bool has_task_pt_regs = false; /* bpf_task_pt_regs (5.15+) */
const volatile __u32 fault_every = 64;      /* page faults: one sampled in this many */
const volatile bool faults_of_mem_tgids = false; /* page faults only of the `mem_tgids` */

/* So that the enums reach the generated Rust types. */
enum rt_prof_kind _rt_prof_kind = RT_P_CPU;
enum rt_prof_flags _rt_prof_flags = RT_PF_USER_REGS;
enum rt_alloc_fn _rt_alloc_fn = RT_A_MALLOC;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by user space */
} rb_prof SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rt_prof);
} prof_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RT_P__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} prof_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} heap_countdown SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct rt_heap_pending);
} heap_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fault_countdown SEC(".maps");

/* The processes whose allocator is probed (`--mem-pid`, `--mem-comm`): page faults are
 * sampled only there when any are chosen. Written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} mem_tgids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct rt_heap_key);
	__type(value, __u64); /* size */
} heap_live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); /* tid */
	__type(value, struct rt_offcpu);
} offcpu SEC(".maps");

static __always_inline void count_drop(__u32 kind)
{
	__u64 *n = bpf_map_lookup_elem(&prof_drops, &kind);
	if (n)
		*n += 1;
}

static __always_inline struct rt_prof *scratch(__u32 kind, __u64 id)
{
	__u32 zero = 0;
	struct rt_prof *r = bpf_map_lookup_elem(&prof_scratch, &zero);
	if (!r)
		return 0;
	r->ts = bpf_ktime_get_ns();
	r->kind = kind;
	r->flags = 0;
	r->pid = id >> 32;
	r->tid = (__u32)id;
	r->cpu = bpf_get_smp_processor_id();
	r->syscall = -1;
	r->ip = 0;
	r->sp = 0;
	r->bp = 0;
	r->size = 0;
	r->addr = 0;
	r->kstack_len = 0;
	r->ustack_len = 0;
	return r;
}

/* Copies the user stack from r->sp upwards, a chunk at a time until a chunk faults (the top of
 * the stack mapping) or the copy is full. */
static __noinline int copy_ustack(struct rt_prof *r)
{
	__u32 copied = 0;
	if (!r)
		return 0;
	for (__u32 i = 0; i < RT_USTACK_MAX / RT_USTACK_CHUNK; i++) {
		if (i >= ustack_chunks)
			break;
		__u32 off = i * RT_USTACK_CHUNK;
		if (off > RT_USTACK_MAX - RT_USTACK_CHUNK)
			break;
		if (bpf_probe_read_user(&r->ustack[off], RT_USTACK_CHUNK, (void *)(r->sp + off)))
			break;
		copied = off + RT_USTACK_CHUNK;
	}
	r->ustack_len = copied;
	return 0;
}

static __always_inline void submit(struct rt_prof *r)
{
	__u64 len = r->ustack_len;
	if (len > RT_USTACK_MAX)
		len = RT_USTACK_MAX;
	if (bpf_ringbuf_output(&rb_prof, r, RT_PROF_HEAD + len, 0))
		count_drop(r->kind);
}

static __always_inline void user_regs_from(struct rt_prof *r, struct pt_regs *regs)
{
	r->ip = BPF_CORE_READ(regs, ip);
	r->sp = BPF_CORE_READ(regs, sp);
	r->bp = BPF_CORE_READ(regs, bp);
	r->flags |= RT_PF_USER_REGS;
}

/* ---------------------------------------------------------------------------------------- */
/* cpu */

SEC("perf_event")
int rt_cpu(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)id == 0 || (id >> 32) == self_tgid)
		return 0; /* idle, or ourselves */
	if (filter_tgid && (id >> 32) != filter_tgid)
		return 0;
	struct rt_prof *r = scratch(RT_P_CPU, id);
	if (!r)
		return 0;
	r->kstack_len = bpf_get_stack(ctx, r->kstack, sizeof(r->kstack), 0);
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->mm) {
		/* the perf context is read in 8-byte words only: cs through its word */
		__u64 cs = *(__u64 *)((void *)&ctx->regs + __builtin_offsetof(struct pt_regs, cs));
		if (cs & 3) {
			r->ip = ctx->regs.ip;
			r->sp = ctx->regs.sp;
			r->bp = ctx->regs.bp;
			r->flags |= RT_PF_USER_REGS;
		} else {
			r->flags |= RT_PF_KERNEL_MODE;
			if (has_task_pt_regs)
				user_regs_from(r, (struct pt_regs *)bpf_task_pt_regs(task));
		}
		if (r->flags & RT_PF_USER_REGS)
			copy_ustack(r);
	} else {
		r->flags |= RT_PF_KERNEL_MODE;
	}
	submit(r);
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* heap */

/* Returns 1 when this call is sampled (its return must be recorded), else 0. */
static __always_inline int alloc_enter(__u64 size, __u64 memptr)
{
	if (heap_period > 1) {
		__u32 zero = 0;
		__s64 *left = bpf_map_lookup_elem(&heap_countdown, &zero);
		if (!left)
			return 0;
		*left -= (__s64)size;
		if (*left > 0)
			return 0;
		__u32 i = bpf_get_prandom_u32() & 1023;
		*left = (__s64)((heap_period * exp_table[i]) >> 10);
	}
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct rt_heap_pending p = { .size = size, .memptr = memptr };
	bpf_map_update_elem(&heap_pending, &tid, &p, BPF_ANY);
	return 1;
}

static __always_inline int on_free(__u64 addr)
{
	if (!addr)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct rt_heap_key k = { .tgid = id >> 32, .addr = addr };
	if (!bpf_map_lookup_elem(&heap_live, &k))
		return 0;
	bpf_map_delete_elem(&heap_live, &k);
	struct rt_prof *r = scratch(RT_P_FREE, id);
	if (!r)
		return 0;
	r->addr = addr;
	submit(r);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(rt_malloc, __u64 size)
{
	alloc_enter(size, 0);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(rt_calloc, __u64 n, __u64 size)
{
	alloc_enter(n * size, 0);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(rt_realloc, __u64 ptr, __u64 size)
{
	on_free(ptr);
	alloc_enter(size, 0);
	return 0;
}

/* aligned_alloc(align, size), memalign(align, size) */
SEC("uprobe")
int BPF_UPROBE(rt_memalign, __u64 align, __u64 size)
{
	alloc_enter(size, 0);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(rt_posix_memalign, __u64 memptr, __u64 align, __u64 size)
{
	alloc_enter(size, memptr);
	return 0;
}

static __always_inline int alloc_return(struct pt_regs *ctx, __u64 ret);

/* The return of every allocator entry point above. */
SEC("uretprobe")
int BPF_URETPROBE(rt_alloc_ret, __u64 ret)
{
	return alloc_return(ctx, ret);
}

/* Kernels with uprobe sessions (6.13+): one program on entry and return of every allocator
 * entry point; an unsampled call returns 1 at entry, which cancels its return probe, so it
 * pays no return trap. The attach cookie says which function it is. */
extern bool bpf_session_is_return(void) __ksym __weak;

SEC("uprobe.session")
int rt_alloc_session(struct pt_regs *ctx)
{
	if (bpf_session_is_return())
		return alloc_return(ctx, PT_REGS_RC(ctx));
	switch (bpf_get_attach_cookie(ctx)) {
	case RT_A_MALLOC:
		return !alloc_enter(PT_REGS_PARM1(ctx), 0);
	case RT_A_CALLOC:
		return !alloc_enter(PT_REGS_PARM1(ctx) * PT_REGS_PARM2(ctx), 0);
	case RT_A_REALLOC:
		on_free(PT_REGS_PARM1(ctx));
		return !alloc_enter(PT_REGS_PARM2(ctx), 0);
	case RT_A_MEMALIGN:
		return !alloc_enter(PT_REGS_PARM2(ctx), 0);
	case RT_A_POSIX_MEMALIGN:
		return !alloc_enter(PT_REGS_PARM3(ctx), PT_REGS_PARM1(ctx));
	default:
		return 1;
	}
}

static __always_inline int alloc_return(struct pt_regs *ctx, __u64 ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct rt_heap_pending *p = bpf_map_lookup_elem(&heap_pending, &tid);
	if (!p)
		return 0;
	__u64 size = p->size;
	__u64 memptr = p->memptr;
	bpf_map_delete_elem(&heap_pending, &tid);
	__u64 addr = ret;
	if (memptr) {
		/* posix_memalign returns 0 on success and stores the pointer */
		addr = 0;
		if (ret == 0)
			bpf_probe_read_user(&addr, sizeof(addr), (void *)memptr);
	}
	if (!addr)
		return 0;
	struct rt_heap_key k = { .tgid = id >> 32, .addr = addr };
	if (bpf_map_update_elem(&heap_live, &k, &size, BPF_ANY)) {
		count_drop(RT_P_FREE); /* its free would be missed */
	}
	struct rt_prof *r = scratch(RT_P_ALLOC, id);
	if (!r)
		return 0;
	r->size = size;
	r->addr = addr;
	user_regs_from(r, ctx);
	r->flags |= RT_PF_RETURN_IP;
	copy_ustack(r);
	submit(r);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(rt_free, __u64 ptr)
{
	return on_free(ptr);
}

/* ---------------------------------------------------------------------------------------- */
/* faults */

SEC("tp_btf/page_fault_user")
int BPF_PROG(rt_fault, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	if (error_code & 1)
		return 0; /* protection fault: the page was there */
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (faults_of_mem_tgids && !bpf_map_lookup_elem(&mem_tgids, &tgid))
		return 0;
	__u32 zero = 0;
	__u32 *left = bpf_map_lookup_elem(&fault_countdown, &zero);
	if (!left)
		return 0;
	if (*left > 1) {
		*left -= 1;
		return 0;
	}
	*left = fault_every;
	if ((id >> 32) == self_tgid || (filter_tgid && (id >> 32) != filter_tgid))
		return 0;
	struct rt_prof *r = scratch(RT_P_FAULT, id);
	if (!r)
		return 0;
	r->addr = address;
	r->size = fault_every;
	user_regs_from(r, regs);
	copy_ustack(r);
	submit(r);
	return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* offcpu */

/* Before 5.14 the task state field was `state`. */
struct task_struct___pre514 {
	volatile long state;
} __attribute__((preserve_access_index));

/* Whether a task leaving the CPU is blocked (not runnable): only then is its time off CPU. */
static __always_inline bool blocked(struct task_struct *t)
{
	long state;
	if (bpf_core_field_exists(t->__state))
		state = BPF_CORE_READ(t, __state);
	else
		state = BPF_CORE_READ((struct task_struct___pre514 *)t, state);
	return state != 0; /* TASK_RUNNING */
}

SEC("tp_btf/sched_switch")
int BPF_PROG(rt_offcpu_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 tid = prev->pid;
	if (!preempt && tid != 0 && prev->tgid != self_tgid && prev->mm &&
	    (!filter_tgid || prev->tgid == filter_tgid) && blocked(prev)) {
		struct rt_offcpu *s = bpf_map_lookup_elem(&offcpu, &tid);
		if (s) {
			s->off_ts = now;
		} else {
			struct rt_offcpu fresh = { .off_ts = now, .blocked_ns = 0 };
			if (bpf_map_update_elem(&offcpu, &tid, &fresh, BPF_ANY))
				count_drop(RT_P_OFFCPU);
		}
	}
	tid = next->pid;
	struct rt_offcpu *n = bpf_map_lookup_elem(&offcpu, &tid);
	if (n && n->off_ts) {
		n->blocked_ns += now - n->off_ts;
		n->off_ts = 0;
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(rt_offcpu_exit, struct pt_regs *regs, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct rt_offcpu *s = bpf_map_lookup_elem(&offcpu, &tid);
	if (!s || s->blocked_ns == 0)
		return 0;
	__u64 blocked = s->blocked_ns;
	s->blocked_ns = 0;
	if (blocked < offcpu_min_ns)
		return 0;
	struct rt_prof *r = scratch(RT_P_OFFCPU, id);
	if (!r)
		return 0;
	r->size = blocked;
	r->syscall = (__s32)BPF_CORE_READ(regs, orig_ax);
	user_regs_from(r, regs);
	copy_ustack(r);
	submit(r);
	return 0;
}
