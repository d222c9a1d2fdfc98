"""`trap`: classic trap-and-emulate with ring compression.

The guest kernel runs at real ring 1, its programs at ring 3, and the VMM owns
ring 0's job: every exception and interrupt stops in the VMM first.

  - A privileged instruction in the guest kernel faults (#GP); the VMM decodes
    it and emulates it against the virtual CPU (exit.priv).
  - Port I/O exits to the device models (exit.io).
  - A page fault is either hidden (the shadow MMU fills an entry or emulates a
    write to a traced guest page table: exit.pf.hidden) or the guest's own, and
    then reflected into the guest kernel with the guest's CR2 (reflect.pf).
  - System calls and other exceptions are reflected through the guest's IDT
    (reflect.syscall, reflect.exception).
  - HLT is emulated: the virtual CPU sleeps until the next interrupt, which is
    injected through the guest's IDT when the virtual IF allows it.

What it cannot do is the point of the technique's history: popf, pushf, sgdt,
sidt, sldt, smsw, str, push cs/ss, mov from a segment register, lar, lsl, verr
and verw are sensitive but do not trap at ring 1, so they run unmodified and
tell the guest the truth about the real CPU (sensitive.py counts them).
"""
from capstone import x86_const as C

from virtlab import fastcall, x86
from virtlab.counters import EXITS, REFLECTION, SENSITIVE, SHADOW
from virtlab.delivery import DeliveryFault, Event
from virtlab.guest_events import EventNames, GuestEvents, vector_name
from virtlab.errors import GuestStop
from virtlab.memory import GuestMemoryFault

from virtlab.vmm import gates, rings, memory as vmm_memory
from virtlab.vmm.emulate import NotPrivileged, Unsupported
from virtlab.vmm.reflect import VirtualCpuView
from virtlab.vmm.sensitive import SensitiveAudit
from virtlab.vmm.monitor import Vmm



class Trap(Vmm):
    name = "trap"
    summary = "classic trap-and-emulate: guest kernel at ring 1, shadow paging"
    counters = EXITS + REFLECTION + SHADOW + SENSITIVE
    window = True
    kernel_ring = 1
    # Every fidelity workload reads state that ring compression cannot hide
    # (popf, pushf, sidt/sgdt, push cs, smsw): details.sensitive names them.
    unfaithful = ("fidelity.*",)

    def attach(self, machine):
        super().attach(machine)
        self.vmm = self.paging.vmm
        self.gdt = rings.ShadowGdt(self.vmm)
        self.view = VirtualCpuView(machine.state, self.vcpu)
        self.events = GuestEvents(machine, self.view, EventNames(
            irq="inject.irq", hlt="exit.hlt", irq_exits=("exit.total", "exit.irq")))
        self.audit = SensitiveAudit(machine, self)
        machine.intercepts.watch(_select_kernel_iret, self._kernel_iret)

    # -- entering the guest ---------------------------------------------------
    def boot(self):
        """The boot protocol's state, with the guest kernel moved to ring 1:
        the shadow GDT in the VMM window, real paging on over the flat shadow."""
        m = self.machine
        self.paging.boot()
        st = m.state
        st.save()
        st.set_table("idt", self.vmm.linear(vmm_memory.IDT_OFF), 0x7FF)
        base, limit = self.gdt.sync(self.guest_view(), self.vcpu.gdtr)
        self._set_real_gdtr(base, limit)
        for name in ("cs", "ss", "ds", "es", "fs", "gs"):
            self._load_segment(name, st.seg_selector(name))
        st.set_eflags(x86.IF | 0x2)
        st.load()

    def _set_real_gdtr(self, base, limit):
        self.machine.state.set_table("gdt", base, limit)

    def _load_segment(self, name, selector):
        d = self.gdt.descriptor(self.guest_view(), self.vcpu.gdtr, selector)
        if d is None:
            raise GuestStop(f"cannot load {name} with selector {selector:#x}")
        ring = rings.guest_ring(self.machine.state.cpl) if name != "cs" else x86.seg_dpl(d[1])
        self.machine.state.set_segment(name, *rings.segment_cache(selector, *d, ring))

    # -- exits ----------------------------------------------------------------
    def exception(self, vector):
        st = self.machine.state
        # An exit is counted once its kind is known: if a pending interrupt is
        # taken first, the exit is the interrupt's (exit.irq), and the
        # instruction exits again when it is retried.
        if st.is_software_int:
            return self._reflect_software(vector)
        if vector == x86.PF:
            event = self.shadow_page_fault()
            if event is not None:
                self._reflect(event)
            return
        if vector == x86.GP and self._call_gate():
            return
        if vector == x86.GP and st.cpl == 1 and self._privileged():
            return
        self._reflect(self.events.exception_event(vector))

    def _privileged(self):
        """Emulate the instruction that raised #GP in the guest kernel; False if
        it is not one the VMM virtualizes (the #GP is then the guest's own)."""
        m = self.machine
        decoded = self.decode_current()
        if decoded is None:
            return False
        try:
            name = self.emulator.emulate(decoded)
        except NotPrivileged:
            return False
        except Unsupported as exc:
            raise GuestStop(f"cannot emulate at {m.where()}: {exc}") from None
        m.counters["exit.total"] += 1
        if name != "hlt":                  # a halt is counted once, as exit.hlt
            m.counters["exit.priv"] += 1
            m.counters["exit.priv." + name] += 1
        m.emulated()
        return True

    def _call_gate(self):
        """A far call or jmp through one of the guest's call gates, which the
        shadow GDT does not carry: performed by the VMM (vmm/gates.py says why
        not by the CPU) into the guest kernel at real ring 1, as a reflected
        system call.  False if the #GP had another cause."""
        m = self.machine
        decoded = self.decode_current()
        if decoded is None:
            return False
        try:
            if not gates.through_call_gate(self.view, m.state, self.guest_view(), decoded):
                return False
        except DeliveryFault as fault:
            self._reflect(Event(fault.vector, fault.error_code))
            return True
        except GuestMemoryFault as fault:
            self._reflect(Event(x86.PF, fault.error_code, cr2=fault.linear))
            return True
        self._count_syscall()
        m.clock.tick()
        m.emulated()
        return True

    def sysenter(self):
        """SYSENTER from the guest (any ring): a system call reflected into the
        guest kernel, whose ring 0 is the real ring 1 (the flat caches are
        compressed like its descriptors).  The MSRs are the guest's, kept in
        the vCPU by its emulated wrmsr; the virtual IF is cleared, the real
        one stays set."""
        m, st = self.machine, self.machine.state
        if self.view.virtual_if() and self.events.interrupt_first(False, self):
            return False
        msrs = self.vcpu.msrs
        cs = msrs.get(fastcall.SYSENTER_CS, 0) & 0xFFFF
        if cs & 0xFFFC == 0:
            self._reflect(Event(x86.GP, 0))
            return False
        self._count_syscall()
        m.clock.tick()
        fastcall.enter_kernel(st, self.view, cs, msrs.get(fastcall.SYSENTER_ESP, 0) & 0xFFFFFFFF,
                              msrs.get(fastcall.SYSENTER_EIP, 0) & 0xFFFFFFFF)
        self.vcpu.if_ = False
        st.set_eflags((st.eflags() & ~(x86.VM | x86.RF)) | x86.IF)
        return True

    def _kernel_iret(self, address, kind):
        """The guest kernel's iret to an outer ring runs natively at ring 1,
        where the CPU leaves IOPL alone (it loads it only at CPL 0): the
        virtual IOPL the frame gives is recorded here, for the I/O permission
        check of the user code it returns to.  Not an exit (VT-x would not
        see it either, so it is an observer, not an exit): the iret then runs
        natively."""
        st = self.machine.state
        st.save()
        try:
            view = self.guest_view()
            if view.read(address, 1) != b"\xcf":
                return                       # other code now lives at this address
            at = (st.seg_base_of("ss") + st.reg("esp")) & 0xFFFFFFFF
            cs, eflags = view.u32(at + 4) & 0xFFFF, view.u32(at + 8)
        except GuestMemoryFault:
            return                           # the iret faults; nothing changes
        if cs & 3 > 1:
            self.vcpu.iopl = (eflags & x86.IOPL_MASK) >> x86.IOPL_SHIFT

    # -- reflection ---------------------------------------------------------------
    def _reflect_software(self, vector):
        if self.view.virtual_if() and self.events.interrupt_first(True, self):
            return
        self._count_syscall()
        self.events.deliver(Event(vector, software=True))

    def _count_syscall(self):
        """One system call reflected into the guest kernel (int n, sysenter or
        a call gate): one exit, one reflection."""
        c = self.machine.counters
        c["exit.total"] += 1
        c["reflect.total"] += 1
        c["reflect.syscall"] += 1

    def _reflect(self, event):
        if self.view.virtual_if() and self.events.interrupt_first(False, self):
            return
        c = self.machine.counters
        c["reflect.total"] += 1
        if event.vector == x86.PF:
            self.count_exit("pf.true")
            c["reflect.pf"] += 1
        else:
            c["exit.total"] += 1
            c["reflect.exception"] += 1
            c["reflect.exception." + vector_name(event.vector)] += 1
        self.events.deliver(event)

    def invalid_opcode(self):
        base, limit = self.vcpu.idtr
        if x86.UD * 8 + 7 > limit:
            return False
        self._reflect(Event(x86.UD))
        return True

    def io_permitted(self, port, size):
        """Ring compression: the check is made against the guest's own view,
        its virtual IOPL and the TSS its `ltr` named."""
        from virtlab.backend import io_bitmap_allows
        if self.machine.state.cpl != 3 or self.vcpu.iopl == 3:
            return True
        sel, base, limit = self.vcpu.tr
        return io_bitmap_allows(self.guest_view(), base, limit, port, size)

    def halted(self):
        raise GuestStop("the CPU halted at real ring 0, which the guest never runs at")

    # -- effects of emulated instructions (called by the Emulator) ---------------
    def halt(self):
        self.events.halt(self.vcpu.if_, self.machine.state.eip - 1)

    def load_table(self, which, base, limit):
        if which == "gdt":
            self.vcpu.gdtr = (base, limit)
            self._set_real_gdtr(*self.gdt.sync(self.guest_view(), (base, limit)))
        else:
            self.vcpu.idtr = (base, limit)

    def load_tr(self, selector):
        d = self.gdt.descriptor(self.guest_view(), self.vcpu.gdtr, selector)
        if d is None or (d[1] >> 8) & 0xF not in (0x9, 0xB):
            raise GuestStop(f"ltr of a non-TSS selector {selector:#x} at {self.machine.where()}")
        self.vcpu.tr = (selector, x86.seg_base(*d), x86.seg_limit(*d))
        # As the CPU does: mark the TSS busy in the guest's own descriptor.
        base, _ = self.vcpu.gdtr
        self.guest_view().write(base + (selector & ~7) + 4, (d[1] | 0x200).to_bytes(4, "little"))

    def load_ss(self, selector):
        self._load_segment("ss", selector)

    def emulate_return(self, far_iret, extra=0):
        """IRETD or RETF back into the guest kernel: the frame holds CS with RPL
        0, which the CPU refuses at ring 1.  Pop EIP and CS (and EFLAGS for
        iret, restoring the virtual IF from it) and stay at ring 1."""
        st = self.machine.state
        esp = st.reg("esp")
        view = self.guest_view()
        ss_base = st.seg_base_of("ss")
        words = 3 if far_iret else 2
        try:
            frame = [view.u32(ss_base + esp + 4 * i) for i in range(words)]
        except GuestMemoryFault:
            raise NotPrivileged() from None
        eip, cs = frame[0], frame[1] & 0xFFFF
        if cs & 3 != 0:
            raise NotPrivileged()
        self._load_segment("cs", cs)
        st.eip = eip
        st.set_reg("esp", esp + 4 * words + extra)
        if far_iret:
            eflags = frame[2]
            self.vcpu.if_ = bool(eflags & x86.IF)
            self.vcpu.iopl = (eflags & x86.IOPL_MASK) >> x86.IOPL_SHIFT   # CPL 0 loads IOPL
            st.set_eflags((eflags & ~(x86.IOPL_MASK | x86.VM | x86.RF)) | x86.IF)

    def report(self):
        return {"sensitive": self.audit.sightings()}


def _select_kernel_iret(insn, cpl):
    """The guest kernel's 32-bit iret (its frames are 32-bit; a 16-bit iret
    from the kernel would pop a frame this VMM does not read)."""
    return "iret_out" if cpl == 1 and insn.id == C.X86_INS_IRETD else None
