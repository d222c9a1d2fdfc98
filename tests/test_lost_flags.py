"""The arithmetic flags that a faulting rcl, rcr or setcc of memory loses in
the CPU model (virtlab/lost_flags.py, docs/unicorn.md item 29): which
instructions, when the translator computed the flags, and the runs in which
it mattered, natively and under each back end."""
import dataclasses

import pytest

from virtlab import asmguest as A, asmseq as S, seqgen as G, x86
from virtlab.lost_flags import computed, holds_flags, lost_kind
from virtlab.machine import BootSpec, Machine
from virtlab.native import Native

SUBL, ADDL, LOGICL, SHLB, CLR, ADOX = 16, 8, 24, 34, 49, 47
O, B, Z, BE, S_, P, L, LE = range(8)


@pytest.mark.parametrize("text, kind", [
    ("rcl dword ptr [ebx], 1", "rotate"), ("rcr byte ptr [ebp + 8], cl", "rotate"),
    ("rcl word ptr [0x1000], 3", "rotate"), ("seta byte ptr [ebp + 0x2b2]", BE),
    ("sete byte ptr es:[eax]", Z), ("setl byte ptr [0x1234]", L), ("setno byte ptr [ecx]", O),
    ("rcl eax, 1", None), ("rol dword ptr [ebx], 1", None), ("seta al", None),
    ("shl dword ptr [ebx], cl", None), ("mov eax, dword ptr [ebx]", None),
])
def test_which_instructions_lose_the_flags(text, kind):
    assert lost_kind(A.assemble(text, 0x1000) + b"\x90" * 8) == kind


def test_what_the_translator_computes_for_a_setcc():
    """QEMU's gen_prepare_cc: B never; every other condition when the last
    operation is not known at translation; once known, P, BE, L and LE (but
    not BE, L, LE after a subtraction), O (but not after an operation that
    knows OF without it), never Z or S."""
    assert not any(computed(B, known, op) for known in (True, False) for op in (SUBL, ADDL))
    assert all(computed(j, False, op) for j in (O, Z, BE, S_, P, L, LE) for op in (SUBL, ADDL))
    assert [computed(j, True, ADDL) for j in (O, Z, BE, S_, P, L, LE)] == \
        [True, False, True, False, True, True, True]
    assert [computed(j, True, SUBL) for j in (O, Z, BE, S_, P, L, LE)] == \
        [True, False, False, False, True, False, False]
    assert not computed(O, True, CLR) and not computed(O, True, ADOX)


def test_flags_computed_from_an_operation_are_told_from_its_operand():
    # dst 0x80000011 after `and`: SF set, ZF clear, PF set (0x11 has two bits).
    assert holds_flags(LOGICL, x86.SF | x86.PF_FLAG, 0x80000011)
    assert holds_flags(LOGICL, x86.SF | x86.PF_FLAG | x86.CF | x86.OF, 0x80000011)
    assert not holds_flags(LOGICL, 0x1, 0x80000011)                  # SF and PF missing
    assert not holds_flags(SUBL, 0x12345678, 0x80000011)             # bits no flag has
    assert holds_flags(SHLB, x86.ZF | x86.PF_FLAG, 0x100)            # the low 8 bits are 0
    assert holds_flags(CLR, x86.ZF | x86.PF_FLAG, 0) and not holds_flags(CLR, 0, 0)


def _mmu(index, lines, eflags, backend):
    """A handmade MMU sequence, classic for trap (which differs by design on
    what classic sequences leave out; every start state here has IF set and
    IOPL 0, as classic ones must)."""
    return dataclasses.replace(G.handmade(index, lines, eflags=eflags, paging=True), mmu=True,
                               classic=backend == "trap")


# What the MMU sequences found: a hidden fault (a shadow entry dropped by a CR3
# reload or a mapping change) at the instruction, under trap, hw and bt.
FOUND = {
    # add sets AF; the rcl's write to the scratch page faults (hidden) and is retried.
    "rcl": (28, ["mov ecx, cr4", "or ecx, 0x10", "mov cr4, ecx",
                 "mov dword ptr [0x143470], 0x83", "invlpg byte ptr [0x4723a000]",
                 "add dword ptr [0x4720e36c], 0xd", "mov ecx, dword ptr [0x143470]",
                 "rcl byte ptr ss:[0x20e2b3], cl"], 0x40ed3),
    # seta's store after a CR3 reload faults; the model computed CF|ZF for it first.
    "seta": (0, ["mov esi, cr4", "or esi, 0x10", "mov cr4, esi",
                 "mov dword ptr [0x143400], 0x83", "mov edi, cr3", "mov cr3, edi",
                 "add dword ptr [0x402002e4], 0x98477daf", "mov esi, dword ptr [0x143400]",
                 "seta byte ptr [ebp + 0x2b2]"], 0x243),
    # The CR0 write exits under trap and resumes at seta: a block that begins
    # at it, where the translator knew no operation (it computes for BE).
    "seta in a block of its own": (33, ["mov esi, cr0", "and esi, 0xfffeffff",
                                        "mov cr0, esi", "seta byte ptr [0x210c33]"], 0x286),
    "setle": (75, ["mov ebx, cr0", "and ebx, 0xfffeffff", "mov cr0, ebx",
                   "adc ecx, 0x1542dbd7", "setle byte ptr [ebp + 0x2ed]"], 0x202),
}


@pytest.mark.parametrize("name", sorted(FOUND))
@pytest.mark.parametrize("backend", ["trap", "hw", "bt", "hw-npt"])
def test_a_hidden_fault_in_the_instruction_keeps_its_flags(backend, name):
    index, lines, eflags = FOUND[name]
    seq = _mmu(index, lines, eflags, backend)
    ref, other = S.run("native", [seq]), S.run(backend, [seq])
    assert ref.ok and other.ok, other.reason
    assert S.compare([seq], ref, other) == [], S.compare([seq], ref, other)[0].report()


@pytest.mark.parametrize("backend", ["trap", "hw", "bt"])
def test_after_a_shift_by_cl_the_translator_knows_no_operation(backend):
    """`sar di, cl` may shift by 0 and leave the flags alone, so after it
    QEMU's translator knows no operation, and setg computes the flags as at
    a block's start (seed 40,026, index 78, of the MMU sequences, shrunk: the
    jump to L2 begins a block there; the store faults after the CR3 reload
    of an earlier pass)."""
    lines = ["mov esi, cr4", "or esi, 0x10", "mov cr4, esi", "mov dword ptr [0x143538], 0x87",
             "invlpg byte ptr [0x53afb000]", "mov esi, dword ptr [0x143538]",
             "cmp ecx, 0xcbef48bf", "jg {P}L2", "mov dword ptr [0x145938], 0x227003",
             "mov ecx, cr3", "mov cr3, ecx", "{P}L2:", "sar di, cl",
             "setg byte ptr [ebp + 0x35]"]
    seq = dataclasses.replace(G.handmade(78, lines, eflags=0x406c6, paging=True, seed=40026),
                              mmu=True, classic=backend == "trap")
    ref, other = S.run("native", [seq]), S.run(backend, [seq])
    assert S.compare([seq], ref, other) == [], S.compare([seq], ref, other)[0].report()


def test_a_fault_on_fetching_the_instruction_is_no_fault_of_its_access():
    """Under trap the CR0 write (WP cleared) drops the shadow, and the fetch
    of the block that begins at seta faults (CR2 at seta itself): seta has
    not run, computed nothing, and its flags must be left alone (seed 181,
    index 33, of the classic MMU sequences, shrunk)."""
    lines = ["jecxz {P}L1", "bts di, cx", "pushfd", "and dword ptr [esp], 0xfffff76b", "popfd",
             "{P}L1:", "mov esi, cr0", "and esi, 0xfffeffff", "mov cr0, esi",
             "seta byte ptr [0x210c33]"]
    seq = dataclasses.replace(G.handmade(33, lines, eflags=0xa82, paging=True, seed=181),
                              mmu=True, classic=True)
    ref, trap = S.run("native", [seq]), S.run("trap", [seq])
    assert S.compare([seq], ref, trap) == [], S.compare([seq], ref, trap)[0].report()


def test_the_frame_of_a_faulting_rotate_holds_the_flags_before_it():
    """Natively too: the #PF frame of an rcl of an unmapped page holds the
    flags the `add` before it left (eax = 2: none of the arithmetic ones),
    where the CPU model alone pushed garbage (0x86 after `inc`)."""
    log = 0x5000
    handler = (f"mov eax, dword ptr [esp + 12]\nmov dword ptr [{log:#x}], eax\n"
               + A.exit_with(0))
    body = ("mov eax, 1\nadd eax, 1\n"
            f"rcl dword ptr [{S.UNMAPPED:#x}], 1\n" + A.exit_with(1))
    guest = A.AsmGuest(body=body, handlers={x86.PF: handler}, paging=True,
                       unmapped=(S.UNMAPPED,))
    with Machine(Native()) as m:
        m.boot(BootSpec(A.build(guest)))
        out = m.run()
        flags = int.from_bytes(m.mem.view[log:log + 4], "little")
    assert out.ok and out.exit_status == 0, out.reason
    assert flags & (x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF) == 0


def test_bt_computes_the_flags_before_copying_such_an_instruction():
    from bt.translate import IDENT, Translator
    code = A.assemble("seta byte ptr [ebx]\nrcl dword ptr [ebx], 1\nseta al\nret", 0x101000)

    def read(linear, n):
        return (code + b"\xcc" * 0x1000)[linear - 0x101000:linear - 0x101000 + n]
    unit = Translator(set()).translate(read, 0x101000, 0xFC000000)
    seta, rcl, seta_reg = unit.sites[:3]
    assert seta.kind == rcl.kind == seta_reg.kind == IDENT
    tc = unit.code
    at = lambda site: tc[site.tc - unit.tc:site.tc_end - unit.tc]     # noqa: E731
    assert at(seta) == b"\xf5\xf5" + code[:3] and at(rcl) == b"\xf5\xf5" + code[3:5]
    assert at(seta_reg) == code[5:8]
    # a fault is the guest's at the copied instruction, not at the cmc
    assert list(seta.faults) == [seta.tc + 2]
