"""`hw` and `hw-npt`: hardware-assisted trap-and-emulate, as VT-x (2006).

The guest kernel runs at real ring 0, as in VMX non-root mode: cli, sti, popf,
pushf, sidt and the rest execute natively and see the guest's own state, so
every fidelity workload matches native.  The VMM gets control only where VT-x
would exit, and each such exit is a VM exit plus a VM entry in the counters:

  hw       CR0/CR3/CR4 writes, CR3 reads, INVLPG, HLT, port I/O, CPUID,
           RDMSR/WRMSR, #PF (shadow paging), external interrupts (injected
           through the guest's IDT on the next entry), task switches;
  hw-npt   the same but with nested paging: the CPU walks the guest's own page
           tables, so there are no CR3, INVLPG or page-fault exits.

Unicorn has no VMX controls, so the exits are made with translation-time
intercepts (intercept.py): a hook on the exact address of each exiting
instruction, installed when its block is translated, without changing guest
memory.  The VT-x CR0/CR4 read shadows (the guest reads its own CR0 without an
exit) are modelled the same way, but counted as `hw.read_shadow`, not as exits.
"""
import ctypes

from capstone import x86_const as C
from unicorn import UC_HOOK_INSN
from unicorn import x86_const as X

from virtlab import fastcall, x86
from virtlab.counters import EXITS, NATIVE, REFLECTION, SHADOW, CounterSpec, Named
from virtlab.decode import opcode
from virtlab.delivery import DeliveryFault, Event, RealCpuView, fault_event
from virtlab.errors import GuestStop
from virtlab.guest_events import EventNames, GuestEvents, vector_name
from virtlab.intercept import EMULATED, RAISED
from virtlab.memory import GuestMemoryFault
from virtlab.vmm.emulate import PRIV_COUNTERS, NotPrivileged, Unsupported
from virtlab.vmm.gates import far_target, is_far_transfer, switches_tasks, task_return
from virtlab.vmm.monitor import Vmm
from virtlab.vmm.paging import NestedPaging

_CPUID_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class ShadowPagingView(RealCpuView):
    """VMX non-root with shadow paging: the guest's own tables, rings and IF are
    real; only its paging registers live in the virtual CPU."""

    def __init__(self, state, vcpu):
        super().__init__(state)
        self.vcpu = vcpu
        # The CPL, tables and TR are the real ones (and the real paging
        # registers, the shadow's, come with them); the guest's own paging
        # registers are the virtual CPU's.
        self.route_key = lambda: (vcpu.paging_regs(), state.route_regs())

    def paging(self):
        return self.vcpu.paging_regs()

    def set_cr2(self, value):
        self.vcpu.cr2 = value
        self.state.set_cr(2, value)


_ALWAYS = {C.X86_INS_RDMSR: "msr", C.X86_INS_WRMSR: "msr", C.X86_INS_LJMP: "far_transfer",
           C.X86_INS_LCALL: "far_transfer", C.X86_INS_IRETD: "iret", C.X86_INS_IRET: "iret"}
_SHADOW_ONLY = {C.X86_INS_SMSW: "read_shadow", C.X86_INS_INVLPG: "invlpg",
                C.X86_INS_CLTS: "clts",           # CR0.TS belongs to the read shadow
                C.X86_INS_LMSW: "cr_write"}       # and so do MP, EM and TS
# Privileged instructions: above ring 0 the CPU raises #GP for them before any
# VM exit is considered (SDM vol. 3, 25.1.1), so they exit only at ring 0.
# (Moves to and from control registers too: _exit_kind.)
_RING0_ONLY = frozenset((C.X86_INS_RDMSR, C.X86_INS_WRMSR, C.X86_INS_CLTS, C.X86_INS_LMSW,
                         C.X86_INS_INVLPG))
# Every instruction id _exit_kind may answer for (intercept.watch asks about no other).
_EXIT_IDS = frozenset(_ALWAYS) | frozenset(_SHADOW_ONLY) | {C.X86_INS_MOV, C.X86_INS_JMP,
                                                          C.X86_INS_CALL}


# [tour hw 25, hw-npt 25] Which instructions exit.
# With nested paging the VMM clears the CR3-load, CR3-store and INVLPG exiting
# controls; what remains is CR0/CR4 writes, HLT, I/O, MSRs, CPUID and task switches.
def _exit_kind(insn, nested, cpl):
    """Which VT-x exit, if any, this instruction causes at privilege level
    `cpl` (None: runs natively, and a privileged one above ring 0 takes the
    CPU's #GP).  `nested`: the guest's paging registers are the real ones
    (EPT), so the VMM clears the CR3-load, CR3-store and INVLPG exiting
    controls and needs no read shadow of CR0."""
    iid = insn.id
    if iid == C.X86_INS_MOV:
        return _cr_move(insn, nested) if cpl == 0 else None
    if cpl and iid in _RING0_ONLY:
        return None
    if iid in _ALWAYS:
        return _ALWAYS[iid]
    if iid in _SHADOW_ONLY:
        return None if nested else _SHADOW_ONLY[iid]
    if iid in (C.X86_INS_JMP, C.X86_INS_CALL) and is_far_transfer(insn):
        return "far_transfer"
    return None


def _cr_move(insn, nested):
    """mov to or from a control register: 0F 22 /r (to) or 0F 20 /r (from),
    the register number in ModRM.reg (decode.opcode: no operand details
    needed at translation time)."""
    op, modrm = opcode(insn)
    if op not in (b"\x0f\x20", b"\x0f\x22"):
        return None
    n = (modrm >> 3) & 7
    if op == b"\x0f\x22":
        if n in (0, 4) or (n == 3 and not nested):
            return "cr_write"
        return "cr2_write" if n == 2 and not nested else None  # no exit on VT-x; CR2 lives in the vCPU
    if nested:
        return None
    if n == 2:
        return "cr2_read"            # (Unicorn clobbers the real CR2 when a hook
                                     # redirects EIP, and hidden faults change it)
    return "cr_read" if n == 3 else "read_shadow"     # real CR0/CR4 differ from the guest's


# [tour hw 10] Hardware assistance: VT-x as in 2006.
# The guest kernel runs at real ring 0, as in VMX non-root mode: the sensitive
# instructions see the guest's own state and there is nothing to reflect.  The VMM gets
# control only where VT-x would exit.
class Hw(Vmm):
    name = "hw"
    summary = "hardware-assisted trap-and-emulate (VT-x), shadow paging"
    # VT-x lets the guest take its own system calls and exceptions (native.*).
    counters = NATIVE + EXITS + REFLECTION + SHADOW + (
        CounterSpec("hw.read_shadow", "a guest read of CR0/CR4 (or `smsw`) answered from "
                    "the VT-x read shadow", charged=False, kind="privileged",
                    reason="answered by the VT-x CR read shadow without an exit: free "
                           "by design"),
        CounterSpec("hw.cr2_*", "the guest's CR2 kept in the virtual CPU (`cr2_write`, "
                    "`cr2_read`)", charged=False, kind="paging",
                    reason="VT-x loads CR2 on entry; no exit, no cost"),
    )

    # [tour hw 20] Setting the exit controls.
    # Unicorn has no VMX controls.  The exits are made by asking the machine to
    # intercept the instructions that VT-x would exit on (_exit_kind), and CPUID by a
    # hook of its own.
    def attach(self, machine):
        super().attach(machine)
        self.nested = not self.paging.virtual_registers
        self.view = ShadowPagingView(machine.state, self.vcpu) if not self.nested \
            else RealCpuView(machine.state)
        self.events = GuestEvents(machine, self.view, EventNames(
            irq="inject.irq", hlt="exit.hlt", irq_exits=("exit.total", "exit.irq")))
        machine.intercepts.watch(lambda insn, cpl: _exit_kind(insn, self.nested, cpl),
                                 self._intercepted, exit=True, ids=_EXIT_IDS)
        self._cpuid_cb = _CPUID_CB(self._on_cpuid)
        machine.add_hook(UC_HOOK_INSN, self._cpuid_cb, ctypes.c_int(X.UC_X86_INS_CPUID))

    # [tour hw 15, hw-npt 15] Boot: the guest starts as on bare hardware.
    # At ring 0 with the boot protocol's state; only the paging component has work:
    # shadow paging points the real CR3 at a flat shadow while the guest's paging is
    # off, nested paging has nothing to do.
    def boot(self):
        self.paging.boot()

    # -- exits through the interrupt path --------------------------------------
    # [tour hw 70, hw-npt 70] Exceptions are the guest's own.
    # A system call or a fault does not exit under VT-x: the guest takes it through
    # its own IDT, as native.  Only a page fault exits, and only with shadow paging.
    def exception(self, vector):
        st = self.machine.state
        if vector == x86.PF and not self.nested:
            event = self.paging.page_fault(self.count_exit)     # shadow_page_fault()
            if event is None or self.machine.fetched_early():
                st.set_cr(2, self.vcpu.cr2)      # a hidden fault leaves guest CR2 alone
                return
            return self._deliver(event, "exit.total", "exit.pf.true", "reflect.total", "reflect.pf")
        # Everything else is the guest's own business under VT-x: no exit.  The
        # platform delivers it through the guest's IDT exactly as native does.
        software = st.is_software_int()
        if software:
            return self._deliver(Event(vector, software=True), "native.syscall")
        if vector == x86.PF and self.machine.fetched_early():
            return
        self._deliver(self.events.exception_event(vector),
                      "native.exception", "native.exception." + vector_name(vector))

    def _deliver(self, event, *counted):
        """Deliver the event and count it as `counted`, unless a pending
        interrupt is taken first: then the event happens (and is counted) when
        the instruction is retried, and only the interrupt is counted now."""
        st = self.machine.state
        if st.system_flags() & x86.IF and self.events.interrupt_first(event.software, self):
            return
        c = self.machine.counters
        for name in counted:
            c[name] += 1
        self.events.deliver(event)

    def invalid_opcode(self):
        base, limit = self.machine.state.table("idt")
        if x86.UD * 8 + 7 > limit:
            return False
        self._deliver(Event(x86.UD), "native.exception", "native.exception.ud")
        return True

    def halted(self):
        st = self.machine.state
        self.machine.counters["exit.total"] += 1          # GuestEvents counts exit.hlt
        self.events.halt(st.system_flags() & x86.IF, st.eip - 1)

    # -- intercepted instructions -------------------------------------------------
    # [tour hw 50, hw-npt 45] An exit, handled.
    # A control-register move, INVLPG, RDMSR/WRMSR go to the shared emulator; a read
    # of CR0 or CR4 is answered from the read shadow (hw.read_shadow, no exit); an
    # iret with NT set is a task switch.
    def _intercepted(self, decoded, kind):
        m = self.machine
        if kind == "iret" and not m.state.system_flags() & x86.NT:
            return None              # an ordinary iret: no task switch, no exit
        if kind == "iret":
            return self._task_return()
        if kind == "far_transfer":
            self._far_transfer(decoded)
            return None
        eflags = m.state.system_flags()
        try:
            name = self.emulator.emulate(decoded)
        except (NotPrivileged, Unsupported) as exc:
            raise GuestStop(f"cannot emulate at {m.where()}: {exc or decoded.text()}") from None
        except DeliveryFault as fault:
            # An invalid register (mov with CR1, DR4 while CR4.DE is set): on
            # VT-x the #UD comes before the exit, the guest's own exception.
            event = fault_event(fault)
            self._deliver(event, "native.exception", "native.exception." + vector_name(event.vector))
            return RAISED
        except GuestMemoryFault:
            # Its memory operand (lmsw, smsw) is not mapped: on VT-x the
            # operand's #PF comes before the exit, so the CPU runs the
            # instruction and faults as it would natively.
            return None
        if name == "wrmsr" and m.state.reg("ecx") in _GUEST_STATE_MSRS:
            # The VMCS guest-state area holds IA32_SYSENTER_CS/ESP/EIP and VM
            # entry loads them: the guest's SYSENTER and SYSEXIT, which do not
            # exit, then use its own values.  IA32_EFER too (the load-EFER
            # entry control): under nested paging the CPU walks the guest's
            # PAE tables with the guest's EFER.NXE.
            st = m.state
            m.write_msr(st.reg("ecx"), st.reg("edx") << 32 | st.reg("eax"))
        c = m.counters
        if kind in ("read_shadow", "cr2_write", "cr2_read"):
            c[_HW_COUNTERS[kind]] += 1
        else:
            c["exit.total"] += 1
            c["exit.priv"] += 1
            c[PRIV_COUNTERS[name]] += 1
        if eflags & x86.TF:
            self.step_after(eflags, name)
        return EMULATED

    def deliver_step(self, event):
        """Injected, and counted as the guest's own #DB, which VT-x lets
        through: the guest sees the exception it would have taken."""
        self._deliver(event, "native.exception", "native.exception.db")

    def sysenter(self):
        """SYSENTER and SYSEXIT do not exit on VT-x: the guest kernel is at real
        ring 0 and the real MSRs hold its values (see _intercepted)."""
        return fastcall.native_sysenter(self, self.events)

    def _task_return(self):
        """iret with NT set: a task switch, on which VT-x exits."""
        m, st = self.machine, self.machine.state
        try:
            event = task_return(self.guest_view(), st.seg_base_of("tr"))
        except Unsupported as exc:
            raise GuestStop(f"{exc} at {m.where()}: not supported by this VMM") from None
        m.counters["exit.total"] += 1
        m.counters["exit.priv"] += 1
        m.counters["exit.priv.iret"] += 1
        self._deliver(event, "native.exception", "native.exception." + vector_name(event.vector))
        return RAISED

    def _far_transfer(self, decoded):
        """A far jmp/call through a TSS or task gate is a hardware task switch,
        which loads CR3 from the TSS: VT-x exits unconditionally.  Ordinary far
        transfers to code segments, and through call gates (a privilege change
        the CPU performs itself), run natively; so do the other system
        descriptors, on which the CPU raises #GP itself."""
        m = self.machine
        target = far_target(decoded, m.state, self.guest_view())
        if target is None:
            return
        st = m.state
        # (The guest kernel's LDT is the real one: it runs at ring 0.  A task
        # gate may lie in it as well as in the GDT.)
        table = (st.seg_base_of("ldt"), st.seg_limit_of("ldt")) if target & 4 else st.table("gdt")
        if switches_tasks(self.guest_view(), table, target & ~4):
            raise GuestStop(f"task switch at {m.where()}: not supported by this VMM")

    # [tour hw 140] CPUID always exits on VT-x.
    # It is counted as an exit and then executed by the CPU.
    def _on_cpuid(self, _uc, _user):
        if self.machine.outcome is not None:
            return 0                                 # after the end of the run
        try:
            self.count_exit("cpuid")
        except BaseException as exc:
            self.machine.abort(exc)
        return 0                                     # let the CPU execute it

    # -- effects (called by the Emulator) ------------------------------------------
    def write_cr(self, n, value):
        super().write_cr(n, value)
        if n == 2 and not self.nested:
            self.machine.state.set_cr(2, value)  # the guest's CR2 is the real one

    def report(self):
        return {}


_GUEST_STATE_MSRS = frozenset(fastcall.MSRS) | {x86.MSR_EFER}
_HW_COUNTERS = Named("hw.")                 # what hw does without an exit -> its counter


# [tour hw-npt 10] Nested paging: the CPU walks the guest's own tables.
# With EPT or NPT the guest's CR3 is the real one and a TLB miss walks two levels of
# tables in hardware: no shadow page tables, no page-fault, CR3 or INVLPG exits.
class HwNpt(Hw):
    name = "hw-npt"
    summary = "hardware-assisted trap-and-emulate (VT-x) with nested paging"
    paging_kind = NestedPaging
