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

from unicorn import UC_HOOK_INSN
from unicorn import x86_const as X

from virtlab import x86
from virtlab.delivery import Event, RealCpuView
from virtlab.intercept import EMULATED
from virtlab.guest_events import EventNames, GuestEvents, vector_name
from virtlab.errors import GuestStop

from virtlab.vmm.emulate import NotPrivileged, Unsupported
from virtlab.vmm.monitor import Vmm
from virtlab.vmm.paging import NestedPaging

_CPUID_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class ShadowPagingView(RealCpuView):
    """VMX non-root with shadow paging: the guest's own tables, rings and IF are
    real; only its paging registers live in the virtual CPU."""

    def __init__(self, state, vcpu):
        super().__init__(state)
        self.vcpu = vcpu

    def tables(self):
        return self.state.tables(), self.vcpu.cr3

    def paging(self):
        return self.vcpu.paging_regs()

    def set_cr2(self, value):
        self.vcpu.cr2 = value
        self.state.set_cr(2, value)


def _exit_kind(insn, nested):
    """Which VT-x exit, if any, this instruction causes (None: runs natively).
    `nested`: the guest's paging registers are the real ones (EPT), so the
    VMM clears the CR3-load, CR3-store and INVLPG exiting controls and needs
    no read shadow of CR0."""
    m, ops = insn.mnemonic, insn.op_str
    if m == "mov" and "cr" in ops:
        dst, src = (x.strip() for x in ops.split(",", 1))
        if dst in ("cr0", "cr4") or (dst == "cr3" and not nested):
            return "cr_write"
        if dst == "cr2" and not nested:
            return "cr2_write"       # no exit on VT-x; the guest's CR2 lives in the vCPU
        if src == "cr2" and not nested:
            return "cr2_read"        # (Unicorn clobbers the real CR2 when a hook
                                     # redirects EIP, and hidden faults change it)
        if src == "cr3" and not nested:
            return "cr_read"
        if src in ("cr0", "cr4") and not nested:
            return "read_shadow"     # real CR0/CR4 differ from the guest's
        return None
    if m == "smsw":
        return None if nested else "read_shadow"
    if m == "invlpg":
        return None if nested else "invlpg"
    if m == "clts":
        return None if nested else "clts"     # CR0.TS belongs to the read shadow
    if m in ("rdmsr", "wrmsr"):
        return "msr"
    if m in ("ljmp", "lcall") or (m in ("jmp", "call") and (
            (ops.startswith(("far", "0x")) and ":" in ops) or ops.startswith("ptr "))):
        return "far_transfer"        # direct (sel:offset) or indirect (m16:32) far
    if m in ("iretd", "iret"):
        return "iret"
    return None


class Hw(Vmm):
    name = "hw"
    summary = "hardware-assisted trap-and-emulate (VT-x), shadow paging"

    def attach(self, machine):
        super().attach(machine)
        self.nested = not self.paging.virtual_registers
        self.view = ShadowPagingView(machine.state, self.vcpu) if not self.nested \
            else RealCpuView(machine.state)
        self.events = GuestEvents(machine, self.view, EventNames(
            irq="inject.irq", hlt="exit.hlt", irq_exits=("exit.total", "exit.irq")))
        machine.intercepts.watch(lambda insn, cpl: _exit_kind(insn, self.nested),
                                 self._intercepted, exit=True)
        self._cpuid_cb = _CPUID_CB(self._on_cpuid)
        machine.add_hook(UC_HOOK_INSN, self._cpuid_cb, ctypes.c_int(X.UC_X86_INS_CPUID))

    def boot(self):
        self.paging.boot()

    # -- exits through the interrupt path --------------------------------------
    def exception(self, vector):
        m, st = self.machine, self.machine.state
        if vector == x86.PF and not self.nested:
            event = self.shadow_page_fault()
            if event is None:
                st.set_cr(2, self.vcpu.cr2)      # a hidden fault leaves guest CR2 alone
                return
            return self._deliver(event, "exit.total", "exit.pf.true", "reflect.total", "reflect.pf")
        # Everything else is the guest's own business under VT-x: no exit.  The
        # platform delivers it through the guest's IDT exactly as native does.
        software = st.is_software_int
        if software:
            return self._deliver(Event(vector, software=True), "native.syscall")
        self._deliver(self.events.exception_event(vector),
                      "native.exception", "native.exception." + vector_name(vector))

    def _deliver(self, event, *counted):
        """Deliver the event and count it as `counted`, unless a pending
        interrupt is taken first: then the event happens (and is counted) when
        the instruction is retried, and only the interrupt is counted now."""
        st = self.machine.state
        if st.eflags() & x86.IF and self.events.interrupt_first(event.software, self):
            return
        c = self.machine.counters
        for name in counted:
            c[name] += 1
        self.events.deliver(event)

    def invalid_opcode(self):
        base, limit = self.machine.state.table("idt")
        if x86.UD * 8 + 7 > limit:
            return False
        self.machine.counters["native.exception"] += 1
        self.machine.counters["native.exception.ud"] += 1
        self.events.deliver(Event(x86.UD))
        return True

    def halted(self):
        st = self.machine.state
        self.machine.counters["exit.total"] += 1          # GuestEvents counts exit.hlt
        self.events.halt(st.eflags() & x86.IF, st.eip - 1)

    # -- intercepted instructions -------------------------------------------------
    def _intercepted(self, decoded, kind):
        m = self.machine
        if kind == "iret" and not m.state.eflags() & x86.NT:
            return None              # an ordinary iret: no task switch, no exit
        if kind == "far_transfer":
            self._far_transfer(decoded)
            return None
        try:
            name = self.emulator.emulate(decoded)
        except (NotPrivileged, Unsupported) as exc:
            raise GuestStop(f"cannot emulate at {m.where()}: {exc or decoded.text()}") from None
        if kind in ("read_shadow", "cr2_write", "cr2_read"):
            m.counters["hw." + kind] += 1
        else:
            m.counters["exit.total"] += 1
            m.counters["exit.priv"] += 1
            m.counters["exit.priv." + name] += 1
        return EMULATED

    def _far_transfer(self, decoded):
        """A far jmp/call through a TSS or task gate is a hardware task switch,
        which loads CR3 from the TSS: VT-x exits unconditionally.  Ordinary far
        transfers to code segments run natively."""
        m = self.machine
        target = _far_selector(decoded, m, self)
        if target is None:
            return
        if target & 4:
            raise GuestStop(f"far transfer through the LDT at {m.where()}: not supported by this VMM")
        d = _descriptor(self, target)
        if d is not None and not d[1] & x86.DESC_S:
            raise GuestStop(f"task switch at {m.where()}: not supported by this VMM")

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


def _far_selector(decoded, machine, backend):
    from capstone import x86_const as C
    insn = decoded.insn
    if not insn.operands:
        return None
    op = insn.operands[0]
    if op.type == C.X86_OP_IMM and len(insn.operands) == 2:
        return op.imm & 0xFFFF
    if op.type == C.X86_OP_MEM:
        from virtlab.vmm.emulate import effective_address
        ea = effective_address(insn, op, machine.state)
        raw = backend.guest_view().read(ea + 4, 2)
        return int.from_bytes(raw, "little")
    return None


def _descriptor(backend, selector):
    st = backend.machine.state
    base, limit = st.table("gdt")
    index = selector & ~7
    if selector & 4 or index == 0 or index + 7 > limit:
        return None
    return x86.split_descriptor(backend.guest_view().read(base + index, 8))


class HwNpt(Hw):
    name = "hw-npt"
    summary = "hardware-assisted trap-and-emulate (VT-x) with nested paging"
    paging_kind = NestedPaging
