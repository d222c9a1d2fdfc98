/* macro.compute: compute-bound integer kernels in the spirit of SPECint (the
 * Xen paper's Fig. 3, Adams & Agesen's Fig. 3): per iteration a heap sort, a CRC-32
 * hash, a sieve of Eratosthenes and a matrix multiply on pseudo-random data. Pure
 * user-mode work: a VMM should cost almost nothing here. The checksums are
 * reproduced by workloads/reference.py (compute_reference). */
#include "ulib.h"

#define NSORT 1000
#define NCRC 4096
#define SIEVE_MAX 28000
#define NMAT 20

static unsigned seed;
static unsigned rnd(void)
{
    seed = seed * 1664525u + 1013904223u;
    return seed;
}

static unsigned sortbuf[NSORT];
static unsigned char crcbuf[NCRC];
static unsigned char composite[SIEVE_MAX];
static unsigned ma[NMAT][NMAT], mb[NMAT][NMAT];

static void sift(unsigned *a, int start, int end)
{
    int root = start;
    while (2 * root + 1 <= end) {
        int child = 2 * root + 1;
        if (child + 1 <= end && a[child] < a[child + 1])
            child++;
        if (a[root] < a[child]) {
            unsigned t = a[root]; a[root] = a[child]; a[child] = t;
            root = child;
        } else
            return;
    }
}

static void heapsort(unsigned *a, int n)
{
    int start, end;
    for (start = (n - 2) / 2; start >= 0; start--)
        sift(a, start, n - 1);
    for (end = n - 1; end > 0; end--) {
        unsigned t = a[0]; a[0] = a[end]; a[end] = t;
        sift(a, 0, end - 1);
    }
}

/* returns sum a[k]*(k+1); sets *bad if the result is not sorted */
static unsigned k_sort(int *bad)
{
    int k;
    unsigned cs = 0;
    for (k = 0; k < NSORT; k++)
        sortbuf[k] = rnd();
    heapsort(sortbuf, NSORT);
    for (k = 0; k < NSORT; k++) {
        if (k && sortbuf[k - 1] > sortbuf[k])
            (*bad)++;
        cs += sortbuf[k] * (unsigned)(k + 1);
    }
    return cs;
}

static unsigned k_crc(void)
{
    int k;
    unsigned c = 0xFFFFFFFFu;
    for (k = 0; k < NCRC; k++)
        crcbuf[k] = (unsigned char)(rnd() >> 24);
    c = crc32_update(c, crcbuf, NCRC);
    return c ^ 0xFFFFFFFFu;
}

static unsigned k_sieve(unsigned limit, unsigned *sum)
{
    unsigned i, j, count = 0, s = 0;
    memset(composite, 0, limit);
    for (i = 2; i < limit; i++) {
        if (composite[i])
            continue;
        count++;
        s += i;
        for (j = i * i; j < limit; j += i)
            composite[j] = 1;
    }
    *sum = s;
    return count;
}

static unsigned k_matmul(void)
{
    int r, c, k;
    unsigned cs = 0;
    for (r = 0; r < NMAT; r++)
        for (c = 0; c < NMAT; c++)
            ma[r][c] = rnd() & 0xFFFF;
    for (r = 0; r < NMAT; r++)
        for (c = 0; c < NMAT; c++)
            mb[r][c] = rnd() & 0xFFFF;
    for (r = 0; r < NMAT; r++)
        for (c = 0; c < NMAT; c++) {
            unsigned acc = 0;
            for (k = 0; k < NMAT; k++)
                acc += ma[r][k] * mb[k][c];
            cs += acc * (unsigned)(r * NMAT + c + 1);
        }
    return cs;
}

int main(int scale)
{
    int i, bad = 0;
    unsigned t_sort = 0, t_crc = 0, t_primes = 0, t_psum = 0, t_mat = 0;

    if (scale <= 0)
        scale = 1;
    roi_begin();
    for (i = 0; i < scale; i++) {
        unsigned psum;
        seed = 0x12345678u ^ ((unsigned)i * 0x9E3779B9u);
        t_sort += k_sort(&bad);
        t_crc ^= k_crc();
        t_primes += k_sieve(20000u + (unsigned)(i % 8) * 1000u, &psum);
        t_psum += psum;
        t_mat += k_matmul();
        iter_mark();
    }
    roi_end();
    printf("compute: %d iterations\n", scale);
    printf("sort: 0x%08x\n", t_sort);
    printf("crc32: 0x%08x\n", t_crc);
    printf("sieve: %u primes, sum 0x%08x\n", t_primes, t_psum);
    printf("matmul: 0x%08x\n", t_mat);
    printf("compute: %s\n", bad ? "FAILED" : "ok");
    return bad != 0;
}
