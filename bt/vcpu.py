"""The part of the virtual CPU that translated code reads and writes itself.

cli, sti, pushf and popf run inside the TC without an exit, so the guest's IF
and IOPL cannot live in a Python object: they are words in the vCPU page
(layout.py), where the translated sequences find them, and the VMM reads and
writes the same words.  The rest of the virtual CPU is the shared one.
"""
from virtlab import x86
from virtlab.vmm.vcpu import VirtualCpu

from . import layout as L


class PageVcpu(VirtualCpu):
    """A VirtualCpu whose IF and IOPL are the vCPU page's V_IF and V_IOPL."""

    def __init__(self, mem):
        # The vCPU page as words of machine memory: every exit reads V_IF and
        # writes PEND, so they are one index each, not a struct call.
        self._words = mem.words
        self._at = (L.REGION + L.DATA_OFF) >> 2
        super().__init__()

    @property
    def if_(self):
        return self._words[self._at + (L.V_IF >> 2)] != 0

    @if_.setter
    def if_(self, value):
        self._words[self._at + (L.V_IF >> 2)] = x86.IF if value else 0

    @property
    def iopl(self):
        return (self._words[self._at + (L.V_IOPL >> 2)] >> x86.IOPL_SHIFT) & 3

    @iopl.setter
    def iopl(self, value):
        self._words[self._at + (L.V_IOPL >> 2)] = (value & 3) << x86.IOPL_SHIFT

    def mark_pending(self, pending_irq):
        """PEND for translated code: IF when the guest has interrupts off and
        one waits (pending_irq() is not None), so that the sti or popf that
        enables them calls out to take it; 0 otherwise."""
        w, at = self._words, self._at
        w[at + (L.PEND >> 2)] = (x86.IF if not w[at + (L.V_IF >> 2)]
                                 and pending_irq() is not None else 0)

    def word(self, slot):
        return self._words[self._at + (slot >> 2)]

    def set_word(self, slot, value):
        self._words[self._at + (slot >> 2)] = value & 0xFFFFFFFF
