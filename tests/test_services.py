"""The machine's services to back ends, each used by a small back end defined
here: a synthetic exit at an intercepted instruction, a claimed software
interrupt (a hypercall gate), a start state of the back end's own, a map from
the real PC to the guest PC, and notification of writes to a watched page.

These are what bt and pv build on, so each is checked by its effect on a real
guest, not by the bookkeeping alone.
"""
import struct

import pytest

from virtlab import asmguest as A
from virtlab.intercept import EMULATED
from virtlab.machine import BootSpec, Machine
from virtlab.native import Native
from trap_emulate.trap import Trap

LOG = 0x5000


def boot(backend, guest):
    m = Machine(backend)
    m.boot(BootSpec(A.build(guest) if isinstance(guest, A.AsmGuest) else guest))
    return m, m.run()


def word(m, at=LOG):
    return struct.unpack_from("<I", m.mem.view, at)[0]


class RdtscExits(Native):
    """Makes every rdtsc exit and emulates it with a fixed time stamp."""

    def attach(self, machine):
        super().attach(machine)
        self.hits = 0
        machine.intercepts.watch(self._select, self._exit, exit=True)

    def _select(self, insn, cpl):
        return "rdtsc" if insn.mnemonic == "rdtsc" else None

    def _exit(self, decoded, kind):
        st = self.machine.state
        self.hits += 1
        st.set_reg("eax", 0x1234 + self.hits)
        st.set_reg("edx", 0)
        st.eip += decoded.size
        return EMULATED


def test_synthetic_exit_emulates_the_instruction_and_resumes_after_it():
    body = ("mov ecx, 3\nagain:\nrdtsc\ndec ecx\njnz again\n"
            f"mov [{LOG:#x}], eax\n" + A.exit_with(0))
    be = RdtscExits()
    m, out = boot(be, A.AsmGuest(body=body))
    assert out.ok, out.reason
    assert be.hits == 3
    assert word(m) == 0x1234 + 3


class Hypercalls(Native):
    """Claims int 0x82: EAX is the number, the result goes back in EAX."""

    def attach(self, machine):
        super().attach(machine)
        self.calls = []
        machine.claim_vector(0x82, self._hypercall)

    def _hypercall(self, vector):
        assert vector == 0x82
        st = self.machine.state
        self.calls.append((st.reg("eax"), st.reg("ebx")))
        st.set_reg("eax", st.reg("ebx") * 2)       # EIP is already past the int


def test_claimed_vector_is_a_hypercall_gate():
    body = ("mov eax, 7\nmov ebx, 21\nint 0x82\n"
            f"mov [{LOG:#x}], eax\n" + A.exit_with(0))
    be = Hypercalls()
    m, out = boot(be, A.AsmGuest(body=body))
    assert out.ok, out.reason
    assert be.calls == [(7, 21)]
    assert word(m) == 42
    assert m.counters.get("native.syscall", 0) == 0   # not the guest's own int


def test_unclaimed_vectors_still_reach_the_guest_idt():
    handler = f"mov dword ptr [{LOG:#x}], 0x80\niretd\n"
    body = "int 0x80\n" + A.exit_with(0)
    m, out = boot(Hypercalls(), A.AsmGuest(body=body, handlers={0x80: handler}))
    assert out.ok and word(m) == 0x80
    assert m.counters["native.syscall"] == 1


@pytest.mark.parametrize("vector", [0, 13, 31, 256])
def test_only_vectors_no_exception_shares_can_be_claimed(vector):
    """At 0 to 31 the CPU also stops for its own exceptions, which a claim
    would take from the back end."""
    with Machine(Native()) as m, pytest.raises(ValueError, match="cannot be claimed"):
        m.claim_vector(vector, lambda v: None)


class OwnStart(Native):
    """Starts the guest at 0x100010 with EAX = 5, not by the boot protocol."""

    def start_state(self, spec):
        m = self.machine
        m.load_boot_protocol(spec)
        m.state.save()
        m.state.set_reg("eax", 5)
        m.state.eip = 0x100010
        m.state.load()


def test_a_back_end_lays_out_its_own_start_state():
    code = A.assemble("nop\n" * 16 + f"mov [{LOG:#x}], eax\n" + A.exit_with(0), A.BASE)
    m, out = boot(OwnStart(), code)
    assert out.ok, out.reason
    assert word(m) == 5              # entered after the 16 nops, with its own EAX


class Relocated(Native):
    """Pretends the code at 0x100000 stands for guest code 0x700000 higher:
    what a translator does for code it runs from its translation cache."""

    def guest_address(self, linear):
        return linear + 0x700000


def test_reasons_name_the_guest_pc_the_back_end_maps_back_to():
    m, out = boot(Relocated(), A.assemble("ud2\n", A.BASE))
    assert not out.ok
    assert "0x00800000" in out.reason


def test_a_write_to_a_watched_page_is_reported_once_before_it_lands():
    page = 0x300000
    body = (f"mov dword ptr [{page + 8:#x}], 7\n"
            f"mov dword ptr [{page + 12:#x}], 9\n" + A.exit_with(0))
    seen = []
    be = Trap()
    m = Machine(be)
    m.boot(BootSpec(A.build(A.AsmGuest(body=body, paging=True))))

    def on_write(frame):
        seen.append((frame, m.mem.u32(page + 8)))
    be.paging.watch_writes(page, on_write)
    out = m.run()
    assert out.ok, out.reason
    assert seen == [(page, 0)]                 # before the store, and only once
    assert (m.mem.u32(page + 8), m.mem.u32(page + 12)) == (7, 9)
