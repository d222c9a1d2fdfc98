"""Conformance: what every installed back end must do, whatever its technique.

Parametrised over `virtlab.backend.names()`, so a back end installed later (bt,
pv) gets these tests without editing this file:

  - the guest's output (console and exit status) is native's, or the back end
    documents the workload as unfaithful (Backend.unfaithful) and the run then
    reports the divergence (matches_native False, details.sensitive non-empty);
  - the accounting identities of docs/counters.md hold for the whole run and
    for the ROI: each exit is counted under exactly one kind, each family is
    the sum of its members, and each event the guest sees (system call,
    exception, interrupt) is counted exactly once, as many times as natively;
  - the guest cannot reach the VMM's range at 0xFC000000 and up;
  - runs are deterministic;
  - bad input raises UsageError, and a crashing or hanging guest gives ok=False
    with a reason, never a Python exception.

VIRTLAB_CONFORMANCE_BACKENDS=name[,name...] runs it over those back ends only
(the one you are writing: docs/writing-a-backend.md).  Native still runs, as
the reference every comparison needs, and the tests of trap alone run only
when trap is named.
"""
import os
import re
import struct
from functools import lru_cache

import pytest

import pae_guest
import runs
import virtlab
from analysis.profile import family_of
from virtlab import asmguest as A, backend as B, harness, x86
from virtlab.audit import Audit
from virtlab.harness import UsageError
from virtlab.machine import BootSpec, Budget, Machine
from virtlab.vmm.compressed import RingCompressedVmm
from workloads.catalog import CATALOG


def selected(installed):
    """The back ends VIRTLAB_CONFORMANCE_BACKENDS names (all installed if it is
    unset or empty).  A name that is not installed stops the collection: a
    misspelt name must fail, not pass by selecting nothing."""
    wanted = [n.strip() for n in os.environ.get("VIRTLAB_CONFORMANCE_BACKENDS", "").split(",")]
    wanted = list(dict.fromkeys(n for n in wanted if n))
    unknown = [n for n in wanted if n not in installed]
    if unknown:
        raise RuntimeError(f"VIRTLAB_CONFORMANCE_BACKENDS names {', '.join(unknown)}: not "
                           f"installed (installed: {', '.join(installed)})")
    return wanted or installed


BACKENDS = selected(B.names())
# The back ends that boot the native image, and so the small native-protocol
# assembly guests below; a back end with a guest of its own (pv) has its
# versions of those tests next to its others (tests/test_pv.py).
NATIVE_IMAGE = [b for b in BACKENDS if B.load(b).image == "native"]

# A small representative set at small scales (each run well under a second).
WORKLOADS = {
    "nano.syscall": 20, "nano.cli": 20, "nano.in": 20, "nano.pgfault": 10,
    "nano.rdtsc": 20, "micro.fork": 3, "macro.disk": 4,
    **{name: 1 for name in CATALOG if name.startswith("fidelity.")},
}


def result(workload, backend):
    return runs.run(workload, backend, WORKLOADS[workload])


# -- output ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_output_is_native_or_the_divergence_is_reported(workload, backend):
    r, native = result(workload, backend), result(workload, "native")
    assert r.ok and native.ok, r.reason or native.reason
    same = r.console == native.console and r.exit_status == native.exit_status
    assert r.matches_native == same
    if B.load(backend).documented_unfaithful(workload):
        # Documented as unfaithful: it really diverges (the declaration is
        # exact), and says so.
        assert not r.matches_native, f"{backend} is faithful on {workload}: undeclare it"
        assert r.details.get("sensitive"), r.details
    else:
        assert r.matches_native, (r.console, native.console)


def test_native_is_faithful_by_definition():
    assert B.load("native").unfaithful == ()


only_with_trap = pytest.mark.skipif("trap" not in BACKENDS, reason="trap is not selected")


@only_with_trap
def test_trap_declares_exactly_the_fidelity_workloads_ring_compression_exposes():
    """Every fidelity workload but smsw's: the machine status word is all
    the guest's in the real CR0, so trap's unmodified smsw reads it right."""
    trap = B.load("trap")
    assert {w for w in CATALOG if trap.documented_unfaithful(w)} == \
        {w for w in CATALOG if w.startswith("fidelity.")} - {"fidelity.smsw"}


# -- accounting identities ------------------------------------------------------------
def members(c, family):
    return sum(v for k, v in c.items() if family_of(k) == family)


def exit_kinds(c):
    """The top-level kinds of exit: every exit.<kind> (exit.pf.hidden and
    exit.pf.true are two kinds) except exit.total and the members of a family
    (exit.priv.<insn>)."""
    return {k: v for k, v in c.items()
            if k.startswith("exit.") and k != "exit.total" and family_of(k) is None}


def callout_kinds(c):
    """The kinds of callout from translated code (bt.callout.<kind>)."""
    return {k: v for k, v in c.items() if k.startswith("bt.callout.")}


def check_identities(c):
    g = lambda k: c.get(k, 0)                                        # noqa: E731
    # One VMM entry, one kind.  An entry is an exit, or a callout from translated
    # code.  One that ends by reflecting a system call or exception into the guest
    # is counted under the reflection (the VMM had control to deliver it); a
    # reflected #PF at an exit is exit.pf.true.  A #PF the translator finds while
    # fetching code is delivered within an entry already counted (bt.fetch_fault).
    entries = g("exit.total") + g("bt.callout")
    kinds = sum(exit_kinds(c).values()) + sum(callout_kinds(c).values())
    reflected = g("reflect.syscall") + g("reflect.exception") + g("reflect.pf") \
        - g("exit.pf.true") - g("bt.fetch_fault")
    assert entries == kinds + reflected, c
    assert g("exit.pf.true") <= g("reflect.pf"), c
    # An interrupt is injected at an exit of its own (exit.irq) or at a callout
    # that was taken for it (bt.callout.irq).
    assert g("inject.irq") == g("exit.irq") + g("bt.callout.irq"), c
    # Families are the sum of their members.
    for family in ("exit.priv", "native.exception", "reflect.exception"):
        assert g(family) == members(c, family), (family, c)
    reflect_kinds = [k for k in c if k.startswith("reflect.") and k != "reflect.total"
                     and family_of(k) is None]
    assert g("reflect.total") == sum(c[k] for k in reflect_kinds), c
    assert all(v > 0 for v in c.values()), c


def delivered(c):
    """What the guest kernel saw, however the back end got it there: one
    counter per event."""
    g = lambda k: c.get(k, 0)                                        # noqa: E731
    return {"syscall": g("native.syscall") + g("reflect.syscall")
            + g("pv.fast_syscall") + g("pv.bounce.syscall"),
            "exception": g("native.exception") + g("reflect.pf") + g("reflect.exception")
            + g("pv.bounce") - g("pv.bounce.syscall"),
            "irq": g("native.irq") + g("inject.irq") + g("evtchn.upcall")}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_accounting_identities(workload, backend):
    r, native = result(workload, backend), result(workload, "native")
    assert r.ok, r.reason
    for part in ("counters", "roi_counters"):
        c = getattr(r, part)
        check_identities(c)
        # One event, one counter: the guest sees each system call, exception and
        # interrupt once, under exactly one delivery counter, as natively.  (A
        # kernel built otherwise keeps its own clock: under pv the timer is an
        # event channel programmed by the guest, so only the system calls and
        # exceptions its programs cause are the native run's.)
        want, got = delivered(getattr(native, part)), delivered(c)
        if B.load(backend).image != "native":
            del want["irq"], got["irq"]
        assert got == want, (part, c)


SYSCALLS = 3000


@lru_cache(maxsize=None)
def preempted_syscalls(backend):
    """SYSCALLS `int 0x80` with a 1 ms timer running: some of them trap while the
    timer's interrupt is pending, which the back end takes first; the `int`
    then runs again."""
    body = (A.timer_setup() + f"sti\nmov ecx, {SYSCALLS}\nlp:\nint 0x80\ndec ecx\njnz lp\ncli\n"
            + A.exit_with(0))
    g = A.AsmGuest(body=body, handlers={0x80: "iretd", 0x20: A.timer_handler(LOG)})
    m = Machine(B.create(backend))
    m.boot(BootSpec(A.build(g)))
    out = m.run()
    assert out.ok, out.reason
    return m.counters.snapshot(), m.mem.u32(LOG)


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_an_exit_that_injects_an_interrupt_is_the_interrupts(backend):
    c, ticks = preempted_syscalls(backend)
    native, native_ticks = preempted_syscalls("native")
    assert ticks == native_ticks >= 2
    check_identities(c)
    # Exactly SYSCALLS system calls and `ticks` interrupts, however many of the
    # system calls were pre-empted by an interrupt and retried.
    assert delivered(c) == {"syscall": SYSCALLS, "exception": 0, "irq": ticks}
    if "bt.callout" in c:
        # The kernel's `int 0x80` is a callout under bt: the interrupts are
        # taken at those callouts, and every system call is a reflection.
        assert c.get("bt.callout.irq", 0) + c.get("exit.irq", 0) == ticks
        assert c["reflect.syscall"] == SYSCALLS
    elif "exit.total" in c:
        assert c["exit.irq"] == ticks
        assert c["exit.total"] == c.get("reflect.syscall", 0) + ticks + c["exit.io"] \
            + c.get("exit.priv", 0) + c.get("exit.pf.hidden", 0) + c.get("exit.np.hidden", 0)


def test_exact_counts():
    """Mechanism-fixed counts (the kernel executes one cli before the run ends)."""
    if "trap" in BACKENDS:
        assert result("nano.syscall", "trap").counters["exit.priv.cli"] == 1
    for backend in BACKENDS:
        r = result("nano.syscall", backend)
        assert delivered(r.roi_counters)["syscall"] == WORKLOADS["nano.syscall"]


@only_with_trap
@pytest.mark.parametrize("workload", ["nano.syscall", "nano.cli", "macro.disk"])
def test_emulated_cli_sti_match_the_audit(workload):
    """Each cli/sti the guest kernel executes is one exit.priv.cli/sti under a
    back end that emulates them, and nothing after the guest's end-of-run
    write is counted (the stop loop's `cli; hlt`)."""
    g = harness.resolve(workload, scale=WORKLOADS[workload])
    m = Machine(B.create("native"))
    audit = Audit(m)
    m.boot(BootSpec(g.image_path.read_bytes(), g.workload, g.scale, bytearray(harness.DISK_BYTES)))
    assert m.run().ok
    executed = {name: sum(n for (cls, insn, ring), n in audit.counts.items() if insn == name)
                for name in ("cli", "sti")}
    c = result(workload, "trap").counters
    assert {name: c.get("exit.priv." + name, 0) for name in executed} == executed


def test_nothing_after_the_end_of_run_write_is_counted():
    """`out 0x500` then privileged instructions, a fault and a port access: none counts."""
    body = A.exit_with(0) + "cli\nsti\nin al, 0x21\nmov eax, cr3\nmov cr3, eax\nud2\n"
    img = A.build(A.AsmGuest(body=body))
    counts = {}
    for backend in NATIVE_IMAGE:
        m = Machine(B.create(backend))
        m.boot(BootSpec(img))
        assert m.run().ok
        counts[backend] = m.counters.snapshot()
        assert not [k for k in counts[backend] if k.startswith(("native.io", "exit.io", "exit.priv.cli",
                                                                 "exit.priv.sti", "native.exception"))]


# -- isolation ------------------------------------------------------------------------
LOG = 0x5000
FAULTS = (13, 14)
HANDLERS = {v: f"mov dword ptr [{LOG + 8:#x}], {v}\n" + A.exit_with(v) for v in FAULTS}
HOSTILE = {
    "load": "mov eax, [0xFC000000]\nmov [0x5000], eax\n",
    "store": "mov dword ptr [0xFC009000], 0x11223344\n",
    "load-high": "mov eax, [0xFFFFF000]\nmov [0x5000], eax\n",
}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("access", sorted(HOSTILE))
def test_guest_cannot_touch_the_vmm_range(backend, access):
    body = HOSTILE[access] + f"mov dword ptr [{LOG + 4:#x}], 1\n" + A.exit_with(0)
    m = Machine(B.create(backend))
    m.boot(BootSpec(A.build(A.AsmGuest(body=body, handlers=HANDLERS, paging=True))))
    out = m.run()                                  # no Python exception
    completed, vector = m.mem.u32(LOG + 4), m.mem.u32(LOG + 8)
    assert completed == 0, "the access to the VMM range completed"
    if out.ok:
        # The documented alternative: the range is not mapped in the guest's own
        # page tables, so the CPU raises #PF and the guest's handler gets it.
        assert out.exit_status in FAULTS and vector == out.exit_status, out
    else:
        assert "isolation" in out.reason, out.reason
    if B.load(backend).machine_memory == 0:
        assert out.ok and out.exit_status == 14   # nothing of a VMM there: a plain #PF


# -- determinism ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("workload", ["nano.syscall", "nano.rdtsc", "micro.fork", "macro.disk",
                                      "fidelity.sidt"])
def test_runs_are_deterministic(workload, backend):
    a = result(workload, backend)
    b = virtlab.run(workload, backend, scale=WORKLOADS[workload], model=False)
    assert (a.counters, a.roi_counters, a.console, a.exit_status, a.iterations, a.vmm_entries) == \
        (b.counters, b.roi_counters, b.console, b.exit_status, b.iterations, b.vmm_entries)


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_rdtsc_is_the_same_under_every_run(backend):
    """rdtsc reads the virtual clock, not the host's TSC."""
    body = ("rdtsc\nmov [0x5000], eax\nmov [0x5004], edx\nin al, 0x21\n"
            "rdtsc\nmov [0x5008], eax\nmov [0x500c], edx\n" + A.exit_with(0))
    img = A.build(A.AsmGuest(body=body))
    seen = []
    for _ in range(2):
        m = Machine(B.create(backend))
        m.boot(BootSpec(img))
        assert m.run().ok
        seen.append((m.mem.u32(0x5000) | m.mem.u32(0x5004) << 32,
                     m.mem.u32(0x5008) | m.mem.u32(0x500c) << 32))
    assert seen[0] == seen[1] and seen[0][1] > seen[0][0]
    assert seen[0] == _rdtsc_native(img)


def _log(backend, img):
    """Run `img` under `backend` to a good end: (exit status, the 32 bytes of
    its log at 0x5000).  Each makes a few hundred exits at most: the budget
    ends a guest that a VMM sends into a loop in a second, not two minutes."""
    with Machine(B.create(backend), budget=Budget(max_exits=100_000)) as m:
        m.boot(BootSpec(img))
        out = m.run()
        assert out.ok, out.reason
        return out.exit_status, m.mem.read(0x5000, 32)


@lru_cache(maxsize=None)
def _native_log(img):
    return _log("native", img)


def _as_natively(backend, img, fmt, want, at=0):
    """Run `img` under `backend`: its log holds `want` (struct format `fmt`,
    at offset `at`) and is native's, byte for byte."""
    log = _log(backend, img)
    assert struct.unpack_from(fmt, log[1], at) == want
    assert log == _native_log(img)


def _ends_saying(backend, img, words):
    """Run `img` under `backend`: the run fails, its reason saying `words`."""
    with Machine(B.create(backend), budget=Budget(max_exits=100_000)) as m:
        m.boot(BootSpec(img))
        out = m.run()
    assert not out.ok and words in out.reason, out.reason


def _gdt_entries(entries):
    """Kernel code writing descriptors (selector -> (lo, hi)) into the asm
    guest's GDT and loading GDTR with a limit that covers them."""
    top = max(entries) + 7
    return ("".join(f"mov dword ptr [{A.GDT + sel:#x}], {lo:#x}\n"
                    f"mov dword ptr [{A.GDT + sel + 4:#x}], {hi:#x}\n"
                    for sel, (lo, hi) in entries.items())
            + f"mov word ptr [0x6000], {top:#x}\nmov dword ptr [0x6002], {A.GDT:#x}\n"
              "lgdt [0x6000]\n")


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_rdtscp_reads_the_virtual_clock_and_the_guests_tsc_aux(backend):
    """rdtscp too: EDX:EAX from the virtual clock, ECX the TSC_AUX MSR the
    guest kernel wrote (under a VMM, its virtual MSR)."""
    body = ("mov ecx, 0xc0000103\nmov eax, 0x1234\nxor edx, edx\nwrmsr\n"
            "rdtscp\nmov [0x5000], eax\nmov [0x5004], edx\nmov [0x5010], ecx\nin al, 0x21\n"
            "rdtscp\nmov [0x5008], eax\nmov [0x500c], edx\n" + A.exit_with(0))
    img = A.build(A.AsmGuest(body=body))
    _, log = _log(backend, img)
    assert _log(backend, img)[1] == log
    first, second, aux = struct.unpack_from("<QQI", log)
    assert second > first and aux == 0x1234
    as_rdtsc = A.build(A.AsmGuest(body=body.replace("rdtscp", "rdtsc")))
    assert (first, second) == _rdtsc_native(as_rdtsc)


RDRAND_GUEST = ("mov ebx, 0xaaaabbbb\nxor eax, eax\nrdrand eax\nmov [0x5000], eax\n"
                "setc [0x5010]\nsetz [0x5011]\nseto [0x5012]\nsets [0x5013]\n"
                "rdseed bx\nmov [0x5004], ebx\nsetc [0x5014]\n" + A.exit_with(0))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_rdrand_and_rdseed_give_the_same_numbers_under_every_run(backend):
    """Not the host's random source: the machine's fixed sequence, valid (CF
    set, ZF, OF and SF cleared), into a 32- or a 16-bit register."""
    img = A.build(A.AsmGuest(body=RDRAND_GUEST))
    _, log = _log(backend, img)
    assert _log(backend, img)[1] == log == _native_log(img)[1]
    assert log[16:21] == bytes([1, 0, 0, 0, 1]) and log[6:8] == b"\xaa\xaa"


# Instructions the CPU model has no implementation of: every back end must end
# them as natively, with the guest's own #UD (a translator that emulated them,
# or took them for a neighbour sharing their opcode bytes, would not).
UD_HANDLER = "mov eax, [esp]\nmov [0x5000], eax\nmov dword ptr [0x5004], 6\n" + A.exit_with(0)


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("insn", ["rdpmc", ".byte 0xf3, 0x0f, 0xc7, 0xf8"])    # rdpmc, rdpid eax
def test_an_instruction_the_cpu_lacks_is_the_guests_ud(backend, insn):
    img = A.build(A.AsmGuest(body=f"xor ecx, ecx\nnop\n{insn}\n" + A.exit_with(1),
                             handlers={6: UD_HANDLER}))
    assert _log(backend, img) == _native_log(img)
    assert _native_log(img)[0] == 0


DEBUG_REGISTERS = ("mov eax, 0x12345678\nmov dr0, eax\nmov ebx, dr0\nmov [0x5000], ebx\n"
                   "xor eax, eax\nmov dr6, eax\nmov dr7, eax\nmov ebx, dr6\nmov [0x5004], ebx\n"
                   "mov ebx, dr7\nmov [0x5008], ebx\nmov ebx, dr5\nmov [0x500c], ebx\n"
                   + A.exit_with(0))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_the_guest_kernels_debug_register_moves_read_back_as_natively(backend):
    """A kernel clearing DR7 at boot, as most do, runs on: the bits the CPU
    keeps set in DR6 and DR7 read back set, and DR5 is DR7 (CR4.DE clear)."""
    _, log = _log(backend, A.build(A.AsmGuest(body=DEBUG_REGISTERS)))
    assert struct.unpack_from("<4I", log) == (0x12345678, 0xFFFF0FF0, 0x400, 0x400)


# CR4.OSFXSR enables SSE; CR0.TS makes the next x87 or SSE instruction raise
# #NM, whose handler clears it (lazy FPU switching); lmsw sets TS again.
FPU_CONTROLS = ("mov eax, cr4\nor eax, 0x200\nmov cr4, eax\n"
                "mov eax, 7\nmovd xmm0, eax\npaddd xmm0, xmm0\nmovd [0x5000], xmm0\n"
                "mov eax, cr0\nor eax, 8\nmov cr0, eax\nfld1\nfstp dword ptr [0x5004]\n"
                "mov eax, cr0\nor eax, 8\nlmsw ax\nmovd xmm1, eax\n"
                "mov eax, cr0\nmov [0x500c], eax\nmov eax, cr4\nmov [0x5010], eax\n"
                + A.exit_with(0))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_the_kernels_fpu_and_sse_controls_act_as_natively(backend):
    img = A.build(A.AsmGuest(body=FPU_CONTROLS,
                             handlers={7: "inc dword ptr [0x5008]\nclts\niretd\n"}))
    _, log = _log(backend, img)
    assert log[:12] == bytes.fromhex("0e000000" "0000803f" "02000000")    # 14, 1.0f, two #NM
    assert log == _native_log(img)[1]



# smsw into a 32-bit register: the SDM leaves the upper half undefined and the
# CPU model keeps it, so a VMM that answers smsw itself (hw's read shadow, bt's
# callout) must keep it too.  The low half is the guest's CR0 under those;
# trap (and a plug-in like it) runs smsw unseen and shows the real CR0, its
# documented hole.
SMSW = ("mov eax, 0xdead0000\nsmsw eax\nmov [0x5000], eax\n"
        "mov eax, 0xbeef0000\nsmsw ax\nmov [0x5004], eax\n"
        "mov dword ptr [0x5008], 0xfeedface\nsmsw word ptr [0x5008]\n")


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("ring", [0, 3])
def test_smsw_writes_the_low_half_of_its_register_as_natively(backend, ring):
    if ring == 0:
        guest = A.AsmGuest(body=SMSW + A.exit_with(0))
    else:
        guest = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3=SMSW + "int 0x81\n",
                           handlers={0x81: A.exit_with(0)}, user_vectors=(0x81,))
    img = A.build(guest)
    got = struct.unpack_from("<3I", _log(backend, img)[1])
    want = struct.unpack_from("<3I", _native_log(img)[1])
    assert [w >> 16 for w in want] == [0xDEAD, 0xBEEF, 0xFEED]
    assert [w >> 16 for w in got] == [w >> 16 for w in want]
    if backend in ("hw", "hw-npt", "bt"):          # they answer smsw with the guest's CR0
        assert got == want

# -- loads the VMM performs for a deprivileged kernel --------------------------------
# At real ring 1 the kernel's SS selector (RPL 0) is refused, and ltr and lldt are
# privileged, so trap and bt load them for it: first making the CPU's checks, so
# that a selector the CPU would refuse is the guest's fault, with the CPU's vector
# and error code, and not a load (or the end of the run).  The handlers count the
# fault, keep its error code and step over the faulting instruction.
def _faults_skipping(n):
    def handler(count, code):
        return (f"inc dword ptr [{count:#x}]\npop eax\nmov [{code:#x}], eax\n"
                f"add dword ptr [esp], {n}\niretd\n")
    return {x86.GP: handler(0x5000, 0x5004), x86.SS: handler(0x5008, 0x500c),
            x86.NP: handler(0x5008, 0x500c)}


KDATA_ACCESS = A.GDT + (A.KDATA & ~7) + 5        # the kernel data descriptor's access byte
SS_LOADS = {
    "null": (0, (1, 0, 0, 0)),
    "past the GDT limit": (0x7F8, (1, 0x7F8, 0, 0)),
    "RPL not the CPL": (A.KDATA | 3, (1, A.KDATA, 0, 0)),
    "a code segment": (A.KCODE, (1, A.KCODE, 0, 0)),
    "DPL not the CPL": (A.UDATA & ~3, (1, A.UDATA & ~3, 0, 0)),
    "not present": (A.KDATA, (0, 0, 1, A.KDATA)),
}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", SS_LOADS)
def test_a_stack_segment_the_cpu_refuses_is_the_guests_fault(backend, case):
    selector, want = SS_LOADS[case]
    absent = case == "not present"
    body = (f"and byte ptr [{KDATA_ACCESS:#x}], 0x7f\n" if absent else "") \
        + f"mov ax, {selector:#x}\nmov ss, ax\n" \
        + (f"or byte ptr [{KDATA_ACCESS:#x}], 0x80\n" if absent else "") + A.exit_with(0)
    img = A.build(A.AsmGuest(body=body, handlers=_faults_skipping(3)))     # 66 8e d0: 3 bytes
    _as_natively(backend, img, "<4I", want)


# pop ss (32-bit, then 16-bit) and lss: ESP as natively.  (SS itself is not
# logged: trap's `mov eax, ss` shows RPL 1, its documented hole.)
STACK_SWITCHES = (f"push {A.KDATA}\n.byte 0x17\nmov [0x5010], esp\n"
                  f"push {A.KDATA}\n.byte 0x66, 0x17\nmov [0x5014], esp\n"
                  f"mov dword ptr [0x6f00], 0x8fff0\nmov word ptr [0x6f04], {A.KDATA}\n"
                  f"lss esp, [0x6f00]\nmov [0x5018], esp\nmov esp, {A.STACK0:#x}\n"
                  f"push {A.KCODE}\n.byte 0x17\n" + A.exit_with(0))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_pop_ss_and_lss_move_esp_as_natively(backend):
    img = A.build(A.AsmGuest(body=STACK_SWITCHES, handlers=_faults_skipping(1)))
    # The last pop ss, of a code segment, is #GP(selector) with ESP unchanged.
    esp = (A.STACK0, A.STACK0 - 2, 0x8FFF0)
    _as_natively(backend, img, "<2I8x3I", (1, A.KCODE, *esp))


# User code's IF and IOPL, as the kernel's iret gives them: a user given IOPL
# 3 runs cli, sti and popf itself and sees its flags with pushf; a frame with
# IF clear leaves interrupts off in user code.  Under trap and bt the kernel's
# IF and IOPL are virtual, but the user's are the real ones (trap and bt
# showed IOPL 0 and IF set, and took #GP at the user's cli).  Each case logs
# what user code's pushf shows and the EFLAGS of its next system call's frame.
USER_SYSCALL = "mov eax, [esp + 8]\nmov [0x5010], eax\niretd\n"
USER_FLAGS = {
    "IOPL 3, cli and sti": (0x3202, "cli\npushfd\npop dword ptr [0x5000]\nint 0x80\nsti\n"
                            "pushfd\npop dword ptr [0x5004]\n"),
    "IOPL 3, popf clears IF": (0x3202, "push 0x3002\npopfd\npushfd\npop dword ptr [0x5000]\n"
                               "int 0x80\n"),
    "IOPL 0, a frame with IF clear": (0x2, "pushfd\npop dword ptr [0x5000]\nint 0x80\n"
                                      "push 0x3202\npopfd\npushfd\npop dword ptr [0x5004]\n"),
    "IOPL 1": (0x1202, "pushfd\npop dword ptr [0x5000]\nint 0x80\n"),
}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", USER_FLAGS)
def test_user_code_runs_with_the_if_and_iopl_its_kernel_gave_it(backend, case):
    eflags, ring3 = USER_FLAGS[case]
    img = A.build(A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3, eflags=eflags),
                             ring3=ring3 + "int 0x81\n", user_vectors=(0x80, 0x81),
                             handlers={0x80: USER_SYSCALL, 0x81: A.exit_with(0)}))
    shown = eflags & (x86.IF | x86.IOPL_MASK)
    first = struct.unpack_from("<I", _native_log(img)[1])[0]
    assert first & (x86.IF | x86.IOPL_MASK) == (shown & ~x86.IF if "cli" in case or "popf" in case
                                                 else shown)
    assert _log(backend, img) == _native_log(img)


# ... and after a far call through a call gate and the kernel's retf back,
# which keeps EFLAGS: the user's IF (cleared by its own cli under IOPL 3) is
# the kernel's while it runs, and the user's again after, with what the
# kernel did to it (an sti).
def _call_gate_guest(kernel):
    lo, hi = struct.unpack("<II", x86.make_gate(A.KCODE, A.HANDLERS + 0x100, 0xC, 3))
    grow = (f"mov dword ptr [{A.GDT + 0x40:#x}], {lo:#x}\n"
            f"mov dword ptr [{A.GDT + 0x44:#x}], {hi:#x}\n"
            f"mov word ptr [{A.GDT + 0xF00:#x}], 0x47\nlgdt [{A.GDT + 0xF00:#x}]\n")
    ring3 = "cli\nlcall 0x43:0\npushfd\npop dword ptr [0x5000]\nint 0x81\n"
    return A.AsmGuest(body=grow + A.iret_to(3, A.RING3, A.STACK3, eflags=0x3202),
                      ring3=ring3, user_vectors=(0x81,),
                      handlers={1: kernel + "retf\n", 0x81: A.exit_with(0)})


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("kernel, user_if", [("", 0), ("sti\n", x86.IF)],
                         ids=["kernel leaves IF", "kernel sti"])
def test_a_call_gate_and_its_retf_keep_the_users_flags(backend, kernel, user_if):
    img = A.build(_call_gate_guest(kernel))
    _as_natively(backend, img, "<I", (user_if | x86.IOPL_MASK | 0x2,))


# fwait with CR0.TS set raises #NM only if the kernel set CR0.MP too.  Under
# shadow paging the real CR0 had MP set whatever the guest's (the VMM's
# choice, for a lazy FPU switch of its own that it never makes), so trap, hw
# and bt raised an #NM the guest could not expect.
NM_COUNTS = {7: "inc dword ptr [0x5000]\nclts\niretd\n"}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("mp, nm", [(0, 0), (x86.CR0_MP, 1)], ids=["MP clear", "MP set"])
def test_fwait_with_ts_set_faults_only_when_the_kernel_set_mp(backend, mp, nm):
    body = (f"mov eax, cr0\nand eax, {~x86.CR0_MP & 0xFFFFFFFF:#x}\nor eax, {mp | x86.CR0_TS}\n"
            "mov cr0, eax\nfwait\nsmsw eax\nmov [0x5004], eax\n" + A.exit_with(0))
    img = A.build(A.AsmGuest(body=body, handlers=NM_COUNTS))
    _as_natively(backend, img, "<I", (nm,))


TR_LDTR_LOADS = {
    "ltr null": ("ltr", 0, (0, 0)),          # a null TR in the CPU model (the SDM: #GP(0))
    "ltr past the GDT limit": ("ltr", 0x7F8, (1, 0x7F8)),
    "ltr of a data segment": ("ltr", A.KDATA, (1, A.KDATA)),
    "ltr of the busy TSS": ("ltr", A.TSS_SEL, (1, A.TSS_SEL)),
    "lldt of a data segment": ("lldt", A.KDATA, (1, A.KDATA)),
    "lldt null": ("lldt", 0, (0, 0)),
}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", TR_LDTR_LOADS)
def test_ltr_and_lldt_of_a_selector_the_cpu_refuses_are_the_guests_gp(backend, case):
    insn, selector, want = TR_LDTR_LOADS[case]
    body = f"mov ax, {selector:#x}\n{insn} ax\n" + A.exit_with(0)       # ltr/lldt ax: 3 bytes
    img = A.build(A.AsmGuest(body=body, handlers=_faults_skipping(3)))
    _as_natively(backend, img, "<2I", want)


# A privileged instruction whose memory operand is not mapped faults with #PF
# before it does anything, as natively: under trap and bt the VMM finds the
# fault while performing it and delivers it (trap ended the run with a Python
# traceback), under hw the CPU runs it and faults (VT-x takes the operand's
# fault before the exit).
UNMAPPED = 0x700000
OPERAND_FAULTS = {"lgdt": ("lgdt [0x700000]", 0), "lidt": ("lidt [0x700000]", 0),
                  "lmsw": ("lmsw word ptr [0x700000]", 0),
                  "smsw": ("smsw word ptr [0x700000]", x86.PF_W),
                  "lss": ("lss esp, [0x700000]", 0)}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("insn", OPERAND_FAULTS)
def test_a_privileged_instruction_with_an_unmapped_operand_is_a_page_fault(backend, insn):
    text, error = OPERAND_FAULTS[insn]
    pf = "pop eax\nmov [0x5000], eax\nmov eax, cr2\nmov [0x5004], eax\n" + A.exit_with(0)
    img = A.build(A.AsmGuest(paging=True, unmapped=(UNMAPPED,), body=text + "\n" + A.exit_with(1),
                             handlers={x86.PF: pf}))
    assert _native_log(img)[0] == 0                 # the #PF handler's exit status
    _as_natively(backend, img, "<2I", (error, UNMAPPED))


# The kernel's way out to user code with a frame the CPU refuses: the fault is
# the kernel's, at its iret or retf, with the CPU's error code.  (bt has the
# CPU perform that iret from a copy in the translation cache, where the fault
# had no guest instruction to belong to and ended the run.)
def _frame(cs, ss=A.UDATA, far_return=False):
    words = [ss, A.STACK3] + ([] if far_return else [0x202]) + [cs, A.RING3]
    return "".join(f"push {w:#x}\n" for w in words) + ("retf\n" if far_return else "iretd\n")


UCODE_ACCESS = A.GDT + (A.UCODE & ~7) + 5
REFUSED_RETURNS = {
    "iret to CS past the GDT limit": (_frame(0x7FB), (1, 0x7F8, 0, 0)),
    "iret with a kernel SS": (_frame(A.UCODE, ss=A.KDATA), (1, A.KDATA, 0, 0)),
    "iret to a CS not present": (f"and byte ptr [{UCODE_ACCESS:#x}], 0x7f\n" + _frame(A.UCODE),
                                 (0, 0, 1, A.UCODE & ~3)),
    "retf to CS past the GDT limit": (_frame(0x7FB, far_return=True), (1, 0x7F8, 0, 0)),
}


# The kernel's return to its own ring with a CS the CPU refuses: #GP or #NP
# at the iret or retf, with the CPU's error code.  Under trap and bt the
# kernel's RPL-0 return is the VMM's to perform, and it loaded any selector
# it found a descriptor for: a null or unknown one ended the run, a data
# segment or the TSS became CS.
def _kernel_frame(cs, far_return=False):
    words = ([] if far_return else [0x202]) + [cs, 0x100000]
    return "".join(f"push {w:#x}\n" for w in words) + ("retf\n" if far_return else "iretd\n")


# A second kernel code descriptor at index 8 (the GDT grown to hold it), not
# present: the kernel's own code segment must stay present for its handlers.
ABSENT_CODE = 0x40
_ABSENT_LO, _ABSENT_HI = struct.unpack("<II", bytes.fromhex("ffff0000009acf00"))
ABSENT = (f"mov dword ptr [{A.GDT + ABSENT_CODE:#x}], {_ABSENT_LO:#x}\n"
          f"mov dword ptr [{A.GDT + ABSENT_CODE + 4:#x}], {_ABSENT_HI & ~x86.DESC_P:#x}\n"
          f"mov word ptr [{A.GDT + 0xF00:#x}], 0x47\nlgdt [{A.GDT + 0xF00:#x}]\n")
REFUSED_KERNEL_RETURNS = {
    "iret to a null CS": (_kernel_frame(0), (1, 0, 0, 0)),
    "retf to a null CS": (_kernel_frame(0, far_return=True), (1, 0, 0, 0)),
    "iret to CS past the GDT limit": (_kernel_frame(0x7F8), (1, 0x7F8, 0, 0)),
    "retf to the kernel's data segment": (_kernel_frame(A.KDATA, far_return=True),
                                          (1, A.KDATA, 0, 0)),
    "iret to the TSS": (_kernel_frame(A.TSS_SEL), (1, A.TSS_SEL & ~3, 0, 0)),
    "retf to user code with RPL 0": (_kernel_frame(A.UCODE & ~3, far_return=True),
                                     (1, A.UCODE & ~3, 0, 0)),
    "iret to a CS not present": (ABSENT + _kernel_frame(ABSENT_CODE), (0, 0, 1, ABSENT_CODE)),
}


# A far jmp or call from the kernel to a code segment the CPU refuses.  bt
# performs the kernel's far transfers itself, and checked only that the
# target was a present code segment: a jump to user code (DPL 3) went there.
def _far(opcode, selector):
    raw = bytes([opcode]) + struct.pack("<IH", 0x100000, selector)     # ptr16:32, 7 bytes
    return ".byte " + ", ".join(f"{b:#x}" for b in raw) + "\n"


REFUSED_FAR_TRANSFERS = {
    "jmp to a null CS": (_far(0xEA, 0), (1, 0, 0, 0)),
    "call to the kernel's data segment": (_far(0x9A, A.KDATA), (1, A.KDATA, 0, 0)),
    "jmp to user code": (_far(0xEA, A.UCODE & ~3), (1, A.UCODE & ~3, 0, 0)),
    "call to user code": (_far(0x9A, A.UCODE), (1, A.UCODE & ~3, 0, 0)),
    "jmp to a CS not present": (ABSENT + _far(0xEA, ABSENT_CODE), (0, 0, 1, ABSENT_CODE)),
}


# Every refused transfer above, with the length of the instruction its
# handler skips (iret and retf 1 byte, a direct far jmp or call 7).
REFUSED_TRANSFERS = {**{k: (1,) + v for k, v in REFUSED_RETURNS.items()},
                     **{k: (1,) + v for k, v in REFUSED_KERNEL_RETURNS.items()},
                     **{k: (7,) + v for k, v in REFUSED_FAR_TRANSFERS.items()}}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", REFUSED_TRANSFERS)
def test_a_transfer_the_cpu_refuses_is_the_kernels_fault(backend, case):
    length, code, want = REFUSED_TRANSFERS[case]
    img = A.build(A.AsmGuest(body=code + A.exit_with(0), handlers=_faults_skipping(length)))
    _as_natively(backend, img, "<4I", want)


# -- the guest's GDT, rewritten in place ------------------------------------------------
# A descriptor the guest rewrites with plain stores, after it was loaded once, is
# what its next load sees (a segment register already loaded keeps its copy, on
# the hardware too).  trap and bt give the CPU a shadow GDT; they watch the
# guest's GDT pages and derive a written page's entries again at their next load.
EXTRA = A.GDT + 0x40                       # an entry past asmguest's own, for FS


def _gdt_rewrite(rewrite):
    """Kernel code: entry 0x40 a flat data segment, loaded into FS and read
    through; then (with `rewrite`) its base set to 0x1000 by a store, FS
    loaded again and read through at the same offset."""
    def load_and_read(at):
        return f"mov ax, 0x40\nmov fs, ax\nmov eax, fs:[0x5000]\nmov [{at:#x}], eax\n"
    body = (f"mov dword ptr [0x6000], 0x600d\nmov dword ptr [0x5000], 0x5000\n"
            f"mov dword ptr [{EXTRA:#x}], 0x0000ffff\nmov dword ptr [{EXTRA + 4:#x}], 0x00cf9200\n"
            f"mov word ptr [{A.GDT + 0xF00:#x}], 0x47\nlgdt [{A.GDT + 0xF00:#x}]\n"
            + load_and_read(0x5010))
    if rewrite:
        body += f"mov word ptr [{EXTRA + 2:#x}], 0x1000\n" + load_and_read(0x5014)
    return A.build(A.AsmGuest(body=body + A.exit_with(0)))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_a_gdt_entry_rewritten_in_place_is_what_the_next_load_sees(backend):
    img = _gdt_rewrite(True)
    _as_natively(backend, img, "<2I", (0x5000, 0x600D), at=0x10)


SHADOW_GDT = [b for b in NATIVE_IMAGE if issubclass(B.load(b), RingCompressedVmm)]


@pytest.mark.parametrize("backend", SHADOW_GDT)
def test_a_gdt_rewrite_costs_a_write_fault_and_a_hidden_np_on_the_next_load(backend):
    def counters(img):
        with Machine(B.create(backend)) as m:
            m.boot(BootSpec(img))
            assert m.run().ok
            return m.counters
    plain, rewritten = counters(_gdt_rewrite(False)), counters(_gdt_rewrite(True))
    assert rewritten["exit.pf.hidden"] - plain["exit.pf.hidden"] == 1
    assert rewritten["exit.np.hidden"] - plain["exit.np.hidden"] == 1


# xsetbv, which a kernel using AVX runs at boot, is privileged: at real ring 1 the
# VMM performs it on XCR0 (the CPU model's own checks first), and xgetbv, which is
# not, reads it back at any ring.  (trap reflected the kernel's xsetbv as #GP; bt
# gave #GP for both.)
XSETBV = {       # eax, ecx, CR4.OSXSAVE -> (#GP, #UD, XCR0 read back by xgetbv)
    "x87 and SSE": (3, 0, True, (0, 0, 3)),
    "x87, SSE and AVX": (7, 0, True, (0, 0, 7)),
    "no x87": (2, 0, True, (1, 0, 1)),
    "MPX, which the CPU lacks": (0x19, 0, True, (1, 0, 1)),
    "XCR1": (3, 1, True, (1, 0, 1)),
    "without CR4.OSXSAVE": (3, 0, False, (0, 2, 0)),
}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", XSETBV)
def test_xsetbv_sets_xcr0_as_natively(backend, case):
    eax, ecx, osxsave, want = XSETBV[case]
    handlers = {x86.GP: "inc dword ptr [0x5000]\nadd esp, 4\nadd dword ptr [esp], 3\niretd\n",
                x86.UD: "inc dword ptr [0x5004]\nadd dword ptr [esp], 3\niretd\n"}
    body = ("mov eax, cr4\nor eax, 0x40000\nmov cr4, eax\nmov eax, 1\nxor ecx, ecx\n"
            "xor edx, edx\nxsetbv\n" if osxsave else "") \
        + f"mov eax, {eax:#x}\nmov ecx, {ecx}\nxor edx, edx\nxsetbv\n" \
        + "xor eax, eax\nxor ecx, ecx\nxgetbv\nmov [0x5008], eax\n" + A.exit_with(0)
    img = A.build(A.AsmGuest(body=body, handlers=handlers))        # xsetbv, xgetbv: 3 bytes
    _as_natively(backend, img, "<3I", want)


# An MSR the kernel reads before it ever writes it holds the CPU model's value
# from reset (PAT, MTRRcap, the microcode revision), under a VMM too; one it wrote
# reads back as written.  (The VMMs answered 0.)
MSR_READS = ("mov ecx, 0x277\nrdmsr\nmov [0x5000], eax\nmov [0x5004], edx\n"
             "mov ecx, 0xfe\nrdmsr\nmov [0x5008], eax\n"
             "mov ecx, 0x8b\nrdmsr\nmov [0x500c], edx\n"
             "mov ecx, 0x277\nmov eax, 0x06060606\nmov edx, 0x06060606\nwrmsr\n"
             "xor eax, eax\nxor edx, edx\nrdmsr\nmov [0x5010], eax\nmov [0x5014], edx\n"
             + A.exit_with(0))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_an_msr_never_written_reads_as_the_cpu_models(backend):
    img = A.build(A.AsmGuest(body=MSR_READS))
    _as_natively(backend, img, "<6I", (0x70406, 0x70406, 0x508, 1, 0x06060606, 0x06060606))


# An unmasked x87 error (a zero divide, ZM clear in the control word) is #MF at
# the next FPU instruction only with CR0.NE set: the guest's NE, not the VMM's.
X87_ERROR = ("fninit\nmov word ptr [0x5010], 0x37b\nfldcw [0x5010]\n"
             "fld1\nfldz\nfdivp st(1), st\nfwait\n")


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_an_x87_error_is_mf_only_when_the_kernel_set_cr0_ne(backend):
    body = (X87_ERROR + "mov eax, cr0\nor eax, 0x20\nmov cr0, eax\n" + X87_ERROR
            + A.exit_with(0))
    img = A.build(A.AsmGuest(body=body, handlers={16: "inc dword ptr [0x5000]\nfnclex\niretd\n"}))
    _, log = _log(backend, img)
    assert log[:4] == b"\x01\0\0\0" and log == _native_log(img)[1]

@lru_cache(maxsize=None)
def _rdtsc_native(img):
    m = Machine(B.create("native"))
    m.boot(BootSpec(img))
    assert m.run().ok
    return (m.mem.u32(0x5000) | m.mem.u32(0x5004) << 32, m.mem.u32(0x5008) | m.mem.u32(0x500c) << 32)


# -- error handling -------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_raises_usage_error(backend):
    with pytest.raises(UsageError):
        virtlab.run("no.such.workload", backend, model=False)
    for scale in (0, -1, "3", 10**9):
        with pytest.raises(UsageError):
            virtlab.run("nano.syscall", backend, scale=scale, model=False)


def test_unknown_backend_raises_usage_error():
    with pytest.raises(UsageError):
        virtlab.run("nano.syscall", "no-such-backend", model=False)


def image_file(tmp_path, body, name, **kw):
    img = A.build(A.AsmGuest(body=body, **kw))
    path = tmp_path / f"{name}.img"
    path.write_bytes(img)
    return path, img


def address_of(img, code_bytes):
    offset = img.index(code_bytes)
    assert img.count(code_bytes) == 1
    return A.BASE + offset


NO_IDT = "mov dword ptr [0x6000], 0\nmov dword ptr [0x6004], 0\nlidt [0x6000]\n"


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("crash", ["ud2-no-idt", "ud2-no-gate", "divide-no-idt"])
def test_crashing_guest_fails_with_a_reason_naming_its_address(tmp_path, backend, crash):
    body, marker = {
        "ud2-no-idt": (NO_IDT + "nop\nud2\n", b"\x90\x0f\x0b"),
        "ud2-no-gate": ("nop\nud2\n", b"\x90\x0f\x0b"),        # IDT without gates: triple fault
        "divide-no-idt": (NO_IDT + "xor ecx, ecx\ndiv ecx\n", b"\x31\xc9\xf7\xf1"),
    }[crash]
    path, img = image_file(tmp_path, body + A.exit_with(0), crash)
    r = virtlab.run(image=str(path), backend=backend, timeout=120, model=False)
    assert r.ok is False and r.exit_status is None
    where = address_of(img, marker) + (1 if marker.startswith(b"\x90") else 2)
    assert f"{where:#010x}" in r.reason, r.reason
    assert r.matches_native is False


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_hanging_guest_fails_on_the_time_budget(tmp_path, backend):
    path, img = image_file(tmp_path, "nop\nhang:\njmp hang\n", "hang")
    r = harness.run_guest(harness.resolve(image=str(path)), backend, timeout=0.3)
    assert r.ok is False
    assert re.search(r"host-time budget of 0.3 s exceeded at 0x[0-9a-f]{8}", r.reason), r.reason


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("loop", ["in al, 0x21", "mov eax, cr0\nmov cr0, eax"])
def test_exiting_loop_fails_on_the_exit_budget(tmp_path, backend, loop):
    """max_exits bounds VMM entries: port accesses under every back end, and
    intercepted instructions (a CR0 write exits under every VMM)."""
    path, _ = image_file(tmp_path, f"spin:\n{loop}\njmp spin\n", "spin" + str(len(loop)))
    # Where the loop exits, the exit budget must be what stops it however
    # slow the host is today: the time budget is then far out of reach.
    nothing_exits = "cr0" in loop and backend == "native"
    r = harness.run_guest(harness.resolve(image=str(path)), backend,
                          timeout=1.0 if nothing_exits else 120.0, max_exits=200)
    assert r.ok is False
    if "cr0" in loop and backend == "native":
        assert "host-time budget" in r.reason      # nothing exits natively
    else:
        assert "exit budget of 200 exceeded at 0x" in r.reason, r.reason


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_an_event_in_virtual_8086_code_reaches_the_kernel_as_natively(backend):
    """The kernel irets into a virtual-8086 task whose `int` (IOPL 0) raises
    #GP: the handler at ring 0 gets the task's frame (its data segments
    after SS) with DS..GS null, as natively (tests/test_vm86.py runs a whole
    monitor)."""
    task = bytes([0xB8, 0x34, 0x12, 0xCD, 0x81, 0xF4])     # mov ax, 0x1234; int 0x81; hlt
    body = ("".join(f"mov byte ptr [{0x7000 + i}], {b}\n" for i, b in enumerate(task))
            + "push 0x40\npush 0x30\npush 0x20\npush 0x10\n"   # GS, FS, DS, ES
            + "push 0x0600\npush 0x0100\n"                # SS:SP
            + "push 0x20202\n"                            # EFLAGS: VM, IF
            + "push 0x0700\npush 0\niretd\n")             # CS:IP = linear 0x7000
    gp = ("mov ebx, ds\nmov ss:[0x5000], ebx\nmov bx, 0x10\nmov ds, bx\n"
          + "".join(f"mov ebx, [esp + {4 * i}]\nmov [{0x5004 + 4 * i:#x}], ebx\n" for i in range(7))
          + A.exit_with(13))
    img = A.build(A.AsmGuest(body=body, handlers={13: gp}))
    want = _native_log(img)
    assert want[0] == 13 and struct.unpack_from("<8I", want[1]) == (
        0, 0, 3, 0x700, 0x20202, 0x100, 0x600, 0x10)
    assert _log(backend, img) == want


# PAE paging, turned on by the guest kernel: linear 0-2 MiB through a page table
# of 4 KiB pages (0x20000 left out), 2-4 MiB as one 2 MiB page; then a system
# call from user code and a page fault, both delivered through the PAE tables.
_PAE_BODY = pae_guest.tables_on("mov dword ptr [0x62000 + 0x20 * 8], 0")


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_pae_paging_is_native_or_refused_with_its_reason(backend):
    """The CPU model advertises PAE (CPUID.1:EDX bit 6) and pages through PAE
    tables, so every event the platform delivers walks them too.  A back end
    either runs the guest as native does (the frames pushed through the PAE
    tables, the fault's CR2 and error code), or ends the run saying PAE is
    what it does not support."""
    ring3 = "int 0x80\nmov eax, [0x1ff000]\nmov [0x5004], eax\nmov eax, [0x20010]\n"
    handlers = {0x80: "mov dword ptr [0x5000], 0x80808080\niretd\n",
                14: "pop ebx\nmov [0x5008], ebx\nmov eax, cr2\nmov [0x500c], eax\n"
                    "mov eax, [0x62000 + 0x1ff * 8]\nmov [0x5010], eax\n" + A.exit_with(14)}
    img = A.build(A.AsmGuest(body=_PAE_BODY + A.iret_to(3, A.RING3, A.STACK3), ring3=ring3,
                             handlers=handlers))
    want = _native_log(img)
    assert want[0] == 14 and want[1][:16] == struct.pack("<IIII", 0x80808080, 0, 4, 0x20010)
    assert struct.unpack_from("<I", want[1], 16)[0] & x86.PTE_A    # the CPU's own walk
    with Machine(B.create(backend)) as m:
        m.boot(BootSpec(img))
        out = m.run()
        got = out.exit_status, m.mem.read(0x5000, 32)
    if out.ok:
        assert got == want
    else:
        assert "PAE" in out.reason, out.reason


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("gtype, named", [(x86.GATE_TASK, "task gate"), (0x6, "16-bit interrupt gate")])
def test_a_gate_the_platform_does_not_take_ends_the_run_with_its_reason(backend, gtype, named):
    """A task gate (a hardware task switch) or a 16-bit gate in the IDT: the
    CPU would take it, virtlab does not, so the run ends naming it, rather
    than the guest getting a #GP its CPU would never raise."""
    lo, hi = struct.unpack("<II", x86.make_gate(A.TSS_SEL, 0, gtype, 0))
    at = A.IDT + 0x80 * 8
    body = f"mov dword ptr [{at:#x}], {lo:#x}\nmov dword ptr [{at + 4:#x}], {hi:#x}\nint 0x80\n"
    img = A.build(A.AsmGuest(body=body + A.exit_with(0), handlers={13: A.exit_with(13)}))
    with Machine(B.create(backend)) as m:
        m.boot(BootSpec(img))
        out = m.run()
    assert not out.ok and named in out.reason and "not supported" in out.reason, out.reason


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("selector", [A.TSS_SEL, A.KDATA, 0x48])
def test_a_far_jump_to_no_code_segment_is_gp_with_the_selector(backend, selector):
    """To the busy TSS (the one `ltr` loaded), a data segment, or beyond the
    GDT: #GP(selector), not a task switch or a code segment made of the
    descriptor."""
    gp = "mov eax, [esp]\nmov [0x5000], eax\n" + A.exit_with(13)
    img = A.build(A.AsmGuest(body=f"ljmp {selector:#x}:0\n" + A.exit_with(0), handlers={13: gp}))
    want = _native_log(img)
    assert want[0] == 13 and struct.unpack_from("<I", want[1])[0] == selector
    assert _log(backend, img) == want


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_a_far_jump_to_an_available_tss_switches_tasks_or_says_why_not(backend):
    """A hardware task switch: the CPU model's own under native; a back end
    either does what native does or ends the run naming the task switch."""
    lo, hi = struct.unpack("<II", x86.make_segment(0x60000, 0x67, 0x89, 0x0))
    body = (f"mov dword ptr [{A.GDT + 0x40:#x}], {lo:#x}\n"
            f"mov dword ptr [{A.GDT + 0x44:#x}], {hi:#x}\n"
            f"mov word ptr [{A.GDT + 0xF00:#x}], 0x47\nlgdt [{A.GDT + 0xF00:#x}]\n"
            # The new task's state: EIP at the code of "vector 0x90", flat segments.
            + "".join(f"mov dword ptr [{0x60000 + off:#x}], {value:#x}\n" for off, value in (
                (0x20, A.HANDLERS + 0x90 * 0x100), (0x24, 0x2), (0x38, 0x9E000), (0x48, A.KDATA),
                (0x4C, A.KCODE), (0x50, A.KDATA), (0x54, A.KDATA), (0x58, A.KDATA),
                (0x5C, A.KDATA)))
            + "ljmp 0x40:0\n" + A.exit_with(1))
    gp = "mov eax, [esp]\nmov [0x5000], eax\n" + A.exit_with(13)
    img = A.build(A.AsmGuest(body=body, handlers={13: gp, 0x90: A.exit_with(7)}))
    with Machine(B.create("native")) as m:
        m.boot(BootSpec(img))
        want = m.run(), m.mem.read(0x5000, 4)
    assert want[0].ok and want[0].exit_status == 7       # natively it ran the new task
    with Machine(B.create(backend)) as m:
        m.boot(BootSpec(img))
        out = m.run()
        if out.ok:
            assert (out.exit_status, m.mem.read(0x5000, 4)) == (want[0].exit_status, want[1])
        else:
            assert "task switch" in out.reason and "not supported" in out.reason, out.reason


# -- corners a differential sweep found ---------------------------------------------------
# Each guest's handlers log the frame their exception left (vector, error code,
# EIP, CS, EFLAGS, and CR2) and end the run: every back end must log what
# native logs.
def _frame_logger(vector):
    code = f"pop dword ptr [0x5004]\n" if vector in x86.ERROR_CODE_VECTORS else ""
    return (f"mov dword ptr [0x5000], {vector}\n" + code
            + "mov eax, [esp]\nmov [0x5008], eax\nmov eax, [esp+4]\nmov [0x500c], eax\n"
            "mov eax, [esp+8]\nmov [0x5010], eax\nmov eax, cr2\nmov [0x501c], eax\n"
            + A.exit_with(vector))


LOGGED = {v: _frame_logger(v) for v in (x86.DB, x86.UD, x86.DF_VEC, x86.NP, x86.GP, x86.PF)}
CODE_PAGE = 0x300000
CODE_PTE = A.PGTAB + (CODE_PAGE >> 12) * 4
# A function `mov eax, 0x1234; ret` written to CODE_PAGE and called once.
_CALLED_ONCE = (f"mov dword ptr [{CODE_PAGE:#x}], 0x001234b8\n"
                f"mov word ptr [{CODE_PAGE + 4:#x}], 0xc300\nmov ebx, {CODE_PAGE:#x}\ncall ebx\n")
SWEEP_CORNERS = {
    # bt delivered INT1 for it; the CPU model has no icebp.
    "icebp in the kernel": (".byte 0xf1\n", x86.UD, {}),
    # The VMMs ended the run ("cannot emulate") for moves the CPU refuses.
    "mov from cr1": (".byte 0x0f, 0x20, 0xc8\n", x86.UD, {}),
    "mov to cr5": (".byte 0x0f, 0x22, 0xe8\n", x86.UD, {}),
    "mov from dr4 with CR4.DE set": ("mov eax, cr4\nor eax, 8\nmov cr4, eax\n"
                                     ".byte 0x0f, 0x21, 0xe0\n", x86.UD, {}),
    # A #PF whose delivery fails becomes #DF; CR2 was loaded with the #PF
    # (trap, hw and bt set it only when the #PF itself was delivered).
    "a page fault that becomes a double fault": (
        f"mov dword ptr [{A.IDT + 8 * x86.PF + 4:#x}], 0\nmov eax, [{UNMAPPED:#x}]\n",
        x86.DF_VEC, {"paging": True, "unmapped": (UNMAPPED,)}),
    # bt ran the page's translation after the kernel unmapped it.
    "kernel code unmapped with invlpg": (
        _CALLED_ONCE + f"mov dword ptr [{CODE_PTE:#x}], 0\ninvlpg [{CODE_PAGE:#x}]\ncall ebx\n",
        x86.PF, {"paging": True}),
}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", SWEEP_CORNERS)
def test_a_corner_found_by_the_sweep_is_as_native(backend, case):
    body, vector, options = SWEEP_CORNERS[case]
    img = A.build(A.AsmGuest(body=body + A.exit_with(0), handlers=LOGGED, **options))
    assert _native_log(img)[0] == vector
    _as_natively(backend, img, "<I", (vector,))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_sysenter_cs_reads_back_only_its_selector(backend):
    # The CPU model keeps 16 bits of IA32_SYSENTER_CS; the VMMs kept all 32.
    body = ("mov ecx, 0x174\nmov eax, 0x12345678\nxor edx, edx\nwrmsr\nxor eax, eax\nrdmsr\n"
            "mov [0x5000], eax\n" + A.exit_with(0))
    _as_natively(backend, A.build(A.AsmGuest(body=body)), "<I", (0x5678,))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_code_at_the_guests_ring_1_runs_or_ends_the_run_saying_why(backend):
    # Ring compression runs the guest kernel at ring 1, so code of the
    # guest's own ring 1 has nowhere to run: trap ran it as the kernel, and
    # bt ended with an unrelated reason.
    img = A.build(A.AsmGuest(body=A.iret_to(1, A.RING1, A.STACK1), ring1="int 0x80\n",
                             user_vectors=(0x80,), handlers={0x80: A.exit_with(5)}))
    with Machine(B.create(backend), budget=Budget(max_exits=100_000)) as m:
        m.boot(BootSpec(img))
        out = m.run()
    if issubclass(B.load(backend), RingCompressedVmm):
        assert not out.ok and "code at the guest's ring 1" in out.reason, out.reason
    else:
        assert out.ok and out.exit_status == 5, out.reason


# Single-stepping (EFLAGS.TF) over an instruction a VMM performs: the CPU's #DB
# after it never came, since the instruction completed in the VMM.  The #DB
# handler logs the low half of each EIP it is given.
STEP_LOG = {x86.DB: "push eax\npush ebx\nmov ebx, [0x5000]\nmov eax, [esp+8]\n"
                    "mov [0x5004+ebx*4], ax\ninc dword ptr [0x5000]\npop ebx\npop eax\niretd\n",
            0x80: A.exit_with(0)}
KERNEL_STEPPED = {"mov from cr0": "mov eax, cr0", "mov to cr0": "mov eax, cr0\nmov cr0, eax",
                  "cli and sti": "cli\nsti", "invlpg": "invlpg [0x6000]",
                  "rdmsr": "mov ecx, 0x277\nrdmsr", "clts": "clts", "smsw": "smsw ax"}
USER_STEPPED = {"sgdt": ".byte 0x0f, 0x01, 0x05\n.long 0x6000", "smsw": "smsw eax",
                "str": "str eax", "lar": f"mov ecx, {A.UCODE}\nlar eax, ecx"}


def _stepped_as_natively(backend, guest):
    img = A.build(guest)
    steps = struct.unpack_from("<I", _native_log(img)[1])[0]
    assert steps >= 2                    # the instruction and the nop after it, at least
    _as_natively(backend, img, "<I", (steps,))


@pytest.mark.parametrize("backend", [b for b in NATIVE_IMAGE if b != "bt"])   # bt refuses it
@pytest.mark.parametrize("case", KERNEL_STEPPED)
def test_single_stepping_the_kernel_over_what_the_vmm_performs(backend, case):
    body = ("pushfd\nor dword ptr [esp], 0x100\npopfd\n" + KERNEL_STEPPED[case]
            + "\nnop\npushfd\nand dword ptr [esp], ~0x100\npopfd\n" + A.exit_with(0))
    _stepped_as_natively(backend, A.AsmGuest(body=body, handlers=STEP_LOG))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", USER_STEPPED)
def test_single_stepping_user_code_over_what_the_vmm_intercepts(backend, case):
    _stepped_as_natively(backend, A.AsmGuest(
        body=A.iret_to(3, A.RING3, A.STACK3, eflags=0x302), ring3=USER_STEPPED[case]
        + "\nnop\nint 0x80\n", user_vectors=(0x80,), handlers=STEP_LOG))


# A store to a guest page table that the shadow MMU traces is performed by the
# VMM (the hidden fault's emulated write): the #DB after it is the VMM's too.
_PTE = A.PGTAB + (0x400000 >> 12) * 4           # the PTE of linear 0x400000
_TOUCH = "mov eax, [0x400000]\n"                   # its page table shadowed, and traced
_PTE_STORE = f"mov dword ptr [{_PTE:#x}], 0x400007"


@pytest.mark.parametrize("backend", [b for b in NATIVE_IMAGE if b != "bt"])   # bt refuses it
def test_single_stepping_the_kernel_over_a_traced_page_table_store(backend):
    body = (_TOUCH + "pushfd\nor dword ptr [esp], 0x100\npopfd\n" + _PTE_STORE
            + "\nnop\npushfd\nand dword ptr [esp], ~0x100\npopfd\n" + A.exit_with(0))
    _stepped_as_natively(backend, A.AsmGuest(body=body, paging=True, handlers=STEP_LOG))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_single_stepping_user_code_over_a_traced_page_table_store(backend):
    _stepped_as_natively(backend, A.AsmGuest(
        body=_TOUCH + A.iret_to(3, A.RING3, A.STACK3, eflags=0x302), paging=True,
        ring3=_PTE_STORE + "\nnop\nint 0x80\n", user_vectors=(0x80,), handlers=STEP_LOG))


# SS loaded with an LDT selector while no LDT is loaded: #GP(selector).  trap
# and bt perform the kernel's SS loads, and ended the run (no descriptor).
SS_FROM_THE_LDT = {"mov ss": "mov ax, 0xc\nmov ss, ax\n",
                   "pop ss": "push 0xc\n.byte 0x17\n",
                   "lss": "mov dword ptr [0x6000], 0x9000\nmov word ptr [0x6004], 0xc\n"
                          "lss esp, [0x6000]\n"}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("load", SS_FROM_THE_LDT)
def test_ss_from_an_ldt_that_is_not_loaded_is_a_gp(backend, load):
    log = "mov eax, [esp]\nmov [0x5000], eax\n" + A.exit_with(0)
    img = A.build(A.AsmGuest(body=SS_FROM_THE_LDT[load] + A.exit_with(1),
                             handlers={x86.GP: log}))
    _as_natively(backend, img, "<I", (0xc,))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_a_16_bit_call_gate_pushes_words_as_natively(backend):
    # (The frame's words are checked against the SDM in test_x86_features.)
    from test_x86_features import call_gate16_guest
    _as_natively(backend, A.build(call_gate16_guest()), "<I", (A.STACK0 - 12,))


# Encodings the CPU model runs that capstone does not decode (the hint-NOP
# space, x87 aliases, bsf with an ignored F2) or reads as an instruction the
# model lacks (wbnoinvd, which is wbinvd here): bt made them #UD or #GP, where
# the CPU goes on (decode.cpu_length asks the CPU model what they are).
UNKNOWN_TO_CAPSTONE = ["0f 1a c0", "0f 1b c0", "0f 1e c0", "f3 0f 1e c8", "66 0f 1c c0",
                       "f3 0f 0d 38", "dc d8", "df d8", "f2 0f bc c0", "f3 0f 09"]


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("code", UNKNOWN_TO_CAPSTONE)
def test_an_encoding_capstone_does_not_know_runs_as_the_cpu_runs_it(backend, code):
    raw = ", ".join(f"0x{b}" for b in code.split())
    body = (f"mov ebx, 0x400000\n.byte {raw}\nmov dword ptr [0x5000], 0x77\n"
            f"mov [0x5004], ebx\n" + A.exit_with(0))
    _as_natively(backend, A.build(A.AsmGuest(body=body, handlers={x86.UD: A.exit_with(6)})),
                 "<I", (0x77,))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_an_invalid_instruction_that_ends_a_page_is_a_ud_not_a_fetch_fault(backend):
    # FF FF (FF /7) needs no more bytes to be invalid: the unmapped page after
    # it is never fetched.  bt read on across the page end, and took its #PF.
    at = 0x301000 - 2
    log = "mov eax, [esp]\nmov [0x5000], eax\n" + A.exit_with(0)
    img = A.build(A.AsmGuest(body=f"mov ebx, {at:#x}\njmp ebx\n", paging=True,
                             handlers={x86.UD: log, x86.PF: A.exit_with(14)},
                             unmapped=(0x301000,), data={at: b"\xff\xff"}))
    _as_natively(backend, img, "<I", (at,))


# wrmsr, then rdmsr, of an MSR the CPU model lacks (0x300004), of a read-only
# one (MTRRcap), of one it keeps 16 bits of (SYSENTER_CS) and of one it keeps
# whole (PAT): the VMMs read back what native does (they kept every write).
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("msr", [0x300004, 0xFE, 0x174, 0x277])
def test_an_msr_reads_back_what_the_cpu_model_kept(backend, msr):
    body = (f"mov ecx, {msr:#x}\nmov eax, 0x06060606\nmov edx, 0x606\nwrmsr\n"
            f"xor eax, eax\nxor edx, edx\nrdmsr\nmov [0x5000], eax\nmov [0x5004], edx\n"
            + A.exit_with(0))
    img = A.build(A.AsmGuest(body=body))
    assert _log(backend, img) == _native_log(img)


# A LOCK prefix on an instruction that cannot be locked: the CPU model ignores
# it (docs/unicorn.md, item 31), where capstone refuses to decode the whole:
# trap reflected a #GP for the privileged ones, and bt ended the run.
LOCKED = ["f0 fa", "f0 fb", "f0 0f 20 c0", "f0 0f 06", "f0 0f 32"]


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("code", LOCKED)
def test_a_lock_prefix_the_cpu_model_ignores_is_ignored(backend, code):
    raw = ", ".join(f"0x{b}" for b in code.split())
    body = (f"mov ecx, 0x10\n.byte {raw}\nmov dword ptr [0x5000], 0x77\n" + A.exit_with(0))
    _as_natively(backend, A.build(A.AsmGuest(body=body, handlers={x86.UD: A.exit_with(6),
                                                                   x86.GP: A.exit_with(13)})),
                 "<I", (0x77,))


# 0F 01 encodings this CPU has no instruction for (monitor, vmcall, rdpkru with
# CR4.PKE clear): #UD.  bt makes every 0F 01 of its kernel a callout, and gave
# #GP(0) for one the VMM does not perform.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("code", ["0f 01 c8", "0f 01 c1", "0f 01 ee", "0f 01 d9"])
def test_an_0f01_the_cpu_has_no_instruction_for_is_a_ud(backend, code):
    raw = ", ".join(f"0x{b}" for b in code.split())
    log = "mov eax, [esp]\nmov [0x5000], eax\n" + A.exit_with(6)
    img = A.build(A.AsmGuest(body=f"xor eax, eax\nxor ecx, ecx\nxor edx, edx\n.byte {raw}\n"
                                   + A.exit_with(0), handlers={x86.UD: log, x86.GP: A.exit_with(13)}))
    status, data = _log(backend, img)
    assert (status, data) == _native_log(img) and status == 6


# Faults while delivering an exception (SDM vol. 3, 6.12 and 6.13): a gate whose
# selector names the TSS is #GP (a TSS's type has the code bit too); a handler
# CS not present is #NP, not #GP; and the error code has its EXT bit, since the
# event being delivered was not the program's.  The handler logs the code.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", ["gate CS is the TSS", "gate not present", "CS not present"])
def test_a_fault_while_delivering_an_exception(backend, case):
    gate = A.IDT + 8 * x86.UD
    lo, hi = struct.unpack("<II", x86.make_segment(0, 0xFFFFF, 0x1A))   # code, not present
    setup = {"gate CS is the TSS": f"mov word ptr [{gate + 2:#x}], 0x38\n",
             "gate not present": f"and byte ptr [{gate + 5:#x}], 0x7f\n",
             "CS not present": _gdt_entries({0x40: (lo, hi)})
             + f"mov word ptr [{gate + 2:#x}], 0x40\n"}[case]
    want = {"gate CS is the TSS": (x86.GP, 0x39), "gate not present": (x86.NP, x86.UD * 8 + 3),
            "CS not present": (x86.NP, 0x41)}[case]
    log = lambda v: f"mov eax, [esp]\nmov [0x5000], eax\nmov dword ptr [0x5004], {v}\n" + A.exit_with(0)
    img = A.build(A.AsmGuest(body=setup + "ud2\n" + A.exit_with(1),
                             handlers={x86.GP: log(x86.GP), x86.NP: log(x86.NP),
                                       x86.UD: A.exit_with(6)}))
    _as_natively(backend, img, "<II", (want[1], want[0]))


# The kernel rewrites a GDT entry in place as ring-3 code and irets to it.
# trap and bt see the write and make the shadow entry stale, but an iret checks
# the type and DPL (the old ones, in the stale shadow) before the present bit:
# the #GP was the guest's.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_an_iret_to_a_descriptor_rewritten_in_place(backend):
    lo, hi = struct.unpack("<II", x86.make_segment(0, 0xFFFFF, 0xFA))
    body = (f"mov dword ptr [{A.GDT + 0x20:#x}], {lo:#x}\nmov dword ptr [{A.GDT + 0x24:#x}], {hi:#x}\n"
            f"push 0x33\npush {A.STACK3:#x}\npush 0x202\npush 0x23\npush {A.RING3:#x}\niretd\n")
    img = A.build(A.AsmGuest(body=body, paging=True, ring3="mov ax, cs\nmov [0x5000], eax\nud2\n",
                             handlers={x86.UD: A.exit_with(6), x86.GP: A.exit_with(13)}))
    _as_natively(backend, img, "<H", (0x23,))


# A 4 MiB page whose PSE-36 bits put its frame above 4 GiB, beyond RAM: the
# run ends under every back end (natively the CPU model finds no memory there).
# The VMMs' walk dropped those bits and mapped the guest's own 4 MiB at 4 MiB.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_a_4_mib_page_above_4_gib_ends_the_run(backend):
    body = ("mov eax, cr4\nor eax, 0x10\nmov cr4, eax\n"
            f"mov dword ptr [{A.PGDIR + 8:#x}], 0x402083\nmov eax, cr3\nmov cr3, eax\n"
            "mov eax, [0x800000]\nmov [0x5000], eax\n" + A.exit_with(0))
    img = A.build(A.AsmGuest(body=body, paging=True))
    _ends_saying(backend, img, "[0x800000]" if backend in ("native", "hw-npt") else "beyond RAM")


# An expand-down data segment, loaded by the kernel: its offsets are those above
# its limit, up to 64 KiB (B clear), which ring compression keeps below the VMM
# window, or up to 4 GiB (B set), which it cannot (the run ends saying so).
# The shadow held both not present, and the guest took the #NP.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("flags", [0x0, 0x4])
def test_an_expand_down_data_segment(backend, flags):
    seg = struct.unpack("<II", x86.make_segment(0x200000, 0xFFF, 0x96, flags))
    body = (_gdt_entries({0x40: seg})
            + "mov ax, 0x40\nmov es, ax\nmov dword ptr es:[0x2000], 0x5555\nmov ax, 0x10\nmov es, ax\n"
            "mov eax, [0x202000]\nmov [0x5000], eax\n" + A.exit_with(0))
    img = A.build(A.AsmGuest(body=body, paging=True, handlers={x86.NP: A.exit_with(11)}))
    if flags and issubclass(B.load(backend), RingCompressedVmm):
        _ends_saying(backend, img, "reaches the VMM window")
    else:
        _as_natively(backend, img, "<I", (0x5555,))


# User code far-jumps to a code segment of the LDT its kernel loaded: natively
# and under hw it runs there (hw ended the run: it took every LDT selector for
# a task switch); ring compression has no shadow LDT, and says so.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_user_code_far_jumps_into_its_ldt(backend):
    ldt = 0x7000
    code_lo, code_hi = struct.unpack("<II", x86.make_segment(0, 0xFFFFF, 0xFA))
    body = (f"mov dword ptr [{ldt + 16:#x}], {code_lo:#x}\n"
            f"mov dword ptr [{ldt + 20:#x}], {code_hi:#x}\n"
            + _gdt_entries({0x40: struct.unpack("<II", x86.make_segment(ldt, 0x17, 0x82, 0x0))})
            + "mov ax, 0x40\nlldt ax\n" + A.iret_to(3, A.RING3, 0x70000))
    ring3 = ("mov dword ptr [0x6020], there\nmov word ptr [0x6024], 0x17\n"
             ".byte 0xff, 0x2d, 0x20, 0x60, 0, 0\nthere:\nmov ax, cs\nmov [0x5000], eax\nint 0x80\n")
    img = A.build(A.AsmGuest(body=body, paging=True, ring3=ring3, user_vectors=(0x80,),
                             handlers={0x80: A.exit_with(0), x86.GP: A.exit_with(13)}))
    if issubclass(B.load(backend), RingCompressedVmm):
        _ends_saying(backend, img, "LDT segments are not supported")
    else:
        _as_natively(backend, img, "<H", (0x17,))


# User code loads SS from a DPL-3 data descriptor nothing loaded before: the
# shadow GDT holds it not present until then, so that the VMM sets its accessed
# bit at the first load; but a not-present SS is #SS, not #NP, and that fault
# was the guest's.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_user_code_loads_ss_from_a_descriptor_never_loaded_before(backend):
    lo, hi = struct.unpack("<II", x86.make_segment(0, 0xFFFFF, 0xF2))
    gdt = _gdt_entries({0x68: (lo, hi)})
    ring3 = ("mov ax, 0x6b\nmov ss, ax\nmov ax, 0x33\nmov ss, ax\n"
             f"mov eax, [{A.GDT + 0x6c:#x}]\nmov [0x5000], eax\nint 0x80\n")
    img = A.build(A.AsmGuest(body=gdt + A.iret_to(3, A.RING3, 0x70000), paging=True,
                             ring3=ring3, user_vectors=(0x80,),
                             handlers={0x80: A.exit_with(0), x86.SS: A.exit_with(12)}))
    _as_natively(backend, img, "<I", (hi | 0x100,))


# The kernel pushes CS and returns to itself with iretd, then loads its code
# selector, readable, into FS: natively the iretd's CS load sets no accessed
# bit (the CPU model never does at a CS load: docs/unicorn.md, item 22) and the
# load into FS sets it.  Under trap `push cs` tells the real RPL 1 (a sensitive
# instruction it runs unmodified), so the iretd is legal at ring 1 and the CPU
# loads CS from the shadow GDT itself: the entry is present from then on, the
# load into FS does not fault, and the guest's bit stays clear (documented in
# item 22).  bt performs the kernel's push cs and iretd correctly, and sees the
# load into FS.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_the_kernel_loads_its_code_selector_into_fs_after_an_iret_to_its_pushed_cs(backend):
    body = ("pushfd\npush cs\nmov ecx, back\npush ecx\niretd\nback:\n"
            f"mov ax, {A.KCODE:#x}\nmov fs, ax\n"
            f"mov eax, [{A.GDT + A.KCODE + 4:#x}]\nmov [0x5000], eax\n" + A.exit_with(0))
    img = A.build(A.AsmGuest(body=body))
    cls = B.load(backend)
    native_hi = struct.unpack_from("<I", _native_log(img)[1])[0]
    assert native_hi & 0x100
    if issubclass(cls, RingCompressedVmm) and not callable(getattr(cls, "translation_listing", None)):
        assert struct.unpack_from("<I", _log(backend, img)[1]) == (native_hi & ~0x100,)
    else:
        _as_natively(backend, img, "<I", (native_hi,))


# The PDE's accessed bit after a walk that faults at its page table (the PTE not
# present): the CPU model sets it as it goes on to the table.  The VMMs' walk
# set it only once the PTE passed, so the guest saw it clear.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_a_walk_that_faults_at_the_page_table_leaves_the_pde_accessed(backend):
    pde = A.PGDIR + 4
    log = (f"mov eax, [{pde:#x}]\nmov [0x5000], eax\nmov eax, cr2\nmov [0x5004], eax\n"
           + A.exit_with(0))
    body = (f"and dword ptr [{pde:#x}], 0xffffffdf\nmov eax, cr3\nmov cr3, eax\n"
            "mov eax, [0x404000]\n" + A.exit_with(1))
    img = A.build(A.AsmGuest(body=body, paging=True, unmapped=(0x404000,), handlers={x86.PF: log}))
    _as_natively(backend, img, "<II", ((A.PGTAB + 0x1000) | 0x27, 0x404000))


# CR0.WP clear: the kernel may write a page its tables make read-only, and user
# code still may not (#PF, error 7).  The shadow entry a kernel write filled
# was writable for user code too.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_a_page_the_kernel_writes_with_wp_clear_stays_read_only_to_user_code(backend):
    log = ("mov eax, [esp]\nmov [0x5000], eax\nmov eax, [0x404000]\nmov [0x5004], eax\n"
           + A.exit_with(0))
    body = ("mov eax, cr0\nand eax, 0xfffeffff\nmov cr0, eax\nmov dword ptr [0x404000], 0x55\n"
            + A.iret_to(3, A.RING3, 0x70000))
    img = A.build(A.AsmGuest(body=body, paging=True, readonly=(0x404000,), user_vectors=(0x80,),
                             ring3="mov dword ptr [0x404000], 0xbad\nint 0x80\n",
                             handlers={x86.PF: log, 0x80: A.exit_with(2)}))
    _as_natively(backend, img, "<II", (7, 0x55))


# Code that runs on to a page it cannot fetch: the #PF comes at the first
# instruction not all in the mapped page (CR2 the unmapped page's start), after
# those before it ran.  The CPU model raised it when it translated the block,
# with EIP at the block's start and none of it run (docs/unicorn.md, item 28).
# The handler logs CR2, the frame's EIP and EAX (incremented once per `inc`).
FETCH_FAULT_AT_END = {"runs off the page": ("40 40 40 40", 0x301000, 4),
                      "an instruction straddles": ("40 b8 11 22", 0x300ffd, 1),
                      "a prefix straddles": ("40 40 40 f3", 0x300fff, 3),
                      "after a hint NOP": ("40 0f 1a c0", 0x301000, 1)}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", FETCH_FAULT_AT_END)
def test_code_that_runs_on_to_an_unmapped_page_faults_there(backend, case):
    code, eip, incs = FETCH_FAULT_AT_END[case]
    code = bytes.fromhex(code)
    at = 0x301000 - len(code)
    log = ("mov ebx, eax\nmov eax, cr2\nmov [0x5000], eax\nmov eax, [esp + 4]\n"
           "mov [0x5004], eax\nmov [0x5008], ebx\n" + A.exit_with(0))
    img = A.build(A.AsmGuest(body=f"mov ebx, {at:#x}\nxor eax, eax\njmp ebx\n", paging=True,
                             handlers={x86.PF: log}, unmapped=(0x301000,), data={at: code}))
    _as_natively(backend, img, "<III", (0x301000, eip, incs))


# An instruction straddling the page end whose ModRM byte is on the next
# page, where it picks the member of a group (0F BA /7: btc; /0 to /3 are
# invalid): it runs as the CPU model runs it (bt once took it for #UD).
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("split", [1, 2, 3, 4])
def test_a_group_instruction_straddling_the_page_end_runs(backend, split):
    at = 0x301000 - split
    code = A.assemble("btc di, 0xf\nmov [0x5000], edi\n" + A.exit_with(0), at)
    img = A.build(A.AsmGuest(body=f"mov edi, 0x1234\nmov ebx, {at:#x}\njmp ebx\n",
                             paging=True, data={at: code}))
    _as_natively(backend, img, "<I", (0x9234,))


# int3 or into from user code through a gate of DPL 0: #GP(vector * 8 + 2) at
# the instruction.  The byte before it is CD (the immediate of `mov al, 0xcd`),
# and the pair was taken for `int 0xcc` or `int 0xce`: EIP went back two bytes,
# into the mov.  The #GP handler logs the byte at the frame's EIP.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("insn, vector, byte", [("int3", x86.BP, 0xCC), ("into", x86.OF_VEC, 0xCE)])
def test_a_refused_int3_or_into_after_a_cd_byte_faults_at_itself(backend, insn, vector, byte):
    log = ("mov eax, [esp + 4]\nmovzx eax, byte ptr [eax]\nmov [0x5000], eax\n"
           "mov eax, [esp]\nmov [0x5004], eax\n" + A.exit_with(0))
    img = A.build(A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), user_vectors=(),
                             ring3=f"mov al, 0x7f\nadd al, 1\nmov al, 0xcd\n{insn}\n",
                             handlers={x86.GP: log}))
    _as_natively(backend, img, "<II", (byte, vector * 8 + 2))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_a_16_bit_pushf_onto_the_next_instruction(backend):
    # The pushed word's high byte (0x4a: OF, IF and NT; IF set, which ring
    # compression cannot hide from pushf) turns `inc eax` (0x40) into
    # `dec edx`.  bt performs pushfw in a callout, and went on in the
    # translation of the old code.
    body = ("mov eax, 0x100\nmov edx, 0x100\npush 0x4a02\npopfd\nlea esp, [target + 1]\n"
            ".byte 0x66, 0x9c\ntarget:\ninc eax\nmov esp, 0x90000\npush 0x2\npopfd\n"
            "mov [0x5000], eax\nmov [0x5004], edx\n" + A.exit_with(0))
    _as_natively(backend, A.build(A.AsmGuest(body=body)), "<II", (0x100, 0xFF))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_a_cr3_load_that_maps_other_code_at_the_same_address(backend):
    """Two address spaces map linear 0x600000 to two frames holding different
    code; the kernel calls it in each.  bt keyed its translations by linear
    address alone and ran the first one's code in both."""
    pd2, pt2 = 0x300000, 0x301000
    copy = lambda src, dst: (f"mov esi, {src:#x}\nmov edi, {dst:#x}\nmov ecx, 1024\n"
                             f"cp{dst:x}:\nmov eax, [esi]\nmov [edi], eax\nadd esi, 4\n"
                             f"add edi, 4\ndec ecx\njnz cp{dst:x}\n")
    body = ("mov dword ptr [0x600000], 0x000001b8\nmov word ptr [0x600004], 0xc300\n"
            "mov dword ptr [0x601000], 0x000002b8\nmov word ptr [0x601004], 0xc300\n"
            + copy(A.PGDIR, pd2) + copy(A.PGTAB + 0x1000, pt2)
            + f"mov dword ptr [{pd2 + 4:#x}], {pt2 | 7:#x}\n"
            + f"mov dword ptr [{pt2 + (0x600000 >> 12 & 1023) * 4:#x}], 0x601007\n"
            + "mov eax, 0x600000\ncall eax\nmov [0x5000], eax\n"
            + f"mov eax, {pd2:#x}\nmov cr3, eax\n"
            + "mov eax, 0x600000\ncall eax\nmov [0x5004], eax\n"
            + f"mov eax, {A.PGDIR:#x}\nmov cr3, eax\n"
            + "mov eax, 0x600000\ncall eax\nmov [0x5008], eax\n" + A.exit_with(0))
    _as_natively(backend, A.build(A.AsmGuest(body=body, paging=True)), "<III", (1, 2, 1))


def _paging_on_under_the_code():
    """The kernel turns paging off, unmaps the page its next code is on, jumps
    there and turns paging on: the fetch after its `mov cr0` faults."""
    page = 0x101000
    body = ("mov eax, cr0\nand eax, 0x7fffffff\nmov cr0, eax\n"
            f"mov dword ptr [{A.PGTAB + (page >> 12) * 4:#x}], 0\nmov ebx, {page:#x}\njmp ebx\n")
    img = bytearray(A.build(A.AsmGuest(body=body + A.exit_with(0), handlers=LOGGED, paging=True)))
    # mov eax, cr0; or eax, 0x80000000; mov cr0, eax; nop x4
    tail = bytes.fromhex("0f20c0" "0d00000080" "0f22c0" "90909090")
    at = page - 0x100000
    img[len(img):] = bytes(max(0, at + len(tail) - len(img)))
    img[at:at + len(tail)] = tail
    return bytes(img)


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_turning_paging_on_under_the_running_code_faults_at_the_next_fetch(backend):
    # bt ran the translations it had made with paging off (linear addresses
    # meant something else then): a CR0 write that changes PG or PE now
    # empties its cache.
    img = _paging_on_under_the_code()
    assert _native_log(img)[0] == x86.PF
    _as_natively(backend, img, "<I", (x86.PF,))


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_paging_without_protection_ends_as_natively(backend):
    # CR0.PG without PE: the CPU model triple-faults on the next fetch.  bt
    # found the fault while decoding the next callout's instruction, and
    # ended with an internal error.
    body = "mov eax, cr0\nand eax, ~1\nor eax, 0x80000000\nmov cr0, eax\nmov eax, cr0\n"
    img = A.build(A.AsmGuest(body=body + A.exit_with(0), handlers=_faults_skipping(3)))
    with Machine(B.create(backend), budget=Budget(max_exits=100_000)) as m:
        m.boot(BootSpec(img))
        out = m.run()
    assert not out.ok and out.reason.startswith("triple fault at 0x00100045"), out.reason


# The kernel halts with interrupts on while the only armed source's line is
# masked, or blocked behind an interrupt it never ended: a PC sleeps for ever.
# The halt skipped virtual time from one timer period to the next without end
# (and without looking at the host-time budget): the run hung.
SLEEPS_FOR_EVER = {
    "timer masked": ("mov al, 0xff\nout 0x21, al\nsti\nhlt\n", {}),
    "timer never ended": ("sti\nhlt\nhlt\n", {0x20: "iretd\n"}),
}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", SLEEPS_FOR_EVER)
def test_a_halt_nothing_can_wake_ends_the_run_saying_so(backend, case):
    body, handlers = SLEEPS_FOR_EVER[case]
    img = A.build(A.AsmGuest(body=A.timer_setup(12) + body + A.exit_with(0), handlers=handlers))
    with Machine(B.create(backend), budget=Budget(host_seconds=60)) as m:
        m.boot(BootSpec(img))
        out = m.run()
    assert not out.ok and out.reason.startswith(
        "halted with interrupts enabled, but every interrupt armed to wake it is masked or "
        "blocked at the PIC"), out.reason


# An interrupt that waits is taken before an exception is delivered
# (docs/boot-protocol.md): native and hw delivered a #UD first, and took the
# interrupt only at the next `int`; trap, and bt for user code, took it first.
_TIMER_LOGS = "push eax\nmov eax, [0x5010]\nmov [0x5000], eax\ninc dword ptr [0x5004]\n" \
              "mov al, 0x20\nout 0x20, al\npop eax\niretd\n"
_UD_SKIPPED = "inc dword ptr [0x5008]\nadd dword ptr [esp], 2\niretd\n"
_IRQ_DUE = A.timer_setup(12) + "mov ecx, 20\nwait_due:\nin al, 0x80\ndec ecx\njnz wait_due\n"
_AFTER_UD = "mov dword ptr [0x5010], 2\nint 0x81\nrdtsc\nmov [0x500c], eax\n"
_UD_HANDLERS = {0x20: _TIMER_LOGS, x86.UD: _UD_SKIPPED, 0x81: "iretd\n"}
UD_WITH_AN_IRQ_DUE = {
    "kernel": dict(body=_IRQ_DUE + "sti\nmov dword ptr [0x5010], 1\nud2\n" + _AFTER_UD + "cli\n"
                   + A.exit_with(0)),
    "user": dict(body=_IRQ_DUE + A.iret_to(3, A.RING3, A.STACK3, 0x202),
                 ring3="mov dword ptr [0x5010], 1\nud2\n" + _AFTER_UD + "int 0x82\n",
                 user_vectors=(0x81, 0x82)),
}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("ring", UD_WITH_AN_IRQ_DUE)
def test_an_interrupt_that_waits_is_taken_before_an_invalid_opcode(backend, ring):
    options = UD_WITH_AN_IRQ_DUE[ring]
    handlers = {**_UD_HANDLERS, 0x82: A.exit_with(0)}
    img = A.build(A.AsmGuest(handlers=handlers, **options))
    # (the timer fired before the ud2: at marker 1, and once more, at its retry)
    _as_natively(backend, img, "<3I", (1, 2, 1))


# The kernel far-jumps to its own code selector, the first load of it through
# a descriptor, then loads it into FS: natively the far jump sets no accessed
# bit (docs/unicorn.md, item 22) and the load into FS does.  Under ring
# compression the jump faults on the shadow entry (not present until the
# first load) and the VMM performs it, so that the entry stays not present
# and the load into FS still faults for the VMM to set the bit (had the CPU
# been let to perform the jump, the entry would be present from then on).
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("jump", ["jmp", "call"])
def test_the_kernel_loads_its_code_selector_into_fs_after_a_far_jump_to_it(backend, jump):
    far = (f".byte 0xea\n.int there\n.short {A.KCODE}\nud2\nthere:\n" if jump == "jmp" else
           f".byte 0x9a\n.int sub\n.short {A.KCODE}\njmp back\nsub:\nretf\nback:\n")
    body = (far + f"mov ax, {A.KCODE:#x}\nmov fs, ax\n"
            f"mov eax, [{A.GDT + A.KCODE + 4:#x}]\nmov [0x5000], eax\n" + A.exit_with(0))
    img = A.build(A.AsmGuest(body=body))
    native_hi = struct.unpack_from("<I", _native_log(img)[1])[0]
    assert native_hi & 0x100
    _as_natively(backend, img, "<I", (native_hi,))


# User code's code selector, loaded by the kernel into FS after an iret to
# user code (the descriptor's first load, into CS): natively the bit is set
# by the load into FS only.  Under ring compression the CPU performs the
# return (an exit for every return to user code would double the cost of a
# system call), so the shadow entry is present from then on, the load into FS
# does not fault, and the guest's bit stays clear: the documented difference
# of docs/unicorn.md, item 22.
@pytest.mark.parametrize("backend", NATIVE_IMAGE)
def test_the_kernel_loads_the_user_code_selector_into_fs_after_an_iret_to_it(backend):
    handler = (f"mov ax, {A.UCODE:#x}\nmov fs, ax\n"
               f"mov eax, [{A.GDT + (A.UCODE & ~3) + 4:#x}]\nmov [0x5000], eax\n"
               + A.exit_with(0))
    img = A.build(A.AsmGuest(body=A.iret_to(3, A.RING3, 0x70000), ring3="int 0x80\n",
                             user_vectors=(0x80,), handlers={0x80: handler}))
    native_hi = struct.unpack_from("<I", _native_log(img)[1])[0]
    assert native_hi & 0x100
    if issubclass(B.load(backend), RingCompressedVmm):
        assert struct.unpack_from("<I", _log(backend, img)[1]) == (native_hi & ~0x100,)
    else:
        _as_natively(backend, img, "<I", (native_hi,))


# An instruction that some back end hooks (trap's observer of the kernel's
# retf, its audit of sgdt) and that faults, after an `add` whose flags are
# still lazy (0x10 + 1: PF, and AF clear, which a misread operand sets): the
# flags the guest sees next are the CPU's.  The CPU model makes the flags
# concrete after a code hook and the fault puts back the lazy operation
# (docs/unicorn.md, item 37).  The retf's #GP is the VMM's (the frame's RPL 0
# at ring 1, emulated); the sgdt's #PF is the guest's, and its frame shows them.
# (The arithmetic flags only: pushfd shows the real IF under trap.)
_ARITH = x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF
HOOKED_FAULTS = {
    "retf": ("push 8\nmov edx, back\npush edx\nretf\nud2\nback:\npushfd\npop eax\n"
             f"and eax, {_ARITH:#x}\nmov [0x5000], eax\ndec ecx\njnz again\n" + A.exit_with(0),
             {}),
    "sgdt": ("sgdt [0x404000]\n" + A.exit_with(1),
             {x86.PF: f"mov eax, [esp + 12]\nand eax, {_ARITH:#x}\nmov [0x5000], eax\n"
                      + A.exit_with(0)}),
}


@pytest.mark.parametrize("backend", NATIVE_IMAGE)
@pytest.mark.parametrize("case", HOOKED_FAULTS)
def test_a_hooked_instruction_that_faults_keeps_the_lazy_flags(backend, case):
    text, handlers = HOOKED_FAULTS[case]
    # (Twice: the second time the block is translated with its hooks from the
    # start, and the CPU model knows the lazy operation at the hooked one.)
    body = "mov ecx, 2\nagain:\nmov eax, 0x10\nmov ebx, 1\nadd eax, ebx\n" + text
    img = A.build(A.AsmGuest(body=body, paging=True, unmapped=(0x404000,), handlers=handlers))
    flags = struct.unpack_from("<I", _native_log(img)[1])[0]
    assert flags == x86.PF_FLAG
    _as_natively(backend, img, "<I", (flags,))
