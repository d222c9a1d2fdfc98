"""`bt`: the guest kernel runs only from the translation cache.

  - Guest user code runs unmodified at real ring 3, as under trap: its system
    calls, exceptions and page faults exit and are reflected into the guest
    kernel through its IDT (reflect.*), or absorbed by the shadow MMU.
  - Guest kernel code never runs from guest memory.  Every way into the kernel
    -- the first instruction after boot, a reflected exception or system call,
    an interrupt, the return of an iret -- ends with the VMM pointing EIP at a
    translation of the guest instruction there (`_resume`), made on demand.
    The translations run at real ring 1, on the shadow GDT and shadow page
    tables of ring compression (virtlab/vmm/compressed.py).
  - Translated code calls out to the VMM (callouts.py) for what it cannot do
    itself; cli, sti, pushf and popf it does itself on the vCPU page.
  - A fault inside translated code is presented at the guest instruction it
    stands for, with the guest's registers (precise exceptions, `_tc_fault`).
  - Stores that keep faulting on traced page tables are retranslated into
    callouts (adaptive translation, `_note_trace`).
"""
from capstone import x86_const as C

from virtlab import x86
from virtlab.counters import EXITS, REFLECTION, SHADOW
from virtlab.delivery import Event
from virtlab.errors import GuestStop
from virtlab.intercept import EMULATED
from virtlab.guest_events import EventNames
from virtlab.memory import GuestMemoryFault, LinearView
from virtlab.vmm import rings
from virtlab.vmm.compressed import RingCompressedVmm
from virtlab.vmm.emulate import NotPrivileged, Unsupported

from . import layout as L
from .cache import TranslationCache, frames_of
from .callouts import Callouts
from .counters import BT
from .translate import IDENT, Translator
from .vcpu import PageVcpu

# Adaptive translation: a store is found guilty after this many traced
# page-table faults, and innocent again after this many callouts in a row
# that found no page table (hysteresis, so that it does not flip-flop).
GUILTY_AFTER = 4
INNOCENT_AFTER = 64


# [tour bt 10] Binary translation: kernel code runs only from the translation cache.
# Guest user code runs directly at ring 3, as under trap.  Guest kernel code is never
# run where it lies: it is decoded, rewritten where it must be, and run from a cache
# of translations in the VMM's range at real ring 1 (Adams and Agesen, ASPLOS 2006).
class Bt(RingCompressedVmm):
    name = "bt"
    summary = "binary translation: guest kernel run from a translation cache at ring 1"
    counters = EXITS + REFLECTION + SHADOW + BT
    # Guest user code runs directly, as under trap, and its exits enter a
    # software VMM the same way: the profiles' trap costs price them.
    priced_like = "trap"
    emulate_sensitive = True            # sgdt, push cs, ...: the virtual answers
    event_names = EventNames(irq="inject.irq", hlt="bt.callout.hlt",
                             irq_exits=("exit.total", "exit.irq"))
    profile = False                     # count executions of every unit (translate)

    @property
    def machine_memory(self):
        return L.MACHINE_MEMORY

    def new_vcpu(self):
        return PageVcpu(self.machine.vmm)

    def attach(self, machine):
        super().attach(machine)
        for window, off, size, writable in ((L.DATA_WINDOW, L.DATA_OFF, L.DATA_SIZE, True),
                                            (L.TABLE_WINDOW, L.TABLE_OFF, L.TABLE_SIZE, False),
                                            (L.PROFILE_WINDOW, L.PROFILE_OFF, L.PROFILE_SIZE, True),
                                            (L.TC_WINDOW, L.TC_OFF, L.TC_SIZE, False)):
            self.vmm.map_window(window, L.REGION + off, size, writable)
        self.cache = TranslationCache(machine, self.paging)
        self.cache.on_invalidate = self._invalidated
        self.guilty = set()
        self.translator = Translator(self.guilty)
        self.callouts = Callouts(self)
        self._tc_chosen = False             # the VMM set EIP to a TC address this entry
        self.trace_faults = {}              # guest EIP -> traced page-table faults
        self.innocent = {}                  # guilty guest EIP -> callouts without a page table
        machine.intercepts.watch(_select_user_sensitive, self._user_sensitive, exit=True,
                                 ids=_USER_SENSITIVE)
        # At vector 32 or above the CPU stops only for an `int n` (as under
        # trap): user code's system call, or translated code's callout.
        for vector in range(32, 256):
            machine.claim_vector(vector, self._software_int)

    # -- entering the guest -------------------------------------------------------
    def boot(self):
        super().boot()
        st = self.machine.state
        st.save()
        self._resume()
        st.load()

    def _load_segment(self, name, selector, accessed=True):
        """As ring compression loads it; but a data segment register keeps
        the guest's own selector, RPL included (the CPU allows RPL 0 in DS at
        ring 1 when the descriptor's DPL is 1), so that translated code may
        read it back unchanged: only CS and SS must show the real ring."""
        super()._load_segment(name, selector, accessed)
        if name in ("ds", "es", "fs", "gs"):
            st = self.machine.state
            d = self.gdt.descriptor(self.guest_view(), self.vcpu.gdtr, selector)
            _, base, limit, flags = rings.segment_cache(selector, *d, rings.guest_ring(st.cpl))
            st.set_segment(name, selector, base, limit, flags)

    # [tour bt 40] Every way into the kernel ends in the translation cache.
    # At the end of each VMM entry: if the guest is to run kernel code, EIP is pointed
    # at a translation of the guest instruction there, made on demand (translation()).
    # This is also how the first instruction after boot runs translated.
    def _resume(self):
        """The end of every VMM entry: if the guest is to run kernel code, run
        its translation, and tell it whether an interrupt waits."""
        m, st = self.machine, self.machine.state
        chosen, self._tc_chosen = self._tc_chosen, False
        pc, hflags, cs_base, ds_base = st.entry_regs()
        if hflags & 3 == 1:                                # the guest kernel's ring
            if cs_base or ds_base:
                self._check_flat()
            # EIP is a TC address only if the VMM chose it this entry (run_tc):
            # one the guest chose (an iret frame, a gate, a far jump) is a
            # guest address like any other, and the guest may not run there.
            if not (chosen and L.TC <= pc < L.TC_END):
                unit = self.cache.by_guest.get(pc)         # translation(), its common case
                st.eip = unit.tc if unit is not None else self.translation(pc)
            # Only translated code reads PEND, and user code runs untranslated:
            # on the way out to it PEND can wait for the next way in, which is
            # always an entry that ends here.
            self.vcpu.mark_pending(m.pending_irq)

    def _check_flat(self):
        """The TC's sequences address the vCPU page absolutely, through DS,
        and the kernel's code by linear address: a kernel whose CS or DS is
        not based at 0 ends the run, saying so (docs/bt.md, known limits)."""
        st = self.machine.state
        if st.seg_base_of("cs") or st.seg_base_of("ds"):
            raise GuestStop(f"bt: the guest kernel runs with a code or data segment "
                            f"not based at 0; bt needs flat kernel segments, at "
                            f"{self.machine.where()}")

    def run_tc(self, tc):
        """Resume in the TC at `tc` (a continuation the VMM knows is valid)."""
        self.machine.state.eip = tc
        self._tc_chosen = True

    def translation(self, guest):
        """The TC address of a translation of the guest instruction at
        `guest`, made now if there is none.  A fault while fetching the guest's
        code is the guest's own #PF at that instruction: delivered, and the
        handler it leads to is translated instead."""
        st = self.machine.state
        for _ in range(4):
            try:
                return self.unit(guest).tc
            except GuestMemoryFault as fault:
                st.eip = (guest - st.seg_base_of("cs")) & 0xFFFFFFFF
                self.deliver_fault(Event(x86.PF, fault.error_code, cr2=fault.linear),
                                   in_entry=True)
                guest = (st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF
        raise GuestStop(f"bt: cannot fetch the guest kernel's code at {guest:#010x}")

    # [tour bt 45] A translation unit, made and installed.
    # Up to 12 guest instructions, to the first control transfer, are translated into
    # the next free bytes of the cache; a full cache is flushed first (bt.tc.flush)
    # and the run goes on.
    def unit(self, guest, transient=False, limit=None):
        cache = self.cache
        if not transient:
            unit = cache.by_guest.get(guest)
            if unit is not None:
                return unit
        if not cache.room():
            cache.flush()
        view = self.guest_view()
        slot = cache.profile_slot() if self.profile and not transient else None
        args = {} if limit is None else {"limit": limit}
        unit = self.translator.translate(view.read, guest, cache.next, slot, **args)
        unit.transient = transient
        frames = frames_of(view, guest, unit.guest_end) if unit.guest_end > guest else \
            frames_of(view, guest, guest + 1)
        cache.install(unit, () if transient else frames)
        c = self.machine.counters
        c["bt.translate.units"] += 1
        c["bt.translate.instructions"] += len(unit.sites)
        c["bt.translate.bytes"] += len(unit.code)
        return unit

    def invlpg(self, linear):
        super().invlpg(linear)
        self.cache.unmapped(linear)

    def write_cr(self, n, value):
        """A CR0 write that turns paging or protection on or off changes
        what every linear address of the kernel's code means: the whole
        cache goes (a kernel does it once, at boot), so that the next
        instruction is fetched, and faults, as the CPU would fetch it.  A CR3
        load (or a CR4 write, which may change how the tables read) changes
        the mapping of some pages at most: their units go (cache.remapped)."""
        modes = x86.CR0_PG | x86.CR0_PE
        changed = n == 0 and (self.vcpu.cr0 ^ value) & modes
        super().write_cr(n, value)
        if changed:
            self.cache.flush()
        elif n in (3, 4) and self.vcpu.paging:
            self.cache.remapped(self.paging.shared_view())

    def deliver_fault(self, event, in_entry=False):
        """An exception (or `int n`) the VMM performs for the guest at a
        callout, delivered through the guest IDT and counted as the callout's
        kind (reflect.*).  `in_entry`: found while translating, within a VMM
        entry already counted under another kind (bt.fetch_fault)."""
        if in_entry:
            self.machine.counters["bt.fetch_fault"] += 1
        self.count_reflection(event, exit=False)
        self.events.deliver(event)

    def invalid_opcode_event(self):
        """#UD at the guest instruction, if the guest's IDT can take it."""
        if not self.idt_has(x86.UD):
            return False
        self.deliver_fault(Event(x86.UD))
        return True

    # -- exits --------------------------------------------------------------------
    def _software_int(self, vector):
        """`int n` with n of 32 or more: from user code, a system call to
        reflect; in the TC, a callout.  (exception() without its question of
        what kind of event it is: every system call and callout comes here.)"""
        eip, hflags, cs_base, _ = self.machine.state.entry_regs()
        if hflags & 3 == 3:
            self._reflect_software(vector)
        else:
            pc = (cs_base + eip) & 0xFFFFFFFF
            if not L.TC <= pc < L.TC_END:
                self._outside_tc()
            self.callouts.run(pc)
        self._resume()

    def _outside_tc(self):
        raise GuestStop(f"bt: guest kernel code ran outside the translation cache at "
                        f"{self.machine.where()}")

    def exception(self, vector):
        st = self.machine.state
        eip, hflags, cs_base, _ = st.entry_regs()
        pc = (cs_base + eip) & 0xFFFFFFFF
        if L.TC <= pc < L.TC_END:
            if st.is_software_int():
                self.callouts.run(pc)
            else:
                self._tc_fault(vector, pc)
        elif hflags & 3 == 1:
            self._outside_tc()
        else:
            self.guest_exception(vector)     # from user code, which runs directly
        self._resume()

    def sysenter(self):
        done = super().sysenter()
        self._resume()
        return done

    def invalid_opcode(self):
        st = self.machine.state
        pc = (st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF
        if L.TC <= pc < L.TC_END:
            # An opcode capstone decodes but the CPU refuses (ud0, ud1, ...),
            # copied as IDENT: the guest's #UD, at its own instruction.
            unit, site = self.cache.site_at(pc)
            regs = site.faults.get(pc) if site is not None else None
            if regs is None:
                raise GuestStop(f"bt: invalid opcode inside the translation cache at {pc:#010x}")
            self.precise(site, pc, regs)
        handled = super().invalid_opcode()
        if handled:
            self._resume()
        return handled

    # -- faults inside translated code ------------------------------------------------
    # [tour bt 140] Precise exceptions: a fault inside translated code.
    # The fault happened at a TC address.  The site that holds it names the guest
    # instruction and the registers its sequence parked; the guest must see the fault
    # there, with its own registers, as if nothing had been translated.
    def _tc_fault(self, vector, pc):
        if vector == x86.NP and self.first_load() or vector == x86.GP and self.stale_load():
            return self.run_tc(pc)               # the load again, now present
        unit, site = self.cache.site_at(pc)
        regs = site.faults.get(pc) if site is not None else None
        if regs is None and vector == x86.DB:
            raise GuestStop(f"bt: single-stepping the guest kernel (EFLAGS.TF) is not "
                            f"supported, at {self.machine.where()}")
        if regs is None:
            self._check_flat()                   # the usual cause: a based DS under the TC
            raise GuestStop(f"bt: exception {vector} at {pc:#010x} in the translation cache, "
                            f"where no guest instruction can fault")
        if vector == x86.PF:
            return self._tc_page_fault(unit, site, pc, regs)
        self.precise(site, pc, regs)
        event = self.events.exception_event(vector)
        self._refuse_ldt(event)
        self._reflect(event)

    # [tour bt 145] Making the saved CPU the guest's.
    def precise(self, site, pc, regs):
        """Make the saved CPU the guest's at `site`'s instruction: the
        registers a sequence parked come back from the vCPU page, and EIP is
        the guest's.  An instruction that began (and was counted) but did not
        complete is taken back from the instruction count."""
        st = self.machine.state
        for reg in regs:
            st.set_reg(reg, self.vcpu.word(L.S_EAX if reg == "eax" else L.S_ECX))
        st.eip = (site.guest - st.seg_base_of("cs")) & 0xFFFFFFFF
        if pc != site.tc:
            self.machine.emulated(-1)

    def _tc_page_fault(self, unit, site, pc, regs):
        st = self.machine.state
        tc_eip, saved = st.eip, [(r, st.reg(r)) for r in regs]
        for reg in regs:
            st.set_reg(reg, self.vcpu.word(L.S_EAX if reg == "eax" else L.S_ECX))
        guest_eip = st.eip = (site.guest - st.seg_base_of("cs")) & 0xFFFFFFFF
        event = self.shadow_page_fault()
        if event is not None:
            if pc != site.tc:
                self.machine.emulated(-1)
            return self._reflect(event)
        if st.eip == guest_eip:
            if unit.dead:
                # The write invalidated the unit it runs in: finish that one
                # instruction from a translation of its own, then go on from
                # whatever the guest's code now is.
                if pc != site.tc:
                    self.machine.emulated(-1)
                self.run_tc(self.unit(site.guest, transient=True, limit=1).tc)
                return
            self.run_tc(tc_eip)              # a hidden fill: retry as it was
            for reg, value in saved:
                st.set_reg(reg, value)
            return
        # The shadow MMU performed a store to a traced page table.
        self._note_trace(site.guest)
        if site.kind == IDENT and not unit.dead:
            self.run_tc(site.tc_end)

    # -- adaptive translation -----------------------------------------------------------
    # [tour bt 200] Adaptive translation: innocent until proven guilty.
    # A kernel store that keeps faulting on traced page tables is retranslated into a
    # callout that performs the update without a fault (bt.retranslate); after enough
    # callouts that found no page table it becomes innocent again.
    def _note_trace(self, guest):
        n = self.trace_faults.get(guest, 0) + 1
        self.trace_faults[guest] = n
        if n >= GUILTY_AFTER and guest not in self.guilty:
            self.guilty.add(guest)
            self._retranslate(guest)

    def innocent_store(self, guest):
        """A guilty store found no page table behind it this time."""
        n = self.innocent.get(guest, 0) + 1
        self.innocent[guest] = n
        if n >= INNOCENT_AFTER:
            self.guilty.discard(guest)
            self.innocent.pop(guest, None)
            self.trace_faults.pop(guest, None)
            self._retranslate(guest)

    def guilty_store(self, guest):
        self.innocent.pop(guest, None)

    def _retranslate(self, guest):
        """Drop the translations holding `guest`; the next execution translates
        it afresh, as a callout or as IDENT again (bt.retranslate)."""
        self.machine.counters["bt.retranslate"] += 1
        for unit in self.cache.units_covering(guest):
            self.cache.invalidate(unit)

    def _invalidated(self, unit):
        pass

    # -- user code's sensitive reads ----------------------------------------------------------
    def _user_sensitive(self, decoded, kind):
        """sgdt, sidt, sldt, str, smsw, lar, lsl, verr or verw in directly
        executed user code.  VMware's VMM of 2006 let them run, and user code
        saw the VMM's tables (the "red pill").  Here they exit, through a translation-time
        intercept that changes no byte of the guest's code, and get the
        virtual answers: bt is faithful, at the price of an exit each."""
        eflags = self.machine.state.system_flags()
        try:
            name = self.emulator.emulate(decoded)
        except (NotPrivileged, Unsupported, GuestMemoryFault):
            return None                         # left to the CPU, which faults as it would
        self.count_exit("priv")
        self.machine.counters["exit.priv." + name] += 1
        if eflags & x86.TF and self.step_after(eflags, name):
            self._resume()                      # the guest kernel's handler: from the TC
        return EMULATED

    # -- port I/O --------------------------------------------------------------------------
    def port_in(self, port, size):
        self._count_port()
        self.machine.clock.tick()
        return self.machine.bus.read(port, size)

    def port_out(self, port, size, value):
        self._count_port()
        self.machine.clock.tick()
        self.machine.bus.write(port, size, value)

    def _count_port(self):
        """From translated kernel code a port access is a callout (the CPU's
        port hook is how it reaches the VMM); from user code, an exit."""
        c = self.machine.counters
        if self.machine.live_cpl() == 1:
            c["bt.callout"] += 1
            c["bt.callout.io"] += 1
        else:
            self.count_exit("io")

    def guest_view(self):
        """The guest's view, telling the TC of the VMM's own writes through
        it (a far call's push, an emulated store): translated code in the
        frame written must go, as it does when the guest writes it."""
        view = self.paging.guest_view()
        view.on_write = self.on_guest_write
        return view

    # [tour bt 180] Coherence: the guest writes a page holding translated code.
    # The shadow MMU watches every frame a unit came from; a write to one, by the
    # guest or by the VMM on its behalf, invalidates the units made from it
    # (bt.invalidate), self-modifying code and code generated at run time included.
    def on_guest_write(self, pa, length):
        frame = pa & x86.PAGE_MASK
        if frame in self.cache.by_frame:
            self.cache.written(frame)
        last = (pa + length - 1) & x86.PAGE_MASK
        if last != frame and last in self.cache.by_frame:
            self.cache.written(last)

    # -- the machine's questions ---------------------------------------------------------
    def guest_address(self, linear):
        if L.TC <= linear < L.TC_END:
            unit, site = self.cache.site_at(linear)
            if site is not None:
                return site.guest
            if unit is not None:               # an exit stub past the last instruction
                return next((ex.target for ex in unit.exits
                             if ex.at <= linear < ex.at + 5), unit.guest)
        return linear

    def code_view(self, linear, live=False):
        if L.TC <= linear < L.TC_END:
            return _TcView(self.machine.vmm)
        return super().code_view(linear, live)

    def is_guest_instruction(self, linear):
        if not L.TC <= linear < L.TC_END:
            return True
        _, site = self.cache.site_at(linear)
        return site is not None and site.tc == linear

    def exit_cause(self, handler, args):
        st = self.machine.state
        if handler != "exception" or not st.is_software_int():
            return None
        c = self.cache.callouts.get((st.seg_base_of("cs") + st.eip) & 0xFFFFFFFF)
        return None if c is None else f"callout {c.kind}"

    def fold_counters(self):
        c, v = self.machine.counters, self.vcpu
        for name in L.IN_TC_EVENTS:
            slot = L.count_slot(name)
            n = v.word(slot)
            if n:
                c[name] += n
                v.set_word(slot, 0)

    def halted(self):
        raise GuestStop("the CPU halted at real ring 0, which the guest never runs at")

    # [tour bt 210] Seeing the translations: `virtlab translate WORKLOAD`.
    # Each unit's guest code beside its translation, with how often it ran.
    def translation_listing(self):
        """The translation cache as plain data, for `virtlab translate`
        (listing.py); with `profile` set, how often each unit ran."""
        from .listing import units
        return units(self)

    def report(self):
        cache = self.cache
        return {"translation": {"units": len(cache.by_guest),
                                "tc_bytes": cache.next - L.TC,
                                "guilty_stores": len(self.guilty)}}


# The five that CR4.UMIP would make fault outside ring 0, and the four that
# read a descriptor: run on the CPU they would read the shadow GDT, whose
# entries differ from the guest's (DPL 1 for 0, present only once loaded,
# accessed).
_USER_SENSITIVE = frozenset((C.X86_INS_SGDT, C.X86_INS_SIDT, C.X86_INS_SLDT, C.X86_INS_STR,
                             C.X86_INS_SMSW, C.X86_INS_LAR, C.X86_INS_LSL, C.X86_INS_VERR,
                             C.X86_INS_VERW))


def _select_user_sensitive(insn, cpl):
    return "sensitive" if cpl == 3 and insn.id in _USER_SENSITIVE else None


class _TcView(LinearView):
    """The TC as the CPU fetches it, for decoding at a TC address: window
    addresses read straight from machine memory."""

    def __init__(self, mem):
        super().__init__(mem, 0, 0, 0)

    def phys(self, linear, write=False, user=False):
        return L.REGION + linear - L.DATA

    def read(self, linear, n, user=False):
        at = self.phys(linear)
        return bytes(self.mem.view[at:at + n])
