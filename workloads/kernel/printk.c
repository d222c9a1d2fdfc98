/*
 * printk.c -- formatted output for the kernel's own (rare) messages.
 * The kernel prints nothing during a normal run: only fatal errors.
 * Supports %d %u %x %p %s %c %% with an optional zero flag and width.
 */
#include <stdarg.h>
#include "defs.h"
#include "priv.h"

static void putnum(uint v, int base, int neg, int width, int zero)
{
    char buf[16];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (neg)
        buf[n++] = '-';
    for (int pad = width - n; pad > 0; pad--)
        console_putc(zero ? '0' : ' ');
    while (n)
        console_putc(buf[--n]);
}

static void vprintk(const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            console_putc(*fmt);
            continue;
        }
        int zero = 0, width = 0;
        fmt++;
        if (*fmt == '0')
            zero = 1, fmt++;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        switch (*fmt) {
        case 'd': {
            int v = va_arg(ap, int);
            putnum(v < 0 ? -(uint)v : (uint)v, 10, v < 0, width, zero);
            break;
        }
        case 'u': putnum(va_arg(ap, uint), 10, 0, width, zero); break;
        case 'x': putnum(va_arg(ap, uint), 16, 0, width, zero); break;
        case 'p': console_putc('0'); console_putc('x');
                  putnum(va_arg(ap, uint), 16, 0, 8, 1); break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            console_write(s ? s : "(null)", strlen(s ? s : "(null)"));
            break;
        }
        case 'c': console_putc(va_arg(ap, int)); break;
        case '%': console_putc('%'); break;
        case 0: return;
        default: console_putc('%'); console_putc(*fmt); break;
        }
    }
}

void printk(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintk(fmt, ap);
    va_end(ap);
}

/* Something is wrong with the kernel itself: say so, end the run with a
 * failure status (255) and stop. */
void panic(const char *fmt, ...)
{
    va_list ap;
    irq_disable();
    printk("kernel panic: ");
    va_start(ap, fmt);
    vprintk(fmt, ap);
    va_end(ap);
    printk("\n");
    platform_exit(255);
}
