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

`rdtscp` reads the same counter, and ECX gets the TSC_AUX MSR as the guest
kernel wrote it (Backend.guest_msr: under a VMM the virtual one, which the
real CPU never saw).

With CR4.TSD set, `rdtsc` and `rdtscp` in the guest's user code raise #GP(0),
whether or not the real CR4 has it (under shadow paging the guest's CR4 is the
vCPU's, and the guest kernel's ring is not the real ring 0).
"""
from capstone import x86_const as C

from . import x86
from .intercept import EMULATED, RAISED

TSC_PER_NS = 1
MSR_TSC_AUX = 0xC0000103
_KINDS = {C.X86_INS_RDTSC: "rdtsc", C.X86_INS_RDTSCP: "rdtscp"}


class VirtualTsc:
    def __init__(self, machine):
        self.machine = machine
        self.reads = 0
        machine.intercepts.watch(self._select, self._hit, exit=True, ids=_KINDS)

    def value(self):
        return (self.machine.clock.now_ns * TSC_PER_NS + self.reads) & (1 << 64) - 1

    def read(self):
        """One guest read of the counter (each read is one count later)."""
        self.reads += 1
        return self.value()

    def _select(self, insn, cpl):
        return _KINDS.get(insn.id)

    def _hit(self, decoded, kind):
        st, be = self.machine.state, self.machine.backend
        if st.cpl > be.kernel_ring and be.read_cr(4) & x86.CR4_TSD:
            st.set_error_code(0)
            be.exception(x86.GP)
            return RAISED
        tsc = self.read()
        st.set_reg("eax", tsc & 0xFFFFFFFF)
        st.set_reg("edx", tsc >> 32)
        if kind == "rdtscp":
            st.set_reg("ecx", self.machine.backend.guest_msr(MSR_TSC_AUX) & 0xFFFFFFFF)
        st.eip = (st.eip + decoded.size) & 0xFFFFFFFF
        return EMULATED
