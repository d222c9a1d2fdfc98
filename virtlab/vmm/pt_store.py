"""A store the guest makes to one of its own page tables, performed by the VMM.

Under shadow paging every frame that holds a guest page table is mapped
read-only (shadow.py), so each store to an entry faults into the VMM.  The
VMM decodes the instruction, performs what it does to guest memory, the
registers and the flags, moves EIP past it, and then drops the shadow
entries derived from what changed (ShadowMmu.traced_write).

Kernels change entries with plain stores and with read-modify-writes, often
atomic ones; a lock prefix asks nothing more of a VMM that runs one virtual
CPU.  Performed here, by capstone instruction id (capstone names the
prefixed form "lock or"): mov and xchg; and, or, xor; bts, btr and btc with
an immediate bit number; cmpxchg; and cmpxchg8b, the usual way to write a
64-bit PAE entry in one step.  Any other store raises Unsupported: the
caller stops tracing the frame (the guest is using it as data) and lets the
instruction run natively.
"""
from capstone import x86_const as C

from virtlab import x86

from .emulate import Unsupported, operand_value, reg_read, reg_write

_ARITH_FLAGS = x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF


def emulate_store(decoded, state, mem, gpa):
    """Perform the guest's store to a write-protected page-table entry at
    guest-physical `gpa` and advance EIP.  Returns the number of bytes written."""
    insn = decoded.insn
    ops = insn.operands
    if not ops or ops[0].type != C.X86_OP_MEM:
        raise Unsupported(f"store to a page table by '{decoded.text()}'")
    size = ops[0].size
    if (gpa & 0xFFF) + size > x86.PAGE_SIZE:
        raise Unsupported(f"store across a page boundary by '{decoded.text()}'")
    if insn.id == C.X86_INS_MOV:
        # A store of an immediate (the commonest, a kernel setting an entry
        # to a constant) is worked out once per decoded instruction: the
        # value is a function of its bytes (decode.Insn.memo).
        memo = getattr(insn, "memo", None)
        new = None if memo is None else memo.get("store_imm")
        if new is None:
            new = operand_value(insn, ops[1], state, None)
            if memo is not None and ops[1].type == C.X86_OP_IMM:
                memo["store_imm"] = new
    else:
        perform = _READ_MODIFY_WRITE.get(insn.id)
        if perform is None:
            raise Unsupported(f"store to a page table by '{decoded.text()}'")
        old = int.from_bytes(mem.view[gpa:gpa + size], "little")
        new = perform(insn, ops, state, old, size)
    mem.view[gpa:gpa + size] = (new & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    state.eip = state.eip + decoded.size
    return size


def _xchg(insn, ops, state, old, size):
    new = operand_value(insn, ops[1], state, None)
    reg_write(state, insn.reg_name(ops[1].reg), old)
    return new


def _logic(op):
    def perform(insn, ops, state, old, size):
        new = op(old, operand_value(insn, ops[1], state, None)) & ((1 << (8 * size)) - 1)
        _set_flags(state, _result_flags(new, size))        # CF = OF = 0, AF undefined: 0
        return new
    return perform


def _bit(op):
    """bts/btr/btc with an immediate: CF is the bit's old value; the other
    arithmetic flags are undefined and left as they were."""
    def perform(insn, ops, state, old, size):
        if ops[1].type != C.X86_OP_IMM:
            # With a register the bit number may reach beyond the operand.
            raise Unsupported(f"{insn.mnemonic} with a register bit number")
        bit = 1 << (ops[1].imm % (8 * size))
        flags = state.eflags() & ~x86.CF
        state.set_eflags(flags | (x86.CF if old & bit else 0))
        return op(old, bit)
    return perform


def _cmpxchg(insn, ops, state, old, size):
    """Compare the accumulator with the entry (flags as `cmp`); equal: store
    the source, else load the entry into the accumulator (and write it back,
    as the CPU's locked cycle does)."""
    acc = {1: "al", 2: "ax", 4: "eax"}[size]
    value = reg_read(state, acc)
    _set_flags(state, _compare_flags(value, old, size))
    if value == old:
        return operand_value(insn, ops[1], state, None)
    reg_write(state, acc, old)
    return old


def _cmpxchg8b(insn, ops, state, old, size):
    """EDX:EAX against the 64-bit entry; equal: store ECX:EBX.  Only ZF changes."""
    expected = state.reg("edx") << 32 | state.reg("eax")
    flags = state.eflags() & ~x86.ZF
    if expected == old:
        state.set_eflags(flags | x86.ZF)
        return state.reg("ecx") << 32 | state.reg("ebx")
    state.set_eflags(flags)
    state.set_reg("eax", old & 0xFFFFFFFF)
    state.set_reg("edx", old >> 32)
    return old


def _set_flags(state, arith):
    state.set_eflags((state.eflags() & ~_ARITH_FLAGS) | arith)


def _result_flags(result, size):
    """ZF, SF and PF of a result (PF from its low byte)."""
    flags = x86.ZF if result == 0 else 0
    if result >> (8 * size - 1) & 1:
        flags |= x86.SF
    if bin(result & 0xFF).count("1") % 2 == 0:
        flags |= x86.PF_FLAG
    return flags


def _compare_flags(a, b, size):
    """The arithmetic flags of `cmp a, b` (a - b) at `size` bytes."""
    bits = 8 * size
    result = (a - b) & ((1 << bits) - 1)
    flags = _result_flags(result, size)
    if a < b:
        flags |= x86.CF
    if ((a ^ b) & (a ^ result)) >> (bits - 1) & 1:
        flags |= x86.OF
    if (a ^ b ^ result) & 0x10:
        flags |= x86.AF
    return flags


_READ_MODIFY_WRITE = {
    C.X86_INS_XCHG: _xchg,
    C.X86_INS_AND: _logic(lambda a, b: a & b),
    C.X86_INS_OR: _logic(lambda a, b: a | b),
    C.X86_INS_XOR: _logic(lambda a, b: a ^ b),
    C.X86_INS_BTS: _bit(lambda a, bit: a | bit),
    C.X86_INS_BTR: _bit(lambda a, bit: a & ~bit),
    C.X86_INS_BTC: _bit(lambda a, bit: a ^ bit),
    C.X86_INS_CMPXCHG: _cmpxchg,
    C.X86_INS_CMPXCHG8B: _cmpxchg8b,
}
