"""Differential tests of the MMUs: generated guest-kernel sequences that also
rewrite a page-table entry of their own (seqgen.py, `mmu=True`), run natively
and under each back end with paging, must end in the same state.

Each such sequence maps its window page (WINDOWS + 4 KiB per sequence) to the
page of its own block, read-write, read-only or supervisor-only, or to
nothing, now and then by writing the entry through the window itself mapped
onto its page table; flushes the TLB for it with invlpg or a CR3 reload;
then reads or writes through it, or reads the entry back with the accessed
and dirty bits the CPU set in it.  What is searched: the shadow MMUs of trap, hw and bt
(a traced page-table write, a shadow entry dropped and filled again, the
accessed and dirty bits given back to the guest's entry, a page reached
through two addresses), and the guest's own tables under hw-npt.  A failure
names the seed and index that reproduce it:

    python benchmarks/bt_differential.py --backends bt --mmu --seed S --index I --shrink
"""

import pytest

from differential import Images
from virtlab import seqgen as G

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


def test_mmu_sequences_run_in_the_kernel_with_paging():
    with pytest.raises(ValueError, match="kernel, with paging"):
        G.generate(0, 0, paging=False, mmu=True)
    with pytest.raises(ValueError, match="kernel, with paging"):
        G.generate(1, 0, paging=True, user=True, mmu=True)
