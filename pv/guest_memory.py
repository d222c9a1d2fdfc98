"""Reading and writing the guest's memory on its behalf (Xen's copy_from_guest).

Every pointer a hypercall receives is a guest virtual address, and nothing
about it can be trusted.  The hypervisor reads and writes through the guest's
current page tables, with the guest kernel's rights (supervisor, and the
read-only bit enforced on writes, so the hypervisor cannot be used to write a
page table either), and refuses the hypervisor's own range outright.  Any
failure is -EFAULT for the guest, never an error in the hypervisor.
"""
from virtlab.memory import GuestMemoryFault, LinearView

from . import abi
from .frames import Refused


class GuestMemory:
    def __init__(self, machine):
        self.machine = machine
        self.state, self.mem = machine.state, machine.mem
        self._paging = self._linear = None      # the last view made, and its (CR0, CR3, CR4)

    def _view(self):
        """The guest's current paging, as a LinearView.  A view holds only
        the paging registers (its translations are memory.translate's,
        checked on every access), so the last one is used again while CR0,
        CR3 and CR4 are the same: most hypercalls read memory under the
        address space the previous one did."""
        paging = self.state.paging()
        if paging != self._paging:
            self._paging, self._linear = paging, LinearView(self.mem, *paging)
        return self._linear

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
        """One structure of struct format `fmt` at `va`.  (read(), _check()
        and _view() inline: every request of a batch and every multicall
        entry comes this way.)"""
        n = fmt.size
        if not isinstance(va, int) or va < 0 or va + n > abi.HYPERVISOR_VIRT_START:
            self._check(va, n)                  # raises
        paging = self.state.paging()
        view = self._linear if paging == self._paging else self._view()
        try:
            return fmt.unpack(view.read(va, n))
        except GuestMemoryFault as f:
            raise Refused(abi.EFAULT, str(f)) from None
