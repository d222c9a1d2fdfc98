/* fidelity.pushcs: the low two bits of CS are the current privilege level, and
 * push cs / mov r, cs read them without trapping. A kernel deprivileged to ring 1
 * (ring compression) sees RPL 1 instead of 0 (Robin & Irvine 2000).
 * The native output is the reference. */
#include "ulib.h"

int main(int scale)
{
    int i, first, changed = 0;
    unsigned cs;

    if (scale <= 0)
        scale = 1;
    first = kprobe(KP_PUSHCS);
    roi_begin();
    for (i = 0; i < scale; i++) {
        if (kprobe(KP_PUSHCS) != first)
            changed++;
        iter_mark();
    }
    roi_end();
    __asm__ __volatile__("movl %%cs, %0" : "=r"(cs));
    printf("pushcs: kernel CS RPL = %d (%s)\n", first,
           first == 0 ? "ring 0" : first > 0 ? "deprivileged" : "probe error");
    printf("pushcs: user CS = 0x%x, RPL = %u\n", cs & 0xFFFF, cs & 3);
    printf("pushcs: %d probes, %d inconsistent\n", scale, changed);
    return !(changed == 0 && first >= 0);
}
