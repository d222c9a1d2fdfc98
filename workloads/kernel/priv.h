/*
 * priv.h -- EVERY privileged operation of the kernel, in one place.
 *
 * An operating system kernel does a small number of things that only ring 0
 * may do (or that behave differently outside ring 0): mask interrupts, read
 * and write control registers, change page tables and flush the TLB, load the
 * GDT/IDT/task register, halt, and talk to devices through I/O ports.  Here
 * each of them is a tiny static inline function around the native
 * instruction.  No other C file contains inline assembly with a privileged
 * instruction; assembly stubs use the macros of priv_asm.h.
 *
 * Why: a virtual machine monitor must get control whenever the guest kernel
 * does one of these things.  Trap-and-emulate, VT-x and binary translation do
 * that without the kernel's help (that is their point), but a
 * paravirtualized kernel (built with -DPARAVIRT, as Xen's guests are) replaces
 * exactly this file with hypercalls and shared-memory operations -- as Linux
 * does with its pv_ops table.  Keeping the interface narrow keeps that
 * replacement small: priv_pv.h supplies the paravirtual versions of
 * everything between "#ifdef PARAVIRT" and its "#endif" below; port I/O and
 * the raw fidelity probes at the end are the same in both builds.
 *
 * A few operations exist only because a paravirtual kernel needs them
 * (pte_mk, pte_pa, pte_read, pte_update, pt_page_protect, pgdir_pin,
 * switch_done, ...).  Natively they are the identity or empty, so they cost
 * the native kernel not a single instruction.
 */
#ifndef PRIV_H
#define PRIV_H

#include "types.h"
#include "mmu.h"

/* The operand of lgdt/lidt/sgdt/sidt: a 16-bit limit and a 32-bit base. */
struct dtr { ushort limit; uint base; } __attribute__((packed));

#ifdef PARAVIRT
#include "priv_pv.h"
#else

/* ---- interrupt masking ------------------------------------------------ */

/* cli/sti clear/set EFLAGS.IF: whether the CPU accepts maskable interrupts. */
static inline void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void irq_enable(void)  { __asm__ volatile("sti" ::: "memory"); }

static inline uint read_eflags(void)
{
    uint f;
    __asm__ volatile("pushfl; popl %0" : "=r"(f) :: "memory");
    return f;
}

/* popf restores IF only at ring 0 (or with IOPL >= CPL): elsewhere it is
 * silently ignored -- the famous hole in IA-32's virtualizability. */
static inline void write_eflags(uint f)
{
    __asm__ volatile("pushl %0; popfl" :: "r"(f) : "memory", "cc");
}

static inline uint irq_save(void) { uint f = read_eflags(); irq_disable(); return f; }
static inline void irq_restore(uint f) { write_eflags(f); }

/* The idle instruction pair.  sti takes effect only after the NEXT
 * instruction, so no interrupt can slip in between sti and hlt and leave us
 * halted with the wake-up already consumed.  The CPU sleeps until an
 * interrupt, runs its handler, and continues after hlt, where we mask again. */
static inline void idle_wait(void) { __asm__ volatile("sti; hlt; cli" ::: "memory"); }

/* Stop for good (after the run has been ended through port 0x500). */
static inline void __attribute__((noreturn)) halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt" ::: "memory");
}

/* ---- control registers ----------------------------------------------- */

static inline uint read_cr0(void) { uint v; __asm__ volatile("movl %%cr0,%0" : "=r"(v)); return v; }
static inline void write_cr0(uint v) { __asm__ volatile("movl %0,%%cr0" :: "r"(v) : "memory"); }
/* CR2 holds the linear address of the last page fault. */
static inline uint read_cr2(void) { uint v; __asm__ volatile("movl %%cr2,%0" : "=r"(v)); return v; }
static inline uint read_cr3(void) { uint v; __asm__ volatile("movl %%cr3,%0" : "=r"(v)); return v; }

/* Writing CR3 switches address space and flushes all (non-global) TLB entries. */
static inline void load_pgdir_pa(uint pa) { __asm__ volatile("movl %0,%%cr3" :: "r"(pa) : "memory"); }

/* ---- page tables and the TLB ------------------------------------------ */

/* Some of the hooks below are macros, not inline functions: they must leave
 * the native code byte for byte as it was without them, and even an inline
 * function that compiles to nothing can change GCC's choices elsewhere. */

/* An entry holds the address of a page and permission bits.  Natively that
 * address is the physical one; a paravirtual kernel's entries hold MACHINE
 * addresses, so it translates on the way in (pte_mk) and out (pte_pa). */
#define pte_mk(pa, flags)   ((pa) | (flags))
static inline uint pte_pa(pte_t pte) { return PTE_ADDR(pte); }

/* Read an entry of a live page table.  Natively a plain load; a
 * paravirtual kernel may still hold an update of it in its queue. */
static inline pte_t pte_read(pte_t *p) { return *p; }

/* Store one page-table (or page-directory) entry of a LIVE page table.
 * Natively a plain store; a paravirtual kernel queues an mmu_update, a
 * shadow-paging VMM sees the store as a write to a write-protected page. */
static inline void pte_write(pte_t *p, pte_t v) { *(volatile pte_t *)p = v; }

/* Make queued page-table updates take effect (natively nothing is queued). */
static inline void pt_sync(void) { }

/* invlpg drops the TLB entry of one page; needed after weakening or
 * changing a mapping that the CPU may have cached. */
static inline void tlb_flush_page(uint va) { __asm__ volatile("invlpg (%0)" :: "r"(va) : "memory"); }
static inline void tlb_flush_all(void) { load_pgdir_pa(read_cr3()); }

/* Change the entry p that maps va; active: its address space is the one in
 * CR3, so the TLB may hold the old entry. */
#define pte_update(p, v, va, active) \
    do { pte_write(p, v); if (active) tlb_flush_page(va); } while (0)

/* A page about to become a page table, and one that has stopped being one.
 * Natively nothing to do; under Xen a page table must never be writable
 * through any mapping, the kernel's own direct map included. */
#define pt_page_protect(kva)    ((void)0)
#define pt_page_unprotect(kva)  ((void)0)

/* A new page directory is complete / one is about to be freed.  Natively
 * nothing to do; Xen validates ("pins") a directory before it may be used. */
#define pgdir_pin(pgdir)    ((void)0)
#define pgdir_unpin(pgdir)  ((void)0)

/* Directory slots from KERNBASE up to here are the kernel's, the same in
 * every address space.  Natively all of them (nothing is mapped from
 * 0xFC000000 up anyway); under Xen the top slots are the hypervisor's. */
#define KERNEL_PDE_END  NPDENTRIES

/* ---- descriptor tables ------------------------------------------------ */

static inline void load_gdt(void *base, uint size)
{
    struct dtr d = { (ushort)(size - 1), (uint)base };
    __asm__ volatile("lgdt %0" :: "m"(d) : "memory");
}

static inline void load_idt(void *base, uint size)
{
    struct dtr d = { (ushort)(size - 1), (uint)base };
    __asm__ volatile("lidt %0" :: "m"(d) : "memory");
}

/* After lgdt the CPU still uses the old, cached segment descriptors until a
 * segment register is reloaded: reload CS with a far return, the others
 * with plain moves. */
static inline void load_kernel_segments(void)
{
    __asm__ volatile(
        "pushl %0\n\t"
        "pushl $1f\n\t"
        "lret\n"
        "1:\n\t"
        "movw %w1, %%ax\n\t"
        "movw %%ax, %%ds\n\t"
        "movw %%ax, %%es\n\t"
        "movw %%ax, %%ss\n\t"
        "xorl %%eax, %%eax\n\t"
        "movw %%ax, %%fs\n\t"
        "movw %%ax, %%gs"
        :: "i"(KCODE_SEL), "i"(KDATA_SEL) : "eax", "memory");
}

/* ltr loads the task register: where the CPU finds ESP0/SS0 (the kernel
 * stack for traps from user mode) and the I/O permission bitmap. */
static inline void load_tr(ushort sel) { __asm__ volatile("ltr %0" :: "r"(sel)); }

/* Tell the CPU which kernel stack to use for the next trap from user mode.
 * Natively that is a field of the TSS; a paravirtual kernel asks the
 * hypervisor (Xen's stack_switch). */
struct tss;
void tss_set_esp0(uint esp0);
static inline void set_kernel_stack(uint esp0) { tss_set_esp0(esp0); }

/* The scheduler has switched kernel stack and address space.  Natively
 * both took effect at once; a paravirtual kernel batches the two requests
 * into one hypercall and here issues whatever is still waiting. */
static inline void switch_done(void) { }

/* ---- fidelity probes ------------------------------------------------------
 * These run the SENSITIVE BUT UNPRIVILEGED instructions raw, on purpose:
 * they never trap, so a classic trap-and-emulate VMM cannot see them and
 * they reveal the real machine state (Robin & Irvine's list for the Pentium).
 * kprobe() returns what they say.  Each must be called with IF = 0. */

/* Enable interrupts, popf a copy of EFLAGS with IF clear, read IF back.
 * At ring 0 popf clears IF (returns 0); deprivileged it silently does not. */
static inline uint probe_popf_if(void)
{
    uint f;
    __asm__ volatile(
        "sti\n\t"
        "pushfl\n\t"
        "andl $~0x200, (%%esp)\n\t"
        "popfl\n\t"
        "pushfl\n\t"
        "popl %0\n\t"
        "cli"
        : "=r"(f) :: "memory", "cc");
    return (f >> 9) & 1;
}

/* cli, then look at IF with pushf: a virtualized cli leaves the real IF set. */
static inline uint probe_pushf_if(void)
{
    uint f;
    __asm__ volatile("cli; pushfl; popl %0" : "=r"(f) :: "memory");
    return (f >> 9) & 1;
}

#endif /* PARAVIRT */

/* ---- port I/O ----------------------------------------------------------- */

static inline uchar inb(ushort port)
{
    uchar v;
    __asm__ volatile("inb %1,%0" : "=a"(v) : "d"(port));
    return v;
}
static inline ushort inw(ushort port)
{
    ushort v;
    __asm__ volatile("inw %1,%0" : "=a"(v) : "d"(port));
    return v;
}
static inline uint inl(ushort port)
{
    uint v;
    __asm__ volatile("inl %1,%0" : "=a"(v) : "d"(port));
    return v;
}
static inline void outb(ushort port, uchar v) { __asm__ volatile("outb %0,%1" :: "a"(v), "d"(port)); }
static inline void outw(ushort port, ushort v) { __asm__ volatile("outw %0,%1" :: "a"(v), "d"(port)); }
static inline void outl(ushort port, uint v) { __asm__ volatile("outl %0,%1" :: "a"(v), "d"(port)); }

/* String I/O: move cnt 16-bit words between a port and memory (IDE data). */
static inline void insw(ushort port, void *addr, uint cnt)
{
    __asm__ volatile("cld; rep insw" : "+D"(addr), "+c"(cnt) : "d"(port) : "memory", "cc");
}
static inline void outsw(ushort port, const void *addr, uint cnt)
{
    __asm__ volatile("cld; rep outsw" : "+S"(addr), "+c"(cnt) : "d"(port) : "cc");
}

/* The raw probes (see above), the same in both builds: a paravirtual
 * kernel at ring 1 sees what its ring and the hypervisor's tables make the
 * CPU answer, and that is the point of asking. */

static inline uint probe_sidt(void)
{
    struct dtr d;
    __asm__ volatile("sidt %0" : "=m"(d));
    return d.base;
}

static inline uint probe_sgdt(void)
{
    struct dtr d;
    __asm__ volatile("sgdt %0" : "=m"(d));
    return d.base;
}

/* The low two bits of CS are the current privilege level. */
static inline uint probe_cs_rpl(void)
{
    uint cs;
    __asm__ volatile("pushl %%cs; popl %0" : "=r"(cs));
    return cs & 3;
}

/* smsw reads the low 16 bits of CR0 without being privileged. */
static inline uint probe_smsw(void)
{
    uint v = 0;
    __asm__ volatile("smsw %w0" : "+r"(v));
    return v & 0xFFFF;
}

/* str reads the task-register selector. */
static inline uint probe_str(void)
{
    uint v = 0;
    __asm__ volatile("str %w0" : "+r"(v));
    return v & 0xFFFF;
}

#endif
