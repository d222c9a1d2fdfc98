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
  - The kernel's returns to user code (iret, retf) run natively, watched: just
    before each, the real IF and IOPL become the user's (vmm/reflect.py).

What it cannot do is the point of the technique's history: popf, pushf, sgdt,
sidt, sldt, smsw, str, push cs/ss, mov from a segment register, lar, lsl, verr
and verw are sensitive but do not trap at ring 1, so they run unmodified and
tell the guest the truth about the real CPU (sensitive.py counts them).
"""
import struct

from capstone import x86_const as C

from virtlab import x86
from virtlab.counters import EXITS, REFLECTION, SENSITIVE, SHADOW
from virtlab.delivery import DeliveryFault, fault_event
from virtlab.errors import GuestStop
from virtlab.memory import GuestMemoryFault

from virtlab.vmm.compressed import RingCompressedVmm
from virtlab.vmm.emulate import PRIV_COUNTERS, NotPrivileged, Unsupported
from virtlab.vmm.reflect import user_flags
from virtlab.vmm.sensitive import SensitiveAudit


_CS_EFLAGS = struct.Struct("<II")          # CS and EFLAGS of an iret frame, after EIP
_IRETD = b"\xcf"
_RETF = (b"\xcb", b"\xca")
_IF, _IF_IOPL = x86.IF, x86.IF | x86.IOPL_MASK


# [tour trap 10] Classic trap-and-emulate: the technique.
# The guest kernel is deprivileged to ring 1, so that each of its privileged
# instructions faults into the VMM. The module's docstring lists what exits and what
# it cannot catch; the stops follow one of each.
class Trap(RingCompressedVmm):
    name = "trap"
    summary = "classic trap-and-emulate: guest kernel at ring 1, shadow paging"
    counters = EXITS + REFLECTION + SHADOW + SENSITIVE
    # These fidelity workloads read state that ring compression cannot hide
    # (popf, pushf, sidt/sgdt, push cs): details.sensitive names them.
    # fidelity.smsw runs unmodified too, but every bit of the machine status
    # word is the guest's in the real CR0 (vmm/paging.py), so it reads what
    # it would natively.
    unfaithful = ("fidelity.popf", "fidelity.pushf", "fidelity.sidt", "fidelity.pushcs")

    def attach(self, machine):
        super().attach(machine)
        self.audit = SensitiveAudit(machine, self)
        machine.intercepts.watch(_select_kernel_iret, self._kernel_iret, ids=(C.X86_INS_IRETD,))
        machine.intercepts.watch(_select_kernel_retf, self._kernel_retf, ids=(C.X86_INS_RETF,))
        # An exit at vector 32 or above is always an `int n` (the CPU raises
        # no exception there): a system call to reflect, without asking
        # guest_exception which kind of exit it is.
        for vector in range(32, 256):
            machine.claim_vector(vector, self._reflect_software)

    # -- exits ----------------------------------------------------------------
    # Every exception or `int n` is ring compression's (the machine calls it
    # directly: no frame of trap's own on the commonest exits).
    exception = RingCompressedVmm.guest_exception

    # [tour trap 60] A privileged instruction, emulated.
    # The Emulator performs it against the virtual CPU and it counts as exit.priv and
    # exit.priv.<name>. Anything it does not know is not privileged: the #GP is the
    # guest's own and is reflected.
    def _privileged(self, decoded):
        """Emulate the instruction that raised #GP in the guest kernel (as
        decoded at EIP); False if it is not one the VMM virtualizes (the #GP
        is then the guest's own)."""
        m = self.machine
        if decoded is None:
            return False
        eflags = m.state.system_flags()
        try:
            name = self.emulator.emulate(decoded)
        except NotPrivileged:
            return False
        except Unsupported as exc:
            raise GuestStop(f"cannot emulate at {m.where()}: {exc}") from None
        except (GuestMemoryFault, DeliveryFault) as fault:
            # The instruction faults as the CPU would have faulted it (its
            # memory operand not mapped, a selector it loads refused): the
            # exit becomes the reflection of that fault, at the instruction.
            self._reflect(fault_event(fault))
            return True
        m.counters["exit.total"] += 1
        if name != "hlt":                  # a halt is counted once, as exit.hlt
            m.counters["exit.priv"] += 1
            m.counters[PRIV_COUNTERS[name]] += 1
        if m.icount is not None:           # (m.emulated()'s test, inline: counting is rare)
            m.emulated()
        if eflags & x86.TF:
            self.step_after(eflags, name)
        return True

    emulate_privileged = _privileged

    def _kernel_iret(self, address, kind):
        """The guest kernel's iret to an outer ring runs natively at ring 1,
        where the CPU loads neither IOPL (it does only at CPL 0) nor, with
        IOPL 0, IF.  So just before it the real IF and IOPL become the
        frame's, the user's own (reflect.user_flags).  Not an exit (VT-x
        would not see it either, so it is an observer, not an exit): the
        iret then runs natively.  (If it faults, the fault's delivery gives
        the kernel its real flags back.)"""
        st = self.machine.state
        if not st.live:
            st.save()
        esp, _, _, _, ss_base = st.frame_regs()
        view = self.guest_view()             # the paging component's shared view
        try:
            cs, eflags = _CS_EFLAGS.unpack(view.read((ss_base + esp + 4) & 0xFFFFFFFF, 8))
            # (The common case, a return to user code with IF set and IOPL 0,
            # finds the real CPU as the frame leaves it, and needs no look at
            # the code; nor does a return within the kernel's ring.)
            if cs & 3 <= 1 or eflags & _IF_IOPL == _IF:
                return
            if view.read(address, 1) != _IRETD:
                return                       # other code now lives at this address
        except GuestMemoryFault:
            return                           # the iret faults; nothing changes
        user_flags(st, eflags & x86.IF, (eflags & x86.IOPL_MASK) >> x86.IOPL_SHIFT)
        if not st.live:
            st.load()

    def _kernel_retf(self, address, kind):
        """The guest kernel's far return to an outer ring (from a call gate)
        also runs natively at ring 1.  It keeps EFLAGS: the user gets the
        kernel's IF and IOPL, which are virtual, so they go to the real CPU
        first.  Nothing to do in the common case, IF set and IOPL 0: the
        kernel's real flags."""
        v = self.vcpu
        if v.if_ and not v.iopl:
            return
        st = self.machine.state
        if not st.live:
            st.save()
        esp, _, _, _, ss_base = st.frame_regs()
        view = self.guest_view()
        try:
            if view.u32((ss_base + esp + 4) & 0xFFFFFFFF) & 3 <= 1 \
                    or view.read(address, 1) not in _RETF:
                return
        except GuestMemoryFault:
            return                           # the retf faults; nothing changes
        user_flags(st, v.if_, v.iopl)
        if not st.live:
            st.load()

    def report(self):
        return {"sensitive": self.audit.sightings()}


def _select_kernel_retf(insn, cpl):
    """The guest kernel's 32-bit far return (retf, retf n)."""
    return "retf_out" if cpl == 1 and insn.id == C.X86_INS_RETF and insn.bytes[0] != 0x66 \
        else None


def _select_kernel_iret(insn, cpl):
    """The guest kernel's 32-bit iret (its frames are 32-bit; a 16-bit iret
    from the kernel would pop a frame this VMM does not read)."""
    return "iret_out" if cpl == 1 and insn.id == C.X86_INS_IRETD else None
