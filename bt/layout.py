"""Where the translator's state lives: machine memory above the shadow MMU's,
mapped into the VMM window at 0xFC000000 (the top 64 MiB no guest may map).

    window      machine      what                              CPU access
    +0x100000   +0x000000    the vCPU page: virtual IF, IOPL,  read/write
                             pending-interrupt flag, scratch
                             slots, in-TC event counters
    +0x110000   +0x010000    the indirect-branch table         read only
    +0x190000   +0x090000    per-unit execution counts         read/write
                             (only when profiling: translate)
    +0x200000   +0x100000    the translation cache (TC)        read only

Offsets in the "machine" column are from the start of the region, which lies
just above the shadow MMU's memory (virtlab/vmm/memory.py, SIZE); each is
its window offset less 0x100000, so one subtraction maps a window address
to machine memory.

Translated code runs at real ring 1, which is supervisor privilege, so it
reaches all of this; guest user code at ring 3 reaches none of it (the
window's directory entry is supervisor-only).  The guest kernel could in
principle address the vCPU page too, as a Xen guest can its shared-info page:
what lies there is only the guest's own state (its IF, its scratch values)
and counters of its own events.  The code and the table the VMM relies on
are read-only to the CPU; only the VMM writes them, from outside.
"""
from virtlab.memmap import VMM_BASE_LINEAR
from virtlab.vmm import memory as vmm_memory

# [tour bt 20] Where the translator's state lives.
# The translation cache, the indirect-branch table and the vCPU page (virtual IF,
# pending-interrupt flag, scratch slots) are machine memory mapped into the VMM
# window, which no guest mapping may reach.  Translated code, at ring 1, addresses the
# vCPU page directly: that is how cli and sti cost no exit.
REGION = vmm_memory.SIZE

DATA_WINDOW, DATA_OFF, DATA_SIZE = 0x100000, 0x000000, 0x1000
TABLE_WINDOW, TABLE_OFF, TABLE_SIZE = 0x110000, 0x010000, 0x80000
PROFILE_WINDOW, PROFILE_OFF, PROFILE_SIZE = 0x190000, 0x090000, 0x70000
TC_WINDOW, TC_OFF, TC_SIZE = 0x200000, 0x100000, 0x200000

MACHINE_MEMORY = REGION + TC_OFF + TC_SIZE

DATA = VMM_BASE_LINEAR + DATA_WINDOW
TABLE = VMM_BASE_LINEAR + TABLE_WINDOW
PROFILE = VMM_BASE_LINEAR + PROFILE_WINDOW
TC = VMM_BASE_LINEAR + TC_WINDOW
TC_END = TC + TC_SIZE

# The indirect-branch table: one 8-byte entry per value of a target's low 16
# bits, (-guest_eip, tc_address).  Storing the negated EIP lets translated code
# test for a hit with `lea` and `jecxz`, which leave EFLAGS alone.
TABLE_ENTRIES = TABLE_SIZE // 8
EMPTY = 1                     # -guest_eip of no address but 0xFFFFFFFF

# Slots of the vCPU page (byte offsets).
V_IF = 0x00        # the guest's IF as an EFLAGS mask: 0x200 or 0
V_IOPL = 0x04      # the guest's IOPL field: iopl << 12
PEND = 0x08        # 0x200 when an interrupt waits for the guest to enable them
S_EAX = 0x0C       # scratch: a guest register parked while a sequence runs
S_ECX = 0x10
S_TARGET = 0x14    # the guest target of an indirect branch (for a miss)
S_JMP = 0x18       # the TC address an indirect branch jumps through
COUNTS = 0x40      # in-TC event counters, one dword each, in this order:
IN_TC_EVENTS = ("bt.intc.cli", "bt.intc.sti", "bt.intc.pushf", "bt.intc.popf",
                "bt.intc.movseg", "bt.indirect.hit")


def count_slot(name):
    return COUNTS + 4 * IN_TC_EVENTS.index(name)


def data(slot):
    """The linear address translated code uses for a vCPU-page slot."""
    return DATA + slot


# The software-interrupt vector of a callout.  Any vector would do: Unicorn
# hands every `int n` to the VMM (docs/unicorn.md, item 1), and the VMM knows a
# callout by its address in the TC, never by the vector.  Guest `int n`
# instructions are themselves translated into callouts, so no other `int`
# ever runs from the TC.
CALLOUT_VECTOR = 0xEE
