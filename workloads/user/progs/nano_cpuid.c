/* nano.cpuid: one cpuid (leaf 0) in user mode per iteration; prints the vendor
 * string the (virtual) CPU reports. cpuid exits unconditionally under VT-x.
 * In the style of Adams & Agesen's (ASPLOS 2006) nanobenchmarks. */
#include "ulib.h"

static inline void cpuid(unsigned leaf, unsigned r[4])
{
    __asm__ __volatile__("cpuid"
                         : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
                         : "a"(leaf), "c"(0));
}

int main(int scale)
{
    int i, changed = 0;
    unsigned first[4], r[4];
    char vendor[13];

    if (scale <= 0)
        scale = 1;
    cpuid(0, first);
    roi_begin();
    for (i = 0; i < scale; i++) {
        cpuid(0, r);
        if (r[0] != first[0] || r[1] != first[1] || r[2] != first[2] || r[3] != first[3])
            changed++;
        iter_mark();
    }
    roi_end();
    memcpy(vendor, &first[1], 4);      /* EBX, EDX, ECX */
    memcpy(vendor + 4, &first[3], 4);
    memcpy(vendor + 8, &first[2], 4);
    vendor[12] = 0;
    printf("cpuid: %d calls, max leaf %u, vendor \"%s\", %d changed\n",
           scale, first[0], vendor, changed);
    return changed != 0;
}
