/*
 * priv_asm.h -- the privileged instructions that assembly stubs need,
 * as macros, so that a paravirtual build (-DPARAVIRT) can supply other
 * expansions (e.g. Xen's iret hypercall).  See priv.h for the C side.
 */
#ifndef PRIV_ASM_H
#define PRIV_ASM_H

#ifdef PARAVIRT
#include "priv_pv_asm.h"
#else
/* Mask interrupts (boot entry; the machine starts us with IF = 0 anyway). */
#define IRQ_DISABLE  cli

/* Load CR3 with the page directory whose physical address is in EAX, then
 * turn on paging (CR0.PG) and make write protection apply to ring 0 too
 * (CR0.WP: read-only pages are read-only for the kernel too).  Clobbers
 * EAX.  A paravirtual kernel is started with paging already on and never
 * uses this. */
#define ENABLE_PAGING_EAX \
    movl %eax, %cr3; \
    movl %cr0, %eax; \
    orl $(CR0_PG | CR0_WP), %eax; \
    movl %eax, %cr0

/* Return from a trap: pops EIP, CS, EFLAGS (and ESP, SS when going back to
 * a less privileged ring: the way into user mode). */
#define IRET_TO_USER  iret

/* The first instructions of the system-call entry (vector 0x80).  Natively
 * none: the gate is an interrupt gate, the CPU itself clears IF.  (Under Xen
 * the system call is a trap gate that leaves events on: see priv_pv_asm.h.) */
#define SYSCALL_ENTRY_MASK
#endif

#endif
