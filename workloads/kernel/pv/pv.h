/*
 * pv.h -- what the files of the paravirtual kernel (kernel/pv/) share with
 * each other and with the few places of the common kernel that differ
 * under -DPARAVIRT (main.c, trap.c, vm.c, kalloc.c).  Included by priv_pv.h.
 */
#ifndef PV_PV_H
#define PV_PV_H

#include "pv/xen.h"

struct trapframe;

/* entry.S: what the domain builder handed us in ESI and ESP. */
extern struct start_info *xen_start_info;
extern uint bootstrap_end;          /* first virtual address it left free */

/* start.c */
void read_start_info(void);
extern uint blk_ring_pfn;           /* blkring= of the command line */
extern uint blk_evtchn;             /* blkevtchn= */

/* vcpu.c: the shared-info page lives in the last page of the scratch
 * window (kbench uses only its first page), so every address space, whose
 * directories all share the window's page table, sees it. */
#define KSHARED_INFO    (KSCRATCH + 0x3FF000)
extern struct shared_info *shinfo;
void map_shared_info(uint va);

/* mmu.c: one mmuext_op, issued at once; panics on an error. */
void mmuext(uint cmd, uint arg1);

/* evtchn.c */
void evtchn_do_upcall(struct trapframe *tf);
void evtchn_send(uint port);
void evtchn_mask(uint port);
void evtchn_unmask(uint port);
void evtchn_clear(uint port);

/* timer.c */
extern uint timer_port;
void timer_tick(void);

/* callback.S: where the hypervisor enters us with an event, or when it
 * cannot load the segments of a frame we asked it to return to. */
void hypervisor_callback(void);
void failsafe_callback(void);

#endif
