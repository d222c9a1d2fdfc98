/*
 * callback.S -- the two places where the hypervisor enters us by itself
 * (registered with set_callbacks, pv/traps.c).
 *
 * The event callback is the paravirtual kernel's only "interrupt": when an
 * event channel has fired and events are unmasked, the hypervisor builds a
 * frame on our stack exactly as the CPU would for an interrupt gate (EIP,
 * CS, EFLAGS, and ESP, SS when it interrupted user mode; no error code),
 * masks events, and jumps here.  So we can treat it as one more vector:
 * push a dummy error code and the pseudo vector T_EVTCHN and join alltraps.
 * trap() hands it to evtchn_do_upcall(), and trapret's IRET_TO_USER returns.
 *
 * The failsafe callback is used when the hypervisor cannot load the segment
 * registers of a frame it returns to.  Our frames always hold the flat
 * selectors, so this is a kernel bug: panic.
 */
#include "mmu.h"

.section .note.GNU-stack, "", @progbits

.text
.globl hypervisor_callback
hypervisor_callback:
    pushl   $0
    pushl   $T_EVTCHN
    jmp     alltraps

.globl failsafe_callback
failsafe_callback:
    movw    %ss, %ax            /* our data segment, whatever DS holds now */
    movw    %ax, %ds
    movw    %ax, %es
    pushl   $failsafe_msg
    call    panic

.section .rodata
failsafe_msg:
    .asciz  "failsafe callback: the hypervisor could not load a frame's segments"
