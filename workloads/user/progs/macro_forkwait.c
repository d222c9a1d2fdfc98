/* macro.forkwait: process creation from a non-trivial address space, after the
 * 'forkwait' test of Adams & Agesen (ASPLOS 2006) (40,000 fork/wait pairs) and
 * VMware's process-creation measurements. The parent owns a 32-page heap; per
 * iteration it forks, the child reads one heap page and writes another (one
 * copy-on-write fault), exits with a status derived from what it read, and the
 * parent waits and checks that status. */
#include "ulib.h"

#define PAGE 4096u
#define HEAP 32u

int main(int scale)
{
    volatile unsigned *heap;
    unsigned p;
    int i, bad = 0;

    if (scale <= 0)
        scale = 1;
    heap = (volatile unsigned *)mmap(0, HEAP * PAGE);
    if ((unsigned)heap == 0 || (unsigned)heap >= 0xFFFFF000u) {
        printf("forkwait: mmap failed\n");
        return 1;
    }
    for (p = 0; p < HEAP; p++)
        heap[p * (PAGE / 4)] = p * 3u + 1u;
    roi_begin();
    for (i = 0; i < scale; i++) {
        int st = -1, w, pid = fork();
        if (pid < 0) {
            roi_end();
            printf("forkwait: fork failed at %d (%d)\n", i, pid);
            return 1;
        }
        if (pid == 0) {
            unsigned rp = (unsigned)i % HEAP, wp = ((unsigned)i + 7u) % HEAP;
            unsigned v = heap[rp * (PAGE / 4)];
            heap[wp * (PAGE / 4) + 1] = v;      /* a COW fault */
            exit((int)(v & 0x7f));
        }
        w = wait(&st);
        if (w != pid || st != (int)((((unsigned)i % HEAP) * 3u + 1u) & 0x7f))
            bad++;
        iter_mark();
    }
    roi_end();
    for (p = 0; p < HEAP; p++)                  /* the parent's heap is untouched */
        if (heap[p * (PAGE / 4)] != p * 3u + 1u || heap[p * (PAGE / 4) + 1] != 0)
            bad++;
    printf("forkwait: %d fork/wait pairs, %d bad\n", scale, bad);
    return bad != 0;
}
