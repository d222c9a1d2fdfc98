"""Host cost of binary translation: how fast translated kernel code runs, and
what translating it costs.

    python benchmarks/translation.py [--json] [--repeat N]

bt_kernel_speed         native host time / bt host time of a ring-0 loop of
                        ALU, memory and branch instructions (loads, stores,
                        a conditional branch taken every other iteration):
                        1.0 means the translation runs as fast as the
                        original; the loop's units chain to one another, so
                        it never leaves the translation cache
bt_callret_speed        the same for a ring-0 loop of call/ret pairs: every
                        ret is the inline lookup in the indirect-branch
                        table (about a dozen instructions for one)
translate_us_per_insn   host microseconds per guest instruction translated by
                        bt.translate.Translator alone (decode, classify, emit),
                        over the guest kernel's own code read from the image:
                        every unit a real bt run of WORKLOAD translated
unit_us_per_insn        the same in that run, for the whole of making a unit
                        (Bt.unit: translate, copy into the TC, watch its frames)

Each figure is the median over --repeat batches.  These are host costs of
this implementation; the modeled cost of translation is
bt.translate.instructions (docs/counters.md).
"""
import time

from guestbench import main as bench_main, timed_run

from bt import layout as L
from bt.backend import Bt
from bt.translate import Translator
from virtlab import asmguest as A
from virtlab.harness import DISK_BYTES
from virtlab.machine import BootSpec, Machine
from virtlab.memory import GuestMemoryFault
from virtlab.native import Native
from workloads.catalog import image_path

N = 3_000_000
WORKLOAD, SCALE = "macro.build", 1
# The image's first byte: where the kernel is linked, and where it is loaded
# and runs before it turns paging on (workloads/kernel/kernel.ld).
KERNEL_LINK, KERNEL_LOAD = 0xC0100000, 0x100000


def _speed(body):
    g = A.AsmGuest(body=body, paging=True)
    native, _ = timed_run(Native(), g)
    bt, m = timed_run(Bt(), g)
    if m.counters["bt.translate.units"] > 20:
        raise SystemExit("the loop did not stay in the translation cache")
    return native / bt


def bt_kernel_speed():
    body = (f"mov esi, 0x200000\nmov ecx, {N}\nxor edx, edx\nlp:\n"
            "mov eax, [esi]\nadd eax, ecx\nxor ebx, eax\nmov [esi + 4], ebx\n"
            "lea edi, [ebx + ecx*2]\ntest ecx, 1\njz even\ninc edx\neven:\n"
            "dec ecx\njnz lp\n" + A.exit_with(0))
    return _speed(body)


def bt_callret_speed():
    body = (f"mov ecx, {N // 2}\nlp:\ncall f\ndec ecx\njnz lp\n" + A.exit_with(0)
            + "f:\nadd eax, ecx\nret\n")
    return _speed(body)


# -- the translator on the guest kernel's code -----------------------------------------
class _TimedBt(Bt):
    """bt, timing every unit it makes (not those it finds in the cache)."""

    def attach(self, machine):
        super().attach(machine)
        self.made, self.seconds, self.instructions = [], 0.0, 0

    def unit(self, guest, transient=False, limit=None):
        if not transient and guest in self.cache.by_guest:
            return self.cache.by_guest[guest]
        t0 = time.perf_counter()
        unit = super().unit(guest, transient, limit)
        self.seconds += time.perf_counter() - t0
        self.instructions += len(unit.sites)
        if not transient:
            self.made.append(guest)
        return unit


_ENTRIES = []


def _kernel_run():
    """One bt run of WORKLOAD, timing its translations: (the guest EIPs of the
    units it made, seconds in Bt.unit, instructions translated)."""
    be = _TimedBt()
    with Machine(be) as m:
        m.boot(BootSpec(image_path().read_bytes(), WORKLOAD, SCALE, bytearray(DISK_BYTES)))
        out = m.run()
    if not out.ok:
        raise SystemExit(f"{WORKLOAD} under bt failed: {out.reason}")
    if not _ENTRIES:
        _ENTRIES.extend(be.made)
    return be.made, be.seconds, be.instructions


def _image_reader():
    image = image_path().read_bytes()

    def read(linear, n):
        off = linear - (KERNEL_LINK if linear >= KERNEL_LINK else KERNEL_LOAD)
        if not 0 <= off < len(image):
            raise GuestMemoryFault(linear, 0)
        return image[off:off + n]
    return read


def translate_us_per_insn():
    entries = _ENTRIES or _kernel_run()[0]
    read, tr = _image_reader(), Translator()
    for guest in entries[:50]:                   # warm up: keystone builds the templates
        tr.translate(read, guest, L.TC)
    t0 = time.perf_counter()
    insns = sum(len(tr.translate(read, guest, L.TC).sites) for guest in entries)
    return (time.perf_counter() - t0) / insns * 1e6


def unit_us_per_insn():
    _, seconds, insns = _kernel_run()
    return seconds / insns * 1e6


BENCHES = {"bt_kernel_speed": bt_kernel_speed, "bt_callret_speed": bt_callret_speed,
           "translate_us_per_insn": translate_us_per_insn, "unit_us_per_insn": unit_us_per_insn}


if __name__ == "__main__":
    bench_main(__doc__, BENCHES)
