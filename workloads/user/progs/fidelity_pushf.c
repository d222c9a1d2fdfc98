/* fidelity.pushf: after cli, does pushf in the kernel show IF=0? A deprivileged
 * kernel whose cli is virtualized (trapped and emulated) still runs with the real
 * IF set, and pushf -- which never traps -- reveals it (Robin & Irvine 2000).
 * The native output is the reference. */
#include "ulib.h"

static unsigned user_flags(void)
{
    unsigned f;
    __asm__ __volatile__("pushfl; popl %0" : "=r"(f) : : "memory");
    return f;
}

int main(int scale)
{
    int i, first, changed = 0;
    unsigned f;

    if (scale <= 0)
        scale = 1;
    first = kprobe(KP_PUSHF);
    roi_begin();
    for (i = 0; i < scale; i++) {
        if (kprobe(KP_PUSHF) != first)
            changed++;
        iter_mark();
    }
    roi_end();
    f = user_flags();
    printf("pushf: kernel IF seen by pushf after cli = %d (%s)\n", first,
           first == 0 ? "matches cli" : first == 1 ? "real IF leaks through" : "probe error");
    printf("pushf: user pushf IF = %u, IOPL = %u\n", (f >> 9) & 1, (f >> 12) & 3);
    printf("pushf: %d probes, %d inconsistent\n", scale, changed);
    return !(changed == 0 && first >= 0);
}
