"""The virtual-CPU state area: one saved Unicorn context read and written in place.

A VM exit on real VT-x saves the guest's registers into the VMCS guest-state area;
the VMM reads and writes fields there and a VM entry loads them back in one step.
Unicorn's context (uc_context_save / uc_context_restore) is the same thing: a plain
copy of QEMU's CPUX86State up to `end_reset_fields`.  Going through reg_read /
reg_write costs about 3 us per register from Python; a struct.unpack_from at a known
offset costs a few hundred nanoseconds, so every exit works on the saved copy and
restores it once.

The offsets of the fields are not part of Unicorn's API, so they are *calibrated*
when the first machine starts: write distinctive values through the official API,
save a context, and find where they landed (and, for fields the API cannot write,
make the CPU change them by executing real instructions and diff two contexts).
Every offset is then verified by a round trip through the official API.  The
scans never look at the uc_context header in front of the CPU state (part of it
is uninitialised heap memory, different in every saved context), nor at any
byte that differs between two saves of the same CPU; every field must be found
at exactly one offset.  A Unicorn
build whose layout cannot be calibrated is refused with a clear message rather than
run with guessed offsets.

EFLAGS is the one register that does not live in one field: QEMU computes the
arithmetic flags lazily from cc_src/cc_dst/cc_op.  It is therefore read and written
through the library's own context accessors (uc_context_reg_read/write), which run
QEMU's cpu_compute_eflags / cpu_load_eflags on the saved copy.
"""
import ctypes
import struct
from dataclasses import dataclass

from unicorn import Uc, UC_ARCH_X86, UC_MODE_32, UC_HOOK_INTR
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uclib

from . import x86

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_ARITH = x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF
_ARITH_DF = _ARITH | x86.DF


class CalibrationError(RuntimeError):
    """The Unicorn build's CPU-state layout could not be found or verified."""


# General registers in the order of their index in CPUX86State.regs[].
GPRS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")
_GPR_IDS = (X.UC_X86_REG_EAX, X.UC_X86_REG_ECX, X.UC_X86_REG_EDX, X.UC_X86_REG_EBX,
            X.UC_X86_REG_ESP, X.UC_X86_REG_EBP, X.UC_X86_REG_ESI, X.UC_X86_REG_EDI)
SEGS = ("es", "cs", "ss", "ds", "fs", "gs")
_SEG_IDS = (X.UC_X86_REG_ES, X.UC_X86_REG_CS, X.UC_X86_REG_SS, X.UC_X86_REG_DS,
            X.UC_X86_REG_FS, X.UC_X86_REG_GS)


@dataclass(frozen=True)
class SegOffsets:
    """Offsets of one QEMU SegmentCache: selector, base, limit, flags (the raw
    high dword of the descriptor, from which QEMU takes DPL, D/B and type)."""
    selector: int
    base: int
    limit: int
    flags: int


@dataclass(frozen=True)
class Layout:
    """Calibrated offsets of the fields the VMM uses inside a saved context."""
    size: int
    gpr: dict            # name -> offset
    eip: int
    cr: dict             # 0, 2, 3, 4 -> offset
    seg: dict            # name -> SegOffsets (es..gs, ldt, tr)
    gdt: SegOffsets      # only base and limit are meaningful
    idt: SegOffsets
    hflags: int          # low two bits: the CPL the CPU checks privilege against
    error_code: int
    is_int: int          # nonzero when the event is a software INT n
    old_exception: int   # QEMU's "exception in flight" (-1 when none)
    flags: "FlagOffsets" = None


@dataclass(frozen=True)
class FlagOffsets:
    """Where QEMU keeps EFLAGS: the system bits in `eflags`, the arithmetic flags
    lazily in cc_src under cc_op (CC_OP_EFLAGS means "cc_src holds them as is"),
    and the direction flag as +1/-1 in `df`."""
    eflags: int
    cc_src: int
    cc_op: int
    cc_op_eflags: int
    df: int


# ---------------------------------------------------------------------------
# Direct entry points into the C library.  The Python wrapper adds argument
# checking and object allocation on every call; an exit cannot afford that.
_save = uclib.uc_context_save
_restore = uclib.uc_context_restore
_ctx_reg_read = uclib.uc_context_reg_read
_ctx_reg_write = uclib.uc_context_reg_write


class StateArea:
    """One preallocated context of a Uc, with typed access at calibrated offsets.

    save() copies the live CPU into it, load() copies it back: one of each per exit.
    """

    def __init__(self, uc, layout):
        self.uc = uc
        self.layout = layout
        self._uch = uc._uch
        self._ctx = uc.context_save()          # allocates; kept for the machine's life
        self._ptr = self._ctx.context
        self.buf = (ctypes.c_char * layout.size).from_address(self._ptr.value)
        self.mem = memoryview(self.buf).cast("B")
        self._flags = ctypes.c_uint64()
        self._flags_ref = ctypes.byref(self._flags)
        # One struct writes a whole segment register (selector, base, limit,
        # flags) at once; built from the calibrated field positions.
        cs = layout.seg["cs"]
        rel = [(cs.selector, "I"), (cs.base, "I"), (cs.limit, "I"), (cs.flags, "I")]
        fmt, pos = "<", cs.selector
        for off, code in rel:
            fmt += "x" * (off - pos) + code
            pos = off + 4
        self._seg_struct = struct.Struct(fmt)
        # Offsets as plain attributes: an exit reads a dozen fields, and every
        # attribute chain or dict lookup avoided is measurable.
        self._gpr = dict(layout.gpr)
        self._cr = dict(layout.cr)
        self._eip = layout.eip
        self._hflags = layout.hflags
        self._sel = {name: so.selector for name, so in layout.seg.items()}
        self._base = {name: so.base for name, so in layout.seg.items()}
        self._paging = _gather([layout.cr[0], layout.cr[3], layout.cr[4]])
        self._tables = _gather([layout.cr[0], layout.idt.base, layout.idt.limit,
                                layout.gdt.base, layout.gdt.limit, layout.seg["tr"].base])

    def detach(self):
        """Free the context (its machine is being closed) and keep the last
        saved state readable in a private copy, so that a reason or a test
        reading a field afterwards never touches freed memory.  save() and
        load() are not possible any more.  Idempotent."""
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        copy = (ctypes.c_char * self.layout.size).from_buffer_copy(self.buf)
        self.buf = copy
        self.mem = memoryview(copy).cast("B")
        self._ptr = ctypes.c_void_p(ctypes.addressof(copy))   # header included:
        self._uch = None                   # the context accessors still work
        self.uc = None
        if getattr(ctx, "_to_free", False):
            ctx._to_free = False           # UcContext.__del__ must not free it again
            uclib.uc_context_free(ctx.context)

    # -- the two copies ---------------------------------------------------
    def save(self):
        _save(self._uch, self._ptr)

    def load(self):
        _restore(self._uch, self._ptr)

    # -- fields -----------------------------------------------------------
    def get(self, off):
        return _U32.unpack_from(self.mem, off)[0]

    def set(self, off, value):
        _U32.pack_into(self.mem, off, value & 0xFFFFFFFF)

    @property
    def eip(self):
        return _U32.unpack_from(self.mem, self._eip)[0]

    @eip.setter
    def eip(self, value):
        _U32.pack_into(self.mem, self._eip, value & 0xFFFFFFFF)

    def reg(self, name):
        return _U32.unpack_from(self.mem, self._gpr[name])[0]

    def set_reg(self, name, value):
        _U32.pack_into(self.mem, self._gpr[name], value & 0xFFFFFFFF)

    def cr(self, n):
        return _U32.unpack_from(self.mem, self._cr[n])[0]

    def set_cr(self, n, value):
        _U32.pack_into(self.mem, self._cr[n], value & 0xFFFFFFFF)

    @property
    def cpl(self):
        return _U32.unpack_from(self.mem, self._hflags)[0] & 3

    @property
    def iopl(self):
        """EFLAGS.IOPL, which QEMU keeps in the plain `eflags` field."""
        return (_U32.unpack_from(self.mem, self.layout.flags.eflags)[0] >> x86.IOPL_SHIFT) & 3

    @property
    def error_code(self):
        return _U32.unpack_from(self.mem, self.layout.error_code)[0]

    @property
    def is_software_int(self):
        return _U32.unpack_from(self.mem, self.layout.is_int)[0] != 0

    def clear_exception_in_flight(self):
        """Reset QEMU's old_exception to -1.  Unicorn never takes the delivery path
        that resets it, so without this the next contributory fault after a
        handled one is promoted to #DF and the one after to a triple fault."""
        _I32.pack_into(self.mem, self.layout.old_exception, -1)

    def eflags(self):
        """The architectural EFLAGS.  When the arithmetic flags are already
        materialised (cc_op == CC_OP_EFLAGS) they are read in place; otherwise
        the library computes them from the lazy state, as QEMU's pushf would."""
        f, m = self.layout.flags, self.mem
        if _U32.unpack_from(m, f.cc_op)[0] == f.cc_op_eflags:
            value = (_U32.unpack_from(m, f.eflags)[0] & ~_ARITH_DF) | (
                _U32.unpack_from(m, f.cc_src)[0] & _ARITH)
            if _I32.unpack_from(m, f.df)[0] < 0:
                value |= x86.DF
            return value
        _ctx_reg_read(self._ptr, X.UC_X86_REG_EFLAGS, self._flags_ref)
        return self._flags.value & 0xFFFFFFFF

    def set_eflags(self, value):
        """Load EFLAGS the way QEMU's cpu_load_eflags does: every bit into
        `eflags`, the arithmetic flags into cc_src with cc_op = CC_OP_EFLAGS,
        and DF as +1/-1."""
        f, m = self.layout.flags, self.mem
        value = (value & 0xFFFFFFFF) | 0x2
        _U32.pack_into(m, f.eflags, value)
        _U32.pack_into(m, f.cc_src, value & _ARITH)
        _U32.pack_into(m, f.cc_op, f.cc_op_eflags)
        _I32.pack_into(m, f.df, -1 if value & x86.DF else 1)

    def lazy_flags(self):
        """The arithmetic flags and DF exactly as QEMU holds them now (cc_src,
        cc_op, df and the arithmetic bits of `eflags`), for restore_lazy_flags."""
        f, m = self.layout.flags, self.mem
        return (_U32.unpack_from(m, f.cc_src)[0], _U32.unpack_from(m, f.cc_op)[0],
                _U32.unpack_from(m, f.df)[0], _U32.unpack_from(m, f.eflags)[0] & _ARITH_DF)

    def restore_lazy_flags(self, saved):
        """Put back what lazy_flags returned, keeping the system bits (IF, TF,
        IOPL, NT, RF, VM, ...) written since.  For a hook called from inside a
        QEMU helper whose translated code goes on afterwards with the cc_op it
        had (SYSENTER): the arithmetic flags, which the hook's work does not
        change, must then still be in the lazy form that code expects."""
        f, m = self.layout.flags, self.mem
        system = _U32.unpack_from(m, f.eflags)[0] & ~_ARITH_DF
        cc_src, cc_op, df, arith = saved
        _U32.pack_into(m, f.cc_src, cc_src)
        _U32.pack_into(m, f.cc_op, cc_op)
        _U32.pack_into(m, f.df, df)
        _U32.pack_into(m, f.eflags, system | arith)

    def seg_selector(self, name):
        return _U32.unpack_from(self.mem, self._sel[name])[0] & 0xFFFF

    def table(self, which):
        """(base, limit) of 'gdt' or 'idt'."""
        so = self.layout.gdt if which == "gdt" else self.layout.idt
        return (_U32.unpack_from(self.mem, so.base)[0],
                _U32.unpack_from(self.mem, so.limit)[0])

    def set_table(self, which, base, limit):
        """Load GDTR or IDTR ('gdt' or 'idt'), as lgdt/lidt would."""
        so = self.layout.gdt if which == "gdt" else self.layout.idt
        _U32.pack_into(self.mem, so.base, base & 0xFFFFFFFF)
        _U32.pack_into(self.mem, so.limit, limit & 0xFFFF)

    def set_error_code(self, code, software=False):
        """The error code and software-INT flag of the event being handled, as
        the CPU would have left them had it raised the event itself."""
        _U32.pack_into(self.mem, self.layout.error_code, code & 0xFFFFFFFF)
        _U32.pack_into(self.mem, self.layout.is_int, int(software))

    def paging(self):
        """(CR0, CR3, CR4) in one read."""
        return self._paging.unpack_from(self.mem, self._paging.first)

    def tables(self):
        """The fields an IDT route is resolved under, in one read: CR0, IDTR,
        GDTR and the TR base (in the order they lie in the context)."""
        return self._tables.unpack_from(self.mem, self._tables.first)

    def seg_base_of(self, name):
        return _U32.unpack_from(self.mem, self._base[name])[0]

    def seg_limit_of(self, name):
        return _U32.unpack_from(self.mem, self.layout.seg[name].limit)[0]

    def set_segment(self, name, selector, base, limit, flags):
        """Write a segment register (selector and hidden part).  For SS this is
        also where the privilege level changes: QEMU keeps the CPL in hflags and
        takes it from the DPL of the stack segment, as the CPU's SS.DPL == CPL."""
        m = self.mem
        self._seg_struct.pack_into(m, self._sel[name], selector & 0xFFFF, base, limit, flags)
        if name == "ss":
            hf = _U32.unpack_from(m, self._hflags)[0]
            _U32.pack_into(m, self._hflags, (hf & ~3) | ((flags >> x86.DESC_DPL_SHIFT) & 3))


class _Gather(struct.Struct):
    def __init__(self, fmt, first):
        super().__init__(fmt)
        self.first = first


def _gather(offsets):
    """A Struct reading the u32 fields at `offsets` in one call (in address
    order), with the offset of the first in `.first`."""
    offsets = sorted(offsets)
    fmt, pos = "<", offsets[0]
    for off in offsets:
        fmt += "x" * (off - pos) + "I"
        pos = off + 4
    return _Gather(fmt, offsets[0])


# ---------------------------------------------------------------------------
# Calibration.  Runs once per process on a scratch CPU, then is verified on each
# machine's own CPU.

_LAYOUT = None
_SCRATCH = 0x10000           # code, GDT and stacks of the calibration CPU


def layout():
    """The calibrated layout of this process's Unicorn build."""
    global _LAYOUT
    if _LAYOUT is None:
        _LAYOUT = _calibrate()
    return _LAYOUT


class _Scan:
    """Where the calibration may look in a saved context: from the end of the
    uc_context header (the CPU state proper) on, minus the words that are not
    the same in two saves of one unchanged CPU."""
    data = None              # offset of the CPU state in a context
    volatile = frozenset()


def _header_size(uc):
    """Bytes of uc_context header before the CPU state: the context's total
    size less the size of the CPU state it copies, which the header's first
    field (size_t context_size) records."""
    ctx = uc.context_save()
    total = uclib.uc_context_size(uc._uch)
    cpu = ctypes.c_size_t.from_address(ctx.context.value).value
    header = total - cpu
    if not 0 < header <= 256 or header % 8 or cpu < 1024:
        raise CalibrationError(f"unexpected uc_context layout (size {total}, CPU state {cpu})")
    return header


def _prepare_scan(uc):
    _Scan.data = _header_size(uc)
    a, b = _snapshot(uc), _snapshot(uc)
    _Scan.volatile = frozenset(o for o in range(_Scan.data, len(a) - 3, 4)
                               if a[o:o + 4] != b[o:o + 4])


def _snapshot(uc):
    ctx = uc.context_save()
    size = uclib.uc_context_size(uc._uch)
    return ctypes.string_at(ctx.context.value, size)


def _find_u32(blob, value, start=0, end=None):
    """Aligned offsets of the u32 `value` in the CPU-state part of `blob`."""
    end = len(blob) - 4 if end is None else end
    start = max(start, _Scan.data)
    packed = _U32.pack(value)
    hits, i = [], blob.find(packed, start)
    while 0 <= i <= end:
        if i % 4 == 0 and i not in _Scan.volatile:
            hits.append(i)
        i = blob.find(packed, i + 1)
    return hits


def _unique(hits, what):
    if len(hits) != 1:
        raise CalibrationError(f"cannot locate {what} in the saved CPU context "
                               f"({len(hits)} candidates)")
    return hits[0]


def _scratch_cpu():
    """A CPU with a GDT of distinctive segments (bases and limits that appear
    nowhere else) so their caches can be found by value."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x100000)
    gdt = [b"\0" * 8,
           x86.make_segment(0, 0xFFFFF, 0x9A),            # 0x08 ring-0 code
           x86.make_segment(0, 0xFFFFF, 0x92),            # 0x10 ring-0 data
           x86.make_segment(0, 0xFFFFF, 0xFA),            # 0x1b ring-3 code
           x86.make_segment(0, 0xFFFFF, 0xF2)]            # 0x23 ring-3 data
    for i in range(4):                                    # 0x28.. distinctive data
        gdt.append(x86.make_segment(0x13570000 + i * 0x01010000, 0x1234 + i, 0x92, 0x4))
    uc.mem_write(_SCRATCH, b"".join(gdt))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, _SCRATCH, len(gdt) * 8 - 1, 0))
    uc.reg_write(X.UC_X86_REG_CS, 0x08)
    uc.reg_write(X.UC_X86_REG_SS, 0x10)
    uc.reg_write(X.UC_X86_REG_DS, 0x10)
    return uc


def _calibrate_segments(uc):
    """ES, DS, FS, GS loaded with the distinctive descriptors give the array's
    base and stride, and each cache's field offsets."""
    names = ("es", "ds", "fs", "gs")
    ids = (X.UC_X86_REG_ES, X.UC_X86_REG_DS, X.UC_X86_REG_FS, X.UC_X86_REG_GS)
    for i, rid in enumerate(ids):
        uc.reg_write(rid, 0x28 + i * 8)
    blob = _snapshot(uc)
    caches = {}
    for i, name in enumerate(names):
        base_off = _unique(_find_u32(blob, 0x13570000 + i * 0x01010000), name + ".base")
        sel_off = _unique(_find_u32(blob, 0x28 + i * 8, base_off - 16, base_off - 4),
                          name + ".selector")
        lim_off = _unique(_find_u32(blob, 0x1234 + i, base_off + 4, base_off + 16),
                          name + ".limit")
        caches[name] = (sel_off, base_off, lim_off)
    es, ds = caches["es"], caches["ds"]
    stride = (ds[0] - es[0]) // 3
    if stride <= 0 or (ds[0] - es[0]) % 3 or caches["fs"][0] != es[0] + 4 * stride:
        raise CalibrationError("segment registers are not one array in the saved context")
    sel, base, lim = es
    # QEMU keeps the descriptor's high dword as `flags`, right after the limit.
    hi = _U32.unpack_from(blob, lim + 4)[0]
    if x86.seg_dpl(hi) != 0 or not hi & x86.DESC_P:
        raise CalibrationError("segment flags field not found after the limit")

    def cache(index):
        d = index * stride
        return SegOffsets(sel + d, base + d, lim + d, lim + 4 + d)
    seg = {name: cache(i) for i, name in enumerate(SEGS)}
    # LDTR, TR, GDTR, IDTR follow the six segment registers, in that order.
    for i, name in enumerate(("ldt", "tr", "gdt", "idt")):
        seg[name] = cache(6 + i)
    gdtr = _U32.unpack_from(blob, seg["gdt"].base)[0]
    if gdtr != _SCRATCH:
        raise CalibrationError("GDTR does not follow the segment registers")
    return seg


def _calibrate_registers(uc):
    values = {name: 0x5A000000 + i * 0x10101 for i, name in enumerate(GPRS)}
    for name, rid in zip(GPRS, _GPR_IDS):
        uc.reg_write(rid, values[name])
    uc.reg_write(X.UC_X86_REG_EIP, 0x5A7E1F00)
    uc.reg_write(X.UC_X86_REG_CR2, 0x5AC20000)
    uc.reg_write(X.UC_X86_REG_CR3, 0x5AC33000)
    blob = _snapshot(uc)
    gpr = {n: _unique(_find_u32(blob, v), n) for n, v in values.items()}
    eip = _unique(_find_u32(blob, 0x5A7E1F00), "eip")
    cr2 = _unique(_find_u32(blob, 0x5AC20000), "cr2")
    cr3 = _unique(_find_u32(blob, 0x5AC33000), "cr3")
    step = cr3 - cr2                       # cr[] is an array of target_ulong
    cr = {0: cr2 - 2 * step, 2: cr2, 3: cr3, 4: cr3 + step}
    uc.reg_write(X.UC_X86_REG_CR3, 0)
    uc.reg_write(X.UC_X86_REG_CR2, 0)
    return gpr, eip, cr


def _run_events(uc):
    """Execute real instructions that make the CPU itself change the fields the
    API cannot write: a #GP with a known error code, an INT n, and a privilege
    change by IRETD.  Returns the contexts captured at each event."""
    from keystone import Ks, KS_ARCH_X86, KS_MODE_32
    ks = Ks(KS_ARCH_X86, KS_MODE_32)
    ring0 = """
        mov ax, 0x0FF8
        mov ds, ax
        int 0x41
        push 0x23
        push 0x8F000
        push 0x2
        push 0x1B
        push 0x30000
        iretd
    """
    code0, _ = ks.asm(ring0, 0x20000)
    code3, _ = ks.asm("int 0x42", 0x30000)
    mov_ds_len = len(ks.asm("mov ds, ax", 0)[0])
    uc.mem_write(0x20000, bytes(code0))
    uc.mem_write(0x30000, bytes(code3))
    uc.reg_write(X.UC_X86_REG_ESP, 0x9F000)
    shots = {"before": _snapshot(uc)}

    def on_intr(uc_, intno, _):
        shots[intno] = _snapshot(uc_)
        if intno == x86.GP:      # skip the faulting `mov ds, ax`
            uc_.reg_write(X.UC_X86_REG_EIP, uc_.reg_read(X.UC_X86_REG_EIP) + mov_ds_len)
        if intno == 0x42:
            uc_.emu_stop()
    h = uc.hook_add(UC_HOOK_INTR, on_intr)
    try:
        uc.emu_start(0x20000, 0, count=64)
    finally:
        uc.hook_del(h)
    if set(shots) != {"before", x86.GP, 0x41, 0x42}:
        raise CalibrationError("calibration guest did not raise the expected events: %r" % sorted(map(str, shots)))
    return shots


def _diff_u32(a, b, pred):
    """Aligned offsets in the CPU-state part where pred(a's word, b's word)."""
    return [o for o in range(_Scan.data, min(len(a), len(b)) - 3, 4)
            if o not in _Scan.volatile
            and pred(_U32.unpack_from(a, o)[0], _U32.unpack_from(b, o)[0])]


def _calibrate_events(shots, seg):
    gp, sw, ring3 = shots[x86.GP], shots[0x41], shots[0x42]
    error_code = _unique(_find_u32(gp, 0x0FF8), "error_code")
    old_exc = _unique(_diff_u32(shots["before"], gp,
                                lambda a, b: a == 0xFFFFFFFF and b == x86.GP),
                      "old_exception")
    # 0 for the #GP, 1 for both software interrupts (ring 0 and ring 3).
    soft3 = set(_diff_u32(gp, ring3, lambda a, b: a == 0 and b == 1))
    is_int = [o for o in _diff_u32(gp, sw, lambda a, b: a == 0 and b == 1)
              if error_code < o < old_exc and o in soft3]
    is_int = _unique(is_int, "exception_is_int")
    seg_lo = seg["es"].selector
    seg_hi = seg["idt"].flags
    hflags = [o for o in _diff_u32(sw, ring3, lambda a, b: a & 3 == 0 and a ^ b == 3)
              if o < seg_lo or o > seg_hi]
    hflags = _unique(hflags, "hflags")
    return error_code, is_int, old_exc, hflags


def _calibrate():
    uc = _scratch_cpu()
    size = uclib.uc_context_size(uc._uch)
    _prepare_scan(uc)
    seg = _calibrate_segments(uc)
    uc.reg_write(X.UC_X86_REG_DS, 0x10)
    uc.reg_write(X.UC_X86_REG_ES, 0x10)
    gpr, eip, cr = _calibrate_registers(uc)
    shots = _run_events(uc)
    error_code, is_int, old_exc, hflags = _calibrate_events(shots, seg)
    flags = _calibrate_flags(_scratch_cpu())
    lay = Layout(size=size, gpr=gpr, eip=eip, cr=cr, seg=seg, gdt=seg.pop("gdt"),
                 idt=seg.pop("idt"), hflags=hflags, error_code=error_code,
                 is_int=is_int, old_exception=old_exc, flags=flags)
    verify(uc, lay)
    return lay


def _calibrate_flags(uc):
    """Load two EFLAGS values through the API (which materialises the flags),
    then execute one real `add` (which makes them lazy again) and diff."""
    a_val, b_val = 0x2 | _ARITH | x86.IF, 0x2 | x86.DF | x86.CF
    uc.reg_write(X.UC_X86_REG_EFLAGS, a_val)
    a = _snapshot(uc)
    uc.reg_write(X.UC_X86_REG_EFLAGS, b_val)
    b = _snapshot(uc)
    from keystone import Ks, KS_ARCH_X86, KS_MODE_32
    code, _ = Ks(KS_ARCH_X86, KS_MODE_32).asm("add eax, eax", 0x28000)
    uc.mem_write(0x28000, bytes(code))
    uc.emu_start(0x28000, 0x28000 + len(code))
    c = _snapshot(uc)
    cc_src = _unique(_diff_u32(a, b, lambda x, y: x == _ARITH and y == x86.CF), "cc_src")
    # The system bits (IF here; bit 1 always reads as 1) identify `eflags`.
    sysflags = _unique(_diff_u32(a, b, lambda x, y: x < 0x10000 and y < 0x10000
                              and x & (x86.IF | 2) == x86.IF | 2 and y & (x86.IF | 2) == 2),
                    "eflags")
    df = _unique(_diff_u32(a, b, lambda x, y: x == 1 and y == 0xFFFFFFFF), "df")
    ops = [o for o in _diff_u32(a, b, lambda x, y: x == y and x < 64)
           if _U32.unpack_from(c, o)[0] != _U32.unpack_from(a, o)[0]
           and _U32.unpack_from(c, o)[0] < 64 and cc_src < o < df]
    cc_op = _unique(ops, "cc_op")
    return FlagOffsets(sysflags, cc_src, cc_op, _U32.unpack_from(a, cc_op)[0], df)


def verify(uc, lay):
    """Round-trip every register field through the official API: what the
    library reads after we write the saved context must be what we wrote."""
    area = StateArea(uc, lay)
    area.save()
    saved = bytes(area.mem)
    try:
        probes = {rid: 0x3C000000 + i * 0x1111 for i, rid in enumerate(_GPR_IDS)}
        for rid, name in zip(_GPR_IDS, GPRS):
            area.set_reg(name, probes[rid])
        area.eip = 0x3CE1F000
        area.set_cr(2, 0x3CC20000)
        area.load()
        got = [uc.reg_read(rid) for rid in _GPR_IDS]
        if got != [probes[rid] for rid in _GPR_IDS]:
            raise CalibrationError("general registers did not verify")
        if uc.reg_read(X.UC_X86_REG_EIP) != 0x3CE1F000 or uc.reg_read(X.UC_X86_REG_CR2) != 0x3CC20000:
            raise CalibrationError("EIP/CR2 did not verify")
        for value in (0x2, 0x8D7 | x86.IF, 0x2 | x86.DF | x86.ZF, 0x3202 | x86.AC):
            area.set_eflags(value)
            area.load()
            if uc.reg_read(X.UC_X86_REG_EFLAGS) != value:
                raise CalibrationError("EFLAGS did not verify")
            area.save()
            if area.eflags() != value:
                raise CalibrationError("EFLAGS did not read back")
        cr0 = uc.reg_read(X.UC_X86_REG_CR0)
        area.save()
        if area.cr(0) != cr0:
            raise CalibrationError("CR0 did not verify")
        if area.seg_selector("cs") != uc.reg_read(X.UC_X86_REG_CS):
            raise CalibrationError("CS did not verify")
    finally:
        area.mem[:] = saved
        area.load()
