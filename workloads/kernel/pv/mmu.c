/*
 * mmu.c -- page tables under Xen: direct paging.
 *
 * The CPU walks our page tables themselves (no shadow copies), so the
 * hypervisor must be sure they can never give us a page that is not ours.
 * Hence the rules (docs/pv-abi.md section 2):
 *
 *  - entries hold MACHINE addresses (pte_mk/pte_pa translate);
 *  - a page that is a page table is read-only everywhere, the kernel's
 *    own direct map included, and every store into it is a request the
 *    hypervisor checks before doing it (mmu_update);
 *  - a page directory must be validated ("pinned") before it is used, and
 *    a page goes back to being an ordinary writable page only after it has
 *    stopped being a page table.
 *
 * A hypercall costs far more than a store, so stores are queued here and
 * issued together by pt_sync(): fork's copy of an address space is a few
 * hypercalls, not one per entry.  The queue is issued before any other
 * page-table hypercall, so the hypervisor always sees our stores in order.
 */
#include "defs.h"
#include "priv.h"

#define MMU_QUEUE_MAX 64

uint *phys_to_machine;              /* start_info's mfn_list (start.c sets it) */

static struct mmu_update queue[MMU_QUEUE_MAX];
static pte_t *queued_at[MMU_QUEUE_MAX];    /* kernel address of each entry */
int mmu_nqueued;

/* [tour pv 100] Page-table writes, queued.
 * The guest's page tables are read-only to it.  Each change is a request (machine
 * address of the entry, new value) put on a queue, and the queue goes to the
 * hypervisor in one mmu_update: a fork sends its entries in a few batches, not
 * one trap per entry as under shadow paging.
 */
void mmu_queue(pte_t *p, pte_t v)
{
    int i = mmu_nqueued++;
    queue[i].ptr = machine_addr(p) | MMU_NORMAL_PT_UPDATE;
    queue[i].val = v;
    queued_at[i] = p;
    if (mmu_nqueued == MMU_QUEUE_MAX)
        mmu_flush();
}

/* The newest queued value of *p, or *p itself. */
pte_t mmu_queued_read(pte_t *p)
{
    for (int i = mmu_nqueued - 1; i >= 0; i--)
        if (queued_at[i] == p)
            return (pte_t)queue[i].val;
    return *p;
}

/* Issue the queue: one mmu_update hypercall.  The hypervisor stops at the
 * first request it refuses; that is a kernel bug. */
void mmu_flush(void)
{
    int done = 0;
    int r = HYPERVISOR_mmu_update(queue, mmu_nqueued, &done);
    if (r < 0)
        panic("mmu_update: error %d at request %d of %d (entry 0x%x, value 0x%x)",
              r, done, mmu_nqueued, (uint)queue[done].ptr, (uint)queue[done].val);
    mmu_nqueued = 0;
}

void mmuext(uint cmd, uint arg1)
{
    struct mmuext_op op = { cmd, arg1, 0 };
    int r = HYPERVISOR_mmuext_op(&op, 1, 0);
    if (r < 0)
        panic("mmuext_op %d (0x%x): error %d", cmd, arg1, r);
}

static void update_va(uint va, pte_t v)
{
    int r = HYPERVISOR_update_va_mapping(va, v, UVMF_INVLPG);
    if (r < 0)
        panic("update_va_mapping 0x%x = 0x%x: error %d", va, v, r);
}

/* update_va_mapping works on the loaded address space, so it fits exactly
 * the case where natively we would store and then invlpg. */
void pte_update(pte_t *p, pte_t v, uint va, int active)
{
    if (!active) {
        pte_write(p, v);
        return;
    }
    pt_sync();
    update_va(va, v);
}

void tlb_flush_page(uint va)
{
    pt_sync();
    mmuext(MMUEXT_INVLPG_LOCAL, va);
}

void tlb_flush_all(void)
{
    pt_sync();
    mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0);
}

/* The entry of the kernel's direct map that maps kva (its page tables are
 * shared by every address space). */
static pte_t *direct_map_pte(void *kva)
{
    pte_t *pt = P2V(pte_pa(kpgdir[PDX(kva)]));
    return &pt[PTX(kva)];
}

/* The kernel maps all RAM at KERNBASE, read/write.  A page becoming a page
 * table must first lose the W bit there (the hypervisor would refuse to
 * make a writable page a page table), and a page that stopped being one
 * gets it back.  Losing it is one more request in the queue, ahead of the
 * directory entry that will make the page a table: the hypervisor takes the
 * requests in order, so fork's new page tables cost no hypercall of their
 * own.  (No TLB flush is asked for: the kernel never writes the page again,
 * and the hypervisor flushes whenever a page becomes a table.) */
void pt_page_protect(void *kva)
{
    pte_write(direct_map_pte(kva), pte_mk(V2P(kva), PTE_P));
}

void pt_page_unprotect(void *kva)
{
    pt_sync();
    update_va((uint)kva, pte_mk(V2P(kva), PTE_P | PTE_W));
}

/* Pinning validates a directory (and, through it, its page tables) once,
 * and keeps it validated while it is not loaded: switching to it later is
 * then cheap. */
void pgdir_pin(pde_t *pgdir)
{
    pt_page_protect(pgdir);
    pt_sync();
    mmuext(MMUEXT_PIN_L2_TABLE, pfn_to_mfn(V2P(pgdir) >> PGSHIFT));
}

/* After unpinning (the directory must not be loaded) the hypervisor drops
 * the directory's hold on its page tables; only then can they, and the
 * directory itself, become writable again. */
void pgdir_unpin(pde_t *pgdir)
{
    pt_sync();
    mmuext(MMUEXT_UNPIN_TABLE, pfn_to_mfn(V2P(pgdir) >> PGSHIFT));
    pt_page_unprotect(pgdir);
}
