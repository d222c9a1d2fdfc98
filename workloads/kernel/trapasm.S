/*
 * trapasm.S -- the way into and out of the kernel.
 *
 * On an interrupt, exception or "int 0x80" the CPU looks up the vector's
 * gate in the IDT.  If it came from user mode it switches to the kernel
 * stack named in the TSS (SS0:ESP0) and pushes the user SS and ESP; then it
 * pushes EFLAGS, CS, EIP and, for some exceptions, an error code.  Because
 * all our gates are interrupt gates the CPU also clears IF: the kernel runs
 * with interrupts masked (it is not preemptible), except in the idle loop.
 *
 * Each vector stub below pushes a dummy error code where the CPU pushes
 * none (so every frame looks alike) and its vector number, then joins
 * alltraps, which saves the rest and calls trap(struct trapframe *).
 * (A paravirtual kernel enters here too: the hypervisor builds the same
 * frames, its event upcall joins alltraps as pseudo vector T_EVTCHN, and
 * the system-call stub starts by masking events, SYSCALL_ENTRY_MASK.)
 */
#include "mmu.h"
#include "priv_asm.h"

.section .note.GNU-stack, "", @progbits

/* Vectors for which the CPU pushes an error code. */
.macro VEC n
.globl vector\n
vector\n:
.if \n == T_SYSCALL
    SYSCALL_ENTRY_MASK
.endif
.if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17)
    pushl   $\n
.else
    pushl   $0
    pushl   $\n
.endif
    jmp     alltraps
.endm

.text
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    VEC \n
.endr
.irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    VEC \n
.endr
    VEC 128

.globl alltraps
alltraps:
    pushl   %ds
    pushl   %es
    pushl   %fs
    pushl   %gs
    pushal
    /* Kernel data segments: the one the CPU has just loaded into SS (from
     * the TSS on entry from user mode; unchanged from kernel mode).  That
     * is KDATA_SEL natively, and still the right selector if a VMM runs
     * this kernel outside ring 0 with selectors of its own. */
    movw    %ss, %ax
    movw    %ax, %ds
    movw    %ax, %es
    pushl   %esp                /* argument: the trap frame */
    call    trap
    addl    $4, %esp

/* Return to whoever trapped: restore what alltraps saved, drop the vector
 * and error code, and iret.  A new process starts here too (see forkret). */
.globl trapret
trapret:
    popal
    popl    %gs
    popl    %fs
    popl    %es
    popl    %ds
    addl    $8, %esp
    IRET_TO_USER

/* The table idt_init() reads: vectors 0..47, then 128. */
.section .rodata
.p2align 2
.globl vectors
vectors:
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .long vector\n
.endr
.irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    .long vector\n
.endr
    .long vector128
