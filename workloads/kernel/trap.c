/*
 * trap.c -- the interrupt descriptor table and the one C entry point for
 * every interrupt, exception and system call.
 *
 * All gates are INTERRUPT gates (the CPU clears IF on entry), with the
 * kernel code selector and DPL 0, except the system-call gate 0x80 whose
 * DPL 3 lets user code execute "int $0x80".  A user "int n" with any other
 * vector raises #GP instead.
 */
#include "defs.h"
#include "proc.h"
#include "priv.h"

struct gatedesc {
    ushort off_15_0;
    ushort sel;
    uchar zero;
    uchar type_attr;        /* P | DPL(2) | 0 | type: 0xE = 32-bit interrupt gate */
    ushort off_31_16;
} __attribute__((packed));

static struct gatedesc idt[256] __attribute__((aligned(8)));
extern uint vectors[];      /* trapasm.S: stubs for vectors 0..47, then 128 */
uint idt_base_addr;
uint ticks;

static void setgate(int n, uint handler, int dpl)
{
    idt[n].off_15_0 = handler & 0xFFFF;
    idt[n].sel = KCODE_SEL;
    idt[n].zero = 0;
    idt[n].type_attr = (uchar)(0x8E | (dpl << 5));
    idt[n].off_31_16 = handler >> 16;
}

void idt_init(void)
{
    for (int i = 0; i < 48; i++)
        setgate(i, vectors[i], 0);
    setgate(T_SYSCALL, vectors[48], 3);
    idt_base_addr = (uint)idt;
    load_idt(idt, sizeof(idt));
}

static const char *excname(uint v)
{
    static const char *names[] = {
        "divide error", "debug", "NMI", "breakpoint", "overflow", "bound",
        "invalid opcode", "device not available", "double fault", "coprocessor overrun",
        "invalid TSS", "segment not present", "stack fault", "general protection",
        "page fault", "reserved", "x87 error", "alignment check", "machine check",
        "SIMD error",
    };
    return v < sizeof(names) / sizeof(names[0]) ? names[v] : "exception";
}

/* What a catch_faults handler sees (must match struct fault_frame in
 * user/ulib.h). */
struct fault_frame {
    uint vector, error, cr2, eip, esp, eflags;
    uint eax, ebx, ecx, edx, esi, edi, ebp;
};

/* Give a user-mode fault to the process's own handler: push a fault_frame
 * and a pointer to it on the user stack, like a signal, and make the
 * process continue in its library trampoline, trampoline(frame).  The
 * trampoline calls the handler and then fault_return(frame).  Returns 0 if
 * delivered, -1 if the process has no handler or its stack is unusable. */
static int deliver_fault(struct proc *p, struct trapframe *tf, uint cr2)
{
    if (!p->fault_handler)
        return -1;
    struct fault_frame ff = {
        tf->trapno, tf->err, cr2, tf->eip, tf->esp, tf->eflags,
        tf->eax, tf->ebx, tf->ecx, tf->edx, tf->esi, tf->edi, tf->ebp,
    };
    uint sp = (tf->esp - sizeof(ff)) & ~3u;
    uint frame = sp;
    uint args[2] = { 0, frame };    /* fake return address, argument */
    sp -= sizeof(args);
    if (copyout(&p->mm, frame, &ff, sizeof(ff)) < 0 ||
        copyout(&p->mm, sp, args, sizeof(args)) < 0)
        return -1;
    tf->esp = sp;
    tf->eip = p->fault_handler;
    return 0;
}

/* A fault in user mode that is not a demand-zero or copy-on-write fault. */
static void user_fault(struct proc *p, struct trapframe *tf, uint cr2)
{
    if (deliver_fault(p, tf, cr2) == 0)
        return;
    printk("kernel: pid %d (%s) killed: %s at eip 0x%x", p->pid, p->name,
           excname(tf->trapno), tf->eip);
    if (tf->trapno == T_PGFLT)
        printk(" addr 0x%x", cr2);
    printk("\n");
    exit(128 + (int)tf->trapno);
}

void trap(struct trapframe *tf)
{
    /* User mode is ring 3.  (Test for 3, not "not 0": a deprivileged
     * kernel, e.g. at ring 1 under ring compression, is still the kernel.) */
    int from_user = (tf->cs & 3) == 3;
    struct proc *p = myproc();

    if (tf->trapno == T_SYSCALL) {
        syscall(tf);
        return;
    }

#ifdef PARAVIRT
    /* Under Xen there are no device interrupts, only event upcalls: one
     * entry for all of them, with the pending ports in the shared page. */
    if (tf->trapno == T_EVTCHN) {
        evtchn_do_upcall(tf);
        return;
    }
#else
    if (tf->trapno >= T_IRQ0 && tf->trapno < T_IRQ0 + 16) {
        int irq = tf->trapno - T_IRQ0;
        if (irq == 7 || irq == 15) {
            /* possibly spurious: no EOI for a spurious master IRQ 7 */
            if (irq == 15)
                pic_eoi(2);
            return;
        }
        if (irq == IRQ_TIMER)
            ticks++;
        pic_eoi(irq);
        /* Preempt: only when the timer interrupted user code; the kernel
         * itself is never preempted (it runs with interrupts masked). */
        if (irq == IRQ_TIMER && from_user && p)
            yield();
        return;
    }
#endif

    /* An exception.  Read CR2 first, before anything else can fault. */
    uint cr2 = tf->trapno == T_PGFLT ? read_cr2() : 0;
    if (!from_user || !p) {
        panic("%s (vector %d, error 0x%x) in kernel at eip 0x%x, cr2 0x%x",
              excname(tf->trapno), tf->trapno, tf->err, tf->eip, cr2);
    }
    if (tf->trapno == T_PGFLT && vm_fault(&p->mm, cr2, (tf->err & 2) != 0) == 0)
        return;     /* demand-zero or copy-on-write: resolved, retry the access */
    user_fault(p, tf, cr2);
}
