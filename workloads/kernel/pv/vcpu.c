/*
 * vcpu.c -- the state of our virtual CPU that a ring-1 kernel cannot keep
 * in the CPU itself.
 *
 * Half of it is the hypervisor's: vcpu_info in the shared-info page, where
 * the event mask (our IF), the pending flags, CR2 and the system time live.
 * Xen does not map that page for us; we map it ourselves (kvm_init), by its
 * machine address from start_info.  Until then, vcpu points at a stand-in
 * whose mask is set, so irq_disable()/irq_enable() work from the first
 * instruction -- events are masked at start anyway.
 *
 * The other half we keep ourselves: shadows of CR0 and CR3, which we can
 * no longer read.
 */
#include "defs.h"
#include "priv.h"

_Static_assert(UCODE_SEL == FLAT_USER_CS && UDATA_SEL == FLAT_USER_DS,
               "mmu.h's user selectors are the hypervisor's flat ones");

static struct vcpu_info boot_vcpu = { .evtchn_upcall_mask = 1 };
struct vcpu_info *vcpu = &boot_vcpu;
struct shared_info *shinfo;

uint cr0_shadow = CR0_PE | CR0_ET | CR0_WP | CR0_PG;
uint cr3_shadow;

/* Map the shared-info page at va, whose page table must exist, and use it
 * from now on.  It is not one of our pages: its entry names a machine frame
 * outside the page-frame list, which the hypervisor allows for this page. */
void map_shared_info(uint va)
{
    int r = HYPERVISOR_update_va_mapping(va, PTE_ADDR(xen_start_info->shared_info) | PTE_P | PTE_W,
                                         UVMF_INVLPG);
    if (r < 0)
        panic("cannot map the shared-info page: error %d", r);
    shinfo = (struct shared_info *)va;
    vcpu = &shinfo->vcpu_info[0];       /* masked, like boot_vcpu */
}
