"""The arithmetic flags that the CPU model loses, kept: at a fault, and at a
second hook in one block that exits (`second_hook`,
docs/unicorn.md item 39).

Two kinds of instruction make the CPU model compute the arithmetic flags
(make them concrete: the flags into cc_src, and cc_op to say so) before
their memory access: `rcl` and `rcr` of memory always, and `setcc` into
memory for some conditions (below).  If the access faults, the model puts
back the cc_op recorded at the instruction's start, the operation before,
which then takes the computed flags for its operand (docs/unicorn.md,
item 29).  Run again after the fault, the instruction takes the garbage for
the flags: setcc stores a wrong answer, rcl keeps only its own CF and OF
right.  Where the fault was the guest's own, its handler's frame held the
garbage; where a VMM made it (a shadow entry to fill, a page-table write to
trace), the guest saw flags change under an instruction that changes none.

The flags computed are right and still in cc_src: only the record of what
cc_src holds is wrong.  So the machine learns where such instructions are as
their blocks are translated (a translation-time client of the intercepts,
with no hook: a hook has its own cost to the flags, item 39), and at a fault
at one of them it says the flags are concrete, if the instruction computed
them.  It costs an exit nothing until one has been translated, which in no
workload it is.  bt's translated kernel code lies where the intercepts do
not look; its translator puts `cmc; cmc` before such an instruction instead
(bt/translate.py): the flags made concrete by an instruction that cannot
fault, so that the one that can finds nothing left to compute.

Whether a setcc computed them is the translator's choice (QEMU's
gen_prepare_cc), made from the condition and the operation the translator
knew to be last (cc_op at translation, or "dynamic" when no instruction
before it in its block wrote the flags, or the last was a shift or rotate by
CL, which may leave them alone): B never computes; with the
operation unknown every other condition does; with it known, P, BE, L and LE
do (but BE, L and LE not after a subtraction, which has a shortcut), O does
unless the operation makes OF known without it, and Z and S never do.  One
setcc may lie in several blocks that answer differently (one that begins at
it, after an exit or a jump, knows nothing), and a fault does not say which
block ran.  Then the state itself is asked: flags that the model computed
have no bit outside the arithmetic flags, and ZF, SF and PF as the
operation's result (cc_dst) gives them; an operand left in cc_src rarely
looks like that (docs/unicorn.md, item 29).
"""
from dataclasses import dataclass

from capstone import Cs, CS_ARCH_X86, CS_MODE_32, x86_const as C

from . import x86
from .decode import MAX_INSN, opcode_of
from .intercept import BLOCK_END_IDS
from .memory import GuestMemoryFault

_IDS = (C.X86_INS_RCL, C.X86_INS_RCR) + tuple(
    v for k, v in vars(C).items() if k.startswith("X86_INS_SET")
    and k[len("X86_INS_SET"):] in ("A", "AE", "B", "BE", "E", "G", "GE", "L", "LE", "NE",
                                   "NO", "NP", "NS", "O", "P", "S"))
# The shift group's opcodes (C0, C1, D0 to D3): ModRM.reg 2 is rcl, 3 rcr.
_GROUP2 = frozenset((0xC0, 0xC1, 0xD0, 0xD1, 0xD2, 0xD3))
# What the memory access of an instruction can raise, with EIP at it.  (A
# #DB with EIP at an instruction is an instruction breakpoint, taken before
# it runs: its flags are whole.)
MEMORY_FAULTS = frozenset((x86.SS, x86.GP, x86.PF, x86.AC_VEC))
# setcc's condition (the low nibble of 0F 9x) halved: QEMU's jcc_op.
_O, _B, _Z, _BE, _S, _P, _L, _LE = range(8)
# QEMU's cc_op numbers (target/i386/cpu.h, CCOp) that the rule needs, trusted
# only if the state area's calibration found the same numbers for the
# operations it calibrated (_CALIBRATED; else setcc is left alone).
_CC_OP = {"sub": (14, 15, 16), "adox": 47, "adcox": 48, "clr": 49, "popcnt": 50}
_CALIBRATED = {(14, "sub", 8), (16, "sub", 32), (49, "clr", 32)}
_SIZED = (2, 45)                  # CC_OP_MULB .. CC_OP_BMILGQ
_ARITH = x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF
# capstone's eflags bits of an instruction that writes an arithmetic flag,
# and of one that reads one.
_WRITES_ARITH = _READS_ARITH = 0
for _name, _bit in vars(C).items():
    if _name.startswith("X86_EFLAGS_") and _name.endswith(("_CF", "_PF", "_AF", "_ZF", "_SF",
                                                             "_OF")):
        if _name.startswith("X86_EFLAGS_TEST_"):
            _READS_ARITH |= _bit
        else:
            _WRITES_ARITH |= _bit
# Shifts and rotates whose count may leave the flags alone (rcl and rcr
# always make them concrete).
_SHIFTS = frozenset(("shl", "sal", "shr", "sar", "rol", "ror", "shld", "shrd"))
_DETAIL = Cs(CS_ARCH_X86, CS_MODE_32)
_DETAIL.detail = True
# The flag-setting instructions whose operation the state area has calibrated
# (state_area._LAZY_PROBES), by mnemonic; capstone names the string forms by
# their size.
_KINDS = {"add": "add", "sub": "sub", "cmp": "sub", "neg": "sub", "and": "logic",
          "or": "logic", "xor": "logic", "test": "logic", "inc": "inc", "dec": "dec",
          "cmpsb": "sub", "cmpsw": "sub", "cmpsd": "sub", "scasb": "sub", "scasw": "sub",
          "scasd": "sub"}
_STRING_SIZE = {"cmpsb": 1, "cmpsw": 2, "cmpsd": 4, "scasb": 1, "scasw": 2, "scasd": 4}
# What the translator knows of the flags (LostFlags._walk): nothing (its
# CC_OP_DYNAMIC), that they are concrete (CC_OP_EFLAGS), or a cc_op number;
# and the flags are concrete after these.
_DYNAMIC, _CONCRETE, _ELSEWHERE = "dynamic", "concrete", "elsewhere"
_MAKE_CONCRETE = frozenset(("lahf", "sahf", "cmc", "clc", "stc", "popf", "popfd", "popfw",
                            "rcl", "rcr"))
_CONDITIONAL = frozenset(v for k, v in vars(C).items()
                         if k.startswith(("X86_INS_SET", "X86_INS_CMOV"))
                         and k != "X86_INS_SETSSBSY")


def lost_kind(raw):
    """"rotate" if the bytes `raw` begin with an rcl or rcr of memory, the
    jcc_op of a setcc into memory, or None."""
    op, modrm = opcode_of(raw)
    if modrm is None or modrm >= 0xC0:
        return None                                   # a register operand
    if len(op) == 1 and op[0] in _GROUP2 and (modrm >> 3) & 7 in (2, 3):
        return "rotate"
    if len(op) == 2 and op[1] & 0xF0 == 0x90:
        return (op[1] & 0xF) >> 1
    return None


@dataclass
class Site:
    kind: object      # lost_kind()
    known: object     # for a setcc, did the translator know the operation before
                      # it: True, False, or None (its blocks differ, or cannot be read)


class LostFlags:
    def __init__(self, machine):
        self.machine = machine
        self.sites = {}               # linear address -> Site
        lazy = set(machine.state.layout.flags.lazy)
        self._setcc = _CALIBRATED <= lazy          # QEMU's numbering, as this module knows it
        self._numbers = {(kind, bits): op for op, kind, bits in lazy}
        self._between = {}            # (prior, address) -> (code, what _known_after says)
        machine.intercepts.watch(_select, self._translated, ids=_IDS, hook=False)

    def _translated(self, address, kind):
        known = True if kind == "rotate" else self._known_at(address)
        site = self.sites.get(address)
        if site is None or site.kind != kind:
            self.sites[address] = Site(kind, known)
        elif site.known != known:
            site.known = None                 # two translations differ: cannot be told

    def _known_at(self, address):
        """Did the translator know the last flag-setting operation at
        `address`, in the block the intercepts are examining?  (Not at the
        block's start: _walk.)  None where that cannot be told."""
        code, pc = self.machine.intercepts.examined
        op = self._walk(bytes(code[:address - pc]), pc, _DYNAMIC)
        return None if op is _ELSEWHERE else op is not _DYNAMIC

    def faulted(self, vector, linear):
        """An exception `vector` with the CPU at `linear`, one of the sites
        (the machine asks before the back end sees the exception).  The page
        may hold other code by now: the bytes there decide."""
        if vector not in MEMORY_FAULTS:
            return
        st = self.machine.state
        if vector == x86.PF and 0 <= st.cr(2) - linear < MAX_INSN:
            return                            # the fetch of the instruction faulted, not its access
        site = self.sites[linear]
        if lost_kind(self._bytes_at(linear)) != site.kind:
            return
        if site.kind == "rotate" or self._setcc and self._computed(site, st):
            st.flags_made_concrete()

    def _computed(self, site, st):
        cc_op, cc_src, cc_dst = st.lazy_operation()
        if site.known is not None:
            return computed(site.kind, site.known, cc_op)
        answers = {computed(site.kind, known, cc_op) for known in (True, False)}
        if len(answers) == 1:
            return answers.pop()
        return holds_flags(cc_op, cc_src, cc_dst)

    # -- a second hook in one block (docs/unicorn.md, item 39) ------------------------
    def second_hook(self, prior, address):
        """An exit client's hook at `address` is about to act (emulate the
        instruction, read the flags, redirect the CPU), and the hooked
        instruction at `prior` ran before it with no exit between.  If both
        lie in one block, the library may have skipped writing the last
        flag-setting operation to the CPU before this hook, which then holds
        the one written in between (item 39).  The straight-line code from
        `prior` to here says what the translator knew: the state is told
        it, where it is one whose number the state area knows."""
        if not 0 < address - prior < 0x1000 or prior >> 12 != address >> 12:
            return
        try:
            code = self.machine.backend.live_view().read(prior, address - prior)
        except GuestMemoryFault:
            return
        key = (prior, address)
        known = self._between.get(key)
        if known is None or known[0] != code:
            known = self._between[key] = (code, self._known_after(code, prior))
        op = known[1]
        if op is not None:
            self.machine.state.set_lazy_operation(
                self.machine.state.layout.flags.cc_op_eflags if op is _CONCRETE else op)

    def _known_after(self, code, prior):
        """The operation the translator knows after `code`, running from the
        hooked instruction at `prior` (after which it holds the flags
        concrete); None if that is not one block (the library wrote cc_op
        at its end), or nothing this module can name."""
        op = self._walk(code, prior, _CONCRETE)
        return None if op is _DYNAMIC or op is _ELSEWHERE else op

    def _walk(self, code, pc, op):
        """What the translator knows after running `code` at `pc`, knowing
        `op` before it: _DYNAMIC (nothing: a block's start, or after a shift
        or rotate by CL, whose count may be 0 and leave the flags alone;
        QEMU's gen_shift_flags, "no longer predictable"), _CONCRETE, a
        cc_op number, or None for an operation this module cannot name;
        _ELSEWHERE if the bytes hold the end of a block, or capstone cannot
        decode them to their end."""
        end = pc
        for insn in _DETAIL.disasm(code, pc):
            if insn.id in BLOCK_END_IDS:
                return _ELSEWHERE
            op = self._after(insn, op)
            end = insn.address + insn.size
        return op if end == pc + len(code) else _ELSEWHERE

    def _after(self, insn, op):
        if insn.mnemonic in _MAKE_CONCRETE:
            return _CONCRETE
        if insn.id in _CONDITIONAL:           # setcc, cmovcc: computed for some conditions
            if op is _CONCRETE:
                return op
            jcc_op = (opcode_of(insn.bytes)[0][-1] & 0xF) >> 1
            # (an operation this module cannot name is none of those whose
            # number decides: not a subtraction, not adox, adcox, clr, popcnt)
            number = op if isinstance(op, int) else -1
            return _CONCRETE if computed(jcc_op, op is not _DYNAMIC, number) else op
        if insn.eflags & _WRITES_ARITH:
            count = _shift_count(insn)
            if count == "cl":
                return _DYNAMIC
            return op if count == 0 else self._operation(insn)
        return op

    def _operation(self, insn):
        """QEMU's cc_op number for the flags `insn` leaves, if the state
        area's calibration knows it (add, sub, logic, inc, dec and the
        xor that clears), else None."""
        kind = _KINDS.get(insn.mnemonic)
        if kind is None or insn.op_str.startswith("rep"):
            return None
        if insn.mnemonic == "xor":
            a, _, b = insn.op_str.partition(", ")
            if a == b:
                return self._numbers.get(("clr", 32))
        size = _STRING_SIZE.get(insn.mnemonic) or (insn.operands[0].size if insn.operands else 0)
        return self._numbers.get((kind, 8 * size))

    def _bytes_at(self, linear):
        view = self.machine.backend.live_view()
        try:
            return view.read(linear, MAX_INSN)
        except GuestMemoryFault:              # the instruction may end on its page
            try:
                return view.read(linear, 0x1000 - (linear & 0xFFF))
            except GuestMemoryFault:
                return b"\x90"


def computed(jcc_op, known, cc_op):
    """Did a setcc of condition `jcc_op` make the flags concrete, after an
    operation `cc_op` that the translator knew (`known`) or did not?"""
    if jcc_op == _B:
        return False
    if not known:
        return True
    if jcc_op in (_BE, _L, _LE):
        return cc_op not in _CC_OP["sub"]
    if jcc_op == _P:
        return True
    if jcc_op == _O:
        return cc_op not in (_CC_OP["adox"], _CC_OP["adcox"], _CC_OP["clr"], _CC_OP["popcnt"])
    return False                                      # Z and S


def holds_flags(cc_op, cc_src, cc_dst):
    """Could cc_src be the flags computed from the operation `cc_op` whose
    result is cc_dst?  (For QEMU's operations of a size: MUL to BMILG, four
    sizes each from 2, whose ZF, SF and PF all come from the result.)"""
    if cc_src & ~_ARITH:
        return False
    if cc_op == _CC_OP["clr"]:
        return cc_src == x86.ZF | x86.PF_FLAG
    if not _SIZED[0] <= cc_op <= _SIZED[1]:
        return True                           # nothing to tell them apart by
    bits = 8 << ((cc_op - _SIZED[0]) & 3)
    dst = cc_dst & ((1 << bits) - 1)
    expected = ((0 if dst else x86.ZF) | (x86.SF if dst >> (bits - 1) else 0)
                | (x86.PF_FLAG if bin(dst & 0xFF).count("1") % 2 == 0 else 0))
    return cc_src & (x86.ZF | x86.SF | x86.PF_FLAG) == expected


def _shift_count(insn):
    """A shift's or rotate's count: "cl", the immediate (masked to 5 bits, as
    the CPU does), or None for any other instruction."""
    if insn.mnemonic not in _SHIFTS:
        return None
    count = insn.op_str.rpartition(", ")[2]
    return "cl" if count == "cl" else int(count, 0) & 0x1F


def _select(insn, _cpl):
    return lost_kind(insn.bytes) if insn.id in _IDS else None
