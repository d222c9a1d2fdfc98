"""The translation cache (TC): where translations live, how they are found,
chained, invalidated and flushed.

Units are laid out one after another in the TC (a bump allocator); a full TC
is flushed whole (bt.tc.flush), as VMware's was, and translation starts
again.  The VMM finds a unit three ways: by its guest EIP (entering the
kernel, an exit stub's first use), by a TC address (a fault or callout inside
translated code: which guest instruction is this?), and translated code finds
one itself through the indirect-branch table.

Coherence.  Every guest frame that a unit was translated from is watched by
the shadow MMU (ShadowPaging.watch_writes): before the guest next writes it,
through any mapping, every unit from that frame is invalidated (bt.invalidate):
it can no longer be found, exits chained into it are turned back into
callouts, and its table entry is cleared.  Its code stays where it is, so an
execution already inside it finishes the instruction it is at.

The TC is written from Python, which the CPU does not notice by itself
(docs/unicorn.md, item 6): every byte the VMM rewrites after the CPU may have
run it (a chained or unchained exit, a flush) is dropped from Unicorn's own
translations.
"""
import bisect
import struct

from virtlab import x86
from virtlab.memory import GuestMemoryFault

from . import layout as L
from . import templates as T
from .translate import MAX_UNIT_BYTES

_ENTRY = struct.Struct("<II")


class TranslationCache:
    def __init__(self, machine, paging):
        self.machine = machine
        self.paging = paging                  # ShadowPaging: watch_writes / unwatch_writes
        self.mem = machine.vmm                # machine memory (offsets from its base)
        self.counters = machine.counters
        self.on_invalidate = None             # bt's hook: a unit just died
        self._reset()

    def _reset(self):
        self.next = L.TC
        self.starts = []                      # TC address of every unit, ascending
        self.units = []
        self.by_guest = {}                    # guest EIP -> live Unit
        self.by_frame = {}                    # guest frame -> set of live Units
        self.by_page = {}                     # guest linear page -> set of live Units
        self.page_frame = {}                  # guest linear page -> the frame its units came from
        self.callouts = {}                    # TC address past an `int` -> Callout
        self.profiles = 0
        self.mem.view[self._off(L.TABLE):self._off(L.TABLE) + L.TABLE_SIZE] = \
            _ENTRY.pack(L.EMPTY, 0) * L.TABLE_ENTRIES

    @staticmethod
    def _off(linear):
        """Machine-memory offset of a window address."""
        return L.REGION + linear - L.DATA

    # -- placing units ------------------------------------------------------------
    def room(self):
        return self.next + MAX_UNIT_BYTES <= L.TC_END

    # [tour bt 80] The translation cache.
    # A unit's code is copied into the cache and indexed by guest address, and the
    # guest frames its bytes came from are watched: a write to one of them must
    # invalidate it.
    def install(self, unit, frames):
        """Copy a translated unit into the TC and make it findable."""
        unit.frames = frames
        at = self._off(unit.tc)
        self.mem.view[at:at + len(unit.code)] = unit.code
        self.next = (unit.tc_end + 15) & ~15
        self.starts.append(unit.tc)
        self.units.append(unit)
        for c in unit.callouts:
            c.unit = unit
            self.callouts[c.resume] = c
        if unit.transient:
            return
        self.by_guest[unit.guest] = unit
        pages = _pages(unit)
        for page, frame in ((pages[0], frames[0]), (pages[-1], frames[-1])):
            if self.page_frame.get(page, frame) != frame:
                self.unmapped(page << 12)     # its other units came from another frame
            self.page_frame[page] = frame
        for page in pages:
            self.by_page.setdefault(page, set()).add(unit)
        for frame in frames:
            users = self.by_frame.setdefault(frame, set())
            if not users:
                self.paging.watch_writes(frame, self.written)
            users.add(unit)

    def unit_at(self, tc):
        i = bisect.bisect_right(self.starts, tc) - 1
        if i < 0:
            return None
        unit = self.units[i]
        return unit if tc < unit.tc_end else None

    def site_at(self, tc):
        """(unit, site) of the guest instruction whose translation holds `tc`."""
        unit = self.unit_at(tc)
        if unit is None:
            return None, None
        for site in unit.sites:
            if site.tc <= tc < site.tc_end:
                return unit, site
        return unit, None

    # -- chaining and the indirect table -----------------------------------------
    def chain(self, ex, unit):
        """Patch exit `ex` into a direct jump to `unit` (bt.chain)."""
        self._write(ex.at, T.jmp_rel32(ex.at, unit.tc))
        ex.chained_to = unit
        unit.incoming.append(ex)
        self.counters["bt.chain"] += 1

    def _unchain(self, ex):
        self._write(ex.at, T.exit_stub())
        ex.chained_to = None

    def fill_table(self, guest, unit):
        _ENTRY.pack_into(self.mem.view, self._slot(guest), -guest & 0xFFFFFFFF, unit.tc)

    def _slot(self, guest):
        return self._off(L.TABLE) + 8 * (guest & (L.TABLE_ENTRIES - 1))

    def _write(self, tc, data):
        at = self._off(tc)
        self.mem.view[at:at + len(data)] = data
        self.machine.forget_code(tc, tc + len(data))

    # -- coherence -------------------------------------------------------------------
    def written(self, frame):
        """The guest is about to write a frame holding translated code."""
        for unit in list(self.by_frame.pop(frame, ())):
            self.invalidate(unit)

    def unmapped(self, linear):
        """The guest kernel invalidated its TLB entry for the page of
        `linear` (invlpg): it may have unmapped or remapped the page, and
        code fetched from it now would fault or be other code, so the units
        translated from it go."""
        self.page_frame.pop(linear >> 12, None)
        for unit in list(self.by_page.pop(linear >> 12, ())):
            self.invalidate(unit)

    def remapped(self, view):
        """The guest kernel loaded CR3 (or changed how its tables read): a
        page of translated code that `view`, the new address space, maps to
        another frame or to none holds other code now, or none, and its units
        go, as after an invlpg of it.  A kernel mapped alike in every address
        space (as the bundled one is) loses nothing.  The pages are few (the
        kernel's code), and each lookup is the TLB's (memory.translate)."""
        for page, frame in list(self.page_frame.items()):
            try:
                now = view.phys(page << 12) & x86.PAGE_MASK
            except GuestMemoryFault:
                now = None
            if now != frame:
                self.unmapped(page << 12)

    # [tour bt 190] Invalidation: unchain, empty the table slot, stop watching.
    def invalidate(self, unit):
        if unit.dead:
            return
        unit.dead = True
        self.counters["bt.invalidate"] += 1
        if self.by_guest.get(unit.guest) is unit:
            del self.by_guest[unit.guest]
        for ex in unit.incoming:
            if ex.chained_to is unit:
                self._unchain(ex)
        unit.incoming.clear()
        slot = self._slot(unit.guest)
        if _ENTRY.unpack_from(self.mem.view, slot)[1] == unit.tc:
            _ENTRY.pack_into(self.mem.view, slot, L.EMPTY, 0)
        for page in _pages(unit):
            users = self.by_page.get(page)
            if users is not None:
                users.discard(unit)
                if not users:
                    del self.by_page[page]
                    self.page_frame.pop(page, None)
        for frame in unit.frames:
            users = self.by_frame.get(frame)
            if users is not None:
                users.discard(unit)
                if not users:
                    del self.by_frame[frame]
                    self.paging.unwatch_writes(frame, self.written)
        if self.on_invalidate is not None:
            self.on_invalidate(unit)

    def units_covering(self, guest):
        return [u for u in self.by_guest.values() if u.guest <= guest < u.guest_end]

    def flush(self):
        """Empty the TC (bt.tc.flush): every unit dies, every watch ends."""
        for frame in self.by_frame:
            self.paging.unwatch_writes(frame, self.written)
        for unit in self.units:
            unit.dead = True
        self._reset()
        self.machine.forget_code(L.TC, L.TC_END)
        self.counters["bt.tc.flush"] += 1

    # -- profiling (virtlab translate) ---------------------------------------------
    def profile_slot(self):
        if self.profiles * 4 >= L.PROFILE_SIZE:
            return None
        self.profiles += 1
        slot = L.PROFILE + 4 * (self.profiles - 1)
        self.mem.set_u32(self._off(slot), 0)      # a flush hands out slots again: count afresh
        return slot

    def executions(self, unit):
        if unit.profile_slot is None:
            return None
        return self.mem.u32(self._off(unit.profile_slot))


def frames_of(view, guest, end):
    """The guest frames [guest, end) lies in (one, or two for a straddle)."""
    first = view.phys(guest) & x86.PAGE_MASK
    last_linear = max(guest, end - 1)
    last = view.phys(last_linear) & x86.PAGE_MASK
    return (first,) if first == last else (first, last)


def _pages(unit):
    """The guest linear pages a unit was translated from."""
    return range(unit.guest >> 12, (max(unit.guest_end, unit.guest + 1) - 1 >> 12) + 1)
