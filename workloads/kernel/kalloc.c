/*
 * kalloc.c -- the physical page allocator.
 *
 * Physical memory from the end of the kernel image to the end of RAM is
 * cut into 4 KiB pages.  Free pages are kept on a singly linked list whose
 * links live inside the free pages themselves (reached through the kernel's
 * direct map at KERNBASE).  Every page also has a reference count: how many
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

    /* Free every page from the end of the early pages to the end of RAM,
     * highest first so that the list hands out low addresses first. */
    uint first = V2P(bump);
    for (uint pa = PGROUNDDOWN(ram_end) - PGSIZE; pa >= first; pa -= PGSIZE) {
        struct run *r = P2V(pa);
        r->next = freelist;
        freelist = r;
        nfree++;
    }
}

/* Allocate one page (contents undefined) with reference count 1.
 * Returns its kernel virtual address, or 0 if memory is exhausted. */
void *kalloc(void)
{
    struct run *r = freelist;
    if (!r)
        return 0;
    freelist = r->next;
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
