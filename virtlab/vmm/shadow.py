"""The shadow MMU: page tables the hardware walks, built by the VMM from the
guest's own.

The guest's page tables map guest-virtual to guest-physical addresses; the CPU
must be given tables that map to machine addresses and that the guest cannot
subvert.  The VMM keeps one shadow page directory per guest page directory (per
guest CR3) in machine memory and fills it lazily: every shadow entry starts
not-present, the first access faults, and the VMM walks the guest's tables for
that address.  If the guest's tables do not allow the access the fault is the
guest's own (a *true* fault: reflected with the guest's CR2 and error code);
otherwise it is a *hidden* fault: the VMM fills the shadow entry and the guest
never knows.

To stay coherent the VMM *traces* the guest's page tables: every guest frame
that serves as a page directory or page table is mapped read-only in all
shadows, so a guest write to a page-table entry faults; the VMM emulates the
write and drops the shadow entries derived from it.  Accessed and dirty bits
behave as the guest expects because a shadow entry is made writable only after
the guest's entry has been marked dirty by the VMM's own walk.

A shadow entry only ever points into guest RAM (the walk refuses frames beyond
it), so no guest-controlled mapping can reach machine memory.

The shadows are two-level whatever the guest uses; a PAE guest's tables are
walked as such and traced as pae.py describes.
"""
from dataclasses import dataclass, field

from virtlab import x86
from virtlab.memory import PSE36_HIGH, GuestMemoryFault, walk

from .memory import OutOfFrames
from .pae import PDPT, PT, PaeShadowing, fill_rights

VMM_PDE = 0x3F0                    # 0xFC000000 >> 22: the VMM window's PDE
MAX_SHADOWS = 48
UNSHADOW_AFTER = 32                # traced writes to the directory of an idle shadow


class Violation(Exception):
    """The guest touched memory it can never have (beyond RAM, the VMM window)."""


@dataclass
class ShadowTable:
    pa: int                        # machine address of the shadow page table
    guest_pt: int = None           # guest frame it shadows (None for a 4 MiB page)
    filled: set = field(default_factory=set)
    halves: set = field(default_factory=set)      # PAE: the (guest PT, first index) it shadows


@dataclass
class Shadow:
    key: object                    # guest page-directory frame, ("pae", CR3), or "flat"
    pd: int                        # machine address of the shadow page directory
    tables: dict = field(default_factory=dict)    # pde index -> ShadowTable
    idle_writes: int = 0
    directories: set = field(default_factory=set)  # PAE: the guest frames of its PDPT and PDs


# Outcomes of a page fault, as the back end needs to act on them.
HIDDEN, TRUE, TRACE = "hidden", "true", "trace"

# Bits a fault and a fill test, bound once (every hidden fault reads a dozen).
_PG, _WP = x86.CR0_PG, x86.CR0_WP
_P, _W, _U, _A, _D = x86.PTE_P, x86.PTE_W, x86.PTE_U, x86.PTE_A, x86.PTE_D
_PAE = x86.CR4_PAE
_PF_W, _PF_U, _PF_P = x86.PF_W, x86.PF_U, x86.PF_P
_FRAME = x86.PAGE_MASK


class ShadowMmu(PaeShadowing):
    def __init__(self, machine, vcpu, vmm, window_pde=None):
        self.mem = machine.mem
        self.vcpu = vcpu
        self.vmm = vmm
        self.counters = machine.counters
        self.flush_tlb = machine.flush_tlb
        # Shadow entries are aligned words of machine memory: a fill reads
        # and writes them as vmm.u32/set_u32 would, by index, without the call.
        self._words, self._words_base = vmm.mem.words, vmm.base
        self.window_pde = window_pde
        self.shadows = {}                          # key -> Shadow (insertion = LRU order)
        self.current = None
        self.pd_of = {}                            # guest PD frame -> Shadow
        self.pt_users = {}                         # guest PT frame -> {(key, pde index)}
        self.rmap = {}                             # guest frame -> {shadow PTE address}
        self.watched = {}                          # guest frame -> {on_write(frame): None}
        self.pae = {}                              # guest frame -> {its PAE uses} (pae.py)

    # -- which shadow the CPU walks ------------------------------------------
    def activate(self):
        """Select (or build) the shadow for the vCPU's paging state and return
        the machine address the real CR3 must hold."""
        v = self.vcpu
        if not v.paging:
            key = "flat"
        elif v.cr4 & _PAE:
            key = ("pae", v.cr3 & 0xFFFFFFE0)
        else:
            key = v.cr3 & x86.PAGE_MASK
        sh = self.shadows.pop(key, None)
        if sh is None:
            sh = self._new_shadow(key)
            self.counters["shadow.new"] += 1
        self.shadows[key] = sh                     # most recently used last
        sh.idle_writes = 0
        self.current = sh
        return sh.pd

    def _new_shadow(self, key):
        if len(self.shadows) >= MAX_SHADOWS:
            self._drop(next(iter(self.shadows.values())))
        pd = self._frame()
        sh = Shadow(key, pd)
        if self.window_pde is not None:
            self.vmm.set_u32(pd + 4 * VMM_PDE, self.window_pde)
        if isinstance(key, tuple):
            self._pae_use(key[1] & _FRAME, (PDPT, key, 0, 0), sh)
        elif key != "flat":
            self.pd_of[key] = sh
            self._write_protect(key)
        return sh

    def reset(self):
        """Drop every shadow (rebuilt on demand): needed when a paging mode bit
        that every derived entry depends on changes (CR0.WP, CR4.PSE)."""
        for sh in list(self.shadows.values()):
            self._drop(sh)
        self.flush_tlb()

    def _frame(self):
        try:
            pa = self.vmm.pool.take()
        except OutOfFrames:
            self.counters["shadow.flush"] += 1
            for sh in list(self.shadows.values()):
                if sh is not self.current:
                    self._drop(sh)
            pa = self.vmm.pool.take()
        self.vmm.zero_frame(pa)
        return pa

    def _drop(self, sh):
        for idx in list(sh.tables):
            self._zap_table(sh, idx)
        for frame in sh.directories:
            self._pae_forget(frame, lambda use: use[1] == sh.key)
        self.shadows.pop(sh.key, None)
        self.pd_of.pop(sh.key, None)
        self.vmm.pool.give(sh.pd)
        if self.current is sh:
            self.current = None

    # -- faults ---------------------------------------------------------------
    # [tour trap 130, hw 90] The shadow MMU walks the guest's page tables.
    # The guest's tables are walked as the CPU would, with the virtual CR0, CR3 and
    # CR4; nothing the guest maps may reach the VMM window or beyond guest RAM.
    def fault(self, linear, error_code):
        """Classify a real #PF: (HIDDEN, None) after filling the shadow,
        (TRUE, guest error code), or (TRACE, guest-physical address written)."""
        write = bool(error_code & _PF_W)
        user = bool(error_code & _PF_U)
        if linear >> 22 >= VMM_PDE:
            raise Violation(f"access to the VMM window at {linear:#010x}")
        v = self.vcpu
        cr0 = v.cr0
        if not cr0 & _PG:                          # (v.paging)
            if linear + 1 > self.mem.size:
                raise Violation(f"access to guest-physical {linear:#010x}, beyond RAM")
            return self._fill(linear, linear, _W | _U | _D, None, write)
        log = []
        try:
            gpa = walk(self.mem, cr0, v.cr3, v.cr4, linear, write, user, log)
        except GuestMemoryFault as f:
            if f.error_code & _PF_P and self._beyond_ram(log):
                raise Violation(f"guest page table maps {linear:#010x} beyond RAM") from None
            return TRUE, f.error_code
        if v.cr4 & _PAE:
            return self._fill_pae(linear, gpa, log, write, user, cr0)
        pde, pte = log[0][1], log[-1][1]
        two_level = len(log) > 1                   # else a 4 MiB page
        rights = fill_rights(pde & pte if two_level else pde, user, cr0)
        large_pd = None if two_level else True
        return self._fill(linear, gpa, rights & (_W | _U) | (pte & _D), pde, write, large_pd)

    def _beyond_ram(self, log):
        if self.vcpu.cr4 & _PAE:                   # (a PAE frame's high word: memory.walk_pae)
            high = {pa - 4: value for pa, value in log if pa & 7}
            return any(v & _P and (high.get(pa, 0) & 0x7FFFFFFF or (v & _FRAME) >= self.mem.size)
                       for pa, v in log if not pa & 7)
        return any(isinstance(v, int) and v & x86.PTE_P and ((v & x86.PAGE_MASK) >= self.mem.size
                                                             or v & x86.PTE_PS and v & PSE36_HIGH)
                   for _, v in log)

    # [tour trap 140, hw 100] A shadow fill: the hidden fault's work.
    # The walk's rights become a shadow entry.  A frame that holds a guest page table
    # is mapped read-only, so that the guest's writes to it fault and can be traced.
    def _fill(self, linear, gpa, rights, pde, write, large=None):
        # (traced() and protected() are inline: dictionary membership tests.)
        frame = gpa & _FRAME
        pd_of, pt_users, watched, pae = self.pd_of, self.pt_users, self.watched, self.pae
        if write:
            if frame in watched and rights & _W:
                for on_write in watched.pop(frame):      # before the write lands
                    on_write(frame)
            if frame in pd_of or frame in pt_users or frame in pae:
                return TRACE, gpa
        sh = self.current
        idx, pti = linear >> 22, (linear >> 12) & 0x3FF
        table = sh.tables.get(idx)
        if table is None:
            table = self._new_table(sh, idx, None if (pde is None or large) else pde & _FRAME)
        flags = _P | _A | (rights & _U)
        if rights & _W and rights & _D and not (frame in pd_of or frame in pt_users
                                                or frame in watched or frame in pae):
            flags |= _W | _D
        spte = table.pa + 4 * pti
        words, word = self._words, (spte - self._words_base) >> 2
        old = words[word]
        if old & _P:
            self._unmap(old & _FRAME, spte)
        words[word] = frame | flags
        table.filled.add(pti)
        users = self.rmap.get(frame)
        if users is None:
            users = self.rmap[frame] = set()
        users.add(spte)
        # No TLB flush: the CPU caches no not-present or read-only-for-this-
        # access translation, so the faulting access will walk the new entry.
        return HIDDEN, None

    def _new_table(self, sh, idx, guest_pt):
        table = ShadowTable(self._frame(), guest_pt)
        sh.tables[idx] = table
        self.vmm.set_u32(sh.pd + 4 * idx, table.pa | x86.PTE_P | x86.PTE_W | x86.PTE_U | x86.PTE_A)
        if guest_pt is not None:
            first = guest_pt not in self.pt_users
            self.pt_users.setdefault(guest_pt, set()).add((sh.key, idx))
            if first:
                self._write_protect(guest_pt)
        return table

    # -- tracing --------------------------------------------------------------
    def traced(self, frame):
        return frame in self.pd_of or frame in self.pt_users or frame in self.pae

    def protected(self, frame):
        """No shadow may map `frame` writable: it is a page table, or a back end
        watches it."""
        return (frame in self.pd_of or frame in self.pt_users or frame in self.pae
                or frame in self.watched)

    def watch(self, frame, on_write):
        """Call on_write(frame) before the guest next writes the guest frame,
        through any of its mappings (a translator's source pages: the write
        would make its translations stale).  The frame is made read-only in
        every shadow; the first write fault calls back, ends the watch, and
        the write then proceeds as an ordinary hidden fault.  Exact, because
        every mapping the CPU can use is a shadow entry the VMM made.  A
        frame may have several watchers (a translator's code and the guest's
        GDT on one page): each is called."""
        first = frame not in self.watched
        self.watched.setdefault(frame, {})[on_write] = None
        if first and not self.traced(frame):
            self._write_protect(frame)

    def unwatch(self, frame, on_write):
        watchers = self.watched.get(frame)
        if watchers is not None:
            watchers.pop(on_write, None)
            if not watchers:
                del self.watched[frame]

    def _write_protect(self, frame):
        """A guest frame became a page table: no shadow may map it writable."""
        for spte in self.rmap.get(frame, ()):
            val = self.vmm.u32(spte)
            if val & x86.PTE_W:
                self.vmm.set_u32(spte, val & ~x86.PTE_W)
        self.flush_tlb()

    # [tour trap 150, hw 110] A traced page-table write.
    # The guest wrote an entry of one of its page tables; the VMM emulated the store
    # (paging.py) and now drops every shadow entry derived from what changed, so the
    # next access refills from the new value.  This is what makes fork expensive under
    # shadow paging.
    def traced_write(self, gpa, size):
        """The guest wrote `size` bytes at `gpa` in a traced frame (the write is
        already done): drop every shadow entry derived from what changed."""
        frame, off = gpa & _FRAME, gpa & 0xFFF
        last = (off + size - 1) >> 2
        entries = range(off >> 2, last + 1 if last < 1024 else 1024)   # those written
        changed = frame in self.pae and self._pae_write(frame, off, size)
        sh = self.pd_of.get(frame)
        if sh is not None:
            for idx in entries:
                if idx in sh.tables:
                    self._zap_table(sh, idx)
                    changed = True
            if sh is not self.current:
                changed |= self._idle_write(sh)
        # (Walked without a copy: dropping entries changes no table's users.)
        for key, idx in self.pt_users.get(frame, ()):
            table = self.shadows[key].tables[idx]
            for pti in entries:
                if pti in table.filled:
                    self._zap_pte(table, pti)
                    changed = True
        # The CPU's TLB caches only what present shadow entries map (and is
        # flushed whenever one is dropped), so if no shadow entry changed it
        # holds nothing stale: a guest rewriting an entry it has not used
        # since (a page-table update loop) costs no flush, which would empty
        # the whole TLB and the CPU's jump cache with it.
        if changed:
            self.flush_tlb()

    def _idle_write(self, sh):
        """A traced write to the directory of a shadow the CPU is not walking:
        after enough of them it is no longer a live address space (its frame
        is being reused), and is dropped.  True if it was."""
        sh.idle_writes += 1
        if sh.idle_writes <= UNSHADOW_AFTER:
            return False
        self.counters["shadow.unshadow"] += 1
        self._drop(sh)
        return True

    def untrace(self, frame):
        """Stop treating `frame` as a page table (the guest is reusing it as
        data, e.g. zeroing it with a string instruction the VMM does not
        emulate): drop every shadow derived from it.  False if it is the page
        directory the CPU is walking right now, which cannot be dropped."""
        sh = self.pd_of.get(frame)
        if sh is self.current and sh is not None:
            return False
        if not self._pae_untrace(frame):
            return False
        if sh is not None:
            self._drop(sh)
        for key, idx in list(self.pt_users.get(frame, ())):
            self._zap_table(self.shadows[key], idx)
        self.counters["shadow.unshadow"] += 1
        self.flush_tlb()
        return True

    def _zap_pte(self, table, pti):
        spte = table.pa + 4 * pti
        old = self.vmm.u32(spte)
        if old & x86.PTE_P:
            self._unmap(old & x86.PAGE_MASK, spte)
        self.vmm.set_u32(spte, 0)
        table.filled.discard(pti)

    def _zap_table(self, sh, idx):
        table = sh.tables.pop(idx)
        for pti in list(table.filled):
            self._zap_pte(table, pti)
        self.vmm.set_u32(sh.pd + 4 * idx, 0)
        if table.guest_pt is not None:
            users = self.pt_users.get(table.guest_pt)
            if users is not None:
                users.discard((sh.key, idx))
                if not users:
                    del self.pt_users[table.guest_pt]
        for guest_pt, first in table.halves:
            uses = self.pae.get(guest_pt)
            if uses is not None:
                uses.discard((PT, sh.key, idx, first))
                if not uses:
                    del self.pae[guest_pt]
        self.vmm.pool.give(table.pa)

    def _unmap(self, frame, spte):
        users = self.rmap.get(frame)
        if users is not None:
            users.discard(spte)
            if not users:
                del self.rmap[frame]

    # -- TLB maintenance the guest asks for ----------------------------------
    def invlpg(self, linear):
        sh = self.current
        table = sh.tables.get(linear >> 22) if sh else None
        if table is not None and ((linear >> 12) & 0x3FF) in table.filled:
            self._zap_pte(table, (linear >> 12) & 0x3FF)
        self.flush_tlb()
