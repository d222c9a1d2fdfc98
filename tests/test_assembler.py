"""The assembler (virtlab/assembler.py) and the root cause of issue 9's flaky runs.

keystone 0.9.2 never initialises MCAsmInfo::Radix, and the binding's Ks() never
calls ks_option, its only writer: an engine built in a heap block that holds 16
at that place reads undecorated decimal literals as hex.  An asm guest's prologue
says `mov ax, 16` (the kernel data selector); read as 0x16 it has the same length
(66 b8 16 00), so `mov ds, ax` stays at 0x100014 and loads selector 0x16 (TI=1,
the null LDT): #GP(0x14) before any IDT, the triple fault of issue 9.

These tests recreate the heap condition (freed blocks of every small size class
filled with 16; nothing in keystone or virtlab is patched), show the failure
with a plain engine, and show that a checked engine and a guest assembled in
that heap are right.  Where the platform's allocator does not hand the garbage
to keystone, the condition cannot be recreated and they skip.
"""
import ctypes
import ctypes.util
import struct
import sys

import pytest
from keystone import Ks, KS_ARCH_X86, KS_MODE_32

from virtlab import asmguest as A, assembler
from virtlab.assembler import AssemblerError, assemble
from virtlab.machine import BootSpec, Machine
from virtlab.native import Native

MOV_AX_16 = b"\x66\xb8\x10\x00"          # mov ax, 0x10 (KDATA)
MOV_AX_0x16 = b"\x66\xb8\x16\x00"        # what a radix-16 engine makes of `mov ax, 16`
MOV_DS_AX = b"\x66\x8e\xd8"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the heap condition is recreated through glibc malloc")


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


def poison_heap(value=16, sizes=range(24, 1040, 16), per_size=8):
    """Leave freed malloc blocks of every small size class whose every 32-bit
    word is `value`: the garbage a new engine's MCAsmInfo may be built in."""
    libc = _libc()
    blocks = []
    for size in sizes:
        for _ in range(per_size):
            p = libc.malloc(size)
            ctypes.memmove(p, struct.pack("<I", value) * (size // 4), size // 4 * 4)
            blocks.append(p)
    for p in reversed(blocks):
        libc.free(p)


def reads_decimal_as_hex(ks):
    return bytes(ks.asm("push 16", 0)[0]) == b"\x6a\x16"


def poisoned():
    """Recreate the condition (a plain engine now reads hex), or skip."""
    for _ in range(20):
        poison_heap()
        if reads_decimal_as_hex(Ks(KS_ARCH_X86, KS_MODE_32)):
            return
    pytest.skip("could not recreate keystone's radix-16 condition here")


def test_literals_are_decimal():
    assert assembler.assemble("push 16\nmov ax, 16", 0) == b"\x6a\x10" + MOV_AX_16
    assert assembler.engine() is assembler.engine()        # one per process


@linux_only
def test_the_condition_is_keystones_uninitialised_radix():
    """A plain engine built in the poisoned heap reads `16` as 0x16; the
    prologue keeps its length, so `mov ds, ax` stays at 0x100014."""
    poisoned()
    ks = Ks(KS_ARCH_X86, KS_MODE_32)
    assert reads_decimal_as_hex(ks)
    prologue = bytes(ks.asm(A._prologue(A.AsmGuest(body="")), A.BASE)[0])
    assert prologue[0x10:0x14] == MOV_AX_0x16 and prologue[0x14:0x17] == MOV_DS_AX


@linux_only
def test_a_checked_engine_made_in_the_poisoned_heap_reads_decimal():
    """The search for a good engine is bounded, and how many engines it
    needs depends on the heap the process has made so far: it may end in a
    refusal, never in an engine that reads hex."""
    poisoned()
    try:
        ks = assembler.checked_engine()
    except assembler.AssemblerError as refused:
        assert "read decimal literals as hex" in str(refused)
        return
    assert not reads_decimal_as_hex(ks)
    prologue = bytes(ks.asm(A._prologue(A.AsmGuest(body="")), A.BASE)[0])
    assert prologue[0x10:0x14] == MOV_AX_16


@linux_only
def test_a_guest_assembled_in_the_poisoned_heap_boots():
    poisoned()
    image = A.build(A.AsmGuest(body=A.putc("o") + A.putc("k") + A.exit_with(12)))
    assert image[0x10:0x14] == MOV_AX_16, "the prologue's `mov ax, 16` was read as hex"
    with Machine(Native()) as m:
        m.boot(BootSpec(image))
        out = m.run()
        assert out.ok and out.exit_status == 12, out.reason
        assert m.uart.text() == "ok"


def test_an_engine_that_never_reads_decimal_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(assembler, "_DECIMAL", b"never")
    monkeypatch.setattr(assembler, "_TRIES", 16)
    with pytest.raises(assembler.AssemblerError,
                       match="16 engines in a row read decimal literals as hex"):
        assembler.checked_engine()


# -- 8-bit branches (docs/unicorn.md, item 43) -----------------------------------------
STORES = "mov dword ptr [0x145848], 0x12345678\n"          # ten bytes each


@pytest.mark.parametrize("text", [
    "jecxz ahead\n" + STORES * 20 + "ahead:\nnop\n",                  # 200 bytes on
    "back:\n" + STORES * 20 + ".byte 0x67\nloop back\n",          # 203 back, on CX
    "loopne ahead\n" + STORES * 13 + "ahead:\n",                      # 130 on
])
def test_an_8_bit_branch_that_cannot_reach_its_label_is_refused(text):
    """keystone would keep the displacement's low 8 bits and go elsewhere."""
    with pytest.raises(AssemblerError, match="beyond the reach of an 8-bit displacement"):
        assemble(text, 0x1000)


def test_8_bit_branches_within_reach_assemble_as_before():
    text = ("jecxz fwd\n" + STORES * 12 + "fwd:\nback:\n" + STORES * 12
            + "loop back\njcxz fwd\n")
    code = assemble(text, 0x2000)
    fwd = 0x2000 + 2 + 120
    assert code[:2] == b"\xe3\x78"                                  # jecxz, +120
    assert code[-5:-3] == b"\xe2\x86"                               # loop, -122
    assert code[-3:-1] == b"\x67\xe3"                               # jcxz (3 bytes), back
    assert 0x2000 + len(code) + (code[-1] - 256) == fwd
