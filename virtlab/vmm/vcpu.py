"""The virtual CPU: the part of the processor state that the VMM keeps for the
guest because the guest may not touch the real one.

The guest kernel believes it runs at ring 0 and owns IF, the control registers and
the descriptor-table registers.  Under a VMM those are fields in this dataclass;
the real ones belong to the VMM.  What the guest reads back (by an emulated
`mov eax, cr3`, an exception frame the VMM builds) comes from here.
"""
from dataclasses import dataclass, field

from virtlab import x86
from virtlab.memmap import BOOT_GDT, BOOT_GDT_LIMIT


# [tour trap 80] The virtual CPU.
# What the guest kernel believes it owns (IF, IOPL, the control registers, the
# descriptor-table registers) lives here, not in the real CPU, which belongs to the
# VMM.
@dataclass
class VirtualCpu:
    if_: bool = False                    # virtual EFLAGS.IF
    iopl: int = 0                        # virtual EFLAGS.IOPL
    cr0: int = x86.CR0_PE | x86.CR0_ET   # as the boot protocol enters the guest
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    idtr: tuple = (0, 0)                 # (base, limit)
    gdtr: tuple = (BOOT_GDT, BOOT_GDT_LIMIT)
    ldtr: int = 0
    tr: tuple = (0, 0, 0)                # (selector, base, limit) of the guest's TSS
    msrs: dict = field(default_factory=dict)

    @property
    def paging(self):
        return bool(self.cr0 & x86.CR0_PG)

    def paging_regs(self):
        return self.cr0, self.cr3, self.cr4
