"""The rewritten sequences: short x86 programs that stand in for one guest
instruction inside the translation cache, assembled once by keystone.

A keystone call costs tens of microseconds (docs/unicorn.md, item 15), far
more than translating an instruction should, so each sequence is assembled
once, when the module is first used, with placeholder values where its
operands go; translation copies the bytes and patches the operands in.

The sequences must be invisible to the guest.  Three rules make them so:

  - EFLAGS.  Guest code between two instructions may depend on any flag, so a
    sequence either leaves the flags alone (mov, lea, movzx and jecxz do not
    touch them) or saves them first with pushfd and restores them with popfd.
    At ring 1 with IOPL 0, popfd leaves IF and IOPL alone (the real IF stays
    set; the VMM never lets the guest mask real interrupts).
  - Registers.  A sequence that needs a register parks the guest's value in a
    scratch slot of the vCPU page and puts it back before the guest's next
    instruction, and before every callout: at a callout all registers hold
    guest values.
  - Faults.  Only accesses to guest memory can fault.  Each sequence makes its
    guest accesses before it changes anything the guest can see, and names,
    for each instruction that may fault, the registers it has parked
    (`restore`), so that the VMM can present the fault at the guest
    instruction with the guest's registers (precise exceptions).
"""
import struct
from dataclasses import dataclass

from capstone import Cs, CS_ARCH_X86, CS_MODE_32
from virtlab.assembler import engine

from . import layout as L

_PLACEHOLDERS = {"imm": 0x5A5A5A01, "ret": 0x5A5A5A02}


@dataclass(frozen=True)
class Template:
    name: str
    code: bytes
    slots: dict          # placeholder -> byte offsets of its 32-bit values
    faults: dict         # offset of an instruction that may fault -> parked registers
    callouts: tuple      # offsets just past each `int CALLOUT` (where the CPU stops)

    def emit(self, **values):
        out = bytearray(self.code)
        for name, value in values.items():
            for at in self.slots[name]:
                struct.pack_into("<I", out, at, value & 0xFFFFFFFF)
        return bytes(out)


def _assemble(name, text, faults=()):
    """Assemble `text` ({NAME} fields from layout and the placeholders), and
    find the placeholders, the fault points (by instruction index) and the
    callouts in the result."""
    fields = {k: v for k, v in vars(L).items() if k.isupper() and isinstance(v, int)}
    fields.update({k: hex(v) for k, v in _PLACEHOLDERS.items()})
    for slot in ("V_IF", "V_IOPL", "PEND", "S_EAX", "S_ECX", "S_TARGET", "S_JMP"):
        fields["@" + slot] = hex(L.data(getattr(L, slot)))
    for event in L.IN_TC_EVENTS:
        fields["#" + event.split(".")[-1]] = hex(L.data(L.count_slot(event)))
    src = text
    for key in sorted(fields, key=len, reverse=True):
        src = src.replace("{" + key + "}", str(fields[key]))
    encoding, _ = engine().asm(src, 0)
    code = bytes(encoding)
    slots = {}
    for key, value in _PLACEHOLDERS.items():
        mark, at = struct.pack("<I", value), code.find(struct.pack("<I", value))
        while at >= 0:                  # every use of it (profile: a load and a store)
            slots.setdefault(key, []).append(at)
            at = code.find(mark, at + 4)
    insns = list(Cs(CS_ARCH_X86, CS_MODE_32).disasm(code, 0))
    fault_at = {insns[i].address: tuple(regs) for i, regs in faults}
    callouts = tuple(i.address + i.size for i in insns
                     if i.mnemonic == "int" and i.op_str == hex(L.CALLOUT_VECTOR))
    return Template(name, code, slots, fault_at, callouts)


def _count(event, reg="eax"):
    """Count an in-TC event with `reg` (already parked), leaving EFLAGS alone."""
    return (f"mov {reg}, dword ptr [{{#{event}}}]; lea {reg}, [{reg} + 1]; "
            f"mov dword ptr [{{#{event}}}], {reg};")


# [tour bt 70] The rewritten sequences, assembled once by keystone.
# keystone costs tens of microseconds a call, so each sequence is assembled once, when
# first needed, with placeholders where its operands go.  cli is a store to the
# virtual IF; sti and popf test for a waiting interrupt inline and call out only then.
# cli: the virtual IF is a word in the vCPU page.  No exit.
CLI = ("cli", "mov dword ptr [{@V_IF}], 0; mov dword ptr [{@S_EAX}], eax;"
       + _count("cli") + "mov eax, dword ptr [{@S_EAX}]", ())

# sti: set the virtual IF, then call out only if an interrupt is waiting (the
# VMM sets PEND when it leaves one pending behind a masked guest).
STI = ("sti", "mov dword ptr [{@V_IF}], 0x200; mov dword ptr [{@S_EAX}], eax;"
       + _count("sti") + "mov eax, dword ptr [{@S_EAX}];"
       "mov dword ptr [{@S_ECX}], ecx; mov ecx, dword ptr [{@PEND}]; jecxz quiet;"
       "mov ecx, dword ptr [{@S_ECX}]; int {CALLOUT_VECTOR};"
       "quiet: mov ecx, dword ptr [{@S_ECX}]", ())

# pushfd: push the real flags, then replace IF and IOPL in the pushed word by
# the virtual ones.  The arithmetic clobbers EFLAGS; popfd of the word that was
# pushed restores them before the guest's value takes its place.
PUSHF = ("pushf", "pushfd; mov dword ptr [{@S_EAX}], eax; mov eax, dword ptr [esp];"
         "and eax, 0xffffcdff; or eax, dword ptr [{@V_IF}]; or eax, dword ptr [{@V_IOPL}];"
         "popfd; push eax;" + _count("pushf") + "mov eax, dword ptr [{@S_EAX}]",
         [(0, ())])

# popfd: IF and IOPL of the popped word go to the vCPU page; the rest is
# loaded by a real popfd (which, at ring 1, ignores IF and IOPL).  If the guest
# enabled interrupts with one waiting, call out after it.
POPF = ("popf", "mov dword ptr [{@S_EAX}], eax; mov eax, dword ptr [esp];"
        "and eax, 0x200; mov dword ptr [{@V_IF}], eax;"
        "mov eax, dword ptr [esp]; and eax, 0x3000; mov dword ptr [{@V_IOPL}], eax;"
        + _count("popf") +
        "mov eax, dword ptr [{@V_IF}]; and eax, dword ptr [{@PEND}];"
        "mov eax, dword ptr [{@S_EAX}]; jnz pending; popfd; jmp done;"
        "pending: popfd; int {CALLOUT_VECTOR}; done: nop", [(1, ())])

# The indirect-branch lookup, after a prologue has put the guest target in
# EAX (guest EAX and ECX parked).  A hit jumps to the translation through the
# S_JMP slot without leaving the TC; a miss restores both registers and
# calls out, with the target in S_TARGET.
LOOKUP = ("lookup", "mov dword ptr [{@S_TARGET}], eax; movzx ecx, ax;"
          "mov ecx, dword ptr [{TABLE} + ecx*8]; lea ecx, [ecx + eax]; jecxz hit;"
          "mov ecx, dword ptr [{@S_ECX}]; mov eax, dword ptr [{@S_EAX}]; int {CALLOUT_VECTOR};"
          "hit:" + _count("hit", "ecx") +
          "movzx ecx, ax; mov ecx, dword ptr [{TABLE} + ecx*8 + 4];"
          "mov dword ptr [{@S_JMP}], ecx; mov ecx, dword ptr [{@S_ECX}];"
          "mov eax, dword ptr [{@S_EAX}]; jmp dword ptr [{@S_JMP}]", ())

# Prologues of the lookup.  ret [imm16]: pop the guest return address.
RET = ("ret", "mov dword ptr [{@S_ECX}], ecx; mov dword ptr [{@S_EAX}], eax;"
       "mov eax, dword ptr [esp]; lea esp, [esp + {imm}]", [(2, ())])
# The parking before an indirect jmp or call; the load of its operand follows
# (the guest's own ModRM bytes, re-encoded as `mov eax, r/m32`).
PARK = ("park", "mov dword ptr [{@S_ECX}], ecx; mov dword ptr [{@S_EAX}], eax", ())
# An indirect call pushes the guest's return address once the target is known.
PUSH_RET = ("push_ret", "push {ret}", [(0, ("eax",))])

# The counter of `mov r, cs` / `mov r, ss` done in the TC (movseg below).
COUNT_MOVSEG = ("count_movseg", "mov dword ptr [{@S_EAX}], eax;" + _count("movseg")
                + "mov eax, dword ptr [{@S_EAX}]", ())

# A counter of unit executions, for `virtlab translate` (profiling runs only).
PROFILE = ("profile", "mov dword ptr [{@S_EAX}], eax; mov eax, dword ptr [{imm}];"
           "lea eax, [eax + 1]; mov dword ptr [{imm}], eax; mov eax, dword ptr [{@S_EAX}]", ())

_TEXTS = {t[0]: t for t in (CLI, STI, PUSHF, POPF, LOOKUP, RET, PARK, PUSH_RET, PROFILE,
                            COUNT_MOVSEG)}
_BUILT = {}


def get(name):
    t = _BUILT.get(name)
    if t is None:
        _, text, faults = _TEXTS[name]
        t = _BUILT[name] = _assemble(name, text, faults)
    return t


# Encodings built by hand: they are one opcode and a 32-bit operand.
def jmp_rel32(at, target):
    return b"\xe9" + struct.pack("<i", target - (at + 5))


def push_imm32(value):
    return b"\x68" + struct.pack("<I", value & 0xFFFFFFFF)


def movseg(insn_bytes, reg, wide):
    """`mov r, cs` or `mov r, ss` in the guest kernel: in the TC the CPL is
    always 1, so the real selector's RPL is 1 where the guest's is 0; the
    guest's value is the real one less one, which `lea r, [r - 1]` computes
    without touching EFLAGS (16-bit with the operand-size prefix, as the
    guest's own move, so that the upper half of the register is kept)."""
    lea = bytes((0x8D, 0x40 | reg << 3 | reg, 0xFF))
    return bytes(insn_bytes) + (lea if wide else b"\x66" + lea)


def callout():
    return bytes((0xCD, L.CALLOUT_VECTOR))


STUB_SIZE = 5


def exit_stub():
    """An unchained exit: a callout, padded to the size of the `jmp rel32`
    that chaining writes over it."""
    return callout() + b"\x90" * (STUB_SIZE - 2)
