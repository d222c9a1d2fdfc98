/* nano.callret: one call/ret pair per iteration, executed in the kernel.
 * After Adams & Agesen (ASPLOS 2006) nanobenchmarks. The loop runs inside the
 * kernel (kbench), which marks one iteration per operation itself. */
#include "ulib.h"

int main(int scale)
{
    return kbench_main("callret", KB_CALLRET, scale);
}
