/* true: the tiny program micro.exec and others exec; exits with status 0. */
#include "ulib.h"

int main(int arg)
{
    (void)arg;
    return 0;
}
