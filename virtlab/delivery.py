"""Delivering an exception or interrupt through the guest's IDT, as the CPU does.

Unicorn never reads the guest IDT: every exception and `int n` stops in a callback
with only its vector (docs/unicorn.md, item 1).  This module does what the
IA-32 hardware does next (SDM vol. 3, 6.12):

  1. read the gate for the vector from the IDT (IDTR base + 8 * vector);
  2. check it: present, a 32-bit interrupt or trap gate, and for a software
     `int n`, gate DPL >= CPL (else #GP);
  3. read the target code segment's descriptor from the GDT: its DPL is the new CPL;
  4. on a change to a more privileged ring, switch stacks: SS:ESP for the new ring
     come from the TSS, and the old SS:ESP are pushed on the new stack;
  5. push EFLAGS, CS, EIP and, for some exceptions, an error code;
  6. load CS:EIP from the gate, clear TF/NT/RF (and IF for an interrupt gate).

A fault while doing this becomes a double fault; a fault while delivering the
double fault is a triple fault, which on a PC resets the machine and here ends the
run.
"""
import dataclasses
import struct
from dataclasses import dataclass

from . import x86
from .devices.clock import EVENT_NS
from .errors import GuestStop
from .memory import Dependencies, GuestMemoryFault, LinearView, tlb_entry, walk

_VM = x86.VM

_STACK = struct.Struct("<I")


class DeliveryFault(Exception):
    """The delivery itself faulted: vector and error code of the new exception."""

    def __init__(self, vector, error_code, why):
        super().__init__(why)
        self.vector = vector
        self.error_code = error_code


class Event:
    """One exception or interrupt to deliver.  (A plain slotted class: a frozen
    dataclass costs a microsecond to build, and one is built on every exit.)"""
    __slots__ = ("vector", "error_code", "software", "cr2", "slot")

    def __init__(self, vector, error_code=None, software=False, cr2=None):
        self.vector = vector
        self.error_code = error_code      # pushed when not None
        self.software = software          # `int n`: checked against the gate's DPL
        self.cr2 = cr2                    # #PF: the faulting linear address
        # What a route depends on of the event (vector and kind) as one small
        # int: InterruptPath's index of the route last taken.
        self.slot = vector * 2 + bool(software)


# SOFTWARE_INT[n] is the Event of `int n`, made once: Events are never
# changed after they are made, and a system call is the commonest event of all.
SOFTWARE_INT = tuple(Event(vector, software=True) for vector in range(256))


def linear_view(state, mem):
    return LinearView(mem, state.cr(0), state.cr(3), state.cr(4))


class RealCpuView:
    """The guest's view of the CPU's system state, for a guest that owns the real
    CPU (native): its tables, paging and privilege level are the real ones.  A
    virtualizing back end supplies another view in which the descriptor tables,
    control registers, IF and the kernel's ring are the virtual CPU's."""

    # Selectors in a frame are pushed as the CPU holds them; under ring
    # compression (vmm/reflect.py) those with RPL `compressed_ring` show the
    # RPL 0 the guest loaded.
    compressed_ring = None

    def __init__(self, state):
        self.state = state
        # () -> everything of the CPU a route through the IDT is resolved
        # from, as one hashable key: the CPL, the paging registers, the
        # descriptor-table registers and TR.  Two events with the same key,
        # vector and kind lead the same way for as long as the memory the
        # route read holds.  Here it is all of QEMU's hflags (whose low bits
        # are the CPL), the table registers as the bytes of the state area
        # and CR0, CR3 and CR4, read in one call into C
        # (StateArea.route_regs); every delivery asks for it first.
        self.route_key = state.route_regs

    def cpl(self):
        return self.state.cpl

    def idtr(self):
        return self.state.table("idt")

    def gdtr(self):
        return self.state.table("gdt")

    def tss(self):
        st = self.state
        return st.seg_base_of("tr"), st.seg_limit_of("tr"), st.seg_selector("tr")

    def paging(self):
        return self.state.paging()

    def segment(self, selector, lo, hi, ring):
        """What to load into a real segment register for this guest descriptor."""
        return ((selector & ~3) | ring, x86.seg_base(lo, hi), x86.seg_limit(lo, hi), hi)

    def selector(self, name):
        return self.state.seg_selector(name)

    # EFLAGS in the frame: the real ones (None: as they are).
    flags_for_frame = None

    # EFLAGS in the handler: the real ones less the bits the gate clears
    # (None: eflags & kept).  A view that keeps IF elsewhere computes them
    # in entry_flags(eflags, kept), after flags_for_frame.
    entry_flags = None

    def set_cr2(self, value):
        self.state.set_cr(2, value)


def read_descriptor(view, gdtr, selector):
    """(lo, hi) of the GDT descriptor for a selector (LDT selectors unsupported)."""
    base, limit = gdtr
    index = selector & ~7
    if selector & 4 or index == 0 or index + 7 > limit:
        raise DeliveryFault(x86.GP, selector & ~3, f"bad selector {selector:#x}")
    raw = view.read(base + index, 8)
    return x86.split_descriptor(raw)


# Gates the CPU takes and virtlab does not: a task gate switches tasks (the
# whole register state to and from TSSs), a 16-bit gate pushes a 16-bit frame.
_UNSUPPORTED_GATES = {x86.GATE_TASK: "a task gate (a hardware task switch)",
                      0x6: "a 16-bit interrupt gate", 0x7: "a 16-bit trap gate"}


class UnsupportedGate(Exception):
    """An IDT gate of a kind the CPU takes but this delivery does not."""


def read_gate(view, idtr, vector):
    base, limit = idtr
    if vector * 8 + 7 > limit:
        raise DeliveryFault(x86.GP, vector * 8 + 2, f"vector {vector} beyond IDT limit")
    lo, hi = x86.split_descriptor(view.read(base + vector * 8, 8))
    return x86.gate_fields(lo, hi)


class InterruptPath:
    """The guest's interrupt path with a route cache.

    Resolving where a vector leads (gate, code segment, TSS stack, stack segment)
    takes six page walks and as many descriptor reads.  A route is resolved once
    and kept with the record of every paging entry and descriptor byte it was
    computed from; it is reused only while all of them are unchanged, which is
    exactly when the hardware would compute the same thing again.
    """

    def __init__(self, mem, cpu, clock, where, who=""):
        self.mem = mem
        self.cpu = cpu                 # the guest's view of the CPU (RealCpuView)
        # Every event delivered is a microsecond of the machine's virtual
        # time; a triple fault ends the run with a reason that names the
        # guest PC (where()) and, after `who`, whose delivery it was.
        self.clock = clock
        self._where = where
        self.who = who
        # What the view does to EFLAGS (None: nothing) and to the selectors
        # in a frame, bound once.
        self._frame_flags = cpu.flags_for_frame
        self._entry_flags = cpu.entry_flags
        self._ring = cpu.compressed_ring
        self.routes = {}
        # The route each vector and kind took last (Event.slot -> Route),
        # tried before `routes`: it is the one taken again as long as the
        # CPU's route key (Route.inputs) is the same, and comparing keys
        # costs less than hashing one into routes' key.
        self.recent = {}
        # The last stack page written, (page, route key), and its
        # translation with the check of the paging entries it came from
        # (memory.tlb_entry): an exception frame goes to the same kernel
        # stack page time after time.
        self._stack = (None, None, tuple, None, 0)

    # [tour native 60, trap 110, hw 120, hw-npt 80, bt 160, pv 165] Delivery through an IDT.
    # The gate, a privilege change with the inner stack from the TSS, the frame (error
    # code, EIP, CS, EFLAGS, then ESP and SS of the interrupted ring), IF cleared for
    # an interrupt gate.  Every back end delivers with this one path; what differs is
    # the view of the CPU it is given: the real tables (native, hw), the virtual CPU's
    # with compressed rings (trap, bt), or the trap table the guest gave Xen (pv).
    def deliver(self, state, ev, eflags=None, _chain=None):
        """Deliver one event (`eflags`: the architectural EFLAGS, if the
        caller has them).  A fault while delivering it is delivered in its
        place, except that a fault while delivering a contributory exception
        or a page fault is a double fault (SDM vol. 3, table 6-5); a fault
        while delivering the double fault is a triple fault, which on a PC
        resets the machine and here ends the run (GuestStop)."""
        if _chain is None:                     # the event, not its escalation: it takes
            self.clock.now_ns += EVENT_NS      # virtual time (clock.tick(), inline)
        try:
            cpu = self.cpu
            if ev.cr2 is not None:       # loaded with the fault, whatever its delivery meets
                cpu.set_cr2(ev.cr2)
            key = cpu.route_key()
            r = self.recent.get(ev.slot)                                 # route(), inline
            if r is None or r.inputs != key or r.check() != r.expected:
                r = self.recent[ev.slot] = self.route(ev.vector, ev.software, key, state)
            if eflags is None:
                eflags = state.eflags()
            if eflags & _VM:
                return self._deliver_from_vm86(state, ev, eflags, r, key)
            pushed = eflags if self._frame_flags is None else self._frame_flags(eflags)
            # (QEMU keeps a selector in 32 bits, of which the high 16 are 0.)
            esp, eip, cs, ss, ss_base = state.frame_regs()
            ring = self._ring
            if ring:                       # the selectors the guest believes in
                if cs & 3 == ring:
                    cs &= ~3
                if ss & 3 == ring:
                    ss &= ~3
            inner = r.inner
            err = ev.error_code
            # The frame, lowest address first (the last push first): [error
            # code,] EIP, CS, EFLAGS [, ESP, SS of the interrupted ring].
            size = (20 if inner else 12) if err is None else (24 if inner else 16)
            if inner:
                new_esp = (self.mem.words[r.esp_word] - size) & 0xFFFFFFFF
                linear = (r.ss_base + new_esp) & 0xFFFFFFFF
            else:
                new_esp = (esp - size) & 0xFFFFFFFF
                linear = (ss_base + new_esp) & 0xFFFFFFFF
            # It goes to the stack page the last one went to, as a rule
            # (_push(), whose common case this is, inline).  The values are
            # passed to pack_into one by one: a call with *args would build
            # a tuple of them first, which costs as much as the packing.
            page, stack_key, check, expected, base = self._stack
            if page == linear >> 12 and stack_key == key \
                    and linear & 0xFFF <= 0x1000 - size and check() == expected:
                at = base | (linear & 0xFFF)
                view = self.mem.view
                try:
                    if inner:
                        if err is None:
                            _PACK5(view, at, eip, cs, pushed, esp, ss)
                        else:
                            _PACK6(view, at, err, eip, cs, pushed, esp, ss)
                    elif err is None:
                        _PACK3(view, at, eip, cs, pushed)
                    else:
                        _PACK4(view, at, err, eip, cs, pushed)
                except struct.error:            # a value wider than 32 bits
                    self._push(key, linear, _frame(inner, err, eip, cs, pushed, esp, ss))
            else:
                self._push(key, linear, _frame(inner, err, eip, cs, pushed, esp, ss))
            esp = new_esp
            kept = r.flags_kept
            eflags = eflags & kept if self._entry_flags is None else self._entry_flags(eflags, kept)
            if not inner:
                state.enter_handler(r.image, None, esp, r.offset, eflags)
            elif r.inner_image is not None:
                state.enter_handler(r.inner_image, r.ss_dpl, esp, r.offset, eflags)
            else:                                   # SS not next to CS in this layout
                state.set_segment("ss", *r.ss_cache)
                state.enter_handler(r.image, None, esp, r.offset, eflags)
        except (DeliveryFault, GuestMemoryFault) as fault:
            self._escalate(state, _chain or [ev], fault, eflags)

    def _deliver_from_vm86(self, state, ev, eflags, r, key):
        """deliver() of an event in virtual-8086 code (SDM vol. 3, 20.3.1.1):
        the handler must be at ring 0 (else #GP with its code segment); the
        frame holds the data segments too, after SS, and they are loaded
        null; the CPU leaves 16-bit execution (StateArea.leave_vm86).  A
        handler whose code or stack segment is not flat 32-bit is not
        supported (the README's limitations)."""
        if r.new_cpl != 0:
            raise DeliveryFault(x86.GP, r.cs_cache[0] & ~3,
                                "the handler of an event in virtual-8086 code is not at ring 0")
        if state.layout.vm86_mode is None or r.inner_image is None or r.ss_base \
                or not r.cs_cache[3] & r.ss_cache[3] & x86.DESC_B:
            what = "int %#x" % ev.vector if ev.software else \
                x86.VECTOR_NAMES.get(ev.vector, str(ev.vector))
            raise GuestStop(f"{self.who}{what} in virtual-8086 code at {self._where()}: "
                            f"its handler's segments are not flat 32-bit ones (not supported)")
        pushed = eflags if self._frame_flags is None else self._frame_flags(eflags)
        esp, eip, cs, ss, _ = state.frame_regs()
        frame = (eip, cs, pushed, esp, ss) + tuple(state.seg_selector(name)
                                                   for name in ("es", "ds", "fs", "gs"))
        if ev.error_code is not None:
            frame = (ev.error_code,) + frame
        esp = (self.mem.words[r.esp_word] - 4 * len(frame)) & 0xFFFFFFFF
        self._push(key, esp, frame)
        kept = r.flags_kept
        eflags = eflags & kept if self._entry_flags is None else self._entry_flags(eflags, kept)
        state.enter_handler(r.inner_image, r.ss_dpl, esp, r.offset, eflags)
        state.leave_vm86()

    def _escalate(self, state, chain, fault, eflags):
        """Delivering the last event of `chain` faulted with `fault`: deliver
        what that becomes (the rare path)."""
        ev = chain[-1]
        if isinstance(fault, GuestMemoryFault):
            self.cpu.set_cr2(fault.linear)   # the CPU loads CR2 at the page fault itself
        if ev.vector == x86.DF_VEC and not ev.software:
            raise GuestStop(f"{self.who}triple fault at {self._where()}: "
                            f"{_chain_text(chain, fault)}; {_cpu_text(self.cpu, state)}") from None
        second = fault_event(fault)
        if _double(ev, second.vector):
            chain.append(Event(x86.DF_VEC, 0))
        else:
            if ev.software:           # a fault of the `int` itself: EIP at it
                back = int_length(LinearView(self.mem, *self.cpu.paging()), state, ev.vector)
                state.eip = state.eip - (back or 0)
            elif second.vector in _SELECTOR_CODES:
                second.error_code |= 1    # EXT: the event being delivered was not the program's
            chain.append(second)
        self.deliver(state, chain[-1], eflags, chain)

    # [tour native 70] The route cache: why delivery can run on every system call.
    # The route a vector takes is resolved once and kept with every paging entry and
    # descriptor byte it was computed from; it is reused only while they all hold.
    def route(self, vector, software, key, state):
        """The resolved route for this vector under this route key, from the
        cache when everything it was computed from is unchanged: the CPU's
        registers (the view's route_key(): the CPL, and CR4.PSE, which
        decides how a PDE reads, among them) and the paging entries and
        descriptor bytes it read (checked in one step: memory.Dependencies)."""
        full = (vector, software, key)
        r = self.routes.get(full)
        if r is not None and r.check() == r.expected:
            return r
        cpl = self.cpu.cpl()
        try:
            r = _resolve(self.cpu, self.mem, vector, software, cpl)
        except UnsupportedGate as gate:
            raise GuestStop(f"{self.who}{gate} at {self._where()}: not supported") from None
        # What loading its segments writes into the state area, made once.
        r = dataclasses.replace(r, image=state.segment_image(r.cs_cache),
                                inner_image=r.ss_cache and state.segment_image(r.cs_cache, r.ss_cache),
                                inner=r.new_cpl < cpl, inputs=key)
        if r.inner:
            # The CPL the CPU takes is the DPL of the SS loaded, as the view
            # made it (under ring compression not the guest's new_cpl).
            r = dataclasses.replace(r, esp_word=r.esp_pa >> 2, ss_base=r.ss_cache[1],
                                    ss_dpl=x86.seg_dpl(r.ss_cache[3]))
        if len(self.routes) > 4096:
            self.routes.clear()
        self.routes[full] = r
        return r

    def _push(self, key, linear, values):
        """Write a frame (lowest address first) to the guest stack at
        `linear`, as the CPU's supervisor writes, under the paging of the
        route key `key`.  The translation of the stack page is kept for the
        next push (self._stack, which deliver() tries first): memory.translate's,
        with the check of the paging entries it came from, taken again while
        the push goes to the same page under the same key and they hold (the
        same check translate makes; its dictionary lookup is what this saves)."""
        mem = self.mem
        n = len(values)
        paging = self.cpu.paging()
        if (linear & 0xFFF) > 0x1000 - 4 * n:          # straddles two pages
            LinearView(mem, *paging).write(linear, _FRAMES[n].pack(*_u32s(values)))
            return
        page, stack_key, check, expected, frame = self._stack
        if page != linear >> 12 or stack_key != key or check() != expected:
            cr0, cr3, cr4 = paging
            if not cr0 & x86.CR0_PG:
                pa = walk(mem, cr0, cr3, cr4, linear, True, False)
                _FRAMES[n].pack_into(mem.view, pa, *_u32s(values))
                return
            check, expected, frame, _ = tlb_entry(mem, cr0, cr3, cr4, linear, True, False)
            self._stack = (linear >> 12, key, check, expected, frame)
        _FRAMES[n].pack_into(mem.view, frame | (linear & 0xFFF), *_u32s(values))


_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class Route:
    """Where one vector leads from one ring: resolved gate and segments, and
    the check of the paging entries and descriptor bytes it came from
    (memory.Dependencies: check() == expected while they hold)."""
    check: object
    expected: object
    offset: int
    flags_kept: int         # EFLAGS mask: TF, NT, RF, VM (and IF for an interrupt gate) cleared
    new_cpl: int
    cs_cache: tuple         # (selector, base, limit, flags) to load into CS
    esp_pa: int = None      # physical address of TSS.espN when the ring changes
    ss_cache: tuple = None
    image: bytes = None     # state-area bytes of CS (StateArea.segment_image)
    inner_image: bytes = None   # ... of CS and SS, when the ring changes
    inner: bool = False     # whether it changes to a more privileged ring (and stack)
    esp_word: int = None    # ... then esp_pa as an index of a u32 word
    ss_base: int = None     # ... the base of the new SS
    ss_dpl: int = None      # ... and its DPL, the real CPL in the handler
    inputs: tuple = None    # the CPU's registers it was resolved under (route_key())


def _resolve(cpu, mem, vector, software, cpl):
    log = []
    view = LinearView(mem, *cpu.paging(), log)
    gdtr = cpu.gdtr()
    selector, offset, gtype, gdpl, present = read_gate(view, cpu.idtr(), vector)
    if software and gdpl < cpl:
        raise DeliveryFault(x86.GP, vector * 8 + 2, f"int {vector:#x} gate DPL {gdpl} < CPL {cpl}")
    if not present:
        raise DeliveryFault(x86.NP, vector * 8 + 2, f"vector {vector} gate not present")
    if gtype in _UNSUPPORTED_GATES:
        raise UnsupportedGate(f"vector {vector:#x} through {_UNSUPPORTED_GATES[gtype]}")
    if gtype not in (x86.GATE_INTR32, x86.GATE_TRAP32):
        raise DeliveryFault(x86.GP, vector * 8 + 2, f"vector {vector}: not a gate (type {gtype:#x})")
    cs_lo, cs_hi = read_descriptor(view, gdtr, selector)
    # (SDM vol. 3, 6.12.1.1: not a code segment, or of a less privileged
    # ring, #GP; not present, #NP.  A TSS descriptor's type has bit 11 too.)
    if not cs_hi & x86.DESC_S or not cs_hi & x86.DESC_CODE:
        raise DeliveryFault(x86.GP, selector & ~3, f"gate selector {selector:#x} is not a code segment")
    new_cpl = x86.seg_dpl(cs_hi)
    if new_cpl > cpl:
        raise DeliveryFault(x86.GP, selector & ~3, "gate leads to a less privileged ring")
    if not cs_hi & x86.DESC_P:
        raise DeliveryFault(x86.NP, selector & ~3, f"gate selector {selector:#x} not present")
    cs_cache = cpu.segment(selector, cs_lo, cs_hi, new_cpl)
    cleared = x86.TF | x86.NT | x86.RF | x86.VM
    if gtype == x86.GATE_INTR32:
        cleared |= x86.IF
    if new_cpl < cpl:
        esp_pa, ss, ss_lo, ss_hi = _inner_stack(cpu, view, gdtr, new_cpl)
        extra = (esp_pa, cpu.segment(ss, ss_lo, ss_hi, new_cpl))
    else:
        extra = ()
    deps = Dependencies.from_log(log, mem)
    return Route(deps.check, deps.expected, offset, ~cleared & 0xFFFFFFFF, new_cpl, cs_cache,
                 *extra)


_FRAMES = {n: struct.Struct(f"<{n}I") for n in range(3, 11)}   # (10: VM86, an error code)


_PACK3, _PACK4, _PACK5, _PACK6 = (_FRAMES[n].pack_into for n in (3, 4, 5, 6))


def _frame(inner, err, eip, cs, pushed, esp, ss):
    """The values of a frame, lowest address first (deliver's)."""
    frame = (eip, cs, pushed, esp, ss) if inner else (eip, cs, pushed)
    return frame if err is None else (err,) + frame


def _u32s(values):
    """A frame's values as the CPU pushes them: their low 32 bits."""
    return [v & 0xFFFFFFFF for v in values]


def _chain_text(chain, last_fault):
    """'#GP(0x4c54) -> #DF(0) -> triple fault (...)' for a failure reason: each
    event with the error code it carries (and CR2 for a #PF)."""
    names = []
    for e in chain:
        if e.software:
            names.append("int %#x" % e.vector)
            continue
        name = x86.VECTOR_NAMES.get(e.vector, str(e.vector))
        if e.error_code is not None:
            name += f"({e.error_code:#x})"
        if e.cr2 is not None:
            name += f" cr2={e.cr2:#010x}"
        names.append(name)
    last = getattr(last_fault, "error_code", None)
    last = "" if last is None else f", error code {last:#x}"
    return " -> ".join(names) + f" -> triple fault ({last_fault}{last})"


def _cpu_text(cpu, state):
    """The CPU state a triple fault is read against: the guest's GDTR and CPL
    (and the real ones where a VMM's differ) and EAX."""
    base, limit = cpu.gdtr()
    text = f"GDTR base={base:#010x} limit={limit:#x}, CPL {cpu.cpl()}"
    real_base, real_limit = state.table("gdt")
    if (real_base, real_limit) != (base, limit) or state.cpl != cpu.cpl():
        text += f" (real GDTR base={real_base:#010x} limit={real_limit:#x}, CPL {state.cpl})"
    return text + f", EAX={state.reg('eax'):#010x}"


# The faults whose error code names a selector (and so has the EXT bit).
_SELECTOR_CODES = frozenset((x86.TS, x86.NP, x86.SS, x86.GP))


def _double(ev, second):
    """Whether a fault (`second`, its vector) while delivering `ev` is a
    double fault (SDM vol. 3, table 6-5): contributory after contributory, or
    contributory or a page fault after a page fault.  A page fault after a
    contributory exception, and anything after a benign event or an `int`,
    is delivered in turn."""
    if ev.software:
        return False
    if ev.vector == x86.PF:
        return second == x86.PF or second in x86.CONTRIBUTORY
    return ev.vector in x86.CONTRIBUTORY and second in x86.CONTRIBUTORY


def fault_event(fault):
    """The guest's event for a fault found while performing an instruction
    or a delivery for it: a #PF on guest memory (GuestMemoryFault), or the
    exception a descriptor check raised (DeliveryFault)."""
    if isinstance(fault, GuestMemoryFault):
        return Event(x86.PF, fault.error_code, cr2=fault.linear)
    return Event(fault.vector, fault.error_code)


def _inner_stack(cpu, view, gdtr, ring):
    """Where TSS.espN lives, SS for `ring` from the TSS, and its descriptor,
    checked as the CPU checks the new stack (SDM vol. 2, INT n: a null SS,
    #TS(0); beyond the table, not a writable data segment, or RPL or DPL not
    the ring, #TS(SS); not present, #SS(SS))."""
    tss, tss_limit, tr = cpu.tss()
    off = x86.TSS_ESP0 + 8 * ring
    if off + 5 > tss_limit:                         # ESP and SS: bytes off to off + 5
        raise DeliveryFault(x86.TS, tr & ~3, "TSS too small for a stack switch")
    esp_pa = view.phys(tss + off)
    if esp_pa & 0xFFF > 0xFFC:
        raise DeliveryFault(x86.TS, tr & ~3, "TSS stack pointer straddles a page")
    ss = view.u32(tss + off + 4) & 0xFFFF
    if ss & 0xFFFC == 0:
        raise DeliveryFault(x86.TS, 0, f"TSS stack segment for ring {ring} is null")
    try:
        lo, hi = read_descriptor(view, gdtr, ss)
    except DeliveryFault:
        raise DeliveryFault(x86.TS, ss & ~3, f"TSS stack segment {ss:#x} beyond the GDT") from None
    writable = hi & x86.DESC_S and not hi & x86.DESC_CODE and hi & x86.DESC_RW
    if ss & 3 != ring or x86.seg_dpl(hi) != ring or not writable:
        raise DeliveryFault(x86.TS, ss & ~3, f"TSS stack segment {ss:#x} unusable for ring {ring}")
    if not hi & x86.DESC_P:
        raise DeliveryFault(x86.SS, ss & ~3, f"TSS stack segment {ss:#x} not present")
    return esp_pa, ss, lo, hi


def int_length(view, state, vector):
    """Length of the `int n` / `int3` / `into` that just trapped to `vector`
    (EIP is past it), None for any other encoding.  The two bytes before EIP
    alone cannot tell: CD CC is `int 0xcc`, or an `int3` after an instruction
    ending in CD (`mov al, 0xcd`); the vector tells."""
    end = (state.seg_base_of("cs") + state.eip) & 0xFFFFFFFF
    try:
        two = view.read(end - 2, 2)
    except GuestMemoryFault:
        return None
    if two[0] == 0xCD and two[1] == vector:
        return 2
    if (vector, two[1]) in ((x86.BP, 0xCC), (x86.OF_VEC, 0xCE)):
        return 1
    return None
