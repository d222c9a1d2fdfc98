"""Page types: how a PV hypervisor lets the guest keep its own page tables.

Under direct paging the CPU walks the guest's page tables as they are.  The
hypervisor stays in control with one invariant, Xen's: **no frame that the CPU
uses as a page table is ever mapped writable**, so the guest can change a page
table only by asking (mmu_update), and every entry the CPU can walk has been
checked.  It keeps, per machine frame of the domain, a *type* and a *type
count* (Xen's page_info):

    none      no reference that matters
    writable  count = the page-table entries mapping it with W
    l1        count = the page-directory entries (and pins) using it as a page table
    l2        count = the pins and base pointers using it as a page directory

A frame changes type only when its count is 0.  Giving a frame the type l1 or
l2 *validates* it: every entry must name a frame the domain owns and must
itself take a reference of the right type (a W mapping takes `writable`, a
directory entry takes `l1`); if any fails, what was taken is given back and
the request is refused.  When the count drops to 0 again the references its
entries held are released.  So a page table cannot map itself writable, a
frame mapped writable cannot become a page table, and a directory cannot
point at anything that is not a validated page table.

Refusals are `Refused(errno, why)`: the hypercall returns -errno, and `why`
is for traces and the fuzzer.
"""
from dataclasses import dataclass

from virtlab import x86

from . import abi

NONE, WRITABLE, L1, L2 = "none", "writable", "l1", "l2"

# Bits a guest may use: P W U PWT PCD A D and the three available bits.  PAT
# and G in an L1 entry, and PS (a 4 MiB page) in an L2 entry, are refused.
L1_ALLOWED = 0x7F | 0xE00
L2_ALLOWED = 0x7F & ~x86.PTE_PS | 0xE00
_AD = x86.PTE_A | x86.PTE_D


class Refused(Exception):
    def __init__(self, errno, why):
        super().__init__(why)
        self.errno = errno


@dataclass
class Frame:
    """One machine frame of the domain."""
    type: str = NONE
    count: int = 0
    pinned: bool = False
    validating: bool = False      # its entries are being checked right now


class _Records(dict):
    """Frame index -> Frame, each made the first time it is asked for: a
    domain of thousands of frames uses a few hundred, and making a record of
    every one cost more than building the domain.  A frame never asked for
    is a Frame() as made: no type, no references, not pinned."""
    __slots__ = ()

    def __missing__(self, i):
        f = self[i] = Frame()
        return f


class FrameTable:
    """The page types of the domain's frames, and their validation.

    `mem` is machine memory; the domain owns machine frames [first, first +
    nr); `shared_info` is the one hypervisor frame it may map (writable);
    `hypervisor_slots` are the directory entries (slot -> value) the
    hypervisor puts into every validated page directory; every other slot of
    its range (FIRST_HYPERVISOR_SLOT up) is made empty.  None of them is
    validated: whatever the guest wrote there while the frame was still
    writable (a directory entry giving it a writable map of the
    hypervisor's IDT, say) must never reach the CPU."""

    def __init__(self, mem, first, nr, shared_info, hypervisor_slots, stored=None):
        self.mem = mem
        self.first, self.nr = first, nr
        self.frames = _Records()       # index (mfn - first) -> Frame; callers check the range
        self.shared_info = shared_info
        self.hypervisor_slots = {slot: hypervisor_slots.get(slot, 0)
                                 for slot in range(abi.FIRST_HYPERVISOR_SLOT, 1024)}
        self.stored = stored           # stored(ma, n): code at ma may have changed (Pv.stored)
        self.new_tables = False        # a frame became a page table: flush the TLB
        self.held = {}                 # mfn -> writable references the hypervisor holds

    # -- ownership -------------------------------------------------------------
    def owns(self, mfn):
        return self.first <= mfn < self.first + self.nr

    def frame(self, mfn):
        i = mfn - self.first                    # owns(), inline (update_entry has this too)
        if not 0 <= i < self.nr:
            raise Refused(abi.EINVAL, f"frame {mfn:#x} is not the domain's")
        return self.frames[i]

    def type_of(self, mfn):
        """The frame's type while it holds references, else NONE."""
        f = self.frames.get(mfn - self.first)       # (None: not owned, or never used)
        return f.type if f is not None and f.count else NONE

    def records(self):
        """(mfn, Frame) of every frame whose record was ever made, in order:
        any other frame has no type, no references and no pin."""
        return [(self.first + i, self.frames[i]) for i in sorted(self.frames)]

    # -- types --------------------------------------------------------------------
    # [tour pv 120] Page types and reference counts: Xen's safety argument.
    # A frame is a page directory, a page table or writable, never two at once: a
    # frame in use as a page table is never mapped writable, so the guest cannot
    # change a translation behind the hypervisor's back.
    def get_type(self, mfn, kind):
        """Take one reference of type `kind` (validating the frame if it gains
        the type now), or raise Refused."""
        f = self.frame(mfn)
        if f.validating:
            raise Refused(abi.EINVAL, f"frame {mfn:#x} refers to itself")
        if f.count and f.type == kind:
            f.count += 1
            return
        if f.count:
            raise Refused(abi.EINVAL, f"frame {mfn:#x} is in use as {f.type}, "
                                      f"not {kind} ({f.count} references)")
        if kind in (L1, L2):
            self._make_table(mfn, f, kind)
        f.type, f.count = kind, 1

    def _make_table(self, mfn, f, kind):
        f.validating = True
        try:
            if kind == L1:
                self._validate(mfn, self._get_l1e, self._put_l1e, 1024)
            else:
                self._validate(mfn, self._get_l2e, self._put_l2e, abi.FIRST_HYPERVISOR_SLOT)
                self._install_hypervisor_slots(mfn)
        finally:
            f.validating = False
        self.new_tables = True

    def put_type(self, mfn):
        """Drop one reference; the last one of a page table releases what its
        entries held."""
        f = self.frames[mfn - self.first]
        f.count -= 1
        if f.count:
            return
        if f.type == L1:
            self._release(mfn, self._put_l1e, 1024)
        elif f.type == L2:
            self._release(mfn, self._put_l2e, abi.FIRST_HYPERVISOR_SLOT)
        f.type = NONE

    def _entries(self, mfn, slots):
        """The first `slots` entries of the table in frame `mfn`, read at once
        (a copy: validating one entry may write another frame, never this)."""
        at = mfn << 10                            # the frame's first word
        return self.mem.words[at:at + slots].tolist()

    def _validate(self, mfn, get, put, slots):
        """Take the references of the first `slots` entries of a new table;
        if one is refused, give back those taken, and refuse the table."""
        taken = []
        for i, e in enumerate(self._entries(mfn, slots)):
            if e & x86.PTE_P:
                try:
                    get(e)
                except Refused as r:
                    for t in reversed(taken):
                        put(t)
                    raise Refused(r.errno, f"frame {mfn:#x} slot {i}: {r}") from None
                taken.append(e)

    def _release(self, mfn, put, slots):
        for e in self._entries(mfn, slots):
            if e & x86.PTE_P:
                put(e)

    def _install_hypervisor_slots(self, mfn):
        for slot, value in self.hypervisor_slots.items():
            self.mem.set_u32((mfn << 12) + 4 * slot, value)

    # -- entries --------------------------------------------------------------------
    def _get_l1e(self, e):
        if e & ~x86.PAGE_MASK & ~L1_ALLOWED:
            raise Refused(abi.EINVAL, f"entry {e:#010x} uses reserved bits")
        mfn = e >> 12
        if mfn == self.shared_info:
            return
        if not self.first <= mfn < self.first + self.nr:          # owns(), inline
            raise Refused(abi.EINVAL, f"entry {e:#010x} maps frame {mfn:#x}, "
                                      "which is not the domain's")
        if e & x86.PTE_W:
            self.get_type(mfn, WRITABLE)

    def _put_l1e(self, e):
        mfn = e >> 12
        if e & x86.PTE_W and mfn != self.shared_info:
            self.put_type(mfn)

    def _get_l2e(self, e):
        if e & ~x86.PAGE_MASK & ~L2_ALLOWED:
            raise Refused(abi.EINVAL, f"directory entry {e:#010x}: no 4 MiB pages "
                                      "or reserved bits")
        self.get_type(e >> 12, L1)

    def _put_l2e(self, e):
        self.put_type(e >> 12)

    # -- updates of live tables (mmu_update) ------------------------------------------
    # [tour pv 130] One entry of a live page table, changed.
    # The new entry takes its references before the old one drops its own; no entry
    # may map a frame the domain does not own, and no directory entry may touch the
    # hypervisor's slots at the top of the address space.
    def update_entry(self, ptr, new):
        """`*ptr = new` for the entry at machine address ptr of a frame the
        domain owns: validated as an L1 or L2 entry if the frame is a page
        table, a plain store otherwise.  (frame() inline: every mmu_update
        and update_va_mapping request comes here.)"""
        mfn, index = ptr >> 12, (ptr & 0xFFF) >> 2
        i = mfn - self.first
        if not 0 <= i < self.nr:
            raise Refused(abi.EINVAL, f"frame {mfn:#x} is not the domain's")
        f = self.frames[i]
        kind = f.type if f.count else NONE
        words, at = self.mem.words, ptr >> 2           # the entry, as an aligned word
        if kind == L1:
            get, put = self._get_l1e, self._put_l1e
        elif kind == L2:
            if index >= abi.FIRST_HYPERVISOR_SLOT:
                raise Refused(abi.EPERM, f"directory slot {index} belongs to the hypervisor")
            get, put = self._get_l2e, self._put_l2e
        else:                       # a plain store, perhaps over code the guest ran
            words[at] = new & 0xFFFFFFFF
            if self.stored is not None:
                self.stored(ptr, 4)
            return
        # Take the new entry's references before dropping the old one's, so
        # that rewriting an entry with itself never releases a table.
        old = words[at]
        if (old ^ new) & ~_AD == 0:
            words[at] = new & 0xFFFFFFFF
            return
        if new & x86.PTE_P:
            get(new)
        words[at] = new & 0xFFFFFFFF
        if old & x86.PTE_P:
            put(old)

    def hold_writable(self, mfn):
        """The hypervisor maps a frame of the domain writable for itself (the
        block ring, as a Xen back end maps its granted ring): that is a
        writable reference like any page-table entry's, so the frame can
        never become a page table while it is held."""
        self.get_type(mfn, WRITABLE)
        self.held[mfn] = self.held.get(mfn, 0) + 1

    # -- pins --------------------------------------------------------------------------
    def pin(self, mfn, kind):
        f = self.frame(mfn)
        if f.pinned:
            raise Refused(abi.EINVAL, f"frame {mfn:#x} is already pinned")
        self.get_type(mfn, kind)
        f.pinned = True

    def unpin(self, mfn):
        f = self.frame(mfn)
        if not f.pinned:
            raise Refused(abi.EINVAL, f"frame {mfn:#x} is not pinned")
        f.pinned = False
        self.put_type(mfn)
