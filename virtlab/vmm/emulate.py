"""Emulating privileged instructions against the virtual CPU.

When the guest kernel executes a privileged instruction the CPU refuses (ring
compression) or the VMM intercepts it (VT-x style), the VMM decodes it with
capstone and performs its effect on the VirtualCpu and the guest's memory, then
resumes the guest after it.  One function per instruction family; each returns
the name it is counted under (`exit.priv.<name>`).
"""
import struct
from typing import Protocol, runtime_checkable

from capstone import x86_const as C

from virtlab import fastcall, x86
from virtlab.memory import LinearView

from . import rings
from .vcpu import VirtualCpu

_REG32 = {"eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"}
_REG16 = {"ax": "eax", "cx": "ecx", "dx": "edx", "bx": "ebx", "sp": "esp",
          "bp": "ebp", "si": "esi", "di": "edi"}
_REG8 = {"al": ("eax", 0), "cl": ("ecx", 0), "dl": ("edx", 0), "bl": ("ebx", 0),
         "ah": ("eax", 8), "ch": ("ecx", 8), "dh": ("edx", 8), "bh": ("ebx", 8)}


class Unsupported(Exception):
    """The VMM does not emulate this instruction; the run fails with a reason."""


class NotPrivileged(Exception):
    """The #GP did not come from a privileged instruction: it is the guest's."""


# -- operands ----------------------------------------------------------------
def reg_read(state, name):
    if name in _REG32:
        return state.reg(name)
    if name in _REG16:
        return state.reg(_REG16[name]) & 0xFFFF
    if name in _REG8:
        full, shift = _REG8[name]
        return (state.reg(full) >> shift) & 0xFF
    raise Unsupported(f"register {name}")


def reg_write(state, name, value):
    if name in _REG32:
        state.set_reg(name, value)
    elif name in _REG16:
        full = _REG16[name]
        state.set_reg(full, (state.reg(full) & 0xFFFF0000) | (value & 0xFFFF))
    elif name in _REG8:
        full, shift = _REG8[name]
        state.set_reg(full, (state.reg(full) & ~(0xFF << shift)) | ((value & 0xFF) << shift))
    else:
        raise Unsupported(f"register {name}")


def effective_address(insn, op, state):
    """Linear address of a memory operand (flat segments: the segment base is
    added, as the CPU would)."""
    m = op.mem
    ea = m.disp
    if m.base:
        ea += reg_read(state, insn.reg_name(m.base))
    if m.index:
        ea += reg_read(state, insn.reg_name(m.index)) * m.scale
    if m.segment:
        seg = insn.reg_name(m.segment)
    elif m.base in (C.X86_REG_ESP, C.X86_REG_EBP):
        seg = "ss"
    else:
        seg = "ds"
    return (state.seg_base_of(seg) + ea) & 0xFFFFFFFF


def operand_value(insn, op, state, view):
    if op.type == C.X86_OP_REG:
        return reg_read(state, insn.reg_name(op.reg))
    if op.type == C.X86_OP_IMM:
        return op.imm & ((1 << (8 * op.size)) - 1)
    ea = effective_address(insn, op, state)
    return int.from_bytes(view.read(ea, op.size), "little")


def control_register(insn, op):
    name = insn.reg_name(op.reg)
    if not name.startswith("cr"):
        raise NotPrivileged()
    return int(name[2:])


# -- the emulator ------------------------------------------------------------
class ControlHost(Protocol):
    """What the emulator needs from any VMM that intercepts control-register
    work (hw and hw-npt intercept only this): the vCPU, and the effect of a CR
    access or an INVLPG, which depends on how the VMM virtualizes paging."""
    vcpu: VirtualCpu
    machine: object

    def read_cr(self, n: int) -> int: ...
    def write_cr(self, n: int, value: int) -> None: ...
    def invlpg(self, linear: int) -> None: ...


@runtime_checkable
class KernelHost(ControlHost, Protocol):
    """A VMM under which the guest kernel does not own the real CPU at all
    (ring compression: trap, bt), so that every privileged instruction reaches
    it: halting, the descriptor-table registers, loads of SS, and returns into
    the kernel whose frames name ring 0."""

    def halt(self) -> None: ...
    def load_table(self, which: str, base: int, limit: int) -> None: ...
    def load_tr(self, selector: int) -> None: ...
    def load_ss(self, selector: int) -> None: ...
    def emulate_return(self, far_iret: bool, extra: int = 0) -> None: ...


class Emulator:
    """The privileged-instruction emulator of one back end.  The host supplies
    the effects that differ by technique: what a CR3 load or INVLPG does to the
    MMU, what the real GDTR becomes, how HLT waits.  A ControlHost gets only
    the control-register families; a KernelHost gets them all.  An instruction
    outside the host's families is NotPrivileged: not this VMM's business."""

    def __init__(self, host):
        self.be = host
        self.handlers = dict(_CONTROL)
        if isinstance(host, KernelHost):
            self.handlers.update(_KERNEL)

    def view(self):
        return LinearView(self.be.machine.mem, *self.be.vcpu.paging_regs())

    def emulate(self, decoded):
        """Perform the instruction and advance EIP; returns its counter name."""
        insn = decoded.insn
        handler = self.handlers.get(insn.mnemonic)
        if handler is None:
            raise NotPrivileged()
        state = self.be.machine.state
        next_eip = state.eip + decoded.size
        name = handler(self, insn, state)
        if name not in ("iret", "retf", "hlt", "sysexit"):
            state.eip = next_eip
        elif name == "hlt":
            state.eip = next_eip
            self.be.halt()
        return name

    # Each handler: (self, insn, state) -> counter name.
    def _cli(self, insn, state):
        self.be.vcpu.if_ = False
        return "cli"

    def _sti(self, insn, state):
        self.be.vcpu.if_ = True
        return "sti"

    def _hlt(self, insn, state):
        return "hlt"

    def _mov(self, insn, state):
        dst, src = insn.operands
        if dst.type == C.X86_OP_REG and insn.reg_name(dst.reg).startswith("cr"):
            n = control_register(insn, dst)
            self.be.write_cr(n, reg_read(state, insn.reg_name(src.reg)))
            return f"mov_cr{n}"
        if src.type == C.X86_OP_REG and insn.reg_name(src.reg).startswith("cr"):
            n = control_register(insn, src)
            reg_write(state, insn.reg_name(dst.reg), self.be.read_cr(n))
            return f"read_cr{n}"
        if (dst.type == C.X86_OP_REG and insn.reg_name(dst.reg) == "ss"
                and isinstance(self.be, KernelHost)):
            self.be.load_ss(operand_value(insn, src, state, self.view()) & 0xFFFF)
            return "mov_ss"
        raise NotPrivileged()

    def _table_load(self, insn, state):
        ea = effective_address(insn, insn.operands[0], state)
        limit, base = struct.unpack("<HI", self.view().read(ea, 6))
        which = insn.mnemonic[1:4]                  # gdt or idt
        self.be.load_table(which, base, limit)
        return insn.mnemonic

    def _ltr(self, insn, state):
        sel = operand_value(insn, insn.operands[0], state, self.view()) & 0xFFFF
        self.be.load_tr(sel)
        return "ltr"

    def _lldt(self, insn, state):
        self.be.vcpu.ldtr = operand_value(insn, insn.operands[0], state, self.view()) & 0xFFFF
        return "lldt"

    def _invlpg(self, insn, state):
        self.be.invlpg(effective_address(insn, insn.operands[0], state))
        return "invlpg"

    def _clts(self, insn, state):
        self.be.vcpu.cr0 &= ~x86.CR0_TS
        return "clts"

    def _cache(self, insn, state):
        return insn.mnemonic                        # wbinvd/invd: nothing to do

    def _rdmsr(self, insn, state):
        value = self.be.vcpu.msrs.get(state.reg("ecx"), 0)
        state.set_reg("eax", value & 0xFFFFFFFF)
        state.set_reg("edx", value >> 32)
        return "rdmsr"

    def _wrmsr(self, insn, state):
        self.be.vcpu.msrs[state.reg("ecx")] = state.reg("edx") << 32 | state.reg("eax")
        return "wrmsr"

    def _iret(self, insn, state):
        self.be.emulate_return(far_iret=True)
        return "iret"

    def _retf(self, insn, state):
        extra = insn.operands[0].imm if insn.operands else 0
        self.be.emulate_return(far_iret=False, extra=extra)
        return "retf"

    def _sysexit(self, insn, state):
        """SYSEXIT in the guest kernel, which #GPs at real ring 1 (CPL != 0):
        to the guest's ring 3 with the flat segments IA32_SYSENTER_CS names
        (its wrmsr was emulated into the vCPU).  A null SYSENTER_CS is #GP(0),
        the guest's own."""
        cs = self.be.vcpu.msrs.get(fastcall.SYSENTER_CS, 0) & 0xFFFF
        if cs & 0xFFFC == 0:
            raise NotPrivileged()
        fastcall.exit_to_user(state, rings.segment_cache, cs)
        return "sysexit"

    def _smsw(self, insn, state):
        """SMSW: the machine status word (CR0's low bits).  Not privileged, so
        only a VMM that intercepts it (a VT-x read shadow) comes here."""
        op = insn.operands[0]
        cr0 = self.be.read_cr(0)
        if op.type == C.X86_OP_REG:
            reg_write(state, insn.reg_name(op.reg), cr0 & ((1 << (8 * op.size)) - 1))
        else:
            self.view().write(effective_address(insn, op, state), (cr0 & 0xFFFF).to_bytes(2, "little"))
        return "smsw"


# The families: control-register work that a VT-x VMM intercepts ...
_CONTROL = {
    "mov": Emulator._mov, "invlpg": Emulator._invlpg, "clts": Emulator._clts,
    "rdmsr": Emulator._rdmsr, "wrmsr": Emulator._wrmsr, "smsw": Emulator._smsw,
    "wbinvd": Emulator._cache, "invd": Emulator._cache,
}
# ... and what only reaches a VMM whose guest kernel runs deprivileged.
_KERNEL = {
    "cli": Emulator._cli, "sti": Emulator._sti, "hlt": Emulator._hlt,
    "lgdt": Emulator._table_load, "lidt": Emulator._table_load,
    "ltr": Emulator._ltr, "lldt": Emulator._lldt,
    "iretd": Emulator._iret, "iret": Emulator._iret,
    "retf": Emulator._retf, "lret": Emulator._retf,
    "sysexit": Emulator._sysexit,
}


# -- writes to traced page tables ---------------------------------------------
_ARITH = {"and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b}


def emulate_store(decoded, state, mem, gpa):
    """Perform the guest's store to a write-protected page-table entry at
    guest-physical `gpa` and advance EIP.  Returns the number of bytes written.
    Plain stores (mov, xchg) and the logical read-modify-writes a kernel uses on
    entries (and, or, xor: flags set as the CPU would) are emulated."""
    insn = decoded.insn
    ops = insn.operands
    if not ops or ops[0].type != C.X86_OP_MEM:
        raise Unsupported(f"store to a page table by '{decoded.text()}'")
    size = ops[0].size
    old = int.from_bytes(mem.view[gpa:gpa + size], "little")
    mask = (1 << (8 * size)) - 1
    if insn.mnemonic == "mov":
        new = operand_value(insn, ops[1], state, None)
    elif insn.mnemonic == "xchg":
        new = operand_value(insn, ops[1], state, None)
        reg_write(state, insn.reg_name(ops[1].reg), old)
    elif insn.mnemonic in _ARITH:
        new = _ARITH[insn.mnemonic](old, operand_value(insn, ops[1], state, None)) & mask
        _logic_flags(state, new, size)
    else:
        raise Unsupported(f"store to a page table by '{decoded.text()}'")
    mem.view[gpa:gpa + size] = (new & mask).to_bytes(size, "little")
    state.eip = state.eip + decoded.size
    return size


def _logic_flags(state, result, size):
    """and/or/xor: CF = OF = 0; ZF, SF, PF from the result (AF undefined: 0)."""
    flags = state.eflags() & ~(x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF)
    if result == 0:
        flags |= x86.ZF
    if result >> (8 * size - 1) & 1:
        flags |= x86.SF
    if bin(result & 0xFF).count("1") % 2 == 0:
        flags |= x86.PF_FLAG
    state.set_eflags(flags)
