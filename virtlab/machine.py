"""The virtual PC: one IA-32 CPU on Unicorn, guest RAM, machine memory, devices.

The machine owns the real CPU and the real interrupt path (every Unicorn hook).
What an exit *means* is the back end's business: the machine saves the CPU into
the state area, hands the exit to the back end, and loads the state back once.

Exits reach the VMM through five doors, all of them raw ctypes callbacks (the
Python binding's wrappers cost more than the work of a typical exit):
  - UC_HOOK_INTR: every exception and `int n`, with the vector only;
  - UC_HOOK_INSN for IN and OUT: every port access, at any privilege level;
  - UC_HOOK_INSN for SYSENTER, which Unicorn does not perform (fastcall.py);
  - UC_HOOK_INSN_INVALID: #UD, which never reaches the INTR hook;
  - the return of emu_start: `hlt` at ring 0, a stop request, or an error.
"""
import ctypes
import struct
import time
import traceback
import weakref
from dataclasses import dataclass, field

from unicorn import (Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_HOOK_INTR, UC_HOOK_INSN,
                     UC_HOOK_INSN_INVALID, UC_ERR_OK, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH)
from unicorn import x86_const as X
from unicorn.unicorn_py3.unicorn import uclib, uc_hook_h

from . import x86
from .counters import Counters
from .decode import Decoder, crossing_start, describe
from .devices.bus import PortBus
from .devices.clock import VirtualClock
from .devices.ide import IdeDisk
from .devices.pic import Pic
from .devices.pit import Pit
from .devices.platform import PORTS as PLATFORM_PORTS, Platform
from .devices.uart import Uart
from .backend import Backend
from .errors import GuestStop
from .icount import InstructionCounter
from .intercept import Intercepts
from .io_permission import IoPermission
from .memory import GuestMemoryFault, LinearView, PhysMem
from .memmap import BOOT_GDT, BOOT_INFO, BOOT_MAGIC, BOOT_STACK, IMAGE_BASE, MiB
from .state_area import c_entry, layout, open_state_area
from .rng import VirtualRng
from .lost_flags import LostFlags
from .scratch_cpu import kept_control_register
from .tsc import VirtualTsc
from .watchdog import Watchdog

NEVER = 1 << 32                  # an emu_start `until` the 32-bit EIP cannot reach

_TLB_FLUSH = (UC_CTL_IO_WRITE << 30) | UC_CTL_TLB_FLUSH
_reg_write = c_entry("uc_reg_write")
_reg_read = c_entry("uc_reg_read")
_ctl = c_entry("uc_ctl")
_EIP_ID = ctypes.c_int(X.UC_X86_REG_EIP)
_CS_ID = ctypes.c_int(X.UC_X86_REG_CS)
_EFLAGS_ID = ctypes.c_int(X.UC_X86_REG_EFLAGS)
_DR_FIXED_ONES = {6: 0xFFFF0FF0, 7: 0x400}   # read as 1 in DR6 and DR7 (SDM vol. 3, 18.2)
_PAGING_IDS = tuple(ctypes.c_int(r) for r in (X.UC_X86_REG_CR0, X.UC_X86_REG_CR3,
                                                X.UC_X86_REG_CR4))
_TLB_FLUSH_ID = ctypes.c_int(_TLB_FLUSH)
_INTR_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)
_IN_CB = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
_OUT_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)
_INVALID_CB = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)
_SYSENTER_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


@dataclass
class Budget:
    host_seconds: float = 120.0
    max_exits: int = 50_000_000


# The longest budget a run may be given (the watchdog waits at most
# threading.TIMEOUT_MAX, some 290 years, which is as good as none).
MAX_HOST_SECONDS = 1e12


@dataclass
class BootSpec:
    image: bytes
    workload: str = ""
    scale: int = 0
    disk: bytearray = field(default_factory=bytearray)


@dataclass
class Outcome:
    ok: bool
    exit_status: int = None
    reason: str = ""


@dataclass
class Roi:
    begun: bool = False
    ended: bool = False
    start_counters: dict = field(default_factory=dict)
    start_time: float = 0.0
    counters: dict = field(default_factory=dict)
    seconds: float = 0.0
    start_instructions: int = 0
    instructions: int = None      # guest instructions in the ROI (counting runs)


class _Resources:
    """What a machine holds on the C side, released in a safe order.

    Unicorn keeps raw pointers to the guest-RAM buffers (uc_mem_map_ptr), to the
    ctypes hook thunks and to the state area's context; Python owns all of them.
    Freed in the wrong order (which is what the cyclic garbage collector does
    to a dead machine, at any allocation, even inside a hook of another,
    live machine), Unicorn would hold dangling pointers to memory the C heap
    or libffi then hands out again.  release() removes the hooks, frees the
    context and closes the engine while the memory it points at is still
    held here.  It runs at most once: from Machine.close(), or from the
    machine's finalizer if it was never closed (a weakref callback, which the
    collector runs before it tears down any object of the dead cycle, so the
    hook thunks are still alive then).  Nothing here may refer back to the
    machine: the finalizer keeps this object alive."""

    def __init__(self, uc):
        self.uc = uc
        self.uch = uc._uch
        self.handles = []              # uc_hook_h of every raw hook
        self.buffers = []              # host memory mapped into the CPU
        self.areas = []                # state areas (each owns a context)
        self.closed = False

    def release(self):
        if self.closed:
            return
        self.closed = True
        uch = self.uch
        for handle in self.handles:
            uclib.uc_hook_del(uch, handle)
        for area in self.areas:
            area.detach()
        # The binding's own finalizer closes the engine exactly once.
        finalizer = getattr(self.uc, "_Uc__finalizer", None)
        if finalizer is not None:
            finalizer()
        else:                              # a binding without one: close by hand
            uclib.uc_close(uch)
        self.handles.clear()
        self.buffers.clear()
        self.areas.clear()
        self.uc = None


# [tour native 10] The virtual PC, where every tour begins.
# One Unicorn CPU, guest RAM, the devices on a port bus, and the hooks through which
# the real CPU stops for the VMM. Every back end runs on one of these; what differs is
# what its back end does at each stop.
class Machine:
    """One virtual PC.  Use it as a context manager, or call close() when
    done: a machine holds a Unicorn engine, guest RAM and raw hooks, and
    closing releases them at once (the results -- outcome, counters, console,
    the guest's memory -- stay readable)."""

    def __init__(self, backend, ram_size=32 * MiB, budget=None, count_instructions=False,
                 live_state=None):
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self._res = _Resources(self.uc)
        # Registered first: whatever fails below, the engine is still released.
        self._finalizer = weakref.finalize(self, self._res.release)
        # Physical memory: the guest's RAM, unless the back end lays out the
        # machine's frames itself (a PV hypervisor gives its domain frames
        # scattered over a larger machine: Backend.physical_memory).
        self.ram_size = ram_size
        physical = backend.physical_memory(ram_size)
        self.mem = PhysMem.create(self.uc, physical)
        self._res.buffers.append(self.mem.buf)
        # Machine memory: the VMM's own pages, above guest RAM.  Only a back end
        # that needs some (shadow tables, a translation cache) gets any; the
        # back end then guarantees no guest-controlled mapping reaches it.
        self.vmm_base = physical
        self.vmm_size = backend.machine_memory
        self.vmm = PhysMem.create(self.uc, self.vmm_size, physical) if self.vmm_size else None
        if self.vmm is not None:
            self._res.buffers.append(self.vmm.buf)
        # The state area addresses the live CPU state when it can (and
        # live_state is not False: state_area.PREFER_LIVE when None).
        self.state = open_state_area(self.uc, layout(), live_state)
        self._res.areas.append(self.state)
        self.counters = Counters()
        self.decoder = Decoder()
        self.budget = budget or Budget()
        self.exits = 0                # VMM entries (RunResult.vmm_entries): what max_exits limits
        self.exit_vector = None       # the vector of the last exception or `int` exit
        self.outcome = None
        self.roi = Roi()
        self._devices()
        self._hooks = []
        self._hook_error = None
        self.internal_error = None    # what a back end's own bug raised (_internal_error)
        self._restart = []
        self._restart_cr2 = 0
        self._run_until = NEVER       # where the next emu_start stops (_fetched_early)
        self._early = None
        self._started = False
        self._flush_on_entry = False
        self.intercepts = Intercepts(self)
        self.backend = backend
        self._cs_reg = ctypes.c_uint64()
        self._cs_ref = ctypes.byref(self._cs_reg)
        self._flags_reg = ctypes.c_uint64()
        self._flags_ref = ctypes.byref(self._flags_reg)
        self._eip_reg = ctypes.c_uint64()
        self._eip_ref = ctypes.byref(self._eip_reg)
        self._paging_regs = tuple(ctypes.c_uint64() for _ in _PAGING_IDS)
        self._paging_refs = tuple(zip(_PAGING_IDS, map(ctypes.byref, self._paging_regs)))
        self._dispatch(backend)
        backend.attach(self)
        IoPermission(self)
        self.lost_flags = LostFlags(self)
        self._lost_flag_sites = self.lost_flags.sites
        self.tsc = VirtualTsc(self)
        self.rng = VirtualRng(self)
        self._install_hooks()
        self.icount = InstructionCounter(self) if count_instructions else None

    # -- lifetime ----------------------------------------------------------
    @property
    def closed(self):
        return self._res.closed

    def close(self):
        """Release the engine, its hooks, the state area's context and the
        guest memory mappings.  Idempotent.  What the run produced (outcome,
        counters, console, roi, the RAM contents) stays readable."""
        self._finalizer()
        self._hooks = []                   # the engine is closed: no hook can run
        self.uc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _check_open(self):
        if self._res.closed:
            raise RuntimeError("the machine is closed")

    # -- devices -----------------------------------------------------------
    def _devices(self):
        self.clock = VirtualClock()
        self.pic = Pic()
        self.pit = Pit(self.clock, self.pic)
        self.clock.deadlines.append(self.pit)
        self.uart = Uart()
        self.ide = IdeDisk(self.pic)
        self.platform = Platform(on_exit=self.finish, on_roi=self._on_roi)
        self.bus = PortBus()
        for dev in (self.uart, self.pic, self.pit, self.ide):
            self.bus.attach(dev, dev.ports)

    def drop_translations(self, begin, end):
        """Drop Unicorn's translations of [begin, end).  Doing so walks the page
        tables and may raise a fault inside the library that is never
        delivered, leaving QEMU's exception-in-flight set (measured: the next
        #PF then arrives as #DF), so it is cleared afterwards."""
        self.uc.ctl_remove_cache(begin, end)
        self._settle()

    def _settle(self):
        """Clear QEMU's exception-in-flight outside an exit (docs/unicorn.md,
        item 2): a fault the CPU raised and was stopped at leaves it set."""
        self.state.save()
        self.state.clear_exception_in_flight()
        self.state.load()

    def forget_code(self, begin, end):
        """During an exit: drop Unicorn's translations of [begin, end), code
        the VMM has just rewritten (a translation cache).  The entry that ends
        the exit clears what the drop may leave in flight (enter()).  The
        addresses are linear, but what goes is every translation made from
        the physical pages they map now, through whatever linear address it
        was made (QEMU keeps translated code by physical page).  The library
        looks them up as a fetch at the CPU's ring would, and the VMM's own
        code is supervisor-only: at an exit from user code the lookup would
        fault, the drop would not happen and the CPU would hang
        (docs/unicorn.md, item 38), so it is made as the kernel's."""
        st = self.state
        saved = st.lookups_as_kernel()
        if saved is None and st.cpl == 3:
            self.uc.ctl_flush_tb()         # (a copy of the state: every translation goes)
            return
        try:
            self.uc.ctl_remove_cache(begin, end)
        finally:
            st.restore_cpl(saved)

    def forget_all_code(self):
        """Drop every translation Unicorn has made."""
        self.uc.ctl_flush_tb()

    # -- the exit handlers ---------------------------------------------------
    # (exception() is called through _h_vector, a table by vector.)
    EXIT_HANDLERS = ("port_in", "port_out", "invalid_opcode", "halted", "sysenter")

    def _dispatch(self, backend):
        """Bind the handlers the four doors call (attributes, so that the hot
        path is one call; observe() and claim_vector() rebind them).  An
        exception or `int n` goes through a table by vector, whose entries
        claim_vector() replaces."""
        for name in self.EXIT_HANDLERS:
            setattr(self, "_h_" + name, getattr(backend, name))
        self._h_vector = [backend.exception] * 256
        self._pc_map = (backend.guest_address
                        if type(backend).guest_address is not Backend.guest_address else None)

    def observe(self, wrap):
        """Let an observer (virtlab trace) see every exit: each handler becomes
        wrap(name, handler), and intercepted instructions go through
        wrap("intercept", ...) (intercept.py).  Only the observed machine pays."""
        for name in self.EXIT_HANDLERS:
            setattr(self, "_h_" + name, wrap(name, getattr(self, "_h_" + name)))
        self._h_vector = [wrap("exception", h) for h in self._h_vector]
        self.intercepts.observer = wrap("intercept", None)

    def claim_vector(self, vector, handler):
        """A back end takes a software-interrupt vector for itself (a hypercall
        gate such as Xen's `int 0x82`): an `int vector` from the guest calls
        handler(vector) with the CPU saved, instead of the back end's
        exception().  Only vectors 32 to 255: Unicorn reports no external
        interrupt (the VMM injects those itself), so at these vectors the CPU
        stops only for an `int`, while 0 to 31 are also its exceptions."""
        if not 32 <= vector <= 255:
            raise ValueError(f"vector {vector} cannot be claimed (32 to 255 only)")
        self._h_vector[vector] = handler

    # -- services to back ends ---------------------------------------------
    # A back end never touches Unicorn or the state area's offsets itself: what
    # it needs from the real CPU, it asks for here.

    def flush_tlb_on_entry(self):
        """Flush the real TLB when this exit returns to the guest (after the
        state area is loaded): what a CR3 load through the state area needs."""
        self._flush_on_entry = True

    def enter(self):
        """Return from an exit: the saved (and edited) CPU state goes back into
        the CPU.  QEMU's exception-in-flight is cleared first (docs/unicorn.md, item 2),
        and a flush asked for during the exit happens after the load."""
        st = self.state
        if self.intercepts.examine_resume:
            self.intercepts.resume((st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF, st.cpl)
        st.resume()
        if self._flush_on_entry:
            self._flush_on_entry = False
            self.flush_tlb()

    def resume_at(self, eip):
        """From inside a code hook: enter the guest at `eip` (already in the
        state area) instead of the hooked instruction.  Writing EIP through the
        API makes the CPU leave its current translation block (straight into
        the library: the binding's reg_write costs more than the rest of an
        intercept's work); leaving it, the library folds cc_src into EFLAGS,
        which must then hold flags only (docs/unicorn.md, item 39)."""
        self.state.keep_flags_in_cc_src()
        self.enter()
        self._eip_reg.value = eip & 0xFFFFFFFF
        status = _reg_write(self.uc._uch, _EIP_ID, self._eip_ref)
        if status != UC_ERR_OK:
            raise UcError(status)

    def set_paging(self, cr0, cr3):
        """Load the real CR3 and CR0 on the live CPU (before the first entry,
        when a back end lays out the real paging the guest runs on)."""
        self.uc.reg_write(X.UC_X86_REG_CR3, cr3)
        self.uc.reg_write(X.UC_X86_REG_CR0, cr0)
        self.flush_tlb()

    def write_control_register(self, n, value):
        """Write a real control register during an exit, with its side effects
        (a CR0 or CR4 write changes QEMU's paging mode, which a context restore
        alone does not recompute), holding what the CPU's own `mov` would
        have kept of `value` (the library's write keeps it whole:
        docs/unicorn.md, item 41)."""
        reg = {0: X.UC_X86_REG_CR0, 3: X.UC_X86_REG_CR3, 4: X.UC_X86_REG_CR4}[n]
        self.state.load()
        self.uc.reg_write(reg, kept_control_register(n, value))
        self.state.save()

    def read_msr(self, index):
        """A real model-specific register (as the guest's own wrmsr at real
        ring 0 left it, or as write_msr set it)."""
        return self.uc.msr_read(index)

    def write_msr(self, index, value):
        """Write a real MSR during an exit, so that the state-area load at the
        end of the exit does not undo it."""
        self.state.load()
        self.uc.msr_write(index, value)
        self.state.save()

    def read_debug_register(self, n):
        """A real debug register (DR0-DR3, DR6, DR7), as the guest's own moves
        at real ring 0 left it, or as write_debug_register set it."""
        return self.uc.reg_read(X.UC_X86_REG_DR0 + n) & 0xFFFFFFFF

    def write_debug_register(self, n, value):
        """Write a real debug register during an exit, so that the state-area
        load at the end of the exit does not undo it: a breakpoint in DR0-DR3
        enabled by DR7 then fires as it does for the guest's own move.  The
        bits the CPU's move sets in DR6 and DR7 are set here too: the API
        stores the value as it is given."""
        value &= 0xFFFFFFFF
        if n in _DR_FIXED_ONES:
            value |= _DR_FIXED_ONES[n]
        self.state.load()
        self.uc.reg_write(X.UC_X86_REG_DR0 + n, value)
        self.state.save()

    def live_cpl(self):
        """The CPL of the live CPU (from a hook that did not save it)."""
        _reg_read(self.uc._uch, _CS_ID, self._cs_ref)
        cpl = self._cs_reg.value & 3
        if cpl != 3:
            # In virtual-8086 mode CS holds a paragraph number and the CPL is 3.
            _reg_read(self.uc._uch, _EFLAGS_ID, self._flags_ref)
            if self._flags_reg.value & x86.VM:
                return 3
        return cpl

    def live_view(self):
        """Guest-virtual memory through the live CPU's paging registers, for a
        hook that did not save the CPU (translation-time hooks)."""
        # (Every new translation block asks: read straight from the library,
        # as live_cpl() does, not through the binding's reg_read.)
        uch = self.uc._uch
        for reg_id, ref in self._paging_refs:
            _reg_read(uch, reg_id, ref)
        cr0, cr3, cr4 = self._paging_regs
        return LinearView(self.mem, cr0.value & 0xFFFFFFFF, cr3.value & 0xFFFFFFFF,
                          cr4.value & 0xFFFFFFFF)

    def decode_at_eip(self, view):
        """The instruction at the saved CS:EIP, read through `view`."""
        st = self.state
        return self.decoder.at(view, (st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF)

    def emulated(self, n=1):
        """The VMM performed n guest instructions by emulation: they count as
        executed guest instructions, as they would have natively."""
        if self.icount is not None:
            self.icount.add(n)

    def flush_tlb(self):
        """Drop every cached translation of the real CPU (Unicorn's softmmu TLB),
        as a CR3 load does on the hardware.  Needed whenever the VMM changes
        page tables the CPU walks, or loads CR3 through the state area (a
        context restore copies CR3 but does not flush)."""
        _ctl(self.uc._uch, _TLB_FLUSH_ID)

    def pending_irq(self):
        """The vector of an external interrupt the PIC would present now.
        (Asked on every guest-visible event, so the common case -- no timer
        deadline passed, no request raised -- is decided without calls.)"""
        pit, pic = self.pit, self.pic
        if pit.armed and self.clock.now_ns >= pit.next_ns:
            pit.poll()
        if not (pic.master.irr or pic.slave.irr):
            return None
        return pic.pending_vector()

    # -- hooks -------------------------------------------------------------
    def add_hook(self, htype, cfunc, *extra, begin=1, end=0):
        """Install a raw ctypes callback (the caller keeps the signature right)."""
        handle = uc_hook_h()
        status = uclib.uc_hook_add(self.uc._uch, ctypes.byref(handle), htype, cfunc,
                                   None, ctypes.c_uint64(begin), ctypes.c_uint64(end), *extra)
        if status != UC_ERR_OK:
            raise UcError(status)
        self._hooks.append(cfunc)          # keep the callback alive
        self._res.handles.append(handle)

    def request_restart(self, begin, end):
        """Stop the CPU, drop the translations of [begin, end) and go on from
        the same EIP: how a hook added at translation time takes effect.
        Stopping the CPU while it translates changes CR2 (docs/unicorn.md,
        item 17), so run() puts back the value it had here."""
        if not self._restart:
            self._restart_cr2 = self.uc.reg_read(X.UC_X86_REG_CR2)
        self._restart.append((begin, end))
        self.uc.emu_stop()

    def _install_hooks(self):
        self.add_hook(UC_HOOK_INTR, _INTR_CB(self._on_intr))
        self.add_hook(UC_HOOK_INSN, _IN_CB(self._on_in), ctypes.c_int(X.UC_X86_INS_IN))
        self.add_hook(UC_HOOK_INSN, _OUT_CB(self._on_out), ctypes.c_int(X.UC_X86_INS_OUT))
        self.add_hook(UC_HOOK_INSN_INVALID, _INVALID_CB(self._on_invalid))
        self.add_hook(UC_HOOK_INSN, _SYSENTER_CB(self._on_sysenter), ctypes.c_int(X.UC_X86_INS_SYSENTER))

    # [tour native 40, trap 30, bt 85] The first exit: an exception or `int n` stops the CPU here.
    # Unicorn reports the vector only; it does not deliver through the IDT itself.  The
    # machine saves the CPU into the state area (nothing to copy when the state area
    # is the live CPU state), counts the VMM entry and hands the vector to the back
    # end's exception(). enter() then resumes the guest wherever the back end left
    # EIP.
    def _on_intr(self, _uc, vector, _user):
        if self.outcome is not None:
            return                         # after the end of the run: not the guest's work
        st = self.state
        try:
            if not st.live:
                st.save()
            hooked = self.intercepts.last
            lost = self._lost_flag_sites
            if self.icount is not None or hooked is not None or lost:
                eip, cs_base = st.pc_regs()
                linear = (cs_base + eip) & 0xFFFFFFFF
                if self.icount is not None:
                    self.icount.cut(linear)
                if hooked is not None:         # a hooked instruction ran since the last exit:
                    if hooked == linear:       # this exit may be its fault
                        self.intercepts.faulted(linear)
                    self.intercepts.last = None
                if lost and linear in lost:    # (lost_flags.py)
                    self.lost_flags.faulted(vector, linear)
            self.exits += 1
            if self.exits > self.budget.max_exits:
                self._over_budget()
            self.exit_vector = vector      # (what an `int` was: delivery.int_length)
            self._h_vector[vector](vector)
            self.enter()
        except BaseException as exc:       # never let an exception cross into C
            self.abort(exc)

    def fetched_early(self):
        """For a back end about to give the guest the #PF that just exited:
        True if it is the CPU model's early fetch fault (below), which the
        machine now runs up to instead, and the back end gives nothing."""
        st = self.state
        return self._fetched_early(st, st.cr(2))

    def _fetched_early(self, st, cr2):
        """A page fault on the fetch of code further on than EIP, raised when
        the CPU model translated the block, before any of it ran
        (docs/unicorn.md, item 28): the CPU would have run the instructions up to
        the page it cannot fetch, and faulted there.  So it runs them now:
        the CPU stops, and the next emu_start stops where they end
        (_run_until, which run() takes), where the fetch faults again, with
        EIP at the instruction that cannot be fetched.  Only for a fault the
        guest's own tables make (a VMM's hidden fault, a shadow entry to
        fill, resumes at the block's start, which is right: so back ends ask
        only before they deliver); and at most once per address and page, so
        that a data access of the first instruction itself, which looks the
        same, faults again and is delivered."""
        if cr2 & 0xFFF:
            return False                    # not a page's start: no fetch ran into it
        eip, cs_base = st.pc_regs()
        linear = (cs_base + eip) & 0xFFFFFFFF
        if cr2 != (linear | 0xFFF) + 1:
            return False
        tried, self._early = self._early, None
        if (linear, cr2) == tried:
            return False
        view = self.backend.guest_view()
        try:
            view.phys(cr2, False, st.cpl == 3)
            return False                    # the guest maps it
        except GuestMemoryFault:
            pass
        stop = crossing_start(view, linear, cr2)
        if stop == linear:
            return False                    # the fault is the first instruction's
        self._early, self._run_until = (linear, cr2), stop
        self.uc.emu_stop()
        return True

    def _on_in(self, _uc, port, size, _user):
        if self.outcome is not None:
            return 0
        try:
            if port in PLATFORM_PORTS:
                return 0
            self._count_exit()
            return self._h_port_in(port, size) & 0xFFFFFFFF
        except BaseException as exc:
            self.abort(exc)
            return 0

    def _on_out(self, _uc, port, size, value, _user):
        if self.outcome is not None:
            return
        try:
            if port in PLATFORM_PORTS:
                if port == 0x500 and self.icount is not None:
                    self._stop_counting()
                self.platform.io_write(port, size, value)
                return
            self._count_exit()
            self._h_port_out(port, size, value)
        except BaseException as exc:
            self.abort(exc)

    def _on_invalid(self, _uc, _user):
        if self.outcome is not None:
            return False
        try:
            self.state.save()
            if self.icount is not None:
                st = self.state
                self.icount.cut((st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF)
            self._count_exit()
            if self._h_invalid_opcode():
                self.enter()
                return True
            self.fail("invalid opcode with no handler at " + self.where())
        except BaseException as exc:
            self.abort(exc)
        return False

    def _on_sysenter(self, _uc, _user):
        """SYSENTER, from any ring.  Unicorn calls this from inside its helper
        with EIP synchronised to the instruction, and after the hook adds the
        instruction's length to EIP itself (measured), so the EIP the back end
        leaves is compensated for that; the TB ends after the helper, so new
        CS, SS and CPL take effect at once.  The arithmetic flags stay in the
        lazy form the translated code after the helper expects."""
        st = self.state
        try:
            st.save()
            linear = (st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF
            d = self.decoder.at(self.backend.code_view(linear), linear)
            size = d.size if d is not None else 2
            lazy = st.lazy_flags()
            self._count_exit()
            if not self._h_sysenter() and self.icount is not None:
                self.icount.cut(linear)      # an interrupt or #GP was taken at it
            st.restore_lazy_flags(lazy)
            st.eip = st.eip - size
            self.enter()
        except BaseException as exc:
            self.abort(exc)

    def _stop_counting(self):
        """The run ends at this `out`: count up to and including it."""
        self.icount.stop(self._past_out())

    def _past_out(self):
        """From a port hook: the linear address just past the `out`."""
        st = self.state
        st.save()
        linear = (st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF
        d = self.decoder.at(self.backend.code_view(linear), linear)
        return linear + (d.size if d else 1)

    def _count_exit(self):
        self.exits += 1
        if self.exits > self.budget.max_exits:
            self._over_budget()

    def _over_budget(self):
        self.state.save()                  # port hooks do not save: name the real EIP
        raise GuestStop(f"exit budget of {self.budget.max_exits} exceeded at {self.where()}")

    def abort(self, exc):
        if isinstance(exc, GuestStop):
            self.fail(str(exc))
        else:
            if self._hook_error is None:
                self._hook_error = exc
            self.uc.emu_stop()

    # -- ending the run ------------------------------------------------------
    def finish(self, status):
        if self.outcome is None:
            self.outcome = Outcome(True, status & 0xFFFFFFFF)
        self.uc.emu_stop()

    def fail(self, reason):
        if self.outcome is None:
            self.outcome = Outcome(False, None, reason)
        self.uc.emu_stop()

    def guest_pc(self, eip=None):
        """The guest's linear PC for the saved CS:EIP (or CS:eip).  When the CPU
        runs code that is not the guest's own (a translation cache), the back
        end maps the real PC back to the guest instruction it stands for
        (Backend.guest_address), so that reasons, traces and delivery name
        guest addresses."""
        st = self.state
        linear = (st.seg_base_of("cs") + (st.eip if eip is None else eip)) & 0xFFFFFFFF
        return linear if self._pc_map is None else self._pc_map(linear)

    def where(self, eip=None):
        """The guest PC and the instruction there, for failure reasons."""
        return describe(self.decoder, self.backend.guest_view(), self.guest_pc(eip))

    def _on_roi(self, begin):
        now = time.perf_counter()
        self.backend.fold_counters()
        if begin and not self.roi.begun:
            self.roi.begun = True
            self.roi.start_counters = dict(self.counters)
            self.roi.start_time = now
            if self.icount is not None:        # through this `out`, not its whole block
                self.roi.start_instructions = self.icount.executed(self._past_out())
        elif not begin and self.roi.begun and not self.roi.ended:
            self.roi.ended = True
            self.roi.counters = Counters.diff(self.counters, self.roi.start_counters)
            self.roi.seconds = now - self.roi.start_time
            if self.icount is not None:
                self.roi.instructions = (self.icount.executed(self._past_out())
                                         - self.roi.start_instructions)

    # -- boot ----------------------------------------------------------------
    # [tour native 20] Boot: the guest's first state.
    # The back end lays it out.  Native takes the boot protocol as it is
    # (load_boot_protocol below): the image at 1 MiB, protected mode, paging off, the
    # kernel at real ring 0.
    def boot(self, spec):
        """Lay out the guest's start state and hand the CPU to the back end,
        which decides the real privilege level the guest runs at.  The start
        state is the boot protocol unless the back end lays out its own (a PV
        domain builder starts the guest with paging already on)."""
        self._check_open()
        self.ide.image = spec.disk
        self.backend.start_state(spec)
        self.backend.boot()

    def load_boot_protocol(self, spec):
        """The boot protocol of docs/boot-protocol.md: the image at 1 MiB, a
        flat GDT, the boot-information block, protected mode, paging off."""
        image = bytes(spec.image)
        if IMAGE_BASE + len(image) > self.mem.size:
            raise ValueError("image does not fit in guest RAM")
        self.mem.write(IMAGE_BASE, image)
        gdt = (b"\0" * 8 + x86.make_segment(0, 0xFFFFF, 0x9A)
               + x86.make_segment(0, 0xFFFFF, 0x92))
        self.mem.write(BOOT_GDT, gdt)
        name = spec.workload.encode()[:63]
        info = struct.pack("<IIIIII", BOOT_MAGIC, 1, self.mem.size, spec.scale,
                           len(spec.disk) // 512, 0)
        self.mem.write(BOOT_INFO, info.ljust(32, b"\0") + name.ljust(64, b"\0"))
        uc = self.uc
        uc.reg_write(X.UC_X86_REG_GDTR, (0, BOOT_GDT, len(gdt) - 1, 0))
        uc.reg_write(X.UC_X86_REG_CS, 0x08)
        for reg in (X.UC_X86_REG_SS, X.UC_X86_REG_DS, X.UC_X86_REG_ES,
                    X.UC_X86_REG_FS, X.UC_X86_REG_GS):
            uc.reg_write(reg, 0x10)
        uc.reg_write(X.UC_X86_REG_ESP, BOOT_STACK)
        uc.reg_write(X.UC_X86_REG_EAX, BOOT_MAGIC)
        uc.reg_write(X.UC_X86_REG_EBX, BOOT_INFO)
        uc.reg_write(X.UC_X86_REG_EFLAGS, 0x2)
        uc.reg_write(X.UC_X86_REG_CR4, 0)          # as after reset (Unicorn sets some bits)
        uc.reg_write(X.UC_X86_REG_EIP, IMAGE_BASE)

    # -- the run loop --------------------------------------------------------
    # [tour native 30] The run loop: the guest runs until something stops it.
    # Unicorn runs the guest until a hook stops it or it halts.  Between two stops
    # every instruction runs at full speed, under every technique; what a technique
    # costs is what happens at the stops.
    def run(self):
        """Run until the guest ends the run, fails, or exceeds its budget."""
        self._check_open()
        with Watchdog(self.uc, self.budget.host_seconds) as watchdog:
            self._run_loop(watchdog)
        self.backend.fold_counters()
        return self.outcome

    def _run_loop(self, watchdog):
        uc = self.uc
        while self.outcome is None:
            if watchdog.fired:
                self._fail_budget()
                break
            eip = uc.reg_read(X.UC_X86_REG_EIP)
            try:
                self.intercepts.before_start((self.state.seg_base_of("cs") + eip) & 0xFFFFFFFF
                                             if self._started else eip)
            except BaseException as exc:
                self.abort(exc)
                break
            self._started = True
            until, self._run_until = self._run_until, NEVER
            try:
                uc.emu_start(eip, until)
            except UcError as err:
                self._emu_error(err)
            if self._hook_error is not None:
                self._internal_error(self._hook_error)
                break
            if self.outcome is not None:
                break
            if self._restart:
                for begin, end in self._restart:
                    self.drop_translations(begin, end)
                self._restart.clear()
                uc.reg_write(X.UC_X86_REG_CR2, self._restart_cr2)
                continue
            if self._run_until != NEVER:    # to run up to an early fetch fault:
                self._settle()              # (stopping leaves that fault in flight)
                continue
            if until != NEVER and self._pc() == until:
                continue                    # there: the fetch faults again
            if watchdog.fired:
                self._fail_budget()
                break
            self._stopped()

    def _pc(self):
        """The linear address the CPU stopped at, once emu_start returned."""
        self.state.save()
        return (self.state.seg_base_of("cs") + self.state.eip) & 0xFFFFFFFF

    def _internal_error(self, exc):
        """Code of the machine's or the back end's raised while the guest ran:
        a bug in virtlab that this guest reached, not a fault of the guest's.
        The run fails saying so, with where the guest was and the line that
        raised (the exception itself is kept in `internal_error`, traceback
        and all, for a debugger), so that one run's bug ends that run and not
        the bench it is part of.  An interrupt from the keyboard goes on up."""
        if not isinstance(exc, Exception):
            raise exc
        self.internal_error = exc
        frames = traceback.extract_tb(exc.__traceback__)
        line = f" ({frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
        try:
            where = self.where()
        except Exception:
            where = "an address that cannot be read"
        self.fail(f"internal error at {where}: {type(exc).__name__}: {exc}{line}; "
                  f"a bug in virtlab, not in the guest")

    def _stopped(self):
        """emu_start returned by itself: at ring 0 that means `hlt`."""
        self.state.save()
        st = self.state
        prev = (st.seg_base_of("cs") + st.eip - 1) & 0xFFFFFFFF
        try:
            byte = self.backend.guest_view().read(prev, 1)
        except Exception:
            byte = b""
        if byte != b"\xf4":
            self.fail(f"CPU stopped unexpectedly at {self.where()}")
            return
        try:
            self._count_exit()
            self._h_halted()
        except GuestStop as stop:
            self.fail(str(stop))
            return
        self.enter()

    def _fail_budget(self):
        self.state.save()
        self.fail(f"host-time budget of {self.budget.host_seconds:g} s exceeded at {self.where()}")

    def _emu_error(self, err):
        self.state.save()
        self.fail(f"CPU error '{err}' at {self.where()}")
