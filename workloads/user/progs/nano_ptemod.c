/* nano.ptemod: one page-table entry modification per iteration, executed in the kernel.
 * After Adams & Agesen (ASPLOS 2006) nanobenchmarks. The loop runs inside the
 * kernel (kbench), which marks one iteration per operation itself. */
#include "ulib.h"

int main(int scale)
{
    int r;

    if (scale <= 0)
        scale = 1;
    roi_begin();
    r = kbench(KB_PTEMOD, scale);
    roi_end();
    if (r < 0) {
        printf("ptemod: kbench failed (%d)\n", r);
        return 1;
    }
    printf("ptemod: %d iterations\n", scale);
    return 0;
}
