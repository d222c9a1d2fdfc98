/*
 * kbench.c -- kernel-mode nanobenchmarks and fidelity probes.
 *
 * kbench(op, n) runs one operation n times in kernel mode, after Adams &
 * Agesen (ASPLOS 2006), who measured exactly such operations to compare
 * binary translation with VT-x.  Each iteration ends with "out 0x503" (the
 * platform's free iteration mark).  These operations cannot be expressed by
 * a user program: they are privileged.
 *
 * kprobe(what) executes a sensitive-but-unprivileged instruction in kernel
 * mode and returns what the CPU answered (see priv.h).  On real hardware at
 * ring 0 the answers are fixed; under classic trap-and-emulate, where the
 * kernel really runs in ring 1, they reveal the VMM.
 * Numbers: KB_* and KP_* in user/ulib.h.
 */
#include "defs.h"
#include "priv.h"

#define KB_NOP      0   /* just the iteration mark */
#define KB_IN       1   /* inb from the UART line status register */
#define KB_CRWR     2   /* write CR0 with its own value */
#define KB_CALLRET  3   /* call and return of a non-inlined function */
#define KB_PTEMOD   4   /* change a page-table entry, then invlpg */
#define KB_CLI      5   /* cli; sti */
#define KB_POPF     6   /* pushf; popf */

#define KP_POPF        1
#define KP_PUSHF       2
#define KP_SIDT        3
#define KP_SGDT        4
#define KP_PUSHCS      5
#define KP_SMSW        6
#define KP_IDT_EXPECT  7
#define KP_GDT_EXPECT  8
#define KP_CR0_EXPECT  9
#define KP_STR         10
#define KP_TR_EXPECT   11

#define PORT_ITER   0x503
#define PORT_LSR    0x3FD

static __attribute__((noinline)) int kb_callee(int x)
{
    __asm__ volatile("");
    return x + 1;
}

/* Two frames for the scratch page: kbench PTEMOD alternates between them
 * so every store really changes the entry. */
static uint scratch_frame[2];

int kbench(int op, int n)
{
    if (n < 0)
        return -1;
    switch (op) {
    case KB_NOP:
        for (int i = 0; i < n; i++)
            outb(PORT_ITER, 0);
        break;
    case KB_IN: {
        uint sum = 0;
        for (int i = 0; i < n; i++) {
            sum += inb(PORT_LSR);
            outb(PORT_ITER, 0);
        }
        (void)sum;
        break;
    }
    case KB_CRWR: {
        uint cr0 = read_cr0();
        for (int i = 0; i < n; i++) {
            write_cr0(cr0);
            outb(PORT_ITER, 0);
        }
        break;
    }
    case KB_CALLRET: {
        volatile int x = 0;
        for (int i = 0; i < n; i++) {
            x = kb_callee(x);
            outb(PORT_ITER, 0);
        }
        break;
    }
    case KB_PTEMOD: {
        if (!scratch_frame[0]) {
            void *a = kalloc(), *b = kalloc();
            if (!a || !b)
                return -1;
            scratch_frame[0] = V2P(a);
            scratch_frame[1] = V2P(b);
        }
        pte_t *pte = kscratch_pte();
        /* Map the scratch page and touch it once, so its page table is one the
         * MMU has really used (under shadow paging: shadowed and traced), as a
         * kernel's live page tables are.  The loop then measures the store. */
        pte_write(pte, pte_mk(scratch_frame[1], PTE_P | PTE_W));
        pt_sync();
        tlb_flush_page(KSCRATCH);
        (void)*(volatile uint *)KSCRATCH;
        for (int i = 0; i < n; i++) {
            pte_write(pte, pte_mk(scratch_frame[i & 1], PTE_P | PTE_W));
            pt_sync();
            tlb_flush_page(KSCRATCH);
            outb(PORT_ITER, 0);
        }
        pte_write(pte, 0);
        pt_sync();
        tlb_flush_page(KSCRATCH);
        break;
    }
    case KB_CLI:
        /* The kernel always runs with IF = 0, so mask again at the end
         * with cli (not popf: deprivileged, popf could not restore IF). */
        for (int i = 0; i < n; i++) {
            irq_disable();
            irq_enable();
            outb(PORT_ITER, 0);
        }
        irq_disable();
        break;
    case KB_POPF:
        for (int i = 0; i < n; i++) {
            write_eflags(read_eflags());
            outb(PORT_ITER, 0);
        }
        break;
    default:
        return -1;
    }
    return 0;
}

/* Called, like all system calls, with interrupts masked; every probe
 * leaves them masked. */
int kprobe(int what)
{
    int r;
    switch (what) {
    case KP_POPF:       r = (int)probe_popf_if(); break;
    case KP_PUSHF:      r = (int)probe_pushf_if(); break;
    case KP_SIDT:       r = (int)probe_sidt(); break;
    case KP_SGDT:       r = (int)probe_sgdt(); break;
    case KP_PUSHCS:     r = (int)probe_cs_rpl(); break;
    case KP_SMSW:       r = (int)probe_smsw(); break;
    case KP_IDT_EXPECT: r = (int)idt_base_addr; break;
    case KP_GDT_EXPECT: r = (int)gdt_base_addr; break;
    case KP_CR0_EXPECT: r = (int)(read_cr0() & 0xFFFF); break;
    case KP_STR:        r = (int)probe_str(); break;
    case KP_TR_EXPECT:  r = TSS_SEL; break;
    default:            r = -1; break;
    }
    irq_disable();
    return r;
}
