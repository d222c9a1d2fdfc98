"""Unit tests of the sensitive-instruction family of virtlab.vmm.emulate
(_SENSITIVE, and mov from a segment register in _mov): the answers a binary
translator's callouts give the guest kernel instead of the real CPU's.

Real encodings are decoded by capstone (detail on), mostly from hand bytes:
keystone puts an operand-size prefix on `push cs`, `sgdt`, `mov [m], ds`,
so where the 32-bit form matters the bytes are spelled out.  The host, state
and memory are fakes; the guest's memory is a PhysMem over a bytearray, read
through the emulator's own LinearView (guest paging per the vCPU).
"""
import struct
from types import SimpleNamespace

import pytest
from capstone import Cs, CS_ARCH_X86, CS_MODE_32

from virtlab import x86
from virtlab.assembler import engine
from virtlab.decode import Decoded
from virtlab.memory import GuestMemoryFault, PhysMem
from virtlab.vmm.emulate import Emulator, NotPrivileged
from virtlab.vmm.vcpu import VirtualCpu

import fakes

_CS = Cs(CS_ARCH_X86, CS_MODE_32)
_CS.detail = True
_KS = engine()

EIP = 0x100000
RAM = 0x40000
GDT, IDT = 0x8000, 0x9000
ARITH = x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF
OTHERS = x86.CF | x86.PF_FLAG | x86.AF | x86.SF | x86.OF | x86.IF | x86.DF   # all but ZF


def decoded(code):
    """A Decoded from raw bytes, or from assembly text through keystone."""
    if isinstance(code, str):
        code = bytes(_KS.asm(code, EIP)[0])
    insn = next(_CS.disasm(code, EIP, 1))
    assert insn.size == len(code), code.hex()
    return Decoded(0, bytes(insn.bytes), insn)


# -- fakes -----------------------------------------------------------------------
# The real selectors of a guest kernel under ring compression: CS and SS carry
# the real CPL 1; data segments hold what the kernel loaded (RPL 0 is allowed
# into a DPL 1 segment at CPL 1), fs an RPL 3 selector, gs null.
KERNEL_SEGS = {"cs": 0x09, "ss": 0x11, "ds": 0x10, "es": 0x11, "fs": 0x23, "gs": 0x00}


def FakeState(cpl=1, segs=None, **kw):
    """A state area at the guest kernel's ring (real ring 1) with its segments."""
    return fakes.FakeState(eip=EIP, cpl=cpl, segs=dict(KERNEL_SEGS, **(segs or {})), **kw)


class ControlOnly:
    """A host with what the emulator always needs and no emulate_sensitive
    (as hw and trap are)."""

    def __init__(self, state, mem, vcpu):
        self.machine = SimpleNamespace(state=state, mem=mem)
        self.vcpu = vcpu

    def read_cr(self, n):
        v = self.vcpu
        return {0: v.cr0, 2: v.cr2, 3: v.cr3, 4: v.cr4}[n]

    def write_cr(self, n, value):
        raise AssertionError("no CR write expected")

    def invlpg(self, linear):
        raise AssertionError("no invlpg expected")


class SensitiveHost(ControlOnly):
    emulate_sensitive = True


class SensitiveOff(ControlOnly):
    emulate_sensitive = False


def desc(base, limit, access, flags=0xC):
    return x86.make_segment(base, limit, access, flags)


# The guest's GDT.  Index: selector, what it is.
ENTRIES = {
    0x08: desc(0, 0xFFFFF, 0x9A),                   # kernel code, 4 GiB
    0x10: desc(0, 0xFFFFF, 0x92),                   # kernel data, 4 GiB
    0x18: desc(0, 0xFFFFF, 0xFA),                   # user code
    0x20: desc(0, 0xFFFFF, 0xF2),                   # user data
    0x28: desc(0x00345000, 0x67, 0x89, 0),          # 32-bit TSS, available
    0x30: desc(0x00200000, 0x12345, 0x92, 0x4),     # kernel data, byte-granular limit
    0x38: x86.make_gate(0x08, 0x00101234, x86.GATE_INTR32, 0),   # not LAR's business
    0x40: x86.make_gate(0x08, 0x00101234, 0xC, 3),  # 32-bit call gate, DPL 3
    0x48: desc(0, 0xFFFFF, 0x9E),                   # conforming readable code, DPL 0
    0x50: desc(0, 0xFFFFF, 0x98),                   # execute-only code
    0x58: desc(0, 0xFFFFF, 0x90),                   # read-only data
    0x60: desc(0, 0xFFFFF, 0x12),                   # data, not present
    0x68: desc(0x00346000, 0x2F, 0x82, 0),          # LDT
    0x70: desc(0, 0xFFFFF, 0xB2),                   # data, DPL 1
}
GDT_LIMIT = 15 * 8 - 1                              # entries 0..14; 0x78 is past it


def make_vm(host_class=SensitiveHost, **state_kw):
    buf = bytearray(RAM)
    mem = PhysMem(RAM, buf, memoryview(buf))
    for sel, raw in ENTRIES.items():
        mem.write(GDT + sel, raw)
    vcpu = VirtualCpu()
    vcpu.gdtr = (GDT, GDT_LIMIT)
    vcpu.idtr = (IDT, 0x7FF)
    vcpu.ldtr = 0x68
    vcpu.tr = (0x28, 0x00345000, 0x67)
    state = FakeState(**state_kw)
    host = host_class(state, mem, vcpu)
    emu = Emulator(host)

    def run(code):
        """Emulate one instruction at EIP; it must advance EIP past itself."""
        d = decoded(code)
        state.eip = EIP
        name = emu.emulate(d)
        assert state.eip == EIP + d.size
        return name
    return SimpleNamespace(mem=mem, buf=buf, vcpu=vcpu, state=state, emu=emu, run=run)


def fill(vm, at, n=16):
    """A recognizable pattern around a store, to see what it did not touch."""
    vm.buf[at:at + n] = b"\xcc" * n


# -- sgdt / sidt -------------------------------------------------------------------
@pytest.mark.parametrize("code, regs, at", [
    (b"\x0f\x01\x00", {"eax": 0x3000}, 0x3000),                      # sgdt [eax]
    (b"\x0f\x01\x05\x10\x30\x00\x00", {}, 0x3010),                   # sgdt [0x3010]
    (b"\x0f\x01\x44\x24\x08", {"esp": 0x3020}, 0x3028),              # sgdt [esp+8]
    ("sgdt [eax]", {"eax": 0x3000}, 0x3000),       # keystone: 66-prefixed, same 6 bytes
])
def test_sgdt_stores_the_virtual_gdtr(code, regs, at):
    vm = make_vm(**regs)
    vm.vcpu.gdtr = (0x00C01234, 0x00FF)
    fill(vm, at - 4)
    assert vm.run(code) == "sgdt"
    assert bytes(vm.buf[at - 4:at + 12]) == (b"\xcc" * 4 + bytes.fromhex("ff00 3412c000")
                                             + b"\xcc" * 6)


def test_sgdt_with_an_ss_based_operand_adds_the_ss_base():
    vm = make_vm(esp=0x100, bases={"ss": 0x3000})
    vm.run(b"\x0f\x01\x44\x24\x08")                                  # sgdt [esp+8]
    assert struct.unpack_from("<HI", vm.buf, 0x3108) == (GDT_LIMIT, GDT)


@pytest.mark.parametrize("code, regs, at", [
    (b"\x0f\x01\x0b", {"ebx": 0x3100}, 0x3100),                      # sidt [ebx]
    (b"\x0f\x01\x0d\x40\x31\x00\x00", {}, 0x3140),                   # sidt [0x3140]
])
def test_sidt_stores_the_virtual_idtr(code, regs, at):
    vm = make_vm(**regs)
    vm.vcpu.idtr = (0xC0105000, 0x07FF)
    fill(vm, at, 8)
    assert vm.run(code) == "sidt"
    assert bytes(vm.buf[at:at + 8]) == bytes.fromhex("ff07 0050 10c0") + b"\xcc\xcc"


# -- sldt / str --------------------------------------------------------------------
@pytest.mark.parametrize("mnemonic, reg32, reg16, mem16, value", [
    ("sldt", b"\x0f\x00\xc0", b"\x66\x0f\x00\xc0", b"\x0f\x00\x03", 0x68),   # eax / ax / [ebx]
    ("str", b"\x0f\x00\xc8", b"\x66\x0f\x00\xc8", b"\x0f\x00\x0b", 0x28),
])
def test_sldt_and_str(mnemonic, reg32, reg16, mem16, value):
    # A 32-bit register gets the selector zero-extended ...
    vm = make_vm(eax=0xDEADBEEF)
    assert vm.run(reg32) == mnemonic
    assert vm.state.regs["eax"] == value
    # ... a 16-bit one only its low word ...
    vm = make_vm(eax=0xDEADBEEF)
    assert vm.run(reg16) == mnemonic
    assert vm.state.regs["eax"] == 0xDEAD0000 | value
    # ... and memory exactly two bytes.
    vm = make_vm(ebx=0x3200)
    fill(vm, 0x3200, 4)
    assert vm.run(mem16) == mnemonic
    assert bytes(vm.buf[0x3200:0x3204]) == bytes([value, 0, 0xCC, 0xCC])


def test_sldt_and_str_answer_from_the_vcpu_not_a_constant():
    vm = make_vm(ecx=0xFFFFFFFF, edx=0xFFFFFFFF)
    vm.vcpu.ldtr = 0x0000
    vm.vcpu.tr = (0x0073, 0x1000, 0x67)
    vm.run(b"\x0f\x00\xc1")                                          # sldt ecx
    vm.run(b"\x0f\x00\xca")                                          # str edx
    assert vm.state.regs["ecx"] == 0 and vm.state.regs["edx"] == 0x73


# -- smsw ---------------------------------------------------------------------------
SMSW_CR0 = x86.CR0_PE | x86.CR0_MP | x86.CR0_ET | x86.CR0_NE | x86.CR0_WP | x86.CR0_TS


def test_smsw_in_the_sensitive_host():
    vm = make_vm(eax=0xFFFFFFFF, ebx=0x3300)
    vm.vcpu.cr0 = SMSW_CR0                          # 0x0001003B: WP is above the MSW
    assert vm.run(b"\x66\x0f\x01\xe0") == "smsw"                     # smsw ax
    assert vm.state.regs["eax"] == 0xFFFF003B
    fill(vm, 0x3300, 4)
    assert vm.run(b"\x0f\x01\x23") == "smsw"                         # smsw [ebx]
    assert bytes(vm.buf[0x3300:0x3304]) == b"\x3b\x00\xcc\xcc"
    # smsw r32: the SDM leaves the upper half undefined; the CPU model writes
    # the low 16 bits and keeps the rest, and so does the emulator.
    vm.state.regs["eax"] = 0xABCD0000
    assert vm.run(b"\x0f\x01\xe0") == "smsw"                         # smsw eax
    assert vm.state.regs["eax"] == 0xABCD003B


# -- push Sreg ------------------------------------------------------------------------
@pytest.mark.parametrize("code, name, pushed", [
    (b"\x0e", "cs", 0x08),              # real 0x09: RPL 1 shown as 0
    (b"\x16", "ss", 0x10),              # real 0x11
    (b"\x1e", "ds", 0x10),              # real 0x10: unchanged
    (b"\x06", "es", 0x10),              # real 0x11
    (b"\x0f\xa0", "fs", 0x23),          # RPL 3: unchanged
    (b"\x0f\xa8", "gs", 0x00),          # null: unchanged
])
def test_push_sreg_pushes_the_guest_selector(code, name, pushed):
    vm = make_vm(esp=0x200, bases={"ss": 0x3000})
    fill(vm, 0x31F8)
    assert vm.run(code) == "push_" + name
    assert vm.state.regs["esp"] == 0x1FC
    assert bytes(vm.buf[0x31F8:0x3208]) == (b"\xcc" * 4 + pushed.to_bytes(4, "little")
                                            + b"\xcc" * 8)


def test_push_cs_from_user_mode_is_unchanged():
    vm = make_vm(cpl=3, esp=0x3400, segs={"cs": 0x1B, "ss": 0x23})
    vm.run(b"\x0e")
    vm.run(b"\x16")
    assert vm.state.regs["esp"] == 0x33F8
    assert struct.unpack_from("<II", vm.buf, 0x33F8) == (0x23, 0x1B)


def test_push_cs_with_operand_size_prefix_is_a_16_bit_push():
    # keystone assembles `push cs` as 66 0E: two bytes, ESP - 2.
    assert decoded("push cs").raw == b"\x66\x0e"
    vm = make_vm(esp=0x3400)
    fill(vm, 0x33F8)
    assert vm.run("push cs") == "push_cs"
    assert vm.state.regs["esp"] == 0x33FE
    assert bytes(vm.buf[0x33F8:0x3400]) == b"\xcc" * 6 + b"\x08\x00"


def test_push_sreg_that_faults_leaves_esp_unchanged():
    vm = make_vm(esp=RAM + 4)                       # the slot at RAM is not memory
    with pytest.raises(GuestMemoryFault):
        vm.emu.emulate(decoded(b"\x0e"))
    assert vm.state.regs["esp"] == RAM + 4 and vm.state.eip == EIP


@pytest.mark.parametrize("code", [
    b"\x50",                            # push eax
    b"\x6a\x05",                        # push 5
    b"\xff\x33",                        # push dword ptr [ebx]
])
def test_push_of_anything_but_a_segment_register_is_not_ours(code):
    vm = make_vm(esp=0x3400)
    with pytest.raises(NotPrivileged):
        vm.emu.emulate(decoded(code))
    assert vm.state.regs["esp"] == 0x3400 and vm.state.eip == EIP


# -- mov r/m, Sreg ----------------------------------------------------------------------
@pytest.mark.parametrize("code, reg, expect", [
    (b"\x8c\xc8", "eax", 0x00000008),   # mov eax, cs: zero-extended, RPL 1 shown as 0
    (b"\x8c\xd1", "ecx", 0x00000010),   # mov ecx, ss
    (b"\x8c\xe2", "edx", 0x00000023),   # mov edx, fs: RPL 3 unchanged
    (b"\x8c\xeb", "ebx", 0x00000000),   # mov ebx, gs: null
    (b"\x66\x8c\xc0", "eax", 0xFFFF0010),   # mov ax, es: only the low word
])
def test_mov_from_sreg_to_register(code, reg, expect):
    vm = make_vm(eax=0xFFFFFFFF, ecx=0xFFFFFFFF, edx=0xFFFFFFFF, ebx=0xFFFFFFFF)
    assert vm.run(code) == "mov_from_seg"
    assert vm.state.regs[reg] == expect


@pytest.mark.parametrize("code", [b"\x8c\x0b", b"\x66\x8c\x0b"])      # mov [ebx], cs
def test_mov_from_sreg_to_memory_stores_16_bits(code):
    vm = make_vm(ebx=0x3500)
    fill(vm, 0x3500, 4)
    assert vm.run(code) == "mov_from_seg"
    assert bytes(vm.buf[0x3500:0x3504]) == b"\x08\x00\xcc\xcc"


def test_mov_from_sreg_without_the_family_is_not_ours():
    for host in (ControlOnly, SensitiveOff):
        vm = make_vm(host, eax=0xFFFFFFFF)
        with pytest.raises(NotPrivileged):
            vm.emu.emulate(decoded(b"\x8c\xc8"))     # mov eax, cs
        assert vm.state.regs["eax"] == 0xFFFFFFFF


def test_mov_in_the_sensitive_host_still_reads_crs_and_refuses_the_rest():
    vm = make_vm(eax=0)
    vm.vcpu.cr0 = SMSW_CR0
    assert vm.run(b"\x0f\x20\xc0") == "read_cr0"                     # mov eax, cr0
    assert vm.state.regs["eax"] == SMSW_CR0
    for code in (b"\x8e\xd8", b"\x89\xd8"):                          # mov ds, eax; mov eax, ebx
        with pytest.raises(NotPrivileged):
            vm.emu.emulate(decoded(code))


# -- lar / lsl ---------------------------------------------------------------------------
LAR_VALID = {
    0x08: 0x00C09A00, 0x10: 0x00C09200, 0x1B: 0x00C0FA00, 0x23: 0x00C0F200,
    0x28: 0x00008900,                   # TSS
    0x30: 0x00409200,                   # byte-granular: G clear
    0x40: 0x0010EC00,                   # call gate: bits 20-23 are the offset's, kept
    0x4B: 0x00C09E00,                   # conforming code: no privilege check (RPL 3)
    0x50: 0x00C09800, 0x58: 0x00C09000,
    0x60: 0x00C01200,                   # not present: LAR reports it, with P clear
    0x68: 0x00008200,                   # LDT
    0x70: 0x00C0B200,
}
LSL_VALID = {
    0x08: 0xFFFFFFFF, 0x10: 0xFFFFFFFF, 0x23: 0xFFFFFFFF,
    0x28: 0x67,                         # TSS
    0x30: 0x12345,                      # byte granular
    0x4B: 0xFFFFFFFF, 0x60: 0xFFFFFFFF,
    0x68: 0x2F,                         # LDT
}
# Not valid for either, from the guest kernel (guest CPL 0, real CPL 1).
NOT_VALID = {
    0x00: "null", 0x03: "null with RPL 3", 0x04: "TI=1, index 0",
    0x0C: "LDT selector (TI=1), though GDT entry 1 is valid",
    0x78: "past the GDT limit", 0xFFF8: "far past the limit",
    0x0B: "DPL 0 < RPL 3", 0x72: "DPL 1 < RPL 2",
    0x38: "interrupt gate: not a type LAR or LSL reports",
}
LSL_ONLY_NOT_VALID = {0x40: "call gate: no limit"}


def _check(mnemonic, code, sel, expect):
    """Run `mnemonic eax, ebx` (code) with ebx = sel and junk above it."""
    vm = make_vm(eax=0xDEADBEEF, ebx=0xABCD0000 | sel,
                 eflags=0x2 | (OTHERS if expect is not None else OTHERS | x86.ZF))
    assert vm.run(code) == mnemonic
    if expect is None:
        assert vm.state.regs["eax"] == 0xDEADBEEF
        assert vm.state.flags == 0x2 | OTHERS               # ZF cleared, the rest kept
    else:
        assert vm.state.regs["eax"] == expect
        assert vm.state.flags == 0x2 | OTHERS | x86.ZF      # ZF set, the rest kept
    return vm


@pytest.mark.parametrize("sel", sorted(LAR_VALID))
def test_lar_valid(sel):
    _check("lar", b"\x0f\x02\xc3", sel, LAR_VALID[sel])             # lar eax, ebx


@pytest.mark.parametrize("sel", sorted(NOT_VALID))
def test_lar_not_valid(sel):
    _check("lar", b"\x0f\x02\xc3", sel, None)


@pytest.mark.parametrize("sel", sorted(LSL_VALID))
def test_lsl_valid(sel):
    _check("lsl", b"\x0f\x03\xc3", sel, LSL_VALID[sel])             # lsl eax, ebx


@pytest.mark.parametrize("sel", sorted(NOT_VALID | LSL_ONLY_NOT_VALID))
def test_lsl_not_valid(sel):
    _check("lsl", b"\x0f\x03\xc3", sel, None)


def test_lar_lsl_with_a_valid_selector_leave_zf_set_when_it_was():
    vm = make_vm(eax=0, ebx=0x10, eflags=0x2 | ARITH)
    vm.run(b"\x0f\x02\xc3")
    assert vm.state.flags == 0x2 | ARITH and vm.state.regs["eax"] == 0x00C09200


def test_lar_lsl_16_bit_destinations_take_the_low_word():
    vm = make_vm(eax=0xFFFFFFFF, ebx=0x08, ecx=0x30, edx=0xFFFFFFFF)
    assert vm.run(b"\x66\x0f\x02\xc3") == "lar"                      # lar ax, bx
    assert vm.state.regs["eax"] == 0xFFFF9A00
    assert vm.run(b"\x66\x0f\x03\xd1") == "lsl"                      # lsl dx, cx
    assert vm.state.regs["edx"] == 0xFFFF2345
    assert vm.state.flags & x86.ZF


def test_lar_lsl_memory_source():
    vm = make_vm(eax=0, ecx=0, ebx=0x3600, esi=0x3602)
    vm.buf[0x3600:0x3604] = b"\x28\x00\x78\x00"     # a TSS selector, then one past the limit
    assert vm.run(b"\x0f\x02\x03") == "lar"                          # lar eax, word ptr [ebx]
    assert vm.state.regs["eax"] == 0x00008900 and vm.state.flags & x86.ZF
    assert vm.run(b"\x0f\x03\x0b") == "lsl"                          # lsl ecx, word ptr [ebx]
    assert vm.state.regs["ecx"] == 0x67 and vm.state.flags & x86.ZF
    assert vm.run(b"\x0f\x03\x0e") == "lsl"                          # lsl ecx, word ptr [esi]
    assert vm.state.regs["ecx"] == 0x67 and not vm.state.flags & x86.ZF


def test_lar_a_descriptor_straddling_the_limit_is_not_valid():
    vm = make_vm(eax=0, ebx=0x70)
    vm.vcpu.gdtr = (GDT, 0x70 + 6)                  # the last byte of entry 14 is outside
    vm.run(b"\x0f\x02\xc3")
    assert not vm.state.flags & x86.ZF and vm.state.regs["eax"] == 0


def test_lar_privilege_is_checked_against_the_guest_cpl():
    # Real CPL 1 is the guest's ring 0: its DPL 0 segments are visible ...
    _check("lar", b"\x0f\x02\xc3", 0x08, LAR_VALID[0x08])
    # ... and from user mode (guest CPL 3) they are not, whatever the RPL.
    for sel in (0x08, 0x0B, 0x70, 0x28):
        vm = make_vm(cpl=3, eax=0xDEADBEEF, ebx=sel, eflags=0x2 | x86.ZF)
        vm.run(b"\x0f\x02\xc3")
        assert vm.state.flags == 0x2 and vm.state.regs["eax"] == 0xDEADBEEF, hex(sel)
    vm = make_vm(cpl=3, eax=0, ebx=0x23)
    vm.run(b"\x0f\x02\xc3")
    assert vm.state.regs["eax"] == 0x00C0F200 and vm.state.flags & x86.ZF


# -- verr / verw -------------------------------------------------------------------------
VERIFY = [
    # selector, verr, verw, why
    (0x08, True, False, "readable code: verr, but code is never writable"),
    (0x10, True, True, "writable data"),
    (0x1B, True, False, "user code, readable, DPL 3"),
    (0x23, True, True, "user data"),
    (0x4B, True, False, "conforming readable code: no privilege check"),
    (0x50, False, False, "execute-only code"),
    (0x58, True, False, "read-only data"),
    (0x60, True, True, "not present: not checked"),
    (0x70, True, True, "DPL 1 data from guest CPL 0"),
    (0x72, False, False, "DPL 1 < RPL 2"),
    (0x0B, False, False, "DPL 0 < RPL 3"),
    (0x28, False, False, "TSS: a system descriptor"),
    (0x68, False, False, "LDT: a system descriptor"),
    (0x40, False, False, "call gate: a system descriptor"),
    (0x00, False, False, "null"),
    (0x0C, False, False, "LDT selector"),
    (0x78, False, False, "past the GDT limit"),
]


@pytest.mark.parametrize("sel, readable, writable, why", VERIFY)
def test_verr_verw_register(sel, readable, writable, why):
    for code, mnemonic, ok in ((b"\x0f\x00\xe0", "verr", readable),   # verr ax
                               (b"\x0f\x00\xe8", "verw", writable)):  # verw ax
        for before in (0x2 | OTHERS, 0x2 | OTHERS | x86.ZF):
            vm = make_vm(eax=0xFFFF0000 | sel, eflags=before)
            assert vm.run(code) == mnemonic
            assert vm.state.flags == (before | x86.ZF if ok else before & ~x86.ZF), (mnemonic, why)
            assert vm.state.regs["eax"] == 0xFFFF0000 | sel


def test_verr_verw_memory():
    vm = make_vm(ebx=0x3700)
    vm.buf[0x3700:0x3702] = b"\x58\x00"             # read-only data
    assert vm.run(b"\x0f\x00\x23") == "verr"                         # verr word ptr [ebx]
    assert vm.state.flags & x86.ZF
    assert vm.run(b"\x0f\x00\x2b") == "verw"                         # verw word ptr [ebx]
    assert not vm.state.flags & x86.ZF


def test_verr_verw_from_user_mode():
    vm = make_vm(cpl=3, ecx=0x10)
    vm.run(b"\x0f\x00\xe1")                                          # verr cx
    assert not vm.state.flags & x86.ZF              # kernel data, DPL 0
    vm.run(b"\x0f\x00\xe9")                                          # verw cx
    assert not vm.state.flags & x86.ZF
    vm.state.regs["ecx"] = 0x4B
    vm.run(b"\x0f\x00\xe1")                         # conforming code: readable from ring 3
    assert vm.state.flags & x86.ZF


# -- through guest paging ------------------------------------------------------------------
def paged_vm(**state_kw):
    """Guest paging on: linear 0xC0000000 -> physical 0x20000 (one page, the
    stack and a scratch area), 0xC0001000 -> 0x21000 (the GDT, a copy);
    0xC0002000 is not mapped."""
    vm = make_vm(**state_kw)
    pd, pt = 0x10000, 0x11000
    vm.mem.set_u32(pd + (0xC0000000 >> 22) * 4, pt | x86.PTE_P | x86.PTE_W)
    vm.mem.set_u32(pt + 0, 0x20000 | x86.PTE_P | x86.PTE_W)
    vm.mem.set_u32(pt + 4, 0x21000 | x86.PTE_P | x86.PTE_W)
    vm.buf[0x21000:0x21000 + 0x78] = vm.buf[GDT:GDT + 0x78]
    vm.vcpu.cr0 |= x86.CR0_PG
    vm.vcpu.cr3 = pd
    vm.vcpu.gdtr = (0xC0001000, GDT_LIMIT)
    return vm


def test_paged_push_and_sgdt_write_through_the_guest_page_tables():
    vm = paged_vm(esp=0xC0001000, eax=0xC0000100)
    vm.run(b"\x0e")                                                  # push cs
    assert vm.state.regs["esp"] == 0xC0000FFC
    assert bytes(vm.buf[0x20FFC:0x21000]) == b"\x08\x00\x00\x00"
    vm.run(b"\x0f\x01\x00")                                          # sgdt [eax]
    assert struct.unpack_from("<HI", vm.buf, 0x20100) == (GDT_LIMIT, 0xC0001000)


def test_paged_lar_reads_the_guest_gdt_through_paging():
    vm = paged_vm(eax=0, ebx=0x28)
    vm.buf[GDT:GDT + 0x78] = bytes(0x78)            # the physical copy at GDT is not the GDT
    vm.run(b"\x0f\x02\xc3")                                          # lar eax, ebx
    assert vm.state.regs["eax"] == 0x00008900 and vm.state.flags & x86.ZF


def test_paged_push_to_an_unmapped_page_faults_with_esp_unchanged():
    vm = paged_vm(esp=0xC0002004)
    with pytest.raises(GuestMemoryFault) as info:
        vm.emu.emulate(decoded(b"\x16"))                             # push ss
    assert info.value.linear == 0xC0002000 and info.value.error_code == x86.PF_W
    assert vm.state.regs["esp"] == 0xC0002004 and vm.state.eip == EIP


# -- hosts without the family ----------------------------------------------------------------
@pytest.mark.parametrize("host", [ControlOnly, SensitiveOff])
@pytest.mark.parametrize("code", [
    b"\x0f\x01\x00",                    # sgdt [eax]
    b"\x0f\x01\x08",                    # sidt [eax]
    b"\x0f\x00\xc0",                    # sldt eax
    b"\x0f\x00\xc8",                    # str eax
    b"\x0e",                            # push cs
    b"\x0f\x02\xc3",                    # lar eax, ebx
    b"\x0f\x03\xc3",                    # lsl eax, ebx
    b"\x0f\x00\xe0",                    # verr ax
    b"\x0f\x00\xe8",                    # verw ax
])
def test_without_emulate_sensitive_the_family_is_not_privileged(host, code):
    vm = make_vm(host, eax=0x3000, ebx=0x08, esp=0x3400)
    before = bytes(vm.buf)
    with pytest.raises(NotPrivileged):
        vm.emu.emulate(decoded(code))
    assert bytes(vm.buf) == before and vm.state.eip == EIP
    assert vm.state.regs["eax"] == 0x3000 and vm.state.regs["esp"] == 0x3400


def test_without_emulate_sensitive_smsw_still_works():
    vm = make_vm(ControlOnly, eax=0)
    vm.vcpu.cr0 = SMSW_CR0
    assert vm.run(b"\x66\x0f\x01\xe0") == "smsw"
    assert vm.state.regs["eax"] == 0x003B
