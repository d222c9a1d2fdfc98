/* micro.pagefault: copy-on-write page faults, after lmbench lat_pagefault as in
 * the Xen paper's Table 5 ("page fault"). The parent fills a region; per round a
 * forked child writes to every page of it (one COW fault each, one iteration each),
 * checks the old contents, and exits; the parent checks that its own copy is
 * unchanged. */
#include "ulib.h"

#define PAGE 4096u
#define REGION 64u      /* pages per round */

int main(int scale)
{
    volatile unsigned *r;
    unsigned p;
    int done = 0, round = 0, bad = 0;

    if (scale <= 0)
        scale = 1;
    r = (volatile unsigned *)mmap(0, REGION * PAGE);
    if ((unsigned)r == 0 || (unsigned)r >= 0xFFFFF000u) {
        printf("pagefault: mmap failed\n");
        return 1;
    }
    for (p = 0; p < REGION; p++)
        r[p * (PAGE / 4)] = 0x1000u + p;
    roi_begin();
    while (done < scale) {
        int n = scale - done, st = -1, pid, w;
        if (n > (int)REGION)
            n = REGION;
        pid = fork();
        if (pid < 0) {
            roi_end();
            printf("pagefault: fork failed\n");
            return 1;
        }
        if (pid == 0) {
            int errs = 0;
            for (p = 0; p < (unsigned)n; p++) {
                volatile unsigned *w0 = r + p * (PAGE / 4);
                w0[1] = p;                      /* write: a COW fault */
                if (w0[0] != 0x1000u + p)       /* the copy has the old data */
                    errs++;
                w0[0] = 0xdead0000u + p;
                iter_mark();
            }
            exit(errs ? 1 : 0);
        }
        w = wait(&st);
        if (w != pid || st != 0)
            bad++;
        for (p = 0; p < (unsigned)n; p++)       /* the parent's pages are untouched */
            if (r[p * (PAGE / 4)] != 0x1000u + p || r[p * (PAGE / 4) + 1] != 0)
                bad++;
        done += n;
        round++;
    }
    roi_end();
    printf("pagefault: %d COW faults in %d rounds of up to %u pages, %d bad\n",
           scale, round, REGION, bad);
    return bad != 0;
}
