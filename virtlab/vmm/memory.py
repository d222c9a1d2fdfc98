"""Machine memory: the VMM's own pages above guest RAM.

    offset 0x00000  the VMM's IDT (2 KiB) and TSS (at 0x800)
    offset 0x01000  the shadow GDT (up to 64 KiB)
    offset 0x11000  the page table of the VMM window
    offset 0x12000  frame pool: shadow page directories and page tables
    offset SIZE     a back end's own region, if it asks for one (a translation
                    cache), mapped into the window where it says

The shadow GDT is also visible at linear VMM_LINEAR + 0x1000 (the window at
0xFC000000, the top 64 MiB that Xen x86-32 also reserves) through one
page-directory entry that the VMM puts into every shadow page directory,
because the real CPU reads the GDT by linear address when the guest loads a
segment register.  Xen keeps its guests out of that range with segment limits;
Unicorn does not enforce segment limits, so here the window maps only the pages
the shadow GDT occupies, read-only and with the accessed bits preset (the CPU
never writes them).  A guest write there, or any access to the rest of the
window, faults into the VMM and ends the run; a read sees the guest's own
descriptors as the CPU gets them (DPL 1), nothing else.  No guest-controlled
page-table entry ever points into machine memory.
"""
from dataclasses import dataclass, field

from virtlab import x86
from virtlab.memmap import VMM_BASE_LINEAR

IDT_OFF, TSS_OFF, GDT_OFF, WINDOW_PT_OFF, POOL_OFF = 0x0, 0x800, 0x1000, 0x11000, 0x12000
WINDOW_PAGES = WINDOW_PT_OFF // x86.PAGE_SIZE
SIZE = 8 << 20


class OutOfFrames(Exception):
    pass


@dataclass
class FramePool:
    """Free machine frames (physical addresses), handed out and taken back."""
    free: list = field(default_factory=list)

    @classmethod
    def over(cls, start, end):
        return cls(list(range(end - x86.PAGE_SIZE, start - 1, -x86.PAGE_SIZE)))

    def take(self):
        if not self.free:
            raise OutOfFrames()
        return self.free.pop()

    def give(self, pa):
        self.free.append(pa)


class VmmMemory:
    def __init__(self, machine):
        self.mem = machine.vmm                   # PhysMem over machine memory
        self.base = machine.vmm_base
        self.pool = FramePool.over(self.base + POOL_OFF, self.base + min(SIZE, self.mem.size))

    def phys(self, off):
        return self.base + off

    def linear(self, off):
        return VMM_BASE_LINEAR + off

    # Paging entries are aligned words: read and written as such, one
    # index into the memory's word view (an unaligned address goes the
    # long way, through PhysMem).
    def u32(self, pa):
        off = pa - self.base
        return self.mem.u32(off) if off & 3 else self.mem.words[off >> 2]

    def set_u32(self, pa, value):
        off = pa - self.base
        if off & 3:
            self.mem.set_u32(off, value)
        else:
            self.mem.words[off >> 2] = value & 0xFFFFFFFF

    def write(self, pa, data):
        self.mem.write(pa - self.base, data)

    def zero_frame(self, pa):
        off = pa - self.base
        self.mem.view[off:off + x86.PAGE_SIZE] = bytes(x86.PAGE_SIZE)

    def window_pde(self):
        """The page-directory entry of the VMM window (its pages are mapped by
        map_gdt as the shadow GDT grows)."""
        pt = self.phys(WINDOW_PT_OFF)
        return pt | x86.PTE_P | x86.PTE_W | x86.PTE_A

    def map_window(self, window_off, machine_off, size, writable=False):
        """Map `size` bytes of machine memory at `machine_off` into the window
        at linear VMM_BASE_LINEAR + window_off, for supervisor code only (the
        window's directory entry has no U bit: guest user code never reaches
        it).  Beyond the shadow GDT's pages, which map_gdt rewrites."""
        pt = self.phys(WINDOW_PT_OFF)
        first = window_off // x86.PAGE_SIZE
        assert first >= WINDOW_PAGES and first + size // x86.PAGE_SIZE <= 1024
        flags = x86.PTE_P | x86.PTE_A | (x86.PTE_W | x86.PTE_D if writable else 0)
        for i in range(size // x86.PAGE_SIZE):
            self.set_u32(pt + 4 * (first + i), self.phys(machine_off + i * x86.PAGE_SIZE) | flags)

    def map_gdt(self, size):
        """Map exactly the pages holding `size` bytes of shadow GDT, read-only."""
        pt = self.phys(WINDOW_PT_OFF)
        first = GDT_OFF // x86.PAGE_SIZE
        used = (size + x86.PAGE_SIZE - 1) // x86.PAGE_SIZE
        for i in range(WINDOW_PAGES):
            entry = 0
            if first <= i < first + used:
                entry = self.phys(i * x86.PAGE_SIZE) | x86.PTE_P | x86.PTE_A
            self.set_u32(pt + 4 * i, entry)
