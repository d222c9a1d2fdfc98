"""PAE paging, turned on by a guest kernel, under every back end.

The CPU model advertises PAE and pages through PAE tables itself; virtlab's
page walk (memory.walk_pae) reads them for every event it delivers, and the
shadow MMU of trap, hw and bt shadows them in its own two-level tables
(vmm/pae.py).  One guest edits its PAE tables in every way that must reach
the shadows -- a page-table entry, a directory entry, a PDPTE, a page table
shared by two address spaces whose PDPTs share a page, a directory rewritten
by a bulk copy, a directory entry followed by only a CR3 reload (under which
a VMM keeps its shadow) -- and reads through each change; then its user code takes a
write fault on a read-only page that the kernel makes writable.  Every back
end must leave the log native leaves.
"""
import struct

import pytest

import pae_guest
from virtlab import asmguest as A
from virtlab.backend import create
from virtlab.machine import BootSpec, Machine

SHADOWING = ("trap", "hw", "bt")

TABLES = pae_guest.tables_on("""
mov dword ptr [0x62000 + 0x1f2 * 8], 0x1f2005
mov dword ptr [0x60020], 0x63001
mov dword ptr [0x63000], 0x62007
mov dword ptr [0x63008], 0x400087
mov dword ptr [0x64000], 0x400087
mov dword ptr [0x1f0000], 0xaaaa0000
mov dword ptr [0x1f1000], 0xbbbb1111
mov dword ptr [0x300000], 0xcccc2222""", cr0_bits=0x80010000)
TESTS = """
mov eax, [0x1f0000]
mov [0x5000], eax
mov dword ptr [0x62000 + 0x1f0 * 8], 0x1f1007
invlpg [0x1f0000]
mov eax, [0x1f0000]
mov [0x5004], eax
mov dword ptr [0x61010], 0x200087
mov eax, [0x500000]
mov [0x5008], eax
mov dword ptr [0x61010], 0x000087
invlpg [0x500000]
mov eax, [0x500000]
mov [0x500c], eax
mov dword ptr [0x61010], 0x400087
invlpg [0x400000]
mov dword ptr [0x400000], 0xdddd3333
mov eax, 0x60020
mov cr3, eax
mov eax, [0x200000]
mov [0x5010], eax
mov eax, [0x1f0000]
mov [0x5014], eax
mov dword ptr [0x62000 + 0x1f0 * 8], 0x1f0007
invlpg [0x1f0000]
mov eax, [0x1f0000]
mov [0x5018], eax
mov eax, 0x60000
mov cr3, eax
mov eax, [0x1f0000]
mov [0x501c], eax
mov dword ptr [0x60008], 0x64001
mov eax, cr3
mov cr3, eax
mov eax, [0x40000000]
mov [0x5020], eax
mov dword ptr [0x200000], 0xeeee4444
mov esi, 0x63000
mov edi, 0x65000
mov ecx, 1024
cld
rep movsd dword ptr es:[edi], dword ptr [esi]
mov dword ptr [0x65008], 0x200087
mov esi, 0x65000
mov edi, 0x63000
mov ecx, 1024
rep movsd dword ptr es:[edi], dword ptr [esi]
mov eax, 0x60020
mov cr3, eax
mov eax, [0x200000]
mov [0x5034], eax
mov eax, 0x60000
mov cr3, eax
mov dword ptr [0x61018], 0x400087
mov eax, [0x600000]
mov dword ptr [0x61018], 0x200087
mov eax, cr3
mov cr3, eax
mov eax, [0x600000]
mov [0x5038], eax
"""
RING3 = """
mov dword ptr [0x1f2000], 0x1234
mov eax, [0x1f2000]
mov [0x5024], eax
mov eax, [0x62000 + 0x1f2 * 8]
mov [0x5028], eax
int 0x81
"""
PF = """
pop eax
mov [0x502c], eax
mov eax, cr2
mov [0x5030], eax
mov dword ptr [0x62000 + 0x1f2 * 8], 0x1f2007
invlpg [0x1f2000]
iretd
"""


def _image():
    return A.build(A.AsmGuest(body=TABLES + TESTS + A.iret_to(3, A.RING3, A.STACK3), ring3=RING3,
                              handlers={14: PF, 0x81: A.exit_with(0)}, user_vectors=(0x81,)))


IMAGE = _image()


def _run(backend):
    with Machine(create(backend)) as m:
        m.boot(BootSpec(IMAGE))
        out = m.run()
        assert out.ok and out.exit_status == 0, out.reason
        return struct.unpack("<15I", m.mem.read(0x5000, 60)), dict(m.counters.items())


NATIVE = None


def _native():
    global NATIVE
    if NATIVE is None:
        NATIVE = _run("native")[0]
    return NATIVE


def test_native_reads_through_every_change():
    assert _native() == (0xaaaa0000, 0xbbbb1111, 0xcccc2222, _native()[3], 0xdddd3333,
                         0xbbbb1111, 0xaaaa0000, 0xaaaa0000, 0xdddd3333, 0x1234,
                         0x1f2067, 7, 0x1f2000, 0xeeee4444, 0xeeee4444)
    assert _native()[3] == struct.unpack_from("<I", IMAGE, 0)[0]   # 0x100000: the image


@pytest.mark.parametrize("backend", ["trap", "hw", "hw-npt", "bt"])
def test_every_back_end_leaves_natives_log(backend):
    log, counters = _run(backend)
    assert log == _native()
    if backend in SHADOWING:
        # The edits reached the shadows by tracing (one traced write each),
        # and the bulk copy over a directory ended its address space's shadow.
        assert counters["shadow.trace"] == 10 and counters["shadow.unshadow"] == 1, counters
        assert counters["exit.pf.true"] == 1


@pytest.mark.parametrize("backend", SHADOWING)
def test_the_same_counters_every_run(backend):
    assert _run(backend)[1] == _run(backend)[1]


# Execute-disable: the kernel sets EFER.NXE, marks a page XD and calls into it.
NX = (TABLES.replace("mov eax, cr4", "mov ecx, 0xc0000080\nrdmsr\nor eax, 0x800\nwrmsr\n"
                     "mov eax, cr4")
      + """
mov byte ptr [0x1f0000], 0xc3
mov dword ptr [0x62000 + 0x1f0 * 8 + 4], 0x80000000
invlpg [0x1f0000]
mov eax, 0x1f0000
call eax
""" + A.exit_with(0))
NX_FAULT = "pop ebx\nmov [0x5000], ebx\nmov eax, cr2\nmov [0x5004], eax\n" + A.exit_with(14)


@pytest.mark.parametrize("backend", ["native", "hw-npt"])
def test_execute_disable_where_the_cpu_walks_the_guests_tables(backend):
    """A fetch from an XD page is #PF with I/D set (0x11), natively and under
    nested paging, where the guest's EFER reaches the CPU as VM entry loads it."""
    with Machine(create(backend)) as m:
        m.boot(BootSpec(A.build(A.AsmGuest(body=NX, handlers={14: NX_FAULT}))))
        out = m.run()
        assert (out.exit_status, m.mem.u32(0x5000), m.mem.u32(0x5004)) == (14, 0x11, 0x1f0000)
