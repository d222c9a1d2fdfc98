"""The memory hypercalls: mmu_update, mmuext_op, update_va_mapping.

A PV guest changes its page tables only through these.  Each request is
checked by the page-type machinery (frames.py) before it can reach an entry
the CPU walks; a batch stops at the first bad request and says how many were
done, so the guest knows how far it got (Xen's success_count).

Batching is the point (Barham et al., section 3.3): a fork changes hundreds of
entries, and one hypercall carries them all.  The counters say how many
requests each call carried (hypercall.mmu_update.items).
"""

from virtlab import x86

from . import abi
from .frames import L1, L2, Refused

BATCH_MAX = 4096               # requests in one call (Xen preempts instead; virtlab refuses)


class Mmu:
    def __init__(self, machine, frames, space, guest):
        self.machine = machine
        self.frames = frames
        self.space = space
        self.guest = guest
        self.baseptr = None            # mfn of the page directory in CR3

    # -- mmu_update -------------------------------------------------------------------------
    # mmu_update(reqs, count, done_ptr, dom) and mmuext_op(ops, ...): a batch
    # (_batch) of requests of their format, each done by _update or _ext
    # (given the request's fields as one tuple).  (Methods, not partials
    # with keywords: a partial that adds keywords costs twice the call.)
    def mmu_update(self, reqs, count, done_ptr, dom):
        return self._batch(reqs, count, done_ptr, dom, abi.MMU_UPDATE_REQ, self._update,
                           "hypercall.mmu_update.items")

    def mmuext_op(self, ops, count, done_ptr, dom):
        return self._batch(ops, count, done_ptr, dom, abi.MMUEXT_REQ, self._ext,
                           "hypercall.mmuext_op.items")

    def _update(self, request):
        ptr, val = request
        cmd, ptr = ptr & 3, ptr & ~3
        if val >> 32 or ptr >> 32:
            raise Refused(abi.EINVAL, "non-PAE entries are 32 bits")
        if cmd == abi.MMU_NORMAL_PT_UPDATE:
            self.frames.update_entry(ptr, val)
        elif cmd == abi.MMU_MACHPHYS_UPDATE:
            if not self.frames.owns(ptr >> 12) or val >= self.frames.nr:
                raise Refused(abi.EINVAL, f"M2P update of frame {ptr >> 12:#x} to {val:#x}")
            self.space.m2p_set(ptr >> 12, val)
        else:
            raise Refused(abi.ENOSYS, f"mmu_update command {cmd}")

    # -- mmuext_op ------------------------------------------------------------------------
    def _ext(self, request):
        cmd, arg1, _arg2 = request
        f = self.frames
        if cmd == abi.MMUEXT_PIN_L1_TABLE:
            f.pin(arg1, L1)
        elif cmd == abi.MMUEXT_PIN_L2_TABLE:
            f.pin(arg1, L2)
        elif cmd == abi.MMUEXT_UNPIN_TABLE:
            f.unpin(arg1)
        elif cmd == abi.MMUEXT_NEW_BASEPTR:
            self.new_baseptr(arg1)
        elif cmd == abi.MMUEXT_TLB_FLUSH_LOCAL or cmd == abi.MMUEXT_INVLPG_LOCAL:
            # Unicorn's TLB has no single-entry flush: an INVLPG flushes it all,
            # which is never wrong, only slower.
            self.machine.flush_tlb_on_entry()
        else:
            raise Refused(abi.ENOSYS, f"mmuext_op command {cmd}")

    def new_baseptr(self, mfn):
        """Load CR3 with a page directory: it must be (or become) a validated
        L2 table, and the old one loses the reference CR3 held."""
        self.frames.get_type(mfn, L2)
        if self.baseptr is not None:
            self.frames.put_type(self.baseptr)
        self.baseptr = mfn
        self.machine.state.set_cr(3, mfn << 12)
        self.machine.flush_tlb_on_entry()

    # [tour pv 110] A batch, validated request by request.
    # The first request refused stops the batch with Xen's error, and the guest learns
    # how many succeeded.
    def _batch(self, base, count, done_ptr, dom, fmt, do, counter):
        if dom != abi.DOMID_SELF:
            return -abi.ESRCH
        if count > BATCH_MAX or count < 0:
            return -abi.EINVAL
        c = self.machine.counters
        done, result = 0, 0
        unpack, size = self.guest.unpack, fmt.size
        try:
            for i in range(count):
                do(unpack(fmt, base + size * i))     # (the tuple: no *args call)
                done += 1
        except Refused as r:
            result = -r.errno
        c[counter] += done
        if self.frames.new_tables:                 # _tables_changed(), its test inline
            self._tables_changed()
        if done_ptr:
            try:
                self.guest.set_u32(done_ptr, done)
            except Refused:
                return -abi.EFAULT
        return result

    # -- update_va_mapping -------------------------------------------------------------------
    def update_va_mapping(self, va, val, flags):
        """Write the L1 entry that maps `va` in the current address space:
        one validated update and, with flags, the TLB flush that must follow
        it, in one hypercall (the common case for a page fault)."""
        if va >= abi.HYPERVISOR_VIRT_START or flags & ~abi.UVMF_FLUSHTYPE_MASK:
            return -abi.EINVAL
        pde = self.machine.mem.u32((self.baseptr << 12) + 4 * (va >> 22))
        if not pde & x86.PTE_P or self.frames.type_of(pde >> 12) != L1:
            return -abi.EINVAL
        try:
            self.frames.update_entry((pde & x86.PAGE_MASK) + 4 * ((va >> 12) & 0x3FF), val)
        except Refused as r:
            return -r.errno
        self._tables_changed()
        if flags & abi.UVMF_FLUSHTYPE_MASK:
            self.machine.flush_tlb_on_entry()
        return 0

    def _tables_changed(self):
        """A frame just became a page table: the real TLB may still hold a
        writable translation of it from before (the guest flushed its own
        mapping, but Xen does not trust that), so flush it on the way out."""
        if self.frames.new_tables:
            self.frames.new_tables = False
            self.machine.flush_tlb_on_entry()
