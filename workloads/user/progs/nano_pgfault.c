/* nano.pgfault: one demand-zero page fault per iteration: the first write to a
 * fresh page of an anonymous mapping. The region is mapped in chunks so memory
 * use stays bounded; the chunk's munmap/mmap is amortised over CHUNK faults.
 * After Adams & Agesen (ASPLOS 2006), nanobenchmark 'pgfault'. */
#include "ulib.h"

#define PAGE 4096u
#define CHUNK 128u   /* pages per mapping */

int main(int scale)
{
    int done = 0, nonzero = 0;
    unsigned sum = 0;

    if (scale <= 0)
        scale = 1;
    roi_begin();
    while (done < scale) {
        unsigned n = (unsigned)(scale - done), p;
        volatile unsigned *base;
        if (n > CHUNK)
            n = CHUNK;
        base = (volatile unsigned *)mmap(0, n * PAGE);
        if ((unsigned)base == 0 || (unsigned)base >= 0xFFFFF000u) {
            roi_end();
            printf("pgfault: mmap failed (%d)\n", (int)base);
            return 1;
        }
        for (p = 0; p < n; p++) {
            volatile unsigned *pg = base + p * (PAGE / 4);
            pg[p & 1023] = p + 1;           /* first touch, a write: one fault */
            if (pg[(p + 512) & 1023] != 0)  /* the rest of the page is zero */
                nonzero++;
            sum += pg[p & 1023];
            iter_mark();
        }
        if (munmap((void *)base, n * PAGE) < 0) {
            roi_end();
            printf("pgfault: munmap failed\n");
            return 1;
        }
        done += n;
    }
    roi_end();
    printf("pgfault: %d pages faulted, %d not zero, sum %u\n", scale, nonzero, sum);
    return nonzero != 0;
}
