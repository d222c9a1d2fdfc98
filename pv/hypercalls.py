"""The hypercall table: what `int 0x82` from the guest kernel can ask.

A hypercall is a software interrupt from ring 1 into the hypervisor, the PV
guest's system call: the number in EAX, up to five arguments in EBX, ECX, EDX,
ESI and EDI, the result back in EAX.  This file decodes the arguments, reads
the guest's structures through GuestMemory (every pointer is untrusted) and
hands each request to the component that owns it: the page types and the MMU
(mmu.py), traps and callbacks (traps.py), event channels (events.py).  The
simple ones (console, version, time, scheduling, FPU, I/O privilege) are
handled here.  An unknown number is -ENOSYS; a hypercall that raises Refused
returns its -errno.  Nothing the guest passes may raise anything else.
"""
from dataclasses import dataclass, field

from virtlab import x86
from virtlab.errors import GuestStop

from . import abi
from .frames import Refused

NO_RETURN = object()         # the hypercall set EAX itself (iret)


@dataclass(frozen=True)
class Hypercall:
    name: str
    handler: object          # (self, ebx, ecx, edx, esi, edi) -> result
    # The counters it is counted under, named once (every hypercall counts).
    counter: str = field(init=False)
    in_multicall: str = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "counter", "hypercall." + self.name)
        object.__setattr__(self, "in_multicall", "multicall." + self.name)


_UNKNOWN = Hypercall("unknown", None)


class HypercallTable:
    def __init__(self, hv):
        self.hv = hv                   # the hypervisor (backend.Pv): its components
        self.depth = 0                 # inside a multicall
        self.table = {
            abi.SET_TRAP_TABLE: Hypercall("set_trap_table", self.set_trap_table),
            abi.MMU_UPDATE: Hypercall("mmu_update", self.mmu_update),
            abi.STACK_SWITCH: Hypercall("stack_switch", self.stack_switch),
            abi.SET_CALLBACKS: Hypercall("set_callbacks", self.set_callbacks),
            abi.FPU_TASKSWITCH: Hypercall("fpu_taskswitch", self.fpu_taskswitch),
            abi.MULTICALL: Hypercall("multicall", self.multicall),
            abi.UPDATE_VA_MAPPING: Hypercall("update_va_mapping", self.update_va_mapping),
            abi.SET_TIMER_OP: Hypercall("set_timer_op", self.set_timer_op),
            abi.XEN_VERSION: Hypercall("xen_version", self.xen_version),
            abi.CONSOLE_IO: Hypercall("console_io", self.console_io),
            abi.IRET: Hypercall("iret", self.iret),
            abi.MMUEXT_OP: Hypercall("mmuext_op", self.mmuext_op),
            abi.SCHED_OP: Hypercall("sched_op", self.sched_op),
            abi.EVENT_CHANNEL_OP: Hypercall("event_channel_op", self.event_channel_op),
            abi.PHYSDEV_OP: Hypercall("physdev_op", self.physdev_op),
        }

    # [tour pv 90] The hypercall table.
    # Xen's numbers and errors: an unknown number is -ENOSYS, a refused request its
    # errno.  Nothing the guest passes is trusted: pointers are read through the
    # guest's own page tables, with its rights.
    def call(self, number, ebx, ecx, edx, esi, edi):
        """Perform hypercall `number` with its five arguments (counted under
        its name); its result.  (The arguments are passed one by one, never
        as *args: a call that unpacks a tuple costs some 100 ns more, a
        twentieth of a whole hypercall.)"""
        c = self.hv.machine.counters
        entry = self.table.get(number, _UNKNOWN)
        if self.depth:                        # an entry of a multicall: no trap of its own
            c[entry.in_multicall] += 1
        else:
            c["hypercall.total"] += 1
            c[entry.counter] += 1
        if entry is _UNKNOWN:
            return -abi.ENOSYS
        try:
            return entry.handler(ebx, ecx, edx, esi, edi)
        except Refused as r:
            return -r.errno

    # -- traps and callbacks -------------------------------------------------------------
    def set_trap_table(self, traps, *_):
        if traps == 0:
            return self.hv.traps.set_traps(None)
        entries = []
        for i in range(abi.MAX_TRAPS):
            vector, flags, cs, address = self.hv.guest.unpack(abi.TRAP_INFO, traps + 8 * i)
            if address == 0:
                break
            entries.append((vector, flags, cs, address))
        return self.hv.traps.set_traps(entries)

    def stack_switch(self, ss, esp, *_):
        return self.hv.traps.stack_switch(ss, esp)

    def set_callbacks(self, event_cs, event_eip, failsafe_cs, failsafe_eip, *_):
        return self.hv.traps.set_callbacks(event_cs, event_eip, failsafe_cs, failsafe_eip)

    def iret(self, *_):
        if self.depth:
            return -abi.EINVAL                     # not from inside a multicall
        self.hv.traps.iret(self.hv.guest_view())
        return NO_RETURN

    # -- memory ---------------------------------------------------------------------------
    def mmu_update(self, reqs, count, done, dom, *_):
        return self.hv.mmu.mmu_update(reqs, count, done, dom)

    def mmuext_op(self, ops, count, done, dom, *_):
        return self.hv.mmu.mmuext_op(ops, count, done, dom)

    def update_va_mapping(self, va, val, flags, *_):
        return self.hv.mmu.update_va_mapping(va, val, flags)

    # -- batches ----------------------------------------------------------------------------
    # [tour pv 140] Multicall: several hypercalls for one entry.
    # A context switch sends its stack switch, page-table base and TLB work at once.
    def multicall(self, calls, count, *_):
        """Several hypercalls for the price of one entry: each entry's result
        is written back into it.  A multicall inside a multicall is refused."""
        if self.depth or not 0 <= count <= abi.MULTICALL_MAX:
            return -abi.EINVAL
        guest = self.hv.guest
        self.hv.machine.counters["hypercall.multicall.items"] += count
        self.depth += 1
        try:
            for i in range(count):
                at = calls + abi.MULTICALL_ENTRY.size * i
                op, _result, *args = guest.unpack(abi.MULTICALL_ENTRY, at)
                result = self.call(op, *args[:5])
                guest.set_u32(at + 4, -abi.EINVAL if result is NO_RETURN else result)
        finally:
            self.depth -= 1
        return 0

    # -- time, scheduling, console, version ---------------------------------------------------
    def set_timer_op(self, low, high, *_):
        self.hv.timer.deadline = ((high << 32) | low) or None     # 0: no deadline
        return 0

    def sched_op(self, cmd, arg, *_):
        hv = self.hv
        if cmd == abi.SCHEDOP_YIELD:
            return 0                               # one vCPU: nobody to yield to
        if cmd == abi.SCHEDOP_BLOCK:
            return hv.block()
        if cmd == abi.SCHEDOP_SHUTDOWN:
            reason = hv.guest.u32(arg)
            if reason == abi.SHUTDOWN_POWEROFF:
                hv.machine.finish(0)
                return 0
            raise GuestStop(f"pv: the domain shut down with reason {reason} "
                            f"(SCHEDOP_shutdown) at {hv.machine.where()}")
        return -abi.EINVAL

    def console_io(self, cmd, count, buffer, *_):
        if cmd == abi.CONSOLEIO_READ:
            return -abi.ENOSYS
        if cmd != abi.CONSOLEIO_WRITE or not 0 <= count <= abi.CONSOLE_MAX:
            return -abi.EINVAL
        data = self.hv.guest.read(buffer, count)
        self.hv.machine.uart.emit(data)
        return 0

    def xen_version(self, cmd, *_):
        return abi.XEN_VERSION_NUMBER if cmd == abi.XENVER_VERSION else -abi.ENOSYS

    def fpu_taskswitch(self, set_ts, *_):
        """Linux's write_cr0 under Xen: only CR0.TS is the guest's to change."""
        st = self.hv.machine.state
        cr0 = st.cr(0) & ~x86.CR0_TS
        self.hv.machine.write_control_register(0, cr0 | (x86.CR0_TS if set_ts else 0))
        return 0

    def physdev_op(self, cmd, arg, *_):
        hv = self.hv
        if cmd == abi.PHYSDEVOP_SET_IOPL:
            iopl = hv.guest.u32(arg)
            if iopl > 3:
                return -abi.EINVAL
            hv.iopl = iopl
            return 0
        if cmd == abi.PHYSDEVOP_SET_IOBITMAP:
            bitmap, nr_ports = hv.guest.unpack(abi.IOBITMAP, arg)
            if nr_ports > 65536:
                return -abi.EINVAL
            hv.iobitmap = (bitmap, nr_ports)
            return 0
        return -abi.ENOSYS

    # -- event channels -----------------------------------------------------------------------
    def event_channel_op(self, cmd, arg, *_):
        ch, guest = self.hv.channels, self.hv.guest
        if cmd == abi.EVTCHNOP_BIND_VIRQ:
            virq, vcpu, _ = guest.unpack(abi.BIND_VIRQ, arg)
            return self._out_port(ch.bind_virq(virq, vcpu), arg + 8)
        if cmd == abi.EVTCHNOP_ALLOC_UNBOUND:
            dom, remote, _ = guest.unpack(abi.ALLOC_UNBOUND, arg)
            return self._out_port(ch.alloc_unbound(dom, remote), arg + 4)
        if cmd in (abi.EVTCHNOP_SEND, abi.EVTCHNOP_CLOSE, abi.EVTCHNOP_UNMASK):
            port = guest.u32(arg)
            return {abi.EVTCHNOP_SEND: ch.send, abi.EVTCHNOP_CLOSE: ch.close,
                    abi.EVTCHNOP_UNMASK: ch.unmask}[cmd](port)
        return -abi.ENOSYS

    def _out_port(self, port, at):
        if port < 0:
            return port
        self.hv.guest.set_u32(at, port)
        return 0
