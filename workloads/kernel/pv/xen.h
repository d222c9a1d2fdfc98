/*
 * xen.h -- the part of Xen's x86-32 paravirtual interface that this kernel
 * uses: hypercall numbers, the structures the hypervisor and the kernel
 * share, and the hypercall instruction itself.  docs/pv-abi.md is the
 * contract; the numbers and layouts are Xen 3.0's.
 *
 * A hypercall is to the hypervisor what a system call is to the kernel:
 * "int $0x82" from ring 1, the number in EAX, up to five arguments in EBX,
 * ECX, EDX, ESI, EDI, the result in EAX (negative: -errno).  Every pointer
 * argument is a virtual address of ours, which the hypervisor reads through
 * our own page tables.
 *
 * The first part is usable from assembly (.S) files too.
 */
#ifndef PV_XEN_H
#define PV_XEN_H

#define XEN_INTERFACE_VERSION   0x00030000      /* 3.0, the image header's xen_version */

/* The hypervisor's flat segments (there is no GDT of our own): the kernel
 * runs at ring 1, user code at ring 3.  (mmu.h's UCODE_SEL/UDATA_SEL are
 * the user ones in a paravirtual build.) */
#define FLAT_KERNEL_CS  0xE019
#define FLAT_KERNEL_DS  0xE021
#define FLAT_KERNEL_SS  FLAT_KERNEL_DS
#define FLAT_USER_CS    0xE02B
#define FLAT_USER_DS    0xE033

/* Hypercall numbers. */
#define __HYPERVISOR_set_trap_table     0
#define __HYPERVISOR_mmu_update         1
#define __HYPERVISOR_stack_switch       3
#define __HYPERVISOR_set_callbacks      4
#define __HYPERVISOR_fpu_taskswitch     5
#define __HYPERVISOR_multicall          13
#define __HYPERVISOR_update_va_mapping  14
#define __HYPERVISOR_set_timer_op       15
#define __HYPERVISOR_xen_version        17
#define __HYPERVISOR_console_io         18
#define __HYPERVISOR_iret               23
#define __HYPERVISOR_mmuext_op          26
#define __HYPERVISOR_sched_op           29
#define __HYPERVISOR_event_channel_op   32
#define __HYPERVISOR_physdev_op         33

/* Where the fields of vcpu_info are, for the assembly stubs. */
#define VCPU_UPCALL_PENDING 0
#define VCPU_UPCALL_MASK    1

/* The machine-to-physical table: one u32 per machine frame, read-only,
 * mapped by the hypervisor in every address space. */
#define MACH2PHYS_VIRT_START 0xFC000000

#ifndef __ASSEMBLER__
#include "types.h"

typedef unsigned long long uint64;

#define DOMID_SELF      0x7FF0

/* ---- set_trap_table ------------------------------------------------------ */

/* One handler: like an IDT gate, without the descriptor encoding. */
struct trap_info {
    uchar vector;
    uchar flags;            /* bits 0-1: lowest ring that may "int" to it */
    ushort cs;
    uint address;           /* 0 ends the table */
};
#define TI_SET_IF   4       /* mask events on entry, like an interrupt gate */

/* ---- mmu_update, mmuext_op, update_va_mapping ---------------------------- */

struct mmu_update {
    uint64 ptr;             /* machine address of the entry | command */
    uint64 val;             /* the new entry */
};
#define MMU_NORMAL_PT_UPDATE    0
#define MMU_MACHPHYS_UPDATE     1

struct mmuext_op {
    uint cmd;
    uint arg1;              /* mfn, or a virtual address for INVLPG */
    uint arg2;
};
#define MMUEXT_PIN_L1_TABLE     0
#define MMUEXT_PIN_L2_TABLE     1
#define MMUEXT_UNPIN_TABLE      4
#define MMUEXT_NEW_BASEPTR      5
#define MMUEXT_TLB_FLUSH_LOCAL  6
#define MMUEXT_INVLPG_LOCAL     7

#define UVMF_NONE       0
#define UVMF_TLB_FLUSH  1
#define UVMF_INVLPG     2

/* ---- multicall ------------------------------------------------------------ */

struct multicall_entry {
    uint op;                /* a hypercall number */
    uint result;            /* its result, written by the hypervisor */
    uint args[6];
};

/* ---- shared info: the hypervisor's half of our virtual CPU ----------------- */

struct vcpu_time_info {
    volatile uint version;          /* odd while the hypervisor updates it */
    uint pad0;
    volatile uint64 tsc_timestamp;
    volatile uint64 system_time;    /* ns since the domain started */
    uint tsc_to_system_mul;
    signed char tsc_shift;
    char pad1[3];
};

struct vcpu_info {
    volatile uchar evtchn_upcall_pending;   /* an event waits for delivery */
    volatile uchar evtchn_upcall_mask;      /* our virtual "IF = 0" */
    ushort pad0;
    volatile uint evtchn_pending_sel;       /* which words of evtchn_pending to look at */
    struct {
        volatile uint cr2;                  /* the last page fault's address */
        uint pad[5];
    } arch;
    struct vcpu_time_info time;
};

struct shared_info {
    struct vcpu_info vcpu_info[32];
    volatile uint evtchn_pending[32];       /* one bit per port */
    volatile uint evtchn_mask[32];          /* one bit per port */
    /* (wall clock and the architecture part follow; not used) */
};

_Static_assert(sizeof(struct vcpu_info) == 64, "vcpu_info");
_Static_assert(__builtin_offsetof(struct vcpu_info, evtchn_upcall_mask) == VCPU_UPCALL_MASK, "mask");
_Static_assert(__builtin_offsetof(struct vcpu_info, arch.cr2) == 8, "cr2");
_Static_assert(__builtin_offsetof(struct vcpu_info, time.system_time) == 48, "system_time");
_Static_assert(__builtin_offsetof(struct shared_info, evtchn_pending) == 2048, "pending");
_Static_assert(__builtin_offsetof(struct shared_info, evtchn_mask) == 2176, "mask");

/* ---- start_info: what the domain builder tells us at start of day ---------- */

#define XEN_START_MAGIC "xen-3.0-x86_32"

struct start_info {
    char magic[32];
    uint nr_pages;          /* pages of pseudo-physical memory */
    uint shared_info;       /* MACHINE address of the shared-info page */
    uint flags;
    uint store_mfn, store_evtchn;
    uint console_mfn, console_evtchn;
    uint pt_base;           /* virtual address of the bootstrap page directory */
    uint nr_pt_frames;
    uint mfn_list;          /* virtual address of the page-frame list */
    uint mod_start, mod_len;
    char cmd_line[1024];
};
_Static_assert(__builtin_offsetof(struct start_info, pt_base) == 60, "pt_base");
_Static_assert(__builtin_offsetof(struct start_info, cmd_line) == 80, "cmd_line");

/* ---- console_io, xen_version, sched_op, physdev_op ------------------------- */

#define CONSOLEIO_write     0
#define XENVER_version      0

#define SCHEDOP_yield       0
#define SCHEDOP_block       1
#define SCHEDOP_shutdown    2
struct sched_shutdown { uint reason; };
#define SHUTDOWN_poweroff   0
#define SHUTDOWN_crash      3

#define PHYSDEVOP_set_iopl  6
struct physdev_set_iopl { uint iopl; };

/* ---- event channels ---------------------------------------------------------- */

#define VIRQ_TIMER          0

#define EVTCHNOP_bind_virq  1
#define EVTCHNOP_close      3
#define EVTCHNOP_send       4
#define EVTCHNOP_unmask     9
struct evtchn_bind_virq { uint virq, vcpu, port; };
struct evtchn_port { uint port; };     /* the argument of close, send, unmask */

/* ---- the block device's shared ring (blkif) ----------------------------------- */

#define BLKIF_OP_READ       0
#define BLKIF_OP_WRITE      1
#define BLKIF_RSP_OKAY      0
#define BLKIF_RSP_ERROR     (-1)
#define BLKIF_MAX_SEGMENTS  11
#define BLKIF_RING_SIZE     32

struct blkif_segment {
    uint frame;                 /* machine frame of the buffer */
    uchar first_sect, last_sect;    /* 512-byte sectors within it, 0..7 */
    ushort pad;
};

/* On x86-32 a 64-bit field needs only 4-byte alignment: id is at 4. */
struct blkif_request {
    uchar operation;
    uchar nr_segments;
    ushort handle;
    uint64 id;
    uint64 sector_number;
    struct blkif_segment seg[BLKIF_MAX_SEGMENTS];
};

struct blkif_response {
    uint64 id;
    uchar operation;
    uchar pad;
    short status;
};

/* A slot holds a request until the back end answers it in place. */
union blkif_slot {
    struct blkif_request req;
    struct blkif_response rsp;
};

struct blkif_sring {
    uint req_prod, req_event;
    uint rsp_prod, rsp_event;
    uchar pad[48];
    union blkif_slot ring[BLKIF_RING_SIZE];
};

_Static_assert(__builtin_offsetof(struct blkif_request, id) == 4, "id");
_Static_assert(__builtin_offsetof(struct blkif_request, seg) == 20, "seg");
_Static_assert(sizeof(union blkif_slot) == 108, "slot");
_Static_assert(__builtin_offsetof(struct blkif_response, status) == 10, "status");
_Static_assert(__builtin_offsetof(struct blkif_sring, ring) == 64, "ring");

/* ---- the hypercall instruction ---------------------------------------------- */

/* [tour pv 70] The kernel's half of a hypercall: int $0x82.
 * The number in EAX, the arguments in EBX, ECX, EDX, ESI, EDI, the result in EAX, as
 * Xen's x86-32 interface has it.
 */
/* "memory": the hypervisor reads and writes our memory (the arguments
 * behind pointers, the shared-info page), so the compiler must not keep
 * values in registers across the call. */
static inline int _hypercall1(uint op, uint a1)
{
    int r;
    __asm__ volatile("int $0x82" : "=a"(r) : "a"(op), "b"(a1) : "memory");
    return r;
}

static inline int _hypercall2(uint op, uint a1, uint a2)
{
    int r;
    __asm__ volatile("int $0x82" : "=a"(r) : "a"(op), "b"(a1), "c"(a2) : "memory");
    return r;
}

static inline int _hypercall3(uint op, uint a1, uint a2, uint a3)
{
    int r;
    __asm__ volatile("int $0x82" : "=a"(r) : "a"(op), "b"(a1), "c"(a2), "d"(a3) : "memory");
    return r;
}

static inline int _hypercall4(uint op, uint a1, uint a2, uint a3, uint a4)
{
    int r;
    __asm__ volatile("int $0x82" : "=a"(r)
                     : "a"(op), "b"(a1), "c"(a2), "d"(a3), "S"(a4) : "memory");
    return r;
}

static inline int HYPERVISOR_set_trap_table(struct trap_info *table)
{
    return _hypercall1(__HYPERVISOR_set_trap_table, (uint)table);
}

static inline int HYPERVISOR_mmu_update(struct mmu_update *req, int count, int *done)
{
    return _hypercall4(__HYPERVISOR_mmu_update, (uint)req, count, (uint)done, DOMID_SELF);
}

static inline int HYPERVISOR_mmuext_op(struct mmuext_op *op, int count, int *done)
{
    return _hypercall4(__HYPERVISOR_mmuext_op, (uint)op, count, (uint)done, DOMID_SELF);
}

static inline int HYPERVISOR_update_va_mapping(uint va, pte_t val, uint flags)
{
    return _hypercall3(__HYPERVISOR_update_va_mapping, va, val, flags);
}

static inline int HYPERVISOR_stack_switch(uint ss, uint esp)
{
    return _hypercall2(__HYPERVISOR_stack_switch, ss, esp);
}

static inline int HYPERVISOR_set_callbacks(uint event_cs, uint event_eip,
                                           uint failsafe_cs, uint failsafe_eip)
{
    return _hypercall4(__HYPERVISOR_set_callbacks, event_cs, event_eip,
                       failsafe_cs, failsafe_eip);
}

static inline int HYPERVISOR_fpu_taskswitch(int set)
{
    return _hypercall1(__HYPERVISOR_fpu_taskswitch, set);
}

static inline int HYPERVISOR_multicall(struct multicall_entry *calls, int count)
{
    return _hypercall2(__HYPERVISOR_multicall, (uint)calls, count);
}

static inline int HYPERVISOR_set_timer_op(uint64 deadline)
{
    return _hypercall2(__HYPERVISOR_set_timer_op, (uint)deadline, (uint)(deadline >> 32));
}

static inline int HYPERVISOR_xen_version(int cmd)
{
    return _hypercall2(__HYPERVISOR_xen_version, cmd, 0);
}

static inline int HYPERVISOR_console_io(int cmd, int count, const char *buf)
{
    return _hypercall3(__HYPERVISOR_console_io, cmd, count, (uint)buf);
}

static inline int HYPERVISOR_sched_op(int cmd, void *arg)
{
    return _hypercall2(__HYPERVISOR_sched_op, cmd, (uint)arg);
}

static inline int HYPERVISOR_event_channel_op(int cmd, void *arg)
{
    return _hypercall2(__HYPERVISOR_event_channel_op, cmd, (uint)arg);
}

static inline int HYPERVISOR_physdev_op(int cmd, void *arg)
{
    return _hypercall2(__HYPERVISOR_physdev_op, cmd, (uint)arg);
}

#endif /* __ASSEMBLER__ */
#endif
