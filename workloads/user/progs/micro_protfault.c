/* micro.protfault: protection faults, after lmbench lat_sig prot as in the Xen
 * paper's Table 5 ("prot fault"): per iteration a write to a read-only page raises
 * #PF, the process's fault handler checks it and skips the 2-byte store. */
#include "ulib.h"

#define PAGE 4096u

static volatile int caught, unexpected;
static volatile unsigned page_addr;

static void handler(struct fault_frame *f)
{
    const unsigned char *ip = (const unsigned char *)f->eip;

    /* #PF, write to a present page from user mode (error code P|W|U = 7),
     * at the store `mov %eax, (%ecx)` (89 01) */
    if (f->vector == 14 && (f->error & 7) == 7 &&
        (f->cr2 & ~(PAGE - 1)) == page_addr && ip[0] == 0x89 && ip[1] == 0x01) {
        caught++;
        f->eip += 2;
        return;
    }
    unexpected++;
    printf("protfault: unexpected fault vector %d error %x cr2 %x eip %x\n",
           (int)f->vector, (unsigned)f->error, (unsigned)f->cr2, (unsigned)f->eip);
    exit(3);
}

static inline void store(volatile unsigned *addr, unsigned v)
{
    __asm__ __volatile__("movl %%eax, (%%ecx)"     /* 89 01 */
                         : : "a"(v), "c"(addr) : "memory");
}

int main(int scale)
{
    volatile unsigned *pg;
    int i, wrong = 0;

    if (scale <= 0)
        scale = 1;
    pg = (volatile unsigned *)mmap(0, PAGE);
    if ((unsigned)pg == 0 || (unsigned)pg >= 0xFFFFF000u) {
        printf("protfault: mmap failed\n");
        return 1;
    }
    page_addr = (unsigned)pg;
    store(pg, 0x5a5a5a5au);                     /* present and writable */
    if (mprotect((void *)pg, PAGE, 0) < 0 || catch_faults(handler) < 0) {
        printf("protfault: mprotect/catch_faults failed\n");
        return 1;
    }
    roi_begin();
    for (i = 0; i < scale; i++) {
        store(pg, (unsigned)i);                 /* faults and is skipped */
        if (*pg != 0x5a5a5a5au)
            wrong++;
        iter_mark();
    }
    roi_end();
    printf("protfault: %d iterations, %d faults caught, %d stores got through\n",
           scale, caught, wrong);
    return !(caught == scale && wrong == 0 && unexpected == 0);
}
