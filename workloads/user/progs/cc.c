/* cc: the "compiler" that macro.build execs once per source file (arg = file
 * index). It reads its source sector from the disk, tokenises it into a symbol
 * table in freshly mapped memory, sorts the symbols, "generates code" (a hash
 * over them) and writes a one-sector object file back to the disk.
 * workloads/reference.py (build_object) reproduces the object byte for byte. */
#include "ulib.h"

#define SRC_LBA 1024u
#define OBJ_LBA 4096u
#define PAGE 4096u
#define TABSZ 512u
#define OBJ_MAGIC 0x314A424Fu      /* "OBJ1" */
#define MAXSYM 121

static unsigned char src[512];
static unsigned obj[128];
static unsigned uniq[TABSZ];

struct sym { unsigned hash, count; };

static int insert(struct sym *tab, unsigned h)
{
    unsigned idx = h & (TABSZ - 1), n;
    for (n = 0; n < TABSZ; n++) {
        struct sym *s = &tab[(idx + n) & (TABSZ - 1)];
        if (s->count == 0) {
            s->hash = h;
            s->count = 1;
            return 1;               /* a new symbol */
        }
        if (s->hash == h) {
            s->count++;
            return 0;
        }
    }
    return -1;                      /* table full */
}

int main(int arg)
{
    unsigned i = (unsigned)arg, k, c, h = 0, crc, x, maxcount = 0;
    int intok = 0, ntok = 0, nuniq = 0, p, q;
    struct sym *tab;

    if (disk_read(SRC_LBA + i, src, 1) < 0)
        return 2;
    crc = 0xFFFFFFFFu;
    crc = crc32_update(crc, src, 512);
    crc ^= 0xFFFFFFFFu;

    tab = (struct sym *)mmap(0, 2 * PAGE);          /* the symbol table */
    if ((unsigned)tab == 0 || (unsigned)tab >= 0xFFFFF000u)
        return 3;
    for (k = 0; k <= 512; k++) {
        c = k < 512 ? src[k] : ' ';
        if (c >= 'a' && c <= 'z') {
            if (!intok) {
                intok = 1;
                h = 2166136261u;
            }
            h = (h ^ c) * 16777619u;
        } else if (intok) {
            if (insert(tab, h) < 0)
                return 4;
            ntok++;
            intok = 0;
        }
    }
    for (k = 0; k < TABSZ; k++)
        if (tab[k].count) {
            uniq[nuniq++] = tab[k].hash;
            if (tab[k].count > maxcount)
                maxcount = tab[k].count;
        }
    for (p = 1; p < nuniq; p++) {                   /* insertion sort */
        unsigned v = uniq[p];
        for (q = p - 1; q >= 0 && uniq[q] > v; q--)
            uniq[q + 1] = uniq[q];
        uniq[q + 1] = v;
    }
    x = crc;                                        /* "code generation" */
    for (k = 0; k < 32; k++)
        for (p = 0; p < nuniq; p++)
            x = (x ^ uniq[p] ^ k) * 16777619u;

    memset(obj, 0, sizeof obj);
    obj[0] = OBJ_MAGIC;
    obj[1] = i;
    obj[2] = (unsigned)ntok;
    obj[3] = (unsigned)nuniq;
    obj[4] = crc;
    for (p = 0; p < nuniq && p < MAXSYM; p++)
        obj[5 + p] = uniq[p];
    obj[126] = maxcount;
    obj[127] = x;
    if (disk_write(OBJ_LBA + i, obj, 1) < 0)
        return 5;
    if (munmap(tab, 2 * PAGE) < 0)
        return 6;
    return 0;
}
