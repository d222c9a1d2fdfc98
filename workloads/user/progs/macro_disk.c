/* macro.disk: disk-bound I/O in the spirit of the Xen paper's disk-heavy
 * workloads (Fig. 3): per iteration write a 2-sector block of pseudo-random data,
 * read it back and verify it; at the end read the whole area again and checksum it
 * (CRC-32, reproduced by workloads/reference.py disk_reference). Under the IDE
 * driver every 16-bit data word is a port access. */
#include "ulib.h"

#define BASE_LBA 64u
#define NSECT 2u
#define AREA 256u        /* blocks before the area wraps: 512 sectors */
#define BLOCK (NSECT * 512u)

static unsigned char wbuf[BLOCK], rbuf[BLOCK];
static unsigned seed;

static unsigned rnd(void)
{
    seed = seed * 1664525u + 1013904223u;
    return seed;
}

int main(int scale)
{
    int i, bad = 0, errs = 0;
    unsigned k, crc, nblocks;

    if (scale <= 0)
        scale = 1;
    nblocks = (unsigned)scale < AREA ? (unsigned)scale : AREA;
    seed = 0xD15C0000u;
    roi_begin();
    for (i = 0; i < scale; i++) {
        unsigned lba = BASE_LBA + ((unsigned)i % AREA) * NSECT;
        for (k = 0; k < BLOCK; k += 4) {
            unsigned r = rnd();
            wbuf[k] = (unsigned char)r;
            wbuf[k + 1] = (unsigned char)(r >> 8);
            wbuf[k + 2] = (unsigned char)(r >> 16);
            wbuf[k + 3] = (unsigned char)(r >> 24);
        }
        if (disk_write(lba, wbuf, NSECT) < 0 || disk_read(lba, rbuf, NSECT) < 0)
            errs++;
        for (k = 0; k < BLOCK; k++)
            if (rbuf[k] != wbuf[k]) {
                bad++;
                break;
            }
        iter_mark();
    }
    /* read the area back once more: the final contents */
    crc = 0xFFFFFFFFu;
    for (k = 0; k < nblocks; k++) {
        if (disk_read(BASE_LBA + k * NSECT, rbuf, NSECT) < 0)
            errs++;
        crc = crc32_update(crc, rbuf, BLOCK);
    }
    roi_end();
    crc ^= 0xFFFFFFFFu;
    printf("disk: %d blocks of %u sectors written and read back, %d mismatches, %d errors\n",
           scale, NSECT, bad, errs);
    printf("disk: area crc32 0x%08x over %u blocks\n", crc, nblocks);
    return bad != 0 || errs != 0;
}
