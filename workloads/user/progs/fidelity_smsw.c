/* fidelity.smsw: smsw reads the low 16 bits of CR0 without being privileged, so a
 * guest sees the real PE/MP/EM/TS/ET/NE bits, not the ones its VMM pretends
 * (Robin & Irvine 2000). Reported from the kernel probe and from user mode.
 * The native output is the reference. */
#include "ulib.h"

static void bits(const char *who, unsigned v)
{
    printf("smsw: %s MSW = 0x%04x (PE=%u MP=%u EM=%u TS=%u ET=%u NE=%u)\n", who, v & 0xFFFF,
           v & 1, (v >> 1) & 1, (v >> 2) & 1, (v >> 3) & 1, (v >> 4) & 1, (v >> 5) & 1);
}

int main(int scale)
{
    int i, first, changed = 0;
    unsigned u = 0, expect;

    if (scale <= 0)
        scale = 1;
    expect = (unsigned)kprobe(KP_CR0_EXPECT);
    first = kprobe(KP_SMSW);
    roi_begin();
    for (i = 0; i < scale; i++) {
        if (kprobe(KP_SMSW) != first)
            changed++;
        iter_mark();
    }
    roi_end();
    __asm__ __volatile__("smsw %w0" : "+r"(u));
    bits("kernel", (unsigned)first);
    bits("user", u);
    printf("smsw: kernel mov from cr0 low bits = 0x%04x: smsw matches %s\n", expect & 0xFFFF,
           (unsigned)first == (expect & 0xFFFF) ? "yes" : "no");
    printf("smsw: %d probes, %d inconsistent\n", scale, changed);
    return !(changed == 0 && first >= 0);
}
