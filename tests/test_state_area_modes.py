"""The state area's two modes and its lazy flags (virtlab/state_area.py).

A machine's state area either addresses the live CPU state (found and
verified at start) or works on a saved copy, loaded back after each exit.
Both must give the same runs to the byte; the live one must actually be in
use on this machine; a closed machine's last state must stay readable in
either.  The arithmetic flags the module computes itself from QEMU's lazy
form (cc_op, cc_dst, cc_src) must be the library's own, for every operation
the calibration accepted.
"""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from unicorn import Uc, UC_ARCH_X86, UC_MODE_32

from virtlab import asmguest as A, state_area, x86
from virtlab.harness import resolve, run_guest
from virtlab.machine import BootSpec, Machine
from virtlab.native import Native
from virtlab.state_area import StateArea, layout

# -- 1. lazy flags: the module's EFLAGS against the library's ------------------

_LAYOUT = layout()
_FLAGS = _LAYOUT.flags
_SCRATCH = None


def _scratch_area():
    """A copy-mode state area on a scratch CPU (made once: a Uc costs)."""
    global _SCRATCH
    if _SCRATCH is None:
        uc = Uc(UC_ARCH_X86, UC_MODE_32)
        _SCRATCH = (uc, StateArea(uc, _LAYOUT, live=False))
    return _SCRATCH[1]


def test_calibration_accepts_lazy_operations():
    """The calibration found the lazy operations of this module (if it found
    none, the property below would test nothing)."""
    kinds = {kind for _, kind, _ in _FLAGS.lazy}
    assert kinds == {"add", "sub", "logic", "inc", "dec", "clr"}
    assert {bits for _, _, bits in _FLAGS.lazy} == {8, 16, 32}


def test_a_register_xored_with_itself_is_lazy_at_every_size():
    """`xor r, r` leaves QEMU's CC_OP_CLR, one operation whatever the size:
    its flags (ZF and PF) come from this module, not the library."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0x1000, 0x1000)
    area = StateArea(uc, _LAYOUT, live=False)
    arith = x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF
    for reg in ("al", "ax", "eax"):
        code = A.assemble(f"mov eax, 0x80\nadd eax, 0x80\nxor {reg}, {reg}\n", 0x1000)
        uc.mem_write(0x1000, code)
        uc.emu_start(0x1000, 0x1000 + len(code))
        area.save()
        assert area._lazy.get(area._flag_words()[3]) is not None, reg
        assert area.eflags() & arith == x86.ZF | x86.PF_FLAG == area._computed_eflags() & arith, reg


_U32 = st.integers(0, 0xFFFFFFFF)
# inc and dec keep the old carry in cc_src: mostly 0 or 1, as QEMU stores it.
_SRC = st.one_of(st.sampled_from([0, 1]), _U32)
_EDGE = st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF,
                         0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])


@settings(max_examples=250, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(op=st.sampled_from(_FLAGS.lazy), dst=st.one_of(_EDGE, _U32),
       src=st.one_of(_EDGE, _SRC), df=st.sampled_from([1, -1]),
       system=st.sampled_from([0x2, 0x202, 0x3202, 0x40202]))
def test_lazy_eflags_match_the_library(op, dst, src, df, system):
    cc_op, kind, bits = op
    area = _scratch_area()
    area.set(_FLAGS.eflags, system)
    area.set(_FLAGS.cc_op, cc_op)
    area.set(_FLAGS.cc_dst, dst)
    area.set(_FLAGS.cc_src, src)
    area.wi[_FLAGS.df >> 2] = df
    mine = area.eflags()                     # the module's lazy path (or the library's)
    library = area._computed_eflags()        # uc_context_reg_read of EFLAGS
    assert mine == library, (kind, bits, hex(dst), hex(src), df)


def test_lazy_path_is_taken():
    """The module computes these flags itself: its formula for a lazy
    operation gives a value without the library (so the property above
    compares two computations, not the library with itself)."""
    area = _scratch_area()
    for cc_op, kind, bits in _FLAGS.lazy:
        assert area._lazy[cc_op](0x1234, 1) is not None, (kind, bits)


_SYSTEM = (x86.TF | x86.IF | x86.NT | x86.IOPL_MASK | x86.RF | x86.VM | x86.AC
           | 0x200000)                  # ID


@pytest.mark.parametrize("pushed", [0x2, 0x202, 0x3202, 0x4002, 0x40202, 0x200202, 0x1602])
def test_system_flags_are_exact_without_computing_eflags(pushed):
    """system_flags(), QEMU's plain eflags field, holds every system flag as
    eflags() and the library give them, after popfd loaded them and an
    arithmetic operation left the others lazy."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0x1000, 0x1000)
    area = StateArea(uc, _LAYOUT, live=False)
    code = A.assemble(f"mov esp, 0x1f00\npush {pushed:#x}\npopfd\nadd eax, 1\n", 0x1000)
    uc.mem_write(0x1000, code)
    uc.emu_start(0x1000, 0x1000 + len(code))
    area.save()
    assert area.system_flags() & _SYSTEM == area.eflags() & _SYSTEM \
        == area._computed_eflags() & _SYSTEM == pushed & _SYSTEM


def test_entry_regs_gather_eip_hflags_and_the_code_and_data_bases():
    area = _scratch_area()
    area.set_segment("cs", 0x19, 0x123000, 0xFFFFF, 0xCFBA00)
    area.set_segment("ds", 0x21, 0x456000, 0xFFFFF, 0xCFB200)
    area.eip = 0x789A
    pc, hflags, cs_base, ds_base = area.entry_regs()
    assert (pc, cs_base, ds_base) == (0x789A, 0x123000, 0x456000)
    assert hflags & 3 == area.cpl and area.pc_regs() == (0x789A, 0x123000)


# -- 2. live and copy modes give the same runs ----------------------------------

_WORKLOADS = ("nano.syscall", "nano.ptemod", "micro.fork")
_BACKENDS = ("trap", "hw", "bt", "pv")


def _run(workload, backend, live, monkeypatch):
    monkeypatch.setattr(state_area, "PREFER_LIVE", live)
    guest = resolve(workload, None, 1, "pv" if backend == "pv" else "native")
    r = run_guest(guest, backend)
    assert r.ok, r.reason
    return r


@pytest.mark.parametrize("backend", _BACKENDS)
def test_live_and_copy_modes_agree(backend, monkeypatch):
    for workload in _WORKLOADS:
        live = _run(workload, backend, True, monkeypatch)
        copy = _run(workload, backend, False, monkeypatch)
        assert live.counters == copy.counters, workload
        assert live.roi_counters == copy.roi_counters, workload
        assert live.console == copy.console, workload
        assert (live.exit_status, live.vmm_entries, live.iterations) == \
            (copy.exit_status, copy.vmm_entries, copy.iterations), workload


def test_modes_are_what_they_say():
    """The live mode is found on this machine (else every run above compared
    the copy mode with itself), and live_state=False gives a copy."""
    with Machine(Native(), ram_size=1 << 20) as live, \
            Machine(Native(), ram_size=1 << 20, live_state=False) as copy:
        assert live.state.live
        assert not copy.state.live


# -- 3. the last state stays readable after close ----------------------------------

def _guest():
    return A.build(A.AsmGuest(body="mov esi, 0x1234\nmov ebx, 7\nsub ebx, 9\n"
                                   + A.exit_with(0)))


@pytest.mark.parametrize("live", [True, False], ids=["live", "copy"])
def test_state_readable_after_close(live):
    m = Machine(Native(), ram_size=4 << 20, live_state=live)
    m.boot(BootSpec(_guest()))
    assert m.run().ok
    st = m.state
    assert st.live == live
    head = st.layout.header             # (live: other bytes of the CPU, not a header)
    if not live:
        st.save()                          # the copy holds the last exit's state
    before = (st.eip, st.reg("esi"), st.reg("ebx"), st.eflags(), st.cpl, st.cr(0),
              st.table("gdt"), st.seg_selector("cs"), bytes(st.mem[head:]))
    m.close()
    after = (st.eip, st.reg("esi"), st.reg("ebx"), st.eflags(), st.cpl, st.cr(0),
             st.table("gdt"), st.seg_selector("cs"), bytes(st.mem[head:]))
    assert after == before
    assert not st.live                     # a private copy now
    assert st._computed_eflags() == before[3]   # the library reads the copy too
    m.close()                              # idempotent
    assert (st.eip, st.reg("esi")) == before[:2]
    assert before[1] == 0x1234 and before[2] == (7 - 9) & 0xFFFFFFFF
