/*
 * syscall.c -- system calls: "int $0x80" with the number in EAX and the
 * arguments in EBX, ECX, EDX, ESI, EDI; the result goes back in EAX.
 * A negative result is an error.  Every user pointer is checked (through
 * copyin/copyout), so a bad call fails instead of harming the kernel.
 * See docs/guest-abi.md.
 */
#include "defs.h"
#include "proc.h"
#include "priv.h"

#define SYS_exit          1
#define SYS_fork          2
#define SYS_exec          3
#define SYS_wait          4
#define SYS_yield         5
#define SYS_getpid        6
#define SYS_write         7
#define SYS_read          8
#define SYS_mmap          9
#define SYS_munmap        10
#define SYS_disk_read     11
#define SYS_disk_write    12
#define SYS_kbench        13
#define SYS_kprobe        14
#define SYS_uptime        15
#define SYS_catch_faults  16
#define SYS_fault_return  17
#define SYS_mprotect      18

#define MAX_DISK_SECTORS  256

/* Kernel buffers: safe to share, the kernel is not preemptible. */
static char iobuf[512];

static int sys_write(int fd, uint buf, int n)
{
    if (fd != 1 || n < 0)
        return -1;
    int done = 0;
    while (done < n) {
        int chunk = n - done > (int)sizeof(iobuf) ? (int)sizeof(iobuf) : n - done;
        if (copyin(&myproc()->mm, iobuf, buf + done, chunk) < 0)
            return done ? done : -1;
        console_write(iobuf, chunk);
        done += chunk;
    }
    return done;
}

static int sys_read(int fd, uint buf, int n)
{
    (void)buf;
    if (fd != 0 || n < 0)
        return -1;
    return 0;       /* the null device: always end of file */
}

static int sys_disk(int write, uint lba, uint buf, uint nsect)
{
    uint disk = disk_nsectors();
    if (nsect == 0 || nsect > MAX_DISK_SECTORS || lba >= disk || nsect > disk - lba)
        return -1;
    struct mm *mm = &myproc()->mm;
    for (uint i = 0; i < nsect; i++) {
        uint ubuf = buf + i * 512;
        if (write) {
            if (copyin(mm, iobuf, ubuf, 512) < 0 || disk_write(lba + i, iobuf) < 0)
                return -1;
        } else {
            if (disk_read(lba + i, iobuf) < 0 || copyout(mm, ubuf, iobuf, 512) < 0)
                return -1;
        }
    }
    return (int)nsect;
}

/* Resume a process after its fault handler: registers from the (possibly
 * edited) frame, but never its segments or privileged flags. */
static int sys_fault_return(struct trapframe *tf, uint frame)
{
    struct { uint vector, error, cr2, eip, esp, eflags, eax, ebx, ecx, edx, esi, edi, ebp; } ff;
    if (copyin(&myproc()->mm, &ff, frame, sizeof(ff)) < 0)
        return -1;
    tf->eip = ff.eip;
    tf->esp = ff.esp;
    tf->eflags = (tf->eflags & ~FL_USER_CHANGEABLE) | (ff.eflags & FL_USER_CHANGEABLE);
    tf->ebx = ff.ebx;
    tf->ecx = ff.ecx;
    tf->edx = ff.edx;
    tf->esi = ff.esi;
    tf->edi = ff.edi;
    tf->ebp = ff.ebp;
    return (int)ff.eax;     /* becomes EAX */
}

void syscall(struct trapframe *tf)
{
    struct proc *p = myproc();
    uint a1 = tf->ebx, a2 = tf->ecx, a3 = tf->edx;
    int r;

    switch (tf->eax) {
    case SYS_exit:         exit((int)a1);
    case SYS_fork:         r = fork(); break;
    case SYS_exec:         r = sys_exec_impl(a1, (int)a2); if (r == 0) return; break;
    case SYS_wait:         r = wait(a1); break;
    case SYS_yield:        yield(); r = 0; break;
    case SYS_getpid:       r = getpid(); break;
    case SYS_write:        r = sys_write((int)a1, a2, (int)a3); break;
    case SYS_read:         r = sys_read((int)a1, a2, (int)a3); break;
    case SYS_mmap:         r = sys_mmap_impl(&p->mm, a1, a2); break;
    case SYS_munmap:       r = sys_munmap_impl(&p->mm, a1, a2); break;
    case SYS_mprotect:     r = sys_mprotect_impl(&p->mm, a1, a2, (int)a3); break;
    case SYS_disk_read:    r = sys_disk(0, a1, a2, a3); break;
    case SYS_disk_write:   r = sys_disk(1, a1, a2, a3); break;
    case SYS_kbench:       r = kbench((int)a1, (int)a2); break;
    case SYS_kprobe:       r = kprobe((int)a1); break;
    case SYS_uptime:       r = (int)ticks; break;
    case SYS_catch_faults:
        if (a1 >= USER_TOP)
            r = -1;
        else
            p->fault_handler = a1, r = 0;
        break;
    case SYS_fault_return: r = sys_fault_return(tf, a1); break;
    default:               r = -1; break;
    }
    tf->eax = (uint)r;
}
