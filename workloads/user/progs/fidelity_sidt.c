/* fidelity.sidt: sidt, sgdt and str are unprivileged and never trap, so they show
 * where the descriptor tables really are -- the "Red Pill" VMM detector
 * (Rutkowska 2004; Robin & Irvine 2000). Reported from the kernel (compared with
 * what the kernel itself loaded) and from user mode. The raw bases are
 * deterministic for one image; under a VMM that keeps its own tables in the
 * hardware registers they differ from the native run. */
#include "ulib.h"

struct __attribute__((packed)) dtr { unsigned short limit; unsigned base; };

static const char *where(unsigned base)
{
    if (base >= 0xFC000000u)
        return "VMM area";
    if (base >= 0xC0000000u)
        return "guest kernel";
    return "low memory";
}

static const char *yn(int c) { return c ? "yes" : "no"; }

int main(int scale)
{
    int i, changed = 0;
    unsigned kidt, kgdt, ktr, eidt, egdt, etr, utr = 0;
    struct dtr uidt, ugdt;

    if (scale <= 0)
        scale = 1;
    eidt = (unsigned)kprobe(KP_IDT_EXPECT);
    egdt = (unsigned)kprobe(KP_GDT_EXPECT);
    etr = (unsigned)kprobe(KP_TR_EXPECT);
    kidt = (unsigned)kprobe(KP_SIDT);
    kgdt = (unsigned)kprobe(KP_SGDT);
    ktr = (unsigned)kprobe(KP_STR);
    roi_begin();
    for (i = 0; i < scale; i++) {
        if ((unsigned)kprobe(KP_SIDT) != kidt || (unsigned)kprobe(KP_SGDT) != kgdt)
            changed++;
        iter_mark();
    }
    roi_end();
    __asm__ __volatile__("sidt %0" : "=m"(uidt));
    __asm__ __volatile__("sgdt %0" : "=m"(ugdt));
    __asm__ __volatile__("str %w0" : "+r"(utr));
    printf("sidt: kernel IDT base 0x%08x (%s), kernel loaded 0x%08x: match %s\n",
           kidt, where(kidt), eidt, yn(kidt == eidt));
    printf("sgdt: kernel GDT base 0x%08x (%s), kernel loaded 0x%08x: match %s\n",
           kgdt, where(kgdt), egdt, yn(kgdt == egdt));
    printf("str: kernel TR 0x%x, kernel loaded 0x%x: match %s\n", ktr & 0xFFFF, etr, yn(ktr == etr));
    printf("sidt: user IDT base 0x%08x limit 0x%x (%s)\n", uidt.base, uidt.limit, where(uidt.base));
    printf("sgdt: user GDT base 0x%08x limit 0x%x (%s)\n", ugdt.base, ugdt.limit, where(ugdt.base));
    printf("str: user TR 0x%x\n", utr & 0xFFFF);
    printf("sidt: user mode sees the kernel's tables: %s\n",
           yn(uidt.base == eidt && ugdt.base == egdt && (utr & 0xFFFF) == etr));
    printf("sidt: %d probes, %d inconsistent\n", scale, changed);
    return changed != 0;
}
