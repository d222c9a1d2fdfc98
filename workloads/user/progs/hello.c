/* hello -- the smallest program: also what a boot block without a workload name runs. */
#include "../ulib.h"

int main(int scale)
{
    printf("hello from pid %d, scale %d\n", getpid(), scale);
    return 0;
}
