/* macro.build: a build-like mix of process creation, memory, disk I/O and
 * compute, in the spirit of the kernel-compile benchmarks (Adams & Agesen 2006
 * 'compile', the Xen paper's Fig. 3 'Linux build'). One iteration compiles one
 * source file:
 *   checkout: write the file's pseudo-random source sector to the disk,
 *   compile:  fork + exec "cc" (reads the source, builds a symbol table in mapped
 *             memory, sorts it, writes a one-sector object), wait;
 * then a link pass reads every object back, checks it and checksums them.
 * workloads/reference.py (build_reference) reproduces the printed results. */
#include "ulib.h"

#define SRC_LBA 1024u
#define OBJ_LBA 4096u
#define MAXFILES 3000
#define OBJ_MAGIC 0x314A424Fu

static unsigned char src[512];
static unsigned obj[128];
static unsigned seed;

static unsigned rnd(void)
{
    seed = seed * 1664525u + 1013904223u;
    return seed;
}

int main(int scale)
{
    int i, bad = 0;
    unsigned k, crc, tokens = 0, symbols = 0, codesum = 0;

    if (scale <= 0)
        scale = 1;
    if (scale > MAXFILES)
        scale = MAXFILES;
    seed = 0xB111D000u;
    roi_begin();
    for (i = 0; i < scale; i++) {
        int st = -1, w, pid;
        for (k = 0; k < 512; k++) {
            unsigned c = (rnd() >> 24) & 7;
            src[k] = (unsigned char)(c < 2 ? ' ' : 'a' + c - 2);
        }
        if (disk_write(SRC_LBA + (unsigned)i, src, 1) < 0) {
            roi_end();
            printf("build: disk_write of source %d failed\n", i);
            return 1;
        }
        pid = fork();
        if (pid < 0) {
            roi_end();
            printf("build: fork failed at %d\n", i);
            return 1;
        }
        if (pid == 0) {
            exec("cc", i);
            exit(99);
        }
        w = wait(&st);
        if (w != pid || st != 0) {
            printf("build: cc %d exited with %d\n", i, st);
            bad++;
        }
        iter_mark();
    }
    /* link */
    crc = 0xFFFFFFFFu;
    for (i = 0; i < scale; i++) {
        const unsigned char *b = (const unsigned char *)obj;
        if (disk_read(OBJ_LBA + (unsigned)i, obj, 1) < 0 ||
            obj[0] != OBJ_MAGIC || obj[1] != (unsigned)i) {
            bad++;
            continue;
        }
        tokens += obj[2];
        symbols += obj[3];
        codesum += obj[127];
        crc = crc32_update(crc, b, 512);
    }
    roi_end();
    crc ^= 0xFFFFFFFFu;
    printf("build: %d files compiled, %d bad\n", scale, bad);
    printf("build: %u tokens, %u symbols, code 0x%08x, link crc32 0x%08x\n",
           tokens, symbols, codesum, crc);
    return bad != 0;
}
