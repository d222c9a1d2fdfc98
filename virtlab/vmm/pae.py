"""Shadowing a PAE guest: the guest's three-level tables, the VMM's two-level
shadow.

The real CPU pages through the VMM's tables, and those stay two-level (4 KiB
entries, 1024 to a table, one table per 4 MiB) whatever the guest uses: a
shadow entry is derived from one walk of the guest's tables, and the walk
(memory.walk_pae) reads PAE tables as the CPU does.  What changes is tracing,
since the guest's paging structures no longer line up with the shadow's:

  - the PDPT: 32 bytes at CR3, four entries of 1 GiB each.  The shadow of a
    PAE address space is keyed by the whole CR3 (several PDPTs may share a
    page), and a write to its PDPT drops everything derived from it;
  - a page directory: 512 entries of 2 MiB, so entry j of the directory for
    GiB k is half of shadow table 256 k + j / 2.  One directory may serve
    several address spaces (a kernel shares its top one), so it is traced
    per use;
  - a page table: 512 entries of 4 KiB, half of a shadow table: entry i is
    shadow entry i of the lower half or 512 + i of the upper one.

Each guest frame in such a use is write-protected in every shadow, as a
two-level guest's directory and tables are (shadow.py), and ShadowMmu.pae
maps it to its uses: (PDPT, key, 0, 0), (PD, key, k, 0) or (PT, key, shadow
table, first entry).
"""
from virtlab import x86

PDPT, PD, PT = "pdpt", "pd", "pt"
_FRAME = x86.PAGE_MASK
_W, _U, _D, _WP = x86.PTE_W, x86.PTE_U, x86.PTE_D, x86.CR0_WP


def fill_rights(rights, user, cr0):
    """The rights a shadow entry gives for the guest's `rights` (its entries'
    W and U, ANDed), filled for a supervisor or a `user` access.  With CR0.WP
    clear the supervisor writes pages its tables make read-only, and user
    code still may not: such an entry is writable for the supervisor alone
    (a user access faults and is filled again, read-only)."""
    if not user and not cr0 & _WP and not rights & _W:
        return (rights | _W) & ~_U
    return rights


class PaeShadowing:
    """ShadowMmu's part for PAE guests (self is the ShadowMmu)."""

    # [tour trap 155, hw 115, bt 177] A PAE guest under a two-level shadow.
    # The fill is the same; what a write to the guest's tables must drop is not: a
    # directory entry covers half a shadow table, a page table half of one, and a
    # kernel's directory may serve every address space.  Each frame is traced per use.
    def _fill_pae(self, linear, gpa, log, write, user, cr0):
        """fault() for a PAE guest, after its walk succeeded: trace the
        directory the walk went through, fill, and trace the page table."""
        pdpte, pde, pte = _low_words(log)
        sh = self.current
        self._pae_use(pdpte & _FRAME, (PD, sh.key, linear >> 30, 0), sh)
        large = pte is None
        rights = fill_rights(pde if large else pde & pte, user, cr0)
        dirty = (pde if large else pte) & _D
        outcome = self._fill(linear, gpa, rights & (_W | _U) | dirty, None, write, True)
        table = sh.tables.get(linear >> 22)
        if not large and table is not None:
            half = (pde & _FRAME, ((linear >> 21) & 1) * 512)
            if half not in table.halves:
                table.halves.add(half)
                self._pae_use(half[0], (PT, sh.key, linear >> 22, half[1]), sh)
        return outcome

    def _pae_use(self, frame, use, sh):
        uses = self.pae.get(frame)
        if uses is None:
            newly = not self.traced(frame)
            uses = self.pae[frame] = set()
        else:
            newly = False
        uses.add(use)
        if use[0] != PT:
            sh.directories.add(frame)
        if newly:
            self._write_protect(frame)

    def _pae_forget(self, frame, which):
        uses = self.pae.get(frame)
        if uses is None:
            return
        for use in [u for u in uses if which(u)]:
            uses.discard(use)
        if not uses:
            del self.pae[frame]

    def _pae_write(self, frame, off, size):
        """traced_write() of a frame in PAE use: True if a shadow entry
        changed."""
        first, last = off >> 3, min((off + size - 1) >> 3, 511)
        changed = False
        for kind, key, where, base in list(self.pae.get(frame, ())):
            sh = self.shadows.get(key)
            if sh is None:
                continue                           # dropped by an earlier use's write
            if kind == PDPT:
                at = key[1] & 0xFFF
                if off < at + 32 and off + size > at:
                    changed |= self._pae_reset(sh)
            elif kind == PD:
                for j in range(first, last + 1):
                    idx = (where << 8) | (j >> 1)
                    if idx in sh.tables:
                        self._zap_table(sh, idx)
                        changed = True
            else:
                table = sh.tables.get(where)
                for i in range(first, last + 1) if table is not None else ():
                    if base + i in table.filled:
                        self._zap_pte(table, base + i)
                        changed = True
            if kind != PT and sh is not self.current:
                changed |= self._idle_write(sh)
        return changed

    def _pae_reset(self, sh):
        """The PDPT of `sh` changed: nothing derived from it holds."""
        for idx in list(sh.tables):
            self._zap_table(sh, idx)
        for frame in list(sh.directories):
            self._pae_forget(frame, lambda u: u[0] == PD and u[1] == sh.key)
            if (PDPT, sh.key, 0, 0) not in self.pae.get(frame, ()):
                sh.directories.discard(frame)
        return True

    def _pae_untrace(self, frame):
        """untrace() of a frame in PAE use; False if it is a directory of the
        address space the CPU is walking now."""
        uses = self.pae.get(frame, ())
        if any(u[0] != PT and self.shadows.get(u[1]) is self.current for u in uses):
            return False
        for kind, key, where, _ in list(uses):
            sh = self.shadows.get(key)
            if sh is None:
                continue
            if kind != PT:
                self._drop(sh)
            elif where in sh.tables:
                self._zap_table(sh, where)
        return True


def _low_words(log):
    """(PDPTE, PDE, PTE or None for a 2 MiB page) from walk_pae's log."""
    lows = [value for pa, value in log if not pa & 7]
    return lows[0], lows[1], lows[2] if len(lows) > 2 else None
