/*
 * vm.c -- virtual memory: page tables, address spaces, page faults.
 *
 * IA-32 two-level paging: CR3 holds the physical address of a page
 * directory of 1024 entries, each covering 4 MiB and pointing at a page
 * table of 1024 entries, each mapping one 4 KiB page.  An entry holds the
 * physical page address and permission bits (present, writable, user).
 *
 * Every process has its own page directory.  Its upper quarter (from
 * KERNBASE) is identical in all of them -- the kernel's direct map of all
 * RAM, set up once at boot -- so a trap or system call finds the kernel
 * mapped whatever the current address space.  The lower part is the
 * process's: described by a list of regions (struct vma: start, end,
 * writable?) and filled in lazily by the page-fault handler:
 *
 *  - demand-zero: a region's page that has never been touched has no
 *    page-table entry; the first access faults and gets a fresh zero page;
 *  - copy-on-write: fork() makes parent and child share every page
 *    read-only.  A write to a page in a writable region that is mapped
 *    read-only is a COW fault: if the page is still shared (reference
 *    count > 1) we copy it, otherwise the faulting process is its last
 *    user and simply gets write permission back.
 *
 * Every store into a live page table goes through pte_write() (priv.h), and
 * every TLB flush through tlb_flush_page()/tlb_flush_all().  Entries are
 * built with pte_mk() and taken apart with pte_pa(): a paravirtual kernel's
 * entries hold machine, not physical, addresses.  A page that becomes a page
 * table is announced with pt_page_protect() (and pt_page_unprotect() when
 * it stops being one), a finished page directory with pgdir_pin().  Natively
 * all of these are plain stores, the identity, or nothing.
 */
#include "defs.h"
#include "priv.h"

pde_t *kpgdir;              /* the kernel-only page directory (boot, idle) */
static uint active_pa;      /* physical address currently in CR3 */
static pte_t *scratch_pt;   /* page table of the KSCRATCH window */

/* ---- page-table walking ------------------------------------------------ */

/* The address of the page-table entry for va, creating the page table if
 * alloc is set.  0 if there is none (or no memory for one). */
static pte_t *walk(pde_t *pgdir, uint va, int alloc)
{
    pde_t *pde = &pgdir[PDX(va)];
    if (pte_read(pde) & PTE_P)
        return (pte_t *)P2V(pte_pa(pte_read(pde))) + PTX(va);
    if (!alloc)
        return 0;
    pte_t *pt = kalloc();
    if (!pt)
        return 0;
    memset(pt, 0, PGSIZE);
    pt_page_protect(pt);
    /* User bit set at the directory level: the page-table entries decide. */
    pte_write(pde, pte_mk(V2P(pt), PTE_P | PTE_W | PTE_U));
    return pt + PTX(va);
}

static int is_active(struct mm *mm)
{
    return V2P(mm->pgdir) == active_pa;
}

/* Change one entry; flush its TLB entry if the address space is live. */
static void pte_set(struct mm *mm, pte_t *pte, pte_t val, uint va)
{
    pte_update(pte, val, va, is_active(mm));
}

/* ---- the kernel's mappings -------------------------------------------- */

#ifdef PARAVIRT
/* The kernel page directory is the one Xen's domain builder made: its
 * directory (start_info's pt_base) maps all RAM at KERNBASE, and it is
 * validated, pinned and loaded.  We adopt it, add the scratch window, and
 * map the shared-info page (the hypervisor's half of the virtual CPU) into
 * the window's last page, where every address space will see it.  (In a
 * domain larger than MAXRAM the builder's map reaches into the window's
 * slot; we replace that entry, and the kernel ignores memory beyond
 * MAXRAM, as the native kernel does.) */
void kvm_init(uint ram)
{
    (void)ram;
    kpgdir = (pde_t *)xen_start_info->pt_base;
    scratch_pt = early_alloc();
    pt_page_protect(scratch_pt);
    pte_write(&kpgdir[PDX(KSCRATCH)], pte_mk(V2P(scratch_pt), PTE_P | PTE_W));
    pt_sync();
    map_shared_info(KSHARED_INFO);
    active_pa = V2P(kpgdir);
}
#else
/* Build the kernel page directory: all RAM at KERNBASE, read/write,
 * supervisor only; plus the (empty) page table of the scratch window.
 * Page tables come from early_alloc, so every process's directory can
 * share them by copying the directory entries. */
void kvm_init(uint ram)
{
    kpgdir = early_alloc();
    for (uint pa = 0; pa < ram; pa += PGSIZE) {
        uint va = KERNBASE + pa;
        pde_t *pde = &kpgdir[PDX(va)];
        if (!(*pde & PTE_P))
            pte_write(pde, pte_mk(V2P(early_alloc()), PTE_P | PTE_W));
        pte_t *pt = P2V(pte_pa(*pde));
        pte_write(&pt[PTX(va)], pte_mk(pa, PTE_P | PTE_W));
    }
    scratch_pt = early_alloc();
    pte_write(&kpgdir[PDX(KSCRATCH)], pte_mk(V2P(scratch_pt), PTE_P | PTE_W));
    pt_sync();
    kernel_pgdir_activate();
}
#endif

pte_t *kscratch_pte(void)
{
    return &scratch_pt[PTX(KSCRATCH)];
}

void kernel_pgdir_activate(void)
{
    active_pa = V2P(kpgdir);
    load_pgdir_pa(active_pa);
}

void mm_activate(struct mm *mm)
{
    if (V2P(mm->pgdir) != active_pa) {
        active_pa = V2P(mm->pgdir);
        load_pgdir_pa(active_pa);
    }
}

/* ---- address spaces ---------------------------------------------------- */

int mm_create(struct mm *mm)
{
    memset(mm, 0, sizeof(*mm));
    mm->pgdir = kalloc();
    if (!mm->pgdir)
        return -1;
    memset(mm->pgdir, 0, PGSIZE);
    for (uint i = PDX(KERNBASE); i < KERNEL_PDE_END; i++)
        if (kpgdir[i])
            pte_write(&mm->pgdir[i], kpgdir[i]);
    pgdir_pin(mm->pgdir);           /* issues the entries too (pt_sync) */
    return 0;
}

/* Free all user pages, the page tables and the directory.  The address
 * space must not be the one in CR3, and the directory must be unpinned
 * before its page tables can become ordinary pages again. */
void mm_destroy(struct mm *mm)
{
    if (!mm->pgdir)
        return;
    if (is_active(mm))
        kernel_pgdir_activate();
    pgdir_unpin(mm->pgdir);
    for (uint i = 0; i < PDX(USER_TOP); i++) {
        if (!(mm->pgdir[i] & PTE_P))
            continue;
        pte_t *pt = P2V(pte_pa(mm->pgdir[i]));
        for (int j = 0; j < NPTENTRIES; j++)
            if (pt[j] & PTE_P)
                page_decref(pte_pa(pt[j]));
        pt_page_unprotect(pt);
        page_decref(V2P(pt));
    }
    page_decref(V2P(mm->pgdir));
    mm->pgdir = 0;
    mm->nvma = 0;
}

/* fork's copy: share every user page, read-only, in both address spaces. */
int mm_copy(struct mm *dst, struct mm *src)
{
    if (mm_create(dst) < 0)
        return -1;
    memcpy(dst->vma, src->vma, sizeof(src->vma));
    dst->nvma = src->nvma;
    int changed = 0;
    for (uint i = 0; i < PDX(USER_TOP); i++) {
        if (!(src->pgdir[i] & PTE_P))
            continue;
        pte_t *spt = P2V(pte_pa(src->pgdir[i]));
        for (uint j = 0; j < NPTENTRIES; j++) {
            pte_t pte = spt[j];
            if (!(pte & PTE_P))
                continue;
            uint va = (i << PDXSHIFT) | (j << PGSHIFT);
            pte_t *dpte = walk(dst->pgdir, va, 1);
            if (!dpte) {
                pt_sync();
                mm_destroy(dst);
                if (changed && is_active(src))
                    tlb_flush_all();
                return -1;
            }
            if (pte & PTE_W) {
                pte &= ~PTE_W;
                pte_write(&spt[j], pte);
                changed = 1;
            }
            pte_write(dpte, pte);
            page_incref(pte_pa(pte));
        }
    }
    pt_sync();
    if (changed && is_active(src))
        tlb_flush_all();
    return 0;
}

/* ---- regions ------------------------------------------------------------- */

struct vma *vma_find(struct mm *mm, uint va)
{
    for (int i = 0; i < mm->nvma; i++)
        if (va >= mm->vma[i].start && va < mm->vma[i].end)
            return &mm->vma[i];
    return 0;
}

static int overlaps(struct mm *mm, uint start, uint end)
{
    for (int i = 0; i < mm->nvma; i++)
        if (start < mm->vma[i].end && mm->vma[i].start < end)
            return 1;
    return 0;
}

/* Add [start, end), page aligned, kept sorted by address. */
int vma_add(struct mm *mm, uint start, uint end, uint flags)
{
    if (start >= end || end > USER_TOP || start < UIMAGE_MIN || mm->nvma == NVMA ||
        overlaps(mm, start, end))
        return -1;
    int i = mm->nvma;
    while (i > 0 && mm->vma[i - 1].start > start) {
        mm->vma[i] = mm->vma[i - 1];
        i--;
    }
    mm->vma[i].start = start;
    mm->vma[i].end = end;
    mm->vma[i].flags = flags;
    mm->nvma++;
    return 0;
}

/* Make addr a region boundary, splitting the region that contains it. */
static int vma_split(struct mm *mm, uint addr)
{
    struct vma *v = vma_find(mm, addr);
    if (!v || v->start == addr)
        return 0;
    if (mm->nvma == NVMA)
        return -1;
    uint end = v->end;
    v->end = addr;
    return vma_add(mm, addr, end, v->flags);
}

static void vma_remove(struct mm *mm, int i)
{
    for (; i + 1 < mm->nvma; i++)
        mm->vma[i] = mm->vma[i + 1];
    mm->nvma--;
}

/* ---- page faults ----------------------------------------------------------- */

/* Allocate a zeroed page and map it at va with the given permission bits. */
int map_new_page(struct mm *mm, uint va, uint perm, void **kva)
{
    pte_t *pte = walk(mm->pgdir, va, 1);
    if (!pte)
        return -1;
    void *page = kalloc();
    if (!page)
        return -1;
    memset(page, 0, PGSIZE);
    if (*pte & PTE_P)
        page_decref(pte_pa(*pte));
    pte_set(mm, pte, pte_mk(V2P(page), PTE_P | PTE_U | perm), PGROUNDDOWN(va));
    pt_sync();
    if (kva)
        *kva = page;
    return 0;
}

/* Resolve a fault at user address va (write = it was a write).  Returns 0
 * if the access can be retried, -1 if it is a real error (no region, or a
 * write to a read-only region). */
int vm_fault(struct mm *mm, uint va, int write)
{
    if (va >= USER_TOP)
        return -1;
    struct vma *v = vma_find(mm, va);
    if (!v || (write && !(v->flags & VM_W)))
        return -1;
    uint page_va = PGROUNDDOWN(va);
    pte_t *pte = walk(mm->pgdir, page_va, 1);
    if (!pte)
        return -1;
    uint perm = (v->flags & VM_W) ? PTE_W : 0;

    if (!(*pte & PTE_P))                            /* demand-zero */
        return map_new_page(mm, page_va, perm, 0);

    if (write && !(*pte & PTE_W)) {                 /* copy-on-write */
        uint old = pte_pa(*pte);
        if (page_refs(old) == 1) {
            pte_set(mm, pte, *pte | PTE_W, page_va);    /* last user: keep it */
        } else {
            char *copy = kalloc();
            if (!copy)
                return -1;
            memcpy(copy, P2V(old), PGSIZE);
            pte_set(mm, pte, pte_mk(V2P(copy), PTE_P | PTE_U | PTE_W), page_va);
            page_decref(old);
        }
        pt_sync();
        return 0;
    }
    /* Present and permitted: a stale TLB entry.  Flush it and retry. */
    if (is_active(mm))
        tlb_flush_page(page_va);
    return 0;
}

/* ---- user memory from the kernel ----------------------------------------
 * The kernel never dereferences a user pointer.  It looks the page up in
 * the process's page table (resolving demand-zero and copy-on-write as if
 * the process had touched it) and copies through the direct map.  A bad
 * pointer therefore just makes the system call fail. */

static void *user_page(struct mm *mm, uint va, int write)
{
    uint need = PTE_P | PTE_U | (write ? PTE_W : 0);
    if (va >= USER_TOP)
        return 0;
    pte_t *pte = walk(mm->pgdir, va, 0);
    if (!pte || (*pte & need) != need) {
        if (vm_fault(mm, va, write) < 0)
            return 0;
        pte = walk(mm->pgdir, va, 0);
        if (!pte || (*pte & need) != need)
            return 0;
    }
    return (char *)P2V(pte_pa(*pte)) + (va & (PGSIZE - 1));
}

int copyout(struct mm *mm, uint uva, const void *src, uint n)
{
    const char *s = src;
    if (uva + n < uva)
        return -1;
    while (n > 0) {
        char *k = user_page(mm, uva, 1);
        if (!k)
            return -1;
        uint chunk = PGSIZE - (uva & (PGSIZE - 1));
        if (chunk > n)
            chunk = n;
        memcpy(k, s, chunk);
        s += chunk, uva += chunk, n -= chunk;
    }
    return 0;
}

int copyin(struct mm *mm, void *dst, uint uva, uint n)
{
    char *d = dst;
    if (uva + n < uva)
        return -1;
    while (n > 0) {
        char *k = user_page(mm, uva, 0);
        if (!k)
            return -1;
        uint chunk = PGSIZE - (uva & (PGSIZE - 1));
        if (chunk > n)
            chunk = n;
        memcpy(d, k, chunk);
        d += chunk, uva += chunk, n -= chunk;
    }
    return 0;
}

/* Copy a NUL-terminated string of at most max-1 characters. */
int copyinstr(struct mm *mm, char *dst, uint uva, uint max)
{
    for (uint i = 0; i < max; i++) {
        char *k = user_page(mm, uva + i, 0);
        if (!k)
            return -1;
        dst[i] = *k;
        if (!*k)
            return 0;
    }
    return -1;
}

/* ---- mmap, munmap, mprotect ------------------------------------------------ */

int sys_mmap_impl(struct mm *mm, uint addr, uint len)
{
    if (len == 0 || len > MMAP_TOP - MMAP_BASE || (addr & (PGSIZE - 1)))
        return -1;
    len = PGROUNDUP(len);
    if (addr == 0) {
        /* first fit from MMAP_BASE, stepping over existing regions */
        addr = MMAP_BASE;
        for (int i = 0; i < mm->nvma; i++) {
            struct vma *v = &mm->vma[i];
            if (v->end <= addr)
                continue;
            if (v->start >= addr + len)
                break;
            addr = v->end;
        }
        if (addr + len > MMAP_TOP || addr + len < addr)
            return -1;
    }
    if (addr + len < addr || addr + len > USER_TOP)
        return -1;
    if (vma_add(mm, addr, addr + len, VM_W) < 0)
        return -1;
    return (int)addr;       /* no page yet: every page is demand-zero */
}

int sys_munmap_impl(struct mm *mm, uint addr, uint len)
{
    if (len == 0 || (addr & (PGSIZE - 1)))
        return -1;
    uint end = PGROUNDUP(addr + len);
    if (end <= addr || end > USER_TOP)
        return -1;
    if (vma_split(mm, addr) < 0 || vma_split(mm, end) < 0)
        return -1;
    for (int i = 0; i < mm->nvma;) {
        if (mm->vma[i].start >= addr && mm->vma[i].end <= end)
            vma_remove(mm, i);
        else
            i++;
    }
    for (uint va = addr; va < end; va += PGSIZE) {
        pte_t *pte = walk(mm->pgdir, va, 0);
        if (pte && (*pte & PTE_P)) {
            uint pa = pte_pa(*pte);
            pte_set(mm, pte, 0, va);
            page_decref(pa);
        }
    }
    pt_sync();
    return 0;
}

/* Change the write permission of [addr, addr+len), which must be fully
 * covered by regions.  Making a page writable that is still shared with
 * another process leaves it read-only in the page table: the first write
 * then copies it (copy-on-write). */
int sys_mprotect_impl(struct mm *mm, uint addr, uint len, int writable)
{
    if (len == 0 || (addr & (PGSIZE - 1)))
        return -1;
    uint end = PGROUNDUP(addr + len);
    if (end <= addr || end > USER_TOP)
        return -1;
    for (uint va = addr; va < end;) {
        struct vma *v = vma_find(mm, va);
        if (!v)
            return -1;
        va = v->end;
    }
    if (vma_split(mm, addr) < 0 || vma_split(mm, end) < 0)
        return -1;
    for (int i = 0; i < mm->nvma; i++) {
        struct vma *v = &mm->vma[i];
        if (v->start >= addr && v->end <= end)
            v->flags = writable ? (v->flags | VM_W) : (v->flags & ~VM_W);
    }
    for (uint va = addr; va < end; va += PGSIZE) {
        pte_t *pte = walk(mm->pgdir, va, 0);
        if (!pte || !(*pte & PTE_P))
            continue;
        pte_t val = *pte & ~PTE_W;
        if (writable && page_refs(pte_pa(*pte)) == 1)
            val |= PTE_W;
        if (val != *pte)
            pte_set(mm, pte, val, va);
    }
    pt_sync();
    return 0;
}
