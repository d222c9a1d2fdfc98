"""The hypervisor's invariants, checked from scratch.

frames.py keeps type counts incrementally, entry by entry.  This file
recomputes what they must be from the page tables themselves and says where
they disagree, or where anything the guest controls could reach what it must
not.  The fuzzer runs it after every hypercall; tests run it after whole
workloads.  It reads only; it changes nothing.

  1. CR3 is the base pointer, a page directory the hypervisor validated.
  2. Every validated directory holds the hypervisor's slots unchanged (all of
     1008 up: its own entries, every other one empty), and its
     guest slots point only at validated page tables of the domain.
  3. Every entry of a validated page table maps a frame of the domain (or its
     shared-info page), and no writable entry maps a page table.
  4. Every type count equals the references that the tables, pins and the
     hypervisor's own writable mappings (the block ring) hold.
"""
from collections import Counter

import numpy as np

from virtlab import x86

from . import abi
from .frames import L1, L2, NONE, WRITABLE


# [tour pv 240] What must always hold, whatever the guest asks.
# Owned frames only, types and counts that match the tables, nothing writable that is
# a page table, the hypervisor's slots intact.  `python -m pv.fuzz` issues random
# hostile hypercalls and checks this after every one.
def check(hv):
    """The list of broken invariants of the PV hypervisor `hv` (empty if all
    hold)."""
    frames, mem = hv.frames, hv.machine.mem
    errors = []
    tables = _tables(frames)
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
    # (Which frames are tables, as sets: the same answer as frames.type_of,
    # asked once per present entry.)
    l1s, both = set(tables[L1]), set(tables[L1]) | set(tables[L2])
    for l2 in tables[L2]:
        _directory(frames, mem, l2, l1s, expected, errors)
    for l1 in tables[L1]:
        _table(frames, mem, l1, both, expected, errors)
    # Only a frame with a record can hold references, and only one the
    # tables refer to is expected to: the others agree (none, none).
    first, last, made = frames.first, frames.first + frames.nr, frames.frames
    wrong = []
    for mfn in {first + i for i in made}.union(m for m in expected if first <= m < last):
        f = made.get(mfn - first)
        kind = f.type if f is not None else NONE
        have = f.count if kind in (L1, L2, WRITABLE) else 0
        if have != expected[mfn]:
            wrong.append((mfn, f"frame {mfn:#x} ({kind}) counts {have} references, "
                               f"the tables hold {expected[mfn]}"))
    return errors + [why for _, why in sorted(wrong)]


_W = x86.PTE_W


def _tables(frames):
    """{L1: [mfn, ...], L2: [...]}: the frames that are page tables now (a
    type held by at least one reference: FrameTable.type_of)."""
    tables = {L1: [], L2: []}
    for mfn, f in frames.records():
        if f.count and f.type in tables:
            tables[f.type].append(mfn)
    return tables


def _entries(mem, mfn, count=1024):
    """The first `count` entries of page-table frame `mfn`, present ones only,
    as (index, entry).  (The fuzzer runs the check after every hypercall
    that changed a table: numpy's filter over the frame's words costs a
    fraction of a Python loop over them.)"""
    words = np.frombuffer(mem.view, dtype="<u4", count=count, offset=mfn << 12)
    present = np.flatnonzero(words & x86.PTE_P)
    return zip(present.tolist(), words[present].tolist())


def _directory(frames, mem, l2, l1s, expected, errors):
    words = mem.words
    for slot, value in frames.hypervisor_slots.items():
        if words[(l2 << 10) + slot] != value:
            errors.append(f"directory {l2:#x}: hypervisor slot {slot} was changed")
    for slot, e in _entries(mem, l2, abi.FIRST_HYPERVISOR_SLOT):
        target = e >> 12
        if target not in l1s:
            errors.append(f"directory {l2:#x} slot {slot} points at {target:#x}, "
                          "which is not a validated page table")
        expected[target] += 1


def _table(frames, mem, l1, tables, expected, errors):
    first, last, shared = frames.first, frames.first + frames.nr, frames.shared_info
    for i, e in _entries(mem, l1):
        target = e >> 12
        if target == shared:
            continue
        if not first <= target < last:                   # frames.owns(), inline
            errors.append(f"table {l1:#x} entry {i} maps frame {target:#x}, not the domain's")
            continue
        if e & _W:
            if target in tables:
                errors.append(f"table {l1:#x} entry {i} maps page table {target:#x} writable")
            expected[target] += 1
