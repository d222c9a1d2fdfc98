"""Differential tests of binary translation: generated sequences of guest
kernel instructions, run natively and under `bt`, must end in the same
registers, flags (IF included: pushfd shows the guest's own, virtual under
bt), segment registers, memory, fault records, console and GDT.

The sequences come from virtlab/seqgen.py: PER_IMAGE of them to one guest
image, each from a start state of its own and followed by a dump, so one boot
per back end checks a hundred sequences.  They are seeded (SEEDS below) and
therefore the same on every run; a failure prints, for each sequence that
differs, its seed and index, its start state and code, and the two dumps,
which is all it takes to reproduce it:

    PYTHONPATH=. python benchmarks/bt_differential.py --seed S --index I [--shrink]

`hw` (VT-x) is run as a third opinion on the same images: it executes the
guest kernel at real ring 0, so where it agrees with native and bt does not,
the difference is bt's.  `trap` is left out: pushf, sgdt and the rest are
documented to show the real CPU under ring compression (test_differential.py).

The regression tests at the end hold, as hand-written sequences, the
differences the random ones found.
"""
import functools
import struct

import pytest

from virtlab import asmseq as S, asmguest as A, seqgen as G, x86
from virtlab.machine import BootSpec, Machine
from virtlab.backend import create

PER_IMAGE = 100
SEEDS = tuple(range(12))          # 1200 sequences; odd seeds run with paging on
HW_SEEDS = SEEDS[:4]              # the third opinion, on 400 of them


@functools.lru_cache(maxsize=None)
def sequences(seed):
    return tuple(G.batch(seed, PER_IMAGE))


@functools.lru_cache(maxsize=None)
def image(seed):
    return S.image(sequences(seed))


@functools.lru_cache(maxsize=None)
def native(seed):
    return S.run("native", sequences(seed), image(seed))


def test_the_native_reference_ran_every_sequence():
    """Each sequence of the reference either dumped its state or recorded an
    exception, and exceptions are the exception: otherwise the comparisons
    would be of nothing."""
    for seed in SEEDS[:4]:
        ref = native(seed)
        assert ref.ok, ref.reason
        assert all(r.dumped != (r.fault is not None) for r in ref.results)
        assert sum(r.fault is not None for r in ref.results) < PER_IMAGE // 5
        assert ref.console, "no sequence of the image wrote to the console"


@pytest.mark.parametrize("seed", SEEDS)
def test_bt_ends_in_the_same_state_as_native(seed):
    report = S.report(sequences(seed), native(seed), S.run("bt", sequences(seed),
                                                                  image(seed)))
    if report:
        pytest.fail(report, pytrace=False)


@pytest.mark.parametrize("seed", HW_SEEDS)
def test_hw_ends_in_the_same_state_as_native(seed):
    report = S.report(sequences(seed), native(seed), S.run("hw", sequences(seed),
                                                                  image(seed)))
    if report:
        pytest.fail(report, pytrace=False)


# -- what the sequences contain --------------------------------------------------------
# Each class of guest instruction the translator treats in its own way, as a
# pattern some generated line must match.
CLASSES = {
    "alu with a scratch operand": r"^(add|or|adc|sbb|and|sub|xor|cmp|test) .*ptr .*\[ebp",
    "lea": r"^lea e..?, \[",
    "mov to memory": r"^mov (byte|word|dword) ptr .*\], ",
    "push and pop": r"^pop e[a-d]x$",
    "pushfd and popfd": r"^popfd$",
    "cli": r"^cli$",
    "sti": r"^sti$",
    "IF set in a popped value": r"^or dword ptr \[esp\], 0x200$",
    "IF cleared in a popped value": r"^and dword ptr \[esp\], 0xfffffdff$",
    "16-bit pushf": r"^\.byte 0x66$",
    "forward jcc": r"^j(o|no|b|ae|e|ne|be|a|s|ns|p|np|l|ge|le|g) \{P\}L\d+$",
    "backward jcc on ECX": r"^jg \{P\}L\d+$",
    "loop": r"^loop ",
    "jecxz": r"^jecxz ",
    "direct call": r"^call \{P\}L\d+$",
    "ret n": r"^ret \d+$",
    "call through a register": r"^call e..$",
    "call through memory": r"^call dword ptr \[ebp",
    "call through a table": r"^call dword ptr \[\{P\}L\d+ \+",
    "jmp through a register": r"^jmp e..$",
    "jmp through a table": r"^jmp dword ptr \[\{P\}L\d+ \+",
    "jmp through memory": r"^jmp dword ptr \[ebp",
    "call next; pop": r"^pop e..$",
    "ret as a jump": r"^ret$",
    "code read as data": r"^mov e.., dword ptr \[\{P\}(L\d+|start_of)",
    "mov from cs": r"^mov e?.., cs$",
    "mov from ss": r"^mov e?.., ss$",
    "push cs": r"^\.byte 0xe$",
    "sgdt/sidt, 32-bit": r"^\.byte 0x0f, 0x01, 0x8[5d]$",
    "sgdt": r"^sgdt ",
    "sidt": r"^sidt ",
    "smsw": r"^smsw ",
    "str": r"^str ",
    "sldt": r"^sldt ",
    "lar": r"^lar ",
    "lsl": r"^lsl ",
    "verr": r"^verr ",
    "verw": r"^verw ",
    "xchg": r"^xchg ",
    "rep movs": r"^(rep movs|\.byte 0xf3, 0xa5)",
    "repe/repne cmps or scas": r"^rep(n?e) (cmps|scas)",
    "rep stos": r"^rep stos",
    "rdtsc": r"^rdtsc$",
    "int n": r"^int 0x4[01]$",
    "iretd": r"^iretd$",
    "far jmp/call": r"^(\.byte 0xea|\.byte 0x9a|lcall|ljmp)",
    "retf": r"^retf",
    "console output": r"^out dx, al$",
    "segment load": r"^mov [def]s, ",
    "control register read": r"^mov eax, cr[0234]$",
    "an exception on purpose": r"^(ud2|div ecx|int 0x(42|80|30))$",
    "code that rewrites code": r"^mov (dword|byte) ptr \[\{P\}L\d+ \+ \d\], ",
    "lgdt/lidt": r"^\.byte 0x0f, 0x01, 0x9[5d]$",
    "lldt": r"^lldt ",
    "mov to cr0, clts": r"^clts$",
    "wrmsr": r"^wrmsr$",
}


def test_the_sequences_cover_the_translator_classes():
    missing = G.uncovered([s for seed in SEEDS for s in sequences(seed)], CLASSES)
    assert not missing, f"no generated line for: {missing}"


def test_the_sequences_are_the_same_on_every_run():
    a, b = G.generate(7, 42, True), G.generate(7, 42, True)
    assert a.render() == b.render() and a.state == b.state and a.scratch == b.scratch
    assert G.generate(7, 43).render() != a.render()


def test_a_difference_is_reported_with_the_source_and_both_dumps():
    """`trap` shows the real IF to pushf (ring compression): the comparison
    must catch that, and say where."""
    seq = G.handmade(3, ["cli", "pushfd", "pop ebx"], eflags=0x202)
    ref, trap = S.run("native", [seq]), S.run("trap", [seq])
    (mismatch,) = S.compare([seq], ref, trap)
    text = mismatch.report()
    assert "seed=0 index=3" in text and "pushfd" in text
    assert f"ebx: {0x2:#010x} vs {0x202:#010x}" in text
    assert text.count("\n  eflags=") == 2 and "native:" in text and "trap:" in text
    assert mismatch.a.dump["ebx"] & x86.IF == 0


# -- what the random sequences found -------------------------------------------------------
# name -> (the sequence, the EFLAGS it starts with): each ends differently
# under bt.  The comments name a random sequence of SEEDS that shows it
# (benchmarks/bt_differential.py --seed S --index I --shrink reduces it).
FOUND = {
    # pushf with an operand-size prefix is copied unchanged into the TC, so it
    # pushes the real FLAGS: IF always set, IOPL 0 (seed 0, index 47)
    "pushf16-if": (["cli", ".byte 0x66", "pushfd", "pop ax"], 0x2),
    "pushf16-iopl": ([".byte 0x66", "pushfd", "pop ax"], 0x3202),
    # popf with an operand-size prefix likewise: the real popf at ring 1
    # ignores IF and IOPL, which stay as they were (seed 0, index 2)
    "popf16-if": (["push 0x46", ".byte 0x66", "popfd", "lea esp, [esp + 2]"], 0x202),
    "popf16-iopl": (["push 0x3246", ".byte 0x66", "popfd", "lea esp, [esp + 2]"], 0x202),
    # pop ss and lss run unchanged at ring 1 with the guest's RPL 0 selector:
    # #GP(0x10) where the guest loads SS without a fault (seed 0, index 65;
    # lss: seed 1, index 77)
    "pop-ss": ([".byte 0x16", ".byte 0x17"], 0x2),
    "lss": (["mov dword ptr [ebp], esp", "mov word ptr [ebp + 4], ss", "lss esp, [ebp]"], 0x2),
    # a segment load sets the accessed bit of its descriptor in the guest's
    # GDT; under bt the CPU sets it in the shadow GDT only, and lar, emulated
    # from the guest's GDT, misses it (seed 0, index 53)
    "lar-accessed": (["mov cx, 0x10", "lar ebx, ecx"], 0x2),
    # iret with NT set is a return from a task: #TS here (the TSS's back link
    # is null); bt returns as if NT were clear (seed 0, index 63)
    "iret-nt": (["pushfd", ".byte 0x0e", "mov eax, {P}L1", "push eax", "iretd", "ud2",
                 "{P}L1:"], 0x4002),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_bt_runs_the_found_sequence_as_native_does(name):
    lines, eflags = FOUND[name]
    seq = G.handmade(0, lines, eflags)
    ref, bt = S.run("native", [seq]), S.run("bt", [seq])
    assert ref.ok and bt.ok, (ref.reason, bt.reason)
    (ra,), (rb,) = ref.results, bt.results
    assert ra.block == rb.block, S.Mismatch(seq, ra, rb, ("native", "bt")).report()


def test_the_guest_gdt_shows_the_accessed_bits_of_loaded_segments():
    """The boot code loads DS, ES, SS, FS and GS with 0x10: natively the CPU
    sets the accessed bit of GDT entry 2 in guest memory."""
    seq = G.handmade(0, ["nop"])
    ref, bt = S.run("native", [seq]), S.run("bt", [seq])
    accessed = 1 << 8                          # the type field's A bit, high dword
    assert struct.unpack_from("<I", ref.gdt, 2 * 8 + 4)[0] & accessed
    assert bt.gdt == ref.gdt, S.image_differences(ref, bt)


def test_found_sequences_are_native_behaviour():
    """The reference side of FOUND, checked against the architecture."""
    def native_of(name):
        lines, eflags = FOUND[name]
        return S.run("native", [G.handmade(0, lines, eflags)]).results[0]
    assert native_of("pushf16-if").dump["eax"] & 0xFFFF == 0x0002
    assert native_of("pushf16-iopl").dump["eax"] & 0xFFFF == 0x3202
    assert native_of("popf16-if").dump["eflags"] & x86.IF == 0
    assert native_of("popf16-iopl").dump["eflags"] & x86.IOPL_MASK == x86.IOPL_MASK
    assert native_of("pop-ss").dumped and native_of("lss").dumped
    assert native_of("lar-accessed").dump["ebx"] == 0x00C09300
    assert native_of("iret-nt").fault["vector+1"] - 1 == x86.TS


# -- the reference itself ------------------------------------------------------------------
def test_native_cr2_is_what_the_guest_left_there():
    """An intercepted instruction (rdtsc) with paging on must not change CR2
    (docs/unicorn.md, item 17)."""
    body = ("mov eax, 0x1234000\nmov cr2, eax\nrdtsc\nmov eax, cr2\nmov [0x5000], eax\n"
            + A.exit_with(0))
    with Machine(create("native")) as m:
        m.boot(BootSpec(A.build(A.AsmGuest(body=body, paging=True))))
        assert m.run().ok
        assert struct.unpack_from("<I", m.mem.view, 0x5000)[0] == 0x1234000
