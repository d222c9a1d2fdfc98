"""What the fuzzer knows of the domain: its layout, predicted before it
boots, and a model of the page-table state the calls drive it into (Domain,
and Cand for each page it plays with); and the bytes of the guest's data
area (Data), where the calls' structures go."""
from dataclasses import dataclass, field

from .. import abi, layout
from ..asmguest import CODE, DATA, VIRT_BASE
from ..builder import Header, bootstrap
from .guest import END, HEAP, HOLE, IMAGE, NR, PAGE, RECORD, RECORDS, RO

# Page-table entries, as the model and the generator read them:
P, W, U, PWT, PCD, A, D, PS, G = 1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x100
AVAIL = 0xE00
HYP_SLOT = abi.FIRST_HYPERVISOR_SLOT
UNKNOWN = 0xFFFFFFFF                     # an entry the model cannot know: never valid


# -- the domain, as the fuzzer knows it ------------------------------------------------------
@dataclass
class Cand:
    """A page the fuzzer plays page-table games with, and its guessed state."""
    pfn: int
    mfn: int
    va: int                      # in the direct map
    direct: str = "rw"           # its direct-map entry: rw, ro or none
    pinned: str = None           # "l1" or "l2"
    refs: set = field(default_factory=set)       # (directory, slot) naming it as L1
    entries: dict = field(default_factory=dict)  # index -> the value written there


class Domain:
    """The domain's layout, known before it boots (the builder is a pure
    function of the image's header and the domain's size), and the model of
    the state the fuzzer drives it into."""

    def __init__(self, rng, hv):
        self.rng = rng
        self.p2m = layout.scramble(NR)
        self.boot = b = bootstrap(Header(VIRT_BASE, CODE, END, abi.XEN_VERSION_NUMBER), NR)
        self.pd, self.l1 = self.p2m[b.pt_base], self.p2m[b.pt_base + 1]
        self.first = hv.frames.first
        s = hv.space
        self.shared = s.shared_info
        self.hyp_slots = dict(s.slots)
        self.hyp_frames = sorted({0, s.shared_info, s.m2p >> 12, s.gdt_page >> 12, s.idt >> 12,
                                  s.tss >> 12, NR - 1, *(v >> 12 for v in s.slots.values())})
        self.beyond = [2 * NR, 2 * NR + 1, 0x80000, 0xFFFFF]
        self.protected = set(range((IMAGE - VIRT_BASE) // PAGE, (END - VIRT_BASE) // PAGE))
        self.protected.add(b.stack)
        self.boot_pages = [b.mfn_list, b.start_info, b.ring]
        free = [p for p in range(NR) if p not in self.protected and p not in self.boot_pages
                and p not in (b.pt_base, b.pt_base + 1)]
        picks = rng.sample(free, 6) + [p for p, odds in ((b.ring, .5), (b.mfn_list, .15))
                                       if rng.random() < odds]
        self.cands = [Cand(p, self.p2m[p], VIRT_BASE + p * PAGE) for p in picks]
        if b.mfn_list in picks:          # the page-frame list, read as page-table entries
            self.cands[-1].entries = dict(enumerate(self.p2m))
        self.by_mfn = {c.mfn: c for c in self.cands}
        self.by_pfn = {c.pfn: c for c in self.cands}
        self.free = [p for p in free if p not in picks]
        self.walias = {}         # (table, index) -> candidate it maps writable
        self.ring = self.p2m[b.ring]
        self.req_prod = self.blk_cons = 0        # the ring's producer, the back end's consumer
        self.blk_port = 1        # the builder binds the block device first
        self.virq_port = None
        self.ports = []          # ports the guest allocated

    def mfn(self, pfn):
        return self.p2m[pfn]

    def owns(self, mfn):
        return self.first <= mfn < self.first + NR

    def foreign(self):
        return self.rng.choice(self.hyp_frames + self.beyond)

    def protected_mfn(self):
        """A frame of the guest's own image or stack, mapped writable: it
        can never be a page table (the read-only page and the hole could:
        a new base pointer there would leave the guest with nothing mapped)."""
        special = {(RO - VIRT_BASE) // PAGE, (HOLE - VIRT_BASE) // PAGE}
        return self.p2m[self.rng.choice(sorted(self.protected - special))]

    # -- what the model believes -----------------------------------------------------
    def kind(self, c):
        if c.pinned:
            return c.pinned
        return "l1" if any(self._live_dir(d) for d, _ in c.refs) else None

    def _live_dir(self, d):
        c = self.by_mfn.get(d)
        return d == self.pd or (c is not None and c.pinned == "l2")

    def live_l1(self, mfn):
        c = self.by_mfn.get(mfn)
        return mfn == self.l1 or (c is not None and self.kind(c) == "l1")

    def is_table(self, mfn):
        c = self.by_mfn.get(mfn)
        return mfn in (self.pd, self.l1) or (c is not None and self.kind(c) is not None)

    def writable(self, c):
        return c.direct == "rw" or any(t == c.mfn and self.live_l1(k[0])
                                       for k, t in self.walias.items())

    def l1_ok(self, v, table):
        """Would frames.py accept v in L1 table `table`?"""
        if not v & P:
            return True
        f = v >> 12
        if v & 0xFFF & ~(0x7F | AVAIL) or not (f == self.shared or self.owns(f)):
            return False
        return not (v & W and (f == table or self.is_table(f)))

    def l2_ok(self, v, directory):
        if not v & P:
            return True
        c = self.by_mfn.get(v >> 12)
        if v & 0xFFF & ~(0x7F & ~PS | AVAIL):
            return False
        return v >> 12 == self.l1 or (c is not None and c.mfn != directory
                                      and self.can_type(c, "l1"))

    def can_type(self, c, kind):
        k = self.kind(c)
        if k is not None or self.writable(c):
            return k == kind
        if kind == "l1":
            return all(self.l1_ok(v, c.mfn) for v in c.entries.values())
        return all(self.l2_ok(v, c.mfn) for i, v in c.entries.items() if i < HYP_SLOT)

    # -- what the model records ---------------------------------------------------------
    def wrote(self, table, index, value):
        """The entry `index` of frame `table` now holds `value`."""
        c = self.by_mfn.get(table)
        if c is not None:
            c.entries[index] = value
        if table == self.ring and index == 0:
            self.req_prod = value
        if table == self.l1 and index in self.by_pfn:
            self.by_pfn[index].direct = ("rw" if value & (P | W) == P | W and
                                         value >> 12 == self.p2m[index] else
                                         "ro" if value & P else "none")
        if table == self.pd or (c is not None and c.pinned == "l2"):
            for x in self.cands:
                x.refs.discard((table, index))
            if value & P and value >> 12 in self.by_mfn:
                self.by_mfn[value >> 12].refs.add((table, index))
        if value & (P | W) == P | W and value >> 12 in self.by_mfn:
            self.walias[(table, index)] = value >> 12
        else:
            self.walias.pop((table, index), None)

    def pinned_l2(self, c):
        c.pinned = "l2"
        c.entries.update(self.hyp_slots)
        for i, v in c.entries.items():
            if i < HYP_SLOT and v & P and v >> 12 in self.by_mfn:
                self.by_mfn[v >> 12].refs.add((c.mfn, i))

    def notified(self):
        """The block back end took the ring's requests: it consumed up to
        req_prod (or dropped them all), and may have written rsp_prod and
        each slot's response (id and status) -- unknown values, which the
        model takes as entries no table may hold."""
        self.blk_cons = self.req_prod
        c = self.by_mfn.get(self.ring)
        if c is not None:
            words = [2] + [(abi.RING_HEADER + abi.RING_SLOT * i) // 4 + k
                           for i in range(abi.RING_SIZE) for k in range(3)]
            c.entries.update(dict.fromkeys(words, UNKNOWN))

    def next_port(self):
        used = {self.blk_port, self.virq_port, *self.ports}
        return next((p for p in range(1, abi.NR_EVENT_CHANNELS) if p not in used), None)


# -- the guest's data area -------------------------------------------------------------------
class Data:
    """The data area's bytes, and a bump allocator for the calls' structures."""

    def __init__(self, rng):
        self.rng = rng
        self.bytes = bytearray(END - DATA)
        self.top = HEAP

    def room(self):
        return END - self.top

    def put(self, raw, misalign=True):
        """raw at a fresh heap address (now and then misaligned, or across a
        page boundary, whose two pages are never neighbouring frames)."""
        at = (self.top + 3) & ~3
        if misalign and self.rng.random() < 0.12:
            at += self.rng.randrange(1, 4)
        if misalign and self.rng.random() < 0.05 and len(raw) > 1:
            at = max(at, (at | 0xFFF) + 1 - self.rng.randrange(1, len(raw)))
        if at + len(raw) > END:
            raise MemoryError("the chunk's heap is full")
        self.bytes[at - DATA:at - DATA + len(raw)] = raw
        self.top = at + len(raw)
        return at

    def scratch(self, n):
        """n bytes the hypervisor may write (an out parameter)."""
        return self.put(bytes(self.rng.randrange(256) for _ in range(n)))

    def record(self, i, call):
        src, dst, n = call.copy or (0, 0, 0)
        words = (call.number, *call.args, src, dst, n)
        at = RECORDS - DATA + RECORD * i
        self.bytes[at:at + 36] = b"".join(abi.U32.pack(v & 0xFFFFFFFF) for v in words)
