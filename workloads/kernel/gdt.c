/*
 * gdt.c -- segments and the task state segment.
 *
 * IA-32 protected mode cannot turn segmentation off, so every kernel sets up
 * flat segments (base 0, limit 4 GiB) and lets paging do the real work.  We
 * need four of them -- code and data for ring 0 (DPL 0) and for ring 3 (DPL
 * 3); the current privilege level is the low two bits of CS -- plus one TSS
 * descriptor.
 *
 * The TSS is a leftover of hardware task switching that we use for two
 * things only:
 *   - SS0:ESP0, the stack the CPU switches to when a trap arrives from user
 *     mode (each process has its own kernel stack, so the scheduler updates
 *     ESP0 on every switch);
 *   - the I/O permission bitmap: one bit per port, 0 = user code may access
 *     it.  We allow exactly the platform ports 0x500-0x50F, so programs can
 *     mark their region of interest and iterations with a single "out",
 *     without a system call.  Everything else raises #GP in user mode.
 */
#include "defs.h"
#include "priv.h"

struct segdesc {
    ushort lim_15_0;
    ushort base_15_0;
    uchar base_23_16;
    uchar access;           /* P | DPL(2) | S | type(4) */
    uchar lim_19_16_flags;  /* G | D/B | 0 | AVL | limit 19..16 */
    uchar base_31_24;
} __attribute__((packed));

#define IOMAP_BYTES (65536 / 8)

struct tss {
    uint link;
    uint esp0, ss0, esp1, ss1, esp2, ss2;
    uint cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint es, cs, ss, ds, fs, gs, ldt;
    ushort trap;
    ushort iomap_base;      /* offset of iomap from the start of the TSS */
    uchar iomap[IOMAP_BYTES];
    uchar iomap_end;        /* the CPU may read one byte past the map: all ones */
} __attribute__((packed));

/*
 * The GDT has a page to itself.  A VMM that shadows it (trap-and-emulate,
 * binary translation) must see the kernel's writes to it, and can only watch
 * whole pages: sharing one with the TSS, whose ESP0 changes on every process
 * switch, would make each switch a write fault in the VMM.  Xen requires the
 * same of its guests' GDT frames.
 */
static union {
    struct segdesc d[NSEGS];
    uchar page[PGSIZE];
} gdt_page __attribute__((aligned(PGSIZE)));
#define gdt (gdt_page.d)
static struct tss tss __attribute__((aligned(16)));
uint gdt_base_addr;

static struct segdesc mkseg(uint base, uint limit, uchar access, uchar flags)
{
    struct segdesc d;
    d.lim_15_0 = limit & 0xFFFF;
    d.base_15_0 = base & 0xFFFF;
    d.base_23_16 = (base >> 16) & 0xFF;
    d.access = access;
    d.lim_19_16_flags = (uchar)((flags << 4) | ((limit >> 16) & 0xF));
    d.base_31_24 = (base >> 24) & 0xFF;
    return d;
}

#define ACC_CODE(dpl)  (0x9A | ((dpl) << 5))   /* present, code, readable */
#define ACC_DATA(dpl)  (0x92 | ((dpl) << 5))   /* present, data, writable */
#define ACC_TSS32      0x89                    /* present, available 32-bit TSS */
#define FLAGS_4K_32    0xC                     /* 4 KiB granularity, 32-bit */

void gdt_init(void)
{
    memset(&tss, 0, sizeof(tss));
    tss.ss0 = KDATA_SEL;
    tss.iomap_base = (ushort)((uint)&tss.iomap[0] - (uint)&tss);
    memset(tss.iomap, 0xFF, sizeof(tss.iomap));     /* deny every port ... */
    tss.iomap[0x500 / 8] = 0;                       /* ... but 0x500-0x507 */
    tss.iomap[0x508 / 8] = 0;                       /* ... and 0x508-0x50F */
    tss.iomap_end = 0xFF;

    gdt[0] = mkseg(0, 0, 0, 0);
    gdt[SEG_KCODE] = mkseg(0, 0xFFFFF, ACC_CODE(0), FLAGS_4K_32);
    gdt[SEG_KDATA] = mkseg(0, 0xFFFFF, ACC_DATA(0), FLAGS_4K_32);
    gdt[SEG_UCODE] = mkseg(0, 0xFFFFF, ACC_CODE(3), FLAGS_4K_32);
    gdt[SEG_UDATA] = mkseg(0, 0xFFFFF, ACC_DATA(3), FLAGS_4K_32);
    gdt[SEG_TSS] = mkseg((uint)&tss, sizeof(tss) - 1, ACC_TSS32, 0);

    gdt_base_addr = (uint)gdt;
    load_gdt(gdt, sizeof(gdt));
    load_kernel_segments();
    load_tr(TSS_SEL);
}

/* Called (through set_kernel_stack in priv.h) on every process switch. */
void tss_set_esp0(uint esp0)
{
    tss.esp0 = esp0;
}
