"""How a VMM virtualizes the guest's paging: one of two components.

A guest kernel believes it owns CR0, CR3 and CR4 and that the CPU walks its page
tables.  A VMM has two ways to let it believe that:

  ShadowPaging   the guest's paging registers live in the virtual CPU; the real
                 CPU walks shadow page tables that the VMM builds from the guest's
                 (shadow.py).  Every CR3 load, INVLPG and first touch of a page
                 reaches the VMM, and so do writes to traced page tables.  This is
                 what trap and bt do, and what VT-x did before 2008.
  NestedPaging   the real CPU walks the guest's own tables, and a second level of
                 translation (EPT/NPT) keeps the guest inside its RAM.  The guest's
                 paging registers are the real ones; CR3 loads, INVLPG and page
                 faults never leave the guest.

A back end holds one of these and asks it the paging questions (which view of
guest memory, what a CR write does, whether a #PF is the VMM's), so the
technique is a component and not a flag tested in many places.
"""
from virtlab import x86
from virtlab.delivery import Event, linear_view
from virtlab.errors import GuestStop
from virtlab.memory import LinearView
from virtlab.scratch_cpu import kept_control_register

from . import memory as vmm_memory
from .emulate import Unsupported
from .pt_store import emulate_store
from .shadow import HIDDEN, TRACE, ShadowMmu, Violation

# The real CR0 while the guest runs on shadow tables: protected mode and paging
# always on (the flat shadow stands in for "paging off"), and write protection
# always on so that ring-1 and ring-0 writes to traced page tables fault: the
# VMM's choice, which `smsw` in the guest gives away (fidelity.smsw).
SHADOW_CR0 = x86.CR0_PE | x86.CR0_ET | x86.CR0_WP | x86.CR0_PG
# The other bits of CR0 and CR4 that decide how instructions execute, not how
# memory is translated or protected, are the guest's in the real registers too
# (VT-x gives them to the guest through its CR0/CR4 guest/host masks): an x87 or
# SSE instruction after the kernel sets CR0.TS or EM raises #NM, which lazy FPU
# switching relies on, and `fwait` too only if it set MP (this VMM never uses
# the FPU itself, so it has no reason to set MP for its own switching); an x87
# error is #MF only if the kernel set NE, and SSE works once it sets
# CR4.OSFXSR.  (CR4.TSD stays virtual: the guest kernel runs above ring 0, and
# tsc.py answers rdtsc at its ring.)
GUEST_CR0 = x86.CR0_MP | x86.CR0_EM | x86.CR0_TS | x86.CR0_NE | x86.CR0_AM
GUEST_CR4 = x86.CR4_DE | x86.CR4_PCE | x86.CR4_OSFXSR | x86.CR4_OSXMMEXCPT | x86.CR4_OSXSAVE


class ShadowPaging:
    machine_memory = vmm_memory.SIZE
    virtual_registers = True     # the guest's CR0/CR3/CR4 are the vCPU's, not the CPU's

    def __init__(self, machine, vcpu, window=False):
        self.machine = machine
        self.mem = machine.mem
        self.vcpu = vcpu
        self.vmm = vmm_memory.VmmMemory(machine)
        self.mmu = ShadowMmu(machine, vcpu, self.vmm,
                             self.vmm.window_pde() if window else None)
        self._shared = self.guest_view()

    def boot(self):
        """The real CPU starts on the flat shadow, paging on."""
        self.machine.set_paging(SHADOW_CR0 | (self.vcpu.cr0 & GUEST_CR0), self.mmu.activate())

    def guest_view(self):
        v = self.vcpu
        return LinearView(self.mem, v.cr0, v.cr3, v.cr4)

    def shared_view(self):
        """guest_view(), as one object for as long as the vCPU's paging
        registers stay the same: most exits read guest memory once or twice,
        and comparing three registers costs less than making a view.  For
        callers that only read and write through it (a LinearView has no
        other state); one that sets its on_write makes its own."""
        v, view = self.vcpu, self._shared
        if view.cr3 != v.cr3 or view.cr0 != v.cr0 or view.cr4 != v.cr4:
            view = self._shared = LinearView(self.mem, v.cr0, v.cr3, v.cr4)
        return view

    def live_view(self):
        # Every change of the guest's paging registers reaches the VMM through
        # an exit, so the vCPU's copy is always current, even inside a hook
        # that did not save the CPU.
        return self.guest_view()

    # -- page faults ------------------------------------------------------------
    # [tour trap 120, hw 80, bt 175] Shadow paging: a page fault, hidden or the guest's?
    # The real CPU walks shadow page tables that the VMM fills from the guest's on
    # demand.  A fault is hidden (a shadow entry missing, or a write to a traced guest
    # page table) or true (the guest's own tables say no): then it is reflected.
    def page_fault(self, count_exit):
        """A real #PF.  Returns the guest's Event if the fault is the guest's own
        (to reflect), None if the VMM absorbed it (a hidden fault).  A hidden
        fault is counted here; a true one by the caller when it reflects it
        (exit.pf.true), since a pending interrupt taken first makes the exit
        the interrupt's."""
        m, st = self.machine, self.machine.state
        linear = st.cr(2)
        try:
            kind, detail = self.mmu.fault(linear, st.error_code)
        except Violation as v:
            raise GuestStop(f"isolation: {v} at {m.where()}") from None
        if kind == HIDDEN:
            count_exit("pf.hidden")
            m.counters["shadow.fill"] += 1
            return None
        if kind == TRACE:
            count_exit("pf.hidden")
            m.counters["shadow.trace"] += 1
            self._traced_write(detail)
            return None
        return Event(x86.PF, detail, cr2=linear)

    step_after = None            # Vmm.step_after, bound by the VMM

    def _traced_write(self, gpa):
        m, st = self.machine, self.machine.state
        eflags = st.system_flags()
        decoded = m.decode_at_eip(self.shared_view())
        try:
            size = emulate_store(decoded, st, m.mem, gpa)
        except Unsupported as exc:
            # A bulk store (rep stos/movs): the guest is reusing the frame as
            # data.  Stop tracing it; the instruction runs again, natively.
            if not self.mmu.untrace(gpa & x86.PAGE_MASK):
                raise GuestStop(f"cannot emulate at {m.where()}: {exc}") from None
            return
        self.mmu.traced_write(gpa, size)
        if m.icount is not None:           # (m.emulated()'s test, inline: counting is rare)
            m.emulated()
        if eflags & x86.TF:                # the store completed here, not on the CPU
            self.step_after(eflags, "store")

    # -- the paging registers -----------------------------------------------------
    def write_cr(self, n, value):
        v = self.vcpu
        if n == 0:
            paging_before, wp_before = v.paging, v.cr0 & x86.CR0_WP
            v.cr0 = kept_control_register(0, value)
            if (v.cr0 & x86.CR0_WP) != wp_before:
                self.mmu.reset()               # write rights were derived under the old WP
            if v.paging != paging_before or not self.mmu.current:
                self.switch()
            self._give_guest_bits(0, v.cr0)
        elif n == 2:
            v.cr2 = value
        elif n == 3:
            if v.paging and (value & x86.PAGE_MASK) + 0x1000 > self.machine.mem.size:
                raise GuestStop(f"isolation: CR3 load of {value:#x}, beyond RAM, at "
                                f"{self.machine.where()}")
            v.cr3 = value
            if v.paging:
                self.switch()
        elif n == 4:
            value = kept_control_register(4, value)
            if (v.cr4 ^ value) & (x86.CR4_PSE | x86.CR4_PAE):
                self.mmu.reset()               # the guest's entries read differently
            v.cr4 = value
            self.switch()
            self._give_guest_bits(4, value)
        else:
            raise Unsupported(f"mov to cr{n}")

    def _give_guest_bits(self, n, value):
        """Carry the guest's GUEST_CR0 or GUEST_CR4 bits of `value` into the
        real CR0 or CR4 (a write with its side effects: QEMU keeps TS, EM, MP
        and OSFXSR in its translation flags)."""
        guest = GUEST_CR0 if n == 0 else GUEST_CR4
        real = self.machine.state.cr(n)
        wanted = (real & ~guest) | (value & guest)
        if wanted != real:
            self.machine.write_control_register(n, wanted)

    def read_cr(self, n):
        v = self.vcpu                  # the vCPU's control registers, CR3 first:
        if n == 3:                     # the one a guest reads most (VT-x exits on it)
            return v.cr3
        if n == 0:
            return v.cr0
        if n == 4:
            return v.cr4
        if n == 2:
            return v.cr2
        raise Unsupported(f"mov from cr{n}")

    def switch(self):
        """Point the real CR3 at the shadow of the guest's current tables.  The
        state area carries the new CR3 into the CPU when the exit returns; a
        context restore does not flush the TLB, so the machine is asked to, as
        a CR3 load would on the hardware."""
        self.machine.state.set_cr(3, self.mmu.activate())
        self.machine.flush_tlb_on_entry()

    def invlpg(self, linear):
        self.mmu.invlpg(linear)

    def watch_writes(self, frame, on_write):
        """on_write(frame) before the guest next writes guest frame `frame`
        (shadow.ShadowMmu.watch)."""
        self.mmu.watch(frame, on_write)

    def unwatch_writes(self, frame, on_write):
        self.mmu.unwatch(frame, on_write)


# [tour hw-npt 20] The paging component without shadows.
# The guest's paging registers are the real ones.  (The extra cost of a two-level walk
# on a TLB miss is not visible in the counters and is not modeled.)
class NestedPaging:
    machine_memory = 0
    virtual_registers = False    # the guest's CR0/CR3/CR4 are the real ones

    def __init__(self, machine, vcpu, window=False):
        self.machine = machine      # (no VMM window: nothing of the VMM is mapped)
        self.vcpu = vcpu

    def boot(self):
        """The guest starts as on bare hardware: paging off, its own CR0."""

    def guest_view(self):
        return linear_view(self.machine.state, self.machine.mem)

    shared_view = guest_view     # (the paging registers are the CPU's: nothing to keep)

    def live_view(self):
        return self.machine.live_view()

    def page_fault(self, count_exit):
        raise AssertionError("under nested paging a #PF never leaves the guest")

    # [tour hw-npt 60] The paging exits left: CR0 and CR4 writes.
    # Under shadow paging (ShadowPaging.write_cr above) a CR3 load switches to,
    # or builds, the shadow of the new address space.  Here the guest's CR3 is
    # the real one: only CR0 and CR4 writes exit, and the CPU performs them.
    def write_cr(self, n, value):
        """CR0/CR4 writes exit (the VT-x guest/host masks) and are then
        performed on the real CPU, which the guest owns under nested paging."""
        if n not in (0, 4):
            raise Unsupported(f"mov to cr{n}")
        value = kept_control_register(n, value)
        setattr(self.vcpu, f"cr{n}", value)
        self.machine.write_control_register(n, value)

    def read_cr(self, n):
        return self.machine.state.cr(n)

    def invlpg(self, linear):
        raise Unsupported("invlpg is not intercepted under nested paging")
