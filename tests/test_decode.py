"""decode.opcode and the classifications built on it: opcode bytes and ModRM
from the raw instruction, prefixes skipped, without capstone's detail mode
(which the translation-time decoder does not use); the CPU model asked for
the length of what capstone cannot decode (cpu_length); and capstone's
lengths against the model's, on random encodings."""
import random

import pytest
from capstone import Cs, CS_ARCH_X86, CS_MODE_32
from unicorn import Uc, UC_ARCH_X86, UC_MODE_32

from virtlab.decode import INVALID, NEEDS_MORE, crossing_start, cpu_length, opcode
from virtlab.memory import LinearView, PhysMem
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


# -- the CPU model as the decoder of last resort ------------------------------------------
@pytest.mark.parametrize("raw, complete, length", [
    ("0f 1a c0", True, 3), ("dc d8", True, 2), ("f2 0f bc c0", True, 4),   # capstone: nothing
    ("90", True, 1), ("cd 80", True, 2), ("c3", True, 1), ("f4", True, 1),  # run by nobody
    ("0f 0b", True, INVALID), ("ff ff", False, INVALID),                   # #UD with what is there
    ("ff", False, NEEDS_MORE), ("b8 11", False, NEEDS_MORE),               # the rest is unmapped
    ("b8 11 22 33 44", False, 5),                                          # ... and not needed
    # The byte that is not there picks the instruction: the reg field of a group's
    # ModRM (0F BA /0 to /3 and 0F C7 /0 raise #UD), or an opcode's third byte
    # (0F 3A 00 raises it, 0F 3A 0F is palignr): padding could make them look invalid.
    ("66 0f ba", False, NEEDS_MORE), ("0f c7", False, NEEDS_MORE), ("0f 3a", False, NEEDS_MORE),
])
def test_cpu_length_is_the_cpu_models_own(raw, complete, length):
    assert cpu_length(bytes.fromhex(raw), complete) == length
    assert cpu_length(bytes.fromhex(raw), complete) == length     # the same the second time


def _encodings(count, seed=2026):
    """Random instructions (fixed seed): one-byte opcodes, the 0F map and the
    0F 38 and 0F 3A maps, behind the prefixes a guest may use, with random
    bytes after them for ModRM, SIB, displacement and immediate."""
    rng = random.Random(seed)
    prefixes = [b"", b"", b"", b"\x66", b"\xf3", b"\xf2", b"\x67", b"\x2e", b"\x64",
                b"\xf0", b"\x66\xf3", b"\x66\x67"]
    for _ in range(count):
        kind = rng.random()
        op = (bytes([0x0F, rng.randrange(256)]) if kind < 0.5 else
              bytes([0x0F, rng.choice((0x38, 0x3A)), rng.randrange(256)]) if kind < 0.6 else
              bytes([rng.randrange(256)]))
        yield (rng.choice(prefixes) + op + rng.randbytes(15))[:15]


def test_capstone_and_the_cpu_model_agree_on_every_length_both_decode():
    """bt copies an instruction it finds innocuous by capstone's length, and
    the CPU runs it by its own: wherever both decode an encoding, the two
    lengths must be the same.  (Where only capstone decodes, the model lacks
    the instruction, ud0, rsm, VMX, SHA..., and raises #UD for its copy too.)"""
    differ = []
    for raw in _encodings(3000):
        first = next(_CS.disasm_lite(raw, 0, 1), None)
        if first is None:
            continue
        n = cpu_length(raw)
        if n != INVALID and n != first[1]:
            differ.append((raw.hex(), first[2], first[1], n))
    assert not differ, differ[:5]


def test_crossing_start_steps_over_what_only_the_cpu_model_decodes():
    # nop; a hint NOP capstone cannot decode; inc eax; then B8 straddling the page end.
    mem = PhysMem.create(Uc(UC_ARCH_X86, UC_MODE_32), 0x2000)
    code = bytes.fromhex("90 0f 1a c0 40 b8 11")
    at = 0x1000 - len(code)
    mem.write(at, code)
    view = LinearView(mem, 0, 0, 0)
    assert crossing_start(view, at, 0x1000) == 0x1000 - 2
