"""Deterministic answers to `rdrand` and `rdseed`.

QEMU answers RDRAND and RDSEED from the host's random source, and the CPU that
Unicorn models advertises RDRAND in CPUID (leaf 1, ECX bit 30), so a guest
that draws from it -- a kernel seeding its entropy pool at boot, a program
picking a random number -- would take a different path on every run, and no
two back ends could be compared.  The machine therefore intercepts both under
every back end (a translation-time hook, as for rdtsc: tsc.py) and answers
from a generator with a fixed seed: each read is the next value of the one
sequence of the machine, whichever instruction and register asked.  The
answer is always valid, as the hardware's almost always is: CF set, and OF,
SF, ZF, AF and PF cleared (SDM vol. 2, RDRAND).  No counter is charged: the
instruction does not exit under any back end here.
"""
import random

from capstone import x86_const as C

from . import x86
from .intercept import EMULATED
from .vmm.emulate import reg_write

SEED = 0
_KINDS = {C.X86_INS_RDRAND: "rdrand", C.X86_INS_RDSEED: "rdseed"}
_RESULT_FLAGS = x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF


class VirtualRng:
    def __init__(self, machine):
        self.machine = machine
        self._random = random.Random(SEED)
        machine.intercepts.watch(self._select, self._hit, exit=True, ids=_KINDS)

    def _select(self, insn, cpl):
        return _KINDS.get(insn.id)

    def _hit(self, decoded, kind):
        st = self.machine.state
        self.perform(decoded.insn)
        st.eip = (st.eip + decoded.size) & 0xFFFFFFFF
        return EMULATED

    def perform(self, insn):
        """Write the next number into the instruction's register (16 or 32
        bits) and set the flags as a successful read does; EIP is the
        caller's (a translator calls this from a callout)."""
        st = self.machine.state
        dest = insn.operands[0]
        reg_write(st, insn.reg_name(dest.reg), self._random.getrandbits(8 * dest.size))
        st.set_eflags((st.eflags() & ~_RESULT_FLAGS) | x86.CF)
