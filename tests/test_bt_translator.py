"""The translator (bt/translate.py) and its templates (bt/templates.py), with no
machine: guest bytes in, a translation unit out.

A unit is checked by what the CPU will run: its exact bytes, where each guest
instruction's translation begins and ends, its exits (5-byte stubs and the
guest addresses they lead to), its callouts (where the CPU stops and what the
VMM does there) and its fault map (the TC addresses where an access to guest
memory may fault, and the registers parked there).  The templates are checked
by disassembly against what their comments promise: the instructions that
stand between two guest instructions leave EFLAGS alone (or save and restore
them), give the guest back EAX and ECX before every callout, and touch one
guest dword, whose first access is a named fault point.
"""
import struct

import pytest
from capstone import Cs, CS_ARCH_X86, CS_MODE_32
from capstone.x86_const import X86_OP_MEM

from bt import layout as L, templates as T
from virtlab.assembler import engine
from bt.translate import (Insn, BRANCH, CALLOUT, IDENT, IN_TC, INDIRECT, MAX_INSNS, Translator,
                          classify)
from virtlab.memmap import VMM_BASE_LINEAR
from virtlab.memory import GuestMemoryFault

PAGE = 0x101000                    # the guest code page the tests translate from
STUB = b"\xcd" + bytes((L.CALLOUT_VECTOR,)) + b"\x90\x90\x90"
CALLOUT_INT = b"\xcd" + bytes((L.CALLOUT_VECTOR,))

_KS = engine()
_CS = Cs(CS_ARCH_X86, CS_MODE_32)
_CSD = Cs(CS_ARCH_X86, CS_MODE_32)
_CSD.detail = True


def asm(text, at=PAGE):
    return bytes(_KS.asm(text, at)[0])


def hexid(v):
    """Test ids: guest bytes in hex."""
    return v.hex() if isinstance(v, bytes) else None


class Guest:
    """Guest-virtual memory for the translator's `read`: the pages given, and
    nothing else mapped (a read that touches any other page faults, as the
    guest view does).  Remembers the highest address ever read."""

    def __init__(self, pages):
        self.pages = pages                  # page address -> 4096 bytes
        self.highest = 0

    @classmethod
    def with_code(cls, code, at=PAGE, fill=b"\xcc", pages=1):
        base = at & ~0xFFF
        img = bytearray(fill * (0x1000 * pages))
        img[at - base:at - base + len(code)] = code
        return cls({base + 0x1000 * i: bytes(img[0x1000 * i:0x1000 * (i + 1)])
                    for i in range(pages)})

    def read(self, linear, n):
        out = b""
        for a in range(linear, linear + n):
            page = self.pages.get(a & ~0xFFF)
            if page is None:
                raise GuestMemoryFault(a, 0)
            out += page[a & 0xFFF:(a & 0xFFF) + 1]
        self.highest = max(self.highest, linear + n - 1)
        return out


def translate(code, at=PAGE, fill=b"\xcc", guilty=(), pages=1):
    if isinstance(code, str):
        code = asm(code, at)
    return Translator(set(guilty)).translate(Guest.with_code(code, at, fill, pages).read, at, L.TC)


def seg(unit, site):
    """The TC bytes that stand for one guest instruction."""
    return unit.code[site.tc - unit.tc:site.tc_end - unit.tc]


def callout_kinds(unit, site):
    return [c.kind for c in unit.callouts if c.site is site]


def dis(code, at=0, detail=False):
    return list((_CSD if detail else _CS).disasm(code, at))


def assert_contiguous(unit):
    """The sites' translations tile the unit from its first byte."""
    at = unit.tc
    for s in unit.sites:
        assert s.tc == at, f"{s.text}: translation begins at {s.tc:#x}, not {at:#x}"
        at = s.tc_end
    assert at <= unit.tc_end


def assert_stub(unit, ex, target):
    off = ex.at - unit.tc
    assert unit.code[off:off + T.STUB_SIZE] == STUB
    assert ex.target == target and ex.chained_to is None
    chains = [c for c in unit.callouts if c.exit is ex]
    assert len(chains) == 1 and chains[0].kind == "chain" and chains[0].resume == ex.at + 2


# -- IDENT ------------------------------------------------------------------------
def test_innocuous_instructions_are_copied_byte_for_byte():
    code = (asm("mov eax, dword ptr [ebx + 4]; add eax, 0x12345; lea ecx, [eax*4 + ebx];"
                "xchg dword ptr [esi], edx; movzx eax, byte ptr fs:[edi]; imul edx, ecx, 3")
            + b"\xf3\xa5"                          # rep movsd
            + b"\x1e\x07"                          # push ds; pop es
            + b"\x0f\xa2")                         # cpuid: not sensitive here
    unit = translate(code + b"\xeb\xfe")
    *plain, last = unit.sites
    assert [s.kind for s in plain] == [IDENT] * 10 and last.kind == BRANCH
    assert_contiguous(unit)
    at = PAGE
    for s in plain:
        assert s.guest == at and seg(unit, s) == code[at - PAGE:at - PAGE + s.size]
        assert s.faults == {s.tc: ()}, "an IDENT instruction faults, if at all, at its copy"
        assert callout_kinds(unit, s) == []
        at += s.size
    assert at == PAGE + len(code) and unit.code.startswith(code)


@pytest.mark.parametrize("text", ["in al, dx", "out dx, eax", "in al, 0x60", "out 0x80, al",
                                  "rep insb", "outsd"])
def test_port_io_is_copied_the_port_hook_is_its_exit(text):
    unit = translate(text + "; jmp 0x101800")
    site = unit.sites[0]
    assert site.kind == IDENT and "port" in site.reason
    assert seg(unit, site) == asm(text)


# -- direct branches ----------------------------------------------------------------
@pytest.mark.parametrize("cc", range(16))
@pytest.mark.parametrize("form", ["rel8", "rel32"])
def test_jcc_becomes_rel32_over_two_exit_stubs(cc, form):
    """[0F 8x rel32 -> taken][exit: fall through][exit: taken]."""
    if form == "rel8":
        code, rel = bytes((0x70 + cc, 0x10)), 0x10
    else:
        code, rel = bytes((0x0F, 0x80 + cc)) + struct.pack("<i", -0x40), -0x40
    nxt = PAGE + len(code)
    unit = translate(code)
    (site,) = unit.sites
    assert site.kind == BRANCH and site.faults == {}
    assert unit.code[:6] == bytes((0x0F, 0x80 + cc)) + struct.pack("<i", T.STUB_SIZE)
    assert len(unit.code) == 6 + 2 * T.STUB_SIZE
    fall, taken = unit.exits
    assert fall.at == unit.tc + 6 and taken.at == unit.tc + 6 + T.STUB_SIZE
    assert_stub(unit, fall, nxt)
    assert_stub(unit, taken, nxt + rel)
    jcc = dis(unit.code, unit.tc)[0]
    assert int(jcc.op_str, 16) == taken.at
    assert unit.guest_end == nxt and site.tc_end == unit.tc_end


@pytest.mark.parametrize("op", [0xE0, 0xE1, 0xE2, 0xE3])          # loopne, loope, loop, jecxz
@pytest.mark.parametrize("prefix", [b"", b"\x67"])                 # 0x67: cx instead of ecx
def test_loop_and_jecxz_keep_their_test_and_branch_to_two_stubs(op, prefix):
    """[loop +2][jmp +5][exit: taken][exit: fall through]: the CPU still
    does the decrement and the test itself, with the guest's prefixes."""
    code = prefix + bytes((op, 0xF0))                  # back by 16
    nxt = PAGE + len(code)
    unit = translate(code)
    (site,) = unit.sites
    n = len(prefix)
    assert unit.code[:n + 4] == prefix + bytes((op, 2)) + b"\xeb\x05"
    taken, fall = unit.exits
    assert taken.at == unit.tc + n + 4 and fall.at == taken.at + T.STUB_SIZE
    assert_stub(unit, taken, nxt - 16)
    assert_stub(unit, fall, nxt)
    loop, jmp = dis(unit.code[:n + 4], unit.tc)
    assert int(loop.op_str, 16) == taken.at and int(jmp.op_str, 16) == fall.at
    assert site.kind == BRANCH and unit.guest_end == nxt


@pytest.mark.parametrize("code,target", [
    (b"\xeb\x10", PAGE + 0x12), (b"\xeb\xfe", PAGE),
    (b"\xe9" + struct.pack("<i", 0x1234), PAGE + 5 + 0x1234),
    (b"\xe9" + struct.pack("<i", -0x2000), PAGE + 5 - 0x2000),
], ids=hexid)
def test_jmp_is_one_exit_stub_and_ends_the_unit(code, target):
    unit = translate(code + b"\x90" * 8)
    (site,) = unit.sites
    assert site.kind == BRANCH and unit.code == STUB
    (ex,) = unit.exits
    assert_stub(unit, ex, target)
    assert unit.guest_end == PAGE + len(code)


def test_call_pushes_the_guest_return_address_then_exits_to_the_callee():
    code = b"\xe8" + struct.pack("<i", 0x300)
    unit = translate(code)
    (site,) = unit.sites
    assert site.kind == BRANCH
    assert unit.code == b"\x68" + struct.pack("<I", PAGE + 5) + STUB
    (ex,) = unit.exits
    assert_stub(unit, ex, PAGE + 5 + 0x300)
    assert site.faults == {unit.tc: ()}, "the push is the guest's own stack write"


# -- indirect branches -----------------------------------------------------------------
def lookup_bytes():
    return T.get("lookup").code


@pytest.mark.parametrize("code,imm", [(b"\xc3", 4), (b"\xc2\x08\x00", 12), (b"\xc2\x00\x01", 0x104)], ids=hexid)
def test_ret_pops_into_the_lookup(code, imm):
    unit = translate(code)
    (site,) = unit.sites
    ret = T.get("ret")
    assert site.kind == INDIRECT
    assert unit.code == ret.emit(imm=imm) + lookup_bytes()
    (lea,) = [i for i in dis(unit.code, unit.tc, detail=True)
              if i.mnemonic == "lea" and i.op_str.startswith("esp")]
    assert lea.operands[1].mem.disp == imm, "ret imm16 pops the address and imm16 bytes"
    assert site.faults == {unit.tc + off: regs for off, regs in ret.faults.items()}
    assert callout_kinds(unit, site) == ["miss"]
    (miss,) = unit.callouts
    assert miss.resume == unit.tc + len(ret.code) + T.get("lookup").callouts[0]
    assert unit.exits == [] and unit.guest_end == PAGE + len(code)


@pytest.mark.parametrize("code,load", [
    (b"\xff\xe0", b"\x8b\xc0"),                                     # jmp eax
    (b"\xff\x60\x04", b"\x8b\x40\x04"),                             # jmp [eax + 4]
    (b"\xff\x24\x9d\x00\x20\x00\x00", b"\x8b\x04\x9d\x00\x20\x00\x00"),  # jmp [ebx*4 + 0x2000]
    (b"\x64\xff\x20", b"\x64\x8b\x00"),                             # jmp fs:[eax]
    (b"\xff\xd3", b"\x8b\xc3"),                                     # call ebx
    (b"\xff\x15\x00\x30\x00\x00", b"\x8b\x05\x00\x30\x00\x00"),     # call [0x3000]
    (b"\xff\x54\x24\x08", b"\x8b\x44\x24\x08"),                     # call [esp + 8]
], ids=hexid)
def test_indirect_jmp_and_call_load_the_guest_operand_into_the_lookup(code, load):
    """park; mov eax, <the guest's own r/m>; [push guest return]; lookup."""
    unit = translate(code)
    (site,) = unit.sites
    park, push = T.get("park"), T.get("push_ret")
    is_call = (code[-len(load) + 1] >> 3) & 7 == 2
    nxt = PAGE + len(code)
    expected = park.code + load + (push.emit(ret=nxt) if is_call else b"") + lookup_bytes()
    assert site.kind == INDIRECT and unit.code == expected
    load_at = unit.tc + len(park.code)
    faults = {load_at: ()}
    if is_call:
        faults.update({load_at + len(load) + off: regs for off, regs in push.faults.items()})
        assert ("eax",) in faults.values(), "the push happens with the target in EAX"
    assert site.faults == faults
    assert callout_kinds(unit, site) == ["miss"] and unit.guest_end == nxt


# -- in-TC sequences ------------------------------------------------------------------
@pytest.mark.parametrize("text,name,callouts", [
    ("cli", "cli", []), ("sti", "sti", ["irq"]), ("pushfd", "pushf", []), ("popfd", "popf", ["irq"]),
])
def test_interrupt_flag_instructions_run_in_the_tc(text, name, callouts):
    unit = translate(text + "; jmp 0x101800")
    site = unit.sites[0]
    t = T.get(name)
    assert site.kind == IN_TC and seg(unit, site) == t.code
    assert callout_kinds(unit, site) == callouts
    assert [c.resume for c in unit.callouts if c.site is site] == [site.tc + o for o in t.callouts]
    assert site.faults == {site.tc + off: regs for off, regs in t.faults.items()}
    assert unit.sites[1].guest == PAGE + 1, "the unit goes on after it"


@pytest.mark.parametrize("code,reg,wide", [(b"\x8c\xc8", 0, True), (b"\x8c\xd3", 3, True),
                                           (b"\x66\x8c\xd0", 0, False)], ids=hexid)
def test_mov_from_cs_or_ss_takes_the_real_rpl_off(code, reg, wide):
    unit = translate(code + b"\xeb\xfe")
    site = unit.sites[0]
    lea = bytes((0x8D, 0x40 | reg << 3 | reg, 0xFF))
    assert site.kind == IN_TC
    assert seg(unit, site) == code + (lea if wide else b"\x66" + lea) + T.get("count_movseg").code


# -- callouts ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "mov cr0, eax", "mov eax, cr3", "mov cr3, eax", "mov eax, cr2", "mov dr7, eax",
    "lgdt [eax]", "lidt [0x2000]", "sgdt [eax]", "sidt [eax]", "smsw eax", "lmsw ax",
    "invlpg [eax]", "ltr ax", "lldt ax", "str eax", "sldt eax", "lar eax, ebx", "lsl eax, ebx",
    "verr ax", "verw ax", "clts", "wbinvd", "invd", "wrmsr", "rdmsr",
    "mov ss, ax", "mov ss, word ptr [eax]", "push cs", "push ss", "mov word ptr [eax], cs",
])
def test_privileged_and_sensitive_instructions_call_out_to_emulate(text):
    code = asm(text)
    unit = translate(code + b"\xeb\xfe")
    site, nxt = unit.sites[:2]
    assert site.kind == CALLOUT and callout_kinds(unit, site) == ["emulate"]
    assert seg(unit, site) == CALLOUT_INT and site.faults == {site.tc: ()}
    assert nxt.guest == PAGE + len(code), "an emulated instruction does not end the unit"


@pytest.mark.parametrize("code,kind", [
    (b"\xf4", "emulate"), (b"\x0f\x35", "emulate"),                  # hlt, sysexit
    (b"\x0f\x34", "sysenter"), (b"\x0f\x0b", "ud"),                  # sysenter, ud2
    (b"\xcd\x80", "int"), (b"\xcc", "int"), (b"\xce", "int"),
    (b"\xf1", "ud"),                            # icebp: the CPU model's #UD, natively too
    (b"\xea\x00\x10\x00\x00\x08\x00", "far"), (b"\x9a\x00\x10\x00\x00\x08\x00", "far"),
    (b"\xff\x28", "far"), (b"\xff\x18", "far"),                      # jmp/call m16:32
], ids=hexid)
def test_transfers_the_vmm_performs_end_the_unit(code, kind):
    """The VMM decides where execution goes after these (_TRANSFER_CALLOUTS):
    nothing after them belongs in the unit."""
    unit = translate(code + b"\x90" * 4)
    texts = [s.text for s in unit.sites]
    assert len(texts) == 1, f"the unit goes on after {texts[0]}: {texts}"
    (site,) = unit.sites
    assert site.kind == CALLOUT and callout_kinds(unit, site) == [kind]
    assert unit.code == CALLOUT_INT and unit.exits == []
    assert unit.guest_end == PAGE + len(code)


@pytest.mark.parametrize("code,kind", [(b"\xcf", "iret"), (b"\xcb", "retf"),
                                       (b"\xca\x08\x00", "retf")], ids=hexid)
def test_iret_and_retf_call_out_then_hold_the_native_instruction(code, kind):
    """Returns to user mode are performed by the CPU from the copy after the
    callout (the VMM continues there); returns to the kernel are emulated."""
    unit = translate(code + b"\x90" * 4)
    (site,) = unit.sites
    assert unit.code == CALLOUT_INT + code
    (c,) = unit.callouts
    assert c.kind == kind and c.resume == unit.tc + 2 and c.site is site
    assert unit.guest_end == PAGE + len(code)


def test_rdtsc_calls_out_for_the_virtual_counter_and_the_unit_goes_on():
    unit = translate(b"\x0f\x31\x90\xeb\xfe")
    rdtsc, nop = unit.sites[:2]
    assert callout_kinds(unit, rdtsc) == ["rdtsc"] and seg(unit, rdtsc) == CALLOUT_INT
    assert nop.kind == IDENT and nop.guest == PAGE + 2


def test_rdtscp_is_the_same_callout_and_not_an_emulated_0f01():
    """0F 01 F9 shares its first two bytes with sgdt, lgdt and the rest of
    group 7, which are emulated; rdtscp reads the virtual counter instead."""
    unit = translate(b"\x0f\x01\xf9\x90\xeb\xfe")
    rdtscp, nop = unit.sites[:2]
    assert callout_kinds(unit, rdtscp) == ["rdtsc"] and rdtscp.text == "rdtscp"
    assert nop.kind == IDENT and nop.guest == PAGE + 3

@pytest.mark.parametrize("code", [b"\x0f\xc7\xf0", b"\x66\x0f\xc7\xfb"])   # rdrand eax, rdseed bx
def test_rdrand_and_rdseed_call_out_and_the_unit_goes_on(code):
    unit = translate(code + b"\x90\xeb\xfe")
    rd, nop = unit.sites[:2]
    assert callout_kinds(unit, rd) == ["rdrand"] and seg(unit, rd) == CALLOUT_INT
    assert nop.kind == IDENT and nop.guest == PAGE + len(code)


@pytest.mark.parametrize("code", [b"\x0f\xc7\x0e",             # cmpxchg8b [esi]
                                  b"\xf3\x0f\xc7\xf8"])         # rdpid eax
def test_other_0fc7_instructions_are_not_taken_for_rdrand(code):
    """0F C7 is also cmpxchg8b (/1, a memory operand) and, behind F3, rdpid:
    copied, so that they do what they do natively."""
    unit = translate(code + b"\xeb\xfe")
    assert unit.sites[0].kind == IDENT

def test_rdpmc_is_copied_to_raise_ud_as_the_cpu_model_does():
    unit = translate(b"\x0f\x33\xeb\xfe")
    assert unit.sites[0].kind == IDENT

def test_a_guilty_store_becomes_a_ptwrite_callout():
    code = asm("mov dword ptr [eax], ecx; mov dword ptr [eax + 4], ecx; jmp 0x101800")
    unit = translate(code, guilty={PAGE})
    first, second = unit.sites[:2]
    assert first.kind == CALLOUT and callout_kinds(unit, first) == ["ptwrite"]
    assert second.kind == IDENT, "only the guilty EIP is retranslated"
    i = dis(code)[0]
    assert classify(Insn(i.address, i.size, i.mnemonic, i.op_str, bytes(i.bytes))) == \
        (IDENT, "innocuous: copied unchanged", None)


def test_undecodable_bytes_are_copied_for_the_cpu_model_to_refuse():
    """Bytes that capstone does not decode and the CPU model refuses are
    copied as they are, 15 of them, and nothing after them runs: the model
    raises #UD there, or first the fault of the memory access some of them
    make (FF /7 with a memory operand)."""
    for raw in (b"\x0f\x04", bytes.fromhex("ffbc10d82000e8")):
        unit = translate(raw)
        (site,) = unit.sites
        assert site.guest == PAGE and site.size == 15 and site.kind == IDENT
        assert unit.code[:15] == (raw + b"\xcc" * 15)[:15]
        assert site.faults == {unit.tc: ()}


def test_undecodable_bytes_at_a_page_end_are_a_ud_callout_at_their_address():
    """Within the last 15 bytes of a page, the copy would take bytes the
    guest's page does not hold: the #UD callout stands for them instead."""
    at = PAGE + 0x1000 - 2
    unit = translate(b"\x0f\x04", at=at)
    (site,) = unit.sites
    assert site.guest == at and site.size == 0 and site.kind == CALLOUT
    assert callout_kinds(unit, site) == ["ud"] and unit.code == CALLOUT_INT
    assert unit.guest_end == at and site.faults == {unit.tc: ()}


def test_a_unit_stops_before_undecodable_bytes_and_exits_to_them():
    unit = translate(b"\x90\x90\x0f\x04")
    assert [s.kind for s in unit.sites] == [IDENT, IDENT]
    (ex,) = unit.exits
    assert_stub(unit, ex, PAGE + 2)


# -- where a unit ends ------------------------------------------------------------------
def test_a_unit_holds_at_most_twelve_instructions():
    assert MAX_INSNS == 12
    unit = translate(b"\x90" * 40, fill=b"\x90")
    assert len(unit.sites) == 12 and unit.guest_end == PAGE + 12
    (ex,) = unit.exits
    assert_stub(unit, ex, PAGE + 12)
    assert unit.code == b"\x90" * 12 + STUB


def test_a_unit_stops_at_a_control_transfer():
    unit = translate(asm("inc eax; ret; inc ebx; inc ecx"))
    assert [s.text for s in unit.sites] == ["inc eax", "ret"]
    assert unit.guest_end == PAGE + 2


def test_a_unit_stops_at_the_end_of_the_guest_page():
    at = PAGE + 0xFF9
    g = Guest.with_code(b"\x90" * 7, at, fill=b"\x90", pages=2)
    unit = Translator().translate(g.read, at, L.TC)
    assert len(unit.sites) == 7 and unit.guest_end == PAGE + 0x1000
    (ex,) = unit.exits
    assert_stub(unit, ex, PAGE + 0x1000)
    assert g.highest == PAGE + 0xFFF, "the translator read past the page end"


def test_an_instruction_straddling_the_page_end_is_translated_whole_on_its_own():
    mov = b"\xb8\x44\x33\x22\x11"                    # mov eax, 0x11223344
    at = PAGE + 0xFFE
    g = Guest.with_code(b"\x90\x90" + mov, at - 2, fill=b"\x90", pages=2)
    before = Translator().translate(g.read, at - 2, L.TC)
    assert [s.text for s in before.sites] == ["nop", "nop"] and before.exits[0].target == at
    unit = Translator().translate(g.read, at, L.TC)
    first = unit.sites[0]
    assert first.guest == at and first.size == 5 and seg(unit, first) == mov
    assert unit.guest_end == at + 5 and len(unit.sites) == 1


def test_a_group_instruction_whose_modrm_is_on_the_next_page_is_translated_whole():
    """66 0F BA at the page end, its ModRM (FF: /7, btc) and immediate on the
    next page: capstone decodes nothing in the page, and the CPU model must
    not be asked with padding that picks an invalid member of the group."""
    btc = bytes.fromhex("66 0f ba ff 0f")            # btc di, 0xf
    at = PAGE + 0xFFD
    g = Guest.with_code(btc, at, fill=b"\x90", pages=2)
    unit = Translator().translate(g.read, at, L.TC)
    first = unit.sites[0]
    assert first.text == "btc di, 0xf" and first.size == 5 and seg(unit, first) == btc


# -- fault maps -----------------------------------------------------------------------
def test_fault_points_are_instruction_boundaries_inside_their_site():
    text = ("mov eax, dword ptr [ebx]; pushfd; popfd; cli; sti; mov ecx, cs; push cs;"
            "rdtsc; call dword ptr [ecx + 8]")
    unit = translate(text)
    starts = {i.address for i in dis(unit.code, unit.tc)}
    for s in unit.sites:
        for at in s.faults:
            assert s.tc <= at < s.tc_end and at in starts, (s.text, hex(at))
    assert_contiguous(unit)
    assert [s.kind for s in unit.sites] == [IDENT, IN_TC, IN_TC, IN_TC, IN_TC, IN_TC,
                                            CALLOUT, CALLOUT, INDIRECT]


# -- the templates ----------------------------------------------------------------------
TEMPLATES = ("cli", "sti", "pushf", "popf", "lookup", "ret", "park", "push_ret",
             "count_movseg", "profile")
# The templates whose comments say they do not touch EFLAGS at all.
FLAG_FREE = ("cli", "sti", "lookup", "ret", "park", "push_ret", "count_movseg", "profile")
# What a flag-free sequence may be built of (none of these writes EFLAGS).
FLAG_FREE_MNEMONICS = {"mov", "lea", "movzx", "jecxz", "jmp", "push", "nop", "int"}
# Templates that end with the guest target in EAX, for the lookup that follows.
PROLOGUES = ("ret", "park", "push_ret")


def emitted(name):
    """A template as the translator emits it, with real operand values (the
    profile counter's address in the profile window, a return address)."""
    t = T.get(name)
    values = {"imm": {"profile": L.PROFILE, "ret": 4}.get(name), "ret": PAGE}
    return t, t.emit(**{k: v for k, v in values.items() if k in t.slots})


def writes(insn):
    return {insn.reg_name(r) for r in insn.regs_access()[1]}


def paths(insns):
    """Every path through a template from its first instruction: lists of
    instructions, following local branches (they all go forward)."""
    by_addr = {i.address: k for k, i in enumerate(insns)}
    end = insns[-1].address + insns[-1].size
    out = []

    def walk(k, acc):
        while k < len(insns):
            i = insns[k]
            acc = acc + [i]
            if i.mnemonic.startswith("j") and not i.op_str.startswith("dword"):
                target = int(i.op_str, 16)
                if i.mnemonic != "jmp":
                    walk(by_addr[target] if target != end else len(insns), acc)
                    k += 1
                    continue
                k = by_addr[target] if target != end else len(insns)
                continue
            if i.mnemonic == "jmp":                 # jmp dword ptr [S_JMP]: leaves
                break
            k += 1
        out.append(acc)
    walk(0, [])
    return out


@pytest.mark.parametrize("name", FLAG_FREE)
def test_flag_free_templates_touch_no_flag(name):
    _, code = emitted(name)
    for i in dis(code, 0, detail=True):
        assert i.mnemonic in FLAG_FREE_MNEMONICS, f"{name}: {i.mnemonic} {i.op_str}"
        if i.mnemonic != "int":                  # the callout: the VMM keeps the guest's flags
            assert "eflags" not in writes(i), f"{name}: {i.mnemonic} {i.op_str} writes EFLAGS"


@pytest.mark.parametrize("name", ["pushf", "popf"])
def test_flag_changing_templates_end_every_path_with_a_popfd(name):
    """pushf computes the guest's word with and/or between its own pushfd and
    popfd; popf computes with and, then loads the guest's word with popfd.
    On every path, no flag-writing instruction stands after the last popfd,
    and none stands before a callout without a popfd in between."""
    _, code = emitted(name)
    for path in paths(dis(code, 0, detail=True)):
        dirty = saved = False
        for i in path:
            if i.mnemonic == "pushfd":
                saved = True
            elif i.mnemonic == "popfd":
                dirty = False
            elif i.mnemonic == "int":
                assert not dirty, f"{name}: a callout with the template's flags"
            elif "eflags" in writes(i):
                assert saved or name == "popf", f"{name}: {i.mnemonic} before the flags are saved"
                dirty = True
        assert not dirty, f"{name}: ends with the template's flags"


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_give_the_guest_its_registers_back(name):
    """A sequence uses EAX and ECX (parked in the vCPU page) and ESP; at
    every callout and at its end the parked registers hold guest values again
    (prologues end with the target in EAX, by design)."""
    _, code = emitted(name)
    slot = {"eax": f"dword ptr [{L.data(L.S_EAX):#x}]", "ecx": f"dword ptr [{L.data(L.S_ECX):#x}]"}
    for path in paths(dis(code, 0, detail=True)):
        clobbered = set()
        for i in path:
            w = writes(i) - {"eflags", "esp"}
            assert w <= {"eax", "ecx", "ax", "cx"}, f"{name}: {i.mnemonic} {i.op_str} writes {w}"
            for reg in ("eax", "ecx"):
                if i.mnemonic == "mov" and i.op_str == f"{reg}, {slot[reg]}":
                    clobbered.discard(reg)
                elif w & {reg, reg[1:]}:
                    clobbered.add(reg)
            if i.mnemonic == "int" or (i.mnemonic == "jmp" and i.op_str.startswith("dword")):
                assert not clobbered, f"{name}: {i.mnemonic} with {clobbered} not restored"
        if name not in PROLOGUES:
            assert not clobbered, f"{name}: ends with {clobbered} not restored"


def guest_accesses(name, path):
    """(offset, esp-relative address, is_write) of every access one path
    through a template makes to guest memory: its stack.  Everything else it
    touches is an absolute address in the VMM window (the vCPU page, the
    table, the profile counters)."""
    out, esp = [], 0
    for i in path:
        m = i.mnemonic
        if m in ("push", "pushfd"):
            esp -= 4
            out.append((i.address, esp, True))
            continue
        if m == "popfd":
            out.append((i.address, esp, False))
            esp += 4
            continue
        for k, op in enumerate(i.operands):
            if op.type != X86_OP_MEM:
                continue
            base = i.reg_name(op.mem.base) if op.mem.base else None
            if m == "lea":
                assert base == "esp" or (op.mem.disp & 0xFFFFFFFF) < 0x10, (name, i.op_str)
                if i.op_str.startswith("esp"):
                    esp = None                       # popped past: nothing after may touch it
                continue
            disp = op.mem.disp & 0xFFFFFFFF
            if base is None and disp >= VMM_BASE_LINEAR:
                continue                             # the VMM window
            assert base == "esp" and disp == 0, f"{name}: guest access {i.op_str}"
            assert esp is not None, f"{name}: stack access after the pop"
            out.append((i.address, esp, k == 0 and m == "mov"))
    return out


@pytest.mark.parametrize("name", TEMPLATES)
def test_each_template_touches_one_guest_dword_first_at_a_fault_point(name):
    """Only guest accesses can fault.  All of a template's touch the same
    stack dword, and the first of them is a named fault point, so whatever
    follows it cannot fault (a read first proves nothing about a write, so
    then no write follows)."""
    t, code = emitted(name)
    for path in paths(dis(code, 0, detail=True)):
        acc = guest_accesses(name, path)
        assert set(t.faults) <= {a for a, _, _ in acc}
        if not acc:
            assert t.faults == {}
            continue
        first_at, where, first_write = acc[0]
        assert first_at in t.faults
        assert {w for _, w, _ in acc} == {where}, f"{name}: touches more than one guest dword"
        if not first_write:
            assert not any(w for _, _, w in acc), f"{name}: writes what it only read before"


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_callouts_are_int_callout_vector(name):
    t, code = emitted(name)
    ints = [i for i in dis(code) if i.mnemonic == "int"]
    assert all(i.op_str == hex(L.CALLOUT_VECTOR) for i in ints)
    assert t.callouts == tuple(i.address + i.size for i in ints)


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_placeholders_are_all_patched(name):
    """emit() writes each operand value where the template uses it: every
    use, so that no placeholder value is left in emitted code (it would be
    an address the translated code really reads or writes)."""
    t = T.get(name)
    out = t.emit(**{slot: 0x0BADF00D for slot in t.slots})
    for slot, offsets in t.slots.items():
        for at in offsets:
            assert struct.unpack_from("<I", out, at)[0] == 0x0BADF00D
    assert len(out) == len(t.code) and dis(out)[-1].address == dis(t.code)[-1].address
    for slot, value in T._PLACEHOLDERS.items():
        assert struct.pack("<I", value) not in out, \
            f"{name}: placeholder {slot} ({value:#x}) left in the emitted code"


def test_in_tc_counters_sit_in_the_vcpu_page_in_their_order():
    slots = [L.count_slot(e) for e in L.IN_TC_EVENTS]
    assert slots == [L.COUNTS + 4 * k for k in range(len(L.IN_TC_EVENTS))]
    assert slots[-1] + 4 <= L.DATA_SIZE


def test_hand_built_encodings():
    assert len(T.exit_stub()) == T.STUB_SIZE == len(T.jmp_rel32(0, 0))
    assert T.exit_stub() == STUB and T.callout() == CALLOUT_INT
    for at, target in ((L.TC, L.TC + 0x40), (L.TC + 0x1000, L.TC)):
        (j,) = dis(T.jmp_rel32(at, target), at)
        assert j.mnemonic == "jmp" and int(j.op_str, 16) == target
    (p,) = dis(T.push_imm32(0xC0101005))
    assert p.mnemonic == "push" and p.op_str == "0xc0101005"


@pytest.mark.parametrize("code", [b"\x66\xc3", b"\x66\xc2\x04\x00", b"\x66\xe8\x00\x01",
                                  b"\x66\xe9\x00\x01", b"\x66\xeb\x02", b"\x66\x74\x02",
                                  b"\x66\x0f\x84\x00\x01", b"\x66\xff\xe3", b"\x66\xff\xd3"],
                         ids=hexid)
def test_a_near_branch_with_a_16_bit_operand_size_is_refused_not_mistranslated(code):
    # Each truncates EIP to 16 bits and moves 2 bytes of stack; the
    # templates are 32-bit (a 16-bit ret popped 4 bytes), so the VMM ends
    # the run if it is ever reached (callouts._o16).
    unit = translate(code + b"\x90" * 4)
    (site,) = unit.sites
    assert site.kind == CALLOUT and callout_kinds(unit, site) == ["o16"]
