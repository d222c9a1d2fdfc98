"""Differential tests of the MMUs: generated guest-kernel sequences that also
rewrite a page-table entry of their own (seqgen.py, `mmu=True`), run natively
and under each back end with paging, must end in the same state.

Each such sequence maps its window page (WINDOWS + 4 KiB per sequence) to the
page of its own block, read-write, read-only or supervisor-only, or to
nothing, now and then by writing the entry through the window itself mapped
onto its page table; flushes the TLB for it with invlpg or a CR3 reload;
then reads or writes through it, or reads the entry back with the accessed
and dirty bits the CPU set in it.  They also map a 4 MiB slot of their own
onto the first 4 MiB (CR4.PSE set first) and use it, now and then to write
the window's page-table entry through it; and set or clear CR0.WP and
CR4.PSE (each sequence starts with WP set and PSE clear).  What is searched:
the shadow MMUs of trap, hw and bt (a traced page-table write, a shadow entry
dropped and filled again, the accessed and dirty bits given back to the
guest's entry, a page reached through two addresses, a large page split into
small shadow entries, write rights under CR0.WP), and the guest's own tables
under hw-npt.  A failure names the seed and index that reproduce it:

    python benchmarks/bt_differential.py --backends bt --mmu --seed S --index I --shrink
"""

import dataclasses
import re

import pytest

from differential import Images
from virtlab import asmseq as S, seqgen as G, x86

PER_IMAGE = 100
SEEDS = tuple(range(4))


IMAGES = Images(PER_IMAGE, mmu=True)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("backend", ["bt", "hw", "hw-npt"])
def test_mmu_sequences_end_as_natively(backend, seed):
    IMAGES.check(backend, seed, False)


@pytest.mark.parametrize("seed", SEEDS)
def test_classic_mmu_sequences_end_as_natively_under_trap(seed):
    IMAGES.check("trap", seed, True)


# What the window items must do, as lines some sequence must have.
CLASSES = {
    "mapped read-write": r"^mov dword ptr \[0x14[0-9a-f]+\], 0x2[0-9a-f]{4}7$",
    "mapped read-only": r"^mov dword ptr \[0x14[0-9a-f]+\], 0x2[0-9a-f]{4}5$",
    "mapped for the kernel only": r"^mov dword ptr \[0x14[0-9a-f]+\], 0x2[0-9a-f]{4}3$",
    "unmapped": r"^mov dword ptr \[0x14[0-9a-f]+\], 0x0$",
    "invlpg": r"^invlpg byte ptr \[0x6[0-9a-f]{5}\]$",
    "CR3 reloaded": r"^mov cr3, e..$",
    "read through the window": r"^mov e.., dword ptr \[0x6[0-9a-f]{5}\]$",
    "written through the window": r"^(mov|add) dword ptr \[0x6[0-9a-f]{5}\], ",
    "the entry read back": r"^mov e.., dword ptr \[0x14[0-9a-f]+\]$",
    "the window onto its own page table": r"^mov dword ptr \[0x145[0-9a-f]{3}\], 0x145003$",
    "CR4.PSE set": r"^or e.., 0x10$",
    "a 4 MiB page, read-write": r"^mov dword ptr \[0x1434[0-9a-f]{2}\], 0x87$",
    "a 4 MiB page, read-only": r"^mov dword ptr \[0x1434[0-9a-f]{2}\], 0x85$",
    "a 4 MiB page for the kernel only": r"^mov dword ptr \[0x1434[0-9a-f]{2}\], 0x83$",
    "a 4 MiB page unmapped": r"^mov dword ptr \[0x1434[0-9a-f]{2}\], 0x0$",
    "read through the 4 MiB page": r"^mov e.., dword ptr \[0x4[0-9a-f]{7}\]$",
    "written through the 4 MiB page": r"^(mov|add) dword ptr \[0x4[0-9a-f]{7}\], ",
    "the window's entry written through the 4 MiB page":
        r"^mov dword ptr \[0x4[0-9a-f]{2}45[0-9a-f]{3}\], ",
    "the directory entry read back": r"^mov e.., dword ptr \[0x1434[0-9a-f]{2}\]$",
    "CR0.WP cleared": r"^and e.., 0xfffeffff$",
    "CR0.WP set": r"^or e.., 0x10000$",
    "CR4.PSE cleared": r"^and e.., 0xffffffef$",
}


def test_the_mmu_sequences_cover_the_window_items():
    missing = G.uncovered([s for seed in SEEDS for s in IMAGES.sequences(seed)], CLASSES)
    assert not missing, f"no generated line for: {missing}"


def test_the_native_reference_faults_through_the_window_now_and_then():
    """Some sequences end with the #PF of an unmapped or read-only window
    (CR2 in it), most run to their dump."""
    results = [r for seed in SEEDS for r in IMAGES.run("native", seed, False).results]
    window_faults = [r for r in results if r.fault and r.fault["vector+1"] - 1 == 14
                     and G.WINDOWS <= r.fault["cr2"] < G.WINDOWS + 0x100000]
    assert window_faults
    assert sum(r.dumped for r in results) > len(results) // 2


def _short_spans(lines):
    """The lines that each jecxz or loop (8-bit displacements only) jumps
    over: from the branch to its label, or from the label back to it."""
    at = {line[:-1]: i for i, line in enumerate(lines) if line.endswith(":")}
    for i, line in enumerate(lines):
        op, _, target = line.partition(" ")
        if op in ("jecxz", "loop") and target in at:
            j = at[target]
            yield lines[min(i, j) + 1:max(i, j)]


def test_no_mmu_item_lies_where_an_8_bit_branch_jumps_over_it():
    """keystone wraps a jecxz or loop displacement that does not reach
    (docs/unicorn.md, item 43): the MMU items, long with absolute addresses,
    are kept out of what such a branch jumps over (one that got there sent
    seed 20,211 round two sequences forever).  Over 3,000 sequences."""
    mmu_line = re.compile(r"dword ptr \[0x(14[35][0-9a-f]{3}|6[0-9a-f]{5}|[4-7][0-9a-f]{7})\]")
    spans = 0
    for seed in range(30):
        for seq in G.batch(seed, 100, mmu=True, classic=bool(seed & 1)):
            for span in _short_spans(seq.lines()):
                spans += 1
                assert not any(mmu_line.search(line) for line in span), (seq.source(), span)
    assert spans > 100


def test_mmu_sequences_run_in_the_kernel_with_paging():
    with pytest.raises(ValueError, match="kernel, with paging"):
        G.generate(0, 0, paging=False, mmu=True)
    with pytest.raises(ValueError, match="kernel, with paging"):
        G.generate(1, 0, paging=True, user=True, mmu=True)


# -- what the MMU sequences found --------------------------------------------------------
# (The flags that a faulting rcl or setcc loses: tests/test_lost_flags.py.)
def _mmu(backend, lines):
    """One handmade MMU sequence, classic for trap (which differs by design
    on what classic sequences leave out)."""
    return dataclasses.replace(G.handmade(0, lines, eflags=0x202, paging=True), mmu=True,
                               classic=backend == "trap")


@pytest.mark.parametrize("backend", ["trap", "hw", "hw-npt", "bt"])
def test_a_cr4_bit_the_cpu_lacks_is_dropped_as_natively(backend):
    """A page-table entry ANDed into CR4 set bit 21 (SMAP, which the CPU
    model lacks): its own mov drops it, the library's register write kept it
    under hw-npt, and the virtual CR4 of trap, hw and bt kept it too
    (docs/unicorn.md, item 41)."""
    seq = _mmu(backend, ["mov eax, 0x200010", "mov cr4, eax", "mov ebx, cr4",
                   "mov eax, 0x400000", "mov cr4, eax", "mov ecx, cr4"])
    ref, other = S.run("native", [seq]), S.run(backend, [seq])
    assert ref.results[0].dump["ebx"] == 0x10 and ref.results[0].dump["ecx"] == 0
    assert S.compare([seq], ref, other) == [], S.compare([seq], ref, other)[0].report()


def test_kept_control_register_is_what_the_cpu_models_own_mov_keeps():
    from virtlab.scratch_cpu import kept_control_register
    assert kept_control_register(4, 0x200010) == 0x10
    assert kept_control_register(4, x86.CR4_PSE | x86.CR4_PGE) == x86.CR4_PSE | x86.CR4_PGE
    assert kept_control_register(0, 0x80000001) == 0x80000011          # ET, always


@pytest.mark.parametrize("backend", ["trap", "hw", "hw-npt", "bt"])
def test_group_5_slash_7_of_memory_that_faults_raises_the_page_fault(backend):
    """FF /7 is no instruction, but the CPU model loads its memory operand
    first: from an unmapped page, #PF (natively, under every back end; bt
    made the #UD itself: docs/unicorn.md, item 42)."""
    seq = _mmu(backend, [f"mov eax, {S.UNMAPPED:#x}", ".byte 0xff, 0x38"])       # ff /7 [eax]
    ref, other = S.run("native", [seq]), S.run(backend, [seq])
    assert ref.results[0].fault["vector+1"] - 1 == x86.PF
    assert S.compare([seq], ref, other) == [], S.compare([seq], ref, other)[0].report()
