/*
 * priv_pv.h -- the privileged operations of priv.h for a kernel that runs
 * paravirtualized on Xen (built with -DPARAVIRT; docs/pv-abi.md).
 *
 * The kernel runs at ring 1, where every privileged instruction faults.
 * Instead of executing them and letting a monitor emulate them, it asks the
 * hypervisor directly (a hypercall, pv/xen.h), or does without:
 *
 *  - interrupts are "events", and masking them is a store into the
 *    shared-info page (vcpu_info.evtchn_upcall_mask), not cli/sti;
 *  - the kernel keeps its own copies of CR0 and CR3 and reads those; CR2
 *    comes from the shared-info page;
 *  - page tables hold machine frame numbers and are read-only: every change
 *    is an mmu_update request, which the hypervisor validates.  Requests
 *    are queued and issued in batches (pt_sync), one hypercall for many;
 *  - the IDT becomes a trap table given to the hypervisor, the TSS's ESP0
 *    a stack_switch hypercall, and there is no GDT of our own at all.
 *
 * Port I/O and the raw fidelity probes stay as they are (end of priv.h).
 */
/* [tour pv 10] Paravirtualization: the same kernel, told it is virtual.
 * Built with -DPARAVIRT, priv.h takes its privileged operations from here: each is a
 * hypercall or a store into memory shared with the hypervisor.  Nothing is trapped or
 * translated; the guest asks.
 */
#ifndef PRIV_PV_H
#define PRIV_PV_H

#include "pv/xen.h"

#define barrier() __asm__ volatile("" ::: "memory")

/* The virtual CPU (pv/vcpu.c): the hypervisor's part, in the shared-info
 * page, and the registers the kernel keeps itself. */
extern struct vcpu_info *vcpu;
extern uint cr0_shadow, cr3_shadow;

/* ---- interrupt masking ------------------------------------------------ */

/* [tour pv 60] Masking interrupts without a privileged instruction.
 * Interrupts are events; masking them is a store into the vcpu_info of the shared-info
 * page.  Enabling them looks for a pending event and only then enters the hypervisor.
 */
/* "cli": one byte in the shared page.  No trap, no hypercall. */
static inline void irq_disable(void)
{
    vcpu->evtchn_upcall_mask = 1;
    barrier();
}

/* "sti": unmask, then look whether an event arrived while we were masked.
 * The hypervisor delivers events only when it returns to us, so if one is
 * waiting we make a hypercall -- any will do, xen_version is the cheapest --
 * on whose way out it is delivered.  Usually nothing waits: no hypercall. */
static inline void irq_enable(void)
{
    barrier();
    vcpu->evtchn_upcall_mask = 0;
    barrier();
    if (vcpu->evtchn_upcall_pending)
        HYPERVISOR_xen_version(XENVER_version);
}

/* The real EFLAGS, except that IF is the virtual one.  (The real IF is
 * always set: real interrupts belong to the hypervisor.) */
static inline uint read_eflags(void)
{
    uint f;
    __asm__ volatile("pushfl; popl %0" : "=r"(f) :: "memory");
    return vcpu->evtchn_upcall_mask ? (f & ~FL_IF) : (f | FL_IF);
}

/* popf restores the arithmetic flags; at ring 1 it would silently ignore
 * IF anyway, so give it the real IF (set) and restore the virtual one from
 * f ourselves. */
static inline void write_eflags(uint f)
{
    __asm__ volatile("pushl %0; popfl" :: "r"(f | FL_IF) : "memory", "cc");
    if (f & FL_IF)
        irq_enable();
    else
        irq_disable();
}

static inline uint irq_save(void) { uint f = read_eflags(); irq_disable(); return f; }
static inline void irq_restore(uint f) { write_eflags(f); }

/* The idle "sti; hlt": SCHEDOP_block unmasks events and gives the CPU away
 * until one is pending -- atomically, like sti;hlt, so no wake-up is lost.
 * The upcall runs on its way back; then we mask again. */
static inline void idle_wait(void)
{
    HYPERVISOR_sched_op(SCHEDOP_block, 0);
    irq_disable();
}

static inline void __attribute__((noreturn)) halt_forever(void)
{
    struct sched_shutdown s = { SHUTDOWN_poweroff };
    for (;;)
        HYPERVISOR_sched_op(SCHEDOP_shutdown, &s);
}

/* ---- control registers ----------------------------------------------- */

/* Xen owns CR0; of its bits only TS (lazy FPU switching) is the guest's
 * business, and fpu_taskswitch sets or clears it.  The rest of our CR0 is
 * what the hypervisor runs us with: PE, ET, WP, PG (0x80010011). */
static inline uint read_cr0(void) { return cr0_shadow; }
static inline void write_cr0(uint v)
{
    cr0_shadow = v;
    HYPERVISOR_fpu_taskswitch((v & CR0_TS) != 0);
}

/* The hypervisor takes the page fault and leaves its address here. */
static inline uint read_cr2(void) { return vcpu->arch.cr2; }

/* The PSEUDO-physical address of the loaded page directory (the real CR3
 * holds a machine address, and we could not read it anyway). */
static inline uint read_cr3(void) { return cr3_shadow; }

/* Switch address space (pv/multicall.c): MMUEXT_NEW_BASEPTR, batched with
 * a pending stack_switch. */
void load_pgdir_pa(uint pa);

/* ---- page tables and the TLB ------------------------------------------ */

/* Pseudo-physical to machine: the page-frame list of start_info (pfn ->
 * mfn).  Machine to pseudo-physical: the hypervisor's read-only table. */
extern uint *phys_to_machine;
#define machine_to_phys ((const volatile uint *)MACH2PHYS_VIRT_START)

static inline uint pfn_to_mfn(uint pfn) { return phys_to_machine[pfn]; }

static inline pte_t pte_mk(uint pa, uint flags)
{
    return (pfn_to_mfn(pa >> PGSHIFT) << PGSHIFT) | flags;
}

static inline uint pte_pa(pte_t pte)
{
    return machine_to_phys[pte >> PGSHIFT] << PGSHIFT;
}

/* The machine address of the entry (or any word) at kernel address p. */
static inline uint machine_addr(const void *p)
{
    uint pa = V2P(p);
    return pte_mk(pa & ~(PGSIZE - 1), 0) | (pa & (PGSIZE - 1));
}

/* Page-table stores are queued as mmu_update requests (pv/mmu.c).  A
 * queued store is not in memory yet, so a read of an entry we may have
 * queued must look in the queue first (walk() reads a directory entry it
 * has just queued when it needs the same page table again). */
extern int mmu_nqueued;
void mmu_queue(pte_t *p, pte_t v);
pte_t mmu_queued_read(pte_t *p);
void mmu_flush(void);

static inline pte_t pte_read(pte_t *p) { return mmu_nqueued ? mmu_queued_read(p) : *p; }
static inline void pte_write(pte_t *p, pte_t v) { mmu_queue(p, v); }
static inline void pt_sync(void) { if (mmu_nqueued) mmu_flush(); }

void tlb_flush_page(uint va);
void tlb_flush_all(void);

/* A live entry of the loaded address space: update_va_mapping changes it
 * and flushes its TLB entry in one hypercall. */
void pte_update(pte_t *p, pte_t v, uint va, int active);

void pt_page_protect(void *kva);
void pt_page_unprotect(void *kva);
void pgdir_pin(pde_t *pgdir);
void pgdir_unpin(pde_t *pgdir);

/* Slots from 0xFC000000 up are the hypervisor's, in every directory: it
 * fills them itself and refuses any update of them. */
#define KERNEL_PDE_END  PDX(MACH2PHYS_VIRT_START)

/* ---- descriptor tables ------------------------------------------------ */

/* We run on the hypervisor's GDT, TSS and (real) IDT. */
static inline void load_gdt(void *base, uint size) { (void)base; (void)size; }
static inline void load_kernel_segments(void) { }
static inline void load_tr(ushort sel) { (void)sel; }

/* Our IDT, as trap.c built it, becomes the hypervisor's trap table
 * (pv/traps.c). */
void load_idt(void *base, uint size);

/* The stack for the next entry from user mode: a stack_switch hypercall,
 * queued and issued with the address-space switch (pv/multicall.c). */
void set_kernel_stack(uint esp0);
void switch_done(void);

/* ---- fidelity probes ------------------------------------------------------
 * The IF probes go through the paravirtual interrupt interface: the kernel
 * asks the virtual IF, which Xen's interface makes exact -- both answer 0,
 * as natively.  (The raw probes at the end of priv.h are not virtualized.) */

static inline uint probe_popf_if(void)
{
    irq_enable();
    write_eflags(read_eflags() & ~FL_IF);
    uint f = read_eflags();
    irq_disable();
    return (f >> 9) & 1;
}

static inline uint probe_pushf_if(void)
{
    irq_disable();
    return (read_eflags() >> 9) & 1;
}

/* The rest of the paravirtual kernel's glue. */
#include "pv/pv.h"

#endif
