"""Guest-visible events: what every back end does the same way.

Whatever the technique, an exception, system call or interrupt that the guest
kernel is meant to see is delivered through the guest's IDT (delivery.py); it is
one microsecond of virtual time; a pending external interrupt is recognised at
that instruction boundary if the guest has interrupts enabled; and a halted CPU
sleeps until the next interrupt.  Back ends differ only in whose view of the CPU
the delivery uses and what the events are counted as.
"""
from dataclasses import dataclass
from functools import partial

from . import x86
from .delivery import Event, InterruptPath, int_length
from .errors import GuestStop


@dataclass(frozen=True)
class EventNames:
    """Counter names for the events of one back end."""
    irq: str
    hlt: str
    irq_exits: tuple = ()         # also counted per injected interrupt (a VMM's exit)


class GuestEvents:
    def __init__(self, machine, cpu_view, names):
        self.machine = machine
        self.path = InterruptPath(machine.mem, cpu_view, machine.clock, machine.where)
        self.names = names
        # deliver(event, eflags=None): an event through the guest's IDT
        # (bound with partial, which adds no Python frame to the commonest
        # call of an exit).
        self.deliver = partial(self.path.deliver, machine.state)

    def interrupt_first(self, software, backend, exits=True):
        """Interrupts are recognised at instruction boundaries: if one is pending
        (the caller checked that the guest has IF set), the CPU takes it *before*
        the instruction that just exited, which runs again after the handler's
        iret.  False if nothing is pending."""
        m, st = self.machine, self.machine.state
        if m.pending_irq() is None:
            return False
        if software:
            back = int_length(backend.guest_view(), st, m.exit_vector)
            if back is None:
                return False          # unusual encoding: take the interrupt later
            st.eip = st.eip - back
        self.inject(exits)
        return True

    # [tour native 90, trap 160, hw 130, bt 170] An external interrupt reaches the guest.
    # The PIC gives the vector (the timer's, the disk's) and the same delivery path
    # takes it through the guest's IDT. Under a VMM this is an injection: the VMM took
    # the real interrupt and enters the guest with the virtual one (inject.irq, and
    # exit.irq for the exit that brought the VMM in).
    def inject(self, exits=True):
        """Deliver the pending interrupt.  `exits`: it is also counted as the
        VMM entry it takes (names.irq_exits); False when the VMM was entered
        for something else that is already counted (a translator's callout)."""
        m = self.machine
        vector = m.pic.acknowledge()
        c = m.counters
        c[self.names.irq] += 1
        for name in self.names.irq_exits if exits else ():
            c[name] += 1
        self.deliver(Event(vector))

    # [tour native 100] hlt: sleep until the next interrupt.
    # In virtual time that is a jump of the clock to the next armed device event, not
    # a wait.
    def halt(self, guest_if, hlt_eip):
        """The guest executed HLT (EIP is past it): sleep until an interrupt."""
        m = self.machine
        m.counters[self.names.hlt] += 1
        if not guest_if:
            raise GuestStop("halted with interrupts disabled at " + m.where(hlt_eip))
        # A device that fires while its line is masked, or blocked behind one
        # still in service, wakes nothing, and the PIC cannot change while the
        # CPU sleeps: once every armed device has fired again and left the
        # PIC as it was, the guest sleeps for ever (a PC would hang).
        horizon = None
        while m.pending_irq() is None:
            before = m.pic.state()
            if not m.clock.idle_until_next():
                raise GuestStop("halted with nothing armed to wake it at " + m.where(hlt_eip))
            if m.pending_irq() is not None:
                break
            if m.pic.state() != before:
                horizon = None
            elif horizon is None:
                horizon = m.clock.last_deadline()
            elif m.clock.now_ns >= horizon:
                raise GuestStop("halted with interrupts enabled, but every interrupt armed to "
                                "wake it is masked or blocked at the PIC, at " + m.where(hlt_eip))
        self.inject()

    def exception_event(self, vector):
        """The Event for a CPU exception that just exited (error code from the
        CPU when the vector has one)."""
        st = self.machine.state
        err = st.error_code if vector in x86.ERROR_CODE_VECTORS else None
        return Event(vector, err)


def vector_name(vector):
    return x86.VECTOR_NAMES.get(vector, str(vector)).lstrip("#").lower()
