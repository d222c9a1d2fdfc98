"""A deterministic time-stamp counter.

Unicorn answers `rdtsc` from the host's TSC, so the guest would see real time:
a guest that branches on the values (nano.rdtsc compares the high halves, and
takes a different path in the iteration where the low half wraps, every 2^32
host cycles) executes a different number of instructions from run to run, and
so from back end to back end.  The machine therefore intercepts `rdtsc` under
every back end (a translation-time hook, like the I/O permission check) and
answers it from the virtual clock (devices/clock.py): TSC_PER_NS counts per
virtual nanosecond, plus one per read so that two reads are never equal.  No
counter is charged: `rdtsc` does not exit under any back end here.

With CR4.TSD set, `rdtsc` above ring 0 raises #GP: the instruction is then left
to the CPU, which raises it.
"""
from capstone import x86_const as C

from . import x86
from .intercept import EMULATED

TSC_PER_NS = 1


class VirtualTsc:
    def __init__(self, machine):
        self.machine = machine
        self.reads = 0
        machine.intercepts.watch(self._select, self._hit, exit=True, ids=(C.X86_INS_RDTSC,))

    def value(self):
        return (self.machine.clock.now_ns * TSC_PER_NS + self.reads) & (1 << 64) - 1

    def read(self):
        """One guest read of the counter (each read is one count later)."""
        self.reads += 1
        return self.value()

    def _select(self, insn, cpl):
        return "rdtsc" if insn.id == C.X86_INS_RDTSC else None

    def _hit(self, decoded, kind):
        st = self.machine.state
        if st.cpl > 0 and st.cr(4) & x86.CR4_TSD:
            return None
        tsc = self.read()
        st.set_reg("eax", tsc & 0xFFFFFFFF)
        st.set_reg("edx", tsc >> 32)
        st.eip = (st.eip + decoded.size) & 0xFFFFFFFF
        return EMULATED
