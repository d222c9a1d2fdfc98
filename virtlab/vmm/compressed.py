"""A guest kernel compressed into ring 1: what every VMM that deprivileges it
shares (trap-and-emulate and binary translation).

The guest kernel believes it runs at ring 0; the CPU runs it at ring 1 on a
shadow GDT (rings.py) and shadow page tables, and the VMM owns the real
interrupt path.  Whatever the technique does about the kernel's own
instructions, the rest is the same: the start state moved to ring 1, system
calls and exceptions reflected through the guest's IDT with the virtual CPU's
view (reflect.py), call gates and SYSENTER performed for the guest, returns
into the kernel (whose frames name ring 0) emulated, and the descriptor-table
registers kept in the virtual CPU.  `trap` lets the kernel's privileged
instructions fault into this; `bt` reaches the same code by callouts from its
translation cache.
"""
from capstone import x86_const as C

from virtlab import fastcall, x86
from virtlab.backend import io_bitmap_allows
from virtlab.delivery import DeliveryFault, Event, SOFTWARE_INT, fault_event, read_descriptor
from virtlab.errors import GuestStop
from virtlab.guest_events import EventNames, GuestEvents, vector_name
from virtlab.memory import GuestMemoryFault

from . import gates, loads, rings, memory as vmm_memory
from .emulate import NotPrivileged
from .monitor import Vmm
from .reflect import VirtualCpuView, enter_kernel_flags


class RingCompressedVmm(Vmm):
    """The base of `trap` and `bt`: guest kernel at real ring 1, user code at
    ring 3, shadow paging with the VMM window mapped in every shadow."""
    window = True
    kernel_ring = 1
    event_names = EventNames(irq="inject.irq", hlt="exit.hlt",
                             irq_exits=("exit.total", "exit.irq"))
    # emulate_privileged(decoded) -> True if the VMM emulated the instruction
    # that raised #GP in the guest kernel (trap's); None: every such #GP is
    # the guest's own.
    emulate_privileged = None

    def attach(self, machine):
        super().attach(machine)
        self.vmm = self.paging.vmm
        self.gdt = rings.ShadowGdt(self.vmm, self.paging.watch_writes)
        self.view = VirtualCpuView(machine.state, self.vcpu)
        self.events = GuestEvents(machine, self.view, self.event_names)

    # -- entering the guest ---------------------------------------------------
    # [tour trap 20, bt 30] Boot, deprivileged: the guest kernel moves to ring 1.
    # The boot protocol's state, but on a shadow GDT whose ring-0 descriptors are ring
    # 1 (rings.py), with the VMM's own IDT and real paging on over shadow page tables.
    # The guest believes what the virtual CPU tells it: paging off, its own GDT.
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
            self._load_segment(name, st.seg_selector(name), accessed=False)
        st.set_eflags(x86.IF | 0x2)
        st.load()

    def refuse_ring1(self, selector, d=None):
        """End the run if `selector` (its guest descriptor `d`, read here if
        not given) names a code segment of the guest's ring 1
        (rings.ring1_code): the one ring ring compression takes from the
        guest, and cannot give back."""
        d = d or self.gdt.descriptor(self.guest_view(), self.vcpu.gdtr, selector)
        if d is not None and rings.ring1_code(d[1]):
            raise GuestStop(f"{self.name}: code at the guest's ring 1 (selector {selector:#x}), "
                            f"entered at {self.machine.where()}: not supported, since ring "
                            f"compression runs the guest kernel at ring 1")

    def _set_real_gdtr(self, base, limit):
        self.machine.state.set_table("gdt", base, limit)

    def _load_segment(self, name, selector, accessed=True):
        """Load a segment register for the guest (as the CPU sets the
        accessed bit on a load, unless `accessed` is False: the start state,
        which the boot protocol lays out without a load)."""
        if accessed:
            self.gdt.mark_accessed(self.guest_view(), self.vcpu.gdtr, selector, name == "cs")
        d = self.gdt.descriptor(self.guest_view(), self.vcpu.gdtr, selector)
        if d is None:
            raise GuestStop(f"cannot load {name} with selector {selector:#x}")
        if name == "cs":
            self.refuse_ring1(selector, d)
        ring = rings.guest_ring(self.machine.state.cpl) if name != "cs" else x86.seg_dpl(d[1])
        self.machine.state.set_segment(name, *rings.segment_cache(selector, *d, ring))

    # -- call gates ---------------------------------------------------------------
    def _call_gate(self, decoded):
        """A far call or jmp through one of the guest's call gates, which the
        shadow GDT does not carry: performed by the VMM (vmm/gates.py says why
        not by the CPU) into the guest kernel at real ring 1, as a reflected
        system call.  False if the #GP had another cause.  `decoded`: the
        instruction at EIP (decode_current())."""
        m = self.machine
        if decoded is None or not gates.is_far_transfer(decoded.insn):
            return False
        target = gates.far_target(decoded, m.state, self.guest_view())
        if target is not None and not target & 4 and \
                gates.switches_tasks(self.guest_view(), self.vcpu.gdtr, target):
            raise GuestStop(f"{self.name}: a task switch at {m.where()}: not supported")
        from_user = m.state.cpl == 3
        try:
            if not gates.through_call_gate(self.view, m.state, self.guest_view(), decoded):
                return False
        except DeliveryFault as fault:
            self._reflect(Event(fault.vector, fault.error_code))
            return True
        except GuestMemoryFault as fault:
            self._reflect(Event(x86.PF, fault.error_code, cr2=fault.linear))
            return True
        if from_user and m.state.cpl != 3:
            enter_kernel_flags(m.state, self.vcpu)       # a gate keeps EFLAGS
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
        if st.cpl == 3:
            enter_kernel_flags(st, self.vcpu)
        self._count_syscall()
        m.clock.tick()
        fastcall.enter_kernel(st, self.view, cs, msrs.get(fastcall.SYSENTER_ESP, 0) & 0xFFFFFFFF,
                              msrs.get(fastcall.SYSENTER_EIP, 0) & 0xFFFFFFFF)
        self.vcpu.if_ = False
        st.set_eflags((st.eflags() & ~(x86.VM | x86.RF | x86.IOPL_MASK)) | x86.IF)
        return True

    # -- reflection ---------------------------------------------------------------
    def _reflect_software(self, vector):
        # Every system call comes here, so the small calls are inline:
        # view.virtual_if() (user code's IF is the real one, the kernel's the
        # vCPU's) and _count_syscall().  (pending_irq() first: nothing pending
        # is decided without interrupt_first's call, which asks it again.)
        m = self.machine
        st = m.state
        if (st.system_flags() & _IF if st.cpl == 3 else self.vcpu.if_) \
                and m.pending_irq() is not None and self.events.interrupt_first(True, self):
            return
        c = m.counters
        c["exit.total"] += 1
        c["reflect.total"] += 1
        c["reflect.syscall"] += 1
        self.events.deliver(SOFTWARE_INT[vector])

    def _count_syscall(self):
        """One system call reflected into the guest kernel (int n, sysenter or
        a call gate): one exit, one reflection."""
        c = self.machine.counters
        c["exit.total"] += 1
        c["reflect.total"] += 1
        c["reflect.syscall"] += 1

    # [tour trap 40, bt 150] Which exit is it?
    # A system call to reflect, a page fault for the shadow MMU, a call gate, the
    # first load of a descriptor, or, for a #GP at ring 1, a privileged instruction to
    # emulate.
    def guest_exception(self, vector):
        """An exception or `int n` the CPU raised while the guest ran: a system
        call or exception to reflect, a page fault for the shadow MMU, a far
        transfer through a call gate, or (emulate_privileged, tried for a #GP
        at ring 1) an instruction the VMM emulates."""
        # An exit is counted once its kind is known: if a pending interrupt is
        # taken first, the exit is the interrupt's (exit.irq), and the
        # instruction exits again when it is retried.
        if self.machine.state.is_software_int():
            return self._reflect_software(vector)
        if vector == x86.PF:
            event = self.paging.page_fault(self.count_exit)     # shadow_page_fault()
            if event is not None and not self.machine.fetched_early():
                self._reflect(event)
            return
        if vector == x86.GP:
            # Decoded once for both questions: a #GP exits for a call gate or a
            # privileged instruction, and the bytes at EIP cannot change between.
            # (decode_current(), and the cheap half of is_far_transfer before
            # _call_gate: one instruction id test, inline.)
            decoded = self.machine.decode_at_eip(self.guest_view())
            if decoded is not None and decoded.insn.id in _FAR_IDS and self._call_gate(decoded):
                return
            privileged = self.emulate_privileged
            if privileged is not None and self.machine.state.cpl == 1 and privileged(decoded):
                return
            if self.stale_load():
                return
        elif vector in _NOT_PRESENT and self.first_load():
            return
        event = self.events.exception_event(vector)
        self._refuse_ldt(event)
        self._reflect(event)

    def _refuse_unkept(self, selector):
        """A present segment of the guest's that its shadow cannot keep below
        the VMM window (an expand-down 32-bit data segment, one based above
        the guest's top) is not present in the shadow GDT: its load faults,
        and natively it would not.  The run ends saying so."""
        d = self.gdt.descriptor(self.guest_view(), self.vcpu.gdtr, selector)
        if d is None or not d[1] & x86.DESC_P or not d[1] & x86.DESC_S \
                or rings.compress(*d)[1] & x86.DESC_P:
            return
        raise GuestStop(f"{self.name}: segment {selector & ~3:#x} reaches the VMM window "
                        f"(an expand-down 32-bit data segment, or one based above the "
                        f"guest's 4 GiB less 64 MiB) at {self.machine.where()}: not supported "
                        f"under ring compression")

    def _refuse_ldt(self, event):
        """The shadow descriptor tables carry no LDT (rings.py: system
        descriptors are not given to the CPU), so a selector of the guest's
        LDT faults at real ring 1 although the guest loaded an LDT that holds
        it: that fault is the VMM's, and ring compression here has no shadow
        LDT to answer it with, so the run ends saying so (the README's
        limits).  A selector beyond the guest's LDT, or with none loaded,
        faults natively too, and is reflected."""
        code = event.error_code
        if event.vector not in _SELECTOR_FAULTS or code is None or code & 6 != 4:
            return
        limit = self._ldt_limit()
        if limit is not None and (code & ~7) + 7 <= limit:
            raise GuestStop(f"{self.name}: a selector of the guest's LDT ({code & ~3 | 4:#x}) at "
                            f"{self.machine.where()}: LDT segments are not supported under "
                            f"ring compression")

    def stale_load(self):
        """A #GP(selector) on loading a descriptor the guest rewrote in place
        since its shadow was made: the stale shadow keeps the old type and
        DPL (only its P bit is cleared), and the CPU checks those before P,
        so the load fails with #GP, not the #NP first_load() expects.  The
        shadow is derived again and the load retried, as for a #NP."""
        code = self.machine.state.error_code
        return not code & 7 and code and code in self.gdt.stale and self.first_load()

    def first_load(self):
        """A #NP (or, loading SS, the #SS a not-present stack segment raises)
        that is the first load of a descriptor the guest never loaded before
        (rings.shadow_descriptor): a hidden fault, absorbed, and the load
        retried.  It is an exit of its own kind (exit.np.hidden), as a
        shadow fill is for paging."""
        st = self.machine.state
        if st.error_code & 3:                      # an IDT or external event: not a load
            return False
        linear = (st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF
        decoded = self.machine.decoder.at(self.code_view(linear), linear)
        far = decoded is not None and gates.is_far_transfer(decoded.insn)
        returns = decoded is not None and decoded.insn.id in _CS_LOADS
        self.refuse_ring1(st.error_code)
        self._refuse_unkept(st.error_code)
        try:
            done = self._first_far(decoded, st.error_code) if far else \
                self.gdt.first_load(self.guest_view(), self.vcpu.gdtr, st.error_code, returns)
        except (DeliveryFault, GuestMemoryFault) as fault:
            self._reflect(fault_event(fault))      # the far call's own fault
            return True
        if not done:
            return False
        c = self.machine.counters
        c["exit.total"] += 1
        c["exit.np.hidden"] += 1
        return True

    def _first_far(self, decoded, selector):
        """A far jmp or call to a code segment whose shadow entry is not
        present.  A stale entry is derived again and the jump retried.  One
        the guest never loaded is the VMM's to perform (far_transfer): had
        the CPU loaded it, the entry would have to be present from then on,
        and the guest's first load of the segment into a data segment
        register would no longer fault for the VMM to set the accessed bit
        then, as the CPU model does (it sets none on a load of CS).  False
        if the #NP is the guest's own."""
        gdt, view, gdtr = self.gdt, self.guest_view(), self.vcpu.gdtr
        if gdt.retry_stale(view, gdtr, selector):
            return True
        if not gdt.never_loaded(view, gdtr, selector):
            return False
        self.far_transfer(decoded)
        self.machine.emulated()
        return True

    def far_transfer(self, decoded):
        """Perform the far jmp or call at EIP straight to a code segment (one
        through a call gate is _call_gate's) as the CPU does at the guest's
        ring: the target checked, a call's return address pushed, CS loaded
        as the CPU model loads it.  A task switch ends the run (not
        supported).  Raises DeliveryFault or GuestMemoryFault for the
        exception the CPU would raise instead."""
        st, view, gdtr = self.machine.state, self.guest_view(), self.vcpu.gdtr
        selector, offset = gates.far_pointer(decoded, st, view)
        if not selector & 4:
            if gates.switches_tasks(view, gdtr, selector):
                raise GuestStop(f"{self.name}: a task switch at {self.machine.where()}: "
                                f"not supported")
            loads.check_far_code_segment(view, gdtr, selector, self.view.cpl())
        if decoded.insn.id in (C.X86_INS_LCALL, C.X86_INS_CALL):
            gates.push_return(self.view, st, view, decoded)
        self._load_segment("cs", selector)
        st.eip = offset

    # [tour trap 90] A reflected fault.
    # An exception that is the guest's own (a page fault on an unmapped page, a
    # division by zero) is handed to the guest kernel as the hardware would have, had
    # the kernel owned the CPU: through the guest's IDT, counted as reflect.*.
    def _reflect(self, event):
        if self.view.virtual_if() and self.events.interrupt_first(False, self):
            return
        self.count_reflection(event, exit=True)
        self.events.deliver(event)

    def deliver_step(self, event):
        """A single-step #DB the VMM owes (Vmm.step_after) is reflected into
        the guest kernel within the VMM entry of the instruction it follows:
        no exit of its own."""
        self.count_reflection(event, exit=False)
        self.events.deliver(event)

    def count_reflection(self, event, exit):
        """One event delivered into the guest kernel.  `exit`: the VMM entry
        that delivers it is a CPU exit, counted with it (exit.total, and
        exit.pf.true for a page fault); otherwise the entry is counted
        elsewhere (a translator's callout)."""
        c = self.machine.counters
        c["reflect.total"] += 1
        if exit:
            c["exit.total"] += 1
        if event.software:
            c["reflect.syscall"] += 1
        elif event.vector == x86.PF:
            if exit:
                c["exit.pf.true"] += 1
            c["reflect.pf"] += 1
        else:
            c["reflect.exception"] += 1
            c["reflect.exception." + vector_name(event.vector)] += 1

    def idt_has(self, vector):
        """Whether the guest's IDT reaches `vector` (else its #UD, say, has
        nowhere to go and the run ends)."""
        _, limit = self.vcpu.idtr
        return vector * 8 + 7 <= limit

    def invalid_opcode(self):
        if not self.idt_has(x86.UD):
            return False
        self._reflect(Event(x86.UD))
        return True

    def io_permitted(self, port, size):
        """Ring compression: the check is made against the guest's own view,
        its IOPL (in user code the real one, which is the guest's:
        reflect.py) and the TSS its `ltr` named (in virtual-8086 code the
        bitmap alone)."""
        st = self.machine.state
        if st.cpl != 3 or (st.system_flags() & (x86.IOPL_MASK | x86.VM) == x86.IOPL_MASK):
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
        """ltr in the guest kernel: the CPU's checks (a #GP or #NP for the
        guest), then TR is the vCPU's and the TSS is marked busy in the
        guest's own descriptor, as the CPU marks it."""
        view = self.guest_view()
        checked = loads.check_task_register(view, self.vcpu.gdtr, selector)
        if checked is None:
            self.vcpu.tr = (selector, 0, 0)
            return
        lo, hi = checked
        if (hi >> 8) & 0xF == loads.TSS16_AVAILABLE:
            raise GuestStop(f"ltr of a 16-bit TSS {selector:#x} at {self.machine.where()}: "
                            f"not supported")
        self.vcpu.tr = (selector, x86.seg_base(lo, hi), x86.seg_limit(lo, hi))
        base, _ = self.vcpu.gdtr
        view.write(base + (selector & ~7) + 4, (hi | 0x200).to_bytes(4, "little"))

    def load_ss(self, selector):
        """mov ss, pop ss or lss in the guest kernel, whose RPL-0 selector
        the CPU refuses at ring 1: the CPU's checks against the guest's CPL
        and descriptor (a #GP or #SS for the guest), then the load."""
        loads.check_stack_segment(self.guest_view(), self.vcpu.gdtr, selector,
                                  rings.guest_ring(self.machine.state.cpl), self._ldt_limit())
        self._load_segment("ss", selector)

    def _ldt_limit(self):
        """The limit of the guest's LDT, None if it loaded none (a null LDTR)."""
        if not self.vcpu.ldtr & 0xFFFC:
            return None
        lo, hi = read_descriptor(self.guest_view(), self.vcpu.gdtr, self.vcpu.ldtr)
        return x86.seg_limit(lo, hi)

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
        # The checks the CPU makes at CPL 0 (a #GP or #NP for the guest,
        # delivered at the instruction); the kernel's CPL is 0.
        if loads.check_return_code_segment(view, self.vcpu.gdtr, cs, 0) is None:
            raise GuestStop(f"{self.name}: a return to a code segment in the LDT at "
                            f"{self.machine.where()}: not supported")
        self._load_segment("cs", cs)
        st.eip = eip
        st.set_reg("esp", esp + 4 * words + extra)
        if far_iret:
            eflags = frame[2]
            self.vcpu.if_ = bool(eflags & x86.IF)
            self.vcpu.iopl = (eflags & x86.IOPL_MASK) >> x86.IOPL_SHIFT   # CPL 0 loads IOPL
            st.set_eflags((eflags & ~(x86.IOPL_MASK | x86.VM | x86.RF)) | x86.IF)


# The returns, which load CS (far transfers are recognised by gates.is_far_transfer).
_CS_LOADS = frozenset((C.X86_INS_IRET, C.X86_INS_IRETD, C.X86_INS_RETF))
# The ids under which capstone reports every far call or jmp (and the near
# ones too: gates.is_far_transfer tells them apart).
_FAR_IDS = frozenset((C.X86_INS_LJMP, C.X86_INS_LCALL, C.X86_INS_JMP, C.X86_INS_CALL))
_IF = x86.IF
# A first load of a not-present shadow descriptor: #NP, or #SS for SS.
_NOT_PRESENT = (x86.NP, x86.SS)
# The faults whose error code names a selector.
_SELECTOR_FAULTS = (x86.TS, x86.NP, x86.SS, x86.GP)
