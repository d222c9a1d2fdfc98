/* nano.in: one port read (in) per iteration, executed in the kernel.
 * After Adams & Agesen (ASPLOS 2006) nanobenchmarks. The loop runs inside the
 * kernel (kbench), which marks one iteration per operation itself. */
#include "ulib.h"

int main(int scale)
{
    return kbench_main("in", KB_IN, scale);
}
