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
from dataclasses import dataclass

from unicorn import UC_PROT_ALL

from . import x86

_U32 = struct.Struct("<I")


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


def walk(mem, cr0, cr3, cr4, linear, write=False, user=False, log=None):
    """Translate a linear address as the IA-32 MMU does (two-level, 4 KiB pages,
    4 MiB pages with CR4.PSE), setting accessed and dirty bits like the hardware.
    Raises GuestMemoryFault with the #PF error code the CPU would report.
    With `log`, appends the (address, value) of every paging entry it relied on,
    so a caller can cache the result and later check it still holds."""
    if not cr0 & x86.CR0_PG:
        if linear >= mem.size:
            raise GuestMemoryFault(linear, 0)
        return linear
    err = (x86.PF_W if write else 0) | (x86.PF_U if user else 0)
    pde_pa = (cr3 & x86.PAGE_MASK) + ((linear >> 22) << 2)
    if pde_pa + 4 > mem.size:
        raise GuestMemoryFault(linear, err)
    pde = mem.u32(pde_pa)
    if not pde & x86.PTE_P:
        raise GuestMemoryFault(linear, err)
    if pde & x86.PTE_PS and cr4 & x86.CR4_PSE:
        _check(pde, pde, cr0, write, user, linear, err)
        flags = x86.PTE_A | (x86.PTE_D if write else 0)
        if pde & flags != flags:
            pde |= flags
            mem.set_u32(pde_pa, pde)
        if log is not None:
            log.append((pde_pa, pde))
        pa = (pde & 0xFFC00000) | (linear & 0x3FFFFF)
    else:
        pte_pa = (pde & x86.PAGE_MASK) + (((linear >> 12) & 0x3FF) << 2)
        if pte_pa + 4 > mem.size:
            raise GuestMemoryFault(linear, err)
        pte = mem.u32(pte_pa)
        if not pte & x86.PTE_P:
            raise GuestMemoryFault(linear, err)
        if (write or user) and (pde & pte & 6) != 6:
            _check(pde, pte, cr0, write, user, linear, err)
        if not pde & x86.PTE_A:
            pde |= x86.PTE_A
            mem.set_u32(pde_pa, pde)
        flags = x86.PTE_A | (x86.PTE_D if write else 0)
        if pte & flags != flags:
            pte |= flags
            mem.set_u32(pte_pa, pte)
        if log is not None:
            log.append((pde_pa, pde))
            log.append((pte_pa, pte))
        pa = (pte & x86.PAGE_MASK) | (linear & 0xFFF)
    if pa >= mem.size:
        raise GuestMemoryFault(linear, err | x86.PF_P)
    return pa


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

    def __init__(self, mem, cr0, cr3, cr4, log=None, on_write=None):
        self.mem, self.cr0, self.cr3, self.cr4 = mem, cr0, cr3, cr4
        self.log = log
        self.on_write = on_write

    def phys(self, linear, write=False, user=False):
        return walk(self.mem, self.cr0, self.cr3, self.cr4, linear, write, user, self.log)

    def read(self, linear, n, user=False):
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
        return _U32.unpack(self.read(linear, 4, user))[0]

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


@dataclass(frozen=True)
class Dependencies:
    """What a cached result was computed from: paging entries (address, value)
    and byte ranges (address, bytes), each recorded once."""
    entries: tuple
    ranges: tuple

    @classmethod
    def from_log(cls, log):
        entries = dict(e for e in log if isinstance(e[1], int))
        ranges = dict(e for e in log if not isinstance(e[1], int))
        return cls(tuple(entries.items()), tuple(ranges.items()))

    def hold(self, mem):
        """True if every recorded value is unchanged in memory."""
        view = mem.view
        unpack = _U32.unpack_from
        for pa, value in self.entries:
            if unpack(view, pa)[0] != value:
                return False
        for pa, raw in self.ranges:
            if view[pa:pa + len(raw)] != raw:
                return False
        return True
