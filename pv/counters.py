"""The counters `pv` reports, what they mean and what they cost.

The costs are defaults (a CPU profile may override them): one for the
Pentium 4 of 2006 that Adams & Agesen measured, and one for the Core-family
profiles.  No paper gives the cost of a single Xen hypercall or bounce on
these CPUs, so each is composed, in its text, from the measured costs of the
hardware events it consists of (a trap through the IDT and back: the #DE
figure, 889 cycles on the P4; about half on the Core family, as the profiles
assume for native exceptions) and an assumed number of hypervisor
instructions at the profile's CPI (1.5 on the P4, 1.0 on the Core family).
"""
from virtlab.counters import Cost, CounterSpec

from . import abi

_AA = "Adams & Agesen 2006"
_TRAP_P4 = f"{_AA}: a fault through the IDT and its iret, 889 cycles (#DE) on the P4"


def _costs(p4_instructions, core_instructions, what, p4_base=889, core_base=445):
    """A trap into the hypervisor and back plus `what` in hypervisor code."""
    p4 = p4_base + round(p4_instructions * 1.5)
    core = core_base + core_instructions
    return (Cost(p4, source=_TRAP_P4, profile="p4-2006",
                 assumption=f"{p4_base} + {what}: {p4_instructions} instructions x CPI 1.5 = {p4}"),
            Cost(core, assumption=f"a trap round trip as the Core-family profiles price the #DE "
                 f"fault ({core_base}) + {what}: {core_instructions} instructions x CPI 1.0 "
                 f"= {core}"))


def _work(p4_cycles, core_cycles, what):
    """Hypervisor work inside an entry counted elsewhere (no trap of its own)."""
    return (Cost(p4_cycles, profile="p4-2006", assumption=f"{what}: {p4_cycles} cycles on the P4"),
            Cost(core_cycles, assumption=f"{what}: {core_cycles} cycles on the Core family"))


def _free(name, meaning, kind, reason):
    return CounterSpec(name, meaning, charged=False, kind=kind, reason=reason)


_HYPERCALL = _costs(100, 100, "decoding and dispatch")
_NAMES = ("set_trap_table", "mmu_update", "stack_switch", "set_callbacks", "fpu_taskswitch",
          "multicall", "update_va_mapping", "set_timer_op", "xen_version", "console_io",
          "iret", "mmuext_op", "sched_op", "event_channel_op", "physdev_op", "unknown")

PV = (
    _free("hypercall.total", "every hypercall (`int 0x82` from the guest kernel)", "hypercalls",
          "the sum of the hypercalls, each charged under its own name"),
    *(CounterSpec(f"hypercall.{n}", f"a `{n}` hypercall" if n != "unknown"
                  else "a hypercall with a number the hypervisor does not know (-ENOSYS)",
                  kind="hypercalls", cost=_HYPERCALL) for n in _NAMES),
    CounterSpec("hypercall.mmu_update.items", "a page-table update request in an mmu_update "
                "batch (validated against the page types)", kind="paging",
                cost=_work(300, 200, "validating one entry and moving its references, "
                           "200 instructions")),
    CounterSpec("hypercall.mmuext_op.items", "an extended MMU request (pin, unpin, new base "
                "pointer, TLB flush) in an mmuext_op batch", kind="paging",
                cost=_work(300, 200, "one request, 200 instructions")),
    CounterSpec("hypercall.multicall.items", "a hypercall made as an entry of a multicall (no "
                "trap of its own; its work is counted as the call's items)", kind="hypercalls",
                cost=_work(75, 50, "dispatching one entry, 50 instructions")),
    _free("multicall.*", "the hypercalls made inside multicalls, by name", "hypercalls",
          "charged as hypercall.multicall.items and the items of their batches"),
    CounterSpec("pv.fast_syscall", "a system call that reached the guest kernel through the "
                "direct trap gate, without entering the hypervisor", kind="syscalls",
                cost=(Cost(242, source=f"{_AA}, native column: the fast system call's round "
                           "trip, about 242 cycles on the Pentium 4: the CPU alone does it here",
                           profile="p4-2006"),
                      Cost(121, assumption="the Pentium 4 figure halved, as native.syscall is "
                           "on the Core-family profiles"))),
    CounterSpec("pv.bounce", "an exception (or software interrupt) that entered the hypervisor "
                "and was bounced to the guest kernel's handler", kind="exceptions",
                cost=_costs(300, 300, "building the bounce frame and checking the handler")),
    _free("pv.bounce.*", "pv.bounce by vector (`pf`, `gp`, ..., `syscall` for an int n)",
          "exceptions", "a subset of pv.bounce, charged there"),
    CounterSpec("evtchn.upcall", "an event delivered: the guest kernel entered at its event "
                "callback", kind="interrupts",
                cost=_costs(300, 300, "building the callback's frame")),
    _free("evtchn.send", "an EVTCHNOP_send: a notification to the other end", "interrupts",
          "part of the event_channel_op hypercall that carries it"),
    CounterSpec("pv.virq.timer", "the domain's timer deadline passed (VIRQ_TIMER raised)",
                kind="interrupts",
                cost=(Cost(889, source=f"{_AA}: an interrupt through the IDT and back costs "
                           "like the #DE fault, 889 cycles on the P4", profile="p4-2006"),
                      Cost(445, assumption="as native.irq on the Core-family profiles"))),
    CounterSpec("pv.emulate", "a privileged instruction of the guest kernel that trapped into "
                "the hypervisor and was emulated (Xen's emulate_privileged_op): a port access "
                "with virtual IOPL", kind="io",
                cost=(Cost(2480, source=f"{_AA}: trap-and-emulate of rdtsc, 2030 cycles on the "
                           "P4", assumption="+ the device model: 300 instructions x CPI 1.5 = "
                           "450; 2480", profile="p4-2006"),
                      Cost(1505, assumption="a trap-and-emulate round trip on the Core family "
                           "(the #DE delivery 445 + 760 instructions) + the device model (300 "
                           "instructions), at CPI 1.0: 1505"))),
    _free("pv.emulate.*", "pv.emulate by kind (`io`)", "io",
          "a subset of pv.emulate, charged there"),
    CounterSpec("pv.blk.requests", "a block request taken from the ring by the back end",
                kind="io", cost=_work(1500, 1000, "the back end's handling of one request, "
                                      "1000 instructions")),
    CounterSpec("pv.blk.sectors", "a 512-byte sector moved by the block back end", kind="io",
                cost=_work(128, 128, "copying 512 bytes at 4 bytes per cycle")),
)

HYPERCALL_NAMES = dict(zip((abi.SET_TRAP_TABLE, abi.MMU_UPDATE, abi.STACK_SWITCH,
                            abi.SET_CALLBACKS, abi.FPU_TASKSWITCH, abi.MULTICALL,
                            abi.UPDATE_VA_MAPPING, abi.SET_TIMER_OP, abi.XEN_VERSION,
                            abi.CONSOLE_IO, abi.IRET, abi.MMUEXT_OP, abi.SCHED_OP,
                            abi.EVENT_CHANNEL_OP, abi.PHYSDEV_OP), _NAMES))
