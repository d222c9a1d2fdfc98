/* micro.fork: lmbench lat_proc fork, as in the Xen paper's Table 3 ("fork proc"):
 * per iteration fork, the child exits at once, the parent waits for it. */
#include "ulib.h"

int main(int scale)
{
    int i, bad = 0;

    if (scale <= 0)
        scale = 1;
    roi_begin();
    for (i = 0; i < scale; i++) {
        int st = -1, w, pid = fork();
        if (pid < 0) {
            roi_end();
            printf("fork: fork failed at %d (%d)\n", i, pid);
            return 1;
        }
        if (pid == 0)
            exit(i & 0x7f);
        w = wait(&st);
        if (w != pid || st != (i & 0x7f))
            bad++;
        iter_mark();
    }
    roi_end();
    printf("fork: %d fork/exit/wait, %d bad\n", scale, bad);
    return bad != 0;
}
