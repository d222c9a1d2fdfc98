/* micro.null_io: lmbench "null I/O" (lat_syscall read + write), as in the Xen
 * paper's Table 3: per iteration read 1 byte from and write 1 byte to the null
 * device (fd 0). */
#include "ulib.h"

int main(int scale)
{
    int i, rbad = 0, wfirst, wbad = 0;
    char c = 'x';

    if (scale <= 0)
        scale = 1;
    wfirst = write(0, &c, 1);           /* whatever the null device says, it must say it always */
    roi_begin();
    for (i = 0; i < scale; i++) {
        if (read(0, &c, 1) != 0)        /* the null device returns 0 bytes */
            rbad++;
        if (write(0, &c, 1) != wfirst)
            wbad++;
        iter_mark();
    }
    roi_end();
    printf("null_io: %d read+write pairs, read errors %d, write result %d, write changes %d\n",
           scale, rbad, wfirst, wbad);
    return rbad != 0 || wbad != 0;
}
