"""The bt back end at the levels where it can fail.

  1. The catalog: every workload runs under bt and matches native, and in the
     nanobenchmarks the mechanism fixes the cost of one iteration exactly (an
     iteration's counts are the difference of two runs' regions of interest,
     divided by the difference of their scales, so that what the ROI holds
     once -- the system call into the kernel's benchmark loop, its first
     translations -- drops out).
  2. Accounting: identities between counters, and determinism.
  3. No guest kernel code runs at real ring 1 outside the translation cache.
  4. Hostile and broken kernels (asm guests): each ends as a failed run with a
     clear reason, or sees what native shows it, never a traceback or a hang.
  5. Precise exceptions: faults inside translated code reach the guest's
     handlers with the frame and registers native gives them.
  6. Coherence: code the kernel writes runs as written; a full TC is flushed
     and the guest does not notice.
  7. Faithfulness of translated kernel code: small guests whose log must equal
     native's, one for each instruction form the translator must not get wrong.

Asm guests log what they see at LOG (identity-mapped) and end with a status;
each runs in well under a second unless a bug makes it hang until its budget.
"""
import ctypes
import re
import struct

import pytest
from unicorn import UC_HOOK_BLOCK

import runs
import virtlab
from bt import layout as L, templates as T
from bt.backend import GUILTY_AFTER, Bt
from bt.translate import MAX_UNIT_BYTES
from virtlab import asmguest as A, x86
from virtlab.counters import EXITS
from virtlab.harness import resolve, run_guest
from virtlab.machine import BootSpec, Budget, Machine
from virtlab.native import Native
from workloads.catalog import CATALOG

# -- 1. the catalog ----------------------------------------------------------------------
# Small scales: the whole catalog runs under bt (and natively, for matches_native)
# in about a minute of CPU.
SCALE = {
    "nano.syscall": 10, "nano.in": 10, "nano.crwr": 10, "nano.callret": 10,
    "nano.pgfault": 10, "nano.divzero": 10, "nano.ptemod": 10, "nano.cli": 10,
    "nano.popf": 10, "nano.rdtsc": 10, "nano.cpuid": 10,
    "micro.null_call": 10, "micro.null_io": 5, "micro.ctxsw": 3, "micro.fork": 2,
    "micro.exec": 2, "micro.pagefault": 3, "micro.protfault": 3, "micro.mmap": 2,
    "macro.compute": 1, "macro.forkwait": 2, "macro.build": 1, "macro.disk": 1,
    "fidelity.popf": 2, "fidelity.pushf": 2, "fidelity.sidt": 2,
    "fidelity.pushcs": 2, "fidelity.smsw": 2,
}

# The cost of one iteration, where the mechanism fixes it: every counter of an
# exit, a reflection, the shadow MMU or bt not listed here is 0 per iteration.
# The kernel's loops (workloads/kernel/kbench.c) are:
#   cli:     cli; sti; out 0x503          -- two stores to the vCPU page, no exit
#   popf:    pushf; popf; out 0x503       -- two in-TC sequences, no exit
#   callret: call; ret; out 0x503         -- the ret found in the table, in the TC
#   ptemod:  a PTE store (adaptive: a ptwrite callout, no fault) and invlpg
#   in:      in (the port hook: a callout); out 0x503
# and nano.syscall is a null system call from user mode: one exit, reflected,
# and the kernel's iret back to user mode, one callout (which trap and the
# hardware back ends do not pay: under bt every VMM transition costs).
PER_ITERATION = {
    "nano.cli": {"bt.intc.cli": 1, "bt.intc.sti": 1},
    "nano.popf": {"bt.intc.pushf": 1, "bt.intc.popf": 1},
    "nano.callret": {"bt.indirect.hit": 1},
    "nano.ptemod": {"bt.callout": 2, "bt.callout.ptwrite": 1, "bt.callout.invlpg": 1,
                    "shadow.trace": 1},
    "nano.in": {"bt.callout": 1, "bt.callout.io": 1},
    "nano.syscall": {"exit.total": 1, "reflect.total": 1, "reflect.syscall": 1,
                     "bt.callout": 1, "bt.callout.iret": 1},
}
# Counters the guest kernel's own code fixes (how many returns and `mov from
# cs` its system-call path has), not the mechanism: not checked per iteration.
KERNEL_PATH = {"nano.syscall": ("bt.indirect.hit", "bt.intc.movseg")}
MECHANISM = ("exit.", "reflect.", "shadow.", "inject.", "bt.")
# The same events counted over a whole ROI of n iterations, which also holds
# what happens once: the loop's own first pass (a miss, the faults before a
# store is found guilty) and kbench's code around it.
ROI = {
    "nano.cli": lambda n: {"bt.intc.sti": n, "bt.intc.cli": n + 1},   # kbench ends with cli
    "nano.popf": lambda n: {"bt.intc.pushf": n, "bt.intc.popf": n},
    "nano.callret": lambda n: {"bt.indirect.hit": n - 1},             # the first ret misses
    # the store faults GUILTY_AFTER times before its retranslation; kbench
    # flushes the scratch page once before the loop and once after
    "nano.ptemod": lambda n: {"bt.callout.ptwrite": n - GUILTY_AFTER, "bt.callout.invlpg": n + 2},
    "nano.in": lambda n: {"bt.callout.io": n},
    "nano.syscall": lambda n: {"exit.total": n, "reflect.syscall": n, "bt.callout": n,
                               "bt.callout.iret": n},
}

def run(name, scale):
    """One bt run per (workload, scale), shared by all tests (runs.py)."""
    return runs.run(name, "bt", scale)


def test_every_workload_has_a_scale():
    assert set(SCALE) == set(CATALOG)


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_workload_runs_under_bt_and_matches_native(name):
    """ok, matches native, the counters add up; and for the nanobenchmarks the
    exact cost of an iteration.  (One test per workload, so that xdist never
    runs a workload twice.)"""
    scale = SCALE[name]
    r = run(name, scale)
    assert r.ok, f"{name}: {r.reason}\n{r.console}"
    assert r.exit_status == 0 and r.iterations == scale
    assert r.matches_native, f"{name}: console or status differs from native:\n{r.console}"
    assert r.counters.get("bt.translate.units", 0) > 0
    assert_identities(r.counters, f"{name} (run)")
    assert_identities(r.roi_counters, f"{name} (ROI)")
    if name in PER_ITERATION:
        large = run(name, 2 * scale)
        assert_per_iteration(name, r, large)
        for res in (r, large):
            want = ROI[name](res.iterations)
            assert {k: res.roi_counters.get(k, 0) for k in want} == want, f"{name}: ROI"
    if name == "nano.ptemod":
        # Adaptive translation: the PTE store faults on the traced page table
        # a few times, is found guilty and retranslated into a ptwrite
        # callout; from then on no iteration takes a page fault.
        assert r.counters["bt.retranslate"] >= 1
        extra = large.roi_counters.get("exit.pf.hidden", 0) - r.roi_counters.get("exit.pf.hidden", 0)
        assert extra < 0.1 * (large.iterations - r.iterations)


def assert_per_iteration(name, small, large):
    assert large.ok and large.matches_native, large.reason
    span = large.iterations - small.iterations
    assert span > 0
    names = {k for k in set(small.roi_counters) | set(large.roi_counters) if k.startswith(MECHANISM)}
    names |= set(PER_ITERATION[name])
    got = {}
    for k in sorted(names - set(KERNEL_PATH.get(name, ()))):
        d = large.roi_counters.get(k, 0) - small.roi_counters.get(k, 0)
        assert d % span == 0, f"{name}: {k} grows by {d} over {span} iterations"
        if d:
            got[k] = d // span
    assert got == PER_ITERATION[name], f"{name}: per iteration"


# -- 2. accounting -----------------------------------------------------------------------
# The kinds of exit, as the core declares them (exit.total is their sum).
EXIT_KINDS = tuple(s.name for s in EXITS if not s.is_glob and s.name != "exit.total")


def family(c, prefix):
    return sum(v for k, v in c.items() if k.startswith(prefix + "."))


def assert_identities(c, what):
    g = c.get
    assert g("bt.callout", 0) == family(c, "bt.callout"), f"{what}: bt.callout != sum of kinds"
    # Every exit under exactly one kind; a reflected system call or exception
    # is an exit of its own (docs/counters.md).  (Exceptions a callout finds
    # are reflected without an exit; no workload has one.)
    kinds = sum(g(k, 0) for k in EXIT_KINDS) + g("reflect.syscall", 0) + g("reflect.exception", 0)
    assert g("exit.total", 0) == kinds, f"{what}: exit.total != sum of the exit kinds"
    assert g("exit.priv", 0) == family(c, "exit.priv"), f"{what}: exit.priv"
    assert g("reflect.total", 0) == (g("reflect.syscall", 0) + g("reflect.pf", 0)
                                     + g("reflect.exception", 0)), f"{what}: reflect.total"
    assert g("reflect.exception", 0) == family(c, "reflect.exception"), f"{what}: reflect.exception"
    assert g("bt.indirect.miss", 0) == g("bt.callout.miss", 0), f"{what}: misses"
    assert g("bt.chain", 0) <= g("bt.callout.chain", 0), f"{what}: chains without their callout"
    assert g("bt.translate.units", 0) <= g("bt.translate.instructions", 0)
    assert all(v >= 0 for v in c.values()), f"{what}: a negative count"


def test_two_runs_give_identical_counters():
    a = virtlab.run("micro.exec", "bt", scale=1, model=False)
    b = virtlab.run("micro.exec", "bt", scale=1, model=False)
    assert a.ok and b.ok
    assert a.counters == b.counters
    assert a.roi_counters == b.roi_counters
    assert (a.console, a.exit_status, a.vmm_entries, a.details) == \
        (b.console, b.exit_status, b.vmm_entries, b.details)


# -- 3. no ring-1 code outside the TC ------------------------------------------------------
_BLOCK_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32,
                             ctypes.c_void_p)


def test_no_ring1_code_runs_outside_the_translation_cache():
    """Every translation block the CPU runs at real ring 1 starts in the TC:
    the guest kernel never runs from guest memory."""
    seen = {"tc": 0, "outside": []}

    def attach(machine):
        def on_block(_uc, pc, _size, _user):
            try:
                if machine.live_cpl() == 1:
                    if L.TC <= pc < L.TC_END:
                        seen["tc"] += 1
                    elif len(seen["outside"]) < 10:
                        seen["outside"].append(pc)
            except BaseException as exc:          # never into C
                machine.abort(exc)
        machine.add_hook(UC_HOOK_BLOCK, _BLOCK_CB(on_block))

    r = run_guest(resolve("micro.fork", scale=2), "bt", on_machine=attach)
    assert r.ok, r.reason
    assert seen["tc"] > 1000
    assert seen["outside"] == [], "ring-1 blocks outside the TC at " + \
        ", ".join(f"{pc:#x}" for pc in seen["outside"])


# -- asm guests ------------------------------------------------------------------------------
LOG = 0x5000                     # what the guest saw
LOGP = 0x4FF0                    # the handlers' log pointer
WORDS = 192


def pte(linear):
    return A.PGTAB + (linear >> 12) * 4


# A guest that ends by itself must never fail on host time: on a loaded
# machine a boot can take seconds.  What bounds a runaway guest in these tests
# is the exit budget, which counts the same on any machine; only the hang test
# sets a short time budget, and a spinning guest exceeds any.
ROOMY = 60.0


def boot(cls, g, seconds=ROOMY, exits=200_000):
    """Run an asm guest to its end; the machine comes back closed, its memory
    (and the back end's translation cache) still readable."""
    with Machine(cls(), budget=Budget(seconds, exits)) as m:
        m.boot(BootSpec(A.build(g)))
        out = m.run()                # no exception may escape
    return m, out


def log(m, n=WORDS):
    return list(struct.unpack_from(f"<{n}I", m.mem.view, LOG))


def native(g):
    m, out = boot(Native, g)
    return m, out, log(m)


def diff(a, b):
    return ", ".join(f"LOG[{i}] native {x:#x} bt {y:#x}" for i, (x, y) in enumerate(zip(a, b))
                     if x != y)


def assert_like_native(g, status=None, **budget):
    """The guest's log and its end are native's."""
    nm, nout, nlog = native(g)
    assert nout.ok, nout.reason
    if status is not None:
        assert nout.exit_status == status, "the scenario is not what it says"
    m, out = boot(Bt, g, **budget)
    assert out.ok, out.reason
    got = log(m)
    assert out.exit_status == nout.exit_status, \
        f"bt ended with status {out.exit_status}, native {nout.exit_status}; {diff(nlog, got)}"
    assert got == nlog, diff(nlog, got)
    assert_tc_intact(m.backend)
    return m, nlog


def assert_tc_intact(bt):
    """Every live unit's bytes in the TC are what the translator made, its
    exits either stubs or jumps to the units they were chained to."""
    cache = bt.cache
    for u in cache.units:
        if u.dead:
            continue
        want = bytearray(u.code)
        for ex in u.exits:
            if ex.chained_to is not None:
                off = ex.at - u.tc
                want[off:off + T.STUB_SIZE] = T.jmp_rel32(ex.at, ex.chained_to.tc)
        at = cache._off(u.tc)
        have = bytes(bt.machine.vmm.view[at:at + len(want)])
        assert have == bytes(want), f"the TC bytes of the unit for {u.guest:#x} at {u.tc:#x} changed"


def record_fault(vec):
    """A handler that logs the vector, CR2 and the first four frame words at
    LOG and ends the run with the vector as status."""
    return (f"mov dword ptr [{LOG:#x}], {vec}\nmov eax, cr2\nmov [{LOG + 4:#x}], eax\n"
            + "".join(f"mov eax, [esp + {4 * i}]\nmov [{LOG + 8 + 4 * i:#x}], eax\n"
                      for i in range(4))
            + A.exit_with(vec))


RECORD = {v: record_fault(v) for v in (x86.DE, x86.UD, x86.NP, x86.GP, x86.PF)}


def far_jmp(selector, offset):
    """A 32-bit direct far jmp (keystone would emit the 16-bit form)."""
    return f".byte 0xea\n.long {offset:#x}\n.word {selector:#x}\n"


def set_gate(vector, target):
    """Point IDT entry `vector` at `target` (a ring-0 interrupt gate)."""
    gate = A.IDT + 8 * vector
    return (f"mov eax, {target:#x}\nmov [{gate:#x}], ax\nshr eax, 16\nmov [{gate + 6:#x}], ax\n"
            f"mov word ptr [{gate + 2:#x}], {A.KCODE}\nmov word ptr [{gate + 4:#x}], 0x8e00\n")


# -- 4. hostile and broken kernels ----------------------------------------------------------
INTO_TC = L.TC + 0x10            # inside the TC's first unit (the guest's entry code)
# Ways for the kernel to go to an address of its choice.
GOTO = {
    "jmp": lambda t: f"jmp {t:#x}\n",
    "jmp-reg": lambda t: f"mov eax, {t:#x}\njmp eax\n",
    "call-mem": lambda t: f"mov dword ptr [0x6000], {t:#x}\ncall dword ptr [0x6000]\n",
    "ret": lambda t: f"push {t:#x}\nret\n",
    "iret": lambda t: f"pushfd\npush {A.KCODE}\npush {t:#x}\niretd\n",
    "retf": lambda t: f"push {A.KCODE}\npush {t:#x}\nretf\n",
    "ljmp": lambda t: far_jmp(A.KCODE, t),
    "gate": lambda t: set_gate(0x40, t) + "int 0x40\n",
}


@pytest.mark.parametrize("how", sorted(GOTO))
@pytest.mark.parametrize("target", [INTO_TC, L.TC, L.DATA, 0xFC000000],
                         ids=["tc+0x10", "tc", "vcpu-page", "window"])
def test_kernel_jumping_into_the_vmm_window_gets_natives_page_fault(how, target):
    """The guest's page tables do not map the VMM window, so natively every
    way of going there is a #PF at the target, which the guest's handler
    logs.  Under bt the TC is there, but the guest must never run it except
    as the translation of its own code."""
    g = A.AsmGuest(body=GOTO[how](target) + A.exit_with(1), handlers=RECORD, paging=True)
    m, nlog = assert_like_native(g, status=x86.PF, exits=2_000)
    assert nlog[1] == target


@pytest.mark.parametrize("how", ["jmp-reg", "iret"])
def test_kernel_jumping_into_the_tc_with_paging_off_fails_cleanly(how):
    """With paging off the window lies beyond RAM: natively the fetch is a
    machine error; under bt the run must end too (or the guest be told),
    never run the TC."""
    g = A.AsmGuest(body=GOTO[how](INTO_TC) + A.exit_with(1), handlers=RECORD, paging=False)
    _, nout, _ = native(g)
    assert not nout.ok
    m, out = boot(Bt, g, exits=2_000)
    assert_clean_end(out, m)


def assert_clean_end(out, m, status=None):
    """The run ended: failed with a reason that is not a budget, or ended
    with `status`, or the guest took a fault in its own handler (RECORD,
    which ends the run with the vector)."""
    if not out.ok:
        assert out.reason and "budget" not in out.reason, out.reason
    elif out.exit_status != status:
        assert out.exit_status in RECORD and log(m, 1)[0] == out.exit_status, out.exit_status


def chain_of(reason):
    """The part of a triple-fault reason both back ends state alike: where,
    which instruction, the first fault (bt also names the CR2 it found)."""
    return re.sub(r" cr2=0x[0-9a-f]+", "", reason.split(";")[0]).split(" -> ")[0]


@pytest.mark.parametrize("body", [
    "xor ecx, ecx\ndiv ecx\n",               # #DE with an empty IDT
    "ud2\n",                                 # #UD, no IDT
    ".byte 0x0f, 0x04\n",                    # undecodable, no IDT
    "int3\n",                                # int3, no gate
    "mov dword ptr [0xdead000], 1\n",        # #PF beyond the mapped 8 MiB, no gate
], ids=["divide", "ud2", "undecodable", "int3", "page-fault"])
def test_kernel_without_handlers_triple_faults(body):
    g = A.AsmGuest(body=body + A.exit_with(1), paging=True)
    _, nout, _ = native(g)
    m, out = boot(Bt, g)
    assert not nout.ok and not out.ok
    assert out.reason.startswith("triple fault at "), out.reason
    assert chain_of(out.reason) == chain_of(nout.reason)


def test_kernel_that_hangs_is_stopped_by_its_time_budget():
    g = A.AsmGuest(body="spin: jmp spin\n", paging=True)
    m, out = boot(Bt, g, seconds=0.3)
    assert not out.ok and "host-time budget" in out.reason


def test_kernel_looping_on_int3_is_stopped_by_its_exit_budget():
    """Each int3 is a callout and each iret back another: both are VMM entries."""
    g = A.AsmGuest(body="again: int3\njmp again\n", handlers={3: "iretd\n"}, paging=True)
    m, out = boot(Bt, g, exits=5_000)
    assert not out.ok and "exit budget of 5000 exceeded" in out.reason
    # (A kernel's int n is a callout that reflects: counted as the reflection.)
    assert m.counters["reflect.syscall"] > 2000


@pytest.mark.parametrize("halt", ["cli\nhlt\n", "sti\nhlt\n"], ids=["cli", "sti"])
def test_kernel_halting_for_good_ends_the_run(halt):
    g = A.AsmGuest(body=halt + A.exit_with(1), paging=True)
    _, nout, _ = native(g)
    m, out = boot(Bt, g)
    assert not out.ok and out.reason == nout.reason


@pytest.mark.parametrize("paging", [True, False], ids=["paging", "flat"])
@pytest.mark.parametrize("where", [L.TC, L.TC + 0x40, L.TABLE], ids=["tc", "tc+0x40", "table"])
def test_kernel_writing_the_tc_or_its_table_is_stopped(where, paging):
    g = A.AsmGuest(body=f"mov dword ptr [{where:#x}], 0x90909090\nmov dword ptr [{LOG + 4:#x}], 1\n"
                   + A.exit_with(1), handlers=RECORD, paging=paging)
    m, out = boot(Bt, g)
    assert_clean_end(out, m, status=x86.PF)
    assert log(m, 2)[1] != 1, "the write to the TC completed"
    assert_tc_intact(m.backend)


def test_kernel_scribbling_on_the_vcpu_page_harms_only_itself():
    """The vCPU page is writable at ring 1 (layout.py): what is there is the
    guest's own virtual IF and IOPL, scratch and its event counters.  A kernel
    that fills it with garbage and goes on (cli, sti, pushf, popf, call, ret,
    int) may confuse itself, never the VMM: the run ends cleanly, the TC is
    intact, and the next run is normal."""
    fill = (f"mov edi, {L.DATA:#x}\nmov ecx, {L.DATA_SIZE // 4}\nmov eax, 0xffffffff\ncld\n"
            "rep stosd\n")
    work = ("cli\nsti\npushfd\npopfd\ncall f\njmp g\nf: ret\ng: int 0x41\n"
            "pushfd\npop eax\n" f"mov [{LOG + 8:#x}], eax\n" + A.exit_with(5))
    g = A.AsmGuest(body=fill + work, handlers={0x41: "iretd\n", **RECORD}, paging=True)
    m, out = boot(Bt, g)
    assert_clean_end(out, m, status=5)
    assert_tc_intact(m.backend)
    assert_normal_run_works()


def assert_normal_run_works():
    g = A.AsmGuest(body=A.putc("o") + A.putc("k") + f"mov dword ptr [{LOG:#x}], 7\n" + A.exit_with(3),
                   paging=True)
    m, out = boot(Bt, g)
    assert out.ok and out.exit_status == 3 and m.uart.text() == "ok" and log(m, 1) == [7]


def test_kernel_using_the_callout_vector_gets_its_own_interrupt():
    """`int 0xEE` from the guest kernel is the guest's software interrupt, not
    a callout: delivered through its IDT."""
    g = A.AsmGuest(body="mov eax, 0x1234\nint 0xee\n" + f"mov [{LOG + 4:#x}], ebx\n" + A.exit_with(2),
                   handlers={0xEE: f"mov [{LOG:#x}], eax\nmov ebx, 0x5678\niretd\n"}, paging=True)
    assert_like_native(g, status=2)


# -- 5. precise exceptions ---------------------------------------------------------------------
def logging_handler(vec, error_code, fix):
    """Log one 16-word record at [LOGP] -- vector, error code (or
    0xEEEEEEEE), the pushed EIP, CS and EFLAGS (IF included), the ESP the
    fault left, CR2, the eight registers of pushad -- then `fix` the cause
    (with the pushad frame at ESP) and retry the instruction."""
    e = 4 if error_code else 0
    return ("pushad\n" f"mov ebp, [{LOGP:#x}]\n" f"mov dword ptr [ebp], {vec}\n"
            + ("mov eax, [esp + 32]\nmov [ebp + 4], eax\n" if error_code
               else "mov dword ptr [ebp + 4], 0xeeeeeeee\n")
            + "".join(f"mov eax, [esp + {32 + e + 4 * k}]\nmov [ebp + {8 + 4 * k}], eax\n"
                      for k in range(3))
            + f"lea eax, [esp + {44 + e}]\nmov [ebp + 20], eax\n"
            + "mov eax, cr2\nmov [ebp + 24], eax\n"
            + "".join(f"mov eax, [esp + {4 * k}]\nmov [ebp + {28 + 4 * k}], eax\n" for k in range(8))
            + f"add dword ptr [{LOGP:#x}], 64\n" + fix + "popad\n"
            + ("add esp, 4\n" if error_code else "") + "iretd\n")


def record_state():
    """A record like a handler's (marker 0x99), of the state after a case."""
    return ("pushfd\npushad\n" f"mov ebp, [{LOGP:#x}]\n" "mov dword ptr [ebp], 0x99\n"
            "mov eax, [esp + 32]\nmov [ebp + 16], eax\nlea eax, [esp + 36]\nmov [ebp + 20], eax\n"
            + "".join(f"mov eax, [esp + {4 * k}]\nmov [ebp + {28 + 4 * k}], eax\n" for k in range(8))
            + f"add dword ptr [{LOGP:#x}], 64\n" "popad\npopfd\n")


MAP_CR2 = ("mov eax, cr2\nand eax, 0xfffff000\nmov ebx, eax\nshr ebx, 12\n"
           f"lea ebx, [{A.PGTAB:#x} + ebx*4]\nor eax, 7\nmov [ebx], eax\nmov eax, cr2\n"
           "invlpg [eax]\n")
CALLEE_VEC = 0xF0
CALLEE = A.HANDLERS + CALLEE_VEC * 0x100


def registers(k):
    """Distinct values in every general register but ESP."""
    return "".join(f"mov {r}, {(k << 28) | (i << 24) | 0x123456:#x}\n"
                   for i, r in enumerate(("eax", "ecx", "edx", "ebx", "esi", "edi", "ebp")))


def unmap(page):
    return f"mov dword ptr [{pte(page):#x}], 0\ninvlpg [{page:#x}]\n"


def precise_guest():
    body = (f"mov dword ptr [{LOGP:#x}], {LOG:#x}\nsti\n"
            # a ret whose stack page is unmapped (the frame goes below it)
            "mov esp, 0x601004\ncall f1\njmp after1\n"
            "f1:\n" + unmap(0x601000) + registers(1) + "stc\nret\n"
            "after1:\n" + record_state() + f"mov esp, {A.STACK0:#x}\n"
            # #GP(0x48) from a segment load beyond the GDT; the handler fixes EBX
            + registers(2) + "mov ebx, 0x4b\ncmp eax, ecx\nmov ds, bx\n" + record_state()
            # a divide error; the handler makes ECX 1
            + registers(3) + "mov eax, 100\nxor edx, edx\nxor ecx, ecx\ndiv ecx\n" + record_state()
            # call [mem] whose load faults
            + f"mov dword ptr [0x603000], {CALLEE:#x}\n" + unmap(0x603000)
            + registers(4) + "stc\ncall dword ptr [0x603000]\n" + record_state()
            # call [mem] whose push lands on a stack page the shadow MMU has not
            # filled (a hidden fault inside the sequence, with EAX parked)
            + f"mov dword ptr [0x608000], {CALLEE:#x}\nmov esp, 0x605000\n" + registers(5)
            + "call dword ptr [0x608000]\n" + record_state() + f"mov esp, {A.STACK0:#x}\n"
            # popfd whose stack page is unmapped, with IF 0 at the fault
            + "mov dword ptr [0x607000], 0x243\n" + unmap(0x607000)
            + "mov esp, 0x607000\ncli\n" + registers(6) + "popfd\n" + record_state()
            + f"mov esp, {A.STACK0:#x}\n" + A.exit_with(0))
    handlers = {x86.PF: logging_handler(x86.PF, True, MAP_CR2),
                x86.GP: logging_handler(x86.GP, True, "mov dword ptr [esp + 16], 0x10\n"),
                x86.DE: logging_handler(x86.DE, False, "mov dword ptr [esp + 24], 1\n"),
                CALLEE_VEC: "mov dword ptr [0x4fe0], 0xcafe\nret\n"}
    return A.AsmGuest(body=body, handlers=handlers, paging=True)


def test_faults_in_translated_code_are_precise():
    """Each fault is presented at the guest instruction, with the guest's
    registers (EAX and ECX parked by a sequence come back), its EFLAGS (the
    virtual IF, the arithmetic flags set just before), its ESP, error code
    and CR2; the handler fixes the cause and the instruction is retried."""
    m, nlog = assert_like_native(precise_guest(), status=0)
    vectors = [nlog[16 * k] for k in range(11)]
    assert vectors == [x86.PF, 0x99, x86.GP, 0x99, x86.DE, 0x99, x86.PF, 0x99, 0x99, x86.PF, 0x99]
    assert nlog[16 * 2 + 1] == 0x48 and nlog[16 * 9 + 4] & x86.IF == 0
    assert nlog[16 * 0 + 4] & (x86.IF | 1) == x86.IF | 1          # IF and CF as pushed
    assert m.counters["exit.pf.hidden"] > 0


@pytest.mark.parametrize("insn", ["call dword ptr [0x608000]", f"call {CALLEE:#x}", "pushfd"],
                         ids=["call-mem", "call-rel", "pushf"])
def test_a_faulting_push_is_precise(insn):
    """A push onto an unmapped stack page: natively #PF, whose frame cannot be
    pushed either, so #DF, then a triple fault.  Under bt the push stands in
    a sequence (after the load of `call [mem]`, with the target in EAX); the
    end must be native's, at the same instruction with the same registers."""
    body = (f"mov dword ptr [0x608000], {CALLEE:#x}\n" + unmap(0x604000) + "mov esp, 0x605000\n"
            + registers(7) + "stc\nsti\n" + insn + "\n" + A.exit_with(0))
    g = A.AsmGuest(body=body, handlers={CALLEE_VEC: "ret\n"}, paging=True)
    ends = {}
    for cls in (Native, Bt):
        m = Machine(cls(), budget=Budget(ROOMY, 100_000))
        try:
            m.boot(BootSpec(A.build(g)))
            out = m.run()
            st = m.state
            ends[cls.name] = (out.ok, chain_of(out.reason), m.guest_pc(),
                              {r: st.reg(r) for r in ("eax", "ecx", "edx", "ebx", "esi", "edi",
                                                       "ebp", "esp")})
        finally:
            m.close()
    assert ends["native"][0] is False and "triple fault" in ends["native"][1]
    assert ends["bt"] == ends["native"]


# -- 6. coherence -------------------------------------------------------------------------------
def self_patching_guest():
    alias = 0x700000
    body = (
        # 1. patch the immediate of an instruction further on in the same
        # unit, three times around a loop
        f"mov edi, {LOG:#x}\nmov ecx, 0x21\n"
        "again:\nmov byte ptr [patch + 1], cl\n"
        "patch:\nmov eax, 0x11\nmov [edi], eax\nadd edi, 4\ninc ecx\ncmp ecx, 0x24\njne again\n"
        # 2. patch the very next instruction
        "mov byte ptr [nxt + 1], 2\nnxt:\nmov ebx, 1\nmov [edi], ebx\nadd edi, 4\n"
        # 3. patch through another mapping of the same frame
        "lea eax, [aliased + 1]\nmov edx, eax\nand edx, 0xfffff000\nor edx, 7\n"
        f"mov [{pte(alias):#x}], edx\ninvlpg [{alias:#x}]\n"
        f"and eax, 0xfff\nor eax, {alias:#x}\nmov byte ptr [eax], 0x77\n"
        "aliased:\nmov esi, 0x55\nmov [edi], esi\nadd edi, 4\n"
        # 4. code written into a data page, called, written again and called
        "mov dword ptr [0x300000], 0x001234b8\nmov word ptr [0x300004], 0xc300\n"
        "mov ebx, 0x300000\ncall ebx\nmov [edi], eax\nadd edi, 4\n"
        "lea esi, [src2]\nmov edx, edi\nmov edi, 0x300000\nmov ecx, src2_end - src2\ncld\nrep movsb\n"
        "mov edi, edx\nmov ecx, 0x10\ncall ebx\nmov [edi], eax\nadd edi, 4\n"
        # ... and once more, shorter code, through a direct call
        "mov word ptr [0x300000], 0xc340\ncall 0x300000\nmov [edi], eax\nadd edi, 4\n"
        + A.exit_with(0) +
        "src2:\nmov eax, 0x5678\nadd eax, ecx\nret\nsrc2_end:\n")
    return A.AsmGuest(body=body, paging=True)


def test_code_the_kernel_writes_runs_as_written():
    m, nlog = assert_like_native(self_patching_guest(), status=0)
    assert nlog[:8] == [0x21, 0x22, 0x23, 2, 0x77, 0x1234, 0x5688, 0x5689]
    assert m.counters["bt.invalidate"] > 0


@pytest.mark.parametrize("paging", [True, False], ids=["paging", "flat"])
def test_code_written_with_paging_off_or_on_runs_as_written(paging):
    body = ("mov dword ptr [0x300000], 0x000001b8\nmov word ptr [0x300004], 0xc300\n"
            "mov ebx, 0x300000\ncall ebx\n" f"mov [{LOG:#x}], eax\n"
            "mov byte ptr [0x300001], 2\ncall ebx\n" f"mov [{LOG + 4:#x}], eax\n" + A.exit_with(0))
    m, nlog = assert_like_native(A.AsmGuest(body=body, paging=paging), status=0)
    assert nlog[:2] == [1, 2] and m.counters["bt.invalidate"] > 0


def test_a_small_tc_is_flushed_and_the_guest_does_not_notice(monkeypatch):
    """The TC is bounded (layout.TC_SIZE); when it is full it is emptied
    whole.  With room for a couple of units at a time, micro.fork flushes
    many times and still matches native."""
    monkeypatch.setattr(L, "TC_END", L.TC + 0x1000)
    r = virtlab.run("micro.fork", "bt", scale=2, model=False)
    assert r.ok and r.matches_native, r.reason
    assert r.counters["bt.tc.flush"] > 10
    assert_identities(r.counters, "micro.fork, small TC")


def loop_guest():
    body = ("mov ecx, 0\nmov ebx, 0\nagain: add ebx, ecx\nmov eax, ebx\nmov edx, 7\nimul eax, edx\n"
            "inc ecx\ncmp ecx, 5\njne again\n"
            f"mov [{LOG:#x}], ebx\nmov [{LOG + 4:#x}], eax\ncall f\n" + A.exit_with(0)
            + f"f: mov dword ptr [{LOG + 8:#x}], 9\nret\n")
    return A.AsmGuest(body=body, paging=True)


def test_a_tc_of_one_unit_flushes_at_every_translation(monkeypatch):
    """The smallest TC the cache allows holds one unit (MAX_UNIT_BYTES):
    every translation but the first after a flush flushes.  A chain callout
    then translates its target into an emptied TC; the exit it came from
    belongs to a unit that no longer exists and must not be patched."""
    monkeypatch.setattr(L, "TC_END", L.TC + MAX_UNIT_BYTES)
    m, nlog = assert_like_native(loop_guest(), status=0)
    assert nlog[:3] == [10, 70, 9]
    assert m.counters["bt.tc.flush"] > 3


# -- user code's descriptor reads ------------------------------------------------------
def test_user_lar_lsl_verr_and_verw_read_the_guests_gdt_not_the_shadow():
    """User code is not translated, so lar, lsl, verr and verw there would read
    the shadow GDT, whose user segments show accessed where the guest's do
    not (and a segment not loaded yet, not present).  They exit and are
    answered from the guest's GDT, as natively, refusals included (a DPL-1
    segment and the TSS from ring 3)."""
    ring3 = "".join(f"mov ecx, {sel:#x}\nlar eax, ecx\n" + store(i)
                    for i, sel in enumerate((A.UDATA, A.UCODE, A.R1DATA)))
    ring3 += (f"mov ecx, {A.TSS_SEL:#x}\nlsl eax, ecx\n" + store(3)
              + f"mov ecx, {A.R1DATA:#x}\nlsl eax, ecx\n" + store(4)
              + f"mov ecx, {A.KDATA:#x}\nverr cx\nsetz al\nmov ecx, {A.UDATA:#x}\nverw cx\n"
              "setz ah\nmovzx eax, ax\n" + store(5) + "int 0x81\n")
    g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3=ring3,
                   handlers={0x81: A.exit_with(0)}, user_vectors=(0x81,))
    m, nlog = assert_like_native(g, status=0)
    assert nlog[5] == 0x100                          # kernel data unreadable, user data writable
    assert m.counters["exit.priv.lar"] == 3 and m.counters["exit.priv.lsl"] == 2


# -- 7. faithfulness of translated kernel code ------------------------------------------------------
def probe(body, **kw):
    return A.AsmGuest(body=body + A.exit_with(0), handlers={**RECORD, **kw.pop("handlers", {})},
                      paging=True, **kw)


def store(i, reg="eax"):
    return f"mov [{LOG + 4 * i:#x}], {reg}\n"


def test_16bit_pushf_shows_the_virtual_interrupt_flag():
    """pushfw (66 9C) pushes FLAGS, IF included: with the kernel's IF clear
    natively 0 there, and 1 after sti."""
    body = ("cli\n.byte 0x66, 0x9c\npop ax\nmovzx eax, ax\n" + store(0)
            + "sti\n.byte 0x66, 0x9c\npop ax\nmovzx eax, ax\n" + store(1) + "cli\n")
    assert_like_native(probe(body), status=0)


def test_16bit_popf_sets_the_virtual_interrupt_flag():
    body = ("cli\npush 0x202\n.byte 0x66, 0x9d\npop ax\npushfd\npop eax\n" + store(0) + "cli\n")
    assert_like_native(probe(body), status=0)


def test_pop_ss_and_lss_load_the_kernels_stack_segment():
    """Loads of SS with the kernel's RPL-0 selector: at real ring 1 the CPU
    refuses them (#GP), so they cannot be copied unchanged."""
    body = (f"push {A.KDATA}\npop ss\nmov eax, ss\n" + store(0)
            + f"mov dword ptr [0x6000], 0x8fff0\nmov dword ptr [0x6004], {A.KDATA}\n"
            "lss esp, [0x6000]\nmov eax, esp\n" + store(1) + "mov eax, ss\n" + store(2)
            + f"mov esp, {A.STACK0:#x}\n")
    assert_like_native(probe(body), status=0)


def test_an_instruction_straddling_into_an_unmapped_page_is_a_page_fault():
    """mov eax, imm32 with its last three bytes on a page that is not
    present: natively #PF with CR2 at the second page, not #UD."""
    body = ("mov dword ptr [0x400ffe], 0x3344b8\nmov word ptr [0x401002], 0x5566\n"
            + unmap(0x401000) + "mov eax, 0x400ffe\njmp eax\n")
    m, nlog = assert_like_native(probe(body), status=x86.PF)
    assert nlog[1] == 0x401000


@pytest.mark.parametrize("opcode", [b"\x0f\xff", b"\x0f\xb9\xc0"], ids=["ud0", "ud1"])
def test_invalid_opcodes_capstone_decodes_are_the_guests_ud(opcode):
    """ud0 and ud1 are defined to raise #UD; capstone decodes them, so the
    translator sees an instruction, but the guest must still get its #UD."""
    body = ".byte " + ", ".join(f"{b:#x}" for b in opcode) + "\n"
    assert_like_native(probe(body), status=x86.UD)


SEG_BASE = 0x100000
IN_SEG = A.HANDLERS + 0xF0 * 0x100          # code run through a CS with base SEG_BASE


def based_code_segment(code, extra=None):
    """Run `code` (at IN_SEG) through a code segment of base SEG_BASE, so that
    EIP = linear - SEG_BASE (descriptor 0x40 in a copy of the GDT)."""
    body = with_gdt([x86.make_segment(SEG_BASE, 0xFFFFF, 0x9A)], far_jmp(0x40, IN_SEG - SEG_BASE))
    return A.AsmGuest(body=body, handlers={**RECORD, 0xF0: code, **(extra or {})}, paging=True)


def with_gdt(descriptors, then, at=0x6000):
    """A copy of the asm guest's GDT with `descriptors` from selector 0x40,
    loaded, then `then`."""
    dwords = list(struct.unpack("<16I", A._gdt()))
    for d in descriptors:
        dwords += struct.unpack("<II", d)
    return ("".join(f"mov dword ptr [{at + 4 * i:#x}], {w:#x}\n" for i, w in enumerate(dwords))
            + f"mov word ptr [{at + 0x100:#x}], {4 * len(dwords) - 1:#x}\n"
            + f"mov dword ptr [{at + 0x102:#x}], {at:#x}\nlgdt [{at + 0x100:#x}]\n" + then)


# bt translates kernel code keyed by linear address and addresses the vCPU
# page absolutely, so it needs flat kernel segments (docs/bt.md, known
# limits); a kernel with a based code segment must fail with that reason,
# never run on wrongly.
def test_call_in_a_code_segment_with_a_base_fails_with_the_documented_limit():
    code = ("call f\nf: pop eax\n" + store(0) + "call g\n" + store(1, "ebx")
            + A.exit_with(0) + "g: mov ebx, [esp]\nret\n")
    _, out = boot(Bt, based_code_segment(code))
    assert not out.ok and "bt needs flat kernel segments" in out.reason, out.reason


def test_indirect_jump_in_a_code_segment_with_a_base_fails_with_the_documented_limit():
    target = A.HANDLERS + 0xF1 * 0x100
    code = f"mov eax, {target - SEG_BASE:#x}\njmp eax\n"
    g = based_code_segment(code, {0xF1: f"mov dword ptr [{LOG:#x}], 0x42\n" + A.exit_with(4)})
    _, out = boot(Bt, g)
    assert not out.ok and "bt needs flat kernel segments" in out.reason, out.reason


def test_a_data_segment_with_a_base_loaded_in_translated_code_fails_with_the_documented_limit():
    # The cli after it writes the virtual IF through DS: at a based DS it
    # faulted inside the TC, and the run ended calling that a VMM bug.
    body = with_gdt([x86.make_segment(0x1000, 0xFFFFF, 0x92)],
                    "mov ax, 0x40\nmov ds, ax\ncli\nmov ax, 0x10\nmov ds, ax\n" + A.exit_with(0))
    _, out = boot(Bt, A.AsmGuest(body=body, paging=True))
    assert not out.ok and "bt needs flat kernel segments" in out.reason, out.reason


def test_single_stepping_the_kernel_fails_with_the_documented_limit():
    """popf with TF set would single-step the TC's own sequences: bt does not
    virtualize the trap flag (docs/bt.md), and says so instead of running on."""
    db = (f"inc dword ptr [{LOG:#x}]\ncmp dword ptr [{LOG:#x}], 5\njb out\n"
          "and dword ptr [esp + 8], 0xfffffeff\nout: iretd\n")
    body = "pushfd\nor dword ptr [esp], 0x100\npopfd\n" + "nop\n" * 8
    _, out = boot(Bt, probe(body, handlers={1: db}))
    assert not out.ok and "single-stepping the guest kernel" in out.reason, out.reason


class ProfiledBt(Bt):
    profile = True                  # count every unit's executions (virtlab translate)


def test_profiling_counts_the_executions_of_each_unit():
    g = loop_guest()
    nm, nout, nlog = native(g)
    m, out = boot(ProfiledBt, g)
    assert out.ok, out.reason
    assert log(m, 3) == nlog[:3]
    cache = m.backend.cache
    loop = next(u for u in cache.units if u.guest_end - u.guest < 40 and
                any(ex.target == u.guest for ex in u.exits))
    # Five times through the loop's first instruction, whichever units hold
    # it (the unit that falls into the loop may hold the first pass).
    assert sum(cache.executions(u) for u in cache.units
               if u.guest <= loop.guest < u.guest_end) == 5


@pytest.mark.parametrize("insn,esp", [
    ("iretd", 0x601000), ("iretd", 0x600FFC), ("iretd", 0x600FF8), ("iretd", 0x600FFE),
    ("retf", 0x601000), ("retf", 0x600FFC), ("retf", 0x600FFE)],
    ids=["iretd-eip", "iretd-cs", "iretd-eflags", "iretd-straddling",
         "retf-eip", "retf-cs", "retf-straddling"])
def test_a_return_whose_frame_is_not_mapped_is_a_page_fault_at_it(insn, esp):
    """The iret and retf callouts read the frame before they decide
    anything: a word of it (EIP, CS or EFLAGS, or one straddling the page
    end) on a page that is not present is the guest's #PF, at the
    instruction itself, with the CR2 of the first word the CPU pops that is
    not mapped, as natively."""
    body = unmap(0x601000) + f"mov esp, {esp:#x}\n{insn}\n"
    m, nlog = assert_like_native(probe(body), status=x86.PF)
    assert nlog[1] == 0x601000


def _trace_events(backend):
    import io
    import json
    from virtlab.cli import main
    out = io.StringIO()
    assert main(["trace", "nano.crwr", "--backend", backend, "--scale", "2", "--format", "json",
                 "--limit", "500"], out=out) == 0
    return json.loads(out.getvalue())["events"]


def test_trace_shows_each_emulating_callout_at_the_instruction_it_stands_for():
    # The callout's `int` is the last thing in its instruction's translation,
    # so the address after it may already be the next instruction's: the
    # trace showed `test ebx, ebx` for the `mov esi, cr0` it emulated.  The
    # same instructions that trap emulates at #GP, at the same addresses.
    trap = [(e["eip"], e["instruction"]) for e in _trace_events("trap") if e["cause"] == "#GP"]
    bt = [(e["eip"], e["instruction"]) for e in _trace_events("bt")
          if e["cause"] == "callout emulate"]
    assert bt == trap
    assert [i for _, i in bt] == ["mov esi, cr0", "mov cr0, esi", "mov cr0, esi"]
