"""Guest physical memory and the software page walk.

Guest RAM is one host buffer mapped into the CPU with uc_mem_map_ptr, so the VMM
reads and writes it as a memoryview at the cost of a slice, not a library call.
Machine memory (the VMM's own pages: shadow tables, translation cache, state) is
mapped above RAM; no guest page table can reach it because the VMM never lets a
guest-controlled mapping point past the end of RAM.

Unicorn's mem_read/mem_write take physical addresses even with paging on, so the
VMM walks the guest's page tables itself (walk()) whenever it touches guest-virtual
memory: an IDT gate, a stack push, the bytes of an exiting instruction.
"""
import ctypes
import mmap
import struct
from dataclasses import dataclass, field
from functools import lru_cache, partial

from unicorn import UC_PROT_ALL

from . import x86

_U32 = struct.Struct("<I")


# struct.Struct of a format, kept: the same gathers are made for every
# machine and the same dependencies for every route resolved again.
_struct = lru_cache(maxsize=4096)(struct.Struct)


def gather(buffer, offsets):
    """A function of no arguments that reads the u32s at `offsets` of
    `buffer` (a memoryview) in one call: a struct.unpack_from over the span
    they cover, the bytes between skipped, bound to the buffer so that a read
    costs one call into C and no Python frame.  The values come in address
    order (and as a tuple even for one offset)."""
    offsets = sorted(set(offsets))
    fmt, pos = "<", offsets[0]
    for off in offsets:
        fmt += (f"{off - pos}x" if off > pos else "") + "I"
        pos = off + 4
    return partial(_struct(fmt).unpack_from, buffer, offsets[0])


def gather_runs(buffer, words):
    """Like gather(), for a snapshot that is only ever compared: the u32
    words at indices `words` of `buffer`, each run of adjacent words read as
    one value (two as a u64, more as bytes), so that a descriptor or a gate
    costs one object to make and compare, not two."""
    words = sorted(set(words))
    runs, start = [], words[0]
    for prev, cur in zip(words, words[1:] + [None]):
        if cur != prev + 1:
            runs.append((start, prev + 1 - start))
            start = cur
    fmt, pos = "<", runs[0][0]
    for first, count in runs:
        if first > pos:
            fmt += f"{4 * (first - pos)}x"
        fmt += "I" if count == 1 else "Q" if count == 2 else f"{4 * count}s"
        pos = first + count
    return partial(_struct(fmt).unpack_from, buffer, 4 * runs[0][0])


class GuestMemoryFault(Exception):
    """A VMM access on the guest's behalf hit an unmapped or protected page.
    Carries what the hardware would report for the guest's own access."""

    def __init__(self, linear, error_code):
        super().__init__(f"page fault at {linear:#010x} (error {error_code:#x})")
        self.linear = linear
        self.error_code = error_code


@dataclass
class PhysMem:
    """A range of physical memory as one host buffer: guest RAM at [0, size),
    or machine memory at [base, base + size).  Addresses given to the methods
    are offsets into the buffer (for RAM these are guest-physical addresses)."""
    size: int
    buf: object
    view: memoryview
    base: int = 0
    words: memoryview = field(default=None, repr=False)   # the same bytes as u32s
    tlb: dict = field(default=None, repr=False)           # translate()'s cache

    def __post_init__(self):
        # Word-aligned u32s over the same buffer (paging entries are words).
        if self.words is None:
            self.words = self.view.cast("B").cast("I")
        if self.tlb is None:
            self.tlb = {}

    @classmethod
    def create(cls, uc, size, base=0):
        # An anonymous mapping: the kernel hands out zero pages on first touch,
        # so a 32 MiB guest costs only the pages it uses (a ctypes array would
        # be zeroed byte by byte, about 45 ms per machine).  The mapping lives
        # as long as this object; the machine keeps it until the engine is closed.
        buf = mmap.mmap(-1, size)
        address = ctypes.addressof(ctypes.c_ubyte.from_buffer(buf))
        uc.mem_map_ptr(base, size, UC_PROT_ALL, address)
        return cls(size, buf, memoryview(buf), base)

    def u32(self, pa):
        return _U32.unpack_from(self.view, pa)[0]

    def set_u32(self, pa, value):
        _U32.pack_into(self.view, pa, value & 0xFFFFFFFF)

    def read(self, pa, n):
        return bytes(self.view[pa:pa + n])

    def write(self, pa, data):
        self.view[pa:pa + len(data)] = data


# Bits the walk tests, bound once (module attribute lookups are measurable
# on a path every exit may take several times).
_PG, _WP, _PSE, _PAE = x86.CR0_PG, x86.CR0_WP, x86.CR4_PSE, x86.CR4_PAE
_PAGING_MODE = _PSE | _PAE        # the CR4 bits that decide how entries read
_P, _A, _D, _PS, _PF_P = x86.PTE_P, x86.PTE_A, x86.PTE_D, x86.PTE_PS, x86.PF_P
_FRAME = x86.PAGE_MASK


def walk(mem, cr0, cr3, cr4, linear, write=False, user=False, log=None):
    """Translate a linear address as the IA-32 MMU does (two-level, 4 KiB pages,
    4 MiB pages with CR4.PSE; with CR4.PAE three-level: walk_pae()), setting
    accessed and dirty bits like the hardware.
    Raises GuestMemoryFault with the #PF error code the CPU would report.
    With `log`, appends the (address, value) of every paging entry it relied on,
    so a caller can cache the result and later check it still holds."""
    if not cr0 & _PG:
        if linear >= mem.size:
            raise GuestMemoryFault(linear, 0)
        return linear
    if cr4 & _PAE:
        return walk_pae(mem, cr0, cr3, linear, write, user, log)
    err = (x86.PF_W if write else 0) | (x86.PF_U if user else 0)
    pde_pa = (cr3 & _FRAME) + ((linear >> 22) << 2)
    if pde_pa + 4 > mem.size:
        raise GuestMemoryFault(linear, err)
    words = mem.words
    pde = words[pde_pa >> 2]
    if not pde & _P:
        raise GuestMemoryFault(linear, err)
    if pde & _PS and cr4 & _PSE:
        _check(pde, pde, cr0, write, user, linear, err)
        pde = _mark(words, pde_pa, pde, write)
        if log is not None:
            log.append((pde_pa, pde))
        if pde & PSE36_HIGH:                   # a frame above 4 GiB: beyond RAM
            raise GuestMemoryFault(linear, err | _PF_P)
        pa = (pde & 0xFFC00000) | (linear & 0x3FFFFF)
    else:
        # The CPU model sets the PDE's accessed bit as it goes on to the page
        # table, before it reads the PTE: a walk that faults there leaves it set.
        if not pde & _A:
            pde |= _A
            words[pde_pa >> 2] = pde
        pte_pa = (pde & _FRAME) + (((linear >> 12) & 0x3FF) << 2)
        if pte_pa + 4 > mem.size:
            raise GuestMemoryFault(linear, err)
        pte = words[pte_pa >> 2]
        if not pte & _P:
            raise GuestMemoryFault(linear, err)
        if (write or user) and (pde & pte & 6) != 6:
            _check(pde, pte, cr0, write, user, linear, err)
        return _through_table(mem, pde_pa, pde, pte_pa, pte, linear, write, err, log)
    if pa >= mem.size:
        raise GuestMemoryFault(linear, err | _PF_P)
    return pa


def _through_table(mem, pde_pa, pde, pte_pa, pte, linear, write, err, log):
    """The end of a walk through a page table, two-level or PAE (the low
    words of the entries): the accessed bits, and the dirty bit of a write,
    set as the CPU sets them; the entries logged; the physical address."""
    words = mem.words
    if not pde & _A:
        pde |= _A
        words[pde_pa >> 2] = pde
    flags = _A | (_D if write else 0)          # (_mark(), inline: every fill walks here)
    if pte & flags != flags:
        pte |= flags
        words[pte_pa >> 2] = pte
    if log is not None:
        log.append((pde_pa, pde))
        log.append((pte_pa, pte))
    pa = (pte & _FRAME) | (linear & 0xFFF)
    if pa >= mem.size:
        raise GuestMemoryFault(linear, err | _PF_P)
    return pa


# [PAE paging (SDM vol. 3, 4.4): 64-bit entries, three levels.  CR3 holds the
# 32-byte aligned address of four page-directory-pointer entries, one per GiB;
# each names a page directory of 512 entries (2 MiB each, a 2 MiB page when PS
# is set, whatever CR4.PSE says), each a page table of 512.  A PDPTE has only
# its present bit (no rights, no accessed bit: the CPU loads the four into
# registers when CR3 is written; this walk reads them from memory each time).
# The frame bits above 4 GiB lie in the high word, and bit 63 is XD; neither
# can name RAM here, so a high word other than 0 or XD alone is a fault.]
def walk_pae(mem, cr0, cr3, linear, write=False, user=False, log=None):
    """walk() under CR4.PAE.  The log holds the high word of each entry as
    it is read, then the low words in walk order (PDPTE, PDE[, PTE]): the
    entries at addresses that are multiples of 8."""
    err = (x86.PF_W if write else 0) | (x86.PF_U if user else 0)
    pdpte_pa = (cr3 & 0xFFFFFFE0) + ((linear >> 30) << 3)
    pdpte = _entry64(mem, pdpte_pa, linear, err, log)
    if not pdpte & _P:
        raise GuestMemoryFault(linear, err)
    pde_pa = (pdpte & _FRAME) + (((linear >> 21) & 0x1FF) << 3)
    pde = _entry64(mem, pde_pa, linear, err, log)
    if not pde & _P:
        raise GuestMemoryFault(linear, err)
    words = mem.words
    if log is not None:
        log.append((pdpte_pa, pdpte))
    if pde & _PS:
        _check(pde, pde, cr0, write, user, linear, err)
        pde = _mark(words, pde_pa, pde, write)
        pa = (pde & 0xFFE00000) | (linear & 0x1FFFFF)
        if log is not None:
            log.append((pde_pa, pde))
    else:
        if not pde & _A:                           # (as in walk(): before the PTE)
            pde |= _A
            words[pde_pa >> 2] = pde
        pte_pa = (pde & _FRAME) + (((linear >> 12) & 0x1FF) << 3)
        pte = _entry64(mem, pte_pa, linear, err, log)
        if not pte & _P:
            raise GuestMemoryFault(linear, err)
        _check(pde, pte, cr0, write, user, linear, err)
        return _through_table(mem, pde_pa, pde, pte_pa, pte, linear, write, err, log)
    if pa >= mem.size:
        raise GuestMemoryFault(linear, err | _PF_P)
    return pa


def _mark(words, pa, entry, write):
    """The paging entry at `pa` with its accessed bit, and for a write its
    dirty bit, set in memory as the CPU sets them."""
    flags = _A | (_D if write else 0)
    if entry & flags != flags:
        entry |= flags
        words[pa >> 2] = entry
    return entry


def _entry64(mem, pa, linear, err, log):
    """The low word of the 64-bit paging entry at `pa`, its high word checked
    (and logged: a change there changes the translation)."""
    if pa + 8 > mem.size:
        raise GuestMemoryFault(linear, err)
    low, high = mem.words[pa >> 2], mem.words[(pa >> 2) + 1]
    if log is not None:
        log.append((pa + 4, high))
    if high & 0x7FFFFFFF and low & _P:
        if log is not None:
            log.append((pa, low))
        raise GuestMemoryFault(linear, err | _PF_P)      # a frame beyond RAM
    return low


TLB_ENTRIES = 4096

# A 4 MiB page's PDE bits 13-20: bits 32-39 of its frame (PSE-36, which the
# CPU model has: CPUID.1:EDX bit 17).
PSE36_HIGH = 0x001FE000


def translate(mem, cr0, cr3, cr4, linear, write=False, user=False, log=None):
    """walk(), remembered as a TLB remembers it.

    What a walk returns (and whether it faults) is a function of CR0.PG and
    CR0.WP, CR3, CR4.PSE and PAE, the page, the kind of access and the
    paging entries it reads (two at most; under PAE three, with their high
    words); and once those entries have their accessed (and,
    for a write, dirty) bits set, the walk writes nothing.  So a successful
    walk is kept with the entries as it left them, and reused only while
    both still hold exactly those values: a guest store to either, an
    accessed or dirty bit cleared, a different CR3 or paging mode, all make
    the next access walk again, as the hardware would after the INVLPG or
    CR3 load that must accompany such a change (and even without one).
    A fault is never cached: it is raised by a fresh walk every time."""
    if not cr0 & _PG:
        return walk(mem, cr0, cr3, cr4, linear, write, user, log)
    entry = tlb_entry(mem, cr0, cr3, cr4, linear, write, user)
    if log is not None:
        log += entry[3]
    return entry[2] | (linear & 0xFFF)


def tlb_entry(mem, cr0, cr3, cr4, linear, write=False, user=False):
    """translate()'s cached walk of the page of `linear` (paging on):
    (check, expected, frame, entries), valid while check() == expected;
    walked now if there is none or it no longer holds."""
    key = (linear >> 12, cr3, cr0 & _WP, cr4 & _PAGING_MODE, write, user)
    tlb = mem.tlb
    hit = tlb.get(key)
    if hit is not None and hit[0]() == hit[1]:
        return hit
    entries = []
    pa = walk(mem, cr0, cr3, cr4, linear, write, user, entries)
    if len(tlb) >= TLB_ENTRIES:
        tlb.clear()
    deps = Dependencies.from_log(entries, mem)
    hit = tlb[key] = (deps.check, deps.expected, pa & _FRAME, entries)
    return hit


def _check(pde, pte, cr0, write, user, linear, err):
    """Protection: both levels must allow the access (SDM vol. 3, 4.6)."""
    allowed_w = pde & pte & x86.PTE_W
    allowed_u = pde & pte & x86.PTE_U
    if user and not allowed_u:
        raise GuestMemoryFault(linear, err | x86.PF_P)
    if write and not allowed_w and (user or cr0 & x86.CR0_WP):
        raise GuestMemoryFault(linear, err | x86.PF_P)


class LinearView:
    """Guest-virtual memory as the CPU currently sees it (paging per CR0/CR3/CR4).
    With `log` set to a list, every paging entry and every byte range it reads is
    recorded there as (physical address, expected value) pairs.  With
    `on_write`, on_write(physical address, length) is told of every write the
    VMM makes through the view, before it lands (a translator whose code it
    may overwrite must hear of writes the CPU never makes)."""

    __slots__ = ("mem", "cr0", "cr3", "cr4", "log", "on_write")

    def __init__(self, mem, cr0, cr3, cr4, log=None, on_write=None):
        self.mem, self.cr0, self.cr3, self.cr4 = mem, cr0, cr3, cr4
        self.log = log
        self.on_write = on_write

    def phys(self, linear, write=False, user=False):
        cr0 = self.cr0
        if cr0 & _PG:
            if self.log is None:                       # translate(), its common case inline
                hit = self.mem.tlb.get((linear >> 12, self.cr3, cr0 & _WP, self.cr4 & _PAGING_MODE,
                                        write, user))  # (the key as tlb_entry() makes it)
                if hit is not None and hit[0]() == hit[1]:
                    return hit[2] | (linear & 0xFFF)
        elif linear < self.mem.size:                   # walk() with paging off, inline
            return linear
        return translate(self.mem, cr0, self.cr3, self.cr4, linear, write, user, self.log)

    def read(self, linear, n, user=False):
        if (linear & 0xFFF) + n <= x86.PAGE_SIZE:         # within one page: one translation
            cr0 = self.cr0
            if cr0 & _PG and self.log is None:             # phys(), its common case inline
                hit = self.mem.tlb.get((linear >> 12, self.cr3, cr0 & _WP, self.cr4 & _PAGING_MODE,
                                        False, user))      # (the key as tlb_entry() makes it)
                if hit is not None and hit[0]() == hit[1]:
                    pa = hit[2] | (linear & 0xFFF)
                    return bytes(self.mem.view[pa:pa + n])
            pa = self.phys(linear, False, user)
            data = bytes(self.mem.view[pa:pa + n])
            if self.log is not None:
                self.log.append((pa, data))
            return data
        out = bytearray()
        while n:
            chunk = min(n, x86.PAGE_SIZE - (linear & 0xFFF))
            pa = self.phys(linear, False, user)
            out += self.mem.view[pa:pa + chunk]
            if self.log is not None:
                self.log.append((pa, bytes(self.mem.view[pa:pa + chunk])))
            linear = (linear + chunk) & 0xFFFFFFFF
            n -= chunk
        return bytes(out)

    def u32(self, linear, user=False):
        if linear & 3 or self.log is not None:
            return _U32.unpack(self.read(linear, 4, user))[0]
        return self.mem.words[self.phys(linear, False, user) >> 2]     # aligned: one page

    def write(self, linear, data, user=False):
        off = 0
        while off < len(data):
            chunk = min(len(data) - off, x86.PAGE_SIZE - (linear & 0xFFF))
            pa = self.phys(linear, True, user)
            if self.on_write is not None:
                self.on_write(pa, chunk)
            self.mem.view[pa:pa + chunk] = data[off:off + chunk]
            linear = (linear + chunk) & 0xFFFFFFFF
            off += chunk


class Dependencies:
    """What a cached result was computed from: paging entries (address, value)
    and byte ranges (address, bytes), checked in one step.

    Every recorded address is turned into the aligned 32-bit words that cover
    it, and the words' present values become the expectation: one gather()
    reads them all, and one tuple comparison decides (check() == expected).
    A word also covers up to three bytes the result never read, so a change
    there, too, makes the check fail: the result is then computed again,
    which costs time but never gives a different answer.  A log whose values
    memory no longer holds (something wrote between the read and now) gives
    dependencies that never hold."""
    __slots__ = ("check", "expected")

    def __init__(self, check, expected):
        self.check = check
        self.expected = expected

    @classmethod
    def from_log(cls, log, mem):
        view = mem.view
        stale = False
        words = set()
        for pa, value in log:
            if isinstance(value, int):
                stale |= _U32.unpack_from(view, pa)[0] != value
                n = 4
            else:
                n = len(value)
                stale |= view[pa:pa + n] != value
            words.update(range(pa >> 2, (pa + n + 3) >> 2))
        if not words:
            return cls(tuple, ())                   # nothing to depend on: always holds
        check = gather_runs(view, words)
        return cls(check, None if stale else check())   # None: never equal to a tuple

    def hold(self, mem=None):
        """True if every recorded value is unchanged in memory."""
        return self.check() == self.expected
