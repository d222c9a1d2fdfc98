/* nano.syscall: one null system call (getpid through int 0x80) per iteration.
 * After Adams & Agesen (ASPLOS 2006), nanobenchmark 'syscall'. */
#include "ulib.h"

int main(int scale)
{
    int i, pid, bad = 0;

    if (scale <= 0)
        scale = 1;
    pid = getpid();
    roi_begin();
    for (i = 0; i < scale; i++) {
        if (getpid() != pid)
            bad++;
        iter_mark();
    }
    roi_end();
    printf("syscall: %d getpid calls, %d mismatches\n", scale, bad);
    return bad != 0;
}
