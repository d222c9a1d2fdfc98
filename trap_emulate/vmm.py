"""What every trapping VMM here has: a virtual CPU, machine memory, a shadow MMU
(unless the hardware pages for it), and the exits these cause.

`trap` and `hw` differ in where the guest kernel runs and which instructions
exit; both keep the guest's CR0/CR3/CR4 in the virtual CPU, give the real CPU
shadow page tables, and handle a real page fault the same way: hidden (fill or
trace) or the guest's own (reflected).
"""
from virtlab import x86
from virtlab.backend import Backend
from virtlab.delivery import Event
from virtlab.machine import GuestStop
from virtlab.memory import LinearView

from . import vmm_memory
from .emulate import Emulator, Unsupported, emulate_store
from .shadow import HIDDEN, TRACE, ShadowMmu, Violation
from .vcpu import VirtualCpu


class Vmm(Backend):
    machine_memory = vmm_memory.SIZE
    window = False                     # map the VMM window into every shadow?

    def attach(self, machine):
        super().attach(machine)
        self.vcpu = VirtualCpu()
        self.emulator = Emulator(self)
        if not self.machine_memory:
            return                     # nested paging: no shadows, no VMM memory
        self.vmm = vmm_memory.VmmMemory(machine)
        window_pde = self.vmm.window_pde() if self.window else None
        self.mmu = ShadowMmu(machine, self.vcpu, self.vmm, window_pde)

    def guest_view(self):
        return LinearView(self.machine.mem, *self.vcpu.paging_regs())

    def live_view(self):
        # Under shadow paging the guest's paging registers are the virtual
        # CPU's, which every change reaches through an exit: always current.
        return self.guest_view()

    def decode_current(self):
        st = self.machine.state
        return self.machine.decoder.at(self.guest_view(),
                                       (st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF)

    def count_exit(self, kind):
        c = self.machine.counters
        c["exit.total"] += 1
        c["exit." + kind] += 1

    # -- page faults under shadow paging -----------------------------------------
    def shadow_page_fault(self):
        """A real #PF.  Returns the guest's Event if the fault is the guest's own
        (to reflect), None if the VMM absorbed it."""
        m, st = self.machine, self.machine.state
        linear = st.cr(2)
        try:
            kind, detail = self.mmu.fault(linear, st.error_code)
        except Violation as v:
            raise GuestStop(f"isolation: {v} at {m.where()}") from None
        if kind == HIDDEN:
            self.count_exit("pf.hidden")
            m.counters["shadow.fill"] += 1
            return None
        if kind == TRACE:
            self.count_exit("pf.hidden")
            m.counters["shadow.trace"] += 1
            self._traced_write(detail)
            return None
        self.count_exit("pf.true")
        return Event(x86.PF, detail, cr2=linear)

    def _traced_write(self, gpa):
        m, st = self.machine, self.machine.state
        decoded = self.decode_current()
        try:
            size = emulate_store(decoded, st, m.mem, gpa)
        except Unsupported as exc:
            # A bulk store (rep stos/movs): the guest is reusing the frame as
            # data.  Stop tracing it; the instruction runs again, natively.
            if not self.mmu.untrace(gpa & x86.PAGE_MASK):
                raise GuestStop(f"cannot emulate at {m.where()}: {exc}") from None
            return
        self.mmu.traced_write(gpa, size)
        m.emulated()

    # -- port I/O: every access exits -------------------------------------------
    def port_in(self, port, size):
        m = self.machine
        self.count_exit("io")
        m.clock.tick()
        return m.bus.read(port, size)

    def port_out(self, port, size, value):
        m = self.machine
        self.count_exit("io")
        m.clock.tick()
        m.bus.write(port, size, value)

    # -- control registers (called by the Emulator) -----------------------------
    def write_cr(self, n, value):
        v = self.vcpu
        if n == 0:
            paging_before, wp_before = v.paging, v.cr0 & x86.CR0_WP
            v.cr0 = value | x86.CR0_ET
            if (v.cr0 & x86.CR0_WP) != wp_before:
                self.mmu.reset()               # write rights were derived under the old WP
            if v.paging != paging_before or not self.mmu.current:
                self.switch_shadow()
        elif n == 2:
            v.cr2 = value
        elif n == 3:
            if v.paging and (value & x86.PAGE_MASK) + 0x1000 > self.machine.mem.size:
                raise GuestStop(f"isolation: CR3 load of {value:#x}, beyond RAM, at "
                                f"{self.machine.where()}")
            v.cr3 = value
            if v.paging:
                self.switch_shadow()
        elif n == 4:
            if (v.cr4 ^ value) & x86.CR4_PSE:
                self.mmu.reset()               # 4 MiB pages appear or disappear
            v.cr4 = value
            self.switch_shadow()
        else:
            raise Unsupported(f"mov to cr{n}")

    def read_cr(self, n):
        v = self.vcpu
        regs = {0: v.cr0, 2: v.cr2, 3: v.cr3, 4: v.cr4}
        if n not in regs:
            raise Unsupported(f"mov from cr{n}")
        return regs[n]

    def switch_shadow(self):
        """Point the real CR3 at the shadow of the guest's current tables (the
        state area carries it; the TLB flush is what a CR3 load implies)."""
        self.machine.state.set_cr(3, self.mmu.activate())
        self.machine.flush_tlb()

    def invlpg(self, linear):
        self.mmu.invlpg(linear)
