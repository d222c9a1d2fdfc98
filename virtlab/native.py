"""The `native` back end: the guest on the bare (emulated) machine.

The guest kernel runs at real ring 0 with its own page tables, GDT and IDT; nothing
is intercepted and nothing is emulated.  The one thing the platform must do in
software is what Unicorn leaves out: delivering exceptions and interrupts through
the guest's IDT (delivery.py), exactly as the CPU would.  These are counted as
native events (`native.*`), the baseline every other back end is compared with.
"""
from . import x86
from .backend import Backend
from .delivery import Event, InterruptPath, RealCpuView, TripleFault, linear_view
from .machine import GuestStop


class Native(Backend):
    name = "native"
    summary = "the guest at real ring 0 on the bare machine (the baseline)"

    def attach(self, machine):
        super().attach(machine)
        self.path = InterruptPath(machine.mem, RealCpuView(machine.state))

    def exception(self, vector):
        m, st = self.machine, self.machine.state
        software = st.is_software_int
        eflags = st.eflags()
        if eflags & x86.IF and self._interrupt_first(software):
            return
        if software:
            m.counters["native.syscall"] += 1
            event = Event(vector, software=True)
        else:
            name = x86.VECTOR_NAMES.get(vector, str(vector)).lstrip("#").lower()
            m.counters["native.exception"] += 1
            m.counters["native.exception." + name] += 1
            err = st.error_code if vector in x86.ERROR_CODE_VECTORS else None
            event = Event(vector, err)
        m.clock.tick()
        self._deliver(event, eflags)

    def _interrupt_first(self, software):
        """Interrupts are recognised at instruction boundaries: if one is pending
        and the guest has IF set, the CPU takes it *before* the instruction that
        just exited, which runs again after the handler's iret."""
        m, st = self.machine, self.machine.state
        if m.pending_irq() is None:
            return False
        if software:
            back = int_length(st, m.mem)
            if back is None:
                return False          # unusual encoding: take the interrupt later
            st.eip = st.eip - back
        self.inject()
        return True

    def inject(self):
        m = self.machine
        vector = m.pic.acknowledge()
        m.counters["native.irq"] += 1
        m.clock.tick()
        self._deliver(Event(vector))

    def _deliver(self, event, eflags=None):
        try:
            self.path.deliver(self.machine.state, event, eflags)
        except TripleFault as tf:
            raise GuestStop(f"triple fault at {self.machine.where()}: {tf}") from None

    def invalid_opcode(self):
        m = self.machine
        base, limit = m.state.table("idt")
        if x86.UD * 8 + 7 > limit:
            return False
        m.counters["native.exception"] += 1
        m.counters["native.exception.ud"] += 1
        m.clock.tick()
        self._deliver(Event(x86.UD))
        return True

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
        m, st = self.machine, self.machine.state
        m.counters["native.hlt"] += 1
        if not st.eflags() & x86.IF:
            raise GuestStop("halted with interrupts disabled at " + m.where(st.eip - 1))
        while m.pending_irq() is None:
            if not m.clock.idle_until_next():
                raise GuestStop("halted with nothing armed to wake it at " + m.where(st.eip - 1))
        self.inject()


def int_length(state, mem):
    """Length of the `int n` / `int3` / `into` that just trapped (EIP is past it)."""
    view = linear_view(state, mem)
    end = (state.seg_base_of("cs") + state.eip) & 0xFFFFFFFF
    try:
        two = view.read(end - 2, 2)
    except Exception:
        return None
    if two[0] == 0xCD:
        return 2
    if two[1] in (0xCC, 0xCE):
        return 1
    return None
