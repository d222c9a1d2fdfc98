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
import os
import struct
from dataclasses import dataclass
from functools import lru_cache, partial

from unicorn import Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_HOOK_INTR
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uclib

from . import x86
from .memory import gather

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_ARITH = x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF
_DF = x86.DF
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
    header: int = 0      # bytes of uc_context header before the CPU state
    # The hflags bits of the execution mode that leaving virtual-8086 mode
    # changes, and their value in flat 32-bit protected mode (None: not found)
    vm86_mode: tuple = None
    # XCR0 (64 bits), for a VMM that performs the guest kernel's xsetbv
    # (None: not found)
    xcr0: int = None


@dataclass(frozen=True)
class FlagOffsets:
    """Where QEMU keeps EFLAGS: the system bits in `eflags`, the arithmetic flags
    lazily in cc_src under cc_op (CC_OP_EFLAGS means "cc_src holds them as is"),
    and the direction flag as +1/-1 in `df`.  `lazy`: the (cc_op, kind, bits)
    whose flags this module computes from cc_dst and cc_src itself, each
    checked against the library's own computation (lazy_flag_functions)."""
    eflags: int
    cc_src: int
    cc_op: int
    cc_op_eflags: int
    df: int
    cc_dst: int = None
    lazy: tuple = ()


# ---------------------------------------------------------------------------
# Direct entry points into the C library.  The Python wrapper adds argument
# checking and object allocation on every call; an exit cannot afford that.
_save = uclib.uc_context_save
_restore = uclib.uc_context_restore
_ctx_reg_read = uclib.uc_context_reg_read
_ctx_reg_write = uclib.uc_context_reg_write

# The calls an exit makes.  The binding's function objects convert every
# argument through their argtypes on each call; these come from a handle of
# our own on the same library, have no argtypes, and are given arguments
# already in C form (ctypes objects), which makes a call a third cheaper.
# (Only for entry points whose arguments are all pointers and ints.)
_LIB = ctypes.CDLL(uclib._name)


def c_entry(name):
    """Library function `name` without argument conversion, returning an int."""
    fn = getattr(_LIB, name)
    fn.restype = ctypes.c_int
    return fn


_fast_save = c_entry("uc_context_save")
_fast_restore = c_entry("uc_context_restore")
_fast_reg_read = c_entry("uc_reg_read")
_fast_ctx_reg_read = c_entry("uc_context_reg_read")
_EFLAGS_ID = ctypes.c_int(X.UC_X86_REG_EFLAGS)


_nothing = type(None)        # a call that does nothing, made in C: NoneType() is None


class StateArea:
    """The CPU state of a Uc, with typed access at calibrated offsets.

    In copy mode it is one preallocated context: save() copies the live CPU
    into it, load() copies it back, one of each per exit.  In live mode
    (live_cpu_state below) the same offsets address the CPU's own state, and
    save() and load() have nothing left to do.
    """

    def __init__(self, uc, layout, live=True):
        self.uc = uc
        self.layout = layout
        self._uch = uc._uch
        self._ctx = uc.context_save()          # allocates; kept for the machine's life
        self._ptr = self._ctx.context
        address = live_cpu_state(uc, layout) if live else None
        self.live = address is not None
        if self.live:
            # The context stays allocated: its header is what detach() gives
            # the private copy, so that the context accessors work on it.
            self.save = self.load = _nothing
        else:
            address = self._ptr.value
        self.buf = (ctypes.c_char * layout.size).from_address(address)
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
        # Every field is an aligned u32 (the calibration finds only those), so
        # the context is also read as an array of words: indexing a memoryview
        # costs a third of a struct.unpack_from, and an exit reads a dozen
        # fields.  Indices (offset // 4) are plain attributes for the same reason.
        f = layout.flags
        self._gpr = {name: off >> 2 for name, off in layout.gpr.items()}
        self._cr = {n: off >> 2 for n, off in layout.cr.items()}
        self._eip = layout.eip >> 2
        self._esp = layout.gpr["esp"] >> 2
        self._hflags = layout.hflags >> 2
        self._eflags_w, self._cc_src, self._cc_op, self._df = (
            f.eflags >> 2, f.cc_src >> 2, f.cc_op >> 2, f.df >> 2)
        self._cc_op_eflags = f.cc_op_eflags
        self._cc_dst = f.cc_dst >> 2 if f.cc_dst is not None else 0
        self._lazy = lazy_flag_functions(f)

        self._error_code, self._is_int = layout.error_code >> 2, layout.is_int >> 2
        self._old_exception = layout.old_exception >> 2
        self._sel = {name: so.selector for name, so in layout.seg.items()}
        self._sel_w = {name: so.selector >> 2 for name, so in layout.seg.items()}
        self._sel_cs = layout.seg["cs"].selector
        self._base = {name: so.base >> 2 for name, so in layout.seg.items()}
        self._limit = {name: so.limit >> 2 for name, so in layout.seg.items()}
        self._table_w = {"gdt": (layout.gdt.base >> 2, layout.gdt.limit >> 2),
                         "idt": (layout.idt.base >> 2, layout.idt.limit >> 2)}
        self._views()

    def _views(self):
        self.mem = memoryview(self.buf).cast("B")
        whole = self.mem[:len(self.mem) & ~3]
        w = self.w = whole.cast("I")               # the context as u32 words
        self.wi = whole.cast("i")                  # ... and as i32 (DF is +1/-1)
        # () -> nonzero if the event being handled is an `int n` rather than
        # an exception the CPU raised (QEMU's exception_is_int): every
        # exception exit asks, so it is one call into C.
        self.is_software_int = partial(w.__getitem__, self._is_int)
        # () -> EFLAGS as QEMU's plain `eflags` field holds them: every
        # system flag (IF, TF, NT, IOPL, RF, VM, AC, ...) exact, the
        # arithmetic flags and DF not (QEMU keeps those apart: eflags()
        # puts them together).  For a question about a system flag, it is
        # one call into C instead of eflags()'s computation.
        self.system_flags = partial(w.__getitem__, self._eflags_w)
        # resume() of the live CPU state only clears the exception in flight:
        # one call into C, bound here, at the end of every exit.
        if self.live:
            self.resume = partial(self.wi.__setitem__, self._old_exception, -1)
        else:
            self.__dict__.pop("resume", None)
        # Reads of several fields at once (memory.gather: one call into C, no
        # Python frame), each giving its fields in the order they lie in the
        # context:
        lay, tr = self.layout, self.layout.seg["tr"]
        m = self.mem
        f = lay.flags
        # () -> (EFLAGS, cc_dst, cc_src, cc_op, DF): what eflags() computes from
        if f.cc_dst is not None:
            self._flag_words = gather(m, [f.eflags, f.cc_dst, f.cc_src, f.cc_op, f.df])
        else:                                      # no lazy operations: cc_dst is not needed
            four = gather(m, [f.eflags, f.cc_src, f.cc_op, f.df])
            self._flag_words = lambda: (lambda e, s, o, d: (e, 0, s, o, d))(*four())
        # () -> (CR0, CR3, CR4)
        self.paging = gather(m, [lay.cr[0], lay.cr[3], lay.cr[4]])
        # () -> (EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI): all eight general
        # registers in one read (a hypercall's number and arguments)
        self.gprs = gather(m, [lay.gpr[name] for name in GPRS])
        # () -> (ESP, EIP, CS, SS, SS base): what an event's frame holds and
        # where it goes (the selectors are the raw fields)
        self.frame_regs = gather(m, [lay.gpr["esp"], lay.eip, lay.seg["cs"].selector,
                                     lay.seg["ss"].selector, lay.seg["ss"].base])
        # () -> (EIP, CS base): where the CPU is, as a linear address once
        # added (what a VMM asks first at an exit inside code it placed)
        self.pc_regs = gather(m, [lay.eip, lay.seg["cs"].base])
        # () -> (EIP, hflags, CS base, DS base): the same, with the ring (the
        # low two bits of hflags) and the data segment's base (a VMM that
        # runs the guest kernel from code of its own asks at every entry)
        self.entry_regs = gather(m, [lay.eip, lay.hflags, lay.seg["cs"].base, lay.seg["ds"].base])
        tables = [tr.selector, tr.base, tr.limit, lay.gdt.base, lay.gdt.limit,
                  lay.idt.base, lay.idt.limit]
        # () -> (TR selector, base, limit, GDTR base, limit, IDTR base, limit)
        self.table_regs = gather(m, tables)
        self._check_order()
        # TR, GDTR and IDTR lie together (QEMU's tr, gdt, idt): as a key
        # that only needs comparing, they are read as one bytes object, the
        # unused fields between them included (constant, or changed only by
        # ltr with TR), which makes the key cheaper to read and to compare
        # than seven numbers.
        span = lay.idt.limit + 4 - tr.selector
        # () -> (the bytes of TR, GDTR and IDTR): table_regs() as a key
        self.table_key = partial(struct.Struct(f"<{span}s").unpack_from, m, tr.selector)
        # () -> (hflags, the bytes of TR, GDTR and IDTR, CR0, CR3, CR4): what
        # an IDT route is resolved under (the CPL is the low two bits of
        # hflags; the last three are paging())
        c = lay.cr
        route = struct.Struct(f"<I{tr.selector - lay.hflags - 4}x{span}s"
                              f"{c[0] - tr.selector - span}xI{c[3] - c[0] - 4}xI{c[4] - c[3] - 4}xI")
        self.route_regs = partial(route.unpack_from, m, lay.hflags)

    def _check_order(self):
        """The gathers above promise an order QEMU's CPUX86State has (hflags,
        segment caches, descriptor-table registers, control registers)."""
        lay, tr = self.layout, self.layout.seg["tr"]
        f = lay.flags
        flags = [f.eflags] + ([f.cc_dst] if f.cc_dst is not None else []) + [f.cc_src, f.cc_op, f.df]
        if flags != sorted(flags):
            raise CalibrationError("the flag fields are not in the order this module reads them in")
        if [lay.gpr[name] for name in GPRS] != sorted(lay.gpr.values()):
            raise CalibrationError("the general registers are not in the order this "
                                   "module reads them in")
        order = [lay.gpr["esp"], lay.eip, lay.hflags, lay.seg["cs"].selector,
                 lay.seg["ss"].selector, lay.seg["ss"].base, lay.seg["ds"].base,
                 tr.selector, tr.base, tr.limit,
                 lay.gdt.base, lay.gdt.limit, lay.idt.base, lay.idt.limit, lay.cr[0],
                 lay.cr[3], lay.cr[4]]
        if order != sorted(order) or lay.idt.limit + 4 > lay.cr[0]:
            raise CalibrationError("the CPU state's fields are not in the order this "
                                   "module reads them in")

    def detach(self):
        """Free the context (its machine is being closed) and keep the last
        saved state readable in a private copy, so that a reason or a test
        reading a field afterwards never touches freed memory.  save() and
        load() are not possible any more.  Idempotent."""
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        copy = (ctypes.c_char * self.layout.size).from_buffer_copy(self.buf)
        if self.live:                      # the bytes before the CPU state are not a header
            head = self.layout.header
            copy[:head] = ctypes.string_at(ctx.context.value, head)
            self.live = False
            del self.save, self.load
        self.buf = copy
        self._views()
        self._ptr = ctypes.c_void_p(ctypes.addressof(copy))   # header included:
        self._uch = None                   # the context accessors still work
        self.uc = None
        if getattr(ctx, "_to_free", False):
            ctx._to_free = False           # UcContext.__del__ must not free it again
            uclib.uc_context_free(ctx.context)

    # -- the two copies ---------------------------------------------------
    def save(self):
        _fast_save(self._uch, self._ptr)

    def load(self):
        _fast_restore(self._uch, self._ptr)

    # -- fields -----------------------------------------------------------
    def get(self, off):
        return self.w[off >> 2]

    def set(self, off, value):
        self.w[off >> 2] = value & 0xFFFFFFFF

    @property
    def eip(self):
        return self.w[self._eip]

    @eip.setter
    def eip(self, value):
        self.w[self._eip] = value & 0xFFFFFFFF

    def reg(self, name):
        return self.w[self._gpr[name]]

    def set_reg(self, name, value):
        self.w[self._gpr[name]] = value & 0xFFFFFFFF

    def cr(self, n):
        return self.w[self._cr[n]]

    def set_xcr0(self, value):
        """XCR0 as `xsetbv` loads it (the caller has made the CPU's checks)."""
        at = self.layout.xcr0
        self.w[at >> 2] = value & 0xFFFFFFFF
        self.w[(at >> 2) + 1] = value >> 32

    def set_cr(self, n, value):
        self.w[self._cr[n]] = value & 0xFFFFFFFF

    @property
    def cpl(self):
        return self.w[self._hflags] & 3

    @property
    def iopl(self):
        """EFLAGS.IOPL, which QEMU keeps in the plain `eflags` field."""
        return (self.w[self._eflags_w] >> x86.IOPL_SHIFT) & 3

    @property
    def error_code(self):
        return self.w[self._error_code]

    def resume(self):
        """The end of an exit: QEMU's exception-in-flight cleared (below),
        then the state loaded into the CPU."""
        self.wi[self._old_exception] = -1
        if not self.live:
            self.load()

    def clear_exception_in_flight(self):
        """Reset QEMU's old_exception to -1.  Unicorn never takes the delivery path
        that resets it, so without this the next contributory fault after a
        handled one is promoted to #DF and the one after to a triple fault."""
        self.wi[self._old_exception] = -1

    def eflags(self):
        """The architectural EFLAGS, as QEMU's cpu_compute_eflags makes them.
        When the arithmetic flags are already materialised (cc_op ==
        CC_OP_EFLAGS) they are read in place; after the common arithmetic
        (add, sub and cmp, the logical operations, inc, dec: the last one
        before an exit is usually the `dec`/`cmp` of a loop) they are
        computed here from cc_dst and cc_src as QEMU would; otherwise the
        library computes them (a call into C)."""
        eflags, cc_dst, cc_src, cc_op, df = self._flag_words()
        if cc_op == self._cc_op_eflags:
            arith = cc_src & _ARITH
        else:
            lazy = self._lazy.get(cc_op)
            arith = lazy(cc_dst, cc_src) if lazy is not None else None
            if arith is None:
                return self._computed_eflags()
        value = (eflags & ~_ARITH_DF) | arith
        return value | x86.DF if df & 0x80000000 else value          # DF is -1 or +1

    def _computed_eflags(self):
        if self.live:
            _fast_reg_read(self._uch, _EFLAGS_ID, self._flags_ref)
        else:
            _fast_ctx_reg_read(self._ptr, _EFLAGS_ID, self._flags_ref)
        return self._flags.value & 0xFFFFFFFF

    def set_eflags(self, value):
        """Load EFLAGS the way QEMU's cpu_load_eflags does: every bit into
        `eflags`, the arithmetic flags into cc_src with cc_op = CC_OP_EFLAGS,
        and DF as +1/-1."""
        w = self.w
        value = (value & 0xFFFFFFFF) | 0x2
        w[self._eflags_w] = value
        w[self._cc_src] = value & _ARITH
        w[self._cc_op] = self._cc_op_eflags
        self.wi[self._df] = -1 if value & x86.DF else 1

    def set_system_flags(self, mask, value):
        """Replace the system flags under `mask` (IF, IOPL, ...) with
        `value`'s, leaving every other bit as it is: they live in QEMU's
        plain `eflags` field, apart from the arithmetic flags, which a
        lazily computed result may still hold."""
        w, at = self.w, self._eflags_w
        w[at] = (w[at] & ~mask) | (value & mask)

    def lookups_as_kernel(self):
        """Make the library's own lookups of linear addresses (dropping
        translations: Machine.forget_code) go through the kernel's TLB,
        whatever the ring the CPU is at: QEMU picks the TLB by the CPL in
        hflags, which is set to 0 here; returns what to give restore_cpl.
        (A copy of the state area changes nothing in the CPU: None.)"""
        if not self.live:
            return None
        w, at = self.w, self._hflags
        saved = w[at]
        w[at] = saved & ~3
        return saved

    def restore_cpl(self, saved):
        if saved is not None:
            self.w[self._hflags] = saved

    def lazy_operation(self):
        """(cc_op, cc_src, cc_dst): QEMU's record of the last flag-setting
        operation (the number of its CCOp, or cc_op_eflags when cc_src holds
        the flags themselves) and its operands."""
        w = self.w
        return w[self._cc_op], w[self._cc_src], w[self._cc_dst]

    def set_lazy_operation(self, cc_op):
        """Say that cc_dst and cc_src hold the operands of operation `cc_op`
        (a CCOp number), as the translated code that set them knew."""
        self.w[self._cc_op] = cc_op

    def flags_made_concrete(self):
        """At an exception in an instruction that has a code hook: the CPU
        model computed the arithmetic flags into cc_src after the hook, and
        the fault then put back the cc_op of the operation they came from,
        which would read cc_src as its operand (docs/unicorn.md, item 37).
        cc_op is set to say what cc_src holds."""
        self.w[self._cc_op] = self._cc_op_eflags

    def keep_flags_in_cc_src(self):
        """Before an exit that redirects the CPU from a code hook: if cc_op
        says the flags are concrete, cc_src may yet hold an operation's
        operand (docs/unicorn.md, item 39), which the library would fold
        whole into EFLAGS as the CPU stops: IOPL, TF, even VM.  Only the
        arithmetic flags are kept there, the bits cc_src can hold."""
        w = self.w
        if w[self._cc_op] == self._cc_op_eflags:
            w[self._cc_src] &= _ARITH

    def lazy_flags(self):
        """The arithmetic flags and DF exactly as QEMU holds them now (cc_src,
        cc_op, df and the arithmetic bits of `eflags`), for restore_lazy_flags."""
        w = self.w
        return (w[self._cc_src], w[self._cc_op], w[self._df], w[self._eflags_w] & _ARITH_DF)

    def restore_lazy_flags(self, saved):
        """Put back what lazy_flags returned, keeping the system bits (IF, TF,
        IOPL, NT, RF, VM, ...) written since.  For a hook called from inside a
        QEMU helper whose translated code goes on afterwards with the cc_op it
        had (SYSENTER): the arithmetic flags, which the hook's work does not
        change, must then still be in the lazy form that code expects."""
        w = self.w
        system = w[self._eflags_w] & ~_ARITH_DF
        cc_src, cc_op, df, arith = saved
        w[self._cc_src] = cc_src
        w[self._cc_op] = cc_op
        w[self._df] = df
        w[self._eflags_w] = system | arith

    def seg_selector(self, name):
        return self.w[self._sel_w[name]] & 0xFFFF

    def table(self, which):
        """(base, limit) of 'gdt' or 'idt'."""
        base, limit = self._table_w[which]
        w = self.w
        return w[base], w[limit]

    def set_table(self, which, base, limit):
        """Load GDTR or IDTR ('gdt' or 'idt'), as lgdt/lidt would."""
        b, lim = self._table_w[which]
        self.w[b] = base & 0xFFFFFFFF
        self.w[lim] = limit & 0xFFFF

    def set_error_code(self, code, software=False):
        """The error code and software-INT flag of the event being handled, as
        the CPU would have left them had it raised the event itself."""
        self.w[self._error_code] = code & 0xFFFFFFFF
        self.w[self._is_int] = int(software)

    def seg_base_of(self, name):
        return self.w[self._base[name]]

    def seg_limit_of(self, name):
        return self.w[self._limit[name]]

    def segment_image(self, cs_cache, ss_cache=None):
        """The bytes set_segment writes for CS (and SS after it, if given),
        for enter_handler: what a route loads, made once per route.  None if
        SS does not directly follow CS in the context."""
        seg = self._seg_struct
        image = bytearray(seg.size)
        seg.pack_into(image, 0, cs_cache[0] & 0xFFFF, *cs_cache[1:])
        if ss_cache is not None:
            if self._sel["ss"] != self._sel_cs + seg.size:
                return None
            tail = bytearray(seg.size)
            seg.pack_into(tail, 0, ss_cache[0] & 0xFFFF, *ss_cache[1:])
            image += tail
        return bytes(image)

    def enter_handler(self, image, cpl, esp, eip, eflags):
        """The register side of delivering an event: CS (and SS, when the
        ring changes) from a segment_image(), the new CPL `cpl` (the DPL of
        the new SS; None: no ring change), ESP, EIP and EFLAGS (32 bits)."""
        at = self._sel_cs
        self.mem[at:at + len(image)] = image
        w = self.w
        if cpl is not None:                    # as set_segment("ss", ...)
            hf = self._hflags
            w[hf] = (w[hf] & ~3) | cpl
        w[self._esp] = esp
        w[self._eip] = eip
        eflags |= 0x2                                   # as set_eflags
        w[self._eflags_w] = eflags
        w[self._cc_src] = eflags & _ARITH
        w[self._cc_op] = self._cc_op_eflags
        self.wi[self._df] = -1 if eflags & _DF else 1

    def leave_vm86(self):
        """The rest of an event's delivery out of virtual-8086 code, after
        enter_handler: QEMU's mode bits of hflags as for the flat 32-bit
        handler (32-bit code and stack, no segment base to add), and DS, ES,
        FS and GS null, as the CPU loads them (SDM vol. 3, 20.3.1.1)."""
        mask, flat = self.layout.vm86_mode
        w, hf = self.w, self._hflags
        w[hf] = (w[hf] & ~mask) | flat
        for name in ("es", "ds", "fs", "gs"):
            self.set_segment(name, 0, 0, 0, 0)

    def set_segment(self, name, selector, base, limit, flags):
        """Write a segment register (selector and hidden part).  For SS this is
        also where the privilege level changes: QEMU keeps the CPL in hflags and
        takes it from the DPL of the stack segment, as the CPU's SS.DPL == CPL."""
        self._seg_struct.pack_into(self.mem, self._sel[name], selector & 0xFFFF, base, limit, flags)
        if name == "ss":
            w, hf = self.w, self._hflags
            w[hf] = (w[hf] & ~3) | ((flags >> x86.DESC_DPL_SHIFT) & 3)


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
    from .assembler import engine
    ks = engine()
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
    _run_scratch(uc, on_intr)
    if set(shots) != {"before", x86.GP, 0x41, 0x42}:
        raise CalibrationError("calibration guest did not raise the expected events: %r" % sorted(map(str, shots)))
    return shots


def _run_scratch(uc, on_intr):
    """Run the scratch CPU's code at 0x20000 (64 instructions at most) with
    `on_intr` as its interrupt hook."""
    h = uc.hook_add(UC_HOOK_INTR, on_intr)
    try:
        uc.emu_start(0x20000, 0, count=64)
    finally:
        uc.hook_del(h)


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
                 is_int=is_int, old_exception=old_exc, flags=flags, header=_Scan.data,
                 vm86_mode=_calibrate_vm86(_scratch_cpu(), hflags),
                 **_calibrate_xcr0(_scratch_cpu()))
    verify(uc, lay)
    return lay


def _calibrate_xcr0(uc):
    """Two real `xsetbv`s at ring 0 (with CR4.OSXSAVE), of XCR0 = 1 and 3
    (EAX cleared after each): the word that changes from one to the other is
    XCR0's low half (the high half follows it)."""
    uc.reg_write(X.UC_X86_REG_CR4, uc.reg_read(X.UC_X86_REG_CR4) | x86.CR4_OSXSAVE)

    def xsetbv(value):
        return _run_one(uc, "xsetbv\nxor eax, eax",
                        {X.UC_X86_REG_EAX: value, X.UC_X86_REG_ECX: 0, X.UC_X86_REG_EDX: 0})
    try:
        one, three = xsetbv(1), xsetbv(3)
    except UcError:                        # a CPU model without XSAVE
        return {}
    hits = _diff_u32(one, three, lambda a, b: a == 1 and b == 3)
    if len(hits) != 1:
        return {}
    return {"xcr0": hits[0]}


def _calibrate_vm86(uc, hflags):
    """Enter virtual-8086 mode by a real `iretd` and take the #GP of an `int`
    there (IOPL 0): the hflags bits other than the CPL that differ from flat
    32-bit protected mode are QEMU's execution mode (32-bit code, 32-bit
    stack, segment bases added), which a delivery out of VM86 must set as
    for its handler.  (mask, flat 32-bit value), or None unless exactly
    three bits differ (VM86 events then end the run)."""
    from .assembler import engine
    frame = "push 0\npush 0\npush 0x800\npush 0\npush 0x600\npush 0x100\n" \
            "push 0x20002\npush 0x700\npush 0\niretd\n"       # GS..ES, SS:SP, EFLAGS.VM, CS:IP
    code, _ = engine().asm(frame, 0x20000)
    uc.mem_write(0x20000, bytes(code))
    uc.mem_write(0x7000, b"\xcd\x43")                          # int 0x43
    uc.reg_write(X.UC_X86_REG_ESP, 0x9F000)
    shots = [_snapshot(uc)]

    def on_intr(uc_, intno, _):
        shots.append(_snapshot(uc_))
        uc_.emu_stop()
    _run_scratch(uc, on_intr)
    if len(shots) != 2:
        return None
    flat, vm86 = (_U32.unpack_from(shot, hflags)[0] for shot in shots)
    mask = (flat ^ vm86) & ~3
    return (mask, flat & mask) if bin(mask).count("1") == 3 and vm86 & 3 == 3 else None


def _calibrate_flags(uc):
    """Load two EFLAGS values through the API (which materialises the flags),
    then execute one real `add` (which makes them lazy again) and diff."""
    a_val, b_val = 0x2 | _ARITH | x86.IF, 0x2 | x86.DF | x86.CF
    uc.reg_write(X.UC_X86_REG_EFLAGS, a_val)
    a = _snapshot(uc)
    uc.reg_write(X.UC_X86_REG_EFLAGS, b_val)
    b = _snapshot(uc)
    from .assembler import assemble
    code = assemble("add eax, eax", 0x28000)
    uc.mem_write(0x28000, code)
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
    flags = FlagOffsets(sysflags, cc_src, cc_op, _U32.unpack_from(a, cc_op)[0], df)
    return _calibrate_lazy(_scratch_cpu(), flags)


# Whether a machine's state area addresses the live CPU state when it can
# (the default), or is always a copy.  Both behave the same, to the byte of
# every counter and of the console (tests/test_state_area_modes.py runs
# workloads both ways); a test that wants the copy mode sets this to False.
PREFER_LIVE = True


def open_state_area(uc, lay, live=None):
    """The machine's state area: live if the CPU's own state was found and
    verifies, otherwise a copy (save/load per exit), which must verify.
    `live`: False for a copy in any case (None: PREFER_LIVE)."""
    if live is None:
        live = PREFER_LIVE
    area = StateArea(uc, lay, live=live)
    if area.live:
        try:
            verify(uc, lay, area)
            return area
        except CalibrationError:
            area.detach()
            area = StateArea(uc, lay, live=False)
    verify(uc, lay, area)
    return area


def verify(uc, lay, area=None):
    """Round-trip every register field through the official API: what the
    library reads after we write the saved context must be what we wrote."""
    area = area or StateArea(uc, lay, live=False)
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
        # Back as it was (only the CPU state: in live mode the bytes in front
        # of it belong to the CPU model, which may have changed them since).
        area.mem[lay.header:] = saved[lay.header:]
        area.load()


# ---------------------------------------------------------------------------
# The live CPU state.
#
# For x86, uc_context_save and uc_context_restore are nothing but a memcpy of
# QEMU's CPUX86State (`env`, reached as uc->cpu->env_ptr) into the context and
# back (unicorn 2.1, uc.c: the x86 target installs no context hooks).  Within
# an exit, saving, editing the copy and restoring it therefore leaves the CPU
# exactly as editing `env` in place would: every field the handler did not
# touch is copied back unchanged.  Two copies of 5.6 KB and two library calls
# per exit are thus pure overhead, about a floor's worth of time on every
# path; the state area can address `env` itself, as a VMM addresses a VMCS
# that the hardware keeps in memory.
#
# The address is not part of Unicorn's API, so it is found the way the
# offsets are: write distinctive values into the eight general registers
# through the API, and look for them behind the pointers in the uc_struct
# (read through /proc/self/mem, which reports an unmapped address as an error
# instead of crashing).  A place qualifies only if it follows a second set of
# values too; the pointer path that leads there (which field of the uc_struct,
# which offset from where it points) is then reused for every CPU of the
# process and checked again for each, and every machine's area is verified by
# the full round trip of verify().  Where any of this fails (no /proc, a
# different build), the state area falls back to the saved copy.

_LIVE_PATHS = None           # [(uc_struct offset, offset from the pointer)]: how to find env
_UC_SCAN = 4096              # bytes of the uc_struct searched for the pointer
_OBJ_SCAN = 1 << 17          # bytes searched behind each pointer


def live_cpu_state(uc, lay):
    """The address the layout's offsets are relative to in the live CPU (the
    CPU state less the header), or None if it cannot be found here."""
    global _LIVE_PATHS
    offsets = [lay.gpr[name] for name in GPRS]
    if offsets != list(range(offsets[0], offsets[0] + 8 * 8, 8)):
        return None                          # not an array of 8-byte registers
    try:
        fd = os.open("/proc/self/mem", os.O_RDONLY)
    except OSError:
        return None
    before = [uc.reg_read(rid) for rid in _GPR_IDS]
    try:
        if _LIVE_PATHS is None:
            _LIVE_PATHS = _find_paths(uc, fd)
        for path in _LIVE_PATHS:
            regs = _follow(uc, fd, path)
            if regs is not None and _holds(uc, fd, regs, 0x6C00_0000) \
                    and _holds(uc, fd, regs, 0x7D00_0000):
                return regs - offsets[0]
        return None
    finally:
        os.close(fd)
        for rid, value in zip(_GPR_IDS, before):
            uc.reg_write(rid, value)


def _signature(uc, base):
    """Write eight distinctive values into the general registers through the
    API; the 64 bytes they make in the CPU state."""
    values = [base + 0x10F0F * (i + 1) for i in range(8)]
    for rid, value in zip(_GPR_IDS, values):
        uc.reg_write(rid, value)
    return struct.pack("<8Q", *values)


def _peek(fd, address, n):
    try:
        return os.pread(fd, n, address)
    except (OSError, OverflowError, ValueError):
        return b""


def _pointers(blob):
    for off in range(0, len(blob) - 7, 8):
        p = struct.unpack_from("<Q", blob, off)[0]
        if 0x10000 <= p < (1 << 47) and not p & 7:
            yield off, p


def _find_paths(uc, fd):
    """Every (field, offset) leading from the uc_struct to the registers."""
    uch = uc._uch.value
    sig = _signature(uc, 0x5E00_0000)
    paths = []
    for off, p in _pointers(_peek(fd, uch, _UC_SCAN)):
        at = _peek(fd, p, _OBJ_SCAN).find(sig)
        if at >= 0 and not at & 7:
            paths.append((off, at))
    return paths


def _follow(uc, fd, path):
    off, at = path
    raw = _peek(fd, uc._uch.value + off, 8)
    return struct.unpack("<Q", raw)[0] + at if len(raw) == 8 else None


def _holds(uc, fd, address, base):
    """Does `address` hold the registers the API just wrote?"""
    sig = _signature(uc, base)
    return _peek(fd, address, len(sig)) == sig


# ---------------------------------------------------------------------------
# Lazy arithmetic flags.
#
# QEMU does not compute EFLAGS' arithmetic bits after each instruction: it
# keeps the last operation (cc_op) and its operands (cc_dst, the result;
# cc_src, an operand or the old carry) and computes the flags when something
# reads them (target/i386/cc_helper_template.h).  Reading them through the
# library costs a call into C from Python; for the operations a loop ends
# with, the same formulas here cost a fraction of that.  The cc_op numbers
# are calibrated by executing each instruction, and every formula is checked
# against the library's own answer over edge and random operands before it is
# used; an operation that does not match (or any other) is left to the library.

_PARITY = tuple(x86.PF_FLAG if bin(i).count("1") % 2 == 0 else 0 for i in range(256))
_LAZY_PROBES = {"add": "add {a}, {b}", "sub": "sub {a}, {b}", "logic": "and {a}, {b}",
                "inc": "inc {a}", "dec": "dec {a}", "clr": "xor {a}, {a}"}
# A register xored with itself: QEMU records no operands, only that the
# result is zero (its CC_OP_CLR), the same operation at every size.  Common
# just before an exit (`xor eax, eax`, `xor ecx, ecx; div ecx`).
_SIZELESS = {"clr"}
_LAZY_REGS = {8: ("al", "bl"), 16: ("ax", "bx"), 32: ("eax", "ebx")}


# Flags that depend on the low byte of the result alone: PF (even parity
# of the low byte), and for inc and dec AF (a carry out of, or borrow into,
# bit 3 is exactly a low nibble of 0 after inc, of 0xF after dec).
_LOW_INC = tuple(_PARITY[i] | (x86.AF if i & 0xF == 0 else 0) for i in range(256))
_LOW_DEC = tuple(_PARITY[i] | (x86.AF if i & 0xF == 0xF else 0) for i in range(256))


@lru_cache(maxsize=None)
def _lazy_function(kind, bits):
    """f(cc_dst, cc_src) -> the arithmetic flags QEMU computes for `kind` at
    operand size `bits`, or None where this module leaves it to the library.
    (Written out flat, with the constants bound as closure cells and the
    low-byte flags from tables: this runs on most exits.)"""
    mask, sign = (1 << bits) - 1, 1 << (bits - 1)
    sf_shift = bits - 8                               # SF is bit 7: the sign bit shifted down
    parity, low_inc, low_dec = _PARITY, _LOW_INC, _LOW_DEC
    zf, sf, af, of = x86.ZF, x86.SF, x86.AF, x86.OF
    # OF is bit 11: the sign bit of an operand expression shifted to it.
    # (For bytes the shift is to the left; `of_mul` makes both one multiply
    # or one shift: x >> of_shift, or x * of_mul with of_shift 0.)
    of_shift, of_mul = (bits - 12, 1) if bits >= 12 else (0, 1 << (12 - bits))

    def add(dst, src1):
        dst &= mask
        src1 &= mask
        src2 = (dst - src1) & mask
        return (parity[dst & 0xFF] | (0 if dst else zf) | ((dst >> sf_shift) & sf) | (dst < src1)
                | ((dst ^ src1 ^ src2) & af)
                | (((~(src1 ^ src2) & (src1 ^ dst)) * of_mul >> of_shift) & of))

    def sub(dst, src2):
        dst &= mask
        src2 &= mask
        src1 = (dst + src2) & mask
        return (parity[dst & 0xFF] | (0 if dst else zf) | ((dst >> sf_shift) & sf) | (src1 < src2)
                | ((dst ^ src1 ^ src2) & af)
                | ((((src1 ^ src2) & (src1 ^ dst)) * of_mul >> of_shift) & of))

    def logic(dst, _src):
        dst &= mask
        return parity[dst & 0xFF] | (0 if dst else zf) | ((dst >> sf_shift) & sf)

    def inc(dst, carry):
        if carry > 1:
            carry &= mask
            if carry > 1:
                return None                  # not a carry QEMU would have stored
        dst &= mask
        return (low_inc[dst & 0xFF] | (0 if dst else zf) | ((dst >> sf_shift) & sf) | carry
                | (of if dst == sign else 0))

    def dec(dst, carry):
        if carry > 1:
            carry &= mask
            if carry > 1:
                return None
        dst &= mask
        return (low_dec[dst & 0xFF] | (0 if dst else zf) | ((dst >> sf_shift) & sf) | carry
                | (of if dst == sign - 1 else 0))

    def clr(_dst, _src):
        return zf | parity[0]                # a zero result: ZF and PF, every other flag clear

    return {"add": add, "sub": sub, "logic": logic, "inc": inc, "dec": dec, "clr": clr}[kind]


def lazy_flag_functions(flags):
    """{cc_op: f(cc_dst, cc_src)} for the operations a FlagOffsets lists."""
    if flags.cc_dst is None:
        return {}
    return {op: _lazy_function(kind, bits) for op, kind, bits in flags.lazy}


def _run_one(uc, text, regs):
    """Execute one instruction on the scratch CPU with `regs` set; the
    context afterwards."""
    from .assembler import assemble
    code = assemble(text, 0x28000)
    uc.mem_write(0x28000, code)
    for rid, value in regs.items():
        uc.reg_write(rid, value)
    uc.emu_start(0x28000, 0x28000 + len(code))
    return _snapshot(uc)


def _calibrate_lazy(uc, flags):
    """Find cc_dst and the cc_op of each operation _lazy_function knows, and
    keep those whose formulas agree with the library (flags.lazy)."""
    regs = {X.UC_X86_REG_EAX: 0x12345678, X.UC_X86_REG_EBX: 0x01010101}
    after = _run_one(uc, "add eax, ebx", regs)
    found = [o for o in _diff_u32(after, after, lambda x, y: x == 0x13355779)
             if flags.eflags < o < flags.cc_op and o != flags.cc_src]
    if len(found) != 1 or _U32.unpack_from(after, flags.cc_src)[0] not in regs.values():
        return flags                                  # not the layout expected: no lazy path
    ops = {}
    for kind, text in _LAZY_PROBES.items():
        for bits, (a, b) in _LAZY_REGS.items():
            if kind in _SIZELESS and bits != 32:
                continue                              # one operation for every size
            snap = _run_one(uc, text.format(a=a, b=b), {X.UC_X86_REG_EAX: 0x11, X.UC_X86_REG_EBX: 0x22})
            op = _U32.unpack_from(snap, flags.cc_op)[0]
            if op == flags.cc_op_eflags or ops.get(op, (kind, bits)) != (kind, bits):
                return flags                          # two operations, one number: give up
            ops[op] = (kind, bits)
    flags = FlagOffsets(flags.eflags, flags.cc_src, flags.cc_op, flags.cc_op_eflags, flags.df,
                        found[0])
    agreed = tuple((op, kind, bits) for op, (kind, bits) in sorted(ops.items())
                   if _agrees(uc, flags, op, _lazy_function(kind, bits)))
    return FlagOffsets(flags.eflags, flags.cc_src, flags.cc_op, flags.cc_op_eflags, flags.df,
                       flags.cc_dst, agreed)


_EDGES = (0, 1, 2, 0xF, 0x10, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
          0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x12345678, 0xFEDCBA98)


def _agrees(uc, flags, op, fn):
    """Does fn give the library's EFLAGS for cc_op `op`, over edge values and
    random ones, both directions of DF?"""
    import random
    rng = random.Random(op)
    values = list(_EDGES) + [rng.getrandbits(32) for _ in range(12)]
    ctx = uc.context_save()
    data = (ctypes.c_char * uclib.uc_context_size(uc._uch)).from_address(ctx.context.value)
    out = ctypes.c_uint64()
    for i, dst in enumerate(values):
        for src in values:
            df = -1 if (i + src) & 1 else 1
            struct.pack_into("<I", data, flags.cc_op, op)
            struct.pack_into("<I", data, flags.cc_dst, dst)
            struct.pack_into("<I", data, flags.cc_src, src)
            struct.pack_into("<I", data, flags.eflags, 0x202)
            struct.pack_into("<i", data, flags.df, df)
            arith = fn(dst, src)
            if arith is None:
                continue
            _ctx_reg_read(ctx.context, X.UC_X86_REG_EFLAGS, ctypes.byref(out))
            mine = 0x202 | arith | (x86.DF if df < 0 else 0)
            if out.value & 0xFFFFFFFF != mine:
                return False
    return True
