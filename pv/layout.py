"""Where the hypervisor and the domain live in machine memory.

A PV guest's page tables hold machine addresses, and the CPU walks them as they
are (direct paging): there is no shadow.  The hypervisor therefore has to
decide which machine frames are the domain's, and must never let an entry the
guest controls name any other.  virtlab's machine is twice the domain's size:

    machine frames 0 .. N-1     the hypervisor's: its M2P table, GDT, IDT, TSS,
                                the shared-info page, the page tables of its
                                own part of every address space, and free frames
    machine frames N .. 2N-1    the domain's N pages, in a scrambled order

so that pseudo-physical page `pfn` lives in machine frame `N + scramble(pfn)`.
The order is scrambled on purpose: consecutive pages are not consecutive
frames and no page is at its own number, so a guest that puts a pfn where an
mfn belongs names a hypervisor frame and is refused at once, instead of
working by luck.

The top 64 MiB of every address space (0xFC000000 up, page-directory slots
1008-1023) is the hypervisor's, as on Xen x86-32.  It maps, read-only and for
supervisor code only:

    0xFC000000  the machine-to-physical table, one u32 per machine frame
    0xFC400000  the real GDT (15 pages; Xen's flat descriptors in the last)
    0xFC410000  the real IDT: only the direct `int 0x80` trap gate, if any
    0xFC411000  the guest's trap table, as IDT gates (how bounces find handlers)
    0xFC412000  the event callback, as the one gate of a table of its own
    0xFC413000  the real TSS: SS1:ESP1, the guest kernel's stack

The CPU needs the GDT at a linear address to load segment registers, the TSS to
switch stacks on the direct trap, and the IDT for the same trap; the two
virtual tables are read by the hypervisor's delivery code through the same
paging as everything else (virtlab/delivery.py).
"""
from dataclasses import dataclass
from math import gcd

from virtlab import x86

from . import abi

PAGE = x86.PAGE_SIZE
M2P_LINEAR = abi.MACH2PHYS_VIRT_START
PERDOMAIN_LINEAR = abi.HYPERVISOR_VIRT_START + (4 << 20)
GDT_LINEAR = PERDOMAIN_LINEAR
GDT_PAGES = 15                                  # Xen's descriptors are at 0xE018..0xE037
GDT_LIMIT = 0xE03F
IDT_LINEAR = PERDOMAIN_LINEAR + 0x10000
VIDT_LINEAR = IDT_LINEAR + PAGE
CALLBACK_IDT_LINEAR = IDT_LINEAR + 2 * PAGE
TSS_LINEAR = IDT_LINEAR + 3 * PAGE
IDT_LIMIT = 256 * 8 - 1
TSS_SELECTOR = 0xE038                           # after the four flat descriptors
TSS_LIMIT = 103


# [tour pv 30] Machine frames are not pseudo-physical frames.
# The domain's pages get machine frames in a scrambled order above its RAM, so a guest
# that forgets to translate through the machine-frame list fails at once instead of by
# luck.
def scramble(nr_pages):
    """The machine frame of each pseudo-physical page: N + (pfn * k) mod N,
    with k odd and coprime with N, so the map is one-to-one and no two
    consecutive pages are neighbours."""
    k = 0x9E3779B1 % nr_pages | 1
    while gcd(k, nr_pages) != 1 or k < 3:
        k += 2
    return [nr_pages + (pfn * k + nr_pages // 3) % nr_pages for pfn in range(nr_pages)]


@dataclass
class HypervisorFrames:
    """The hypervisor's machine frames, handed out from frame 1 up (frame 0 is
    never used: a zero in a frame field is never a valid frame)."""
    limit: int
    next: int = 1

    def take(self, n=1):
        if self.next + n > self.limit:
            raise MemoryError("the hypervisor's frames are exhausted")
        first = self.next
        self.next += n
        return first
