"""Exact guest-instruction counting (virtlab/icount.py)."""
import pytest

from virtlab import asmguest as A, backend as B
from virtlab.machine import BootSpec, Machine
from virtlab import harness

ALL = ("native", "trap", "hw", "hw-npt")


def count(backend, image, workload="", scale=0):
    with Machine(B.create(backend), count_instructions=True) as m:
        m.boot(BootSpec(image, workload, scale, bytearray(4 << 20)))
        out = m.run()
    assert out.ok, out.reason
    return m.icount.total, m.roi.instructions


@pytest.mark.parametrize("backend", ALL)
def test_straight_line_guest_is_counted_exactly(backend):
    # The prologue (lgdt; push; push; retf; 5 segment loads; esp; lidt; ltr
    # sequence) and the body: every instruction up to and including the `out`
    # that ends the run, none after it.
    body = "nop\nnop\nnop\n" + A.exit_with(0)        # + mov eax; mov dx; out
    n, _ = count(backend, A.build(A.AsmGuest(body=body)))
    prologue = len(A._prologue(A.AsmGuest(body="")).strip().splitlines())
    assert n == prologue + 3 + 3


def test_faulting_and_emulated_instructions_count_once():
    """A loop of 100 `cli` at ring 1 under trap: each faults and is emulated;
    natively (ring 0) each simply runs.  Both count 100 cli."""
    body = "mov ecx, 100\nlp:\ncli\ndec ecx\njnz lp\n" + A.exit_with(0)
    img = A.build(A.AsmGuest(body=body))
    counts = {b: count(b, img)[0] for b in ALL}
    assert len(set(counts.values())) == 1, counts


@pytest.mark.parametrize("name", ["nano.syscall", "micro.fork", "nano.ptemod"])
def test_every_backend_executes_the_same_guest_instructions(name):
    g = harness.resolve(name, scale=10)
    image = g.image_path.read_bytes()
    counts = {b: count(b, image, g.workload, g.scale) for b in ALL}
    assert len(set(counts.values())) == 1, counts


@pytest.mark.parametrize("backend", [b for b in B.names() if B.load(b).image == "native"])
def test_roi_counts_exactly_the_instructions_between_its_marks(backend):
    """The ROI's count runs from just past the begin mark's `out` through the
    end mark's `out`, wherever the translation blocks end (both marks and
    the nops are one block here: counting whole blocks gave 0)."""
    body = ("mov dx, 0x501\nout dx, al\n" + "nop\n" * 10 + "mov dx, 0x502\nout dx, al\n"
            + "nop\n" * 3 + A.exit_with(0))
    _, roi = count(backend, A.build(A.AsmGuest(body=body)))
    assert roi == 10 + 2


def test_rdtsc_values_do_not_change_the_instruction_count(monkeypatch):
    """nano.rdtsc branches on the TSC's high half; the counter is virtual, so a
    low-half wrap happens (or not) identically under every back end and in
    every run.  Forcing one inside the ROI takes the other path, the same
    everywhere."""
    from virtlab import tsc
    g = harness.resolve("nano.rdtsc", scale=200)
    image = g.image_path.read_bytes()
    plain = {b: count(b, image, g.workload, g.scale) for b in ALL}
    monkeypatch.setattr(tsc.VirtualTsc, "value",
                        lambda self: (1 << 32) - 50 * 1000 + self.reads * 1000)
    wrapped = {b: count(b, image, g.workload, g.scale) for b in ALL}
    assert len(set(plain.values())) == 1 and len(set(wrapped.values())) == 1, (plain, wrapped)
    assert plain["native"] != wrapped["native"]
