"""The software page walk (virtlab/memory.py) against the IA-32 MMU's rules:
two-level and PAE paging, large pages, rights, accessed and dirty bits, and
the #PF error code of each fault.  Every exception a platform delivers, and
every VMM read of guest-virtual memory, goes through it."""
import struct

import pytest

from virtlab import x86
from virtlab.memory import GuestMemoryFault, LinearView, PhysMem, translate, walk

RAM = 1 << 23                                   # 8 MiB
PG = x86.CR0_PE | x86.CR0_PG
P, W, U, A, D, PS = x86.PTE_P, x86.PTE_W, x86.PTE_U, x86.PTE_A, x86.PTE_D, x86.PTE_PS
PAE = x86.CR4_PAE

PDPT, PD, PT = 0x10000, 0x11000, 0x12000        # PAE tables
PD2, PT2 = 0x20000, 0x21000                     # two-level tables


def memory():
    buf = bytearray(RAM)
    return PhysMem(RAM, buf, memoryview(buf))


def q(mem, pa, value):
    struct.pack_into("<Q", mem.view, pa, value)


def u64(mem, pa):
    return struct.unpack_from("<Q", mem.view, pa)[0]


def pae_tables(mem, pte_flags=P | W | U, pde_flags=P | W | U):
    """Linear 0x40000000 (PDPTE 1, PDE 0, PTE 5) -> 0x300000 through a page
    table; 0x40200000 (PDE 1) a 2 MiB page at 0x200000."""
    q(mem, PDPT + 8, PD | P)
    q(mem, PD, PT | pde_flags)
    q(mem, PD + 8, 0x200000 | pde_flags | PS)
    q(mem, PT + 5 * 8, 0x300000 | pte_flags)


def test_pae_walk_through_three_levels():
    mem = memory()
    pae_tables(mem)
    assert walk(mem, PG, PDPT, PAE, 0x40005123) == 0x300123
    # The CPU sets the accessed bits of the entries it used (a PDPTE has none)
    # and the dirty bit of the last one only on a write.
    assert u64(mem, PD) & A and u64(mem, PT + 40) & A and not u64(mem, PT + 40) & D
    assert u64(mem, PDPT + 8) == PD | P
    walk(mem, PG, PDPT, PAE, 0x40005123, write=True)
    assert u64(mem, PT + 40) & D and not u64(mem, PD) & D


def test_pae_2mib_page_whatever_cr4_pse_says():
    mem = memory()
    pae_tables(mem)
    for cr4 in (PAE, PAE | x86.CR4_PSE):
        assert walk(mem, PG, PDPT, cr4, 0x40212345) == 0x212345


def test_cr3_of_a_pae_walk_is_32_byte_aligned():
    mem = memory()
    pae_tables(mem)
    assert walk(mem, PG, PDPT | 0x18, PAE, 0x40005000) == 0x300000   # low bits ignored


@pytest.mark.parametrize("linear, write, user, error", [
    (0x00005000, False, False, 0),                # PDPTE 0 not present
    (0xC0005000, True, True, x86.PF_W | x86.PF_U),  # PDPTE 3 not present
    (0x40400000, False, False, 0),                # PDE 2 not present
    (0x40006000, False, True, x86.PF_U),          # PTE 6 not present
])
def test_pae_not_present_faults(linear, write, user, error):
    mem = memory()
    pae_tables(mem)
    with pytest.raises(GuestMemoryFault) as e:
        walk(mem, PG, PDPT, PAE, linear, write, user)
    assert (e.value.linear, e.value.error_code) == (linear, error)


def test_pae_rights_of_both_levels():
    mem = memory()
    pae_tables(mem, pte_flags=P | U)              # read-only user page
    assert walk(mem, PG, PDPT, PAE, 0x40005000, user=True) == 0x300000
    with pytest.raises(GuestMemoryFault) as e:
        walk(mem, PG, PDPT, PAE, 0x40005000, write=True, user=True)
    assert e.value.error_code == x86.PF_P | x86.PF_W | x86.PF_U
    # The supervisor writes it unless CR0.WP.
    assert walk(mem, PG, PDPT, PAE, 0x40005000, write=True) == 0x300000
    with pytest.raises(GuestMemoryFault):
        walk(mem, PG | x86.CR0_WP, PDPT, PAE, 0x40005000, write=True)
    mem = memory()
    pae_tables(mem, pde_flags=P | W)              # a supervisor directory
    with pytest.raises(GuestMemoryFault) as e:
        walk(mem, PG, PDPT, PAE, 0x40005000, user=True)
    assert e.value.error_code == x86.PF_P | x86.PF_U


def test_pae_frames_above_4gib_are_beyond_ram():
    mem = memory()
    pae_tables(mem)
    q(mem, PT + 5 * 8, (1 << 32) | 0x300000 | P | W)
    with pytest.raises(GuestMemoryFault) as e:
        walk(mem, PG, PDPT, PAE, 0x40005000)
    assert e.value.error_code & x86.PF_P
    # Bit 63 (execute-disable) names no frame: the page is still RAM.
    q(mem, PT + 5 * 8, (1 << 63) | 0x300000 | P | W)
    assert walk(mem, PG, PDPT, PAE, 0x40005000) == 0x300000


def test_pae_and_two_level_walks_are_cached_apart():
    """One CR3 value read as PAE tables and as a two-level directory gives
    two translations: the cache key holds CR4.PAE."""
    mem = memory()
    pae_tables(mem)
    struct.pack_into("<I", mem.view, PDPT + 4 * 0x100, PT2 | P | W)   # PDE 0x100: 0x40000000
    struct.pack_into("<I", mem.view, PT2 + 5 * 4, 0x380000 | P | W)
    assert translate(mem, PG, PDPT, PAE, 0x40005000) == 0x300000
    assert translate(mem, PG, PDPT, 0, 0x40005000) == 0x380000
    assert LinearView(mem, PG, PDPT, PAE).phys(0x40005000) == 0x300000
    assert LinearView(mem, PG, PDPT, 0).phys(0x40005000) == 0x380000


def test_a_cached_pae_translation_follows_a_change_of_the_high_word():
    mem = memory()
    pae_tables(mem)
    assert translate(mem, PG, PDPT, PAE, 0x40005000) == 0x300000
    q(mem, PT + 5 * 8, (1 << 32) | 0x300000 | P | W | A)
    with pytest.raises(GuestMemoryFault):
        translate(mem, PG, PDPT, PAE, 0x40005000)


def test_two_level_walk_unchanged():
    mem = memory()
    struct.pack_into("<I", mem.view, PD2 + 4 * 1, PT2 | P | W | U)
    struct.pack_into("<I", mem.view, PT2 + 4 * 2, 0x305000 | P | W | U)
    struct.pack_into("<I", mem.view, PD2 + 4 * 2, 0x400000 | P | W | PS)
    assert walk(mem, PG, PD2, 0, 0x00402abc) == 0x305abc
    assert walk(mem, PG, PD2, x86.CR4_PSE, 0x00812345) == 0x412345     # a 4 MiB page
    with pytest.raises(GuestMemoryFault):
        walk(mem, PG, PD2, 0, 0x00812345)                # without PSE: PS ignored, a table
