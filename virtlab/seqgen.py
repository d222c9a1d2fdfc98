"""Random sequences of guest instructions for the differential tests: the
items they are made of and the generator (asmseq.py runs and compares them).

A sequence is a list of items, each a few instructions that make sense on
their own (an ALU operation on a scratch operand, a bounded loop, a call
through a table, a string copy, an sgdt ...), so that a failing sequence can
be made smaller by dropping items (`shrink`).  Items only address memory
through EBP (never written), absolute addresses of their own block, the stack
they pushed and labels of their own code, and every loop is bounded by ECX:
whatever the register values, a sequence cannot run away or touch another's
block.  Everything follows from random.Random((seed << 16) | index), so a
sequence is named by its seed and index.

Left out, because back ends may legitimately differ there or because the
guest cannot say it in a ring-0 image of this kind: external interrupts (a
VMM recognises them at its own exits, docs/unicorn.md, item 12), TF (it would
single-step the VMM's code), port I/O beyond the console's UART, anything
that changes paging (CR3, CR4, PTEs, CR0.PG and WP), sysenter, and values the
architecture leaves undefined: the upper half of `smsw r32` and OF, SF, AF
and PF after bt/bts/btr/btc (cleared by the item), whose values in the CPU
model depend on where its translation blocks begin.  cmpxchg8b, loope and
loopne are left out for the CPU model's bugs (docs/unicorn.md, items 18 and
19).  rdtsc is in: every back end answers it from the one virtual clock; an
item reads it relative to the sequence's start, so that an exception in one
sequence (a clock event) does not shift every later sequence's values.

Classic sequences (`classic=True`) are the part of all this that classic
trap-and-emulate can run as the CPU does, for comparing `trap` with native
exactly.  Under ring compression the sensitive but unprivileged instructions
tell the guest the truth about the real CPU (virtlab/vmm/sensitive.py), so
classic sequences leave them out: no sgdt, sidt, sldt, str, smsw, lar, lsl,
verr or verw, no read or push of CS or SS, no far call (it pushes the real
CS).  pushfd and popfd stay, because they are harmless while the guest's
IF and IOPL equal the real ones, which classic sequences keep so: every start
state has IF set and IOPL 0, no item clears IF or changes IOPL, and the
harness sets the virtual IF again with sti (privileged, so it exits) before
each sequence, since a fault's interrupt gate clears it and the handler never
irets.  An iret or far return goes to the kernel's CS pushed as a constant
(RPL 0), which trap must emulate, and the interrupt-gate handler reads the
EFLAGS its frame holds instead of the live ones.  The items are otherwise
the same, so trap's emulator, its reflection and its shadow MMU are searched
as widely as bt's translator is.

User sequences (`user=True`) run the same kind of items at ring 3, where
every back end runs the guest's code directly and what is searched is the way
into the kernel and back: the kernel's `setup` irets to the sequence with
its start state (any IF, IOPL 3 half of the time, so that cli, sti, in and
out run as often as they fault), each `int n` and exception is delivered
through a DPL-3 gate or reflected with a stack switch, the handlers iret back
to user code, and the sequence ends with `int DUMP_VECTOR`, whose handler
dumps the user's registers (EFLAGS and ESP from its frame).  Privileged items
are left out (`faulting` makes the #GP of a few), and DS and ES are the
user's data segment.  Classic user sequences leave out only what shows the
real tables (sgdt, lar, ...): user code runs on the real ring and flags under
trap too.

MMU sequences (`mmu=True`, paging on, kernel only) also rewrite a page-table
entry of their own: sequence i's window page (WINDOWS + i * 4 KiB, nothing
else's) is mapped to the page its block is in, read-write, read-only or for
the kernel only, or to nothing, the TLB flushed for it (invlpg, or a CR3
reload: what the TLB keeps without a flush is the CPU's own business), and
read or written through, or its entry read back with the accessed and dirty
bits the CPU set.  So a shadow MMU is searched where it keeps the guest's
entries and bits, and a page is reached through two addresses.  Each also
has a 4 MiB slot (BIGPAGES + i * 4 MiB), whose directory entry maps the
first 4 MiB of memory (CR4.PSE set first) or nothing, used the same way and
now and then to write the window's page-table entry (a page table written
through a large page); and CR0.WP or CR4.PSE is set or cleared now and then,
which changes what every mapping allows or means (asmseq's setup starts
each MMU sequence with WP set and PSE clear).  These items are kinds of
their own, so ordinary sequences stay what they were.
"""
import random
import re

from . import asmguest as A, x86
from .assembler import AssemblerError, assemble
from .asmseq import (BLOCK, ESP0, FAULT, READONLY, SCRATCH, STACK_OFF, STATE_NAMES, TSC0,
                     UNMAPPED, Sequence, block, scratch)


REGS = ("eax", "ebx", "ecx", "edx", "esi", "edi")
R16 = {"eax": "ax", "ebx": "bx", "ecx": "cx", "edx": "dx", "esi": "si", "edi": "di"}
R8 = {"eax": ("al", "ah"), "ebx": ("bl", "bh"), "ecx": ("cl", "ch"), "edx": ("dl", "dh")}
CC = ("o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g")
ALU = ("add", "or", "adc", "sbb", "and", "sub", "xor", "cmp")
SHIFTS = ("shl", "shr", "sar", "rol", "ror", "rcl", "rcr")
# Selectors worth asking lar, lsl, verr and verw about: the guest's own, with
# other RPLs, the null selector, one past the GDT's limit, and an LDT selector.
SELECTORS = (0, 3, A.KCODE, A.KDATA, A.R1CODE, A.R1DATA, A.UCODE, A.UDATA, A.TSS_SEL,
             A.KCODE | 3, A.KDATA | 3, A.R1DATA & ~3, A.UDATA & ~3, 0x40, 0x0C, 0x3B)
FLAT_DATA = (A.KDATA, A.R1DATA, A.UDATA)
# keystone gives push and pop of CS, SS, DS and ES an operand-size prefix
# (a 16-bit push): the 32-bit forms are written as bytes (`.byte 0x66` and
# the same opcode is the 16-bit form, for the items that want it).
PUSH_SEG = {"es": 0x06, "cs": 0x0E, "ss": 0x16, "ds": 0x1E}
POP_SEG = {"es": 0x07, "ss": 0x17, "ds": 0x1F}


def push_seg(seg, wide=True):
    if seg in PUSH_SEG:
        return f".byte {'' if wide else '0x66, '}{PUSH_SEG[seg]:#x}"
    return f"push {seg}" if wide else f".byte 0x66\npush {seg}"


def pop_seg(seg):
    return f".byte {POP_SEG[seg]:#x}" if seg in POP_SEG else f"pop {seg}"


UNDEFINED_AFTER_BT = x86.OF | x86.SF | x86.AF | x86.PF_FLAG
MAX_DEPTH = 0x100              # bytes a sequence's top level may leave pushed
MAX_NEST = 2


class _Ctx:
    """Where items are being generated: the body of the sequence, of a loop,
    of a conditional block or a subroutine.  `avoid` are registers the items
    must not write (ECX in a loop body), `depth` the bytes pushed so far in
    this context (what it may pop), `balanced` whether it must end with the
    stack as it began (anything that may run a variable number of times, or
    return).  `short`: inside what a branch with only an 8-bit displacement
    (jecxz, loop) jumps over, which the long items of MMU sequences could
    take beyond its reach, where keystone wraps the displacement instead of
    refusing it (docs/unicorn.md, item 43)."""

    def __init__(self, gen, avoid=frozenset(), nest=0, balanced=False, short=False):
        self.gen, self.avoid, self.nest, self.balanced = gen, frozenset(avoid), nest, balanced
        self.short = short
        self.depth = 0

    def free(self, *excluding):
        return [r for r in REGS if r not in self.avoid and r not in excluding]

    def can_write(self, *regs):
        return not (set(regs) & self.avoid)


class _Skip(Exception):
    """An item that cannot be made in this context (a register it needs is
    reserved): the generator picks another."""


class _Gen:
    def __init__(self, rng, index, paging, without=frozenset(), classic=False, user=False,
                 mmu=False):
        self.rng, self.index, self.paging = rng, index, paging
        self.classic, self.user = classic, user
        self.kinds = {**_KINDS, **_MMU_KINDS} if mmu else _KINDS
        # The code segment of the sequence's ring, and the data segments it may load.
        self.code_sel = A.UCODE if user else A.KCODE
        self.data_sels = (A.UDATA,) if user else FLAT_DATA
        self.without = frozenset(without)
        unknown = self.without - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)} (known: {sorted(FEATURES)})")
        self.labels = 0
        self.outline = []

    def need(self, feature):
        """Items with a feature left out (to look past a known bug) are skipped."""
        if feature in self.without:
            raise _Skip()

    def sensitive(self):
        """An item with a sensitive, unprivileged instruction that reads what
        ring compression cannot hide at any ring (the descriptor tables, the
        real descriptors) is skipped in a classic sequence."""
        if self.classic:
            raise _Skip()

    def kernel_sensitive(self):
        """One that would show the kernel's real ring (CS or SS read or
        pushed) or change its IF or IOPL where trap would not see it is
        skipped in a classic kernel sequence; user code runs on the real
        ring and flags under trap, and may."""
        if self.classic and not self.user:
            raise _Skip()

    def privileged(self):
        """An item of privileged instructions is skipped in a user sequence
        (at ring 3 they would only fault: `faulting` has those)."""
        if self.user:
            raise _Skip()

    def label(self):
        self.labels += 1
        return f"{{P}}L{self.labels}"

    # -- values -------------------------------------------------------------------
    def imm(self, bits=32):
        r = self.rng
        mask = (1 << bits) - 1
        choice = r.random()
        if choice < 0.3:
            v = r.randrange(16)
        elif choice < 0.55:
            v = r.choice((0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
                          0xFFFFFFFF, 0xFFFFFFFE, 1 << r.randrange(32)))
        else:
            v = r.getrandbits(32)
        return v & mask

    def size(self):
        return self.rng.choice((8, 16, 32, 32, 32))

    def reg(self, ctx, bits=32, write=True, excluding=()):
        pool = ctx.free(*excluding) if write else [x for x in REGS if x not in excluding]
        if bits == 8:
            pool = [x for x in pool if x in R8]
        if not pool:
            raise _Skip()
        r = self.rng.choice(pool)
        if bits == 32:
            return r, r
        if bits == 16:
            return r, R16[r]
        return r, self.rng.choice(R8[r])

    def mem(self, ctx, bits=32, lines=None, reach=4, write=False):
        """A scratch operand `reach` bytes wide: [ebp + d], the absolute
        address, or [ebp + index*scale + d] after masking a free index into
        `lines`; with a segment override now and then (CS only to read)."""
        r = self.rng
        ptr = {8: "byte", 16: "word", 32: "dword"}[bits]
        seg = r.choice(("", "", "", "es:", "ss:") + (() if write else ("cs:",)))
        style = r.random()
        if style < 0.2:
            return f"{ptr} ptr {seg}[{scratch(self.index) + r.randrange(SCRATCH - reach):#x}]"
        if style < 0.45 and lines is not None and ctx.free():
            idx = r.choice(ctx.free())
            scale = r.choice((1, 2, 4, 8))
            lines.append(f"and {idx}, 0x3f")
            d = r.randrange(SCRATCH - 63 * scale - reach)
            return f"{ptr} ptr {seg}[ebp + {idx}*{scale} + {d:#x}]"
        return f"{ptr} ptr {seg}[ebp + {r.randrange(SCRATCH - reach):#x}]"

    def wmem(self, ctx, bits=32, lines=None, reach=4):
        return self.mem(ctx, bits, lines, reach, write=True)

    # -- items --------------------------------------------------------------------
    def items(self, ctx, n):
        out = []
        for _ in range(n):
            out.append(self.item(ctx))
        return out

    def item(self, ctx):
        """One item: (kind, body lines).  Out-of-line code goes to self.outline."""
        kinds, weights = zip(*[(k, w) for k, (w, nest) in self.kinds.items()
                               if ctx.nest + nest <= MAX_NEST
                               and not (ctx.short and k in _MMU_KINDS)])
        for _ in range(50):
            kind = self.rng.choices(kinds, weights)[0]
            lines = []
            try:
                getattr(self, "i_" + kind)(ctx, lines)
            except _Skip:
                continue
            return kind, lines
        return "nop", ["nop"]

    def simple(self, ctx):
        """One item that leaves the stack alone (between pushad and popad,
        pushfd and popfd)."""
        inner = _Ctx(self, ctx.avoid, MAX_NEST, True)
        for _ in range(50):
            lines = []
            try:
                getattr(self, "i_" + self.rng.choice(_SIMPLE))(inner, lines)
            except _Skip:
                continue
            return lines
        return ["nop"]

    def block_of(self, ctx, n=None, avoid=(), balanced=True, short=False):
        """Items in a nested context; a balanced one ends with `lea esp` over
        whatever it left pushed (lea leaves the flags alone)."""
        inner = _Ctx(self, ctx.avoid | set(avoid), ctx.nest + 1, balanced, ctx.short or short)
        n = self.rng.randint(1, 3) if n is None else n
        lines = [line for _, body in self.items(inner, n) for line in body]
        if inner.depth:
            lines.append(f"lea esp, [esp + {inner.depth:#x}]")
        return lines

    def push(self, ctx, n):
        if ctx.depth + n > (MAX_DEPTH if not ctx.balanced else 0x40):
            raise _Skip()
        ctx.depth += n

    def pop(self, ctx, n):
        if ctx.depth < n:
            raise _Skip()
        ctx.depth -= n

    # ALU, moves, arithmetic --------------------------------------------------------
    def i_alu(self, ctx, out):
        r, bits = self.rng, self.size()
        op = r.choice(ALU + ("test",))
        writes = op not in ("cmp", "test")
        form = r.choice(("rr", "ri", "rm", "mr", "mi") if op != "test" else
                        ("rr", "ri", "mr", "mi"))
        if form in ("rr", "ri", "rm"):
            _, dst = self.reg(ctx, bits, write=writes)
            if form == "rr":
                src = self.reg(ctx, bits, write=False)[1]
            elif form == "ri":
                src = hex(self.imm(bits))
            else:
                src = self.mem(ctx, bits, out)
            out.append(f"{op} {dst}, {src}")
        else:
            m = self.wmem(ctx, bits, out) if writes else self.mem(ctx, bits, out)
            src = self.reg(ctx, bits, write=False)[1] if form == "mr" else hex(self.imm(bits))
            out.append(f"{op} {m}, {src}")

    def i_unary(self, ctx, out):
        r, bits = self.rng, self.size()
        op = r.choice(("inc", "dec", "neg", "not"))
        target = self.reg(ctx, bits)[1] if r.random() < 0.5 else self.wmem(ctx, bits, out)
        out.append(f"{op} {target}")

    def i_shift(self, ctx, out):
        r, bits = self.rng, self.size()
        if r.random() < 0.2 and bits != 8:
            _, dst = self.reg(ctx, bits)
            src = self.reg(ctx, bits, write=False)[1]
            count = "cl" if r.random() < 0.5 else str(r.randrange(32))
            out.append(f"{r.choice(('shld', 'shrd'))} {dst}, {src}, {count}")
            return
        target = self.reg(ctx, bits)[1] if r.random() < 0.6 else self.wmem(ctx, bits, out)
        count = r.choice(("1", "cl", str(r.randrange(33))))
        out.append(f"{r.choice(SHIFTS)} {target}, {count}")

    def i_muldiv(self, ctx, out):
        r = self.rng
        kind = r.randrange(5)
        if kind == 0:
            if not ctx.can_write("eax", "edx"):
                raise _Skip()
            bits = self.size()
            src = self.reg(ctx, bits, write=False)[1] if r.random() < 0.5 else self.mem(ctx, bits)
            out.append(f"{r.choice(('mul', 'imul'))} {src}")
        elif kind == 1:
            _, dst = self.reg(ctx, r.choice((16, 32)))
            bits = 16 if dst in R16.values() else 32
            src = self.reg(ctx, bits, write=False)[1] if r.random() < 0.5 else self.mem(ctx, bits)
            out.append(f"imul {dst}, {src}")
        elif kind == 2:
            _, dst = self.reg(ctx)
            src = self.reg(ctx, write=False)[1] if r.random() < 0.5 else self.mem(ctx)
            out.append(f"imul {dst}, {src}, {r.randrange(-128, 128)}")
        else:
            # Division that cannot fault: a zero-extended or sign-extended
            # dividend and a divisor that makes the quotient fit.
            if not ctx.can_write("eax", "edx"):
                raise _Skip()
            d, _ = self.reg(ctx, excluding=("eax", "edx"))
            out.append(f"mov {d}, {r.randrange(1, 1 << r.choice((4, 16, 31))):#x}")
            if kind == 3:
                out += ["xor edx, edx", f"div {d}"]
            else:
                out += ["cdq", f"or {d}, 2", f"idiv {d}"]

    def i_mov(self, ctx, out):
        r = self.rng
        kind = r.randrange(8)
        bits = self.size()
        if kind == 0:
            out.append(f"mov {self.reg(ctx, bits)[1]}, {self.imm(bits):#x}")
        elif kind == 1:
            out.append(f"mov {self.reg(ctx, bits)[1]}, {self.reg(ctx, bits, write=False)[1]}")
        elif kind == 2:
            out.append(f"mov {self.reg(ctx, bits)[1]}, {self.mem(ctx, bits, out)}")
        elif kind == 3:
            out.append(f"mov {self.wmem(ctx, bits, out)}, {self.reg(ctx, bits, write=False)[1]}")
        elif kind == 4:
            out.append(f"mov {self.wmem(ctx, bits, out)}, {self.imm(bits):#x}")
        elif kind == 5:
            sb = r.choice((8, 16))
            src = self.reg(ctx, sb, write=False)[1] if r.random() < 0.5 else self.mem(ctx, sb)
            out.append(f"{r.choice(('movzx', 'movsx'))} {self.reg(ctx)[1]}, {src}")
        else:
            # lea computes; it never touches memory, so any registers will do
            base = r.choice(REGS + ("ebp", "esp", ""))
            index = r.choice(REGS + ("ebp", ""))
            parts = [p for p in (base, f"{index}*{r.choice((1, 2, 4, 8))}" if index else "",
                                 hex(self.imm())) if p]
            out.append(f"lea {self.reg(ctx, r.choice((16, 32, 32)))[1]}, [{' + '.join(parts)}]")

    def i_xchg(self, ctx, out):
        r, bits = self.rng, self.size()
        kind = r.randrange(5)
        if kind == 0:
            a = self.reg(ctx, bits)[1]
            out.append(f"xchg {a}, {self.reg(ctx, bits)[1]}")
        elif kind == 1:
            out.append(f"xchg {self.wmem(ctx, bits, out)}, {self.reg(ctx, bits)[1]}")
        elif kind == 2:
            if not ctx.can_write("eax"):
                raise _Skip()
            out.append(f"cmpxchg {self.wmem(ctx, bits)}, {self.reg(ctx, bits, write=False)[1]}")
        elif kind == 3:
            dst = self.wmem(ctx, bits) if r.random() < 0.5 else self.reg(ctx, bits)[1]
            out.append(f"xadd {dst}, {self.reg(ctx, bits)[1]}")
        else:
            # (not cmpxchg8b, which leaves EFLAGS wrong: docs/unicorn.md, item 18)
            out.append(f"bswap {self.reg(ctx)[1]}")

    def i_bits(self, ctx, out):
        r = self.rng
        kind = r.randrange(5)
        bits = r.choice((16, 32))
        if kind in (0, 1):
            op = r.choice(("bt", "bts", "btr", "btc"))
            if kind == 0:
                dst = self.reg(ctx, bits, write=op != "bt")[1] if r.random() < 0.5 else \
                    self.wmem(ctx, bits)
                out.append(f"{op} {dst}, {r.randrange(bits)}")
            else:
                out.append(f"{op} {self.reg(ctx, bits, write=op != 'bt')[1]}, "
                           f"{self.reg(ctx, bits, write=False)[1]}")
            # OF, SF, AF and PF are undefined after bt*, and the CPU model's
            # values depend on where its translation blocks begin, which
            # differs between back ends: cleared, CF and ZF kept
            out += ["pushfd", f"and dword ptr [esp], {~UNDEFINED_AFTER_BT & 0xFFFFFFFF:#x}",
                    "popfd"]
        elif kind == 2:
            src = self.reg(ctx, bits, write=False)[1] if r.random() < 0.5 else self.mem(ctx, bits)
            out.append(f"{r.choice(('bsf', 'bsr'))} {self.reg(ctx, bits)[1]}, {src}")
        elif kind == 3:
            src = self.reg(ctx, bits, write=False)[1] if r.random() < 0.5 else self.mem(ctx, bits)
            out.append(f"cmov{r.choice(CC)} {self.reg(ctx, bits)[1]}, {src}")
        else:
            dst = self.reg(ctx, 8)[1] if r.random() < 0.5 else self.wmem(ctx, 8)
            out.append(f"set{r.choice(CC)} {dst}")

    def i_misc(self, ctx, out):
        r = self.rng
        kind = r.randrange(5)
        if kind == 0:
            op, regs = r.choice((("cbw", ("eax",)), ("cwde", ("eax",)), ("cwd", ("edx",)),
                                 ("cdq", ("edx",)), ("lahf", ("eax",)), ("sahf", ()),
                                 ("daa", ("eax",)), ("das", ("eax",)), ("aaa", ("eax",)),
                                 ("aas", ("eax",)), ("aam", ("eax",)), ("aad", ("eax",))))
            if not ctx.can_write(*regs):
                raise _Skip()
            out.append(op)
        elif kind == 1:
            out.append(r.choice(("clc", "stc", "cmc", "cld", "std", "nop")))
        elif kind == 2:
            if not ctx.can_write("eax", "ebx"):
                raise _Skip()
            out += [f"lea ebx, [ebp + {r.randrange(SCRATCH - 256):#x}]", "xlatb"]
        elif kind == 3:
            if not ctx.can_write("eax", "edx"):
                raise _Skip()
            # the time-stamp counter since the sequence began: the virtual
            # clock advances with guest-visible events, the same under every
            # back end, but counting from the sequence's start keeps one
            # sequence's extra event (a fault) out of the others' values
            out += ["rdtsc", f"sub eax, dword ptr ss:[{TSC0:#x}]",
                    f"sbb edx, dword ptr ss:[{TSC0 + 4:#x}]"]
        else:
            out.append(f"{r.choice(('inc', 'dec'))} {self.reg(ctx, r.choice((16, 32)))[1]}")

    # the stack ---------------------------------------------------------------------
    def i_stack(self, ctx, out):
        r = self.rng
        kind = r.randrange(9)
        if kind == 0:
            self.push(ctx, 4)
            out.append(f"push {self.reg(ctx, write=False)[1]}")
        elif kind == 1:
            self.push(ctx, 4)
            out.append(f"push {r.choice((self.imm(8) - 128, self.imm()))}")
        elif kind == 2:
            self.push(ctx, 4)
            out.append(f"push {self.mem(ctx, 32)}")
        elif kind == 3:
            self.pop(ctx, 4)
            try:
                reg = self.reg(ctx)[1]
            except _Skip:
                ctx.depth += 4
                raise
            out.append(f"pop {reg}")
        elif kind == 4:
            self.pop(ctx, 4)
            out.append(f"pop {self.wmem(ctx, 32)}")
        elif kind == 5:
            self.push(ctx, 2)
            out.append(f"push {self.reg(ctx, 16, write=False)[1]}" if r.random() < 0.5
                       else f"push {self.mem(ctx, 16)}")
        elif kind == 6:
            if ctx.depth < 4:
                raise _Skip()
            slot = r.randrange(ctx.depth // 4) * 4
            if r.random() < 0.5:
                out.append(f"mov {self.reg(ctx)[1]}, dword ptr [esp + {slot}]")
            else:
                out.append(f"{r.choice(('mov', 'add', 'xor'))} dword ptr [esp + {slot}], "
                           f"{self.reg(ctx, write=False)[1]}")
        elif kind == 7:
            # pushad, a few instructions, popad: EBP comes back with the rest
            self.push(ctx, 32)
            ctx.depth -= 32
            out += ["pushad"] + self.simple(ctx) + ["popad"]
        else:
            # enter/leave: a frame, EBP pointing into the stack until leave
            self.push(ctx, 0x30)
            ctx.depth -= 0x30
            size, level = r.randrange(4, 0x20, 4), r.choice((0, 0, 1))
            reg = self.reg(ctx)[1]
            out += [f"enter {size}, {level}", f"mov dword ptr [ebp - 4], {reg}",
                    f"mov {reg}, dword ptr [ebp]", f"add {reg}, ebp", "leave"]

    def i_iflag(self, ctx, out):
        r = self.rng
        kind = r.randrange(9)
        if kind == 0:
            out.append(self._cli_sti())
        elif kind == 1:
            out += [self._cli_sti(), "pushfd", f"pop {self.reg(ctx)[1]}"]
        elif kind == 2:
            out += ["push " + hex(self.eflags()), "popfd"]
        elif kind == 3:
            op, mask = r.choice((("or", x86.IF), ("and", ~x86.IF & 0xFFFFFFFF)))
            if op == "and":
                self.kernel_sensitive()       # IF cleared by a popfd trap does not see
            out += ["pushfd", f"{op} dword ptr [esp], {mask:#x}", "popfd"]
        elif kind == 4:
            # pushf, something that changes the flags, popf: the old flags back
            out += ["pushfd"] + self.simple(ctx) + ["popfd"]
        elif kind == 5:
            # the 16-bit forms (operand-size prefix): FLAGS, IF and IOPL included
            self.need("pushf16")
            self.push(ctx, 2)
            out += [".byte 0x66", "pushfd"]
        elif kind == 6:
            self.need("popf16")
            out += [f"push {self.eflags() & 0xFFFF:#x}", ".byte 0x66", "popfd",
                    "lea esp, [esp + 2]"]
        elif kind == 7:
            self.kernel_sensitive()           # (IF toggled by popfd)
            reg = self.reg(ctx)[1]
            out += ["pushfd", f"pop {reg}", f"xor {reg}, {x86.IF | x86.CF | x86.ZF:#x}",
                    f"push {reg}", "popfd", "pushfd", f"pop {reg}"]
        else:
            self.need("pushf16")
            out += [self._cli_sti(), ".byte 0x66", "pushfd", "pop " + self.reg(ctx, 16)[1]]

    def _cli_sti(self):
        """cli or sti: in a classic sequence sti only (IF is set already, so
        it changes nothing, but exits under trap all the same)."""
        op = self.rng.choice(("cli", "sti"))
        if op == "cli":
            self.kernel_sensitive()
        return op

    def eflags(self):
        r = self.rng
        v = 0x2 | (r.getrandbits(32) & (x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF
                                         | x86.DF | x86.IF))
        if r.random() < 0.3:
            v |= r.randrange(4) << x86.IOPL_SHIFT
        if r.random() < 0.2:
            v |= 0x40000                                   # AC
        if r.random() < 0.2:
            v |= 0x200000                                  # ID
        if r.random() < 0.05 and "nt" not in self.without:
            v |= 0x4000                                    # NT
        if self.classic and not self.user:                 # the real IF and IOPL under trap
            v = (v | x86.IF) & ~x86.IOPL_MASK
        if self.user:                # (an iret with NT at ring 3 returns to the task of
            v &= ~0x4000             # the real TSS's back link under trap and bt)
            if r.random() < 0.5:     # cli, sti, in and out fault at ring 3 below IOPL 3
                v |= x86.IOPL_MASK
        return v

    # control flow ------------------------------------------------------------------
    def i_jcc(self, ctx, out):
        r = self.rng
        skip = self.label()
        if r.random() < 0.6:
            a = self.reg(ctx, write=False)[1]
            imm, b = self.imm(), self.reg(ctx, write=False)[1]
            out.append(r.choice((f"cmp {a}, {imm:#x}", f"test {a}, {b}",
                                 f"cmp {self.mem(ctx)}, {a}")))
        out += [f"j{r.choice(CC)} {skip}"] + self.block_of(ctx, r.randint(1, 4)) + [f"{skip}:"]

    def i_loop(self, ctx, out):
        if not ctx.can_write("ecx"):
            raise _Skip()
        r = self.rng
        top = self.label()
        form = r.randrange(6)
        out.append(f"mov ecx, {r.randint(1, 4)}")
        body = self.block_of(ctx, r.randint(1, 3), avoid=("ecx",), short=form in (1, 4))
        out += [f"{top}:"] + body
        if form == 0:
            out += ["dec ecx", f"jnz {top}"]
        elif form == 1:
            out += [f"loop {top}"]
        elif form == 2:
            out += ["sub ecx, 1", f"ja {top}"]
        elif form == 3:
            # (not loope and loopne, which leave EFLAGS wrong: docs/unicorn.md,
            # item 19; jecxz, the other flag-free branch on ECX, is i_jecxz)
            out += [f"cmp {self.reg(ctx, write=False)[1]}, {self.imm(8)}",
                    "lea ecx, [ecx - 1]", f"jecxz {top}_out", f"jmp {top}", f"{top}_out:"]
        elif form == 4:
            out += [".byte 0x67", f"loop {top}"]         # loop on CX
        else:
            out += ["cmp ecx, 1", "lea ecx, [ecx - 1]", f"jg {top}"]

    def i_jecxz(self, ctx, out):
        r = self.rng
        skip = self.label()
        if ctx.can_write("ecx") and r.random() < 0.5:
            out.append(f"{r.choice(('xor', 'and'))} ecx, {r.choice((0, 1, 0x10000))}")
        out += ([".byte 0x67"] if r.random() < 0.3 else []) + [f"jecxz {skip}"]
        out += self.block_of(ctx, short=True) + [f"{skip}:"]

    def subroutine(self, ctx, args=0):
        """A subroutine out of line: some items, then ret (ret n pops args)."""
        name = self.label()
        body = self.block_of(ctx)
        if args and self.rng.random() < 0.5 and ctx.free():
            body.insert(0, f"mov {self.rng.choice(ctx.free())}, dword ptr [esp + {4 * args}]")
        self.outline += [f"{name}:"] + body + [f"ret {4 * args}" if args else "ret"]
        return name

    def i_call(self, ctx, out):
        r = self.rng
        kind = r.randrange(6)
        if kind == 0:
            args = r.randrange(3)
            for _ in range(args):
                out.append(f"push {self.imm(8)}")
            out.append(f"call {self.subroutine(ctx, args)}")
        elif kind == 1:
            reg = self.reg(ctx)[1]
            out += [f"mov {reg}, {self.subroutine(ctx)}", f"call {reg}"]
        elif kind == 2:
            slot = f"[ebp + {r.randrange(0, SCRATCH - 4, 4):#x}]"
            out += [f"mov dword ptr {slot}, {self.subroutine(ctx)}", f"call dword ptr {slot}"]
        elif kind == 3:
            reg = self.reg(ctx)[1]
            table = self.label()
            subs = [self.subroutine(ctx) for _ in range(r.randint(1, 3))]
            self.outline += [f"{table}:", ".int " + ", ".join(subs)]
            out += [f"and {reg}, 0", f"or {reg}, {r.randrange(len(subs))}",
                    f"call dword ptr [{table} + {reg}*4]"]
        elif kind == 4:
            # call to the next instruction, pop: the guest EIP
            nxt = self.label()
            reg = self.reg(ctx)[1]
            out += [f"call {nxt}", f"{nxt}:", f"pop {reg}"]
        else:
            # ret as a jump: push a code address, ret to it
            reg = self.reg(ctx)[1]
            there = self.label()
            out += [f"mov {reg}, {there}", f"push {reg}", "ret", "ud2", f"{there}:"]

    def i_jmp(self, ctx, out):
        r = self.rng
        kind = r.randrange(3)
        join = self.label()
        if kind == 0:
            reg = self.reg(ctx)[1]
            out += [f"mov {reg}, {join}", f"jmp {reg}", "ud2", f"{join}:"]
        elif kind == 1:
            slot = f"[ebp + {r.randrange(0, SCRATCH - 4, 4):#x}]"
            out += [f"mov dword ptr {slot}, {join}", f"jmp dword ptr {slot}", "ud2", f"{join}:"]
        else:
            reg = self.reg(ctx)[1]
            table = self.label()
            cases = []
            for _ in range(r.randint(2, 4)):
                case = self.label()
                cases.append(case)
                self.outline += [f"{case}:"] + self.block_of(ctx) + [f"jmp {join}"]
            self.outline += [f"{table}:", ".int " + ", ".join(cases)]
            out += [f"and {reg}, 3", f"cmp {reg}, {len(cases)}", f"jb {join}_in",
                    f"mov {reg}, 0", f"{join}_in:", f"jmp dword ptr [{table} + {reg}*4]",
                    f"{join}:"]

    def i_int(self, ctx, out):
        r = self.rng
        kind = r.randrange(4)
        if kind == 0:
            if not ctx.can_write("eax", "edx"):
                raise _Skip()
            out.append("int 0x40")
        elif kind == 1:
            if not ctx.can_write("ebx"):
                raise _Skip()
            out.append("int 0x41")
        elif kind == 2:
            if not ctx.can_write("esi"):
                raise _Skip()
            out.append("int3")
        else:
            if not ctx.can_write("edi"):
                raise _Skip()
            out += [f"add {self.reg(ctx)[1]}, {self.imm():#x}", "into"]

    def i_iret(self, ctx, out):
        """iretd to the next instruction in the same ring: with the flags as
        they are, or with IF (or IOPL) changed in the frame."""
        r = self.rng
        reg = self.reg(ctx)[1]
        there = self.label()
        out += ["pushfd"]
        change = r.randrange(4)
        if change == 1:
            out.append(f"or dword ptr [esp], {x86.IF:#x}")
        elif change == 2:
            self.kernel_sensitive()
            out.append(f"and dword ptr [esp], {~x86.IF & 0xFFFFFFFF:#x}")
        elif change == 3:
            self.kernel_sensitive()
            out.append(f"xor dword ptr [esp], {r.randrange(4) << x86.IOPL_SHIFT:#x}")
        out += [self._push_cs(), f"mov {reg}, {there}", f"push {reg}", "iretd", "ud2",
                f"{there}:"]

    def _push_cs(self):
        """CS for a frame: pushed from CS, or in a classic kernel sequence as
        the constant (push cs would show RPL 1 under trap)."""
        return f"push {A.KCODE:#x}" if self.classic and not self.user else push_seg("cs")

    def i_far(self, ctx, out):
        r = self.rng
        kind = r.randrange(5)
        there = self.label()
        if kind == 0:
            out += [".byte 0xea", f".int {there}", f".short {self.code_sel}", "ud2",
                    f"{there}:"]
        elif kind == 1:
            self.kernel_sensitive()           # a far call pushes the real CS
            sub = self.label()
            self.outline += [f"{sub}:"] + self.block_of(ctx) + ["retf"]
            out += [".byte 0x9a", f".int {sub}", f".short {self.code_sel}"]
        elif kind == 2:
            self.kernel_sensitive()
            sub = self.label()
            self.outline += [f"{sub}:"] + self.block_of(ctx) + ["retf 4"]
            d = r.randrange(0, SCRATCH - 8, 2)
            out += [f"push {self.imm(8)}", f"mov dword ptr [ebp + {d:#x}], {sub}",
                    f"mov word ptr [ebp + {d + 4:#x}], {self.code_sel}", f"lcall [ebp + {d:#x}]"]
        elif kind == 3:
            d = r.randrange(0, SCRATCH - 8, 2)
            out += [f"mov dword ptr [ebp + {d:#x}], {there}",
                    f"mov word ptr [ebp + {d + 4:#x}], {self.code_sel}", f"ljmp [ebp + {d:#x}]",
                    "ud2", f"{there}:"]
        else:
            reg = self.reg(ctx)[1]
            out += [self._push_cs(), f"mov {reg}, {there}", f"push {reg}", "retf", "ud2",
                    f"{there}:"]

    # code read as data --------------------------------------------------------------
    def i_coderead(self, ctx, out):
        r = self.rng
        here = self.label()
        target = r.choice((here, "{P}start_of", here))
        kind = r.randrange(4)
        out.append(f"{here}:")
        if kind == 0:
            out.append(f"mov {self.reg(ctx)[1]}, dword ptr [{target} + {r.randrange(8)}]")
        elif kind == 1:
            out.append(f"movzx {self.reg(ctx)[1]}, byte ptr cs:[{target} + {r.randrange(16)}]")
        elif kind == 2:
            out.append(f"cmp dword ptr [{target}], {self.imm():#x}")
        else:
            if not ctx.can_write("ecx", "esi", "edi"):
                raise _Skip()
            out += [f"mov esi, {target}", f"lea edi, [ebp + {r.randrange(SCRATCH - 32):#x}]",
                    f"mov ecx, {r.randint(1, 32)}", "cld", "rep movsb"]

    def i_smc(self, ctx, out):
        """Code that rewrites code: the immediate of a `mov eax, imm32` is
        replaced after the instruction ran once (so a translation of the old
        bytes exists), or just before it runs, in the same basic block."""
        if not ctx.can_write("eax"):
            raise _Skip()
        r = self.rng
        if r.random() < 0.5:
            sub = self.label()
            self.outline += [f"{sub}:", "mov eax, 0x11111111", "ret"]
            out += [f"call {sub}", f"mov dword ptr [{sub} + 1], {self.imm():#x}",
                    f"call {sub}"]
        else:
            there = self.label()
            out += [f"mov byte ptr [{there} + {r.randint(1, 4)}], {self.imm(8):#x}",
                    f"{there}:", "mov eax, 0x22222222"]

    # sensitive and segment instructions -----------------------------------------------
    def i_sreg(self, ctx, out):
        r = self.rng
        kind = r.randrange(5)
        seg = r.choice(("cs", "ss", "cs", "ss", "ds", "es", "fs", "gs"))
        if kind < 4 and seg in ("cs", "ss"):
            self.kernel_sensitive()           # their RPL shows the real ring
        if kind == 0:
            out.append(f"mov {self.reg(ctx, r.choice((16, 32)))[1]}, {seg}")
        elif kind == 1:
            out.append(f"mov {self.wmem(ctx, 16)}, {seg}")
        elif kind == 2:
            wide = r.random() < 0.8
            self.push(ctx, 4 if wide else 2)
            out.append(push_seg(seg, wide))
        elif kind == 3:
            # push a segment register, read what was pushed (all 32 bits)
            reg = self.reg(ctx)[1]
            out += [f"mov {reg}, {self.imm():#x}", f"push {reg}", "lea esp, [esp + 4]",
                    push_seg(seg), f"pop {reg}"]
        else:
            self.privileged()
            if not ctx.can_write("eax"):
                raise _Skip()
            out += [f"mov eax, cr{r.choice((0, 2, 3, 4))}"]

    def i_tables(self, ctx, out):
        self.sensitive()                      # every one of them reads real state
        r = self.rng
        kind = r.randrange(6)
        d = r.randrange(SCRATCH - 8)
        if kind == 0:
            # 32-bit operand size: hand-encoded, [ebp + disp32]
            out += [f".byte 0x0f, 0x01, {0x85 | r.choice((0, 1)) << 3:#x}", f".int {d:#x}"]
        elif kind == 1:
            # keystone's encoding has an operand-size prefix: a 24-bit base
            out.append(f"{r.choice(('sgdt', 'sidt'))} [ebp + {d:#x}]")
        elif kind == 2:
            # smsw r32 leaves the upper half of the register undefined: only
            # the low 16 bits are compared
            reg, name = self.reg(ctx, r.choice((16, 32)))
            if r.random() < 0.4:
                out.append(f"smsw word ptr [ebp + {d:#x}]")
            elif name == reg:
                out += [f"smsw {reg}", f"movzx {reg}, {R16[reg]}"]
            else:
                out.append(f"smsw {name}")
        else:
            op = r.choice(("str", "sldt"))
            out.append(f"{op} {self.reg(ctx, r.choice((16, 32)))[1]}"
                       if r.random() < 0.6 else f"{op} word ptr [ebp + {d:#x}]")

    def i_privileged(self, ctx, out):
        """Privileged instructions that leave paging alone: the descriptor
        tables reloaded with what they hold, a null LDT, CR0.TS set and
        cleared, the SYSENTER MSRs written and read back."""
        self.privileged()
        r = self.rng
        kind = r.randrange(4)
        d = r.randrange(SCRATCH - 8)
        if kind in (0, 1):
            self.sensitive()                  # sgdt, sidt, sldt
        if kind == 0:
            op = r.choice((0, 1))                          # sgdt/lgdt, sidt/lidt
            out += [f".byte 0x0f, 0x01, {0x85 | op << 3:#x}", f".int {d:#x}",
                    f".byte 0x0f, 0x01, {0x95 | op << 3:#x}", f".int {d:#x}"]
        elif kind == 1:
            reg = self.reg(ctx)[1]
            out += [f"xor {reg}, {reg}", f"lldt {R16[reg]}", f"sldt {R16[reg]}"]
        elif kind == 2:
            if not ctx.can_write("eax"):
                raise _Skip()
            out += ["mov eax, cr0", "or eax, 8", "mov cr0, eax", "mov eax, cr0"]
            if r.random() < 0.7:
                out += ["clts"] + ([] if self.classic else ["smsw ax"])
        else:
            if not ctx.can_write("eax", "ecx", "edx"):
                raise _Skip()
            msr = r.choice((0x174, 0x175, 0x176))
            out += [f"mov ecx, {msr:#x}", "rdmsr"]
            if r.random() < 0.5:
                # SYSENTER_CS holds a selector: what its upper bits keep is
                # the model's own (the CPU model keeps none of them)
                value = self.imm() & (0xFFFF if msr == 0x174 else 0xFFFFFFFF)
                out += [f"mov eax, {value:#x}", "xor edx, edx", "wrmsr",
                        "xor eax, eax", "rdmsr"]

    def i_descriptor(self, ctx, out):
        """lar, lsl, verr, verw of a selector in a register or in memory."""
        self.sensitive()                      # they read the real descriptors
        r = self.rng
        sel = r.choice(SELECTORS) if r.random() < 0.9 else r.getrandbits(16)
        op = r.choice(("lar", "lsl", "verr", "verw"))
        if op == "lar":
            self.need("lar")
        src, _ = self.reg(ctx)
        in_memory = r.random() < 0.4
        if in_memory:
            d = r.randrange(0, SCRATCH - 2, 2)
            out.append(f"mov word ptr [ebp + {d:#x}], {sel:#x}")
        else:
            out.append(f"mov {R16[src]}, {sel:#x}")
        if op in ("verr", "verw"):
            out.append(f"{op} " + (f"word ptr [ebp + {d:#x}]" if in_memory else R16[src]))
            return
        bits = r.choice((16, 32))
        _, dst = self.reg(ctx, bits)
        # (keystone wants `word ptr` for lar's memory operand, `dword ptr` for lsl's)
        ptr = "dword" if op == "lsl" and bits == 32 else "word"
        operand = f"{ptr} ptr [ebp + {d:#x}]" if in_memory else (src if bits == 32 else R16[src])
        out.append(f"{op} {dst}, {operand}")

    def i_segload(self, ctx, out):
        """Loads of data segment registers with the guest's flat selectors
        (DS and ES never null: the items address memory through them)."""
        r = self.rng
        kind = r.randrange(6)
        reg = self.reg(ctx)[1]
        sel = r.choice(self.data_sels)
        if kind == 0:
            seg = r.choice(("ds", "es"))
            out += [f"mov {R16[reg]}, {sel:#x}", f"mov {seg}, {R16[reg]}", f"mov {reg}, {seg}"]
        elif kind == 1:
            seg = r.choice(("fs", "gs"))
            sel = r.choice(self.data_sels + (0, 1, 2, 3))
            out += [f"mov {R16[reg]}, {sel:#x}", f"mov {seg}, {R16[reg]}"]
            if sel > 3:
                out.append(f"mov {reg}, dword ptr {seg}:[ebp + {r.randrange(SCRATCH - 4):#x}]")
            else:
                out.append(f"mov {reg}, {seg}")
        elif kind == 2:
            a, b = r.sample(("ds", "es", "fs", "gs"), 2)
            if b in ("ds", "es"):
                a = r.choice(("ds", "es"))
            out += [push_seg(a), pop_seg(b), f"mov {reg}, {b}"]
        elif kind == 3:
            seg = r.choice(("ds", "es", "fs", "gs"))
            d = r.randrange(0, SCRATCH - 8, 2)
            out += [f"mov word ptr [ebp + {d + 4:#x}], {sel:#x}",
                    f"l{seg} {reg}, [ebp + {d:#x}]"]
        else:
            # the stack segment, reloaded with what it holds
            self.kernel_sensitive()           # read from SS: RPL 1 under trap
            form = r.randrange(3)
            if form == 0:
                out += [f"mov {R16[reg]}, ss", f"mov ss, {R16[reg]}"]
            elif form == 1:
                self.need("pop-ss")
                out += [push_seg("ss"), pop_seg("ss")]
            else:
                self.need("lss")
                d = r.randrange(0, SCRATCH - 8, 2)
                out += [f"mov dword ptr [ebp + {d:#x}], esp",
                        f"mov word ptr [ebp + {d + 4:#x}], ss", f"lss esp, [ebp + {d:#x}]"]

    # strings, ports ----------------------------------------------------------------------
    def i_string(self, ctx, out):
        r = self.rng
        op = r.choice(("movs", "stos", "lods", "cmps", "scas"))
        uses = {"movs": ("esi", "edi"), "stos": ("edi",), "lods": ("esi", "eax"),
                "cmps": ("esi", "edi"), "scas": ("edi",)}[op]
        rep = r.random() < 0.8
        if not ctx.can_write(*uses, *(("ecx",) if rep else ())):
            raise _Skip()
        w = r.choice((1, 2, 4))
        n = r.randrange(0, 24) if rep else 1
        down = r.random() < 0.3
        span = max(n, 1) * w
        lo = r.randrange(0, SCRATCH - span + 1)
        start = lo + span - w if down else lo
        if "esi" in uses:
            out.append(f"lea esi, [ebp + {start:#x}]")
        if "edi" in uses:
            lo2 = r.randrange(0, SCRATCH - span + 1)
            out.append(f"lea edi, [ebp + {lo2 + span - w if down else lo2:#x}]")
        if rep:
            out.append(f"mov ecx, {n}")
        out.append("std" if down else "cld")
        prefix = ""
        if rep:
            prefix = {"cmps": r.choice(("repe ", "repne ")),
                      "scas": r.choice(("repe ", "repne "))}.get(op, "rep ")
        suffix = {1: "b", 2: "w", 4: "d"}[w]
        if op == "movs" and w == 4:
            out.append(".byte 0xf3, 0xa5" if rep else ".byte 0xa5")
        else:
            out.append(f"{prefix}{op}{suffix}")

    def i_port(self, ctx, out):
        """The console's ports: a character to the console, or a UART register
        written and read back (never DLAB, which would hide the console)."""
        r = self.rng
        if not ctx.can_write("eax", "edx"):
            raise _Skip()
        kind = r.randrange(3)
        if kind == 0:
            out += ["mov dx, 0x3f8", f"mov al, {r.randrange(0x21, 0x7F)}", "out dx, al"]
        elif kind == 1:
            out += ["mov dx, 0x3fd", "in al, dx"]
        else:
            out += ["mov dx, 0x3fb", f"mov al, {r.randrange(0x80):#x}", "out dx, al",
                    "xor eax, eax", "in al, dx", "mov dx, 0x3fb", "mov al, 3", "out dx, al"]

    # the page tables (mmu sequences) -------------------------------------------------
    def i_window(self, ctx, out):
        """The sequence's window page remapped: to the page its own block is
        in (read-write or read-only), or to nothing, now and then by a write
        through the window itself mapped onto its page table; the TLB flushed
        for it (invlpg, or a CR3 reload); then a read or write through it, or
        the entry read back (the accessed and dirty bits the CPU set)."""
        r = self.rng
        window = WINDOWS + self.index * 0x1000
        pte = A.PGTAB + (window >> 12) * 4
        frame = block(self.index) & ~0xFFF
        at = window + (scratch(self.index) & 0xFFF) + r.randrange(0, SCRATCH - 4, 4)
        mapping = r.choice((frame | 7, frame | 7, frame | 5, frame | 3, 0))
        if r.random() < 0.15:
            # The window onto the page table that maps it, and the entry
            # rewritten through the window: a page-table write by an alias.
            out += ([f"mov dword ptr [{pte:#x}], {pte & ~0xFFF | 3:#x}"]
                    + self._flush(ctx, window)
                    + [f"mov dword ptr [{window | pte & 0xFFF:#x}], {mapping:#x}"])
        else:
            out.append(f"mov dword ptr [{pte:#x}], {mapping:#x}")
        out += self._flush(ctx, window)
        reg = self.reg(ctx)[1]
        self._use(ctx, out, r.randrange(4), at, reg)
        if r.random() < 0.6:
            out.append(f"mov {reg}, dword ptr [{pte:#x}]")

    def i_bigpage(self, ctx, out):
        """The sequence's 4 MiB slot (CR4.PSE set first) mapped onto the
        first 4 MiB of memory, read-write, read-only or for the kernel only,
        or to nothing; the TLB flushed for it; then a read or write through
        it to the block's scratch area, or now and then a write of the
        window's page-table entry through it (a page table written by an
        alias in a large page), or its directory entry read back with the
        accessed and dirty bits the CPU set."""
        r = self.rng
        slot = BIGPAGES + self.index * 0x400000
        pde = A.PGDIR + (slot >> 22) * 4
        reg = self.reg(ctx)[1]
        out += [f"mov {reg}, cr4", f"or {reg}, {x86.CR4_PSE:#x}", f"mov cr4, {reg}"]
        out.append(f"mov dword ptr [{pde:#x}], {r.choice((0x87, 0x87, 0x85, 0x83, 0)):#x}")
        out += self._flush(ctx, slot + r.randrange(0, 0x400000, 0x1000))
        use = r.randrange(5)
        at = slot + scratch(self.index) + r.randrange(0, SCRATCH - 4, 4)
        self._use(ctx, out, use, at, reg)
        if use == 3:
            window = WINDOWS + self.index * 0x1000
            pte = A.PGTAB + (window >> 12) * 4
            frame = block(self.index) & ~0xFFF
            out += [f"mov dword ptr [{slot + pte:#x}], {r.choice((frame | 7, frame | 5, 0)):#x}",
                    f"invlpg byte ptr [{window:#x}]",
                    f"mov {reg}, dword ptr [{window + (scratch(self.index) & 0xFFF):#x}]"]
        if r.random() < 0.6:
            out.append(f"mov {reg}, dword ptr [{pde:#x}]")

    def _use(self, ctx, out, use, at, reg):
        """A page just mapped, used at `at`: read into `reg` (use 0), written
        (1) or added to (2); any other `use` is the caller's own."""
        if use == 0:
            out.append(f"mov {reg}, dword ptr [{at:#x}]")
        elif use == 1:
            out.append(f"mov dword ptr [{at:#x}], {self.reg(ctx, write=False)[1]}")
        elif use == 2:
            out.append(f"add dword ptr [{at:#x}], {self.imm():#x}")

    def i_paging_mode(self, ctx, out):
        """CR0.WP or CR4.PSE set or cleared.  With WP clear the kernel may
        write to read-only pages (the window's, the 4 MiB slot's and the
        image's READONLY page); with PSE clear a directory entry's PS bit is
        not read (no item uses its 4 MiB slot until it sets PSE again).
        Each sequence starts with WP set and PSE clear (asmseq's setup)."""
        reg = self.reg(ctx)[1]
        cr, bit = self.rng.choice(((0, x86.CR0_WP), (4, x86.CR4_PSE)))
        op = f"or {reg}, {bit:#x}" if self.rng.random() < 0.5 else \
            f"and {reg}, {~bit & 0xFFFFFFFF:#x}"
        out += [f"mov {reg}, cr{cr}", op, f"mov cr{cr}, {reg}"]

    def _flush(self, ctx, window):
        """The TLB's entry for the window dropped: invlpg, or a CR3 reload."""
        if self.rng.random() < 0.8:
            return [f"invlpg byte ptr [{window:#x}]"]
        reg = self.reg(ctx)[1]
        return [f"mov {reg}, cr3", f"mov cr3, {reg}"]

    # the last item, sometimes: an exception the handler records --------------------------
    def faulting(self):
        r = self.rng
        kinds = ["ud2", "div0", "selector", "gate"] + (["pf-read", "pf-write"] if self.paging
                                                       else [])
        kind = r.choice(kinds)
        if kind == "ud2":
            return ["ud2"]
        if kind == "div0":
            return ["xor ecx, ecx", "div ecx"]
        if kind == "selector":
            return [f"mov ax, {r.choice((A.KDATA | 3, 0x40, A.TSS_SEL, A.KCODE)):#x}",
                    f"mov {r.choice(('ds', 'es', 'fs'))}, ax"]
        if kind == "gate":
            return [f"int {r.choice((0x42, 0x80, 0x30)):#x}"]
        if kind == "pf-read":
            return [f"mov eax, dword ptr [{UNMAPPED + r.randrange(0x1000 - 4):#x}]"]
        return [f"mov dword ptr [{READONLY + r.randrange(0x1000 - 4):#x}], eax"]


# mmu sequences also have: a page of their own (a window) whose page-table
# entry they rewrite, each change followed by invlpg or a CR3 reload; a 4 MiB
# slot of their own whose directory entry they rewrite; and the paging mode's
# bits (CR0.WP, CR4.PSE) changed.
_MMU_KINDS = {"window": (8, 0), "bigpage": (4, 0), "paging_mode": (2, 0)}
WINDOWS = 0x600000             # sequence i's window page: WINDOWS + i * 4 KiB
BIGPAGES = 0x40000000          # sequence i's 4 MiB slot: BIGPAGES + i * 4 MiB

# item kind -> (weight, nesting it adds)
_KINDS = {
    "alu": (10, 0), "unary": (3, 0), "shift": (4, 0), "muldiv": (3, 0), "mov": (8, 0),
    "xchg": (3, 0), "bits": (4, 0), "misc": (4, 0), "stack": (6, 0), "iflag": (6, 1),
    "jcc": (4, 1), "loop": (3, 1), "jecxz": (2, 1), "call": (4, 1), "jmp": (3, 1),
    "int": (2, 0), "iret": (2, 0), "far": (2, 1), "coderead": (2, 0), "sreg": (3, 0),
    "tables": (3, 0), "descriptor": (3, 0), "segload": (2, 0), "string": (4, 0),
    "port": (1, 0), "smc": (1, 0), "privileged": (1, 0),
}


# What `without` may leave out: items that show a known difference, so that
# a search for others is not drowned by it (never in the tests).
FEATURES = {
    "pushf16": "pushf with an operand-size prefix (FLAGS, with IF and IOPL)",
    "popf16": "popf with an operand-size prefix",
    "nt": "start states and popf values with NT set (iret then returns from a task)",
    "pop-ss": "pop ss",
    "lss": "lss",
    "lar": "lar (shows the accessed bit of a descriptor)",
}

_SIMPLE = ("alu", "unary", "shift", "mov", "bits", "xchg")


def generate(seed, index, paging=False, without=(), classic=False, user=False, mmu=False):
    """Sequence `index` of `seed`: its start state and its items (with
    `without`, features left out, `classic`, `user` or `mmu`: another
    sequence altogether).  One whose jecxz or loop cannot reach its label
    (the items it jumps over too long: docs/unicorn.md, item 43) is made
    again from another stream of the same seed; the first that assembles is
    the sequence."""
    if mmu and (user or not paging):
        raise ValueError("mmu sequences run in the kernel, with paging on")
    for attempt in range(_ATTEMPTS):
        seq = _generate(random.Random(((seed << 16) | index) + (attempt << 64)), seed, index,
                        paging, without, classic, user, mmu)
        if _branches_reach(seq):
            return seq
    raise AssemblerError(f"sequence {index} of seed {seed}: {_ATTEMPTS} streams in a row "
                         f"made an 8-bit branch that cannot reach its label")


_ATTEMPTS = 16


def _branches_reach(seq):
    """Does the sequence's code assemble with every jecxz and loop reaching
    its label?  (Its code alone, the harness's `dump` far enough away that
    `jmp dump` is as long as in an image.)"""
    try:
        assemble(seq.render() + "\n.space 256\ndump:\n", A.BASE)
    except AssemblerError:
        return False
    return True


def _generate(rng, seed, index, paging, without, classic, user, mmu):
    gen = _Gen(rng, index, paging, without, classic, user, mmu)
    ctx = _Ctx(gen)
    items, kinds = [(["{P}start_of:"], [])], ["label"]
    for _ in range(rng.randint(3, 10)):
        gen.outline = []
        kind, body = gen.item(ctx)
        items.append((body, gen.outline))
        kinds.append(kind)
    if rng.random() < 0.08:
        items.append((gen.faulting(), []))
        kinds.append("fault")
    regs = [gen.imm() for _ in range(8)]
    regs[2] = scratch(index)                      # EBP
    eflags = gen.eflags()
    segs = [rng.choice((A.KDATA,) * 4 + FLAT_DATA[1:]) for _ in range(2)]
    segs += [rng.choice((A.KDATA,) * 3 + FLAT_DATA[1:] + (0,)) for _ in range(2)]
    if user:                         # DS and ES the user's data segment, FS and GS it or null
        segs = [A.UDATA, A.UDATA] + [A.UDATA if sel else 0 for sel in segs[2:]]
    b = block(index)
    state = [index, b + FAULT] + regs + [eflags] + segs + [b + ESP0]
    return Sequence(seed, index, paging, state, rng.randbytes(SCRATCH),
                    rng.randbytes(BLOCK - STACK_OFF), items, kinds, classic, user, mmu)


def handmade(index, lines, eflags=0x2, paging=False, seed=0):
    """A sequence written by hand (a regression test's): the start state of
    generate(seed, index) but for EFLAGS, and `lines` as its one item."""
    s = generate(seed, index, paging)
    state = list(s.state)
    state[STATE_NAMES.index("eflags")] = eflags
    return Sequence(seed, index, paging, state, s.scratch, s.stack,
                    [(["{P}start_of:"], []), (list(lines), [])], ["label", "handmade"])



def batch(seed, count, paging=None, without=(), classic=False, user=False, mmu=False):
    """`count` sequences of one seed (indices 0..count-1); odd seeds run with
    paging on unless told (mmu sequences always do)."""
    paging = bool(seed & 1) or mmu if paging is None else paging
    return [generate(seed, i, paging, without, classic, user, mmu) for i in range(count)]


def uncovered(sequences, classes):
    """The names of `classes` (name -> regular expression) that no line of
    `sequences` matches: what a test asks of the generator's coverage."""
    lines = {line for s in sequences for line in s.lines()}
    return [name for name, pattern in classes.items()
            if not any(re.search(pattern, line) for line in lines)]
