/*
 * entry.S -- the first bytes and the first instructions of the
 * paravirtual kernel.
 *
 * A PV image begins with a header that tells the domain builder where to
 * put it and where to enter it (Xen reads the same facts from ELF notes;
 * docs/pv-abi.md section 1).  The builder loads the image at virt_base +
 * 0x100000, places the page-frame list, start_info, the block ring, the
 * bootstrap page tables and a stack page after virt_end, maps all of our
 * memory at virt_base, and jumps to entry with:
 *
 *   paging on (its page directory), CS = FLAT_KERNEL_CS (ring 1),
 *   DS = ES = FS = GS = SS = FLAT_KERNEL_DS, events masked,
 *   ESI = start_info (virtual), ESP = the end of the bootstrap region.
 *
 * So there is much less to do than in the native entry.S: no paging to turn
 * on, no .bss to clear (the builder zero-fills up to virt_end).  We keep ESI
 * and ESP -- the latter is where free memory begins, for early_alloc -- move
 * to a stack of our own and call kmain.
 */
#include "mmu.h"
#include "pv/xen.h"

.section .note.GNU-stack, "", @progbits

.section .text.entry, "ax"
pv_header:
    .ascii  "VLABPV32"              /* magic */
    .long   KERNBASE                /* virt_base: where pseudo-physical 0 is mapped */
    .long   _start                  /* entry */
    .long   end                     /* virt_end (kernel.ld: page aligned) */
    .long   XEN_INTERFACE_VERSION   /* xen_version */
    .long   0, 0                    /* reserved */

.globl _start
_start:
    cld
    movl    %esi, xen_start_info
    movl    %esp, bootstrap_end
    movl    $boot_stack_top, %esp
    xorl    %ebp, %ebp
    call    kmain
spin:
    jmp     spin

.data
.p2align 2
.globl xen_start_info
xen_start_info:
    .long   0
.globl bootstrap_end
bootstrap_end:
    .long   0

/* The boot stack; later the scheduler's (and its idle loop's) stack. */
.bss
.p2align 4
boot_stack:
    .space  PGSIZE * 2
boot_stack_top:
