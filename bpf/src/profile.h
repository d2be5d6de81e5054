/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Records of the profiling programs (profile.bpf.c): CPU samples, sampled heap allocations and
 * their frees, off-CPU intervals. Rust gets these types from the generated skeleton
 * (`retrace_bpf::profile_types`); capture/src/profile/ is the one place that reads them.
 *
 * A record is `struct rt_prof` up to `ustack`, then `ustack_len` bytes: a copy of the top of
 * the user stack from `sp` upwards, which user space unwinds with the binaries' .eh_frame
 * (frame pointers are missing from Debian's libraries) and then discards: stack bytes never
 * reach disk.
 */
#ifndef RETRACE_PROFILE_H
#define RETRACE_PROFILE_H

/* Kernel stack depth kept (bpf_get_stack). */
#define RT_KSTACK_MAX 64
/* Largest user stack copy, bytes; copied in RT_USTACK_CHUNK pieces until one faults. */
#define RT_USTACK_MAX 16384
#define RT_USTACK_CHUNK 1024

enum rt_prof_kind {
	RT_P_CPU = 1,    /* perf event sample */
	RT_P_ALLOC = 2,  /* sampled allocation, at the allocator's return */
	RT_P_FREE = 3,   /* free of a sampled allocation */
	RT_P_OFFCPU = 4, /* off-CPU time of one syscall, at its exit */
	RT_P_FAULT = 5,  /* sampled user page fault on a page not present */
	RT_P__COUNT = 8,
};

/* Which allocator entry point a session uprobe is on: its attach cookie. */
enum rt_alloc_fn {
	RT_A_MALLOC = 1,
	RT_A_CALLOC = 2,
	RT_A_REALLOC = 3,
	RT_A_MEMALIGN = 4, /* aligned_alloc, memalign */
	RT_A_POSIX_MEMALIGN = 5,
};

/* Flags of struct rt_prof.flags. */
enum rt_prof_flags {
	RT_PF_USER_REGS = 1,   /* ip/sp/bp are the user registers: ustack is valid */
	RT_PF_RETURN_IP = 2,   /* ip is a return address (allocator return): look up ip - 1 */
	RT_PF_KERNEL_MODE = 4, /* the sample interrupted kernel code */
};

struct rt_prof {
	__u64 ts;
	__u32 kind;  /* enum rt_prof_kind */
	__u32 flags; /* enum rt_prof_flags */
	__u32 pid;
	__u32 tid;
	__u32 cpu;
	__s32 syscall;   /* OFFCPU: syscall number */
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u64 size;      /* ALLOC: bytes requested; OFFCPU: ns off CPU; FAULT: faults it stands for */
	__u64 addr;      /* ALLOC, FREE: the pointer; FAULT: the address */
	__s32 kstack_len; /* bytes of kstack filled (negative: error) */
	__u32 ustack_len; /* bytes of ustack that follow */
	__u64 kstack[RT_KSTACK_MAX];
	__u8 ustack[RT_USTACK_MAX];
};

/* Key of map `heap_live`: a sampled allocation not freed yet. */
struct rt_heap_key {
	__u32 tgid;
	__u32 _pad;
	__u64 addr;
};

/* Value of map `heap_pending`: an allocation chosen for sampling, between entry and return. */
struct rt_heap_pending {
	__u64 size;
	__u64 memptr; /* posix_memalign: where the pointer will be stored; 0 otherwise */
};

/* Value of map `offcpu`: per thread. */
struct rt_offcpu {
	__u64 off_ts;     /* when it left the CPU voluntarily; 0 while running */
	__u64 blocked_ns; /* off-CPU time accumulated since its last syscall exit */
};

#define RT_PROF_HEAD (sizeof(struct rt_prof) - RT_USTACK_MAX)

_Static_assert(sizeof(struct rt_prof) == 80 + 8 * RT_KSTACK_MAX + RT_USTACK_MAX, "rt_prof layout");
_Static_assert(sizeof(struct rt_heap_key) == 16, "rt_heap_key layout");

#endif /* RETRACE_PROFILE_H */
