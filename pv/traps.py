"""Exceptions, system calls and events into a PV guest kernel.

The guest kernel gives the hypervisor a *trap table* (set_trap_table) instead
of loading an IDT: per vector, the handler, the lowest ring that may `int` to
it, and whether events are masked on entry (TI_SET_IF, the virtual interrupt
gate).  Three ways lead into the guest kernel:

  - a **bounce**: an exception (or an `int n`) enters the hypervisor, which
    builds the frame the CPU would have built for that gate on the guest
    kernel's stack and enters the handler at ring 1 (Xen's
    create_bounce_frame).  EFLAGS.IF in the frame shows the virtual IF, the
    event mask; a page fault's address goes to `vcpu_info.arch.cr2`, since the
    kernel cannot read CR2 at ring 1;
  - the **direct trap**: a system-call vector registered for ring 3 without
    TI_SET_IF is put into the real IDT as a trap gate, and the kernel stack
    into the real TSS, so that `int 0x80` from user code reaches the kernel
    through the CPU alone.  No hypervisor entry: this is why a system call
    under pv costs what it costs natively (Barham et al., section 3.3);
  - an **upcall**: pending events enter the guest's event callback as if an
    interrupt had arrived (events.py says when).

All three are deliveries through a gate table, so they use the one delivery
path of virtlab/delivery.py, each with its view of the CPU: the real one for
the direct trap (it *is* the hardware's), and for the other two the real CPU
with the guest's trap table, or its callback, in place of the IDT and the
event mask in place of IF (PvCpuView).
"""
from virtlab import x86
from virtlab.delivery import (DeliveryFault, Event, InterruptPath, RealCpuView,
                              int_length, read_descriptor)
from virtlab.errors import GuestStop
from virtlab.guest_events import vector_name
from virtlab.memory import GuestMemoryFault

from . import abi, layout as L

SYSCALL_VECTOR = 0x80
_FRAME_WORDS = 4                     # EAX, EIP, CS, EFLAGS of the iret hypercall

# Made once, as delivery.SOFTWARE_INT is (an Event is never changed after it
# is made): the Event of each exception that carries no error code, the
# upcall's, and the name each vector is counted under when bounced.
EXCEPTION = tuple(Event(vector) for vector in range(256))
_UPCALL = Event(0)
_BOUNCE_COUNTER = tuple("pv.bounce." + vector_name(vector) for vector in range(256))


class PvCpuView(RealCpuView):
    """The CPU as a bounce or an upcall sees it: real segments, paging and TSS,
    the gate table at `table` instead of the real IDT, and the event mask
    instead of IF (the real IF stays set while the guest runs)."""

    def __init__(self, state, shared, table):
        super().__init__(state)
        self.shared = shared
        self.table = table
        # The event mask's byte, read and written in place by the two methods
        # below (not by calls to the shared-info page: every bounce and
        # upcall calls both).
        self._view, self._mask_at = shared.view, shared.mask_at

    def idtr(self):
        return (self.table, L.IDT_LIMIT)

    def flags_for_frame(self, eflags):
        eflags &= ~(x86.IF | x86.IOPL_MASK)
        return eflags if self._view[self._mask_at] else eflags | x86.IF

    def entry_flags(self, eflags, kept):
        if not kept & x86.IF:
            self._view[self._mask_at] = 1
        return (eflags & kept & ~x86.IOPL_MASK) | x86.IF

    def set_cr2(self, value):
        self.shared.set_cr2(value)


class Traps:
    def __init__(self, machine, space, shared):
        self.machine = machine
        self.space = space
        self.shared = shared
        st = machine.state
        self.bounce_path = self._path(PvCpuView(st, shared, L.VIDT_LINEAR))
        self.upcall_path = self._path(PvCpuView(st, shared, L.CALLBACK_IDT_LINEAR))
        self.direct_path = self._path(RealCpuView(st))
        self.handlers = {}             # vector -> (flags, address): the trap table
        self.direct_int80 = False
        self.callback = None           # the event callback's EIP

    def _path(self, cpu):
        m = self.machine
        return InterruptPath(m.mem, cpu, m.clock, m.where,
                             who="pv: cannot enter the guest kernel: ")

    # -- what the guest registers ------------------------------------------------------
    # [tour pv 150] The trap table replaces the IDT.
    # The guest registers its handlers with set_trap_table; the hypervisor builds the
    # real IDT from them.  The system-call vector may become a direct trap gate: then
    # `int 0x80` from user mode reaches the guest kernel without entering Xen at all.
    def set_traps(self, entries):
        """set_trap_table: each (vector, flags, cs, address) replaces that
        vector's entry; None clears the table."""
        if entries is None:
            for vector in list(self.handlers):
                self._set(vector, 0, 0)
            return 0
        if any(cs != abi.FLAT_KERNEL_CS for _, _, cs, _ in entries):
            return -abi.EINVAL
        for vector, flags, _, address in entries:
            self._set(vector, flags, address)
        return 0

    def _set(self, vector, flags, address):
        gate = x86.GATE_INTR32 if flags & abi.TI_SET_IF else x86.GATE_TRAP32
        self.space.set_gate(self.space.vidt, vector, abi.FLAT_KERNEL_CS, address, gate,
                            flags & abi.TI_DPL_MASK)
        if address:
            self.handlers[vector] = (flags, address)
        else:
            self.handlers.pop(vector, None)
        if vector == SYSCALL_VECTOR:
            self._direct_trap(flags, address)

    def _direct_trap(self, flags, address):
        """Xen's int80 direct trap: only a gate the CPU can run without the
        hypervisor (any ring may use it, and it leaves events alone, which a
        hardware gate could not mask) goes into the real IDT."""
        self.direct_int80 = bool(address) and flags & abi.TI_DPL_MASK == 3 \
            and not flags & abi.TI_SET_IF
        self.space.set_gate(self.space.idt, SYSCALL_VECTOR, abi.FLAT_KERNEL_CS,
                            address if self.direct_int80 else 0, x86.GATE_TRAP32, 3)

    def stack_switch(self, ss, esp):
        if ss != abi.FLAT_KERNEL_SS:
            return -abi.EINVAL
        self.space.set_kernel_stack(ss, esp)
        return 0

    def set_callbacks(self, event_cs, event_eip, failsafe_cs, failsafe_eip):
        """The event callback, as the one interrupt gate of its own table (an
        upcall masks events).  The failsafe callback is accepted and kept by
        Xen for faults while it reloads segments on the way out; this
        hypervisor never takes that path."""
        if event_cs != abi.FLAT_KERNEL_CS or failsafe_cs != abi.FLAT_KERNEL_CS:
            return -abi.EINVAL
        self.callback = event_eip or None
        self.space.set_gate(self.space.cbidt, 0, abi.FLAT_KERNEL_CS, event_eip,
                            x86.GATE_INTR32, 0)
        return 0

    # -- into the guest --------------------------------------------------------------------
    # [tour pv 160] A fault, bounced to the guest kernel.
    # Every exception enters the hypervisor first (its IDT is the real one); it builds
    # the frame the guest's handler expects and enters the kernel there (pv.bounce).
    def bounce(self, event):
        """An exception or software interrupt, bounced to the guest kernel.
        An `int n` the table does not allow is the #GP the gate check raises,
        with EIP at the `int`, delivered in its place."""
        m = self.machine
        if event.software and not self._may_int(event.vector) and self.back_to_int():
            event = Event(x86.GP, event.vector * 8 + 2)     # the gate check fails at the int
        if not event.software and event.vector not in self.handlers:
            raise GuestStop(f"pv: {_name(event)} at {m.where()}, and the guest kernel "
                            "registered no handler for it (set_trap_table)")
        c = m.counters
        c["pv.bounce"] += 1
        c["pv.bounce.syscall" if event.software else _BOUNCE_COUNTER[event.vector]] += 1
        self.bounce_path.deliver(m.state, event)

    def _may_int(self, vector):
        """May the current ring `int` to this vector (the entry's ring field)?"""
        entry = self.handlers.get(vector)
        return entry is not None and entry[0] & abi.TI_DPL_MASK >= self.machine.state.cpl

    # [tour pv 220] The event upcall.
    # The guest's event callback is entered like an interrupt handler, with events
    # masked (evtchn.upcall).
    def upcall(self):
        m = self.machine
        m.counters["evtchn.upcall"] += 1
        self.upcall_path.deliver(m.state, _UPCALL)

    def back_to_int(self):
        """Rewind EIP to the `int` that just trapped, so that it runs again
        after an upcall taken first."""
        st = self.machine.state
        back = int_length(self.machine.backend.guest_view(), st, self.machine.exit_vector)
        if back is None:
            return False
        st.eip = st.eip - back
        return True

    # -- the iret hypercall -------------------------------------------------------------
    def iret(self, view):
        """Pop EAX, EIP, CS, EFLAGS (and ESP, SS for ring 3) from the guest
        kernel's stack, and restore the event mask from EFLAGS.IF: a return
        and an unmask in one step.  A frame that would enter ring 0 or that
        cannot be read ends the run (Xen crashes the domain)."""
        m, st = self.machine, self.machine.state
        sp = (st.seg_base_of("ss") + st.reg("esp")) & 0xFFFFFFFF
        try:
            eax, eip, cs, eflags = (view.u32(sp + 4 * i) for i in range(_FRAME_WORDS))
            outer = (cs & 3) == 3
            esp, ss = (view.u32(sp + 16), view.u32(sp + 20)) if outer else (None, None)
            self._load("cs", cs & 0xFFFF, 3 if outer else 1)
            if outer:
                self._load("ss", ss & 0xFFFF, 3)
        except (GuestMemoryFault, DeliveryFault) as exc:
            raise GuestStop(f"pv: iret hypercall with a bad frame at {m.where()}: {exc}") from None
        st.set_reg("eax", eax)
        st.eip = eip
        st.set_reg("esp", esp if outer else (st.reg("esp") + 4 * _FRAME_WORDS) & 0xFFFFFFFF)
        st.set_eflags((eflags & ~(x86.IOPL_MASK | x86.VM | x86.NT)) | x86.IF | 0x2)
        self.shared.set_mask(not eflags & x86.IF)

    def _load(self, name, selector, ring):
        """Load a segment register from the real GDT, as iret would: only
        Xen's flat selectors of the guest's rings are acceptable."""
        wanted = {("cs", 1): abi.FLAT_KERNEL_CS, ("cs", 3): abi.FLAT_USER_CS,
                  ("ss", 3): abi.FLAT_USER_DS}[(name, ring)]
        if selector != wanted:
            raise DeliveryFault(x86.GP, selector, f"{name} {selector:#x} is not {wanted:#x}")
        st = self.machine.state
        lo, hi = read_descriptor(self.machine.backend.guest_view(), st.table("gdt"), selector)
        st.set_segment(name, selector, x86.seg_base(lo, hi), x86.seg_limit(lo, hi), hi)


def _name(event):
    if event.software:
        return f"int {event.vector:#x}"
    return x86.VECTOR_NAMES.get(event.vector, f"vector {event.vector}")
