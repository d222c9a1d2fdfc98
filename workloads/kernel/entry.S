/*
 * entry.S -- the first instructions of the kernel.
 *
 * The machine loads the flat image at PHYSICAL 0x100000 and jumps to its
 * first byte with paging off, interrupts off, flat boot segments, EAX =
 * "VLAB" and EBX = physical address of the boot-information block.
 *
 * The kernel is linked to run at VIRTUAL 0xC0100000 (KERNLINK), so until
 * paging is on every absolute address must be converted to a physical one
 * (V2P_ASM).  We:
 *   1. remember EBX, zero .bss;
 *   2. build a boot page directory that maps the first 8 MiB of physical
 *      memory twice: at 0 (identity, so the instruction after "enable
 *      paging" can still be fetched) and at KERNBASE (where we really run);
 *   3. enable paging with CR0.PG, and CR0.WP so that write protection also
 *      binds ring 0 (read-only pages are read-only for the kernel too);
 *   4. jump to the high address, switch to the kernel's boot stack, call kmain.
 * kmain then builds the real kernel page directory (no identity map).
 */
#include "mmu.h"
#include "priv_asm.h"

#define BOOT_NPT 2                      /* 2 page tables = 8 MiB mapped at boot */

.section .note.GNU-stack, "", @progbits

.section .text.entry, "ax"
.globl _start
_start:
    IRQ_DISABLE
    cld
    movl    %ebx, V2P_ASM(boot_info_pa)

    /* Zero .bss: the image file does not contain it. */
    movl    $V2P_ASM(__bss_start), %edi
    movl    $V2P_ASM(__bss_end), %ecx
    subl    %edi, %ecx
    xorl    %eax, %eax
    rep stosb

    /* Fill the boot page tables: entry i maps physical i*4096. */
    movl    $V2P_ASM(boot_pt), %edi
    movl    $(PTE_P | PTE_W), %eax
    movl    $(BOOT_NPT * NPTENTRIES), %ecx
fill_pt:
    stosl
    addl    $PGSIZE, %eax
    loop    fill_pt

    /* Point directory entries 0.. and (KERNBASE>>22).. at them. */
    movl    $V2P_ASM(boot_pgdir), %edi
    movl    $(V2P_ASM(boot_pt) + PTE_P + PTE_W), %eax
    xorl    %ecx, %ecx
fill_pd:
    movl    %eax, (%edi, %ecx, 4)
    movl    %eax, ((KERNBASE >> PDXSHIFT) * 4)(%edi, %ecx, 4)
    addl    $PGSIZE, %eax
    incl    %ecx
    cmpl    $BOOT_NPT, %ecx
    jb      fill_pd

    /* Turn on paging. */
    movl    $V2P_ASM(boot_pgdir), %eax
    ENABLE_PAGING_EAX

    /* Jump to the high half (an absolute, indirect jump). */
    movl    $high, %eax
    jmp     *%eax
high:
    movl    $boot_stack_top, %esp
    xorl    %ebp, %ebp
    call    kmain
spin:
    jmp     spin

.data
.globl boot_info_pa
boot_info_pa:
    .long   0

.bss
.p2align 12
.globl boot_pgdir
boot_pgdir:
    .space  PGSIZE
boot_pt:
    .space  PGSIZE * BOOT_NPT
boot_stack:
    .space  PGSIZE * 2
.globl boot_stack_top
boot_stack_top:
