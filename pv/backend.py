"""`pv`: paravirtualization, as Xen 3.0 did it on x86-32.

The guest kernel is not fooled; it cooperates.  Built with -DPARAVIRT it runs
at real ring 1 and never executes a privileged instruction: it asks the
hypervisor by hypercall (`int 0x82`), masks interrupts by a store into the
shared-info page, keeps page tables that hold machine frames and that the
hypervisor validates, and reaches its disk through a ring in shared memory.
What is left for the hypervisor is small and is all here, one concept to a
file:

    builder.py      the domain builder: frames, image, bootstrap page tables, start_info
    frames.py       page types: no page table is ever writable
    mmu.py          mmu_update, mmuext_op, update_va_mapping
    traps.py        the trap table, bounces, the direct system-call trap, iret
    events.py       the shared-info page, event channels, the timer
    hypercalls.py   the hypercall table, multicall
    blkback.py      the block device's back end
    hyperspace.py   the hypervisor's part of every address space
    guest_memory.py reading the guest's untrusted pointers

Where it enters the hypervisor: a hypercall; an exception (bounced to the
guest's handler); a port access by a kernel with I/O privilege (emulated).
A system call does not: it uses the direct trap.  On every way out, an event
that became pending while the guest had events enabled is delivered by an
upcall.  None of these is a VM exit: pv counts no `exit.*` at all.
"""
from virtlab import x86
from virtlab.backend import Backend
from virtlab.counters import SENSITIVE
from virtlab.delivery import Event, SOFTWARE_INT
from virtlab.devices.clock import EVENT_NS, LAST_NS
from virtlab.errors import GuestStop
from virtlab.memory import GuestMemoryFault
from virtlab.vmm.sensitive import SensitiveAudit

from . import abi, layout as L
from .blkback import BlockBackend
from .builder import DomainBuilder
from .counters import HYPERCALL_NAMES, PV
from .events import EventChannels, SharedInfo, VirtualTimer
from .frames import L2, FrameTable, Refused
from .guest_memory import GuestMemory
from .hypercalls import NO_RETURN, HypercallTable
from .hyperspace import HyperSpace
from .mmu import Mmu
from .traps import EXCEPTION, SYSCALL_VECTOR, Traps

# The real CR0 while the guest runs: protected mode, paging, write protection
# for ring 1 too (the guest's page tables are read-only to it), ET.  Its low
# 16 bits are what `smsw` shows, and equal the native kernel's.
GUEST_CR0 = x86.CR0_PE | x86.CR0_ET | x86.CR0_WP | x86.CR0_PG


class Pv(Backend):
    name = "pv"
    summary = "paravirtualization as Xen 3.0 on x86-32: the pv image, hypercalls, direct paging"
    image = "pv"
    kernel_ring = 1
    counters = PV + SENSITIVE
    # A PV kernel at ring 1 sees its own RPL (Xen's kernel selectors have RPL
    # 1) and, like every program on Xen, the hypervisor's descriptor tables
    # (sgdt, sidt and str do not trap): details.sensitive names them.
    unfaithful = ("fidelity.sidt", "fidelity.pushcs")

    def physical_memory(self, ram_size):
        return 2 * ram_size            # the hypervisor's frames, then the domain's (layout.py)

    def attach(self, machine):
        super().attach(machine)
        mem, c = machine.mem, machine.counters
        self.nr_pages = machine.ram_size // L.PAGE
        self.space = HyperSpace(mem, L.HypervisorFrames(self.nr_pages), 2 * self.nr_pages)
        self.shared = SharedInfo(mem, self.space.shared_info << 12)
        self.frames = FrameTable(mem, self.nr_pages, self.nr_pages, self.space.shared_info,
                                 self.space.slots, stored=self.stored)
        self.guest = GuestMemory(machine)
        self.channels = EventChannels(self.shared, c)
        self.timer = VirtualTimer(machine.clock, self.channels, c)
        self.traps = Traps(machine, self.space, self.shared)
        self.mmu = Mmu(machine, self.frames, self.space, self.guest)
        self.hypercalls = HypercallTable(self)
        self.audit = SensitiveAudit(machine, self)
        self.iopl = 0                  # PHYSDEVOP_set_iopl
        self.iobitmap = None           # PHYSDEVOP_set_iobitmap: (address, ports)
        self.start = None
        machine.claim_vector(abi.HYPERCALL_VECTOR, self.hypercall)

    def stored(self, ma, n):
        """The hypervisor wrote [ma, ma + n) of the domain's memory (a plain
        mmu_update store, a block read): the CPU sees memory coherently, so
        code there runs as written from now on.  The writes go to the buffer
        the CPU runs from, behind Unicorn's back: what it translated from
        that page is dropped, through the domain's own map of all its memory
        at virt_base (every PV kernel keeps one), or, where that no longer
        maps the frame, all of it."""
        m = self.machine
        va = (self.start.virt_base + (self.space.m2p_get(ma >> 12) << 12) + (ma & 0xFFF)) \
            & 0xFFFFFFFF
        try:
            mapped = m.live_view().phys(va) == ma
        except GuestMemoryFault:
            mapped = False
        if mapped:
            m.forget_code(va, va + n)
        else:
            m.forget_all_code()

    # -- starting the domain ------------------------------------------------------------
    def start_state(self, spec):
        m = self.machine
        blk = BlockBackend(m, self.frames, self.channels, spec.disk)
        cmd = f"workload={spec.workload} scale={spec.scale} disk={len(spec.disk) // 512}"
        builder = DomainBuilder(m.mem, self.space, self.frames, self.nr_pages)
        self.start = builder.build(bytes(spec.image), cmd, blk.attach)
        self.space.finish_tss()

    # [tour pv 40] The CPU as Xen leaves it for a new domain.
    # Paging already on over the builder's tables, the kernel at ring 1 on Xen's flat
    # selectors, ESI pointing at start_info, events masked.
    def boot(self):
        """The CPU as Xen leaves it for a new domain: paging on over the
        bootstrap tables, ring 1 on the flat selectors, ESI at start_info,
        events masked."""
        m, st, s = self.machine, self.machine.state, self.start
        m.set_paging(GUEST_CR0, s.pt_base_mfn << 12)
        self.frames.get_type(s.pt_base_mfn, L2)         # CR3's reference
        self.mmu.baseptr = s.pt_base_mfn
        st.save()
        m.write_control_register(4, 0)     # as after reset: no PSE, no TSD (Unicorn sets some)
        st.set_table("gdt", L.GDT_LINEAR, L.GDT_LIMIT)
        st.set_table("idt", L.IDT_LINEAR, L.IDT_LIMIT)
        st.set_segment("tr", L.TSS_SELECTOR, L.TSS_LINEAR, L.TSS_LIMIT, 0x8B00)
        for name in ("cs", "ss", "ds", "es", "fs", "gs"):
            self._flat(name, abi.FLAT_KERNEL_CS if name == "cs" else abi.FLAT_KERNEL_DS)
        st.eip = s.entry
        st.set_reg("esp", s.stack_end)
        st.set_reg("esi", s.start_info)
        st.set_eflags(x86.IF | 0x2)
        st.load()
        self.shared.set_mask(True)

    def _flat(self, name, selector):
        lo, hi = self.space.descriptor(selector)
        self.machine.state.set_segment(name, selector, x86.seg_base(lo, hi),
                                       x86.seg_limit(lo, hi), hi)

    # -- entries into the hypervisor ---------------------------------------------------------
    # [tour pv 80] The hypervisor's half: the first entry.
    # The machine claimed vector 0x82 for this back end: the `int` stops here.  From
    # ring 1 it is a hypercall; from user mode the gate's ring check fails and the
    # guest kernel gets the #GP.
    def hypercall(self, _vector=abi.HYPERCALL_VECTOR):
        """`int 0x82` (the machine's claimed vector): from ring 1 a hypercall;
        from user mode the gate's ring check fails, and the guest kernel gets
        the #GP."""
        m, st = self.machine, self.machine.state
        if st.cpl != 1:
            self.traps.bounce(SOFTWARE_INT[abi.HYPERCALL_VECTOR])
        else:
            m.clock.now_ns += EVENT_NS                # clock.tick(), inline
            eax, ecx, edx, ebx, _, _, esi, edi = st.gprs()
            result = self.hypercalls.call(eax, ebx, ecx, edx, esi, edi)
            if result is not NO_RETURN:
                st.set_reg("eax", result & 0xFFFFFFFF)
        self.exit_to_guest()

    def exception(self, vector):
        st = self.machine.state
        if st.is_software_int():
            if vector == SYSCALL_VECTOR and st.cpl == 3 and self.traps.direct_int80:
                return self._direct_syscall()
            self.traps.bounce(SOFTWARE_INT[vector])
        elif vector == x86.PF:
            if not self.machine.fetched_early():
                self.traps.bounce(Event(vector, st.error_code, cr2=st.cr(2)))
        elif vector in x86.ERROR_CODE_VECTORS:
            self.traps.bounce(Event(vector, st.error_code))
        else:
            self.traps.bounce(EXCEPTION[vector])
        self.exit_to_guest()

    # [tour pv 170] The fast system call.
    # With a direct trap gate the CPU takes `int 0x80` itself; the only thing the
    # hypervisor adds is a timer that is already due (pv.fast_syscall, no hypercall).
    def _direct_syscall(self):
        """The CPU takes `int 0x80` through the real IDT by itself.  It is also
        an instruction boundary where the hypervisor has control: an event
        already due (the timer) is delivered first, as its interrupt would have
        arrived, and the `int` runs again after it."""
        # timer.check()'s test and the upcall's, in place as in exit_to_guest:
        # every system call passes here.
        timer, sh, traps = self.timer, self.shared, self.traps
        if timer.deadline is not None and self.machine.clock.now_ns >= timer.deadline:
            timer.fire()
        view = sh.view
        due = traps.callback and view[sh.pending_at] and not view[sh.mask_at]
        if due and traps.back_to_int():
            traps.upcall()
            return
        # The CPU delivers `int 0x80` through the real IDT's trap gate: as
        # Traps.bounce and upcall deliver, along the real CPU's path (inline
        # here, where every system call passes).
        m = self.machine
        m.counters["pv.fast_syscall"] += 1
        traps.direct_path.deliver(m.state, SOFTWARE_INT[SYSCALL_VECTOR])

    def invalid_opcode(self):
        if x86.UD not in self.traps.handlers:
            return False
        self.traps.bounce(EXCEPTION[x86.UD])
        self.exit_to_guest()
        return True

    # [tour pv 200] On every way out: is an event due?
    # A pending event with events enabled is delivered as an upcall before the guest
    # runs on, as Xen checks on its return path.
    def exit_to_guest(self):
        """On every way out of the hypervisor: fire a due timer, make an
        upcall if an event is pending and the guest has events enabled, and
        update the system time in vcpu_time_info."""
        # timer.check()'s test is made here, and the shared-info fields are
        # read and written in place, not by a call each: this runs on every
        # exit, and most exits find nothing due.
        timer, sh, clock = self.timer, self.shared, self.machine.clock
        if timer.deadline is not None and clock.now_ns >= timer.deadline:
            timer.fire()
        view = sh.view
        if self.traps.callback and view[sh.pending_at] and not view[sh.mask_at]:
            self.traps.upcall()
        sh.set_time(clock.now_ns)

    def block(self):
        """SCHEDOP_block: events on, and sleep until one is pending (the
        virtual clock jumps to the virtual timer's deadline).  Only an event
        wakes a PV domain, and only the virtual timer raises one later: the
        8254, which a kernel with I/O privilege may program, is a deadline of
        the clock's too, but nothing here delivers its interrupt (nor polls
        it, so its deadline never moves), and sleeping until it would never
        end."""
        m = self.machine
        self.shared.set_mask(False)
        while not self.shared.upcall_pending():
            self.timer.check()
            if self.shared.upcall_pending():
                break
            deadline = self.timer.next_deadline()
            if deadline is None:
                raise GuestStop(f"pv: the domain blocked with nothing to wake it at {m.where()}")
            if deadline > LAST_NS:
                raise GuestStop(f"pv: the domain blocked until its timer at {deadline} ns, "
                                f"past the end of the virtual clock ({LAST_NS} ns), "
                                f"at {m.where()}")
            m.clock.now_ns = max(m.clock.now_ns, deadline)
        return 0

    # -- ports -----------------------------------------------------------------------------------
    def port_in(self, port, size):
        self._emulate_io(port)
        return self.machine.bus.read(port, size)

    def port_out(self, port, size, value):
        self._emulate_io(port)
        self.machine.bus.write(port, size, value)

    def _emulate_io(self, port):
        """A port access traps into the hypervisor, which performs it only for
        a kernel given I/O privilege (user code was checked already, against
        io_permitted)."""
        m = self.machine
        if m.live_cpl() != 3 and self.iopl < 1:
            m.state.save()
            raise GuestStop(f"pv: port {port:#x} accessed by the guest kernel without I/O "
                            f"privilege (PHYSDEVOP_set_iopl) at {m.where()}")
        m.counters["pv.emulate"] += 1
        m.counters["pv.emulate.io"] += 1
        m.clock.tick()

    def io_permitted(self, port, size):
        """User-mode port access: IOPL 3, or the bitmap the kernel registered
        (a set bit refuses the port, as in a TSS)."""
        if self.iopl >= 3:
            return True
        if self.iobitmap is None:
            return False
        bitmap, nr_ports = self.iobitmap
        if port + size > nr_ports:
            return False
        try:
            raw = self.guest.read(bitmap + port // 8, (port % 8 + size + 7) // 8)
        except Refused:
            return False
        return not int.from_bytes(raw, "little") & (((1 << size) - 1) << (port % 8))

    def exit_cause(self, handler, args):
        """`virtlab trace` names a hypercall by its name, and the direct
        system call as what it is: the CPU's own delivery."""
        st = self.machine.state
        if handler != "exception" or not st.is_software_int():
            return None
        if args and args[0] == abi.HYPERCALL_VECTOR and st.cpl == 1:
            number = st.reg("eax")
            return "hypercall " + HYPERCALL_NAMES.get(number, f"{number:#x} (unknown)")
        if args and args[0] == SYSCALL_VECTOR and st.cpl == 3 and self.traps.direct_int80:
            return "int 0x80: direct trap"
        return None

    def halted(self):
        raise GuestStop("pv: the CPU halted at real ring 0, which the guest never runs at")

    def report(self):
        return {"sensitive": self.audit.sightings()}
