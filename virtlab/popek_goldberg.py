"""Popek and Goldberg's classification of IA-32 instructions.

Popek and Goldberg (1974): an instruction is *privileged* if it traps when run
outside the most privileged mode, and *sensitive* if it reads or changes the
machine's privileged state (control-sensitive) or behaves differently depending
on it (behaviour-sensitive).  A machine is classically virtualizable, by trap
and emulate, if every sensitive instruction is privileged.  IA-32 is not: the
instructions in SENSITIVE_UNPRIVILEGED are sensitive but do not trap at ring 1
or 3 (Robin and Irvine, USENIX Security 2000, list them).  Everything else is
innocuous.
"""
from .decode import opcode

PRIVILEGED = {
    "cli", "sti", "hlt", "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts", "invd", "wbinvd",
    "invlpg", "rdmsr", "wrmsr", "in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd",
    # `mov` to or from a control or debug register is privileged (below)
}
SENSITIVE_ALWAYS = {"popf", "popfd", "pushf", "pushfd", "sgdt", "sidt", "sldt", "smsw",
                    "str", "lar", "lsl", "verr", "verw"}
SEGMENT_REGS = ("cs", "ss", "ds", "es", "fs", "gs")


# Decided by opcode (decode.opcode: the raw bytes without prefixes), so
# that no operand text is parsed: 8C is `mov r/m16, Sreg`; 0E and 16 are
# `push cs` and `push ss`; 0F 20-23 move to and from control and debug
# registers, the register number in ModRM.reg.
_MOV_FROM_SREG = 0x8C
_PUSH_SREG = {0x0E: "push cs", 0x16: "push ss"}
_CRDR_MOVES = {0x20: "mov from cr", 0x22: "mov to cr", 0x21: "mov from dr", 0x23: "mov to dr"}


def sensitive_kind(insn):
    """The name a sensitive but unprivileged instruction is reported under,
    or None."""
    m = insn.mnemonic
    if m in SENSITIVE_ALWAYS:
        return m.rstrip("d") if m in ("popfd", "pushfd") else m
    if m == "mov":
        return "mov from segment register" if opcode(insn)[0][0] == _MOV_FROM_SREG else None
    return _PUSH_SREG.get(opcode(insn)[0][0]) if m == "push" else None


def privileged_kind(insn):
    """The name a privileged instruction is reported under, or None.  (I/O
    instructions are privileged only when CPL > IOPL; they are listed here
    because a guest kernel relies on them being so under a VMM.  iret is
    privileged only in what it may load: innocuous here.)"""
    m = insn.mnemonic
    if m in PRIVILEGED:
        return m
    if m != "mov":
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
