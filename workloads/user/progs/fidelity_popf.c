/* fidelity.popf: does popf in the kernel restore IF=0? The kernel probe enables
 * interrupts, pops an EFLAGS image with IF clear and reads IF back. At ring 0 IF
 * becomes 0; in a deprivileged kernel (classic ring compression) popf silently
 * leaves IF set -- the best-known failure of x86 to meet Popek & Goldberg's
 * requirements (Robin & Irvine 2000). The native output is the reference. */
#include "ulib.h"

static unsigned user_popf_if(void)
{
    unsigned f;
    /* in user mode (CPL 3 > IOPL 0) popf never changes IF, on any machine */
    __asm__ __volatile__("pushfl\n\t"
                         "andl $~0x200, (%%esp)\n\t"
                         "popfl\n\t"
                         "pushfl\n\t"
                         "popl %0" : "=r"(f) : : "memory", "cc");
    return (f >> 9) & 1;
}

int main(int scale)
{
    int i, first, changed = 0;
    unsigned u;

    if (scale <= 0)
        scale = 1;
    first = kprobe(KP_POPF);
    roi_begin();
    for (i = 0; i < scale; i++) {
        if (kprobe(KP_POPF) != first)
            changed++;
        iter_mark();
    }
    roi_end();
    u = user_popf_if();
    printf("popf: kernel IF after popf(IF=0) = %d (%s)\n", first,
           first == 0 ? "popf honoured" : first == 1 ? "popf IF change silently ignored" : "probe error");
    printf("popf: user IF after popf(IF=0) = %u (user popf cannot change IF)\n", u);
    printf("popf: %d probes, %d inconsistent\n", scale, changed);
    return !(changed == 0 && first >= 0);
}
