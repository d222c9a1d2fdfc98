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

PRIVILEGED = {
    "cli", "sti", "hlt", "lgdt", "lidt", "lldt", "ltr", "lmsw", "clts", "invd", "wbinvd",
    "invlpg", "rdmsr", "wrmsr", "in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd",
    # `mov` to or from a control or debug register is privileged (below)
}
SENSITIVE_ALWAYS = {"popf", "popfd", "pushf", "pushfd", "sgdt", "sidt", "sldt", "smsw",
                    "str", "lar", "lsl", "verr", "verw"}
SEGMENT_REGS = ("cs", "ss", "ds", "es", "fs", "gs")


def sensitive_kind(insn):
    """The name a sensitive but unprivileged instruction is reported under,
    or None."""
    m = insn.mnemonic
    if m in SENSITIVE_ALWAYS:
        return m.rstrip("d") if m in ("popfd", "pushfd") else m
    if m == "push" and insn.op_str in ("cs", "ss"):
        return "push " + insn.op_str
    if m == "mov" and insn.op_str.split(",")[-1].strip() in SEGMENT_REGS:
        return "mov from segment register"
    return None


def privileged_kind(insn):
    """The name a privileged instruction is reported under, or None.  (I/O
    instructions are privileged only when CPL > IOPL; they are listed here
    because a guest kernel relies on them being so under a VMM.)"""
    m, ops = insn.mnemonic, insn.op_str
    if m in PRIVILEGED:
        return m
    if m == "mov" and ("cr" in ops or "dr" in ops):
        dst, src = (x.strip() for x in ops.split(",", 1))
        return f"mov to {dst}" if dst.startswith(("cr", "dr")) else f"mov from {src}"
    if m in ("iret", "iretd"):
        return None                   # privileged only in what it may load: innocuous here
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
