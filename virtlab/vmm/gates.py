"""Far calls and jumps through the guest's call gates, for a ring-compressed guest.

The shadow GDT carries no system descriptors (rings.compress), so a far call or
jump through one of the guest's call gates raises #GP on the real CPU, and the
VMM performs the transfer as the CPU would (SDM vol. 3, 5.8.4-5.8.6; vol. 2A,
CALL).  The alternative, giving the CPU the gates with their targets compressed
(a gate to a DPL-0 segment leading to real ring 1) so that it makes the
transition itself, was rejected as less faithful: on a privilege change the CPU
would take the new stack from the *real* TSS's SS1:ESP1, which the VMM would
have to keep equal to the guest's SS0:ESP0, and a guest changes those with
plain stores (once per task switch) that the VMM never sees; emulating reads
the guest's own TSS at the moment of the call, as interrupt reflection does,
and pushes the selectors the guest believes in.  The cost is one exit per gate
call, as for any reflected system call.  The return (`retf` to ring 3) is
performed by the CPU at ring 1 unaided.
"""
import struct

from capstone import x86_const as C

from virtlab import x86
from virtlab.decode import opcode
from virtlab.delivery import DeliveryFault, Event, _inner_stack, read_descriptor

from .emulate import Unsupported, effective_address

CALL_GATE32 = 0xC
CALL_GATE16 = 0x4                 # a 286 call gate: 16-bit offset, pushes and parameters
_CONFORMING = 1 << 10


def is_far_transfer(insn):
    """A far call or jmp: direct (ljmp/lcall sel:offset) or indirect through
    an m16:32 operand, opcode FF with ModRM.reg 3 (call) or 5 (jmp), which
    capstone reports under the ids of the near forms."""
    if insn.id in (C.X86_INS_LJMP, C.X86_INS_LCALL):
        return True
    if insn.id not in (C.X86_INS_JMP, C.X86_INS_CALL):
        return False
    op, modrm = opcode(insn)
    return op == b"\xff" and (modrm >> 3) & 7 in (3, 5)


def far_pointer(decoded, state, view, offset=True):
    """(selector, offset) of a direct (sel:offset) or indirect (m16:32) far
    call or jmp, or None if the instruction is not one.  The selector of an
    m16:32 operand is read first; with `offset` False the offset is not
    read at all (None)."""
    insn = decoded.insn
    ops = insn.operands
    if not is_far_transfer(insn) or not ops:
        return None
    if len(ops) == 2 and ops[0].type == C.X86_OP_IMM:
        return ops[0].imm & 0xFFFF, ops[1].imm & 0xFFFFFFFF
    if ops[0].type == C.X86_OP_MEM:
        ea = effective_address(insn, ops[0], state)
        return (int.from_bytes(view.read(ea + 4, 2), "little"),
                view.u32(ea) if offset else None)
    return None


def far_target(decoded, state, view):
    """The selector of a far call or jmp, or None if it is not one."""
    pointer = far_pointer(decoded, state, view, offset=False)
    return None if pointer is None else pointer[0]


def push_return(cpu, state, view, decoded):
    """A far call's return address, CS:EIP of the next instruction (CS as
    the guest believes it), pushed on the current stack as two dwords."""
    ret = (state.eip + decoded.size) & 0xFFFFFFFF
    state.set_reg("esp", _push(view, 4, (ret, cpu.selector("cs")), state.reg("esp"),
                               state.seg_base_of("ss")))


# System descriptors a far jmp or call switches tasks through: an available
# 16- or 32-bit TSS, or a task gate.  (To a busy TSS it raises #GP.)
_TASK_SWITCH_TYPES = (0x1, 0x9, 0x5)


def switches_tasks(view, gdtr, selector):
    """Whether a far jmp or call to `selector` (in the GDT) is a hardware task
    switch.  False for a selector the CPU refuses (beyond the limit: #GP)."""
    try:
        _, hi = read_descriptor(view, gdtr, selector)
    except DeliveryFault:
        return False
    return not hi & x86.DESC_S and (hi >> 8) & 0xF in _TASK_SWITCH_TYPES


def through_call_gate(cpu, state, view, decoded):
    """Perform the far call or jmp at EIP if it names a call gate in the
    guest's GDT; False if it does not (the #GP is then the guest's own).  A
    16-bit gate (the 286's) pushes, and copies its parameters, as words: the
    gate's size decides, not the code segments' (SDM vol. 3, 5.8.5).
    `cpu` is the guest's view of the CPU (vmm.reflect.VirtualCpuView): guest
    rings, tables and selectors, real segment caches.  Raises DeliveryFault
    for the exception the CPU would raise instead, GuestMemoryFault for a
    page fault on the stacks."""
    sel = far_target(decoded, state, view)
    gate = _call_gate(cpu, view, sel) if sel is not None else None
    if gate is None:
        return False
    lo, hi = gate
    unit = 4 if (hi >> 8) & 0xF == CALL_GATE32 else 2          # bytes per push
    call = decoded.insn.id in (C.X86_INS_LCALL, C.X86_INS_CALL)
    cpl = cpu.cpl()
    if x86.seg_dpl(hi) < max(cpl, sel & 3):
        raise DeliveryFault(x86.GP, sel & ~3, f"call gate {sel:#x}: DPL below CPL or RPL")
    if not hi & x86.DESC_P:
        raise DeliveryFault(x86.NP, sel & ~3, f"call gate {sel:#x} not present")
    # (All 32 bits of the offset even for a 16-bit gate, as the CPU model
    # takes them: docs/unicorn.md, item 30.)
    cs, offset, params = lo >> 16, (hi & 0xFFFF0000) | (lo & 0xFFFF), hi & 0x1F
    cs_lo, cs_hi, new_cpl = _gate_target(cpu, view, sel, cs, cpl)
    if not call and new_cpl != cpl:
        raise DeliveryFault(x86.GP, cs & ~3, "jmp through a call gate to another ring")
    ret = (state.eip + decoded.size) & 0xFFFFFFFF
    if call and new_cpl < cpl:
        _push_inner(cpu, state, view, new_cpl, unit, params, ret)
    elif call:
        state.set_reg("esp", _push(view, unit, (ret, cpu.selector("cs")), state.reg("esp"),
                                   state.seg_base_of("ss")))
    state.set_segment("cs", *cpu.segment(cs, cs_lo, cs_hi, new_cpl))
    state.eip = offset
    return True


def _call_gate(cpu, view, sel):
    """The descriptor (lo, hi) of the call gate `sel` names in the guest's
    GDT, or None if it names none (an LDT selector, the null one, beyond
    the limit, any other kind of descriptor)."""
    if sel & 4 or sel & 0xFFF8 == 0:
        return None
    gdtr = cpu.gdtr()
    if (sel & ~7) + 7 > gdtr[1]:
        return None
    lo, hi = read_descriptor(view, gdtr, sel)
    if hi & x86.DESC_S or (hi >> 8) & 0xF not in (CALL_GATE32, CALL_GATE16):
        return None
    return lo, hi


def _gate_target(cpu, view, sel, cs, cpl):
    """The gate's code segment, checked as the CPU checks it, and the ring
    the transfer lands in: (lo, hi, new CPL)."""
    if cs & 0xFFFC == 0:
        raise DeliveryFault(x86.GP, 0, f"call gate {sel:#x} names the null selector")
    cs_lo, cs_hi = read_descriptor(view, cpu.gdtr(), cs)
    dpl = x86.seg_dpl(cs_hi)
    if not cs_hi & x86.DESC_S or not cs_hi & x86.DESC_CODE or dpl > cpl:
        raise DeliveryFault(x86.GP, cs & ~3, f"call gate {sel:#x}: bad target {cs:#x}")
    if not cs_hi & x86.DESC_P:
        raise DeliveryFault(x86.NP, cs & ~3, f"call gate {sel:#x}: target {cs:#x} not present")
    return cs_lo, cs_hi, cpl if cs_hi & _CONFORMING else dpl


def _push_inner(cpu, state, view, new_cpl, unit, params, ret):
    """An inner call: the new stack from the guest's TSS; old SS:ESP, the
    gate's parameters (copied from the old stack) and CS:EIP pushed on it."""
    esp_pa, ss, ss_lo, ss_hi = _inner_stack(cpu, view, cpu.gdtr(), new_cpl)
    old_esp = state.reg("esp")
    fmt = "I" if unit == 4 else "H"
    args = struct.unpack(f"<{params}{fmt}",
                         view.read((state.seg_base_of("ss") + old_esp) & 0xFFFFFFFF,
                                   unit * params))
    frame = (ret, cpu.selector("cs"), *args, old_esp, cpu.selector("ss"))
    esp = _push(view, unit, frame, view.mem.u32(esp_pa), x86.seg_base(ss_lo, ss_hi))
    state.set_segment("ss", *cpu.segment(ss, ss_lo, ss_hi, new_cpl))
    state.set_reg("esp", esp)


def _push(view, unit, frame, esp, ss_base):
    """Push `frame` (its first value at the lowest address) below `esp` on
    the stack at `ss_base`, in units of `unit` bytes; returns the new ESP."""
    fmt, mask = ("I", 0xFFFFFFFF) if unit == 4 else ("H", 0xFFFF)
    esp = (esp - unit * len(frame)) & 0xFFFFFFFF
    view.write((ss_base + esp) & 0xFFFFFFFF,
               struct.pack(f"<{len(frame)}{fmt}", *(v & mask for v in frame)))
    return esp


def task_return(view, tss_base):
    """IRET with EFLAGS.NT set is not a return but a task switch back to the
    task named by the previous-task link of the current TSS (SDM vol. 3,
    7.3).  No VMM here performs task switches: a null link (no task to
    return to) is the #TS(0) the CPU raises, returned as the Event to
    deliver; a real one ends the run."""
    link = int.from_bytes(view.read(tss_base, 2), "little")
    if link & 0xFFFC:
        raise Unsupported(f"iret to the nested task {link:#x} (task switches)")
    return Event(x86.TS, link & 0xFFFC)
