"""Emulating privileged instructions against the virtual CPU.

When the guest kernel executes a privileged instruction the CPU refuses (ring
compression) or the VMM intercepts it (VT-x style), the VMM decodes it with
capstone and performs its effect on the VirtualCpu and the guest's memory, then
resumes the guest after it.  A binary translator also sends here the sensitive
instructions that do *not* fault at ring 1 (sgdt, push cs, lar, ...), which
would otherwise show the guest the real CPU.  One function per instruction
family; each returns the name it is counted under (`exit.priv.<name>`).
"""
import struct
from typing import Protocol, runtime_checkable

from capstone import x86_const as C

from virtlab import fastcall, x86
from virtlab.counters import Named
from virtlab.decode import opcode
from virtlab.delivery import DeliveryFault, read_descriptor
from virtlab.memory import LinearView
from virtlab.scratch_cpu import scratch

from . import loads, rings
from .reflect import user_flags
from .vcpu import VirtualCpu

_REG32 = {"eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"}
_REG16 = {"ax": "eax", "cx": "ecx", "dx": "edx", "bx": "ebx", "sp": "esp",
          "bp": "ebp", "si": "esi", "di": "edi"}
_REG8 = {"al": ("eax", 0), "cl": ("ecx", 0), "dl": ("edx", 0), "bl": ("ebx", 0),
         "ah": ("eax", 8), "ch": ("ecx", 8), "dh": ("edx", 8), "bh": ("ebx", 8)}
_REG16_OF = {full: part for part, full in _REG16.items()}
_SREGS = {"cs", "ss", "ds", "es", "fs", "gs"}


# The counter of each emulated instruction: PRIV_COUNTERS["cli"] is "exit.priv.cli".
PRIV_COUNTERS = Named("exit.priv.")


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


_NOT_YET = object()

# The control registers IA-32 has; a move with any other (CR1, CR5 to CR7)
# is #UD, the guest's own, like a move with DR4 or DR5 while CR4.DE is set.
_CONTROL_REGISTERS = frozenset((0, 2, 3, 4))

# mov to or from a debug register: 0F 23 /r (to) and 0F 21 /r (from), DRn in
# ModRM.reg.  DR4 and DR5 are DR6 and DR7 while CR4.DE is clear.
_DR_MOVES = {b"\x0f\x21": False, b"\x0f\x23": True}
_DR_ALIAS = {4: 6, 5: 7}


def _cr_move(insn):
    """(to_cr, n, general register, counter name) if `insn` moves to or from
    CRn, else None.  Worked out from capstone's operands (each of which
    costs a conversion from C to read) once per decoded instruction: an
    instruction that exits once usually exits again (decode.Insn.memo)."""
    memo = getattr(insn, "memo", None)
    plan = _NOT_YET if memo is None else memo.get("cr_move", _NOT_YET)
    if plan is _NOT_YET:
        plan = None
        dst, src = insn.operands
        if dst.type == C.X86_OP_REG and insn.reg_name(dst.reg).startswith("cr"):
            n = control_register(insn, dst)
            plan = (True, n, insn.reg_name(src.reg), f"mov_cr{n}")
        elif src.type == C.X86_OP_REG and insn.reg_name(src.reg).startswith("cr"):
            n = control_register(insn, src)
            plan = (False, n, insn.reg_name(dst.reg), f"read_cr{n}")
        if plan is not None and plan[1] not in _CONTROL_REGISTERS:
            # (Raised before the plan is kept, so that a kept plan needs no
            # check on the exit path.)
            raise DeliveryFault(x86.UD, None, f"mov with cr{plan[1]}, which does not exist")
        if memo is not None:
            memo["cr_move"] = plan
    return plan


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
    def guest_msr(self, index: int) -> int: ...


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
    the control-register families; a KernelHost gets them all.  A host whose
    class sets `emulate_sensitive` (one that sees the guest's sensitive but
    unprivileged instructions, by translating them) also gets _SENSITIVE.  An
    instruction outside the host's families is NotPrivileged: not this VMM's
    business."""

    def __init__(self, host):
        self.be = host
        self.handlers = dict(_CONTROL)
        if isinstance(host, KernelHost):
            self.handlers.update(_KERNEL)
        self.sensitive = bool(getattr(host, "emulate_sensitive", False))
        if self.sensitive:
            self.handlers.update(_SENSITIVE)

    def view(self):
        return LinearView(self.be.machine.mem, *self.be.vcpu.paging_regs(),
                          on_write=getattr(self.be, "on_guest_write", None))

    # [tour trap 70, hw 60, hw-npt 50, bt 95] The emulator: one handler per instruction.
    # Each handler performs the instruction's effect on the virtual CPU (vcpu.py) or
    # through its host, the back end (a CR3 load switches shadows, lgdt rebuilds the
    # shadow GDT), then EIP moves past it. trap and hw reach it by an exit, bt by a
    # callout.
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
        # A control-register move is the commonest exit of a VT-x guest: its
        # plan is taken from the instruction's memo here (_cr_move's first
        # step, inline), and the general register, always a 32-bit one for
        # CRn, is read or written directly (reg_read/reg_write's first case).
        memo = getattr(insn, "memo", None)
        plan = _NOT_YET if memo is None else memo.get("cr_move", _NOT_YET)
        if plan is _NOT_YET:
            plan = _cr_move(insn)
        if plan is not None:
            to_cr, n, reg, name = plan
            if to_cr:
                self.be.write_cr(n, state.reg(reg) if reg in _REG32 else reg_read(state, reg))
            elif reg in _REG32:
                state.set_reg(reg, self.be.read_cr(n))
            else:
                reg_write(state, reg, self.be.read_cr(n))
            return name
        op, modrm = opcode(insn)
        if op in _DR_MOVES and isinstance(self.be, KernelHost):
            return self._dr_move(insn, _DR_MOVES[op], (modrm >> 3) & 7, state)
        dst, src = insn.operands
        if (dst.type == C.X86_OP_REG and insn.reg_name(dst.reg) == "ss"
                and isinstance(self.be, KernelHost)):
            self.be.load_ss(operand_value(insn, src, state, self.view()) & 0xFFFF)
            return "mov_ss"
        if (self.sensitive and src.type == C.X86_OP_REG
                and insn.reg_name(src.reg) in _SREGS):
            # mov r/m, Sreg: the selector as the guest loaded it (not RPL 1).
            sel = rings.guest_selector(state.seg_selector(insn.reg_name(src.reg)))
            self._store_selector(insn, dst, state, sel)
            return "mov_from_seg"
        raise NotPrivileged()

    def _dr_move(self, insn, to_dr, n, state):
        """A debug-register move in the deprivileged kernel: on the real
        register (machine services), so that its breakpoints fire on guest
        code as they do natively."""
        if n in _DR_ALIAS:
            if self.be.vcpu.cr4 & x86.CR4_DE:
                raise DeliveryFault(x86.UD, None, f"mov with dr{n} while CR4.DE is set")
            n = _DR_ALIAS[n]
        dst, src = insn.operands
        m = self.be.machine
        if to_dr:
            m.write_debug_register(n, reg_read(state, insn.reg_name(src.reg)))
            return f"mov_dr{n}"
        reg_write(state, insn.reg_name(dst.reg), m.read_debug_register(n))
        return f"read_dr{n}"

    def _table_load(self, insn, state):
        ea = effective_address(insn, insn.operands[0], state)
        limit, base = struct.unpack("<HI", self.view().read(ea, 6))
        which = insn.mnemonic[1:4]                  # gdt or idt
        self.be.load_table(which, base, limit)
        return insn.mnemonic

    # A stack switch: the kernel's SS selector has RPL 0, which the CPU refuses
    # at ring 1 whichever instruction loads it (mov ss is _mov's).  The
    # host's load_ss makes the CPU's checks and the load.
    def _pop(self, insn, state):
        """POP SS: the selector from the top of the stack (the old SS's), then
        ESP past it, by 2 with an operand-size prefix, else by 4.  Any other
        pop is not the VMM's business."""
        op = insn.operands[0]
        if op.type != C.X86_OP_REG or insn.reg_name(op.reg) != "ss":
            raise NotPrivileged()
        esp = state.reg("esp")
        selector = int.from_bytes(
            self.view().read((state.seg_base_of("ss") + esp) & 0xFFFFFFFF, 2), "little")
        self.be.load_ss(selector)
        state.set_reg("esp", esp + (2 if insn.prefix[2] == 0x66 else 4))
        return "pop_ss"

    def _lss(self, insn, state):
        """LSS r, m16:32 (m16:16 with an operand-size prefix): the offset
        into the register once SS is loaded."""
        reg, mem = insn.operands
        ea = effective_address(insn, mem, state)
        view, size = self.view(), reg.size
        offset = int.from_bytes(view.read(ea, size), "little")
        selector = int.from_bytes(view.read(ea + size, 2), "little")
        self.be.load_ss(selector)
        reg_write(state, insn.reg_name(reg.reg), offset)
        return "lss"

    def _xsetbv(self, insn, state):
        """XSETBV: XCR0, the state components xsave and xrstor manage.  As
        the CPU model: #UD without CR4.OSXSAVE (at ring 1 the CPU raises it
        before the #GP that brings trap here; a translator's callout comes
        here first), #GP(0) for an XCR other than 0, a value without x87, or
        a component the CPU lacks."""
        if not self.be.vcpu.cr4 & x86.CR4_OSXSAVE:
            raise DeliveryFault(x86.UD, None, "xsetbv without CR4.OSXSAVE")
        value = state.reg("edx") << 32 | state.reg("eax")
        if state.reg("ecx") != 0 or not value & x86.XCR0_X87 or value & ~x86.XCR0_SUPPORTED:
            raise DeliveryFault(x86.GP, 0, f"xsetbv of {value:#x} into XCR{state.reg('ecx')}")
        if state.layout.xcr0 is None:
            raise Unsupported("xsetbv: XCR0 was not found in this Unicorn build's CPU state")
        state.set_xcr0(value)
        return "xsetbv"

    def _ltr(self, insn, state):
        sel = operand_value(insn, insn.operands[0], state, self.view()) & 0xFFFF
        self.be.load_tr(sel)
        return "ltr"

    def _lldt(self, insn, state):
        view = self.view()
        selector = operand_value(insn, insn.operands[0], state, view) & 0xFFFF
        loads.check_ldt(view, self.be.vcpu.gdtr, selector)
        self.be.vcpu.ldtr = selector
        return "lldt"

    def _invlpg(self, insn, state):
        self.be.invlpg(effective_address(insn, insn.operands[0], state))
        return "invlpg"

    def _clts(self, insn, state):
        self.be.write_cr(0, self.be.read_cr(0) & ~x86.CR0_TS)
        return "clts"

    def _lmsw(self, insn, state):
        """LMSW: PE, MP, EM and TS from the operand's low bits; it can set PE
        but never clear it."""
        msw = operand_value(insn, insn.operands[0], state, self.view()) & 0xF
        cr0 = self.be.read_cr(0)
        self.be.write_cr(0, (cr0 & ~0xE) | msw | (cr0 & x86.CR0_PE))
        return "lmsw"

    def _cache(self, insn, state):
        """wbinvd and invd: no cache to write back or drop.  (F3 0F 09,
        which capstone reads as wbnoinvd, is wbinvd to this CPU model, which
        has no WBNOINVD and ignores the prefix.)"""
        return "invd" if insn.mnemonic == "invd" else "wbinvd"

    def _rdmsr(self, insn, state):
        value = self.be.guest_msr(state.reg("ecx"))
        state.set_reg("eax", value & 0xFFFFFFFF)
        state.set_reg("edx", value >> 32)
        return "rdmsr"

    def _wrmsr(self, insn, state):
        """The vCPU keeps what the CPU model would keep of the write, and so
        reads back what native reads: all of most, the selector alone of
        SYSENTER_CS, its own value of a read-only MSR, 0 of one it lacks
        (the model ignores such writes; a real CPU raises #GP)."""
        ecx, value = state.reg("ecx"), state.reg("edx") << 32 | state.reg("eax")
        self.be.vcpu.msrs[ecx] = scratch().kept_msr(ecx, value)
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
        user_flags(state, self.be.vcpu.if_, self.be.vcpu.iopl)     # SYSEXIT keeps EFLAGS
        return "sysexit"

    def _smsw(self, insn, state):
        """SMSW: the machine status word (CR0's low bits).  Not privileged, so
        only a VMM that intercepts it (a VT-x read shadow) or translates it
        into a callout comes here; read_cr(0) is the guest's CR0 either way.
        The SDM leaves the upper half of a 32-bit destination undefined; the
        CPU model writes the low 16 bits and keeps the rest (QEMU stores a
        word in 32-bit code), so the VMM does too, and the guest sees the
        register it would see natively."""
        op = insn.operands[0]
        cr0 = self.be.read_cr(0)
        if op.type == C.X86_OP_REG:
            full = insn.reg_name(op.reg)
            reg_write(state, _REG16_OF.get(full, full), cr0 & 0xFFFF)
        else:
            self.view().write(effective_address(insn, op, state), (cr0 & 0xFFFF).to_bytes(2, "little"))
        return "smsw"

    # -- sensitive, unprivileged: they run at ring 1 without faulting, so only
    # a VMM that finds them in the code (a binary translator) can answer them.
    def _table_store(self, insn, state):
        """SGDT/SIDT: the 6-byte pseudo-descriptor (16-bit limit, then the
        32-bit base; IA-32 stores the whole base for either operand size).
        Run natively they show the VMM's own tables."""
        op = insn.operands[0]
        if op.type != C.X86_OP_MEM:
            raise NotPrivileged()                   # a register operand is #UD
        base, limit = self.be.vcpu.gdtr if insn.mnemonic == "sgdt" else self.be.vcpu.idtr
        self.view().write(effective_address(insn, op, state),
                          struct.pack("<HI", limit & 0xFFFF, base & 0xFFFFFFFF))
        return insn.mnemonic

    def _sldt(self, insn, state):
        self._store_selector(insn, insn.operands[0], state, self.be.vcpu.ldtr)
        return "sldt"

    def _str(self, insn, state):
        self._store_selector(insn, insn.operands[0], state, self.be.vcpu.tr[0])
        return "str"

    def _store_selector(self, insn, op, state, selector):
        """A selector into r/m16 (sldt, str, mov from Sreg): memory gets 16
        bits whatever the operand size; a 32-bit register gets it
        zero-extended (P6 and later), a 16-bit one keeps its upper half."""
        selector &= 0xFFFF
        if op.type == C.X86_OP_REG:
            reg_write(state, insn.reg_name(op.reg), selector)
        else:
            self.view().write(effective_address(insn, op, state), selector.to_bytes(2, "little"))

    def _push_seg(self, insn, state):
        """PUSH Sreg, with the selector the guest believes in: natively `push
        cs` in its kernel shows RPL 1, the plainest sign of ring compression.
        A 32-bit push stores the selector zero-extended (as QEMU does; some
        CPUs write only its low word).  The stack is taken to be 32-bit.  The
        store comes first, so a #PF on it leaves ESP as it was."""
        op = insn.operands[0]
        if op.type != C.X86_OP_REG or insn.reg_name(op.reg) not in _SREGS:
            raise NotPrivileged()
        name = insn.reg_name(op.reg)
        size = 2 if insn.prefix[2] == 0x66 else 4   # an operand-size prefix: 16-bit push
        esp = (state.reg("esp") - size) & 0xFFFFFFFF
        sel = rings.guest_selector(state.seg_selector(name))
        at = (state.seg_base_of("ss") + esp) & 0xFFFFFFFF
        self.view().write(at, sel.to_bytes(size, "little"))
        state.set_reg("esp", esp)
        return "push_" + name

    def _visible(self, state, selector, system_types):
        """The guest's descriptor (lo, hi) for `selector` if LAR, LSL, VERR or
        VERW may report on it from the guest's CPL, else None.  Natively they
        would read the shadow GDT, where the kernel's DPL 0 has become 1.
        Only the GDT is read: an LDT selector, like a null one or one past
        the limit, is not valid.  A system descriptor must be of a type in
        `system_types`; every descriptor but a conforming code segment must
        have DPL >= max(CPL, RPL).  The present bit is not checked."""
        try:
            lo, hi = read_descriptor(self.view(), self.be.vcpu.gdtr, selector)
        except DeliveryFault:
            return None
        if hi & x86.DESC_S:
            if hi & x86.DESC_CODE and hi & x86.DESC_CONFORMING:
                return lo, hi
        elif (hi >> 8) & 0xF not in system_types:
            return None
        if x86.seg_dpl(hi) < max(rings.guest_ring(state.cpl), selector & 3):
            return None
        return lo, hi

    def _selector_operand(self, insn, op, state):
        return operand_value(insn, op, state, self.view()) & 0xFFFF

    def _lar(self, insn, state):
        """LAR: the descriptor's access rights (type, S, DPL, P and the G, D/B,
        L, AVL nibble) and ZF=1, or ZF=0 and the destination unchanged."""
        dst, src = insn.operands
        d = self._visible(state, self._selector_operand(insn, src, state), _LAR_SYSTEM)
        if d is not None:
            reg_write(state, insn.reg_name(dst.reg), d[1] & 0x00F0FF00)
        _set_zf(state, d is not None)
        return "lar"

    def _lsl(self, insn, state):
        """LSL: the segment limit in bytes (scaled if G is set) and ZF=1."""
        dst, src = insn.operands
        d = self._visible(state, self._selector_operand(insn, src, state), _LSL_SYSTEM)
        if d is not None:
            reg_write(state, insn.reg_name(dst.reg), x86.seg_limit(*d))
        _set_zf(state, d is not None)
        return "lsl"

    def _verify(self, insn, state):
        """VERR/VERW: ZF=1 if the guest could read (write) the segment through
        DS at its CPL.  Data is always readable, code only if its R bit is
        set; only data with its W bit set is writable."""
        d = self._visible(state, self._selector_operand(insn, insn.operands[0], state), ())
        ok = False
        if d is not None:
            code, rw = bool(d[1] & x86.DESC_CODE), bool(d[1] & x86.DESC_RW)
            ok = (not code or rw) if insn.mnemonic == "verr" else (not code and rw)
        _set_zf(state, ok)
        return insn.mnemonic


def _set_zf(state, value):
    """ZF as LAR, LSL, VERR and VERW report validity; no other flag moves."""
    flags = state.eflags()
    state.set_eflags(flags | x86.ZF if value else flags & ~x86.ZF)


# The families: control-register work that a VT-x VMM intercepts ...
_CONTROL = {
    "mov": Emulator._mov, "invlpg": Emulator._invlpg, "clts": Emulator._clts,
    "rdmsr": Emulator._rdmsr, "wrmsr": Emulator._wrmsr, "smsw": Emulator._smsw,
    "lmsw": Emulator._lmsw,
    "wbinvd": Emulator._cache, "invd": Emulator._cache, "wbnoinvd": Emulator._cache,
}
# ... and what only reaches a VMM whose guest kernel runs deprivileged.
_KERNEL = {
    "cli": Emulator._cli, "sti": Emulator._sti, "hlt": Emulator._hlt,
    "lgdt": Emulator._table_load, "lidt": Emulator._table_load,
    "ltr": Emulator._ltr, "lldt": Emulator._lldt,
    "pop": Emulator._pop, "lss": Emulator._lss, "xsetbv": Emulator._xsetbv,
    "iretd": Emulator._iret, "iret": Emulator._iret,
    "retf": Emulator._retf, "lret": Emulator._retf,
    "sysexit": Emulator._sysexit,
}
# ... and, for a VMM that sees them, the sensitive instructions that do not
# fault at ring 1.  (smsw is in _CONTROL; mov from Sreg is dispatched by _mov.)
_SENSITIVE = {
    "sgdt": Emulator._table_store, "sidt": Emulator._table_store,
    "sldt": Emulator._sldt, "str": Emulator._str, "push": Emulator._push_seg,
    "lar": Emulator._lar, "lsl": Emulator._lsl,
    "verr": Emulator._verify, "verw": Emulator._verify,
}
# System-descriptor types LAR reports on (16- and 32-bit TSSs, the LDT, call
# and task gates) and the ones with a limit for LSL (TSSs and the LDT).
_LAR_SYSTEM = frozenset((0x1, 0x2, 0x3, 0x4, 0x5, 0x9, 0xB, 0xC))
_LSL_SYSTEM = frozenset((0x1, 0x2, 0x3, 0x9, 0xB))
