"""The hypervisor's part of every address space (0xFC000000 and up).

Xen x86-32 keeps its own mappings in the top 64 MiB of every page directory the
guest uses: when it validates a directory it writes those slots itself, and the
guest can never change them.  Here two slots are used (pv/layout.py has the
map): one for the machine-to-physical table, which the guest reads to turn the
machine addresses in its page tables back into its own page numbers, and one
for the tables the CPU itself needs while the guest runs (GDT, IDT, TSS) and
the two gate tables the hypervisor's delivery code reads (the guest's trap
table and its event callback).  Everything is read-only and supervisor-only:
the guest kernel at ring 1 may read it, user code may not touch it, nobody
may write it.
"""
from virtlab import x86

from . import abi, layout as L

_RO = x86.PTE_P | x86.PTE_A                       # accessed preset: the CPU never writes
_SLOT = x86.PTE_P | x86.PTE_W | x86.PTE_A         # the PTEs decide: read-only


class HyperSpace:
    def __init__(self, mem, frames, machine_frames):
        self.mem = mem
        self.shared_info = frames.take()
        m2p_pages = (machine_frames * 4 + L.PAGE - 1) // L.PAGE
        self.m2p = frames.take(m2p_pages) << 12
        self.m2p_entries = machine_frames
        self.mem.view[self.m2p:self.m2p + machine_frames * 4] = b"\xff" * (machine_frames * 4)
        m2p_l1, area_l1 = frames.take(), frames.take()
        self._map(m2p_l1, 0, self.m2p >> 12, m2p_pages)
        self._gdt(frames, area_l1)
        self.idt, self.vidt, self.cbidt, self.tss = (frames.take() << 12 for _ in range(4))
        for i, pa in enumerate((self.idt, self.vidt, self.cbidt, self.tss)):
            self._map(area_l1, ((L.IDT_LINEAR - L.PERDOMAIN_LINEAR) >> 12) + i, pa >> 12, 1)
        slot = abi.FIRST_HYPERVISOR_SLOT
        self.slots = {slot: (m2p_l1 << 12) | _SLOT, slot + 1: (area_l1 << 12) | _SLOT}

    def _map(self, l1, first, mfn, n):
        for i in range(n):
            self.mem.set_u32((l1 << 12) + 4 * (first + i), ((mfn + i) << 12) | _RO)

    def _gdt(self, frames, area_l1):
        """The real GDT: 15 pages at GDT_LINEAR.  The first 14 would hold a
        guest's own descriptors (set_gdt, not offered here) and map one zero
        frame; the last holds Xen's flat ring-1 and ring-3 segments and the
        TSS descriptor, with their accessed bits preset."""
        zero, last = frames.take(), frames.take()
        for i in range(L.GDT_PAGES - 1):
            self._map(area_l1, i, zero, 1)
        self._map(area_l1, L.GDT_PAGES - 1, last, 1)
        self.gdt_page = last << 12
        for selector, access in ((abi.FLAT_KERNEL_CS, 0xBB), (abi.FLAT_KERNEL_DS, 0xB3),
                                 (abi.FLAT_USER_CS, 0xFB), (abi.FLAT_USER_DS, 0xF3)):
            self.mem.write(self._slot(selector),
                           x86.make_segment(0, 0xFFFFF, access))

    def finish_tss(self):
        """The TSS descriptor (busy, as after ltr), once the TSS frame exists."""
        self.mem.write(self._slot(L.TSS_SELECTOR),
                       x86.make_segment(L.TSS_LINEAR, L.TSS_LIMIT, 0x8B, 0))

    def _slot(self, selector):
        """Machine address of a descriptor of the GDT's last page."""
        return self.gdt_page + (selector & ~7) - L.PAGE * (L.GDT_PAGES - 1)

    def descriptor(self, selector):
        """(low, high) of one of the hypervisor's descriptors."""
        return x86.split_descriptor(self.mem.read(self._slot(selector), 8))

    # -- the machine-to-physical table ----------------------------------------------
    def m2p_set(self, mfn, pfn):
        self.mem.set_u32(self.m2p + 4 * mfn, pfn)

    def m2p_get(self, mfn):
        return self.mem.u32(self.m2p + 4 * mfn)

    # -- gates --------------------------------------------------------------------------
    def set_gate(self, table, vector, selector, offset, gate_type, dpl):
        """Write (or, with offset 0, clear) a gate of one of the IDTs."""
        raw = (x86.make_gate(selector, offset, gate_type, dpl) if offset
               else bytes(8))
        self.mem.write(table + 8 * vector, raw)

    def set_kernel_stack(self, ss, esp):
        """TSS.SS1:ESP1: where the CPU switches to when the direct trap takes
        the guest from ring 3 to its kernel at ring 1."""
        self.mem.set_u32(self.tss + x86.TSS_ESP1, esp)
        self.mem.set_u32(self.tss + x86.TSS_SS1, ss)
