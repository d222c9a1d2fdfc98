/* nano.popf: one pushf/popf pair per iteration, executed in the kernel.
 * After Adams & Agesen (ASPLOS 2006) nanobenchmarks. The loop runs inside the
 * kernel (kbench), which marks one iteration per operation itself. */
#include "ulib.h"

int main(int scale)
{
    int r;

    if (scale <= 0)
        scale = 1;
    roi_begin();
    r = kbench(KB_POPF, scale);
    roi_end();
    if (r < 0) {
        printf("popf: kbench failed (%d)\n", r);
        return 1;
    }
    printf("popf: %d iterations\n", scale);
    return 0;
}
