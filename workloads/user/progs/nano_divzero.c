/* nano.divzero: one divide-by-zero fault (#DE, vector 0) per iteration, delivered
 * to this process's fault handler, which skips the 2-byte `div %ecx`.
 * After Adams & Agesen (ASPLOS 2006), nanobenchmark 'divzero'. */
#include "ulib.h"

static volatile int caught, unexpected;

static void handler(struct fault_frame *f)
{
    const unsigned char *ip = (const unsigned char *)f->eip;

    if (f->vector == 0 && ip[0] == 0xF7 && ip[1] == 0xF1) {
        caught++;
        f->eip += 2;                    /* skip `div %ecx` */
        return;
    }
    unexpected++;
    printf("divzero: unexpected fault vector %d at eip %x\n", (int)f->vector, (unsigned)f->eip);
    exit(3);
}

static inline unsigned divide(unsigned a, unsigned d)
{
    unsigned q;
    __asm__ __volatile__("xorl %%edx, %%edx\n\t"
                         "divl %%ecx"            /* F7 F1 */
                         : "=a"(q) : "a"(a), "c"(d) : "edx", "cc", "memory");
    return q;
}

int main(int scale)
{
    int i, wrong = 0;

    if (scale <= 0)
        scale = 1;
    if (catch_faults(handler) < 0) {
        printf("divzero: catch_faults failed\n");
        return 1;
    }
    if (divide(100, 7) != 14) {          /* sanity: a real division, no fault */
        printf("divzero: 100/7 wrong\n");
        return 1;
    }
    roi_begin();
    for (i = 0; i < scale; i++) {
        /* the faulting div writes nothing: EAX keeps the dividend */
        if (divide((unsigned)i + 1, 0) != (unsigned)i + 1)
            wrong++;
        iter_mark();
    }
    roi_end();
    printf("divzero: %d iterations, %d faults caught, %d wrong results\n", scale, caught, wrong);
    return !(caught == scale && wrong == 0 && unexpected == 0);
}
