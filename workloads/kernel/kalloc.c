/*
 * kalloc.c -- the physical page allocator.
 *
 * Physical memory from the end of the kernel image to the end of RAM is
 * cut into 4 KiB pages.  Pages that were freed are kept on a singly linked
 * list whose links live inside the free pages themselves (reached through
 * the kernel's direct map at KERNBASE).  Pages never handed out yet are not
 * on that list: they are the range from `fresh` to the end of RAM, taken
 * lowest first once the list is empty.  Linking every page at boot would
 * write to each one, and under shadow paging each first write to a page
 * through the direct map is a hidden page fault that the VMM must fill:
 * some 8000 exits before the first instruction of a workload, for nothing.
 * The order in which pages are handed out is the same either way: freed
 * pages first, newest first, then the untouched ones from low to high.
 * Every page also has a reference count: how many
 * page-table entries (or kernel uses) point at it.  Copy-on-write fork
 * shares a page between parent and child by counting it twice; the page
 * returns to the free list when the count drops to zero.
 *
 * During boot, before the free list exists, early_alloc() hands out pages
 * from the end of the kernel image with a simple bump pointer (they are
 * never freed): the kernel page tables and the reference-count array.  (A
 * paravirtual kernel starts after the pages Xen's domain builder left there.)
 */
#include "defs.h"

extern char end[];          /* first address after the kernel image (kernel.ld) */

#ifdef PARAVIRT
/* Xen's domain builder puts its start-of-day pages (page-frame list,
 * start_info, block ring, bootstrap page tables and stack) right after the
 * image, and starts us with ESP at their end (pv/entry.S saved it). */
extern uint bootstrap_end;
#define EARLY_START PGROUNDUP(bootstrap_end)
#else
#define EARLY_START PGROUNDUP((uint)end)
#endif

struct run { struct run *next; };

static struct run *freelist;
static uint nfree;
static uint fresh;          /* lowest page never handed out (physical) */
static uint fresh_end;      /* end of the pages kalloc hands out (physical) */
static uint bump = 0;       /* next early page (kernel virtual) */
static uint ram_limit;      /* physical end of usable RAM */
static ushort *refcnt;      /* one count per physical page */

/* Boot-time allocation: the pages right after the kernel image, which the
 * boot page tables of entry.S already map. */
void *early_alloc(void)
{
    if (!bump)
        bump = EARLY_START;
    void *p = (void *)bump;
    bump += PGSIZE;
    if (V2P(bump) > 8 * 1024 * 1024)
        panic("early_alloc: out of the boot mapping");
    memset(p, 0, PGSIZE);
    return p;
}

void kalloc_init(uint ram_end)
{
    ram_limit = ram_end;
    uint npages = ram_end / PGSIZE;
    uint bytes = npages * sizeof(ushort);
    /* the count array, from early pages (contiguous: bump only grows) */
    refcnt = early_alloc();
    for (uint got = PGSIZE; got < bytes; got += PGSIZE)
        early_alloc();
    memset(refcnt, 0, PGROUNDUP(bytes));

    /* Every page from the end of the early pages to the end of RAM is free,
     * untouched until kalloc hands it out. */
    fresh = V2P(bump);
    fresh_end = PGROUNDDOWN(ram_end);
    nfree = (fresh_end - fresh) / PGSIZE;
}

/* Allocate one page (contents undefined) with reference count 1.
 * Returns its kernel virtual address, or 0 if memory is exhausted. */
void *kalloc(void)
{
    struct run *r = freelist;
    if (r) {
        freelist = r->next;
    } else if (fresh < fresh_end) {
        r = P2V(fresh);
        fresh += PGSIZE;
    } else {
        return 0;
    }
    nfree--;
    refcnt[V2P(r) / PGSIZE] = 1;
    return r;
}

void page_incref(uint pa)
{
    refcnt[pa / PGSIZE]++;
}

/* Drop one reference; the last one frees the page. */
void page_decref(uint pa)
{
    if (pa >= ram_limit || refcnt[pa / PGSIZE] == 0)
        panic("page_decref: bad page 0x%x", pa);
    if (--refcnt[pa / PGSIZE] == 0) {
        struct run *r = P2V(pa);
        r->next = freelist;
        freelist = r;
        nfree++;
    }
}

int page_refs(uint pa)
{
    return refcnt[pa / PGSIZE];
}

uint free_pages(void)
{
    return nfree;
}
