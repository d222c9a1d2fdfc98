"""`virtlab trace`: every event of a run, as a teacher would narrate it.

An event is each time the CPU model hands control to virtlab: to the VMM, or,
under `native`, to the platform doing what the hardware would.  For each: the
guest address, the instruction there, the cause (an exception vector, a port, a
halt, an intercepted instruction) and what was done about it, read off the
counters the event changed ("exit.priv.cli" = emulated, "reflect.syscall" =
reflected into the guest kernel, "shadow.fill" = a hidden page fault, ...).

Not every event is an exit, and the trace does not call it one: native has no
VMM; a system call through pv's direct trap gate, or one VT-x lets the guest
take itself (`native.syscall` under hw), never enters the VMM; a bt callout or
a pv hypercall enters it on purpose.  An event is an exit exactly when it
counted one (`exit.total`, docs/counters.md).

Tracing observes the events of one machine only (Machine.observe), so the hot
paths of ordinary runs carry no trace code.
"""
from dataclasses import dataclass

from . import x86
from .delivery import int_length
from .machine import Outcome

TOTALS = ("exit.total", "reflect.total", "native.exception")


@dataclass
class TraceEvent:
    n: int
    eip: int
    instruction: str
    cause: str
    effects: dict
    exit: bool                   # it counted an exit (exit.total)

    def text(self, cause_width=14):
        done = " ".join(f"{k}" + (f"x{v}" if v != 1 else "") for k, v in self.effects.items())
        mark = "  (exit)" if self.exit else ""
        return (f"{self.n:>6}  {self.eip:#010x}  {self.instruction:<34.34} "
                f"{self.cause:<{cause_width}} {done}{mark}")


def table(events):
    """The lines of a trace: a heading, then an event a line, an exit marked
    as one; the cause column as wide as the widest cause shown (a pv direct
    trap's is longer than a vector's or a port's), so that 'what was done'
    lines up."""
    width = max([14, *(len(e.cause) for e in events)])
    return ([f"{'#':>6}  {'guest EIP':<10}  {'instruction':<34} {'cause':<{width}} what was done"]
            + [e.text(width) for e in events])


class Tracer:
    def __init__(self, machine, limit=50, skip=0, roi_only=False):
        self.machine = machine
        self.limit, self.skip = limit, skip
        self.roi_only = roi_only
        self.events = []
        self.seen = 0
        machine.observe(self._wrap)

    def _wrap(self, name, handler):
        if name == "intercept":
            return self._intercepted
        def traced(*args):
            cause = exit_cause(self.machine, name, args)
            before = self._begin(name != "exception" and name != "invalid_opcode",
                                 name == "exception" and bool(self.machine.state.is_software_int()))
            result = handler(*args)
            self._end(before, cause)
            return result
        return traced

    def _intercepted(self, address, kind, call):
        before = self._begin(True)
        redirected = call()
        self._end(before, f"intercept {kind}")
        return redirected

    def _begin(self, save, software_int=False):
        st = self.machine.state
        if save:
            st.save()
        eip = st.eip
        if software_int:
            # EIP is past the `int`: show the `int` itself.  In code of the
            # back end's own (bt's callouts in its translation cache), the
            # `int` lies inside the translation of the guest instruction it
            # stands for, where the instruction after it may already belong
            # to the next: so it is the `int` whose address is mapped back to
            # the guest's (Backend.guest_address).
            code = self.machine.backend.code_view((st.seg_base_of("cs") + eip) & 0xFFFFFFFF)
            eip -= int_length(code, st, self.machine.exit_vector) or 0
        return self.machine.guest_pc(eip), dict(self.machine.counters)

    def _end(self, before, cause):
        linear, counters = before
        m = self.machine
        effects = {k: v - counters.get(k, 0) for k, v in m.counters.items()
                   if v != counters.get(k, 0) and k not in TOTALS}
        exited = m.counters.get("exit.total", 0) != counters.get("exit.total", 0)
        if not effects:
            return                     # e.g. an intercept that found nothing to do
        if self.roi_only and not (m.roi.begun and not m.roi.ended):
            return
        self.seen += 1
        if self.seen <= self.skip:
            return
        d = m.decoder.at(m.backend.guest_view(), linear) if _mapped(m, linear) else None
        self.events.append(TraceEvent(self.seen, linear, d.text() if d else "?", cause, effects,
                                      exited))
        if len(self.events) >= self.limit:
            m.outcome = m.outcome or Outcome(True, None, f"trace stopped after {self.limit} events")
            m.uc.emu_stop()


def _mapped(m, linear):
    try:
        m.backend.guest_view().phys(linear)
        return True
    except Exception:
        return False


def exit_cause(machine, name, args):
    """What an exit is called in a trace (and by benchmarks/guestbench.py's
    --entries): the back end's own name for it (a callout), else the
    machine's (the vector, the port), from its handler's name and arguments."""
    return machine.backend.exit_cause(name, args) or _cause(name, args, machine.state)


def _cause(name, args, state):
    if name == "exception":
        vector = args[0]
        if state.is_software_int():
            return f"int {vector:#x}"
        return x86.VECTOR_NAMES.get(vector, f"vector {vector}")
    if name == "port_in":
        return f"in {args[0]:#x}"
    if name == "port_out":
        return f"out {args[0]:#x}"
    if name == "invalid_opcode":
        return "#UD"
    if name == "sysenter":
        return "sysenter"
    return "hlt"
