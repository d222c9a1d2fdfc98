/* string.c -- the few C library string functions the kernel needs. */
#include "defs.h"

/* Page-sized clears and copies are frequent (new pages, copy-on-write), so
 * aligned ones use the string instructions, 4 bytes at a time: one
 * instruction instead of a loop, which matters on an emulated CPU. */
void *memset(void *d, int c, uint n)
{
    if ((((uint)d | n) & 3) == 0) {
        uint v = (uchar)c * 0x01010101u;
        uint cnt = n / 4;
        void *dp = d;
        __asm__ volatile("cld; rep stosl" : "+D"(dp), "+c"(cnt) : "a"(v) : "memory", "cc");
        return d;
    }
    uchar *p = d;
    while (n--)
        *p++ = (uchar)c;
    return d;
}

void *memcpy(void *d, const void *s, uint n)
{
    return memmove(d, s, n);
}

void *memmove(void *d, const void *s, uint n)
{
    uchar *dp = d;
    const uchar *sp = s;
    if (sp < dp && sp + n > dp) {
        while (n--)
            dp[n] = sp[n];
    } else if ((((uint)dp | (uint)sp | n) & 3) == 0) {
        uint cnt = n / 4;
        __asm__ volatile("cld; rep movsl" : "+D"(dp), "+S"(sp), "+c"(cnt) :: "memory", "cc");
    } else {
        while (n--)
            *dp++ = *sp++;
    }
    return d;
}

int memcmp(const void *a, const void *b, uint n)
{
    const uchar *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p - *q;
    return 0;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (uchar)*a - (uchar)*b;
}

int strncmp(const char *a, const char *b, uint n)
{
    while (n && *a && *a == *b)
        n--, a++, b++;
    return n ? (uchar)*a - (uchar)*b : 0;
}

uint strlen(const char *s)
{
    uint n = 0;
    while (s[n])
        n++;
    return n;
}

/* Copy at most n-1 characters and always terminate. */
void safestrcpy(char *d, const char *s, uint n)
{
    if (n == 0)
        return;
    while (--n && *s)
        *d++ = *s++;
    *d = 0;
}
