"""Differential tests: one ring-0 assembly guest, run under native and under
trap, hw and hw-npt, must end with the same architectural state as the guest
itself records it at LOG (general registers, control registers read back,
descriptor-table loads, memory written through paging, A/D bits, the frames
its handlers see).  The LOG bytes are compared with native's.

pushf, popf, sidt, sgdt, smsw and push cs are sensitive but unprivileged on
IA-32, so under `trap` (ring compression) they tell the truth about the real
CPU: those are kept out of trap's comparison and checked against the
documented difference instead (the Popek-Goldberg point).

Also unit tests of virtlab.vmm.pt_store.emulate_store and
virtlab.vmm.rings.compress with hand-computed expectations.
"""
import functools
import struct

import pytest

from fakes import FakeState
from capstone import Cs, CS_ARCH_X86, CS_MODE_32

from virtlab import asmguest as A, x86
from virtlab.decode import Decoded
from virtlab.machine import BootSpec, Machine
from virtlab.memmap import VMM_BASE_LINEAR
from virtlab.native import Native
from virtlab.vmm import rings, memory as vmm_memory
from virtlab.vmm.emulate import Unsupported
from virtlab.vmm.pt_store import emulate_store
from trap_emulate.hw import Hw, HwNpt
from trap_emulate.trap import Trap

BACKENDS = {"native": Native, "trap": Trap, "hw": Hw, "hw-npt": HwNpt}
VIRTUAL = ("trap", "hw", "hw-npt")
LOG = 0x5000
LOG_WORDS = 64


def L(i):
    return LOG + 4 * i


def store(i, reg="eax"):
    return f"mov es:[{L(i)}], {reg}\n"


def pte(linear):
    return A.PGTAB + (linear >> 12) * 4


def pokes(base, pairs):
    return "".join(f"mov dword ptr [{base + off:#x}], {val:#x}\n" for off, val in pairs)


# -- scenarios ------------------------------------------------------------------
def arithmetic():
    body = """
        mov eax, 0x7fffffff
        add eax, 1
        lahf
        seto bl
        movzx ebx, bl
        shr eax, 8
    """ + store(0, "eax") + store(1, "ebx") + """
        mov ecx, 0x12345678
        imul ecx, ecx, 3
    """ + store(2, "ecx") + """
        xor edx, edx
        mov eax, 1000
        mov esi, 7
        div esi
    """ + store(3) + store(4, "edx") + """
        sub eax, 200
        lahf
        seto bl
        movzx ebx, bl
        movzx eax, ah
    """ + store(5) + store(6, "ebx") + """
        mov eax, 0x80000001
        mov ecx, 4
        rol eax, cl
        lahf
        movzx edx, ah
    """ + store(7) + store(8, "edx") + """
        mov eax, 1
        mov ebx, 2
        mov ecx, 3
        mov edx, 4
        mov esi, 5
        mov edi, 6
        mov ebp, 7
        pushad
        mov esi, esp
    """ + "".join(f"mov eax, [esi + {4 * k}]\n" + store(9 + k) for k in range(8)) + """
        popad
        bsf eax, ebp
        bswap ebx
    """ + store(17) + store(18, "ebx") + A.exit_with(0)
    return A.AsmGuest(body=body)


def control_registers():
    pd2 = 0x6000
    body = ("mov eax, cr0\n" + store(0) + "mov eax, cr3\n" + store(1)
            + "mov eax, cr0\nor eax, 0x8\nmov cr0, eax\nmov eax, cr0\n" + store(4)
            + "clts\nmov eax, cr0\n" + store(5)
            + "mov eax, 0x1234000\nmov cr2, eax\nxor eax, eax\nmov eax, cr2\n" + store(6)
            # a second page directory sharing the identity tables: CR3 switch
            + pokes(pd2, [(0, A.PGTAB | 7), (4, (A.PGTAB + 0x1000) | 7)])
            + "mov dword ptr [0x300000], 0x51515151\n"
            + f"mov eax, {pd2:#x}\nmov cr3, eax\nmov eax, cr3\n" + store(7)
            + "mov eax, [0x300000]\n" + store(8)
            + f"mov eax, {A.PGDIR:#x}\nmov cr3, eax\nmov eax, cr3\n" + store(9)
            # MSRs
            + "mov ecx, 0x174\nmov eax, 0x23\nxor edx, edx\nwrmsr\nxor eax, eax\nrdmsr\n"
            + store(10) + store(11, "edx")
            # paging off and on again
            + "mov eax, cr0\nand eax, 0x7fffffff\nmov cr0, eax\nmov eax, cr0\n" + store(12)
            + "mov eax, [0x300000]\n" + store(13)
            + "mov eax, cr0\nor eax, 0x80000000\nmov cr0, eax\nmov eax, cr0\n" + store(14)
            + "wbinvd\n" + A.exit_with(0))
    return A.AsmGuest(body=body, paging=True)


NEWGDT, NEWIDT = 0x6000, 0x8000


def descriptor_tables():
    """lgdt of a new GDT, a far return into its code segment, DS reloaded with a
    based data segment, lidt of a new IDT whose gate uses the new code segment,
    and the frame `int 0x80` delivers through it."""
    dwords = list(struct.unpack("<16I", A._gdt()))
    dwords += struct.unpack("<II", x86.make_segment(0, 0xFFFFF, 0x9A))           # 0x40 code
    dwords += struct.unpack("<II", x86.make_segment(0x1000, 0xFFFF, 0x92, 0x4))  # 0x48 data
    gate = x86.make_gate(0x40, A.HANDLERS + 0x80 * 0x100, x86.GATE_INTR32, 0)
    body = (pokes(NEWGDT, [(4 * i, w) for i, w in enumerate(dwords)])
            + f"mov word ptr [{NEWGDT + 0x100:#x}], {4 * len(dwords) - 1:#x}\n"
            + f"mov dword ptr [{NEWGDT + 0x102:#x}], {NEWGDT:#x}\n"
            + pokes(NEWIDT, [(0x80 * 8, struct.unpack('<I', gate[:4])[0]),
                             (0x80 * 8 + 4, struct.unpack('<I', gate[4:])[0])])
            + f"mov word ptr [{NEWIDT + 0x800:#x}], 0x7ff\n"
            + f"mov dword ptr [{NEWIDT + 0x802:#x}], {NEWIDT:#x}\n"
            + "mov dword ptr [0x7100], 0x77665544\n"
            + f"lgdt [{NEWGDT + 0x100:#x}]\n"
            + "call getip\ngetip:\npop ebx\nadd ebx, 8\npush 0x40\npush ebx\nretf\n"
            + "mov ax, 0x48\nmov ds, ax\nmov eax, [0x6100]\n" + store(0)
            + "mov ax, 0x10\nmov ds, ax\n"
            + f"lidt [{NEWIDT + 0x800:#x}]\n"
            + "mov ecx, 0x1111\nint 0x80\n" + store(6, "ecx")
            + f"mov eax, [{A.GDT + 0x3C:#x}]\n" + store(7)      # TSS descriptor: busy after ltr
            + A.exit_with(0))
    handler = ("mov eax, [esp]\n" + store(1) + "mov eax, [esp+4]\n" + store(2)
               + "mov eax, [esp+8]\n" + store(3) + store(4, "esp")
               + "mov ecx, 0x2222\n" + "mov dword ptr es:[" + str(L(5)) + "], 1\niretd\n")
    return A.AsmGuest(body=body, handlers={0x80: handler})


INT_HANDLER = ("mov eax, [esp]\n" + store(0) + "mov eax, [esp+4]\n" + store(1)
               + "mov eax, [esp+8]\n" + store(2) + "mov eax, [esp+12]\n" + store(3)
               + "mov eax, [esp+16]\n" + store(4) + store(5, "esp")
               + f"inc dword ptr es:[{L(6)}]\niretd\n")


def interrupt_frames():
    """`int 0x80` from ring 0 with IF clear (interrupt gate), from ring 0 with a
    trap gate, and from ring 3 (stack switch, 5-word frame)."""
    ring3 = (f"mov eax, 0x3333\nint 0x80\nmov eax, [{L(0)}]\nmov [{L(8)}], eax\n"
             f"mov eax, [{L(4)}]\nmov [{L(9)}], eax\nint 0x82\n")
    body = ("mov esp, 0x88000\nint 0x80\n"
            f"mov eax, [{L(0)}]\nmov [{L(10)}], eax\nmov eax, [{L(2)}]\nmov [{L(11)}], eax\n"
            f"mov [{L(12)}], esp\n"
            "int 0x81\n"
            + A.iret_to(3, A.RING3, A.STACK3))
    trap_handler = ("mov eax, [esp+8]\n" + store(13) + store(14, "esp") + "iretd\n")
    return A.AsmGuest(body=body, ring3=ring3, handlers={0x80: INT_HANDLER, 0x81: trap_handler,
                                                       0x82: A.exit_with(0)},
                      user_vectors=(0x80, 0x82), trap_gates=(0x81,))


def _recorder(first):
    """A system-call handler that records its frame (EIP, CS, EFLAGS, ESP,
    SS) and ESP at L(first + 6 * k) for its k-th call (k counted at L(first - 1))."""
    return (f"mov ebx, es:[{L(first - 1)}]\nimul ebx, ebx, 24\nadd ebx, {L(first)}\n"
            + "".join(f"mov eax, [esp+{4 * i}]\nmov es:[ebx+{4 * i}], eax\n" for i in range(5))
            + f"mov es:[ebx+20], esp\ninc dword ptr es:[{L(first - 1)}]\niretd\n")


REMAPPED = 0x300000              # where the kernel stack page goes
STRADDLE_ESP0 = A.STACK0 + 8     # a 5-word frame below it crosses into that page


def delivery_caches():
    """What a VMM may keep between two deliveries and must drop when the
    guest changes what it was made from.  `int 0x80` from ring 3 through its
    gate; again after the guest pointed the gate at another handler; again
    after it remapped its kernel stack page to another frame (the frames
    before went to that same page); and again after it moved TSS.esp0 so
    that the frame straddles the remapped page and the next, which are no
    longer next to each other in physical memory."""
    gate = A.IDT + 0x80 * 8
    kstack = A.STACK0 - 0x1000                 # the page below TSS.esp0
    repoint = (f"mov eax, [{A.IDT + 0x85 * 8:#x}]\nmov [{gate:#x}], eax\n"
               f"mov eax, [{A.IDT + 0x85 * 8 + 4:#x}]\nmov [{gate + 4:#x}], eax\niretd\n")
    remap = (f"mov esi, {kstack:#x}\nmov edi, {REMAPPED:#x}\nmov ecx, 1024\ncld\n"
             "rep movsd dword ptr es:[edi], dword ptr [esi]\n"
             f"mov dword ptr [{pte(kstack):#x}], {REMAPPED | 7:#x}\ninvlpg [{kstack:#x}]\n"
             "iretd\n")
    move = f"mov dword ptr [{A.TSS + x86.TSS_ESP0:#x}], {STRADDLE_ESP0:#x}\niretd\n"
    ring3 = ("mov eax, 0x1111\nint 0x80\nint 0x83\nint 0x80\nint 0x84\n"
             "int 0x80\nint 0x86\nint 0x80\nint 0x82\n")
    return A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3=ring3, paging=True,
                      handlers={0x80: _recorder(1), 0x85: _recorder(8), 0x83: repoint,
                                0x84: remap, 0x86: move, 0x82: A.exit_with(0)},
                      user_vectors=(0x80, 0x82, 0x83, 0x84, 0x85, 0x86))


PF_HANDLER = f"""
    mov ebx, es:[{L(0)}]
    shl ebx, 4
    add ebx, {L(1)}
    mov eax, cr2
    mov es:[ebx], eax
    mov eax, [esp]
    mov es:[ebx+4], eax
    mov eax, [esp+4]
    mov es:[ebx+8], eax
    mov eax, [esp+8]
    mov es:[ebx+12], eax
    inc dword ptr es:[{L(0)}]
    mov eax, cr2
    shr eax, 12
    lea ebx, [{A.PGTAB} + eax*4]
    mov eax, cr2
    and eax, 0xfffff000
    or eax, 7
    mov [ebx], eax
    mov ecx, cr2
    invlpg [ecx]
    add esp, 4
    iretd
"""


def page_faults():
    """#PF from ring 0 (not present, read-only with CR0.WP) and from ring 3
    (not present, read-only): the handler records CR2, the error code, EIP and
    CS, maps the page writable and returns, and the access is retried."""
    ring3 = ("mov eax, [0x405010]\nmov [0x5100], eax\n"
             "mov dword ptr [0x406020], 0x66\nmov eax, [0x406020]\nmov [0x5104], eax\nint 0x81\n")
    body = ("mov dword ptr [0x5108], 0\n"
            "mov eax, [0x403008]\nmov [0x510c], eax\n"
            "mov dword ptr [0x404004], 0x44\nmov eax, [0x404004]\nmov [0x5110], eax\n"
            + A.iret_to(3, A.RING3, A.STACK3))
    return A.AsmGuest(body=body, ring3=ring3, paging=True,
                      unmapped=(0x403000, 0x405000), readonly=(0x404000, 0x406000),
                      handlers={x86.PF: PF_HANDLER, 0x81: A.exit_with(0)}, user_vectors=(0x81,))


def remap_with_invlpg():
    """Page-table writes traced and propagated: remap a live page, invlpg, read
    and write through the new mapping; a new page table hooked into the page
    directory; a second page directory switched to and edited while idle."""
    a, b, c = 0x400000, 0x401000, 0x402000
    newpt, pd2 = 0x7000, 0x6000
    body = (f"mov dword ptr [{a:#x}], 0xaaaa1111\nmov dword ptr [{b:#x}], 0xbbbb2222\n"
            f"mov dword ptr [{c:#x}], 0xcccc3333\nmov dword ptr [0x403000], 0xdddd4444\n"
            f"mov eax, [{a:#x}]\n" + store(0)
            + f"mov dword ptr [{pte(a):#x}], {b | 7:#x}\ninvlpg [{a:#x}]\n"
            + f"mov eax, [{a:#x}]\n" + store(1)
            + f"mov dword ptr [{a + 4:#x}], 0x12121212\nmov eax, [{b + 4:#x}]\n" + store(2)
            + f"mov eax, [{pte(a):#x}]\n" + store(3)
            # xchg and or on a live PTE (other emulated store forms)
            + f"mov ecx, {c | 7:#x}\nxchg [{pte(a):#x}], ecx\ninvlpg [{a:#x}]\n" + store(4, "ecx")
            + f"mov eax, [{a:#x}]\n" + store(5)
            + f"and dword ptr [{pte(a):#x}], 0xfffffffd\ninvlpg [{a:#x}]\n"
            + f"or dword ptr [{pte(a):#x}], 2\ninvlpg [{a:#x}]\n"
            + f"mov dword ptr [{a + 8:#x}], 0x34343434\nmov eax, [{c + 8:#x}]\n" + store(6)
            # a new page table for 0x800000
            + pokes(newpt, [(0, c | 7), (4, 0x403000 | 7)])
            + f"mov dword ptr [{A.PGDIR + 8:#x}], {newpt | 7:#x}\n"
            + "mov eax, [0x800000]\n" + store(7) + "mov eax, [0x801000]\n" + store(8)
            + f"mov dword ptr [{newpt:#x}], {b | 7:#x}\ninvlpg [0x800000]\n"
            + "mov eax, [0x800000]\n" + store(9)
            # a second page directory, made current, left, edited, made current again
            + pokes(pd2, [(0, A.PGTAB | 7), (4, (A.PGTAB + 0x1000) | 7), (8, newpt | 7)])
            + f"mov eax, {pd2:#x}\nmov cr3, eax\nmov eax, [0x801000]\n" + store(10)
            + f"mov eax, {A.PGDIR:#x}\nmov cr3, eax\n"
            + f"mov dword ptr [{newpt + 4:#x}], {a | 7:#x}\n"
            + f"mov eax, {pd2:#x}\nmov cr3, eax\nmov eax, [0x801000]\n" + store(11)
            + f"mov eax, {A.PGDIR:#x}\nmov cr3, eax\n"
            # unmap: the next access is the guest's own #PF
            + f"mov dword ptr [{newpt:#x}], 0\ninvlpg [0x800000]\nmov eax, [0x800000]\n"
            + A.exit_with(1))
    pf = ("mov eax, cr2\n" + store(12) + "mov eax, [esp]\n" + store(13) + A.exit_with(0))
    return A.AsmGuest(body=body, paging=True, handlers={x86.PF: pf})


def accessed_dirty():
    """The guest clears A and D in a live PTE (a traced read-modify-write whose
    flags it keeps), touches the page and reads the PTE back: the CPU sets A on
    a read and A|D on a write, and so must the shadow MMU."""
    p = 0x404000
    clear = f"and dword ptr [{pte(p):#x}], 0xffffff9f\n"
    body = (f"mov eax, [{p:#x}]\nmov dword ptr [{p:#x}], 1\n"
            + clear + "lahf\nmovzx eax, ah\n" + store(0) + f"invlpg [{p:#x}]\n"
            + f"mov eax, [{pte(p):#x}]\n" + store(1)
            + f"mov eax, [{p:#x}]\n" + f"mov eax, [{pte(p):#x}]\n" + store(2)
            + f"mov dword ptr [{p:#x}], 5\n" + f"mov eax, [{pte(p):#x}]\n" + store(3)
            + clear + f"invlpg [{p:#x}]\n"
            + f"mov dword ptr [{p + 4:#x}], 6\n" + f"mov eax, [{pte(p):#x}]\n" + store(4)
            + f"and dword ptr [{A.PGDIR + 4:#x}], 0xffffffdf\ninvlpg [{p:#x}]\n"
            + f"mov eax, [{A.PGDIR + 4:#x}]\n" + store(5)
            + f"mov eax, [{p:#x}]\nmov eax, [{A.PGDIR + 4:#x}]\n" + store(6)
            + f"mov eax, [{p:#x}]\n" + store(7)
            # xor to zero: ZF and PF from the emulated store
            + f"mov eax, [{pte(p + 0x1000):#x}]\nxor [{pte(p + 0x1000):#x}], eax\n"
            + "lahf\nmovzx eax, ah\n" + store(8) + f"invlpg [{p + 0x1000:#x}]\n"
            + f"mov eax, [{pte(p + 0x1000):#x}]\n" + store(9)
            + A.exit_with(0))
    return A.AsmGuest(body=body, paging=True)


def cr4():
    """CR4 as the boot protocol leaves it, and after the guest sets PSE."""
    body = ("mov eax, cr4\n" + store(0)
            + "mov eax, cr4\nor eax, 0x10\nmov cr4, eax\nmov eax, cr4\n" + store(1)
            + A.exit_with(0))
    return A.AsmGuest(body=body, paging=True)


SCENARIOS = {
    "arithmetic": arithmetic,
    "cr4": cr4,
    "control-registers": control_registers,
    "descriptor-tables": descriptor_tables,
    "interrupt-frames": interrupt_frames,
    "delivery-caches": delivery_caches,
    "page-faults": page_faults,
    "remap-with-invlpg": remap_with_invlpg,
    "accessed-dirty": accessed_dirty,
}


@functools.lru_cache(maxsize=None)
def image(scenario):
    return A.build(SCENARIOS[scenario]())


def run(scenario, backend, img=None):
    with Machine(BACKENDS[backend]()) as m:
        m.boot(BootSpec(img or image(scenario)))
        out = m.run()
    return m, out


@functools.lru_cache(maxsize=None)
def native_log(scenario):
    m, out = run(scenario, "native")
    assert out.ok and out.exit_status == 0, out.reason
    return bytes(m.mem.view[LOG:LOG + 4 * LOG_WORDS])


def diff_text(a, b):
    wa = struct.unpack(f"<{LOG_WORDS}I", a)
    wb = struct.unpack(f"<{LOG_WORDS}I", b)
    return ", ".join(f"LOG[{i}]: native {x:#x} vs {y:#x}" for i, (x, y) in enumerate(zip(wa, wb))
                     if x != y)


@pytest.mark.parametrize("backend", VIRTUAL)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_architectural_state_as_native(scenario, backend):
    expected = native_log(scenario)
    m, out = run(scenario, backend)
    assert out.ok and out.exit_status == 0, out.reason
    got = bytes(m.mem.view[LOG:LOG + 4 * LOG_WORDS])
    assert got == expected, diff_text(expected, got)


def test_native_logs_are_what_the_architecture_says():
    """Spot checks that the reference itself is right, so the comparisons mean
    something."""
    w = struct.unpack(f"<{LOG_WORDS}I", native_log("remap-with-invlpg"))
    assert w[0:3] == (0xAAAA1111, 0xBBBB2222, 0x12121212)
    assert w[3] & 0xFFFFF067 == 0x401067                     # A and D set by the write
    assert w[7:10] == (0xCCCC3333, 0xDDDD4444, 0xBBBB2222)
    assert w[12] == 0x800000 and w[13] == 0                   # #PF, not present, read, ring 0
    w = struct.unpack(f"<{LOG_WORDS}I", native_log("accessed-dirty"))
    assert w[1] & 0x60 == 0 and w[2] & 0x60 == 0x20 and w[3] & 0x60 == 0x60
    assert w[4] & 0x60 == 0x60 and w[5] & 0x20 == 0 and w[6] & 0x20 == 0x20
    assert w[8] & 0xC4 == 0x44                                # ZF and PF after xor to zero
    w = struct.unpack(f"<{LOG_WORDS}I", native_log("page-faults"))
    assert w[0] == 4
    faults = [w[1 + 4 * k:5 + 4 * k] for k in range(4)]
    assert [(f[0], f[1], f[3]) for f in faults] == [
        (0x403008, 0, A.KCODE), (0x404004, x86.PF_P | x86.PF_W, A.KCODE),
        (0x405010, x86.PF_U, A.UCODE), (0x406020, x86.PF_P | x86.PF_W | x86.PF_U, A.UCODE)]
    w = struct.unpack(f"<{LOG_WORDS}I", native_log("descriptor-tables"))
    assert w[0] == 0x77665544 and w[2] == 0x40 and w[4] == A.STACK0 - 12 and w[5] == 1
    assert w[6] == 0x2222
    w = struct.unpack(f"<{LOG_WORDS}I", native_log("interrupt-frames"))
    assert w[1] == A.UCODE and w[4] == A.UDATA and w[3] == A.STACK3 and w[6] == 2
    assert w[11] & x86.IF == 0 and w[2] & x86.IF                # ring 0 IF clear, ring 3 set
    w = struct.unpack(f"<{LOG_WORDS}I", native_log("delivery-caches"))
    assert w[0] == 1 and w[7] == 3                 # one call to the first handler, three to the second
    frames = [w[1:7]] + [w[8 + 6 * k:14 + 6 * k] for k in range(3)]
    assert [f[1:] for f in frames] == [
        (A.UCODE, f[2], A.STACK3, A.UDATA, esp) for f, esp in zip(
            frames, (A.STACK0 - 20, A.STACK0 - 20, A.STACK0 - 20, STRADDLE_ESP0 - 20))]
    assert [f[0] - A.RING3 for f in frames] == [7, 11, 15, 19]     # past each `int 0x80`


# -- the sensitive instructions: the documented difference under trap -------------
SENSITIVE = A.AsmGuest(body=(
    "cli\npushfd\npop eax\nand eax, 0x200\n" + store(0)
    + "sti\npushfd\npop eax\nand eax, 0x200\n" + store(1) + "cli\n"
    # sidt/sgdt with a 32-bit operand (keystone adds a 0x66 prefix, which
    # stores only 24 bits of the base)
    + f"sidt [{L(2)}]\n".replace("sidt", ".byte 0x0f, 0x01, 0x0d\n.int").replace("[", "").replace("]", "")
    + f".byte 0x0f, 0x01, 0x05\n.int {L(4)}\n"
    + "smsw ax\nmovzx eax, ax\n" + store(6)
    + "push cs\npop eax\nmovzx eax, ax\n" + store(7)
    + "mov ax, ss\nmovzx eax, ax\n" + store(8)
    + A.exit_with(0)))


def sensitive_log(backend):
    with Machine(BACKENDS[backend]()) as m:
        m.boot(BootSpec(A.build(SENSITIVE)))
        out = m.run()
    assert out.ok, out.reason
    return m, bytes(m.mem.view[LOG:LOG + 40])


@pytest.mark.parametrize("backend", ("hw", "hw-npt"))
def test_sensitive_instructions_match_native_under_vtx(backend):
    _, expected = sensitive_log("native")
    _, got = sensitive_log(backend)
    assert got == expected


def test_sensitive_instructions_show_the_real_cpu_under_trap():
    _, native = sensitive_log("native")
    m, got = sensitive_log("trap")
    nif_cli, nif_sti = struct.unpack_from("<2I", native)
    assert (nif_cli, nif_sti) == (0, x86.IF)
    tif_cli, tif_sti = struct.unpack_from("<2I", got)
    assert (tif_cli, tif_sti) == (x86.IF, x86.IF)            # pushf shows the real IF
    idt_limit, idt_base = struct.unpack_from("<HI", got, 8)
    assert (idt_limit, idt_base) == (0x7FF, VMM_BASE_LINEAR + vmm_memory.IDT_OFF)
    gdt_limit, gdt_base = struct.unpack_from("<HI", got, 16)
    assert gdt_base == VMM_BASE_LINEAR + vmm_memory.GDT_OFF
    assert gdt_limit == struct.unpack_from("<H", native, 16)[0]
    smsw, cs, ss = struct.unpack_from("<3I", got, 24)
    # The real MSW, which is all the guest's own bits (NE and MP clear here).
    assert smsw == struct.unpack_from("<I", native, 24)[0] == x86.CR0_PE | x86.CR0_ET
    assert cs == A.KCODE | 1 and ss == A.KDATA | 1           # RPL 1: ring compression shows
    counts = m.backend.report()["sensitive"]
    assert counts["pushf"] == 2 and counts["sidt"] == 1 and counts["sgdt"] == 1
    assert counts["smsw"] == 1 and counts["push cs"] == 1


# -- unit: emulate_store ------------------------------------------------------------
_CS = Cs(CS_ARCH_X86, CS_MODE_32)
_CS.detail = True


class FakeMem:
    def __init__(self, size=0x10000):
        self.view = memoryview(bytearray(size))


def decoded(asm_bytes, address=0x100000):
    insn = next(_CS.disasm(asm_bytes, address, 1))
    return Decoded(0, bytes(insn.bytes), insn)


ARITH = x86.CF | x86.PF_FLAG | x86.AF | x86.ZF | x86.SF | x86.OF


def test_emulate_store_mov_dword():
    mem, st = FakeMem(), FakeState(ecx=0x00400007, eax=0x1000)
    n = emulate_store(decoded(b"\x89\x08"), st, mem, 0x1004)        # mov [eax], ecx
    assert n == 4 and st.eip == 0x100002
    assert bytes(mem.view[0x1004:0x1008]) == bytes.fromhex("07004000")
    assert st.flags == 0x2                                           # mov: flags untouched


def test_emulate_store_mov_immediate_word_and_byte():
    mem, st = FakeMem(), FakeState()
    mem.view[0x2000:0x2004] = b"\xff\xff\xff\xff"
    assert emulate_store(decoded(b"\x66\xc7\x05\x00\x20\x00\x00\x34\x12"), st, mem, 0x2000) == 2
    assert bytes(mem.view[0x2000:0x2004]) == b"\x34\x12\xff\xff" and st.eip == 0x100009
    assert emulate_store(decoded(b"\xc6\x05\x03\x20\x00\x00\x00"), st, mem, 0x2003) == 1
    assert bytes(mem.view[0x2000:0x2004]) == b"\x34\x12\xff\x00" and st.eip == 0x100010


def test_emulate_store_xchg_returns_the_old_entry():
    mem, st = FakeMem(), FakeState(ecx=0x00402007, eax=0x3000)
    mem.view[0x3000:0x3004] = (0x00401067).to_bytes(4, "little")
    assert emulate_store(decoded(b"\x87\x08"), st, mem, 0x3000) == 4     # xchg [eax], ecx
    assert int.from_bytes(mem.view[0x3000:0x3004], "little") == 0x00402007
    assert st.regs["ecx"] == 0x00401067 and st.eip == 0x100002


def test_emulate_store_and_clears_accessed_dirty_with_logic_flags():
    mem = FakeMem()
    st = FakeState(eflags=0x2 | x86.CF | x86.OF | x86.ZF | x86.AF | x86.SF, ebx=0x4000)
    mem.view[0x4010:0x4014] = (0x00400067).to_bytes(4, "little")
    # and dword ptr [ebx+0x10], 0xffffff9f
    assert emulate_store(decoded(b"\x83\x63\x10\x9f"), st, mem, 0x4010) == 4
    assert int.from_bytes(mem.view[0x4010:0x4014], "little") == 0x00400007
    # 0x00400007: not zero, bit 31 clear, low byte 0x07 has three bits (odd parity)
    assert st.flags == 0x2 and st.eip == 0x100004


def test_emulate_store_or_byte_sets_sign_and_parity():
    mem, st = FakeMem(), FakeState(eax=0x5000)
    mem.view[0x5000] = 0x01
    assert emulate_store(decoded(b"\x80\x08\x80"), st, mem, 0x5000) == 1     # or byte [eax], 0x80
    assert mem.view[0x5000] == 0x81
    assert st.flags == 0x2 | x86.SF | x86.PF_FLAG                  # 0x81: bit 7, two bits set


def test_emulate_store_xor_to_zero_sets_zero_and_parity():
    mem, st = FakeMem(), FakeState(eax=0x6000, edx=0x00403007, eflags=0x2 | x86.CF)
    mem.view[0x6000:0x6004] = (0x00403007).to_bytes(4, "little")
    assert emulate_store(decoded(b"\x31\x10"), st, mem, 0x6000) == 4       # xor [eax], edx
    assert bytes(mem.view[0x6000:0x6004]) == b"\0\0\0\0"
    assert st.flags == 0x2 | x86.ZF | x86.PF_FLAG


def test_emulate_store_keeps_non_arithmetic_flags():
    mem, st = FakeMem(), FakeState(eax=0x6000, edx=1, eflags=0x2 | x86.IF | x86.DF | x86.TF)
    emulate_store(decoded(b"\x09\x10"), st, mem, 0x6000)                    # or [eax], edx
    assert st.flags & ~ARITH == 0x2 | x86.IF | x86.DF | x86.TF


@pytest.mark.parametrize("code", [
    b"\x83\x00\x01",          # add dword ptr [eax], 1: not a store the VMM emulates
    b"\xf3\xab",              # rep stosd
    b"\x8b\x03",              # mov eax, [ebx]: a load
])
def test_emulate_store_refuses_other_instructions(code):
    mem, st = FakeMem(), FakeState(eax=0x100, ebx=0x100)
    before = bytes(mem.view)
    with pytest.raises(Unsupported):
        emulate_store(decoded(code), st, mem, 0x100)
    assert bytes(mem.view) == before and st.eip == 0x100000


def test_emulate_store_lock_prefixed_or():
    """capstone names it "lock or": chosen by instruction id, it is emulated."""
    mem, st = FakeMem(), FakeState(eax=0x7000)
    mem.view[0x7000:0x7004] = (0x00400007).to_bytes(4, "little")
    assert emulate_store(decoded(b"\xf0\x83\x08\x20"), st, mem, 0x7000) == 4  # lock or [eax], 0x20
    assert int.from_bytes(mem.view[0x7000:0x7004], "little") == 0x00400027


def test_emulate_store_btr_sets_carry_to_the_old_bit():
    mem, st = FakeMem(), FakeState(eax=0x7000, eflags=0x2 | x86.ZF)
    mem.view[0x7000:0x7004] = (0x00400027).to_bytes(4, "little")
    # lock btr dword ptr [eax], 5
    assert emulate_store(decoded(b"\xf0\x0f\xba\x30\x05"), st, mem, 0x7000) == 4
    assert int.from_bytes(mem.view[0x7000:0x7004], "little") == 0x00400007
    assert st.flags == 0x2 | x86.ZF | x86.CF                      # ZF left as it was


def test_emulate_store_cmpxchg_compares_as_cmp():
    mem, st = FakeMem(), FakeState(eax=0x00400027, ecx=0x00400007, ebx=0x7000)
    mem.view[0x7000:0x7004] = (0x00400027).to_bytes(4, "little")
    # lock cmpxchg [ebx], ecx: equal, the source is stored
    assert emulate_store(decoded(b"\xf0\x0f\xb1\x0b"), st, mem, 0x7000) == 4
    assert int.from_bytes(mem.view[0x7000:0x7004], "little") == 0x00400007
    assert st.flags == 0x2 | x86.ZF | x86.PF_FLAG
    st = FakeState(eax=0x00400027, ecx=1, ebx=0x7000)
    # not equal (0x400027 - 0x400007 = 0x20): the entry goes to EAX, no borrow
    assert emulate_store(decoded(b"\x0f\xb1\x0b"), st, mem, 0x7000) == 4
    assert st.regs["eax"] == 0x00400007 and st.flags == 0x2
    assert int.from_bytes(mem.view[0x7000:0x7004], "little") == 0x00400007


def test_emulate_store_cmpxchg8b_swaps_a_64_bit_entry():
    mem = FakeMem()
    mem.view[0x7000:0x7008] = (0x1_00400027).to_bytes(8, "little")
    st = FakeState(eax=0x00400027, edx=1, ebx=0x00500007, ecx=0, esi=0x7000,
                   eflags=0x2 | x86.CF)
    # lock cmpxchg8b qword ptr [esi]
    assert emulate_store(decoded(b"\xf0\x0f\xc7\x0e"), st, mem, 0x7000) == 8
    assert int.from_bytes(mem.view[0x7000:0x7008], "little") == 0x00500007
    assert st.flags == 0x2 | x86.CF | x86.ZF                      # only ZF changes
    st = FakeState(eax=0, edx=0, ebx=1, ecx=1, esi=0x7000)
    assert emulate_store(decoded(b"\x0f\xc7\x0e"), st, mem, 0x7000) == 8
    assert (st.regs["edx"], st.regs["eax"]) == (0, 0x00500007) and not st.flags & x86.ZF


def test_emulate_store_refuses_a_store_across_a_page():
    mem, st = FakeMem(), FakeState(eax=0x7ffe, ecx=1)
    with pytest.raises(Unsupported):
        emulate_store(decoded(b"\x89\x08"), st, mem, 0x7ffe)           # mov [eax], ecx


# -- unit: compress -------------------------------------------------------------------
def desc(base, limit, access, flags=0xC):
    return x86.split_descriptor(x86.make_segment(base, limit, access, flags))


def test_compress_flat_ring0_code():
    # DPL 0 -> 1 (0x9A -> 0xBA), accessed (-> 0xBB), limit 0xFFFFF pages -> 0xFBFFF
    # pages: low word 0xBFFF, high nibble 0xF
    assert rings.compress(*desc(0, 0xFFFFF, 0x9A)) == (0x0000BFFF, 0x00CFBB00)


def test_compress_flat_ring3_data():
    assert rings.compress(*desc(0, 0xFFFFF, 0xF2)) == (0x0000BFFF, 0x00CFF300)


def test_compress_ring1_and_ring2_keep_their_dpl():
    assert rings.compress(*desc(0, 0xFFFFF, 0xB2)) == (0x0000BFFF, 0x00CFB300)
    assert rings.compress(*desc(0, 0xFFFFF, 0xDA)) == (0x0000BFFF, 0x00CFDB00)


def test_compress_small_segment_below_the_window_is_only_moved_to_ring1():
    lo, hi = desc(0x00100000, 0xFFFF, 0x92, 0x4)
    assert (lo, hi) == (0x0000FFFF, 0x00409210)
    assert rings.compress(lo, hi) == (0x0000FFFF, 0x0040B310)


def test_compress_byte_granular_segment_reaching_the_window():
    # base 0xFB000000, limit 0xFFFFF bytes: reaches 0xFB0FFFFF, below the window
    assert rings.compress(*desc(0xFB000000, 0xFFFFF, 0x92, 0x4)) == (0x0000FFFF, 0xFB4FB300)
    # base 0xFBFF0000, limit 0xFFFFF bytes would reach 0xFC0EFFFF: cut to 0xFFFF
    assert rings.compress(*desc(0xFBFF0000, 0xFFFFF, 0x92, 0x4)) == (0x0000FFFF, 0xFB40B3FF)


def test_compress_system_descriptors_are_not_given_to_the_cpu():
    assert rings.compress(*desc(A.TSS, 0x67, 0x89, 0)) == (0, 0)
    assert rings.compress(*desc(0xA000, 0xF, 0x82, 0)) == (0, 0)


def _reach(lo, hi):
    """The highest linear address a loaded data/code segment lets the guest touch
    (None if it grants nothing)."""
    if not hi & x86.DESC_P or not hi & x86.DESC_S:
        return None
    base, limit = x86.seg_base(lo, hi), x86.seg_limit(lo, hi)
    expand_down = not hi & x86.DESC_CODE and hi & (1 << 10)
    if expand_down:
        top = 0xFFFFFFFF if hi & x86.DESC_B else 0xFFFF
        return None if limit >= top else base + top
    return base + limit


@pytest.mark.parametrize("base, limit, access, flags", [
    (0, 0xFFFFF, 0x92, 0xC),                    # flat 4 GiB
    (0x100, 0xFFFFF, 0x92, 0xC),                # unaligned base, 4 KiB granular
    (0xFC000000, 0xFFFFF, 0x92, 0xC),           # based in the window
    (0xFC000000 + 0x9000, 0xFFFF, 0x92, 0x4),   # based in the window, byte granular
    (0, 0, 0x96, 0xC),                          # expand-down data: offsets 1..4 GiB
    (0xFFFFF000, 0xFFFFF, 0x9A, 0xC),           # based above the window
])
def test_compress_never_reaches_the_vmm_window(base, limit, access, flags):
    """No segment the guest can load may reach linear 0xFC000000: a segment that
    cannot be truncated below it must become unusable (not present / null)."""
    top = _reach(*rings.compress(*desc(base, limit, access, flags)))
    assert top is None or top <= rings.GUEST_TOP, f"reaches {top:#x}"
