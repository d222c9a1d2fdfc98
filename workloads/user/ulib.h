/*
 * ulib.h -- the user library of the virtlab guest: system calls
 * (docs/guest-abi.md), printf, a few string functions, and the platform
 * marks.  Every program is  int main(int scale)  and is linked with
 * crt0.S, which calls exit(main(scale)).
 */
#ifndef ULIB_H
#define ULIB_H

typedef unsigned int uint;

/* ---- system calls (int $0x80; negative = error) ---- */
void exit(int status) __attribute__((noreturn));
int fork(void);
int exec(const char *name, int arg);        /* returns only on error */
int wait(int *status);                      /* pid of a reaped child, <0: no children */
int yield(void);
int getpid(void);
int write(int fd, const void *buf, int n);  /* fd 1 = console */
int read(int fd, void *buf, int n);         /* fd 0 = null device */
void *mmap(void *addr, unsigned len);       /* (void *)-1 on error */
int munmap(void *addr, unsigned len);
int mprotect(void *addr, unsigned len, int writable);
int disk_read(unsigned lba, void *buf, unsigned nsect);          /* sectors read */
int disk_write(unsigned lba, const void *buf, unsigned nsect);   /* sectors written */
int kbench(int op, int n);
int kprobe(int what);
int uptime(void);                           /* timer ticks (100 Hz) since boot */

#define MAP_FAILED ((void *)-1)

/* kbench operations: each runs n times in kernel mode, with an iteration
 * mark (out 0x503) after each. */
#define KB_NOP      0   /* nothing but the mark */
#define KB_IN       1   /* in from a device port (UART line status, 0x3FD) */
#define KB_CRWR     2   /* control-register write (CR0 <- CR0) */
#define KB_CALLRET  3   /* call/ret of a non-inlined function */
#define KB_PTEMOD   4   /* page-table entry store + invlpg of that page */
#define KB_CLI      5   /* cli; sti */
#define KB_POPF     6   /* pushf; popf */

/* kprobe probes: what the CPU says in kernel mode.  On bare hardware
 * (ring 0): POPF 0, PUSHF 0, SIDT == IDT_EXPECT, SGDT == GDT_EXPECT,
 * PUSHCS 0, SMSW == CR0_EXPECT, STR == TR_EXPECT. */
#define KP_POPF        1   /* sti; popf with IF=0; pushf: IF still set? (0/1) */
#define KP_PUSHF       2   /* cli; pushf: IF bit seen (0/1) */
#define KP_SIDT        3   /* sidt: IDT base */
#define KP_SGDT        4   /* sgdt: GDT base */
#define KP_PUSHCS      5   /* push cs: its RPL = the ring the kernel runs in */
#define KP_SMSW        6   /* smsw: low 16 bits of CR0 */
#define KP_IDT_EXPECT  7   /* the IDT base the kernel loaded */
#define KP_GDT_EXPECT  8   /* the GDT base the kernel loaded */
#define KP_CR0_EXPECT  9   /* low 16 bits of CR0 as read by mov from cr0 */
#define KP_STR         10  /* str: the task-register selector */
#define KP_TR_EXPECT   11  /* the selector the kernel loaded with ltr (0x28) */

/* ---- faults ---- */
struct fault_frame {
    unsigned vector;        /* 0 = #DE, 13 = #GP, 14 = #PF, ... */
    unsigned error;         /* the CPU's error code (0 if none) */
    unsigned cr2;           /* faulting address for #PF */
    unsigned eip, esp, eflags;
    unsigned eax, ebx, ecx, edx, esi, edi, ebp;
};
/* From now on the process's own faults go to handler instead of killing
 * it.  When handler returns, the process continues from the frame, so
 * the handler may edit it (e.g. f->eip += length of the faulting insn).
 * handler 0 turns it off. */
int catch_faults(void (*handler)(struct fault_frame *f));
int fault_return(struct fault_frame *f);   /* used by the library trampoline */

/* ---- platform marks: direct port writes, allowed by the TSS I/O bitmap ---- */
static inline void platform_out(unsigned short port, unsigned char v)
{
    __asm__ volatile("outb %0,%1" :: "a"(v), "d"(port));
}
static inline void roi_begin(void) { platform_out(0x501, 0); }
static inline void roi_end(void)   { platform_out(0x502, 0); }
static inline void iter_mark(void) { platform_out(0x503, 0); }

/* ---- formatted output and strings ---- */
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *memset(void *d, int c, unsigned n);
void *memcpy(void *d, const void *s, unsigned n);
unsigned strlen(const char *s);
int strcmp(const char *a, const char *b);

/* CRC-32 (IEEE 802.3, reflected): feed bytes into a running register; start
 * with 0xFFFFFFFF and invert at the end for the standard checksum. */
unsigned crc32_update(unsigned crc, const void *buf, unsigned n);

/* The body of a kernel-mode nanobenchmark program: kbench(op, scale) inside
 * the region of interest, then one line "<name>: N iterations". */
int kbench_main(const char *name, int op, int scale);

int main(int scale);

#endif
