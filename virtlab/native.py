"""The `native` back end: the guest on the bare (emulated) machine.

The guest kernel runs at real ring 0 with its own page tables, GDT and IDT; nothing
is intercepted and nothing is emulated.  The one thing the platform must do in
software is what Unicorn leaves out: delivering exceptions and interrupts through
the guest's IDT (delivery.py), exactly as the CPU would.  These are counted as
native events (`native.*`), the baseline every other back end is compared with.
"""
from . import x86
from .backend import Backend
from .counters import NATIVE
from .delivery import Event, RealCpuView, SOFTWARE_INT
from .fastcall import native_sysenter
from .guest_events import EventNames, GuestEvents, vector_name

_IF = x86.IF


class Native(Backend):
    name = "native"
    summary = "the guest at real ring 0 on the bare machine (the baseline)"
    counters = NATIVE

    def attach(self, machine):
        super().attach(machine)
        self.events = GuestEvents(machine, RealCpuView(machine.state),
                                  EventNames(irq="native.irq", hlt="native.hlt"))

    # [tour native 50] Native does what the CPU itself would do.
    # A system call (`int 0x80`) is counted as native.syscall and delivered through
    # the guest's own IDT: nothing is emulated, nothing reflected.
    def exception(self, vector):
        m = self.machine
        st = m.state
        # (A vector above 31 is not an exception's: only `int n` raises it.)
        software = vector > 31 or st.is_software_int()
        eflags = st.eflags()
        # (pending_irq() first: the common case, nothing pending, decided
        # without interrupt_first's call.)
        if eflags & _IF and m.pending_irq() is not None \
                and self.events.interrupt_first(software, self):
            return
        if software:
            m.counters["native.syscall"] += 1
            self.events.deliver(SOFTWARE_INT[vector], eflags)
            return
        if vector == x86.PF and m.fetched_early():
            return
        m.counters["native.exception"] += 1
        m.counters["native.exception." + vector_name(vector)] += 1
        self.events.deliver(self.events.exception_event(vector), eflags)

    def invalid_opcode(self):
        m = self.machine
        base, limit = m.state.table("idt")
        if x86.UD * 8 + 7 > limit:
            return False
        # An interrupt that waits is taken first, as before any exception
        # (exception() above); the ud2 runs again after its handler.
        if m.state.eflags() & x86.IF and m.pending_irq() is not None \
                and self.events.interrupt_first(False, self):
            return True
        m.counters["native.exception"] += 1
        m.counters["native.exception.ud"] += 1
        self.events.deliver(Event(x86.UD))
        return True

    def sysenter(self):
        return native_sysenter(self, self.events)

    # [tour native 80] Port I/O: the devices answer.
    # One tick of the virtual clock, counted as native.io: the bus access that real
    # hardware pays too.
    def port_in(self, port, size):
        m = self.machine
        m.counters["native.io"] += 1
        m.clock.tick()
        return m.bus.read(port, size)

    def port_out(self, port, size, value):
        m = self.machine
        m.counters["native.io"] += 1
        m.clock.tick()
        m.bus.write(port, size, value)

    def halted(self):
        st = self.machine.state
        self.events.halt(st.system_flags() & x86.IF, st.eip - 1)
