"""Callouts: what the VMM does when translated code calls it.

A callout is an `int CALLOUT` in the TC; the CPU stops just past it, and the
address it stopped at names the callout (cache.callouts).  At every callout
the guest's registers are its own (the sequences restore what they parked),
so the VMM first sets EIP to the guest instruction the callout stands for and
then acts exactly as it would for that instruction.  Where the guest goes on
afterwards is a guest address again, unless the callout returns into the
unit it came from (`resume`): `Bt._resume` finds its translation.

Every callout counts `bt.callout` and one kind: `bt.callout.<kind>` for what
it did, or, if it ended by delivering an exception or system call into the
guest kernel, the reflect.* counter of that delivery, as an exit that
reflects is counted under trap.  An interrupt taken at a callout is its kind
(bt.callout.irq, and inject.irq for the injection).
"""
import struct

from capstone import x86_const as C

from virtlab import x86
from virtlab.counters import Named
from virtlab.decode import INVALID, cpu_length
from virtlab.delivery import DeliveryFault, Event, fault_event
from virtlab.errors import GuestStop
from virtlab.memory import GuestMemoryFault, walk
from virtlab.tsc import MSR_TSC_AUX
from virtlab.vmm import gates
from virtlab.vmm.emulate import NotPrivileged, Unsupported, effective_address
from virtlab.vmm.pt_store import emulate_store
from virtlab.vmm.reflect import user_flags

from . import layout as L

_TWO_WORDS = struct.Struct("<II")
_THREE_WORDS = struct.Struct("<III")
_KINDS = Named("bt.callout.")            # what a callout did -> its counter


class Callouts:
    def __init__(self, bt):
        self.bt = bt
        self.m = bt.machine
        self.handlers = {"chain": self._chain, "miss": self._miss, "irq": self._irq,
                         "emulate": self._emulate, "iret": self._return, "retf": self._return,
                         "int": self._int, "far": self._far, "rdtsc": self._rdtsc,
                         "rdrand": self._rdrand,
                         "ptwrite": self._ptwrite, "ud": self._ud, "sysenter": self._sysenter,
                         "flags16": self._flags16, "o16": self._o16,
                         "pop_ss": self._emulate, "lss": self._emulate}

    # [tour bt 90] A callout: translated code enters the VMM.
    # A callout is an `int` to a vector of the VMM's own in the cache.  The machine
    # hands every `int n` above 31 to Bt._software_int, which, at a TC address, finds
    # the callout by that address and runs its handler: emulate a privileged
    # instruction, chain, look up a miss, reflect an int.
    def run(self, pc):
        c = self.bt.cache.callouts.get(pc)
        if c is None:
            raise GuestStop(f"bt: an int at {pc - 2:#010x} in the translation cache is no callout")
        self.m.counters["bt.callout"] += 1
        try:
            self.handlers[c.kind](c)
        except GuestMemoryFault as fault:
            # The guest instruction itself could not be fetched (paging just
            # changed under the unit: CR0.PG set, a page unmapped), or its
            # operand not read: the guest's #PF at that instruction.
            self._at_guest(c.site.guest)
            self.bt.deliver_fault(Event(x86.PF, fault.error_code, cr2=fault.linear))

    def _count(self, kind):
        self.m.counters[_KINDS[kind]] += 1

    def _at_guest(self, guest):
        st = self.m.state
        st.eip = (guest - st.seg_base_of("cs")) & 0xFFFFFFFF

    def _continue(self, c):
        """Go on in the TC just past the callout, or, if what the callout did
        wrote over the unit's own code (a pushfw onto the next instruction),
        from the next guest instruction, translated afresh."""
        if c.unit.dead:
            self._at_guest(c.site.guest + c.site.size)
        else:
            self.bt.run_tc(c.resume)

    def _decoded(self, c):
        """The guest instruction callout `c` stands for.  It is decoded at the
        callout's first use and kept with it while its unit lives: a unit dies
        before the guest writes any byte it was translated from (cache.py,
        coherence), so the bytes of a live unit's instruction are still the
        ones decoded.  A dead unit's (an execution finishing inside it) is
        decoded again from guest memory, every time."""
        d = c.decoded
        if d is None or c.unit.dead:
            site = c.site
            d = c.decoded = self.m.decoder.at(self.bt.guest_view(), site.guest)
            if d is None:
                raise GuestStop(f"bt: the guest instruction at {site.guest:#010x} no longer decodes")
        return d

    # -- control flow -----------------------------------------------------------------
    # [tour bt 100] Chaining: an exit patched into a direct jump.
    # A direct branch leaves its unit through an exit stub.  The first time it is
    # reached, the target is translated and the stub is patched into a jump to it
    # (bt.chain): from then on the two units run back to back without the VMM.
    def _chain(self, c):
        """An exit stub reached for the first time: translate its target and
        patch the stub into a jump there."""
        self._count("chain")
        ex, bt = c.exit, self.bt
        self._at_guest(ex.target)
        eip = self.m.state.eip
        source = bt.cache.unit_at(ex.at)
        tc = bt.translation(ex.target)
        if self.m.state.eip != eip:
            return                                 # the fetch faulted: in the guest's handler now
        unit = bt.cache.unit_at(tc)
        # (A flush while translating the target empties the TC under the
        # source: its stub is gone, and its bytes may be a new unit's.)
        if source is not None and not source.dead and not source.transient \
                and not unit.transient and not unit.dead:
            bt.cache.chain(ex, unit)
        self.bt.run_tc(tc)

    # [tour bt 120] A miss: translate the target and fill the table.
    def _miss(self, c):
        """An indirect branch whose target was not in the table."""
        self._count("miss")
        bt = self.bt
        bt.machine.counters["bt.indirect.miss"] += 1
        target = bt.vcpu.word(L.S_TARGET)
        self._at_guest(target)
        tc = bt.translation(target)
        unit = bt.cache.unit_at(tc)
        if unit is not None and unit.guest == target and not unit.transient:
            bt.cache.fill_table(target, unit)

    def _irq(self, c):
        """sti or popf enabled interrupts with one waiting: take it after the
        instruction, unless the next one is hlt, which takes it itself (sti's
        one-instruction shadow is what makes `sti; hlt` safe), or it is no
        longer waiting (bt.callout.irq_deferred)."""
        bt = self.bt
        nxt = c.site.guest + c.site.size
        try:
            halts = bt.guest_view().read(nxt, 1) == b"\xf4"
        except GuestMemoryFault:
            halts = False
        if not bt.vcpu.if_ or halts or self.m.pending_irq() is None:
            self._count("irq_deferred")
            return self._continue(c)
        self._at_guest(nxt)
        self._interrupt()

    def _interrupt(self):
        """Take the waiting interrupt now, at the guest instruction EIP names."""
        self._count("irq")
        self.bt.events.inject(exits=False)

    def _interrupt_first(self):
        """At a callout for an instruction, with the guest's interrupts on: an
        interrupt that waits is taken before the instruction, which runs
        again after the handler returns (as interrupt_first does for an exit)."""
        if self.bt.vcpu.if_ and self.m.pending_irq() is not None:
            self._interrupt()
            return True
        return False

    def _return(self, c):
        """iret or retf.  Back into the kernel (a frame with RPL 0, which the
        CPU refuses at ring 1): emulated.  Out to user code: the CPU performs
        it, from the copy of the instruction that follows the callout, once the
        VMM has made the real IF and IOPL the frame's (the CPU loads IOPL only
        at CPL 0)."""
        bt, st = self.bt, self.m.state
        far_iret = c.kind == "iret"
        if far_iret and st.system_flags() & x86.NT:
            self._at_guest(c.site.guest)
            try:
                return bt.deliver_fault(gates.task_return(bt.guest_view(), bt.vcpu.tr[1]))
            except Unsupported as exc:
                raise GuestStop(f"bt: {exc} at {self.m.where()}: not supported") from None
        esp, _, _, _, ss_base = st.frame_regs()
        at = (ss_base + esp) & 0xFFFFFFFF
        view = bt.paging.shared_view()                   # (only read through)
        try:
            # CS and, for iret, EFLAGS: the frame's second and third words.
            # The first, EIP, is read too: the CPU pops it first, so a frame
            # that is not all mapped faults at the first word that is not,
            # and that is the address the guest must see in CR2.
            if far_iret:
                _, cs, eflags = _THREE_WORDS.unpack(view.read(at, 12))
            else:
                _, cs = _TWO_WORDS.unpack(view.read(at, 8))
                eflags = None
            cs &= 0xFFFF
        except GuestMemoryFault as fault:
            self._at_guest(c.site.guest)
            return bt.deliver_fault(Event(x86.PF, fault.error_code, cr2=fault.linear))
        if cs & 3 == 0 and not (far_iret and eflags & x86.VM):
            # Emulated, or a fault of the guest's instruction: either way from
            # its own address.  (The way out to user code below runs the
            # instruction itself, in the TC, and needs no guest EIP; so does
            # the way into virtual-8086 code, whose CS is a paragraph number.)
            self._at_guest(c.site.guest)
            extra = 0 if far_iret else self._decoded(c).insn.operands[0].imm \
                if self._decoded(c).insn.operands else 0
            try:
                bt.emulate_return(far_iret, extra)
            except NotPrivileged:
                return bt.deliver_fault(Event(x86.GP, 0))
            except DeliveryFault as fault:          # the CS it would load is refused
                return bt.deliver_fault(fault_event(fault))
            return self._count(c.kind)
        self._count(c.kind)
        if cs & 3 > 1:
            # The user's IF and IOPL go to the real CPU (reflect.py), which
            # loads neither at ring 1 (IF not with IOPL 0): an iret's from
            # its frame, and a retf keeps the kernel's.  (The common case, IF
            # set and IOPL 0, are the kernel's real flags already.)
            if far_iret:
                if_, iopl = eflags & x86.IF, (eflags & x86.IOPL_MASK) >> x86.IOPL_SHIFT
            else:
                if_, iopl = bt.vcpu.if_, bt.vcpu.iopl
            if iopl or not if_:
                user_flags(st, if_, iopl)
        bt.run_tc(c.resume)

    def _int(self, c):
        """int n, int3, into in the kernel: the software interrupt delivered
        through the guest IDT, as the CPU would (EIP past the instruction)."""
        bt = self.bt
        self._at_guest(c.site.guest)
        if self._interrupt_first():
            return
        insn = self._decoded(c).insn
        op = bytes(insn.bytes)[-2:] if insn.id == C.X86_INS_INT else bytes(insn.bytes)[-1:]
        vector = {b"\xcc": 3, b"\xce": 4}.get(op, op[-1])
        self._at_guest(c.site.guest + c.site.size)
        if vector == 4 and not self.m.state.eflags() & x86.OF:
            return self._count("into")              # into without overflow: nothing
        bt.deliver_fault(Event(vector, software=insn.id in (C.X86_INS_INT, C.X86_INS_INT3,
                                                             C.X86_INS_INTO)))

    def _far(self, c):
        """A far jmp or call: through a call gate (vmm/gates.py), or to a code
        segment, loaded as the guest's descriptor says at ring 1."""
        bt, st = self.bt, self.m.state
        self._at_guest(c.site.guest)
        decoded = self._decoded(c)
        view = bt.guest_view()
        try:
            if gates.through_call_gate(bt.view, st, view, decoded):
                self.m.counters["reflect.total"] += 1
                self.m.counters["reflect.syscall"] += 1
                return
            bt.far_transfer(decoded)
        except (DeliveryFault, GuestMemoryFault) as fault:
            return bt.deliver_fault(fault_event(fault))
        self._count("far")

    def _sysenter(self, c):
        raise GuestStop(f"bt: sysenter from the guest kernel at {c.site.guest:#010x} is not supported")

    def _o16(self, c):
        raise GuestStop(f"bt: a near branch with a 16-bit operand size at {c.site.guest:#010x} "
                        f"({c.site.text}): not supported")

    def _ud(self, c):
        self._at_guest(c.site.guest)
        if self._interrupt_first():             # as before any exception
            return
        if not self.bt.invalid_opcode_event():
            raise GuestStop(f"invalid opcode with no handler at {self.m.where()}")

    # -- instructions the VMM performs ---------------------------------------------------
    def _emulate(self, c):
        """A privileged or sensitive instruction, performed on the virtual CPU by
        the shared emulator (virtlab/vmm/emulate.py)."""
        bt, st = self.bt, self.m.state
        self._at_guest(c.site.guest)
        decoded = self._decoded(c)
        try:
            name = bt.emulator.emulate(decoded)
        except NotPrivileged:
            # An instruction the VMM does not perform: what the CPU would
            # raise for it at the kernel's ring 0, #UD if it has no such
            # instruction (monitor, vmcall: the translator makes every 0F 01
            # a callout), else #GP.
            return bt.deliver_fault(Event(x86.UD) if cpu_length(decoded.raw) == INVALID
                                    else Event(x86.GP, 0))
        except Unsupported as exc:
            raise GuestStop(f"cannot emulate at {self.m.where()}: {exc}") from None
        except (GuestMemoryFault, DeliveryFault) as fault:
            return bt.deliver_fault(fault_event(fault))
        if name == "hlt":                    # a halt is counted by the wait (bt.callout.hlt)
            return
        self.m.counters[_KINDS[name]] += 1   # (_count, inline: the commonest callout)
        # Straight on in the TC if the instruction went on to the next one, in
        # the kernel, and its unit still stands.
        eip, cs_base = st.pc_regs()
        if eip == (c.site.guest + c.site.size - cs_base) & 0xFFFFFFFF and st.cpl == 1 \
                and not c.unit.dead:
            bt.run_tc(c.resume)

    def _flags16(self, c):
        """pushfw and popfw: 16-bit, so the in-TC sequences (32-bit) do not
        apply; the VMM does them on the virtual IF and IOPL."""
        bt, st = self.bt, self.m.state
        self._at_guest(c.site.guest)
        view, esp = bt.guest_view(), st.reg("esp")
        ss = st.seg_base_of("ss")
        try:
            if self._decoded(c).insn.bytes[-1] == 0x9C:
                word = st.eflags() & ~(x86.IF | x86.IOPL_MASK) & 0xFFFF
                word |= (x86.IF if bt.vcpu.if_ else 0) | bt.vcpu.iopl << x86.IOPL_SHIFT
                view.write((ss + esp - 2) & 0xFFFFFFFF, word.to_bytes(2, "little"))
                st.set_reg("esp", esp - 2)
            else:
                word = int.from_bytes(view.read((ss + esp) & 0xFFFFFFFF, 2), "little")
                bt.vcpu.if_ = bool(word & x86.IF)
                bt.vcpu.iopl = (word & x86.IOPL_MASK) >> x86.IOPL_SHIFT
                keep = st.eflags() & 0xFFFF0000
                st.set_eflags(keep | (word & ~(x86.IF | x86.IOPL_MASK)) | x86.IF)
                st.set_reg("esp", esp + 2)
        except GuestMemoryFault as fault:
            return bt.deliver_fault(Event(x86.PF, fault.error_code, cr2=fault.linear))
        self._count("flags16")
        self._continue(c)

    def _rdtsc(self, c):
        st = self.m.state
        self._count("rdtsc")
        tsc = self.m.tsc.read()
        st.set_reg("eax", tsc & 0xFFFFFFFF)
        st.set_reg("edx", tsc >> 32)
        if c.site.text == "rdtscp":
            st.set_reg("ecx", self.bt.guest_msr(MSR_TSC_AUX) & 0xFFFFFFFF)
        self._continue(c)

    def _rdrand(self, c):
        self._count("rdrand")
        self.m.rng.perform(self._decoded(c).insn)
        self._continue(c)

    def _ptwrite(self, c):
        """A store that adaptive translation found guilty: the VMM performs it,
        with no fault, and if it hit a traced page table updates the shadows.
        A store it cannot perform here (a frame holding translated code, an
        access the guest's tables refuse, an instruction emulate_store does
        not know) runs as it is, from a one-instruction translation."""
        bt, m, st = self.bt, self.m, self.m.state
        self._count("ptwrite")
        self._at_guest(c.site.guest)
        decoded = self._decoded(c)
        gpa = self._store_target(decoded)
        mmu = bt.paging.mmu
        if gpa is not None:
            traced = mmu.traced(gpa & x86.PAGE_MASK)
            if traced or not mmu.protected(gpa & x86.PAGE_MASK):
                try:
                    size = emulate_store(decoded, st, m.mem, gpa)
                except Unsupported:
                    pass
                else:
                    if traced:
                        mmu.traced_write(gpa, size)
                        m.counters["shadow.trace"] += 1
                        bt.guilty_store(c.site.guest)
                    else:
                        bt.innocent_store(c.site.guest)
                    return self._continue(c)
        bt.innocent_store(c.site.guest)
        m.emulated(-1)                   # counted at the callout, counted again where it runs
        bt.run_tc(bt.unit(c.site.guest, transient=True, limit=1).tc)

    def _store_target(self, decoded):
        """The guest-physical address a store writes, if the guest's tables
        allow it; None otherwise (the one-instruction translation then takes
        the fault the CPU raises)."""
        insn, st = decoded.insn, self.m.state
        ops = insn.operands
        if not ops or ops[0].type != C.X86_OP_MEM:
            return None
        linear = effective_address(insn, ops[0], st)
        if (linear & 0xFFF) + ops[0].size > 0x1000:
            return None
        v = self.bt.vcpu
        try:
            if not v.paging:
                return linear if linear + ops[0].size <= self.m.mem.size else None
            return walk(self.m.mem, v.cr0, v.cr3, v.cr4, linear, True, False)
        except GuestMemoryFault:
            return None
