/* micro.mmap: map/unmap, after lmbench lat_mmap as in the Xen paper's Table 5:
 * per iteration mmap 4 pages, touch each page (demand-zero fault), munmap. */
#include "ulib.h"

#define PAGE 4096u
#define NPAGES 4u

int main(int scale)
{
    int i, bad = 0;
    unsigned p, sum = 0;

    if (scale <= 0)
        scale = 1;
    roi_begin();
    for (i = 0; i < scale; i++) {
        volatile unsigned *m = (volatile unsigned *)mmap(0, NPAGES * PAGE);
        if ((unsigned)m == 0 || (unsigned)m >= 0xFFFFF000u) {
            roi_end();
            printf("mmap: mmap failed at %d\n", i);
            return 1;
        }
        for (p = 0; p < NPAGES; p++) {
            volatile unsigned *w = m + p * (PAGE / 4);
            w[0] = (unsigned)i + p;
            if (w[1] != 0)
                bad++;
            sum += w[0];
        }
        if (munmap((void *)m, NPAGES * PAGE) < 0) {
            roi_end();
            printf("mmap: munmap failed at %d\n", i);
            return 1;
        }
        iter_mark();
    }
    roi_end();
    printf("mmap: %d map/touch/unmap of %u pages, sum %u, %d not zero\n",
           scale, NPAGES, sum, bad);
    return bad != 0;
}
