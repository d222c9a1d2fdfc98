"""Popek and Goldberg's classification of IA-32 instructions.

Popek and Goldberg (1974): an instruction is *privileged* if it traps when run
outside the most privileged mode, and *sensitive* if it reads or changes the
machine's privileged state (control-sensitive) or behaves differently depending
on it (behaviour-sensitive).  A machine is classically virtualizable, by trap
and emulate, if every sensitive instruction is privileged.  IA-32 is not: the
instructions sensitive_kind names are sensitive but do not trap at ring 1
or 3 (Robin and Irvine, USENIX Security 2000, list them).  Everything else is
innocuous.
"""
from capstone import x86_const as C

from .decode import opcode, prefixes_of

# By capstone instruction id, not mnemonic: capstone names a prefixed string
# instruction "rep outsb", and the prefix does not make it any less privileged.
PRIVILEGED = {
    C.X86_INS_CLI: "cli", C.X86_INS_STI: "sti", C.X86_INS_HLT: "hlt",
    C.X86_INS_LGDT: "lgdt", C.X86_INS_LIDT: "lidt", C.X86_INS_LLDT: "lldt",
    C.X86_INS_LTR: "ltr", C.X86_INS_LMSW: "lmsw", C.X86_INS_CLTS: "clts",
    C.X86_INS_INVD: "invd", C.X86_INS_WBINVD: "wbinvd", C.X86_INS_INVLPG: "invlpg",
    C.X86_INS_RDMSR: "rdmsr", C.X86_INS_WRMSR: "wrmsr",
    C.X86_INS_IN: "in", C.X86_INS_OUT: "out", C.X86_INS_INSB: "insb", C.X86_INS_INSW: "insw",
    C.X86_INS_INSD: "insd", C.X86_INS_OUTSB: "outsb", C.X86_INS_OUTSW: "outsw",
    C.X86_INS_OUTSD: "outsd",
    # `mov` to or from a control or debug register is privileged (below)
}
PORT_IDS = frozenset((C.X86_INS_IN, C.X86_INS_OUT, C.X86_INS_INSB, C.X86_INS_INSW,
                      C.X86_INS_INSD, C.X86_INS_OUTSB, C.X86_INS_OUTSW, C.X86_INS_OUTSD))
STRING_PORT_IDS = PORT_IDS - {C.X86_INS_IN, C.X86_INS_OUT}
SENSITIVE_ALWAYS = {
    C.X86_INS_POPF: "popf", C.X86_INS_POPFD: "popf", C.X86_INS_PUSHF: "pushf",
    C.X86_INS_PUSHFD: "pushf", C.X86_INS_SGDT: "sgdt", C.X86_INS_SIDT: "sidt",
    C.X86_INS_SLDT: "sldt", C.X86_INS_SMSW: "smsw", C.X86_INS_STR: "str",
    C.X86_INS_LAR: "lar", C.X86_INS_LSL: "lsl", C.X86_INS_VERR: "verr", C.X86_INS_VERW: "verw",
}
SEGMENT_REGS = ("cs", "ss", "ds", "es", "fs", "gs")


# Decided by opcode (decode.opcode: the raw bytes without prefixes), so
# that no operand text is parsed: 8C is `mov r/m16, Sreg`; 0E and 16 are
# `push cs` and `push ss`; 0F 20-23 move to and from control and debug
# registers, the register number in ModRM.reg.
_MOV_FROM_SREG = 0x8C
_PUSH_SREG = {0x0E: "push cs", 0x16: "push ss"}
_CRDR_MOVES = {0x20: "mov from cr", 0x22: "mov to cr", 0x21: "mov from dr", 0x23: "mov to dr"}

# Every instruction id for which sensitive_kind or privileged_kind may answer:
# what an intercept client that classifies needs to be shown (intercept.watch).
SENSITIVE_IDS = frozenset(SENSITIVE_ALWAYS) | {C.X86_INS_MOV, C.X86_INS_PUSH}
CLASSIFIED_IDS = SENSITIVE_IDS | frozenset(PRIVILEGED)


def sensitive_kind(insn):
    """The name a sensitive but unprivileged instruction is reported under,
    or None."""
    iid = insn.id
    name = SENSITIVE_ALWAYS.get(iid)
    if name is not None:
        return name
    if iid == C.X86_INS_MOV:
        return "mov from segment register" if opcode(insn)[0][0] == _MOV_FROM_SREG else None
    return _PUSH_SREG.get(opcode(insn)[0][0]) if iid == C.X86_INS_PUSH else None


def privileged_kind(insn):
    """The name a privileged instruction is reported under, or None.  (I/O
    instructions are privileged only when CPL > IOPL; they are listed here
    because a guest kernel relies on them being so under a VMM.  iret is
    privileged only in what it may load: innocuous here.)"""
    iid = insn.id
    name = PRIVILEGED.get(iid)
    if name is not None:
        return name
    if iid != C.X86_INS_MOV:
        return None
    op, modrm = opcode(insn)
    if len(op) == 2 and op[1] in _CRDR_MOVES:
        return f"{_CRDR_MOVES[op[1]]}{(modrm >> 3) & 7}"
    return None


def classify(insn):
    """('privileged' | 'sensitive, unprivileged' | None, name)."""
    k = privileged_kind(insn)
    if k:
        return "privileged", k
    k = sensitive_kind(insn)
    if k:
        return "sensitive, unprivileged", k
    return None, None


# [A rep-prefixed ins or outs is one instruction that makes (E)CX port
# accesses, each of which a VMM must handle.  The CPU model enters it once
# per access and once more to find the count zero, so a hook before it runs
# (E)CX + 1 times: an observer that counts accesses reads the count first.]
def repeat_count_mask(insn):
    """For a rep-prefixed ins or outs, the mask of its count register: CX
    with an address-size prefix (in 32-bit code), ECX otherwise.  0 for any
    other instruction."""
    if insn.id not in STRING_PORT_IDS:
        return 0
    prefixes = prefixes_of(insn.bytes)
    if 0xF2 not in prefixes and 0xF3 not in prefixes:
        return 0
    return 0xFFFF if 0x67 in prefixes else 0xFFFFFFFF
