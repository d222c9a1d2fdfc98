/*
 * multicall.c -- a context switch in one hypercall.
 *
 * Switching to another process needs two privileged operations: the kernel
 * stack for the next entry from user mode (natively the TSS's ESP0; here
 * stack_switch) and the address space (CR3; here MMUEXT_NEW_BASEPTR).  Each
 * alone is a hypercall, that is, an entry into the hypervisor and a return.
 * A multicall carries several hypercalls in one entry -- the batching the
 * Xen paper argues for.  So set_kernel_stack() only queues its request;
 * load_pgdir_pa() adds its own and issues both; and if the address space
 * did not change, switch_done() issues the stack switch alone.
 */
#include "defs.h"
#include "priv.h"

static struct multicall_entry calls[2];
static int ncalls;
static struct mmuext_op baseptr_op;     /* read by the hypervisor during the multicall */
static uint hyp_kernel_sp;              /* the stack the hypervisor already has */

static void issue_calls(void)
{
    int r = HYPERVISOR_multicall(calls, ncalls);
    if (r < 0)
        panic("multicall: error %d", r);
    for (int i = 0; i < ncalls; i++)
        if ((int)calls[i].result < 0)
            panic("multicall: hypercall %d failed: error %d", calls[i].op, (int)calls[i].result);
    ncalls = 0;
}

void set_kernel_stack(uint esp0)
{
    if (esp0 == hyp_kernel_sp)
        return;         /* the same process again: nothing to tell */
    hyp_kernel_sp = esp0;
    calls[0].op = __HYPERVISOR_stack_switch;
    calls[0].args[0] = FLAT_KERNEL_SS;
    calls[0].args[1] = esp0;
    ncalls = 1;
}

/* Load a page directory (its pseudo-physical address): the hypervisor
 * loads CR3 with its machine address and flushes the TLB. */
void load_pgdir_pa(uint pa)
{
    pt_sync();
    cr3_shadow = pa;
    uint mfn = pfn_to_mfn(pa >> PGSHIFT);
    if (!ncalls) {
        mmuext(MMUEXT_NEW_BASEPTR, mfn);
        return;
    }
    baseptr_op.cmd = MMUEXT_NEW_BASEPTR;
    baseptr_op.arg1 = mfn;
    struct multicall_entry *c = &calls[ncalls++];
    c->op = __HYPERVISOR_mmuext_op;
    c->args[0] = (uint)&baseptr_op;
    c->args[1] = 1;
    c->args[2] = 0;
    c->args[3] = DOMID_SELF;
    issue_calls();
}

void switch_done(void)
{
    if (ncalls)
        issue_calls();
}
