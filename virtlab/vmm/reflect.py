"""Reflection: handing an exception, system call or interrupt to the guest
kernel as the hardware would have, had the guest kernel owned the CPU.

The mechanism is the platform's own interrupt path (virtlab.delivery); what
changes is whose tables and which privilege levels it uses.  VirtualCpuView is
the guest's view under ring compression: the IDT, GDT and TSS are the virtual
CPU's, the guest kernel's ring 0 is the real ring 1, and the frame the guest
finds on its stack carries the virtual IF and the selectors it believes in.
"""
from virtlab import x86

from . import rings

# Bound once: flags_for_frame and entry_flags run on every reflected event.
_IF, _IOPL_MASK, _IOPL_SHIFT = x86.IF, x86.IOPL_MASK, x86.IOPL_SHIFT
_NOT_IOPL = ~x86.IOPL_MASK & 0xFFFFFFFF


# [tour trap 100, bt 155] The guest's view of the CPU during reflection.
# The IDT, GDT and TSS are the virtual CPU's; the kernel's ring 0 is the real ring 1;
# the frame shows the virtual IF and the selectors the kernel believes it loaded.
class VirtualCpuView:
    def __init__(self, state, vcpu):
        self.state = state
        self.vcpu = vcpu
        self._cpl = None

    def cpl(self):
        return rings.guest_ring(self.state.cpl)

    # Selectors in a frame: the kernel's real RPL 1 shows as the 0 it
    # loaded (rings.guest_selector, which delivery applies inline).
    compressed_ring = rings.KERNEL_RING

    def route_key(self):
        """What a route is resolved from (delivery.RealCpuView.route_key): the
        ring and the virtual CPU's paging and table registers."""
        v = self.vcpu
        self._cpl = cpl = self.state.cpl       # (kept for flags_for_frame, which follows)
        return cpl, v.cr0, v.cr3, v.cr4, v.idtr, v.gdtr, v.tr

    def idtr(self):
        return self.vcpu.idtr

    def gdtr(self):
        return self.vcpu.gdtr

    def tss(self):
        sel, base, limit = self.vcpu.tr
        return base, limit, sel

    def paging(self):
        return self.vcpu.paging_regs()

    def segment(self, selector, lo, hi, ring):
        return rings.segment_cache(selector, lo, hi, ring)

    def selector(self, name):
        """The selector as the guest would have pushed it: its kernel's RPL is 0."""
        return rings.guest_selector(self.state.seg_selector(name))

    # Only the guest kernel's IF and IOPL are virtual, the vCPU's.  It runs at
    # real ring 1 with the real IF set and the real IOPL 0, so that each of its
    # cli, sti and popf faults.  User code runs with the real IF and IOPL as
    # the kernel's iret (or sysexit) gave them (user_flags() below), which are
    # then the guest's: a user given IOPL 3 runs its cli, sti, popf and pushf
    # on the CPU itself, as natively, and nothing it does can reach the
    # kernel's.  At an entry into the kernel they become the vCPU's.
    def virtual_if(self):
        """The guest's IF: at real ring 3 the real one, the user's own; in
        the guest kernel what its cli, sti and emulated iret left."""
        st = self.state
        return st.system_flags() & _IF if st.cpl == 3 else self.vcpu.if_

    def flags_for_frame(self, eflags):
        """The EFLAGS in the frame (called after route_key, in the same
        delivery, whose real CPL it reuses): the guest's IF and IOPL."""
        if self._cpl == 3:                     # the real ones are the user's
            self._frame_if = eflags & _IF
            return eflags
        v = self.vcpu
        self._frame_if = v.if_
        eflags &= ~(_IF | _IOPL_MASK)
        if self._frame_if:
            eflags |= _IF
        return eflags | (v.iopl << _IOPL_SHIFT)

    def entry_flags(self, eflags, kept):
        """The EFLAGS the handler runs with (called after flags_for_frame):
        the virtual IF is cleared by an interrupt gate and kept by a trap
        gate, the IOPL kept; the real IF is set and the real IOPL 0."""
        v = self.vcpu
        v.if_ = bool(self._frame_if and kept & _IF)
        if self._cpl == 3:
            v.iopl = (eflags & _IOPL_MASK) >> _IOPL_SHIFT
        return (eflags & kept & _NOT_IOPL) | _IF

    def set_cr2(self, value):
        self.vcpu.cr2 = value


def user_flags(state, if_, iopl):
    """Make the real IF and IOPL the guest's own, `if_` and `iopl`, for user
    code the guest kernel is about to return to (by an iret the CPU performs
    at ring 1, where it loads neither IOPL nor, with IOPL 0, IF)."""
    state.set_system_flags(_IF | _IOPL_MASK, (_IF if if_ else 0) | (iopl << _IOPL_SHIFT))


def enter_kernel_flags(state, vcpu):
    """User code enters the guest kernel without an event (a call gate,
    sysenter): its real IF and IOPL become the vCPU's, and the real ones
    the kernel's at ring 1 (set, 0)."""
    eflags = state.system_flags()
    vcpu.if_ = bool(eflags & _IF)
    vcpu.iopl = (eflags & _IOPL_MASK) >> _IOPL_SHIFT
    state.set_system_flags(_IF | _IOPL_MASK, _IF)
