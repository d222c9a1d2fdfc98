/* ulib.c -- system-call wrappers, printf and string functions for user programs. */
#include <stdarg.h>
#include "ulib.h"

/* One system call: number in EAX, arguments in EBX, ECX, EDX, ESI, EDI. */
static inline int sys3(int nr, uint a, uint b, uint c)
{
    int r;
    __asm__ volatile("int $0x80"
                     : "=a"(r)
                     : "a"(nr), "b"(a), "c"(b), "d"(c)
                     : "memory", "cc");
    return r;
}

void exit(int status)
{
    sys3(1, (uint)status, 0, 0);
    for (;;)
        ;
}
int fork(void)                                  { return sys3(2, 0, 0, 0); }
int exec(const char *name, int arg)             { return sys3(3, (uint)name, (uint)arg, 0); }
int wait(int *status)                           { return sys3(4, (uint)status, 0, 0); }
int yield(void)                                 { return sys3(5, 0, 0, 0); }
int getpid(void)                                { return sys3(6, 0, 0, 0); }
int write(int fd, const void *buf, int n)       { return sys3(7, (uint)fd, (uint)buf, (uint)n); }
int read(int fd, void *buf, int n)              { return sys3(8, (uint)fd, (uint)buf, (uint)n); }
int munmap(void *addr, unsigned len)            { return sys3(10, (uint)addr, len, 0); }
int disk_read(unsigned lba, void *buf, unsigned n)        { return sys3(11, lba, (uint)buf, n); }
int disk_write(unsigned lba, const void *buf, unsigned n) { return sys3(12, lba, (uint)buf, n); }
int kbench(int op, int n)                       { return sys3(13, (uint)op, (uint)n, 0); }
int kprobe(int what)                            { return sys3(14, (uint)what, 0, 0); }
int uptime(void)                                { return sys3(15, 0, 0, 0); }
int fault_return(struct fault_frame *f)         { return sys3(17, (uint)f, 0, 0); }
int mprotect(void *addr, unsigned len, int w)   { return sys3(18, (uint)addr, len, (uint)w); }

void *mmap(void *addr, unsigned len)
{
    int r = sys3(9, (uint)addr, len, 0);
    return (r < 0 && r > -4096) ? MAP_FAILED : (void *)r;
}

/* ---- faults: the kernel enters fault_trampoline(frame) on the user stack ---- */
static void (*fault_handler)(struct fault_frame *);

static void fault_trampoline(struct fault_frame *f)
{
    fault_handler(f);
    fault_return(f);        /* resumes at f->eip; does not come back */
    exit(255);
}

int catch_faults(void (*handler)(struct fault_frame *f))
{
    fault_handler = handler;
    return sys3(16, handler ? (uint)fault_trampoline : 0, 0, 0);
}

/* ---- strings ---- */
void *memset(void *d, int c, unsigned n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned n)
{
    unsigned char *dp = d;
    const unsigned char *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

unsigned strlen(const char *s)
{
    unsigned n = 0;
    while (s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (unsigned char)*a - (unsigned char)*b;
}

/* ---- printf: formats into a buffer, one write() per call (or per 256 bytes) ---- */
struct outbuf { char buf[256]; int n; };

static void put(struct outbuf *o, char c)
{
    if (o->n == (int)sizeof(o->buf)) {
        write(1, o->buf, o->n);
        o->n = 0;
    }
    o->buf[o->n++] = c;
}

static void putnum(struct outbuf *o, unsigned v, unsigned base, int neg, int width, int zero, int left)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    int len = n + neg;
    if (neg && zero)
        put(o, '-');
    if (!left)
        for (int pad = width - len; pad > 0; pad--)
            put(o, zero ? '0' : ' ');
    if (neg && !zero)
        put(o, '-');
    while (n)
        put(o, tmp[--n]);
    if (left)
        for (int pad = width - len; pad > 0; pad--)
            put(o, ' ');
}

void printf(const char *fmt, ...)
{
    struct outbuf o;
    va_list ap;
    o.n = 0;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        int zero = 0, left = 0, width = 0;
        fmt++;
        for (;; fmt++) {
            if (*fmt == '0') zero = 1;
            else if (*fmt == '-') left = 1;
            else break;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        if (*fmt == 'l')            /* %ld, %lu, %lx: long is int here */
            fmt++;
        if (left)
            zero = 0;
        switch (*fmt) {
        case 'd': case 'i': {
            int v = va_arg(ap, int);
            putnum(&o, v < 0 ? -(unsigned)v : (unsigned)v, 10, v < 0, width, zero, left);
            break;
        }
        case 'u': putnum(&o, va_arg(ap, unsigned), 10, 0, width, zero, left); break;
        case 'x': putnum(&o, va_arg(ap, unsigned), 16, 0, width, zero, left); break;
        case 'p': put(&o, '0'); put(&o, 'x');
                  putnum(&o, va_arg(ap, unsigned), 16, 0, 8, 1, 0); break;
        case 'c': put(&o, (char)va_arg(ap, int)); break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int len = (int)strlen(s);
            if (!left)
                for (int pad = width - len; pad > 0; pad--)
                    put(&o, ' ');
            while (*s)
                put(&o, *s++);
            if (left)
                for (int pad = width - len; pad > 0; pad--)
                    put(&o, ' ');
            break;
        }
        case '%': put(&o, '%'); break;
        case 0: fmt--; break;
        default: put(&o, '%'); put(&o, *fmt); break;
        }
    }
    va_end(ap);
    if (o.n)
        write(1, o.buf, o.n);
}

static unsigned crc_table[256];

unsigned crc32_update(unsigned crc, const void *buf, unsigned n)
{
    const unsigned char *p = buf;
    unsigned k;

    if (!crc_table[1]) {
        for (k = 0; k < 256; k++) {
            unsigned v = k;
            int b;
            for (b = 0; b < 8; b++)
                v = (v & 1) ? 0xEDB88320u ^ (v >> 1) : v >> 1;
            crc_table[k] = v;
        }
    }
    for (k = 0; k < n; k++)
        crc = crc_table[(crc ^ p[k]) & 0xFF] ^ (crc >> 8);
    return crc;
}

int kbench_main(const char *name, int op, int scale)
{
    int r;

    if (scale <= 0)
        scale = 1;
    roi_begin();
    r = kbench(op, scale);
    roi_end();
    if (r < 0) {
        printf("%s: kbench failed (%d)\n", name, r);
        return 1;
    }
    printf("%s: %d iterations\n", name, scale);
    return 0;
}
