/*
 * crt0.S -- where every user program starts.  exec leaves ESP pointing at
 * main's argument (the scale), so "call main" finds it at 4(%esp).
 */
.section .note.GNU-stack, "", @progbits
.text
.globl _start
_start:
    xorl    %ebp, %ebp
    call    main
    pushl   %eax
    call    exit
spin:
    jmp     spin
