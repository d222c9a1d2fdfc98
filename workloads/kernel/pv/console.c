/*
 * console.c -- the console of a paravirtual kernel: the hypervisor's.
 *
 * There is no UART to poll.  console_io(CONSOLEIO_write) hands the
 * hypervisor a buffer of ours, which it writes to the console: one
 * hypercall for a whole string instead of two port accesses per byte.
 * (A Xen domU would normally use a console ring shared with another
 * domain; a domain without one writes here.)
 */
#include "defs.h"
#include "priv.h"

#define CONSOLEIO_MAX 4096          /* the most one call takes */

void console_init(void)
{
}

void console_write(const char *s, int n)
{
    while (n > 0) {
        int chunk = n > CONSOLEIO_MAX ? CONSOLEIO_MAX : n;
        HYPERVISOR_console_io(CONSOLEIO_write, chunk, s);
        s += chunk;
        n -= chunk;
    }
}

void console_putc(int c)
{
    char ch = (char)c;
    HYPERVISOR_console_io(CONSOLEIO_write, 1, &ch);
}
