/*
 * priv_pv_asm.h -- the assembly macros of priv_asm.h for a kernel that runs
 * paravirtualized on Xen (-DPARAVIRT; docs/pv-abi.md section 5).
 *
 * vcpu is the C pointer to our vcpu_info in the shared-info page (pv/vcpu.c);
 * its byte VCPU_UPCALL_MASK is the virtual "IF = 0", VCPU_UPCALL_PENDING says
 * an event waits.
 */
#ifndef PRIV_PV_ASM_H
#define PRIV_PV_ASM_H

#include "pv/xen.h"

/* Events are masked when the hypervisor starts us: nothing to do. */
#define IRQ_DISABLE

/* ENABLE_PAGING_EAX does not exist: the domain builder starts us with
 * paging on, and CR3 is the hypervisor's to load. */

/* Return from a trap, with EIP, CS, EFLAGS[, ESP, SS] on the stack.
 *
 * A plain iret at ring 1 restores everything but IF, which is virtual: the
 * event mask.  If the frame's IF is clear (we return into masked kernel
 * code), the mask stays set: iret.  Otherwise unmask first; and if an event
 * came in meanwhile, return through the iret hypercall instead, which
 * restores the frame and the mask and delivers the event on the way out.
 * That hypercall wants EAX on top of the frame: the push below.  (If an
 * event is taken between the unmask and the iret, its upcall nests on this
 * stack and returns here; nothing is lost.)  The iret hypercall does not
 * return; ud2 if it ever does. */
#define IRET_TO_USER \
    testl   $FL_IF, 8(%esp); \
    jz      8f; \
    pushl   %eax; \
    movl    vcpu, %eax; \
    movb    $0, VCPU_UPCALL_MASK(%eax); \
    cmpb    $0, VCPU_UPCALL_PENDING(%eax); \
    jne     9f; \
    popl    %eax; \
8:  iret; \
9:  movl    $__HYPERVISOR_iret, %eax; \
    int     $0x82; \
    ud2

/* The system call is a direct trap (the CPU enters the kernel without the
 * hypervisor: Xen's fast int 0x80), through a trap gate that leaves events
 * unmasked.  Mask them, as an interrupt gate would clear IF, changing no
 * register and no flag. */
#define SYSCALL_ENTRY_MASK \
    pushl   %eax; \
    movl    vcpu, %eax; \
    movb    $1, VCPU_UPCALL_MASK(%eax); \
    popl    %eax

#endif
