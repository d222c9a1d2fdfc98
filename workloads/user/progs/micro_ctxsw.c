/* micro.ctxsw: lmbench lat_ctx with 2 processes and no working set, as in the
 * Xen paper's Table 4 ("ctx sw 2p/0K"): parent and child yield to each other;
 * one iteration = one round trip (two context switches). */
#include "ulib.h"

#define NPROC 2

int main(int scale)
{
    int i, k, status, reaped = 0, bad = 0;
    int pids[NPROC];

    if (scale <= 0)
        scale = 1;
    for (k = 1; k < NPROC; k++) {
        pids[k] = fork();
        if (pids[k] < 0) {
            printf("ctxsw: fork failed\n");
            return 1;
        }
        if (pids[k] == 0) {
            /* child: keep yielding until the parent is done (one extra round
             * so the parent always has someone to switch to) */
            for (i = 0; i <= scale; i++)
                yield();
            exit(k);
        }
    }
    roi_begin();
    for (i = 0; i < scale; i++) {
        yield();
        iter_mark();
    }
    for (k = 1; k < NPROC; k++) {
        int pid = wait(&status);
        if (pid < 0)
            break;
        reaped++;
        for (i = 1; i < NPROC; i++)
            if (pids[i] == pid && status != i)
                bad++;
    }
    roi_end();
    printf("ctxsw: %d processes, %d round trips, %d children reaped, %d bad status\n",
           NPROC, scale, reaped, bad);
    return !(reaped == NPROC - 1 && bad == 0);
}
