"""Stores to the guest's own page tables, which shadow paging traces.

Under trap, hw and bt every frame holding a guest page table is read-only to
the CPU, so each store to an entry faults and the VMM performs it
(vmm/pt_store.py).  Each guest here makes one kind of store to a page-table
entry in use, with the lock prefix kernels put on them, and logs what a
native CPU leaves: the entry, the registers the instruction may write, and
the flags.  Every back end must leave the same, and the shadow-paging ones
must have performed the store (a traced write), not given up tracing the
table.
"""
import struct

import pytest

from virtlab import asmguest as A
from virtlab.backend import create
from virtlab.machine import BootSpec, Machine

# The PTE of linear 0x400000 in asmguest's page tables (mapped, in use: the
# guest reads through it first, so the shadow holds an entry derived from it).
PTE = A.PGTAB + (0x400000 >> 12) * 4
LOG = 0x5000

# name -> (set-up, the store).  The entry holds 0x400067 before each.
STORES = {
    "mov": ("mov eax, 0x400063", f"mov dword ptr [{PTE:#x}], eax"),
    "lock xchg": ("mov eax, 0x400023", f"lock xchg dword ptr [{PTE:#x}], eax"),
    "lock and": ("", f"lock and dword ptr [{PTE:#x}], 0xffffffdf"),
    "lock or": ("", f"lock or dword ptr [{PTE:#x}], 0x100"),
    "xor": ("mov eax, 0x40", f"xor dword ptr [{PTE:#x}], eax"),
    "lock btr": ("", f"lock btr dword ptr [{PTE:#x}], 5"),
    "lock bts": ("", f"lock bts dword ptr [{PTE:#x}], 8"),
    "btc": ("", f"btc dword ptr [{PTE:#x}], 6"),
    "lock cmpxchg (equal)": ("mov eax, 0x400067\nmov ecx, 0x400007",
                             f"lock cmpxchg dword ptr [{PTE:#x}], ecx"),
    "lock cmpxchg (not equal)": ("mov eax, 0x12345678\nmov ecx, 0x400007",
                                 f"lock cmpxchg dword ptr [{PTE:#x}], ecx"),
    # (The next entry, 0x401007, is the high half of the 64 bits compared.)
    "lock cmpxchg8b (equal)": ("mov eax, 0x400067\nmov edx, 0x401007\nmov ebx, 0x400027\n"
                               "mov ecx, 0x401007", f"lock cmpxchg8b qword ptr [{PTE:#x}]"),
    "cmpxchg8b (not equal)": ("mov eax, 1\nmov edx, 2\nmov ebx, 3\nmov ecx, 4",
                              f"cmpxchg8b qword ptr [{PTE:#x}]"),
}


def _guest(setup, store):
    # Flags set to a known mixture first, so that the ones a store leaves
    # alone are seen to stay.
    body = (f"mov [0x400000], eax\n"                 # use the entry (A, D): a shadow entry from it
            f"mov eax, 0xac5\npush eax\npopfd\n"      # CF, PF, ZF, SF, IF, OF
            f"{setup}\n{store}\n"
            f"pushfd\npop esi\n"
            f"mov [{LOG:#x}], eax\nmov [{LOG + 4:#x}], edx\nmov [{LOG + 8:#x}], esi\n"
            f"mov edi, [{PTE:#x}]\nmov [{LOG + 12:#x}], edi\n"
            f"mov edi, [{PTE + 4:#x}]\nmov [{LOG + 16:#x}], edi\n"
            f"invlpg [0x400000]\nmov eax, [0x400000]\n"   # and the CPU uses the new entry
            + A.exit_with(0))
    return A.build(A.AsmGuest(body=body, paging=True))


def _run(backend, image):
    with Machine(create(backend)) as m:
        m.boot(BootSpec(image))
        out = m.run()
        assert out.ok and out.exit_status == 0, out.reason
        return struct.unpack("<5I", m.mem.read(LOG, 20)), dict(m.counters.items())


@pytest.mark.parametrize("backend", ["trap", "hw", "bt"])
@pytest.mark.parametrize("name", list(STORES))
def test_a_store_to_a_page_table_is_performed_as_natively(name, backend):
    image = _guest(*STORES[name])
    want, _ = _run("native", image)
    got, counters = _run(backend, image)
    assert got == want, f"{name}: {[hex(x) for x in got]} != {[hex(x) for x in want]}"
    assert counters.get("shadow.trace", 0) >= 1 and not counters.get("shadow.unshadow"), counters


def test_the_native_results_are_the_instructions():
    """A check of the guests themselves: what each store leaves natively."""
    def entry(name):
        return _run("native", _guest(*STORES[name]))[0]
    assert entry("lock and")[3] == 0x400047
    assert entry("lock btr")[3] == 0x400047 and entry("lock btr")[2] & 1      # CF: the old bit
    cmp_eq, cmp_ne = entry("lock cmpxchg (equal)"), entry("lock cmpxchg (not equal)")
    assert cmp_eq[3] == 0x400007 and cmp_eq[2] & 0x40                            # ZF
    assert cmp_ne[3] == 0x400067 and cmp_ne[0] == 0x400067 and not cmp_ne[2] & 0x40
    eq8, ne8 = entry("lock cmpxchg8b (equal)"), entry("cmpxchg8b (not equal)")
    assert eq8[3] == 0x400027 and eq8[4] == 0x401007 and eq8[2] & 0x40
    assert (ne8[0], ne8[1]) == (0x400067, 0x401007) and not ne8[2] & 0x40
