"""The domain builder: how a PV guest is started (Xen's xc_dom_build).

A native kernel starts with paging off and builds its own page tables.  A PV
kernel cannot: it never runs at ring 0, and every page table it uses must be
validated by the hypervisor.  So the builder starts it in the state it would
have reached, the way Xen's domain builder does:

  1. pick the domain's machine frames (layout.scramble: not contiguous, not
     equal to the page numbers) and fill the machine-to-physical table;
  2. load the image at pseudo-physical 1 MiB, mapped at `virt_base + 1 MiB`;
  3. after the image, in Xen's order: the page-frame list, start_info, the
     block ring, the bootstrap page tables, a stack page;
  4. write the page tables: all of the domain's memory at `virt_base`, the
     page tables themselves read-only;
  5. validate them (pin the directory: every entry is checked, frames.py)
     and make the directory the base pointer;
  6. fill start_info (with the command line that carries the workload) and
     give the block device its ring and event channel.

The CPU's registers are set by the hypervisor's boot() from what this returns.
"""
from dataclasses import dataclass

from virtlab import x86

from . import abi, layout as L
from .frames import L2

_RW = x86.PTE_P | x86.PTE_W
_RO = x86.PTE_P
_KERNEL_PDE = x86.PTE_P | x86.PTE_W


@dataclass(frozen=True)
class Header:
    virt_base: int
    entry: int
    virt_end: int
    version: int


@dataclass
class StartOfDay:
    """What the builder made: where the guest finds it, and the CPU state."""
    nr_pages: int
    p2m: list
    start_info: int          # virtual
    pt_base_mfn: int
    stack_end: int           # virtual: ESP at entry
    entry: int
    blk_ring_pfn: int
    blk_port: int
    virt_base: int           # where the domain's memory is mapped, pfn 0 first


def parse_header(image, nr_pages):
    """The image's PV header, checked against a domain of nr_pages; raises
    ValueError with one line saying what is wrong."""
    if len(image) < abi.IMAGE_HEADER.size or not image.startswith(abi.IMAGE_MAGIC):
        raise ValueError("not a PV image (no VLABPV32 header; see docs/pv-abi.md)")
    magic, base, entry, end, version = abi.IMAGE_HEADER.unpack_from(image)
    h = Header(base, entry, end, version)
    load = base + abi.IMAGE_LOAD
    if base & 0x3FFFFF or base >= abi.HYPERVISOR_VIRT_START:
        raise ValueError(f"PV header: virt_base {base:#x} is not 4 MiB aligned below the "
                         f"hypervisor at {abi.HYPERVISOR_VIRT_START:#x}")
    if base + nr_pages * L.PAGE > abi.HYPERVISOR_VIRT_START:
        room = (abi.HYPERVISOR_VIRT_START - base) >> 20
        raise ValueError(f"a domain of {nr_pages * L.PAGE >> 20} MiB mapped from virt_base "
                         f"{base:#x} would reach the hypervisor at "
                         f"{abi.HYPERVISOR_VIRT_START:#x}: this image has room for {room} MiB")
    if not load <= entry < end or end < load + len(image) or end > base + nr_pages * L.PAGE:
        raise ValueError(f"PV header: entry {entry:#x} or virt_end {end:#x} does not fit the "
                         f"image loaded at {load:#x}")
    if version >> 16 != abi.XEN_VERSION_NUMBER >> 16:
        raise ValueError(f"PV header: the image wants interface {version:#x}, "
                         f"this hypervisor offers {abi.XEN_VERSION_NUMBER:#x}")
    return h


@dataclass(frozen=True)
class Bootstrap:
    """The pseudo-physical pages of the bootstrap region (docs/pv-abi.md, 3)."""
    mfn_list: int
    start_info: int
    ring: int
    pt_base: int             # the page directory; its n_l1 page tables follow
    n_l1: int
    stack: int


def bootstrap(h, nr_pages):
    """Where the builder puts the bootstrap region for an image with header h
    in a domain of nr_pages: a pure function, so that a test guest can know
    its own page tables' frames before it runs."""
    pfn = (h.virt_end - h.virt_base + L.PAGE - 1) // L.PAGE
    list_pages = (nr_pages * 4 + L.PAGE - 1) // L.PAGE
    ring = pfn + list_pages + 1
    n_l1 = (nr_pages + 1023) // 1024
    b = Bootstrap(pfn, pfn + list_pages, ring, ring + 1, n_l1, ring + 2 + n_l1)
    if b.stack >= nr_pages:
        raise ValueError(f"a domain of {nr_pages} pages has no room for this image and "
                         "its bootstrap region")
    return b


class DomainBuilder:
    def __init__(self, mem, space, frames, nr_pages):
        self.mem = mem
        self.space = space
        self.frames = frames
        self.nr = nr_pages
        self.p2m = L.scramble(nr_pages)

    def pa(self, pfn):
        """The machine address of a pseudo-physical page."""
        return self.p2m[pfn] << 12

    # [tour pv 20] The domain builder.
    # As Xen's builder does: the image loaded at its virtual base, initial page tables
    # built from machine frames, pinned and read-only to the guest, the machine-frame
    # list and start_info written, the block ring connected to its back end.
    def build(self, image, cmd_line, attach_ring):
        """Lay out the domain for `image`; `attach_ring(mfn)` connects the
        block back end to its ring frame and returns the event-channel port."""
        h = parse_header(image, self.nr)
        b = bootstrap(h, self.nr)
        mfn_list, start_info, ring, pt_base, n_l1, stack = (
            b.mfn_list, b.start_info, b.ring, b.pt_base, b.n_l1, b.stack)
        for pfn, mfn in enumerate(self.p2m):
            self.space.m2p_set(mfn, pfn)
        self._load(image)
        self._write(mfn_list, b"".join(abi.U32.pack(m) for m in self.p2m))
        self._page_tables(h.virt_base, pt_base, n_l1)
        self.frames.pin(self.p2m[pt_base], L2)
        port = attach_ring(self.p2m[ring])
        va = lambda p: h.virt_base + p * L.PAGE                        # noqa: E731
        words = (self.nr, self.space.shared_info << 12, 0, 0, 0, 0, 0, va(pt_base), 1 + n_l1,
                 va(mfn_list), 0, 0)
        cmd = f"{cmd_line} blkring={ring} blkevtchn={port}".encode()[:abi.CMD_LINE_MAX - 1]
        self._write(start_info, abi.START_INFO.pack(abi.START_INFO_MAGIC, *words) + cmd)
        return StartOfDay(self.nr, self.p2m, va(start_info), self.p2m[pt_base],
                          va(stack + 1), h.entry, ring, port, h.virt_base)

    def _load(self, image):
        first = abi.IMAGE_LOAD // L.PAGE
        for i in range(0, len(image), L.PAGE):
            self._write(first + i // L.PAGE, image[i:i + L.PAGE])

    def _write(self, pfn, data):
        """Bytes into consecutive pseudo-physical pages (each its own frame)."""
        for i in range(0, len(data), L.PAGE):
            self.mem.write(self.pa(pfn + i // L.PAGE), data[i:i + L.PAGE])

    def _page_tables(self, virt_base, pt_base, n_l1):
        """One directory and n_l1 tables mapping every page at virt_base: read
        and write for the kernel, except the tables themselves (read-only,
        so that they can be validated)."""
        tables = range(pt_base, pt_base + 1 + n_l1)
        l2 = self.pa(pt_base)
        for t in range(n_l1):
            l1 = self.pa(pt_base + 1 + t)
            self.mem.set_u32(l2 + 4 * ((virt_base >> 22) + t), l1 | _KERNEL_PDE)
            for i in range(min(1024, self.nr - 1024 * t)):
                pfn = 1024 * t + i
                self.mem.set_u32(l1 + 4 * i, self.pa(pfn) | (_RO if pfn in tables else _RW))
