"""Ring compression: the guest kernel runs at ring 1, its user code at ring 3.

The guest kernel's descriptors say DPL 0; the CPU must run that code at ring 1
so that its privileged instructions fault.  The VMM therefore gives the CPU a
*shadow GDT*: the guest's GDT with every ring-0 code and data descriptor moved
to DPL 1.  Every guest segment is also truncated below the VMM window at
0xFC000000, as Xen x86-32 does (a segment that cannot be is made not-present).
Unicorn does not enforce segment limits, so the window's own page mappings are
what actually keeps the guest out (vmm_memory.py); the truncation keeps the
shadow GDT what a real CPU would need.  System descriptors (TSS, LDT, gates) are
not given to the CPU: the VMM emulates `ltr` and `lldt`.

The selectors the guest loads are unchanged (0x08 is still entry 1); the RPL the
CPU reports is the real one, which is one of the ways this technique is visible
to a guest that looks (`mov ax, cs` shows RPL 1).
"""
import struct

from virtlab import x86
from virtlab.memmap import VMM_BASE_LINEAR

from .memory import GDT_OFF

GUEST_TOP = VMM_BASE_LINEAR - 1          # highest linear address a guest segment reaches
KERNEL_RING = 1                          # the real ring of the guest kernel's ring 0
MAX_GDT = 0x10000


def real_ring(guest_ring):
    """The ring the CPU runs guest code at: the kernel's ring 0 becomes 1."""
    return 1 if guest_ring == 0 else guest_ring


def guest_ring(real):
    return 0 if real == 1 else real


def guest_selector(real):
    """A selector the CPU holds, as the guest believes it: the RPL 1 its
    kernel's segments really have is the RPL 0 it loaded."""
    return real & ~3 if real & 3 == 1 else real


# [tour trap 25] Ring compression: the shadow GDT.
# A descriptor of the guest's GDT becomes its shadow with DPL 0 turned into 1 and its
# limit kept below the VMM window.  The guest cannot tell, except through the
# instructions that show a selector's RPL or the real tables (the fidelity workloads).
def compress(lo, hi):
    """A guest code/data descriptor as the CPU gets it: DPL 0 -> 1, the limit
    truncated below the VMM window, the accessed bit preset (so the CPU never
    writes the shadow GDT)."""
    if not hi & x86.DESC_S:
        return 0, 0                      # system descriptor: emulated, not loaded
    dpl = x86.seg_dpl(hi)
    hi = (hi & ~(3 << x86.DESC_DPL_SHIFT)) | (real_ring(dpl) << x86.DESC_DPL_SHIFT)
    hi |= 1 << 8                         # accessed
    base, limit = x86.seg_base(lo, hi), x86.seg_limit(lo, hi)
    if not hi & x86.DESC_CODE and hi & (1 << 10):
        # Expand-down: the offsets above the limit, up to 64 KiB (B clear)
        # or 4 GiB (B set).  Only the first can lie wholly below the window.
        small = not hi & x86.DESC_B and base + 0xFFFF <= GUEST_TOP
        return (lo, hi) if small else (lo, hi & ~x86.DESC_P)
    if base > GUEST_TOP:
        if base + limit > GUEST_TOP:
            return lo, hi & ~x86.DESC_P        # cannot be kept below the window
    if base + limit > GUEST_TOP:
        room = GUEST_TOP - base                  # highest offset still below the window
        if hi & x86.DESC_G:
            if room < 0xFFF:
                return lo, hi & ~x86.DESC_P
            room = ((room + 1) >> 12) - 1        # whole pages only, rounding down
        lo, hi = _set_limit(lo, hi, room)
    return lo, hi


def _set_limit(lo, hi, limit):
    """Set the raw 20-bit limit field (in the descriptor's own granularity)."""
    lo = (lo & 0xFFFF0000) | (limit & 0xFFFF)
    hi = (hi & ~0x000F0000) | (limit & 0x000F0000)
    return lo, hi


_ACCESSED = 1 << 8


def _first_use(lo, hi):
    return bool(hi & x86.DESC_S and hi & x86.DESC_P and not hi & _ACCESSED)


def ring1_code(hi):
    """A code segment of the guest's own ring 1.  Ring compression has no
    ring left for it: the guest kernel's ring 0 runs at real ring 1, and
    code there would run as the kernel.  Its shadow is never present, so
    that every way into it faults into the VMM, which ends the run saying
    why (RingCompressedVmm.refuse_ring1)."""
    return bool(hi & x86.DESC_S and hi & x86.DESC_CODE and x86.seg_dpl(hi) == 1)


def shadow_descriptor(lo, hi):
    """The shadow GDT's entry: compressed, and not present while the guest's
    descriptor has never been loaded.  The CPU sets a descriptor's accessed
    bit on the first load into a segment register; it reads the shadow GDT,
    whose entries have it preset (so that the CPU never writes there), so the
    guest's copy would never show it.  A never-loaded descriptor therefore
    faults (#NP) on its first load, and the VMM sets the bit in the guest's
    GDT (ShadowGdt.first_load)."""
    absent = _first_use(lo, hi) or ring1_code(hi)
    lo, hi = compress(lo, hi)
    return (lo, hi & ~x86.DESC_P) if absent else (lo, hi)


def segment_cache(selector, lo, hi, ring):
    """(selector, base, limit, flags) for a real segment register holding the
    guest descriptor (lo, hi) while the guest runs at guest ring `ring`."""
    lo, hi = compress(lo, hi)
    return ((selector & ~3) | real_ring(ring), x86.seg_base(lo, hi), x86.seg_limit(lo, hi), hi)


# [tour trap 27] Keeping the shadow GDT coherent.
# The guest may rewrite a descriptor with a plain store, long after its lgdt, and
# expect the next load to see it (a segment register already loaded keeps what it
# has, on a real CPU too).  The frames of the guest's GDT are watched by the shadow
# MMU: the guest's first write to one makes every shadow entry of that page stale,
# that is not present, so that the next load of any of them faults (#NP) and the
# VMM derives the entry again from what the guest's GDT says by then.
class ShadowGdt:
    """The GDT the CPU uses, kept in machine memory inside the VMM window.
    `watch(frame, on_write)`: the paging component's write watch."""

    def __init__(self, vmm, watch):
        self.vmm = vmm
        self.base_linear = vmm.linear(GDT_OFF)
        self.base_phys = vmm.phys(GDT_OFF)
        self.watch = watch
        self.frames = {}          # guest frame of the GDT -> offsets of its entries there
        self.stale = set()        # offsets of entries the guest may have rewritten

    def sync(self, view, gdtr):
        """Rebuild from the guest's GDT at gdtr = (base, limit), read through
        the guest's own paging, and watch its frames; returns the real GDTR
        (base, limit)."""
        base, limit = gdtr
        limit = min(limit, MAX_GDT - 1)
        raw = view.read(base, limit + 1) if limit else b""
        pages = (len(raw) + 4095) // 4096
        out = bytearray(pages * 4096)            # the rest of the last page is zero
        for i in range(8, len(raw) - 7, 8):
            lo, hi = struct.unpack_from("<II", raw, i)
            struct.pack_into("<II", out, i, *shadow_descriptor(lo, hi))
        self.vmm.write(self.base_phys, bytes(out))
        self.vmm.map_gdt(len(raw))
        self.stale.clear()
        self.frames = {}
        for i in range(8, len(raw) - 7, 8):
            frame = view.phys((base + i) & 0xFFFFFFFF) & x86.PAGE_MASK
            self.frames.setdefault(frame, []).append(i)
        for frame in self.frames:
            self.watch(frame, self._written)
        return self.base_linear, limit

    def _written(self, frame):
        """The guest is about to write a frame of its GDT (the watch then
        ends: _refresh watches it again)."""
        for i in self.frames.get(frame, ()):
            at = self.base_phys + i + 4
            self.vmm.write(at, (self.vmm.u32(at) & ~x86.DESC_P).to_bytes(4, "little"))
            self.stale.add(i)

    def _refresh(self, view, gdtr, selector):
        """The shadow of a stale entry, derived again from the guest's
        descriptor (its page watched again); True if it is now present."""
        index = selector & ~7
        self.stale.discard(index)
        for frame, offsets in self.frames.items():
            if index in offsets:
                self.watch(frame, self._written)
        d = self.descriptor(view, gdtr, selector)
        entry = shadow_descriptor(*d) if d is not None else (0, 0)
        self.vmm.write(self.base_phys + index, struct.pack("<II", *entry))
        return bool(entry[1] & x86.DESC_P)

    def first_load(self, view, gdtr, selector, into_cs=False):
        """A #NP on loading `selector`: if its shadow was stale and is present
        again (_refresh), the load is retried.  If the guest's descriptor is
        present but not yet accessed, this is the first load (shadow_descriptor): set
        the accessed bit in the guest's GDT as the CPU would have, and make
        the shadow entry present.  False if the #NP is the guest's own.
        `into_cs`: a load of CS, for which the CPU model (the reference)
        leaves the bit alone (measured: a far jump or iret does not set it;
        a load of a readable code segment into DS does)."""
        if self.retry_stale(view, gdtr, selector):
            return True
        if not self.never_loaded(view, gdtr, selector):
            return False
        d = self.descriptor(view, gdtr, selector)
        lo, hi = d[0], d[1] | _ACCESSED
        if not into_cs:
            base, _ = gdtr
            view.write(base + (selector & ~7) + 4, hi.to_bytes(4, "little"))
        self.vmm.write(self.base_phys + (selector & ~7), struct.pack("<II", *compress(lo, hi)))
        return True

    def retry_stale(self, view, gdtr, selector):
        """True if `selector`'s shadow entry was stale and, derived again from
        the guest's descriptor, is present now: the load is to be retried."""
        return selector & ~7 in self.stale and self._refresh(view, gdtr, selector)

    def never_loaded(self, view, gdtr, selector):
        """True if the guest's descriptor for `selector` is present and its
        accessed bit clear (shadow_descriptor keeps such an entry absent)."""
        d = self.descriptor(view, gdtr, selector)
        return d is not None and _first_use(*d)

    def mark_accessed(self, view, gdtr, selector, into_cs=False):
        """The VMM loaded `selector` for the guest, as the CPU would have.  A
        load of CS leaves everything as it is: the shadow entry stays not
        present, so that a later load into a data segment register still
        sets the bit."""
        if not into_cs and self.never_loaded(view, gdtr, selector):
            self.first_load(view, gdtr, selector)

    def descriptor(self, view, gdtr, selector):
        """The guest's own descriptor for `selector` (lo, hi), or None."""
        base, limit = gdtr
        index = selector & ~7
        if selector & 4 or index == 0 or index + 7 > limit:
            return None
        return x86.split_descriptor(view.read(base + index, 8))
