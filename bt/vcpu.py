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
        self._mem = mem                    # machine memory (offsets)
        self._base = L.REGION + L.DATA_OFF
        super().__init__()

    @property
    def if_(self):
        return self._mem.u32(self._base + L.V_IF) != 0

    @if_.setter
    def if_(self, value):
        self._mem.set_u32(self._base + L.V_IF, x86.IF if value else 0)

    @property
    def iopl(self):
        return (self._mem.u32(self._base + L.V_IOPL) >> x86.IOPL_SHIFT) & 3

    @iopl.setter
    def iopl(self, value):
        self._mem.set_u32(self._base + L.V_IOPL, (value & 3) << x86.IOPL_SHIFT)

    def word(self, slot):
        return self._mem.u32(self._base + slot)

    def set_word(self, slot, value):
        self._mem.set_u32(self._base + slot, value)
