/*
 * traps.c -- our IDT becomes the hypervisor's trap table.
 *
 * The real IDT belongs to the hypervisor: every exception enters it first,
 * and it "bounces" the exception to the handler we registered, building
 * the frame the CPU would have built (docs/pv-abi.md section 5).  trap.c
 * builds an ordinary IDT anyway; load_idt() reads its gates and tells the
 * hypervisor the same thing in Xen's form, a trap_info per vector.
 *
 * One vector is special: the system call.  Registered for ring 3 and
 * without TI_SET_IF, it may become a direct trap -- a gate in the real IDT
 * that takes a user "int $0x80" straight to our handler, with no
 * hypervisor entry at all (the handler then masks events itself:
 * SYSCALL_ENTRY_MASK in trapasm.S).
 */
#include "defs.h"
#include "priv.h"

/* In the gate's high word: present bit, DPL, type (0xE: interrupt gate). */
#define GATE_P          0x8000
#define GATE_DPL(hi)    (((hi) >> 13) & 3)
#define GATE_TYPE(hi)   (((hi) >> 8) & 0xF)
#define GATE_INTR       0xE

static struct trap_info traps[256 + 1];     /* ends with an all-zero entry */

void load_idt(void *base, uint size)
{
    const uint *gate = base;    /* 8 bytes a gate: low word, high word */
    int n = 0;
    for (uint v = 0; v < size / 8 && v < 256; v++) {
        uint lo = gate[2 * v], hi = gate[2 * v + 1];
        if (!(hi & GATE_P))
            continue;
        traps[n].vector = (uchar)v;
        /* An interrupt gate clears IF on entry; its equivalent is to mask
         * events on entry, TI_SET_IF.  Not for the system call (above). */
        traps[n].flags = (uchar)GATE_DPL(hi);
        if (GATE_TYPE(hi) == GATE_INTR && v != T_SYSCALL)
            traps[n].flags |= TI_SET_IF;
        traps[n].cs = FLAT_KERNEL_CS;
        traps[n].address = (hi & 0xFFFF0000) | (lo & 0xFFFF);
        n++;
    }
    memset(&traps[n], 0, sizeof(traps[n]));

    int r = HYPERVISOR_set_trap_table(traps);
    if (r < 0)
        panic("set_trap_table: error %d", r);
    r = HYPERVISOR_set_callbacks(FLAT_KERNEL_CS, (uint)hypervisor_callback,
                                 FLAT_KERNEL_CS, (uint)failsafe_callback);
    if (r < 0)
        panic("set_callbacks: error %d", r);
}
