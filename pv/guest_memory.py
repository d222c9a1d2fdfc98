"""Reading and writing the guest's memory on its behalf (Xen's copy_from_guest).

Every pointer a hypercall receives is a guest virtual address, and nothing
about it can be trusted.  The hypervisor reads and writes through the guest's
current page tables, with the guest kernel's rights (supervisor, and the
read-only bit enforced on writes, so the hypervisor cannot be used to write a
page table either), and refuses the hypervisor's own range outright.  Any
failure is -EFAULT for the guest, never an error in the hypervisor.
"""
from virtlab.delivery import linear_view
from virtlab.memory import GuestMemoryFault

from . import abi
from .frames import Refused


class GuestMemory:
    def __init__(self, machine):
        self.machine = machine

    def _view(self):
        m = self.machine
        return linear_view(m.state, m.mem)

    @staticmethod
    def _check(va, n):
        if not isinstance(va, int) or va < 0 or n < 0 or va + n > abi.HYPERVISOR_VIRT_START:
            raise Refused(abi.EFAULT, f"{va:#x}+{n} reaches the hypervisor's range")

    def read(self, va, n):
        self._check(va, n)
        try:
            return self._view().read(va, n)
        except GuestMemoryFault as f:
            raise Refused(abi.EFAULT, str(f)) from None

    def write(self, va, data):
        self._check(va, len(data))
        try:
            self._view().write(va, data)
        except GuestMemoryFault as f:
            raise Refused(abi.EFAULT, str(f)) from None

    def u32(self, va):
        return abi.U32.unpack(self.read(va, 4))[0]

    def set_u32(self, va, value):
        self.write(va, abi.U32.pack(value & 0xFFFFFFFF))

    def unpack(self, fmt, va):
        """One structure of struct format `fmt` at `va`."""
        return fmt.unpack(self.read(va, fmt.size))
