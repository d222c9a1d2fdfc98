"""The hypervisor's invariants, checked from scratch.

frames.py keeps type counts incrementally, entry by entry.  This file
recomputes what they must be from the page tables themselves and says where
they disagree, or where anything the guest controls could reach what it must
not.  The fuzzer runs it after every hypercall; tests run it after whole
workloads.  It reads only; it changes nothing.

  1. CR3 is the base pointer, a page directory the hypervisor validated.
  2. Every validated directory holds the hypervisor's slots unchanged, and its
     guest slots point only at validated page tables of the domain.
  3. Every entry of a validated page table maps a frame of the domain (or its
     shared-info page), and no writable entry maps a page table.
  4. Every type count equals the references that the tables, pins and the
     hypervisor's own writable mappings (the block ring) hold.
"""
from collections import Counter

from virtlab import x86

from . import abi
from .frames import L1, L2, WRITABLE


# [tour pv 240] What must always hold, whatever the guest asks.
# Owned frames only, types and counts that match the tables, nothing writable that is
# a page table, the hypervisor's slots intact.  `python -m pv.fuzz` issues random
# hostile hypercalls and checks this after every one.
def check(hv):
    """The list of broken invariants of the PV hypervisor `hv` (empty if all
    hold)."""
    frames, mem = hv.frames, hv.machine.mem
    errors = []
    tables = {kind: [m for m in _owned(frames) if frames.type_of(m) == kind] for kind in (L1, L2)}
    expected = Counter()
    base = hv.mmu.baseptr
    if base is not None:
        expected[base] += 1
        if hv.machine.state.cr(3) >> 12 != base:
            errors.append(f"CR3 {hv.machine.state.cr(3):#x} is not the base pointer {base:#x}")
    for kind in (L1, L2):
        for mfn in tables[kind]:
            expected[mfn] += frames.frame(mfn).pinned
    for mfn, n in frames.held.items():            # the hypervisor's own writable mappings
        expected[mfn] += n
    for l2 in tables[L2]:
        _directory(frames, mem, l2, expected, errors)
    for l1 in tables[L1]:
        _table(frames, mem, l1, expected, errors)
    for mfn in _owned(frames):
        f = frames.frame(mfn)
        have = f.count if f.type in (L1, L2, WRITABLE) else 0
        if have != expected[mfn]:
            errors.append(f"frame {mfn:#x} ({f.type}) counts {have} references, "
                          f"the tables hold {expected[mfn]}")
    return errors


def _owned(frames):
    return range(frames.first, frames.first + frames.nr)


def _directory(frames, mem, l2, expected, errors):
    at = l2 << 12
    for slot, value in frames.hypervisor_slots.items():
        if mem.u32(at + 4 * slot) != value:
            errors.append(f"directory {l2:#x}: hypervisor slot {slot} was changed")
    for slot in range(abi.FIRST_HYPERVISOR_SLOT):
        e = mem.u32(at + 4 * slot)
        if not e & x86.PTE_P:
            continue
        target = e >> 12
        if frames.type_of(target) != L1:
            errors.append(f"directory {l2:#x} slot {slot} points at {target:#x}, "
                          "which is not a validated page table")
        expected[target] += 1


def _table(frames, mem, l1, expected, errors):
    raw = mem.read(l1 << 12, 4096)
    for i in range(1024):
        e = int.from_bytes(raw[4 * i:4 * i + 4], "little")
        if not e & x86.PTE_P:
            continue
        target = e >> 12
        if target == frames.shared_info:
            continue
        if not frames.owns(target):
            errors.append(f"table {l1:#x} entry {i} maps frame {target:#x}, not the domain's")
            continue
        if e & x86.PTE_W:
            if frames.type_of(target) in (L1, L2):
                errors.append(f"table {l1:#x} entry {i} maps page table {target:#x} writable")
            expected[target] += 1
