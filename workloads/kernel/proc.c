/*
 * proc.c -- processes and the round-robin scheduler.
 *
 * Each process has a kernel stack (one page) and, at its top, the trap
 * frame with its user registers.  The kernel is not preemptible: it runs
 * with interrupts masked, so a process gives up the CPU only by calling
 * sched() -- when it yields (system call, or the timer interrupted it in
 * user mode), sleeps (wait) or exits.
 *
 * sched() switches to the scheduler's own kernel thread (the boot stack),
 * which picks the next RUNNABLE process after the previous one in the table
 * (round robin), points the TSS at that process's kernel stack, loads its
 * page directory, and swtch()es to it.  With nothing to run it idles with
 * "sti; hlt" until an interrupt.
 */
#include "defs.h"
#include "proc.h"
#include "priv.h"

struct proc proc[NPROC];
static struct proc *current;        /* the process running, 0 in the scheduler */
static struct proc *initproc;       /* the first process: its exit ends the run */
static struct context *sched_context;
static int nextpid = 1;

extern void trapret(void);

struct proc *myproc(void)
{
    return current;
}

int getpid(void)
{
    return current->pid;
}

/* A new process starts its kernel life here (see allocproc) and "returns"
 * into trapret, which loads the trap frame and irets to user mode. */
static void forkret(void)
{
}

/* Find an unused slot and give it a kernel stack laid out as
 *     [ trap frame | address of trapret | context (eip = forkret) ]
 * so that the first swtch() to it runs forkret, then trapret. */
static struct proc *allocproc(void)
{
    struct proc *p;
    for (p = proc; p < &proc[NPROC]; p++)
        if (p->state == UNUSED)
            break;
    if (p == &proc[NPROC])
        return 0;
    p->kstack = kalloc();
    if (!p->kstack)
        return 0;
    p->state = EMBRYO;
    p->pid = nextpid++;
    p->parent = 0;
    p->chan = 0;
    p->xstatus = 0;
    p->fault_handler = 0;
    p->mm.pgdir = 0;
    p->mm.nvma = 0;

    char *sp = p->kstack + PGSIZE;
    sp -= sizeof(*p->tf);
    p->tf = (struct trapframe *)sp;
    memset(p->tf, 0, sizeof(*p->tf));
    sp -= 4;
    *(uint *)sp = (uint)trapret;
    sp -= sizeof(*p->context);
    p->context = (struct context *)sp;
    memset(p->context, 0, sizeof(*p->context));
    p->context->eip = (uint)forkret;
    return p;
}

static void freeproc(struct proc *p)
{
    page_decref(V2P(p->kstack));
    p->kstack = 0;
    p->pid = 0;
    p->parent = 0;
    p->name[0] = 0;
    p->state = UNUSED;
}

/* Create the first process, running program progname with main(arg). */
void user_init(const char *progname, int arg)
{
    const struct program *prog = find_program(progname);
    if (!prog) {
        printk("kernel: no program named '%s'\n", progname);
        platform_exit(127);
    }
    struct proc *p = allocproc();
    if (!p || mm_create(&p->mm) < 0 || exec_into(p, prog, arg) < 0)
        panic("cannot create the first process");
    initproc = p;
    p->state = RUNNABLE;
}

void scheduler(void)
{
    int last = NPROC - 1;
    for (;;) {
        struct proc *p = 0;
        for (int k = 1; k <= NPROC; k++) {
            int i = (last + k) % NPROC;
            if (proc[i].state == RUNNABLE) {
                p = &proc[i];
                last = i;
                break;
            }
        }
        if (!p) {
            idle_wait();        /* sti; hlt; cli -- an interrupt may wake someone */
            continue;
        }
        current = p;
        p->state = RUNNING;
        set_kernel_stack((uint)p->kstack + PGSIZE);
        mm_activate(&p->mm);
        switch_done();
        swtch(&sched_context, p->context);
        current = 0;
    }
}

/* Give the CPU to the scheduler.  The caller has set current->state. */
static void sched(void)
{
    swtch(&current->context, sched_context);
}

void yield(void)
{
    current->state = RUNNABLE;
    sched();
}

/* Sleep until someone calls wakeup(chan).  No lock is needed: the kernel
 * runs with interrupts off on one CPU, so nothing can slip in between the
 * caller's check and the sleep. */
void sleep(void *chan)
{
    current->chan = chan;
    current->state = SLEEPING;
    sched();
    current->chan = 0;
}

void wakeup(void *chan)
{
    for (struct proc *p = proc; p < &proc[NPROC]; p++)
        if (p->state == SLEEPING && p->chan == chan)
            p->state = RUNNABLE;
}

int fork(void)
{
    struct proc *np = allocproc();
    if (!np)
        return -1;
    if (mm_copy(&np->mm, &current->mm) < 0) {
        freeproc(np);
        return -1;
    }
    *np->tf = *current->tf;
    np->tf->eax = 0;                /* the child's fork() returns 0 */
    np->parent = current;
    np->fault_handler = current->fault_handler;
    safestrcpy(np->name, current->name, sizeof(np->name));
    np->state = RUNNABLE;
    return np->pid;
}

/* End the current process.  Its memory goes now; its kernel stack and
 * table slot when the parent's wait() collects the status. */
void exit(int status)
{
    struct proc *p = current;
    if (p == initproc)
        platform_exit(status);      /* the workload is over: end the run */

    mm_destroy(&p->mm);             /* switches CR3 to the kernel's first */
    for (struct proc *c = proc; c < &proc[NPROC]; c++) {
        if (c->parent == p) {
            c->parent = initproc;
            if (c->state == ZOMBIE)
                wakeup(initproc);
        }
    }
    p->xstatus = status;
    p->state = ZOMBIE;
    wakeup(p->parent);
    sched();
    panic("zombie ran");
}

/* Collect one exited child: its pid (and status at status_uva if not 0),
 * or -1 if there are no children. */
int wait(uint status_uva)
{
    for (;;) {
        int have_kids = 0;
        for (struct proc *c = proc; c < &proc[NPROC]; c++) {
            if (c->parent != current)
                continue;
            have_kids = 1;
            if (c->state == ZOMBIE) {
                int pid = c->pid;
                int st = c->xstatus;
                freeproc(c);
                if (status_uva && copyout(&current->mm, status_uva, &st, sizeof(st)) < 0)
                    return -1;
                return pid;
            }
        }
        if (!have_kids)
            return -1;
        sleep(current);
    }
}
