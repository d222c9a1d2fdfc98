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
