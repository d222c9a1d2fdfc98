/* micro.exec: lmbench lat_proc exec, as in the Xen paper's Table 3 ("exec proc"):
 * per iteration fork, the child execs the tiny program "true", the parent waits. */
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
            printf("exec: fork failed at %d (%d)\n", i, pid);
            return 1;
        }
        if (pid == 0) {
            exec("true", i);
            exit(99);                   /* exec failed */
        }
        w = wait(&st);
        if (w != pid || st != 0)
            bad++;
        iter_mark();
    }
    roi_end();
    printf("exec: %d fork/exec/wait, %d bad\n", scale, bad);
    return bad != 0;
}
