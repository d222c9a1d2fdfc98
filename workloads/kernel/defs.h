/* defs.h -- the kernel's shared declarations, one section per file. */
#ifndef DEFS_H
#define DEFS_H

#include "types.h"
#include "mmu.h"

struct proc;
struct trapframe;
struct mm;

/* main.c */
#define BOOT_MAGIC  0x42414C56      /* "VLAB" */
struct bootinfo {
    uint magic;             /* 0x42414C56 "VLAB" */
    uint version;
    uint ram_size;          /* bytes */
    uint scale;             /* iterations requested, 0 = program default */
    uint disk_sectors;      /* 0 = no disk */
    uint flags;
    uint reserved[2];
    char workload[64];      /* NUL-terminated, "" for a bring-your-own image */
};
extern struct bootinfo bootinfo;
void platform_exit(int status) __attribute__((noreturn));

/* console.c */
void console_init(void);
void console_putc(int c);
void console_write(const char *s, int n);

/* printk.c */
void printk(const char *fmt, ...);
void panic(const char *fmt, ...) __attribute__((noreturn));

/* string.c */
void *memset(void *d, int c, uint n);
void *memcpy(void *d, const void *s, uint n);
void *memmove(void *d, const void *s, uint n);
int memcmp(const void *a, const void *b, uint n);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, uint n);
uint strlen(const char *s);
void safestrcpy(char *d, const char *s, uint n);

/* gdt.c */
void gdt_init(void);
extern uint gdt_base_addr;

/* trap.c */
void idt_init(void);
extern uint idt_base_addr;
extern uint ticks;

/* pic.c, timer.c */
void pic_init(void);
void pic_enable(int irq);
void pic_eoi(int irq);
void timer_init(void);

/* ide.c, or pv/blkfront.c in a paravirtual kernel: the disk */
void disk_init(uint nsectors);
int disk_read(uint lba, void *buf);
int disk_write(uint lba, const void *buf);
uint disk_nsectors(void);

/* kalloc.c */
void *early_alloc(void);
void kalloc_init(uint ram_end);
void *kalloc(void);
void page_incref(uint pa);
void page_decref(uint pa);
int page_refs(uint pa);
uint free_pages(void);

/* vm.c */
#define NVMA 32
#define VM_W 1
struct vma { uint start, end, flags; };
struct mm {
    pde_t *pgdir;           /* kernel virtual address of the page directory */
    struct vma vma[NVMA];   /* sorted by address, not overlapping */
    int nvma;
};
extern pde_t *kpgdir;
void kvm_init(uint ram);
pte_t *kscratch_pte(void);
int mm_create(struct mm *mm);
void mm_destroy(struct mm *mm);
int mm_copy(struct mm *dst, struct mm *src);
void mm_activate(struct mm *mm);
void kernel_pgdir_activate(void);
int vma_add(struct mm *mm, uint start, uint end, uint flags);
struct vma *vma_find(struct mm *mm, uint va);
int map_new_page(struct mm *mm, uint va, uint perm, void **kva);
int vm_fault(struct mm *mm, uint va, int write);
int copyout(struct mm *mm, uint uva, const void *src, uint n);
int copyin(struct mm *mm, void *dst, uint uva, uint n);
int copyinstr(struct mm *mm, char *dst, uint uva, uint max);
int sys_mmap_impl(struct mm *mm, uint addr, uint len);
int sys_munmap_impl(struct mm *mm, uint addr, uint len);
int sys_mprotect_impl(struct mm *mm, uint addr, uint len, int writable);

/* proc.c */
struct proc *myproc(void);
void user_init(const char *progname, int arg);
void scheduler(void) __attribute__((noreturn));
void yield(void);
int fork(void);
void exit(int status) __attribute__((noreturn));
int wait(uint status_uva);
int getpid(void);
void sleep(void *chan);
void wakeup(void *chan);

/* exec.c */
struct program { const char *name; const uchar *start; const uchar *end; };
extern const struct program programs[];
const struct program *find_program(const char *name);
int exec_into(struct proc *p, const struct program *prog, int arg);
int sys_exec_impl(uint name_uva, int arg);

/* syscall.c */
void syscall(struct trapframe *tf);

/* kbench.c */
int kbench(int op, int n);
int kprobe(int what);

#endif
