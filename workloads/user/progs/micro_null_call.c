/* micro.null_call: lmbench "null call" (lat_syscall null), as in the Xen paper's
 * Table 3: one getpid system call per iteration. */
#include "ulib.h"

int main(int scale)
{
    int i, pid, bad = 0;
    unsigned sum = 0;

    if (scale <= 0)
        scale = 1;
    pid = getpid();
    roi_begin();
    for (i = 0; i < scale; i++) {
        int p = getpid();
        sum += (unsigned)p;
        if (p != pid)
            bad++;
        iter_mark();
    }
    roi_end();
    printf("null_call: %d calls, pid %d, %d mismatches\n", scale, pid, bad);
    return !(bad == 0 && sum == (unsigned)pid * (unsigned)scale);
}
