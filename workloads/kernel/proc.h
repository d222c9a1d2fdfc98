/* proc.h -- processes: the trap frame, the saved kernel context, the process table entry. */
#ifndef PROC_H
#define PROC_H

#include "defs.h"

/* What the trap entry (trapasm.S) pushes, in memory order from the
 * lowest address: the registers of pushal, the data segment registers, the
 * vector and error code, and what the CPU itself pushed.  esp and ss exist
 * only when the trap came from user mode (a privilege change). */
struct trapframe {
    uint edi, esi, ebp, oesp, ebx, edx, ecx, eax;   /* pushal */
    uint gs, fs, es, ds;
    uint trapno;
    uint err;               /* error code (0 when the CPU pushes none) */
    uint eip, cs, eflags;   /* pushed by the CPU */
    uint esp, ss;           /* pushed by the CPU on a ring change only */
};

/* Registers that swtch() saves: the callee-saved ones of the C calling
 * convention plus the return address. */
struct context { uint edi, esi, ebx, ebp, eip; };

enum procstate { UNUSED, EMBRYO, SLEEPING, RUNNABLE, RUNNING, ZOMBIE };

struct proc {
    int pid;
    enum procstate state;
    struct proc *parent;
    struct mm mm;               /* address space */
    char *kstack;               /* bottom of its one-page kernel stack */
    struct trapframe *tf;       /* user registers, at the top of kstack */
    struct context *context;    /* where swtch() left the kernel thread */
    void *chan;                 /* what it sleeps on */
    int xstatus;                /* exit status for wait() */
    uint fault_handler;         /* user trampoline for catch_faults, 0 = none */
    char name[32];
};

#define NPROC 64
extern struct proc proc[NPROC];

void swtch(struct context **old, struct context *new);

#endif
