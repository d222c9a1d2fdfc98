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
from .memory import Dependencies, GuestMemoryFault, LinearView, walk

_STACK = struct.Struct("<I")


class TripleFault(Exception):
    pass


class DeliveryFault(Exception):
    """The delivery itself faulted: vector and error code of the new exception."""

    def __init__(self, vector, error_code, why):
        super().__init__(why)
        self.vector = vector
        self.error_code = error_code


class Event:
    """One exception or interrupt to deliver.  (A plain slotted class: a frozen
    dataclass costs a microsecond to build, and one is built on every exit.)"""
    __slots__ = ("vector", "error_code", "software", "cr2")

    def __init__(self, vector, error_code=None, software=False, cr2=None):
        self.vector = vector
        self.error_code = error_code      # pushed when not None
        self.software = software          # `int n`: checked against the gate's DPL
        self.cr2 = cr2                    # #PF: the faulting linear address


def linear_view(state, mem):
    return LinearView(mem, state.cr(0), state.cr(3), state.cr(4))


class RealCpuView:
    """The guest's view of the CPU's system state, for a guest that owns the real
    CPU (native): its tables, paging and privilege level are the real ones.  A
    virtualizing back end supplies another view in which the descriptor tables,
    control registers, IF and the kernel's ring are the virtual CPU's."""

    def __init__(self, state):
        self.state = state

    def cpl(self):
        return self.state.cpl

    def tables(self):
        return self.state.tables()

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

    def flags_for_frame(self, eflags):
        return eflags

    def enter(self, eflags, kept):
        self.state.set_eflags(eflags & kept)

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

    def __init__(self, mem, cpu):
        self.mem = mem
        self.cpu = cpu                 # the guest's view of the CPU (RealCpuView)
        self.routes = {}
        self.stack = StackWriter(mem)

    def deliver(self, state, event, eflags=None):
        """Deliver one event.  A fault while delivering it is delivered in its
        place, except that a fault while delivering a contributory exception or a
        page fault is a double fault (SDM vol. 3, table 6-5); a fault while
        delivering the double fault raises TripleFault."""
        chain = [event]
        while True:
            try:
                return self._deliver_once(state, chain[-1], eflags)
            except (DeliveryFault, GuestMemoryFault) as fault:
                ev = chain[-1]
                if ev.vector == x86.DF_VEC and not ev.software:
                    raise TripleFault(_chain_text(chain, fault) + "; "
                                      + _cpu_text(self.cpu, state)) from None
                if not ev.software and (ev.vector in x86.CONTRIBUTORY or ev.vector == x86.PF):
                    chain.append(Event(x86.DF_VEC, 0))
                else:
                    if ev.software:           # a fault of the `int` itself: EIP at it
                        back = int_length(LinearView(self.mem, *self.cpu.paging()), state)
                        state.eip = state.eip - (back or 0)
                    chain.append(_as_event(fault))

    def route(self, state, vector, software, cpl, cr3):
        """The resolved route for this vector from this ring, from the cache
        when everything it was computed from is unchanged."""
        key = (vector, software, cpl, cr3)
        r = self.routes.get(key)
        if r is not None and r.tables == self.cpu.tables() and r.deps.hold(self.mem):
            return r
        r = _resolve(self.cpu, self.mem, vector, software, cpl)
        if len(self.routes) > 4096:
            self.routes.clear()
        self.routes[key] = r
        return r

    def _deliver_once(self, state, ev, eflags):
        cpu = self.cpu
        cpl = cpu.cpl()
        paging = cpu.paging()
        r = self.route(state, ev.vector, ev.software, cpl, paging[1])
        if eflags is None:
            eflags = state.eflags()
        pushed = cpu.flags_for_frame(eflags)
        eip, esp = state.eip, state.reg("esp")
        if r.new_cpl < cpl:
            frame = [cpu.selector("ss"), esp, pushed, cpu.selector("cs"), eip]
            esp = _U32.unpack_from(self.mem.view, r.esp_pa)[0]
            ss_base = r.ss_cache[1]
        else:
            frame = [pushed, cpu.selector("cs"), eip]
            ss_base = state.seg_base_of("ss")
        if ev.error_code is not None:
            frame.append(ev.error_code)
        esp = (esp - 4 * len(frame)) & 0xFFFFFFFF
        frame.reverse()                    # lowest address first: the last push
        self.stack.push(paging, (ss_base + esp) & 0xFFFFFFFF, frame)
        if r.new_cpl < cpl:
            state.set_segment("ss", *r.ss_cache)
        state.set_segment("cs", *r.cs_cache)
        state.set_reg("esp", esp)
        state.eip = r.offset
        if ev.cr2 is not None:
            cpu.set_cr2(ev.cr2)
        cpu.enter(eflags, r.flags_kept)


_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class Route:
    """Where one vector leads from one ring: resolved gate and segments."""
    tables: tuple           # (CR0, IDTR, GDTR, TR base) it was resolved under
    deps: Dependencies      # the paging entries and descriptor bytes it came from
    offset: int
    flags_kept: int         # EFLAGS mask: TF, NT, RF, VM (and IF for an interrupt gate) cleared
    new_cpl: int
    cs_cache: tuple         # (selector, base, limit, flags) to load into CS
    esp_pa: int = None      # physical address of TSS.espN when the ring changes
    ss_cache: tuple = None


def _resolve(cpu, mem, vector, software, cpl):
    log = []
    view = LinearView(mem, *cpu.paging(), log)
    gdtr = cpu.gdtr()
    selector, offset, gtype, gdpl, present = read_gate(view, cpu.idtr(), vector)
    if software and gdpl < cpl:
        raise DeliveryFault(x86.GP, vector * 8 + 2, f"int {vector:#x} gate DPL {gdpl} < CPL {cpl}")
    if not present:
        raise DeliveryFault(x86.NP, vector * 8 + 2, f"vector {vector} gate not present")
    if gtype not in (x86.GATE_INTR32, x86.GATE_TRAP32):
        raise DeliveryFault(x86.GP, vector * 8 + 2, f"vector {vector}: unsupported gate type {gtype:#x}")
    cs_lo, cs_hi = read_descriptor(view, gdtr, selector)
    if not cs_hi & x86.DESC_CODE or not cs_hi & x86.DESC_P:
        raise DeliveryFault(x86.GP, selector & ~3, f"gate selector {selector:#x} is not a present code segment")
    new_cpl = x86.seg_dpl(cs_hi)
    if new_cpl > cpl:
        raise DeliveryFault(x86.GP, selector & ~3, "gate leads to a less privileged ring")
    cs_cache = cpu.segment(selector, cs_lo, cs_hi, new_cpl)
    cleared = x86.TF | x86.NT | x86.RF | x86.VM
    if gtype == x86.GATE_INTR32:
        cleared |= x86.IF
    common = (cpu.tables(), None, offset, ~cleared & 0xFFFFFFFF, new_cpl, cs_cache)
    if new_cpl < cpl:
        esp_pa, ss, ss_lo, ss_hi = _inner_stack(cpu, view, gdtr, new_cpl)
        extra = (esp_pa, cpu.segment(ss, ss_lo, ss_hi, new_cpl))
    else:
        extra = ()
    route = Route(*common, *extra)
    return dataclasses.replace(route, deps=Dependencies.from_log(log))


_FRAMES = {n: struct.Struct(f"<{n}I") for n in range(3, 7)}


class StackWriter:
    """Writes exception frames to the guest stack.  Kernel stacks are few and
    hot, so the translation of a stack page is kept with the two paging entries
    it came from and reused while both are unchanged (and already accessed and
    dirty, so the hardware would not have written them either)."""

    def __init__(self, mem):
        self.mem = mem
        self.tlb = {}

    def push(self, paging, linear, values):
        mem = self.mem
        data = _FRAMES[len(values)].pack(*[v & 0xFFFFFFFF for v in values])
        page_off = linear & 0xFFF
        cr0, cr3, cr4 = paging
        if page_off > 0x1000 - len(data):              # straddles two pages
            LinearView(mem, cr0, cr3, cr4).write(linear, data)
            return
        key = (cr0 & (x86.CR0_PG | x86.CR0_WP), cr3, linear >> 12)
        hit = self.tlb.get(key)
        if hit is not None and hit[0].hold(mem):
            pa = hit[1] | page_off
        else:
            log = []
            pa = walk(mem, cr0, cr3, cr4, linear, True, False, log)
            if log and len(self.tlb) < 1024:
                self.tlb[key] = (Dependencies.from_log(log), pa & x86.PAGE_MASK)
        mem.view[pa:pa + len(data)] = data


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


def _as_event(fault):
    if isinstance(fault, GuestMemoryFault):
        return Event(x86.PF, fault.error_code, cr2=fault.linear)
    return Event(fault.vector, fault.error_code)


def _inner_stack(cpu, view, gdtr, ring):
    """Where TSS.espN lives, SS for `ring` from the TSS, and its descriptor."""
    tss, tss_limit, tr = cpu.tss()
    off = x86.TSS_ESP0 + 8 * ring
    if off + 6 > tss_limit:
        raise DeliveryFault(x86.TS, tr & ~3, "TSS too small for a stack switch")
    esp_pa = view.phys(tss + off)
    if esp_pa & 0xFFF > 0xFFC:
        raise DeliveryFault(x86.TS, tr & ~3, "TSS stack pointer straddles a page")
    ss = view.u32(tss + off + 4) & 0xFFFF
    lo, hi = read_descriptor(view, gdtr, ss)
    if x86.seg_dpl(hi) != ring or hi & x86.DESC_CODE or not hi & x86.DESC_P:
        raise DeliveryFault(x86.TS, ss & ~3, f"TSS stack segment {ss:#x} unusable for ring {ring}")
    return esp_pa, ss, lo, hi


def int_length(view, state):
    """Length of the `int n` / `int3` / `into` that just trapped (EIP is past it)."""
    end = (state.seg_base_of("cs") + state.eip) & 0xFFFFFFFF
    try:
        two = view.read(end - 2, 2)
    except GuestMemoryFault:
        return None
    if two[0] == 0xCD:
        return 2
    if two[1] in (0xCC, 0xCE):
        return 1
    return None
