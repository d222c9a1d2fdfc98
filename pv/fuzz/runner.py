"""Running one chunk: a fresh domain boots the chunk's guest, a Monitor
watches each hypercall and checks the invariants after it, and what the
guest stored and how it ended go to the report."""
import random
import traceback
from operator import attrgetter

from virtlab.machine import BootSpec, Budget, Machine

from .. import invariants
from ..asmguest import VIRT_BASE
from ..backend import Pv
from ..hypercalls import NO_RETURN
from .generator import disk_image, generate
from .guest import PAGE, RAM, RECORD, RECORDS, _FAULT, _OUT, _UPCALL

# A frame record -> (type, references, pinned).
_TYPE = attrgetter("type", "count", "pinned")


class Broken(Exception):
    """The hypervisor's invariants do not hold (raised in a hook, re-raised
    by Machine.run)."""


class Monitor:
    """Watches the hypervisor of one chunk: each hypercall and multicall
    entry, its result, and the invariants after it."""

    def __init__(self, hv):
        self.hv = hv
        self.issued = 0            # hypercalls the guest made
        self.top = []              # (number, result) of each one that finished
        self.nested = []           # (number, result) of each multicall entry
        self.entry = None          # the entry of the current multicall being run
        self.passed = None         # what the invariants read when they last held
        self.checks = self.skipped = 0
        plain = hv.hypercall       # before Machine() binds int 0x82 to it

        def hypercall(vector):
            self.issued += 1
            self.entry = None
            plain(vector)
            self.entry = None
            self.check()
        hv.hypercall = hypercall

    def attach(self):
        """After Machine(): see each call of the hypercall table, the entries
        of a multicall too."""
        table = self.hv.hypercalls
        plain = table.call

        def call(number, *args):
            top = table.depth == 0
            if not top:
                self.entry = 0 if self.entry is None else self.entry + 1
            result = plain(number, *args)
            value = None if result is NO_RETURN else result
            (self.top if top else self.nested).append((number, value))
            if not top:
                self.check()
            return result
        table.call = call

    def check(self):
        """pv.invariants.check(), unless nothing it reads has changed since it
        last passed: it is a function of the page types, the contents of the
        frames that are page tables, CR3 and the base pointer (extend
        _inputs() if it ever reads more).  Most calls change none of these,
        and the check costs a millisecond per page table."""
        inputs = self._inputs()
        if inputs == self.passed:
            self.skipped += 1
            return
        self.checks += 1
        errors = invariants.check(self.hv)
        if errors:
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise Broken("; ".join(errors[:3]) + more)
        self.passed = inputs

    def _inputs(self):
        hv = self.hv
        frames, mem = hv.frames, hv.machine.mem
        # Every frame record, in the order they were made (records are only
        # ever added: a new one, even as made, only costs a check), and the
        # contents of the frames that are page tables.
        made = frames.frames
        types = list(map(_TYPE, made.values()))
        tables = [mem.read((frames.first + i) << 12, PAGE)
                  for i, (kind, count, _) in zip(made, types) if count and kind in ("l1", "l2")]
        return hv.mmu.baseptr, hv.machine.state.cr(3), list(made), types, tables


def run_chunk(index, seed, count, report):
    """Generate, run and judge one chunk; the number of calls it had."""
    rng = random.Random(f"pv.fuzz:{seed}:{index}")
    hv = Pv()
    mon = Monitor(hv)
    with Machine(hv, ram_size=RAM, budget=Budget(host_seconds=900.0)) as m:
        mon.attach()
        dom, calls, image = generate(rng, hv, count)
        m.boot(BootSpec(image, "pv.fuzz", 0, disk_image()))
        _check_layout(dom, hv)
        outcome, error = m.run(), None
        # What the hypervisor's code raised (an invariant the monitor found
        # broken, or an exception escaping a handler) ended the run as an
        # internal error; the machine keeps it.
        exc = m.internal_error
        if isinstance(exc, Broken):
            error = f"invariant broken: {exc}"
        elif exc is not None:
            error = f"{type(exc).__name__}: {exc}{_origin(exc)}"
        # The registers of the last call are in its record only if the guest
        # went on to the end.
        finished = outcome.ok and outcome.exit_status == 0
        if finished and not mon.issued == len(mon.top) == len(calls):
            raise RuntimeError("pv.fuzz: the guest made its calls, but the fuzzer did not see "
                               "them all (did Pv.hypercall or HypercallTable.call change?)")
        done = mon.issued if finished else mon.issued - 1
        report.chunk(index, mon, calls, _outputs(m, hv, done), hv.start.stack_end)
        report.count_work(m.counters.snapshot())
        if error is not None:
            report.hypervisor_error(index, mon, calls, error)
        elif not outcome.ok or outcome.exit_status != 0:
            report.crash(index, mon, calls, _crash_reason(outcome))
    return len(calls)


def _check_layout(dom, hv):
    st = hv.start
    if (st.p2m, st.pt_base_mfn, st.blk_ring_pfn, st.blk_port) != (
            dom.p2m, dom.pd, dom.boot.ring, dom.blk_port):
        raise RuntimeError("pv.fuzz: the domain is not laid out as predicted "
                           "(did pv/builder.py change?)")


def _origin(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {'/'.join(f.filename.split('/')[-2:])}:{f.lineno} in {f.name})"


def _crash_reason(outcome):
    if outcome.ok and outcome.exit_status == _FAULT:
        return "the guest took an exception (one of its trap handlers ran)"
    if outcome.ok and outcome.exit_status == _UPCALL:
        return "an event upcall reached the guest"
    if outcome.ok:
        return f"the guest ended with status {outcome.exit_status}"
    return outcome.reason


def _outputs(m, hv, n):
    """ESP EAX EBX ECX EDX ESI EDI after each of the first n calls, as the
    guest stored them."""
    out = []
    for i in range(n):
        va = RECORDS + RECORD * i + _OUT
        raw = m.mem.read(hv.start.p2m[(va - VIRT_BASE) // PAGE] << 12 | va & 0xFFF, 28)
        out.append(tuple(int.from_bytes(raw[j:j + 4], "little") for j in range(0, 28, 4)))
    return out
