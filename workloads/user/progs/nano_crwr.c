/* nano.crwr: one control-register write per iteration, executed in the kernel.
 * After Adams & Agesen (ASPLOS 2006) nanobenchmarks. The loop runs inside the
 * kernel (kbench), which marks one iteration per operation itself. */
#include "ulib.h"

int main(int scale)
{
    int r;

    if (scale <= 0)
        scale = 1;
    roi_begin();
    r = kbench(KB_CRWR, scale);
    roi_end();
    if (r < 0) {
        printf("crwr: kbench failed (%d)\n", r);
        return 1;
    }
    printf("crwr: %d iterations\n", scale);
    return 0;
}
