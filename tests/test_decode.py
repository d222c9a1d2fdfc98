"""decode.opcode and the classifications built on it: opcode bytes and ModRM
from the raw instruction, prefixes skipped, without capstone's detail mode
(which the translation-time decoder does not use)."""
import pytest
from capstone import Cs, CS_ARCH_X86, CS_MODE_32

from virtlab.decode import opcode
from virtlab.popek_goldberg import privileged_kind, sensitive_kind
from virtlab.vmm.gates import is_far_transfer

_CS = Cs(CS_ARCH_X86, CS_MODE_32)          # no detail, as at translation time


def insn(raw):
    return next(_CS.disasm(raw, 0))


@pytest.mark.parametrize("raw,op,modrm", [
    (b"\x0f\x22\xd8", b"\x0f\x22", 0xD8),            # mov cr3, eax
    (b"\x66\x8c\xd8", b"\x8c", 0xD8),                # mov ax, ds (operand-size prefix)
    (b"\x2e\x8c\x08", b"\x8c", 0x08),                # mov cs:[eax], cs (segment override)
    (b"\x0e", b"\x0e", None),                        # push cs: no ModRM
    (b"\xff\x28", b"\xff", 0x28),                    # jmp far [eax]
])
def test_opcode_skips_prefixes(raw, op, modrm):
    assert opcode(insn(raw)) == (op, modrm)


@pytest.mark.parametrize("raw,kind", [
    (b"\x8c\xc8", "mov from segment register"),      # mov eax, cs
    (b"\x8c\x18", "mov from segment register"),      # mov [eax], ds: a store, also sensitive
    (b"\x0e", "push cs"), (b"\x16", "push ss"),
    (b"\x1e", None),                                 # push ds: innocuous
    (b"\x8e\xd8", None),                             # mov ds, eax: a load, innocuous here
    (b"\x9c", "pushf"), (b"\x0f\x01\x08", "sidt"),
])
def test_sensitive_kinds(raw, kind):
    assert sensitive_kind(insn(raw)) == kind


@pytest.mark.parametrize("raw,kind", [
    (b"\x0f\x22\xd8", "mov to cr3"), (b"\x0f\x20\xc0", "mov from cr0"),
    (b"\x0f\x23\xf8", "mov to dr7"), (b"\xfa", "cli"), (b"\x89\xc0", None),
])
def test_privileged_kinds(raw, kind):
    assert privileged_kind(insn(raw)) == kind


@pytest.mark.parametrize("raw,far", [
    (b"\xea\x00\x00\x00\x00\x08\x00", True),         # ljmp 8:0
    (b"\x9a\x00\x00\x00\x00\x08\x00", True),         # lcall 8:0
    (b"\xff\x28", True), (b"\xff\x18", True),        # jmp/call m16:32
    (b"\xff\x20", False), (b"\xff\x10", False),      # near indirect jmp/call
    (b"\xe9\x00\x00\x00\x00", False),                # near relative jmp
])
def test_far_transfers(raw, far):
    assert is_far_transfer(insn(raw)) is far
