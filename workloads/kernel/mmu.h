/*
 * mmu.h -- the IA-32 memory-management unit as this kernel uses it:
 * segment selectors, two-level 4 KiB paging, control-register bits and the
 * virtual memory layout.  Usable from C and from assembly (.S) files.
 *
 * Virtual memory layout (every address space):
 *
 *   0x00000000 - 0x00000fff   never mapped (catches NULL pointers)
 *   0x00400000 - ...          the program image (ELF PT_LOAD segments)
 *   0x40000000 - 0xafffffff   mmap() area (demand-zero), kernel picks from the bottom
 *   0xbfc00000 - 0xbfffffff   user stack (4 MiB, demand-zero, grows down)
 *   0xc0000000 - ...          all of physical RAM, mapped 1:1 (KERNBASE + pa),
 *                             kernel only; the kernel image lives at 0xc0100000
 *   0xfbc00000 - 0xfbffffff   kernel scratch window (one page table, used by kbench)
 *   0xfc000000 - 0xffffffff   NEVER mapped: reserved for the virtual machine monitor
 */
#ifndef MMU_H
#define MMU_H

#define KERNBASE    0xC0000000      /* virtual address of physical 0 */
#define KERNLINK    0xC0100000      /* where the kernel is linked (phys 0x100000) */
#define KSCRATCH    0xFBC00000      /* kernel scratch window (4 MiB, one PDE) */
#define VMM_RESERVED 0xFC000000     /* first linear address we must never map */
#define MAXRAM      (KSCRATCH - KERNBASE)   /* direct map must stop below the window */

#define USER_TOP    0xC0000000      /* first address user code may not touch */
#define USTACK_SIZE 0x00400000
#define USTACK_BOT  (USER_TOP - USTACK_SIZE)
#define MMAP_BASE   0x40000000
#define MMAP_TOP    0xB0000000
#define UIMAGE_MIN  0x00001000

#define PGSIZE      4096
#define PGSHIFT     12
#define PDXSHIFT    22
#define NPDENTRIES  1024
#define NPTENTRIES  1024

/* Page-table entry bits (the same for directory entries). */
#define PTE_P       0x001           /* present */
#define PTE_W       0x002           /* writable */
#define PTE_U       0x004           /* user may access */
#define PTE_A       0x020           /* accessed (set by the CPU) */
#define PTE_D       0x040           /* dirty (set by the CPU) */

/* Control registers. */
#define CR0_PE      0x00000001      /* protected mode */
#define CR0_MP      0x00000002
#define CR0_TS      0x00000008      /* task switched: the next FPU instruction traps */
#define CR0_ET      0x00000010
#define CR0_NE      0x00000020
#define CR0_WP      0x00010000      /* write-protect honoured in ring 0 too (COW) */
#define CR0_PG      0x80000000      /* paging */

/* EFLAGS bits. */
#define FL_CF       0x00000001
#define FL_IF       0x00000200      /* interrupts enabled */
#define FL_IOPL     0x00003000
#define FL_USER_CHANGEABLE 0x00000CD5   /* CF PF AF ZF SF DF OF */

/* GDT layout and selectors. */
#define SEG_KCODE   1
#define SEG_KDATA   2
#define SEG_UCODE   3
#define SEG_UDATA   4
#define SEG_TSS     5
#define NSEGS       6
#define KCODE_SEL   (SEG_KCODE << 3)         /* 0x08 */
#define KDATA_SEL   (SEG_KDATA << 3)         /* 0x10 */
#ifdef PARAVIRT
/* A paravirtual kernel has no GDT of its own: user code runs on the flat
 * ring-3 segments of the hypervisor's GDT (FLAT_USER_CS/DS in pv/xen.h). */
#define UCODE_SEL   0xE02B
#define UDATA_SEL   0xE033
#else
#define UCODE_SEL   ((SEG_UCODE << 3) | 3)   /* 0x1b */
#define UDATA_SEL   ((SEG_UDATA << 3) | 3)   /* 0x23 */
#endif
#define TSS_SEL     (SEG_TSS << 3)           /* 0x28 */

/* Interrupt vectors. */
#define T_DIVIDE    0
#define T_DEBUG     1
#define T_NMI       2
#define T_BRKPT     3
#define T_OFLOW     4
#define T_BOUND     5
#define T_ILLOP     6
#define T_DEVICE    7
#define T_DBLFLT    8
#define T_TSS       10
#define T_SEGNP     11
#define T_STACK     12
#define T_GPFLT     13
#define T_PGFLT     14
#define T_FPERR     16
#define T_ALIGN     17
#define T_MCHK      18
#define T_SIMDERR   19
#define T_IRQ0      32              /* the PIC is remapped here */
#define T_SYSCALL   0x80
#define T_EVTCHN    0x81            /* paravirtual only: the event upcall (no gate) */

#define IRQ_TIMER   0
#define IRQ_IDE     14

#ifndef __ASSEMBLER__
#define V2P(a)      ((uint)(a) - KERNBASE)
#define P2V(a)      ((void *)((uint)(a) + KERNBASE))
#define PDX(va)     (((uint)(va) >> PDXSHIFT) & 0x3FF)
#define PTX(va)     (((uint)(va) >> PGSHIFT) & 0x3FF)
#define PTE_ADDR(p) ((uint)(p) & ~0xFFF)
#define PGROUNDUP(a)   (((uint)(a) + PGSIZE - 1) & ~(PGSIZE - 1))
#define PGROUNDDOWN(a) ((uint)(a) & ~(PGSIZE - 1))
#else
#define V2P_ASM(a)  ((a) - KERNBASE)
#endif

#endif
