/*
 * swtch.S -- switch from one kernel thread to another.
 *
 *   void swtch(struct context **old, struct context *new);
 *
 * Push the callee-saved registers on the current stack, store the stack
 * pointer (which then points at a struct context) in *old, load new as the
 * stack pointer, pop the other thread's registers and "return" into it.
 * The caller-saved registers (eax, ecx, edx) need no saving: the C
 * compiler already assumes a call clobbers them.  No privileged
 * instruction is involved; the address-space and kernel-stack switches are
 * done by the scheduler through priv.h.
 */
.section .note.GNU-stack, "", @progbits
.text
.globl swtch
swtch:
    movl    4(%esp), %eax
    movl    8(%esp), %edx
    pushl   %ebp
    pushl   %ebx
    pushl   %esi
    pushl   %edi
    movl    %esp, (%eax)
    movl    %edx, %esp
    popl    %edi
    popl    %esi
    popl    %ebx
    popl    %ebp
    ret
