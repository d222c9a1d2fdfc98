/* nano.rdtsc: one rdtsc in user mode per iteration. The values depend on the
 * platform's clock, so only their monotonicity is checked and nothing time-dependent
 * is printed. After Adams & Agesen (ASPLOS 2006), Sec. 6 (rdtsc trap/callout/in-TC). */
#include "ulib.h"

static inline void rdtsc(unsigned *lo, unsigned *hi)
{
    __asm__ __volatile__("rdtsc" : "=a"(*lo), "=d"(*hi));
}

int main(int scale)
{
    int i, backwards = 0;
    unsigned lo, hi, plo, phi;

    if (scale <= 0)
        scale = 1;
    rdtsc(&plo, &phi);
    roi_begin();
    for (i = 0; i < scale; i++) {
        rdtsc(&lo, &hi);
        if (hi < phi || (hi == phi && lo < plo))
            backwards++;
        plo = lo;
        phi = hi;
        iter_mark();
    }
    roi_end();
    printf("rdtsc: %d reads, monotonic: %s\n", scale, backwards ? "no" : "yes");
    return backwards != 0;
}
