"""The calls of one chunk: Gen makes them, hostile ones and, steered by
the model, sequences that change the hypervisor's state; generate() lays
them out in the guest's image.  And the block device's disk."""
from .. import abi
from ..asmguest import CODE, DATA, VIRT_BASE, build
from .call import NAMES, Call
from .guest import EDGE, END, HOLE, NR, PAGE, RECORD, RECORDS, RO, TABLE, _GUEST, handlers
from .model import A, AVAIL, D, G, HYP_SLOT, P, PCD, PS, PWT, U, W, Data, Domain

FUZZ_SLOTS = (770, 771, 1000, 1007)      # directory slots the fuzzer fills
SPARE_L1 = range(512, 1024)              # bootstrap-table entries past the direct map
# Guest virtual addresses that can be mapped: the direct map (slots 768-769)
# and the fuzzer's slots.  Junk never points there.
_MAPPABLE = {768, 769, *FUZZ_SLOTS}


class Gen:
    """The calls of one chunk: hostile ones and, steered by the model,
    sequences that change the hypervisor's state."""

    def __init__(self, rng, dom, data):
        self.rng, self.dom, self.data = rng, dom, data
        self.fault_handler, self.callback = handlers()
        self.edge_free = True
        self.families = [
            (self.progress, 30), (self.mmu_hostile, 9), (self.mmuext_hostile, 7),
            (self.uvm_hostile, 6), (self.multicall, 8), (self.evtchn, 9), (self.blk, 4),
            (self.traps, 6), (self.misc, 8), (self.unknown, 6), (self.garbage, 3)]
        # What a multicall carries; a hostile multicall (which may do none of
        # it) carries only what the model does not follow.
        self.entry_families = [
            (self.progress, 30), (self.mmu_hostile, 5), (self.evtchn, 8), (self.blk, 2)]
        self.stateless = [
            (self.mmuext_hostile, 4), (self.uvm_hostile, 4), (self.traps, 4), (self.misc, 6),
            (self.unknown, 4), (self.forbidden_in_multicall, 3)]

    # -- helpers ------------------------------------------------------------------------
    def sometimes(self, p):
        return self.rng.random() < p

    def pick(self, weighted):
        x = self.rng.random() * sum(w for _, w in weighted)
        for item, w in weighted:
            x -= w
            if x < 0:
                return item
        return weighted[-1][0]

    def junk(self):
        """A value for a register the call does not read, or reads as junk:
        never an address that can be mapped, since a junk pointer the
        hypervisor writes through must not land in the guest's own pages."""
        r = self.rng
        v = r.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, r.getrandbits(32),
                      r.getrandbits(8), abi.HYPERVISOR_VIRT_START))
        return v ^ 0x40000000 if v >> 22 in _MAPPABLE else v

    def call(self, number, args, kind, copy=None):
        args = list(args) + [self.junk() for _ in range(5 - len(args))]
        return Call(number, args, kind, copy)

    def bad_ptr(self, write=False):
        """A pointer the hypervisor must refuse: its own range, unmapped,
        straddling into either, or (to write) read-only."""
        r = self.rng
        choices = (0, 4, 0xFFF, 0x1000, 0x00400000, 0x7FFFFFFF, 0x80000000, 0xBFFFFFFC,
                   0xC0400000, 0xC0400FFE, 0xFBFFFFFD, 0xFBFFFFFF, 0xFC000000, 0xFC000FFC,
                   0xFC400000, 0xFC410000, 0xFC413000, 0xFFFFF000, 0xFFFFFFFC, 0xFFFFFFFF,
                   HOLE, HOLE + 0x7FF, HOLE + 0xFFC, HOLE - 2)
        return r.choice((RO, RO + 0x10, RO + 0xFFC)) if write and self.sometimes(0.3) \
            else r.choice(choices)

    def place(self, raw, write=False, hostile=0.1, straddle=True):
        """Where a structure goes: mostly the heap; sometimes copied into the
        scratch page, maybe running into the read-only page (its tail reads
        as zeroes, and writes there fail); sometimes a pointer that must
        fault.  (address, copy, how many of raw's bytes the hypervisor reads)."""
        x = self.rng.random()
        if x < hostile:
            return self.bad_ptr(write), None, 0
        if x < hostile + 0.08 and self.edge_free:
            self.edge_free = False
            keep = len(raw)
            at = EDGE + self.rng.randrange(PAGE - len(raw) + 1)
            if straddle and self.sometimes(0.5) and len(raw) > 1:
                keep = self.rng.randrange(1, len(raw))
                at = RO - keep
            return at, (self.data.put(raw[:keep], misalign=False), at, keep), keep
        return self.data.put(raw), None, len(raw)

    def with_struct(self, number, first, raw, kind, write=False, hostile=0.1):
        """A call whose second argument points at raw."""
        at, copy, _ = self.place(raw, write, hostile)
        return self.call(number, [first, at], kind, copy)

    # -- page-table entries ------------------------------------------------------------------
    def flags(self, writable):
        f = P | (W if writable else 0)
        if self.sometimes(0.3):
            f |= self.rng.choice((U, A, D, A | D, PWT, PCD, 0x200, AVAIL))
        return f

    def l1_value(self, table):
        """A new entry for L1 table `table`: frames the fuzzer plays with,
        and ones it must not get, or not writable."""
        d, r = self.dom, self.rng
        c = r.choice(d.cands).mfn
        return self.pick([
            (lambda: c << 12 | self.flags(self.sometimes(0.6)), 45),
            (lambda: r.choice([d.pd, d.l1, table] + [x.mfn for x in d.cands if d.kind(x)])
             << 12 | self.flags(True), 10),                     # a page table, writable
            (lambda: r.choice((d.pd, d.l1, table)) << 12 | self.flags(False), 7),
            (lambda: d.shared << 12 | self.flags(self.sometimes(0.7)), 6),
            (lambda: d.foreign() << 12 | self.flags(self.sometimes(0.5)), 8),
            (lambda: d.mfn(r.choice(d.boot_pages)) << 12 | self.flags(self.sometimes(0.5)), 6),
            (lambda: c << 12 | P | r.choice((PS, G, PS | G)), 6),   # PAT, G: reserved
            (lambda: r.choice((0, 2, 4, 0x10, 0x20, r.getrandbits(32) & ~P)), 12),
        ])()

    def l2_value(self, directory):
        d, r = self.dom, self.rng
        return self.pick([
            (lambda: r.choice(d.cands).mfn << 12 | P | W | (U if self.sometimes(0.3) else 0), 55),
            (lambda: d.l1 << 12 | P | W, 10),                  # an alias of the direct map
            (lambda: r.choice(d.cands).mfn << 12 | P | W | PS, 4),      # a 4 MiB page
            (lambda: r.choice((d.pd, directory)) << 12 | P | W, 6),     # a directory
            (lambda: d.foreign() << 12 | P | W, 10),
            (lambda: 0, 15),
        ])()

    def index(self):
        """An entry index, often among the first few (where the block ring's
        header and first requests are, should the ring be a table)."""
        return self.rng.randrange(48) if self.sometimes(0.4) else self.rng.randrange(1024)

    # -- mmu_update, mmuext_op, update_va_mapping ---------------------------------------------
    def mmu_update(self, reqs, kind, hostile=0.0, follow=False):
        """mmu_update carrying reqs; with `follow`, the model takes the
        requests as done as far as it believes they are accepted."""
        raw = b"".join(abi.MMU_UPDATE_REQ.pack(p, v) for p, v in reqs)
        done = self.data.scratch(4) if self.sometimes(0.5) else 0
        at, copy, intact = self.place(raw, hostile=hostile, straddle=hostile > 0)
        if follow:
            self.follow(reqs[:intact // abi.MMU_UPDATE_REQ.size])
        return self.call(abi.MMU_UPDATE, [at, len(reqs), done, abi.DOMID_SELF], kind, copy)

    def mmuext(self, ops, kind, hostile=0.0):
        raw = b"".join(abi.MMUEXT_REQ.pack(*op) for op in ops)
        done = self.data.scratch(4) if self.sometimes(0.5) else 0
        at, copy, _ = self.place(raw, hostile=hostile, straddle=hostile > 0)
        return self.call(abi.MMUEXT_OP, [at, len(ops), done, abi.DOMID_SELF], kind, copy)

    def uvm(self, va, value, kind, flags=None):
        flags = self.rng.choice((0, 1, 2, 2)) if flags is None else flags
        return self.call(abi.UPDATE_VA_MAPPING, [va, value, flags], kind)

    # -- progress: a page's life as a page table ---------------------------------------------
    def progress(self):
        d = self.dom
        c = self.rng.choice(d.cands)
        k = d.kind(c)
        bad = k is None and not all(d.l1_ok(v, c.mfn) for v in c.entries.values())
        if k is None and c.direct == "rw":
            steps = [(self.pt_readonly, 5), (self.pt_store, 2), (self.pt_pin_writable, 1),
                     (self.pt_clean, 3 * bad)]
        elif k is None:
            steps = [(self.pt_pin, 4), (self.pt_install, 3), (self.pt_pin_l2, 1),
                     (self.pt_writable, 2), (self.pt_store, 1), (self.pt_clean, 4 * bad)]
        elif k == "l1":
            steps = [(self.pt_store, 6), (self.pt_map_va, 3), (self.pt_table_writable, 1.5),
                     (self.pt_install, 1), (self.pt_pin, 0.5 if c.pinned else 1),
                     (self.pt_unpin, 2 if c.pinned else 0.2),
                     (self.pt_uninstall, 2 if c.refs else 0.2), (self.pt_writable, 0.3)]
        else:
            steps = [(self.pt_l2_entry, 2), (self.pt_table_writable, 1), (self.pt_unpin, 2)]
        return self.pick(steps)(c)

    def direct(self, c, value, kind):
        """Rewrite the candidate's direct-map entry, either way a guest can."""
        if self.sometimes(0.6):
            return self.uvm(c.va, value, kind)
        return self.mmu_update([((self.dom.l1 << 12) + 4 * c.pfn, value)], kind)

    def pt_readonly(self, c):
        value = c.mfn << 12 | self.flags(False) if self.sometimes(0.85) else 0
        self.dom.wrote(self.dom.l1, c.pfn, value)
        return self.direct(c, value, "pt.readonly")

    def pt_writable(self, c):
        """Writable again: allowed only once the page is no table."""
        value = c.mfn << 12 | self.flags(True)
        if self.dom.kind(c) is None:
            self.dom.wrote(self.dom.l1, c.pfn, value)
            return self.direct(c, value, "pt.writable")
        return self.direct(c, value, "pt.table_writable")

    def pt_table_writable(self, c):
        """The attack itself: map a page table writable -- this one, or the
        bootstrap directory or table -- through the direct map or any live
        table."""
        d, r = self.dom, self.rng
        t = r.choice((c.mfn, c.mfn, d.pd, d.l1))
        value = t << 12 | self.flags(True)
        how = r.random()
        if how < 0.35 and t == c.mfn:
            return self.direct(c, value, "pt.table_writable")
        if how < 0.5 and t != c.mfn:              # the bootstrap tables' own entries
            va = VIRT_BASE + PAGE * (d.boot.pt_base + (t == d.l1))
            return self.uvm(va, value, "pt.table_writable")
        table = r.choice([d.l1] + [x.mfn for x in d.cands if d.kind(x) == "l1"])
        index = r.choice(SPARE_L1) if table == d.l1 else r.randrange(1024)
        return self.mmu_update([((table << 12) + 4 * index, value)], "pt.table_writable")

    def pt_pin_writable(self, c):
        """Pin a frame still mapped writable."""
        d, r = self.dom, self.rng
        mfn = r.choice((c.mfn, c.mfn, d.protected_mfn(), d.mfn(r.choice(d.boot_pages))))
        cmd = r.choice((abi.MMUEXT_PIN_L1_TABLE, abi.MMUEXT_PIN_L2_TABLE))
        return self.mmuext([(cmd, mfn, self.junk())], "pt.pin_writable")

    def pt_pin(self, c):
        if c.pinned is None and self.dom.can_type(c, "l1"):
            c.pinned = "l1"
            return self.mmuext([(abi.MMUEXT_PIN_L1_TABLE, c.mfn, 0)], "pt.pin")
        return self.mmuext([(abi.MMUEXT_PIN_L1_TABLE, c.mfn, 0)], "pt.pin_refused")

    def pt_pin_l2(self, c):
        if c.pinned is None and self.dom.can_type(c, "l2"):
            self.dom.pinned_l2(c)
            return self.mmuext([(abi.MMUEXT_PIN_L2_TABLE, c.mfn, 0)], "pt.pin_l2")
        return self.mmuext([(abi.MMUEXT_PIN_L2_TABLE, c.mfn, 0)], "pt.pin_refused")

    def pt_unpin(self, c):
        kind = "pt.unpin" if c.pinned else "pt.unpin_refused"
        c.pinned = None
        return self.mmuext([(abi.MMUEXT_UNPIN_TABLE, c.mfn, 0)], kind)

    def pt_install(self, c):
        d = self.dom
        slot = self.rng.choice(FUZZ_SLOTS)
        value = c.mfn << 12 | P | W | self.rng.choice((0, 0, U, A, U | A))
        ok = d.can_type(c, "l1")
        if ok:
            d.wrote(d.pd, slot, value)
        return self.mmu_update([((d.pd << 12) + 4 * slot, value)],
                               "pt.install" if ok else "pt.install_refused")

    def pt_uninstall(self, c):
        d = self.dom
        slot = self.rng.choice([s for t, s in c.refs if t == d.pd] or FUZZ_SLOTS)
        value = self.rng.choice((0, 0, 2, c.mfn << 12))             # not present
        d.wrote(d.pd, slot, value)
        return self.mmu_update([((d.pd << 12) + 4 * slot, value)], "pt.uninstall")

    def pt_store(self, c):
        """Write the page's words with mmu_update: plain stores while it is
        no table, validated entries once it is.  A batch stops at its first
        refused request, and so does this one."""
        d = self.dom
        table = d.kind(c) == "l1"
        reqs = []
        for _ in range(self.rng.choice((1, 1, 2, 4, 8))):
            index, value = self.index(), self.l1_value(c.mfn)
            reqs.append(((c.mfn << 12) + 4 * index, value))
            if table and not d.l1_ok(value, c.mfn):
                return self.mmu_update(reqs, "pt.map_refused")
            d.wrote(c.mfn, index, value)
        return self.mmu_update(reqs, "pt.map" if table else "pt.store")

    def pt_clean(self, c):
        """Zero the entries that would stop the page from being a table, as
        a kernel clears a page before it uses it as one."""
        d = self.dom
        bad = [i for i, v in sorted(c.entries.items()) if not d.l1_ok(v, c.mfn)][:64]
        for i in bad:
            d.wrote(c.mfn, i, 0)
        return self.mmu_update([((c.mfn << 12) + 4 * i, 0) for i in bad], "pt.clean")

    def pt_map_va(self, c):
        """update_va_mapping through the candidate where it is installed, or
        through the bootstrap table's entries past the direct map."""
        d, r = self.dom, self.rng
        slots = [s for t, s in c.refs if t == d.pd]
        if slots and self.sometimes(0.7):
            table, index = c.mfn, self.index()
            va = r.choice(slots) << 22 | index << 12
        else:
            table, index = d.l1, r.choice(SPARE_L1)
            va = VIRT_BASE + index * PAGE
        value = self.l1_value(table)
        ok = d.l1_ok(value, table)
        if ok:
            d.wrote(table, index, value)
        va |= r.randrange(PAGE) if self.sometimes(0.2) else 0
        return self.uvm(va, value, "pt.map_va" if ok else "pt.map_refused")

    def pt_l2_entry(self, c):
        """A slot of a candidate pinned as a page directory: guest slots are
        validated, the hypervisor's refused."""
        d, r = self.dom, self.rng
        slot = r.randrange(HYP_SLOT, 1024) if self.sometimes(0.3) else r.choice(
            FUZZ_SLOTS + (r.randrange(HYP_SLOT),))
        value = self.l2_value(c.mfn)
        if slot < HYP_SLOT and d.l2_ok(value, c.mfn):
            d.wrote(c.mfn, slot, value)
        return self.mmu_update([((c.mfn << 12) + 4 * slot, value)], "pt.l2_entry")

    # -- hostile memory calls ---------------------------------------------------------------
    def entry_target(self):
        """The machine address of an entry to aim at, never one mapping the
        guest's own image or stack: the bootstrap tables, the candidates,
        the hypervisor's slots, other bootstrap pages, foreign frames."""
        d, r = self.dom, self.rng
        x = r.random()
        if x < 0.25:
            return (d.l1 << 12) + 4 * r.choice([*SPARE_L1[:64], d.boot.pt_base,
                                                d.boot.pt_base + 1, *d.boot_pages,
                                                *r.sample(d.free, 4)])
        if x < 0.45:
            return (d.pd << 12) + 4 * r.choice(FUZZ_SLOTS + tuple(range(HYP_SLOT, 1024)))
        if x < 0.7:
            return (r.choice(d.cands).mfn << 12) + 4 * self.index()
        if x < 0.8:
            return (d.mfn(r.choice(d.boot_pages)) << 12) + 4 * r.randrange(1024)
        return (d.foreign() << 12) + 4 * r.randrange(1024)

    def mmu_request(self):
        d, r = self.dom, self.rng
        x = r.random()
        if x < 0.6:
            ptr = self.entry_target()
            return ptr, (self.l1_value(ptr >> 12) if self.sometimes(0.7)
                         else self.l2_value(d.pd))
        if x < 0.75:                          # machine-to-physical updates
            frame = r.choice((r.choice(d.cands).mfn, d.foreign(), d.pd))
            return frame << 12 | abi.MMU_MACHPHYS_UPDATE, r.choice(
                (r.randrange(NR), NR, abi.INVALID_M2P))
        if x < 0.85:                          # commands that do not exist
            return self.entry_target() | r.choice((2, 3)), 0
        # more than 32 bits: a PAE entry, or a pointer past 4 GiB
        if self.sometimes(0.5):
            return self.entry_target() | (r.getrandbits(32) | 1) << 32, 0
        return self.entry_target(), (r.getrandbits(32) | 1) << 32 | P

    def follow(self, reqs):
        """Requests the model did not choose may still change entries it
        tracks: up to the first it believes refused, take them as done."""
        d = self.dom
        for ptr, value in reqs:
            table, index = ptr >> 12, (ptr & 0xFFF) >> 2
            if ptr >> 32 or value >> 32 or ptr & 3 > abi.MMU_MACHPHYS_UPDATE \
                    or not d.owns(table):
                return
            if ptr & 3 == abi.MMU_MACHPHYS_UPDATE:
                if value >= NR:
                    return
                continue
            c = d.by_mfn.get(table)
            if table == d.pd or (c is not None and d.kind(c) == "l2"):
                if index >= HYP_SLOT or not d.l2_ok(value, table):
                    return
            elif d.live_l1(table) and not d.l1_ok(value, table):
                return
            d.wrote(table, index, value)

    def mmu_hostile(self):
        r = self.rng
        reqs = [self.mmu_request() for _ in range(r.choice((1, 1, 2, 3, 6)))]
        x = r.random()
        if x < 0.1:                           # counts far too large
            call = self.mmu_update(reqs, "mmu.count")
            call.args[1] = r.choice((4097, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF))
            return call
        if x < 0.2:                           # zeroes (refused), then the hole
            return self.call(abi.MMU_UPDATE, [HOLE - 16 * r.randrange(3),
                                              r.choice((1, 3, 300, 4096)), 0, abi.DOMID_SELF],
                             "mmu.overrun")
        if x < 0.3:
            call = self.mmu_update(reqs, "mmu.domain")
            call.args[3] = r.choice((0, 1, 0x7FF1, 0xFFFF, 0xFFFFFFFF))
            return call
        if x < 0.4:                           # all done, but the count cannot be written
            call = self.mmu_update(reqs, "mmu.done_fault", follow=True)
            call.args[2] = self.bad_ptr(write=True)
            return call
        return self.mmu_update(reqs, "mmu.random", hostile=0.15, follow=True)

    def mmuext_hostile(self):
        """mmuext_op on frames the model does not play with (it may carry
        them in a multicall that never runs): the bootstrap tables, foreign
        frames, the guest's own.  A new base pointer is only ever the current
        directory or a frame that cannot become one (another would take the
        guest's own mappings away)."""
        d, r = self.dom, self.rng
        ops = []
        for _ in range(r.choice((1, 1, 2, 4))):
            cmd = r.choice((0, 1, 4, 5, 5, 6, 7, 2, 3, 8, 9, 19, 0xFFFFFFFF))
            if cmd == abi.MMUEXT_NEW_BASEPTR:
                arg = r.choice((d.pd, d.pd, d.l1, d.foreign(), d.protected_mfn()))
            elif cmd == abi.MMUEXT_INVLPG_LOCAL:
                arg = self.junk()
            else:
                arg = r.choice((d.pd, d.l1, d.foreign(), d.protected_mfn(),
                                d.mfn(d.boot.start_info), r.getrandbits(8)))
            ops.append((cmd, arg, self.junk()))
        x = r.random()
        if x < 0.1:
            call = self.mmuext(ops, "mmuext.count")
            call.args[1] = r.choice((4097, 0x80000000, 0xFFFFFFFF))
            return call
        if x < 0.2:
            call = self.mmuext(ops, "mmuext.domain")
            call.args[3] = r.choice((0, 0x7FF2, 0xFFFFFFFF))
            return call
        if x < 0.3:
            return self.call(abi.MMUEXT_OP, [HOLE - 12 * r.randrange(3), r.choice((2, 341, 400)),
                                             0, abi.DOMID_SELF], "mmuext.overrun")
        return self.mmuext(ops, "mmuext.random", hostile=0.15)

    def uvm_hostile(self):
        """update_va_mapping where it must refuse: the hypervisor's range,
        addresses with no validated table, bad flags, bad entries."""
        d, r = self.dom, self.rng
        c = r.choice(d.cands).mfn
        x = r.random()
        if x < 0.3:
            va = r.choice((0xFC000000, 0xFC400000, 0xFC413000, 0xFFFFF000, 0xFFFFFFFF))
            return self.uvm(va, c << 12 | P, "uvm.hyperspace")
        if x < 0.5:
            va = r.choice((0, 0x1000, 0x00400000, 0x80000000, 0xBFFFF000, 0xC0400000))
            return self.uvm(va, c << 12 | P, "uvm.no_table")
        if x < 0.6:             # 3 is a flush type the ABI allows: rewrite the entry as it is
            v = r.choice(d.cands)
            value = {"rw": v.mfn << 12 | P | W, "ro": v.mfn << 12 | P, "none": 0}[v.direct]
            return self.uvm(v.va, value, "uvm.flags",
                            flags=r.choice((3, 4, 0xFF, 0x80000000, 0xFFFFFFFF)))
        value = r.choice((d.foreign() << 12 | P, d.pd << 12 | P | W, d.l1 << 12 | P | W,
                          c << 12 | P | G, c << 12 | P | PS))
        return self.uvm(VIRT_BASE + PAGE * r.choice(SPARE_L1), value, "uvm.bad_entry")

    # -- multicall ------------------------------------------------------------------------------
    def multicall(self):
        """A batch of calls.  The good ones carry progress; the hostile ones
        (too many, an unreadable array, one that runs into the read-only
        page) carry only what the model does not follow."""
        r = self.rng
        x = r.random()
        families = self.entry_families + self.stateless if x < 0.75 else self.stateless
        edge, self.edge_free = self.edge_free, False     # entries get no copies
        entries = [self.pick(families)() for _ in range(r.choice((1, 2, 3, 4, 6, 8)))]
        self.edge_free = edge
        raw = b"".join(abi.MULTICALL_ENTRY.pack(e.number, self.junk(),
                                                *(a & 0xFFFFFFFF for a in e.args), 0)
                       for e in entries)
        n = len(entries)
        if x < 0.75:
            return self.call(abi.MULTICALL, [self.data.put(raw), n], "multicall")
        if x < 0.82:
            return self.call(abi.MULTICALL, [self.data.put(raw),
                                             r.choice((65, 0x1000, 0x80000000, 0xFFFFFFFF))],
                             "multicall.count")
        if x < 0.9 or not self.edge_free:
            return self.call(abi.MULTICALL, [self.bad_ptr(write=self.sometimes(0.5)), n],
                             "multicall.fault")
        # the entries end the scratch page, the next ones are zeroes in the
        # read-only page, whose result cannot be written
        self.edge_free = False
        at = RO - len(raw)
        return self.call(abi.MULTICALL, [at, n + r.choice((1, 2, 64 - n))], "multicall.straddle",
                         (self.data.put(raw, misalign=False), at, len(raw)))

    def forbidden_in_multicall(self):
        if self.sometimes(0.5):
            return self.call(abi.IRET, [], "multicall.iret")
        return self.call(abi.MULTICALL, [self.data.put(bytes(32)), 1], "multicall.nested")

    def exhaust_ports(self):
        """Multicalls of 64 EVTCHNOP_alloc_unbound: after 16 of them the
        hypervisor has no port left (-ENOSPC)."""
        d = self.dom
        raw = b""
        for _ in range(abi.MULTICALL_MAX):
            arg = self.data.put(abi.ALLOC_UNBOUND.pack(abi.DOMID_SELF, 0, 0))
            raw += abi.MULTICALL_ENTRY.pack(abi.EVENT_CHANNEL_OP, 0, abi.EVTCHNOP_ALLOC_UNBOUND,
                                            arg, 0, 0, 0, 0)
            port = d.next_port()
            if port is not None:
                d.ports.append(port)
        return self.call(abi.MULTICALL, [self.data.put(raw), abi.MULTICALL_MAX],
                         "evtchn.exhaust")

    # -- event channels and the block device -------------------------------------------------
    def port(self):
        d, r = self.dom, self.rng
        x = r.random()
        if x < 0.5 and d.ports:
            return r.choice(d.ports)
        if x < 0.65:
            return d.blk_port
        if x < 0.75 and d.virq_port:
            return d.virq_port
        return r.choice((0, 1023, 1024, 0xFFFF, 0x80000000, 0xFFFFFFFF, r.randrange(1, 64)))

    def evtchn(self):
        d, r = self.dom, self.rng
        op = abi.EVENT_CHANNEL_OP
        x = r.random()
        if x < 0.2:
            virq, vcpu = (0, 0) if self.sometimes(0.7) else (r.choice((1, 2, 0xFFFFFFFF)),
                                                              r.choice((0, 1)))
            call = self.with_struct(op, abi.EVTCHNOP_BIND_VIRQ, abi.BIND_VIRQ.pack(virq, vcpu, 7),
                                    "evtchn.bind_virq", write=True)
            if (virq, vcpu) == (0, 0) and d.virq_port is None:
                d.virq_port = d.next_port()
            return call
        if x < 0.4:
            dom = abi.DOMID_SELF if self.sometimes(0.8) else r.choice((0, 1, 0xFFFF))
            call = self.with_struct(op, abi.EVTCHNOP_ALLOC_UNBOUND,
                                    abi.ALLOC_UNBOUND.pack(dom, r.getrandbits(16), 7),
                                    "evtchn.alloc_unbound", write=True)
            if dom == abi.DOMID_SELF and d.next_port() is not None:
                d.ports.append(d.next_port())
            return call
        port = self.port()
        if x < 0.55:
            if port in d.ports:
                d.ports.remove(port)
            elif port == d.virq_port:
                d.virq_port = None
            return self.with_struct(op, abi.EVTCHNOP_CLOSE, abi.U32.pack(port), "evtchn.close")
        if x < 0.7:
            return self.with_struct(op, abi.EVTCHNOP_UNMASK, abi.U32.pack(port), "evtchn.unmask")
        if x < 0.88:
            if port == d.blk_port:
                d.notified()
            return self.with_struct(op, abi.EVTCHNOP_SEND, abi.U32.pack(port), "evtchn.send")
        return self.with_struct(op, r.choice((0, 2, 5, 7, 8, 10, 0xFFFFFFFF)), bytes(12),
                                "evtchn.unknown")

    def blk(self):
        """Drive the block device as a frontend does: req_prod a few requests
        past what the back end consumed, requests into the slots (with
        mmu_update: plain stores while the ring is no table), then a
        notification.  Should the ring be a page table, only req_prod moves
        (and stays a valid entry: even)."""
        d, r = self.dom, self.rng
        if self.sometimes(0.4):
            d.notified()
            return self.with_struct(abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_SEND,
                                    abi.U32.pack(d.blk_port), "blk.send", hostile=0.02)
        table = d.is_table(d.ring)
        prod = None
        if self.sometimes(0.85):
            ahead = [k for k in (1, 2, 3, 4) if not (table and (d.blk_cons + k) & 1)]
            prod = (d.blk_cons + r.choice(ahead)) & 0xFFFFFFFF if self.sometimes(0.8) \
                else r.choice((0, 1, 33, 0xFFFFFFFF, r.randrange(64)))
        words = []
        if not table or self.sometimes(0.2):
            for _ in range(r.randrange(1, 4)):
                k = r.randrange(4) if self.sometimes(0.7) else r.randrange(abi.RING_SIZE)
                at = abi.RING_HEADER + abi.RING_SLOT * ((d.blk_cons + k) % abi.RING_SIZE)
                live = prod is not None and k < (prod - d.blk_cons) & 0xFFFFFFFF <= abi.RING_SIZE
                words += self.good_request(at, live) if self.sometimes(0.5) \
                    else self.bad_request(at)
        if self.sometimes(0.2):
            words.append((8, r.choice((0, 1, 2, 0xFFFFFFFF))))          # rsp_prod
        if prod is not None:
            words.append((0, prod))
        return self.mmu_update([((d.ring << 12) + off, value) for off, value in words],
                               "blk.ring", follow=True)

    def good_request(self, at, live):
        """A request the back end performs: a read into pages that are no
        page table, a write from any page of the domain.  If it is `live`
        (the next notification takes it), the model learns what a read puts
        into the page."""
        d, r = self.dom, self.rng
        op = r.choice((abi.BLKIF_OP_READ, abi.BLKIF_OP_WRITE))
        nseg = r.choice((1, 1, 2, 3))
        # each segment is at most 4 sectors: zeroes (sectors 0-15) or entries (16-31)
        sector = r.randrange(16 - 4 * nseg + 1) if self.sometimes(0.8) \
            else r.randrange(16, 32 - 4 * nseg + 1)
        words = self.request_head(at, op, nseg, sector, 0)
        for i in range(nseg):
            first = r.randrange(8)
            last = r.randrange(first, min(8, first + 4))
            c = self.read_target(first, last, sector) if op == abi.BLKIF_OP_READ \
                else r.choice(d.cands)
            words += self.segment(at, i, c.mfn if c else d.mfn(d.boot.start_info), first, last)
            if op == abi.BLKIF_OP_READ and c is not None and live:
                self.read_into(c, first, last, sector)
            sector += last - first + 1
        return words

    def read_target(self, first, last, sector):
        """A candidate to read into, if one fits: no page table; and, for a
        read of zeroes, only where the model believes zeroes are already (the
        model cannot know whether the read runs: either way it is right).
        The other sectors' entries would stop it from being a table until
        pt_clean() zeroes them, whether they landed or not."""
        d = self.dom
        zeroes = sector * abi.SECTOR < len(DISK) // 2
        span = range(first * 128, (last + 1) * 128)
        fits = [c for c in d.cands if d.kind(c) is None
                and (not zeroes or all(not c.entries.get(i) for i in span))]
        return self.rng.choice(fits) if fits else None

    def bad_request(self, at):
        """A good request with one thing wrong: the operation, the number of
        segments, the sector, a segment's sectors, or its frame (not the
        domain's, or a page table to read into)."""
        d, r = self.dom, self.rng
        words = self.good_request(at, False)
        fault = r.randrange(5)
        if fault == 0:
            words[0] = (at, r.choice((2, 3, 0xFF)) | words[0][1] & 0xFF00)
        elif fault == 1:
            words[0] = (at, words[0][1] & 0xFF | r.choice((0, 12, 0xFF)) << 8)
        elif fault == 2:
            words[4] = (at + 16, r.choice((1, 0xFFFFFFFF)))
        elif fault == 3:
            first = r.randrange(1, 9)
            words[6] = (at + 24, first | r.choice((first - 1, 8, 0xFF)) << 8)
        else:
            words[5] = (at + 20, r.choice((d.foreign(), d.shared, d.pd, d.l1)))
            words[0] = (at, abi.BLKIF_OP_READ | words[0][1] & 0xFF00)
        return words

    def request_head(self, at, op, nseg, sector, sector_high):
        r = self.rng
        return [(at, op | nseg << 8), (at + 4, r.getrandbits(32)), (at + 8, r.getrandbits(32)),
                (at + 12, sector), (at + 16, sector_high)]

    def segment(self, at, i, frame, first, last):
        return [(at + 20 + 8 * i, frame), (at + 24 + 8 * i, first | last << 8)]

    def read_into(self, c, first, last, sector):
        for n in range((last - first + 1) * 128):
            word = abi.U32.unpack_from(DISK, sector * abi.SECTOR + 4 * n)[0]
            c.entries[first * 128 + n] = word

    # -- traps and callbacks ---------------------------------------------------------------------
    def traps(self):
        r = self.rng
        x = r.random()
        if x < 0.5:
            return self.trap_table()
        if x < 0.75:
            ss = abi.FLAT_KERNEL_SS if self.sometimes(0.7) else r.choice(
                (0, abi.FLAT_USER_DS, abi.FLAT_KERNEL_CS, 0xFFFFFFFF))
            return self.call(abi.STACK_SWITCH, [ss, r.choice((END, 0, 0xFC000000, self.junk()))],
                             "traps.stack_switch")
        cs = [abi.FLAT_KERNEL_CS if self.sometimes(0.75) else
              r.choice((0, abi.FLAT_USER_CS, 0xFFFFFFFF)) for _ in range(2)]
        eips = [r.choice((self.callback, self.callback, 0, 0xFC000000, self.junk()))
                for _ in range(2)]
        return self.call(abi.SET_CALLBACKS, [cs[0], eips[0], cs[1], eips[1]],
                         "traps.set_callbacks")

    def trap_table(self):
        """Handlers that end the run (none should ever be needed), junk
        addresses, wrong code selectors, tables with no end."""
        r = self.rng
        n = r.choice((0, 1, 2, 4, 8))
        if n == 0 and self.sometimes(0.5):
            return self.call(abi.SET_TRAP_TABLE, [0], "traps.clear")
        raw = b""
        for _ in range(n):
            cs = abi.FLAT_KERNEL_CS if self.sometimes(0.85) else r.choice(
                (0, abi.FLAT_USER_CS, abi.FLAT_KERNEL_DS, 0xE018, 0x08, 0xFFFF))
            address = self.fault_handler if self.sometimes(0.6) else r.choice(
                (self.callback, 0xFC000000, 0x1000, r.getrandbits(32) | 1))
            raw += abi.TRAP_INFO.pack(r.randrange(256), r.randrange(256), cs, address)
        if self.sometimes(0.9):
            raw += bytes(abi.TRAP_INFO.size)
        at, copy, _ = self.place(raw or bytes(8))
        return self.call(abi.SET_TRAP_TABLE, [at], "traps.set_trap_table", copy)

    # -- the simple hypercalls ----------------------------------------------------------------
    def misc(self):
        return self.pick([(self.timer, 2), (self.version, 1), (self.console, 2),
                          (self.fpu, 1), (self.sched, 2), (self.physdev, 2)])()

    def timer(self):
        r = self.rng
        ns = r.choice((0, 1, 10_000, 10 ** 9, 1 << 63, (1 << 64) - 1, r.getrandbits(64)))
        return self.call(abi.SET_TIMER_OP, [ns & 0xFFFFFFFF, ns >> 32], "misc.timer")

    def version(self):
        cmd = abi.XENVER_VERSION if self.sometimes(0.6) else self.junk()
        return self.call(abi.XEN_VERSION, [cmd], "misc.xen_version")

    def console(self):
        r = self.rng
        cmd = r.choice((abi.CONSOLEIO_WRITE,) * 6 + (abi.CONSOLEIO_READ, 2, 0xFFFFFFFF))
        if self.sometimes(0.5):
            text = b"fuzz %d\n" % r.randrange(10 ** 6)
            at, copy, _ = self.place(text)
            return self.call(abi.CONSOLE_IO, [cmd, len(text), at], "misc.console", copy)
        count = r.choice((0, 1, 64, 4096, 4097, 0x10000, 0xFFFFFFFF))
        buf = r.choice((CODE, RECORDS, RO, self.bad_ptr(), 0xFBFFFFF0))
        return self.call(abi.CONSOLE_IO, [cmd, count, buf], "misc.console_raw")

    def fpu(self):
        return self.call(abi.FPU_TASKSWITCH, [self.rng.choice((0, 1, 0xFFFFFFFF))], "misc.fpu")

    def sched(self):
        """Yield, unknown commands, and shutdowns whose reason cannot be read
        (-EFAULT: a readable one would end the run)."""
        r = self.rng
        x = r.random()
        if x < 0.4:
            return self.call(abi.SCHED_OP, [abi.SCHEDOP_YIELD], "misc.yield")
        if x < 0.7:
            return self.call(abi.SCHED_OP, [r.choice((3, 4, 5, 0x80000000, 0xFFFFFFFF))],
                             "misc.sched_unknown")
        return self.call(abi.SCHED_OP, [abi.SCHEDOP_SHUTDOWN, r.choice(
            (0xFBFFFFFD, 0xFC000000, 0xFC000FFC, 0xFFFFFFFF, HOLE))], "misc.shutdown_fault")

    def physdev(self):
        r = self.rng
        x = r.random()
        if x < 0.45:
            return self.with_struct(abi.PHYSDEV_OP, abi.PHYSDEVOP_SET_IOPL,
                                    abi.U32.pack(r.choice((0, 1, 2, 3, 4, 0xFFFFFFFF))),
                                    "misc.set_iopl")
        if x < 0.85:
            raw = abi.IOBITMAP.pack(r.choice((0, RO, 0xFC000000, self.junk())),
                                    r.choice((0, 1024, 65536, 65537, 0xFFFFFFFF)))
            return self.with_struct(abi.PHYSDEV_OP, abi.PHYSDEVOP_SET_IOBITMAP, raw,
                                    "misc.set_iobitmap")
        return self.with_struct(abi.PHYSDEV_OP, r.choice((0, 1, 5, 8, 0xFFFFFFFF)), bytes(8),
                                "misc.physdev_unknown")

    # -- unknown numbers and garbage -----------------------------------------------------------
    def unknown(self):
        r = self.rng
        number = r.choice((2, 6, 7, 8, 9, 10, 11, 12, 16, 19, 20, 21, 22, 24, 25, 27, 28, 30,
                           31, 34, 35, 40, 48, 63, 64, 255, 256, 0x7FFFFFFF, 0x80000000,
                           0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFF1, 0xFFFF0001, r.getrandbits(32)))
        return self.call(number if number not in NAMES else 0xFFFFFFFF, [], "unknown")

    def garbage(self):
        """A known number with junk and hostile pointers for arguments."""
        r = self.rng
        number = r.choice((abi.SET_TRAP_TABLE, abi.MMU_UPDATE, abi.MMUEXT_OP, abi.MULTICALL,
                           abi.CONSOLE_IO, abi.EVENT_CHANNEL_OP, abi.PHYSDEV_OP))
        args = [self.bad_ptr(write=True) if self.sometimes(0.5) else self.junk()
                for _ in range(5)]
        args[1 if number in (abi.EVENT_CHANNEL_OP, abi.PHYSDEV_OP) else 0] = self.bad_ptr()
        return self.call(number, args, "garbage")

    # -- a chunk --------------------------------------------------------------------------------
    def setup(self):
        """The first calls of every chunk: the read-only page and the hole."""
        ro = self.dom.mfn((RO - VIRT_BASE) // PAGE) << 12 | P
        return [self.call(abi.UPDATE_VA_MAPPING, [RO, ro, abi.UVMF_INVLPG], "setup"),
                self.call(abi.UPDATE_VA_MAPPING, [HOLE, 0, abi.UVMF_INVLPG], "setup")]

    def next_call(self):
        self.edge_free = True
        return self.pick(self.families)()


def generate(rng, hv, count):
    """The domain's model and the calls of one chunk (at most count; fewer
    if the heap fills up)."""
    dom, data = Domain(rng, hv), Data(rng)
    gen = Gen(rng, dom, data)
    calls = gen.setup()[:count]
    burst = rng.randrange(count) if rng.random() < 0.05 else -1
    while len(calls) < count and data.room() > 32768:
        if len(calls) == burst:
            calls += [gen.exhaust_ports() for _ in range(min(17, count - len(calls)))]
            continue
        calls.append(gen.next_call())
    for i, call in enumerate(calls):
        data.record(i, call)
    abi.U32.pack_into(data.bytes, TABLE - DATA, RECORDS + RECORD * len(calls))
    return dom, calls, build(_GUEST, bytes(data.bytes), bss=0)


def disk_image():
    """The block device: zeroes, then sectors of entries that map the
    hypervisor's first frames writable (a page read from them cannot be a
    page table)."""
    disk = bytearray(32 * abi.SECTOR)
    for at in range(len(disk) // 2, len(disk), 4):
        abi.U32.pack_into(disk, at, (at // 4 % 7) << 12 | P | W)
    return disk


DISK = bytes(disk_image())
