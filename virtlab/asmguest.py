"""Small assembly guests, assembled with keystone: the machine's own test guests,
benchmark guests and classroom demonstrations.

A guest is laid out as a raw image at 0x100000 (the boot protocol) with the
descriptor tables a protected-mode kernel needs already built, so a test can say in
a few lines of assembly what it wants the CPU to do:

    0x100000  entry: load GDT, segments, IDT, TR, (paging); then `body`
    0x110000  exception/interrupt handlers, one 256-byte slot per vector
    0x120000  ring-1 code      0x130000  ring-3 code
    0x140000  GDT   0x141000  IDT   0x142000  TSS
    0x143000  page directory, 0x144000.. page tables (identity map of the first
              8 MiB, 4 KiB pages, user and writable unless listed otherwise)
    beyond    `data`: bytes the guest finds in memory at boot (the image grows
              to hold them)

Selectors: 0x08/0x10 ring-0 code/data, 0x19/0x21 ring-1 code/data,
0x2B/0x33 ring-3 code/data, 0x38 the TSS.  Stacks: ring 0 tops at 0x90000,
ring 1 at 0x80000, ring 3 at 0x70000 (the TSS holds the ring-0 and ring-1 ones).
"""
import struct
from dataclasses import dataclass, field

from . import x86
from .assembler import assemble      # noqa: F401 (asmguest.assemble, for guests' pieces)

BASE = 0x100000
HANDLERS, RING1, RING3 = 0x110000, 0x120000, 0x130000
GDT, IDT, TSS, PGDIR, PGTAB = 0x140000, 0x141000, 0x142000, 0x143000, 0x144000
STACK0, STACK1, STACK3 = 0x90000, 0x80000, 0x70000
MAPPED_MB = 8
KCODE, KDATA, R1CODE, R1DATA, UCODE, UDATA, TSS_SEL = 0x08, 0x10, 0x19, 0x21, 0x2B, 0x33, 0x38
IMAGE_END = PGTAB + (MAPPED_MB // 4) * 0x1000


@dataclass
class AsmGuest:
    body: str                                  # ring-0 code run after set-up
    handlers: dict = field(default_factory=dict)   # vector -> asm (ring 0)
    user_vectors: tuple = (0x80,)              # gates callable from ring 3 (DPL 3)
    trap_gates: tuple = ()                     # vectors with trap (not interrupt) gates
    ring1: str = ""
    ring3: str = ""
    paging: bool = False
    unmapped: tuple = ()                       # linear pages left not-present
    readonly: tuple = ()                       # linear pages mapped read-only
    data: dict = field(default_factory=dict)   # address -> bytes, outside the sections above


def iret_to(ring, eip, esp, eflags=0x202):
    """Assembly that leaves ring 0 for `ring` at eip with stack esp."""
    cs, ss = {1: (R1CODE, R1DATA), 3: (UCODE, UDATA)}[ring]
    return (f"push {ss}\npush {esp:#x}\npush {eflags:#x}\npush {cs}\npush {eip:#x}\n"
            "iretd\n")


_FAR_PLACEHOLDER = 0x7FFFFFFF


def _prologue_parts(g):
    """The entry code in two parts: the far return that reloads CS, and what
    runs after it (segments, stack, IDT, TR, paging)."""
    far = [f"lgdt [{GDT + 0xF00:#x}]", f"push {KCODE}", f"push {_FAR_PLACEHOLDER:#x}", "retf"]
    rest = [
        f"mov ax, {KDATA}", "mov ds, ax", "mov es, ax", "mov ss, ax",
        "mov fs, ax", "mov gs, ax", f"mov esp, {STACK0:#x}",
        f"lidt [{IDT + 0xF00:#x}]",
        f"mov ax, {TSS_SEL}", "ltr ax",
    ]
    if g.paging:
        rest += [f"mov eax, {PGDIR:#x}", "mov cr3, eax", "mov eax, cr0",
                 "or eax, 0x80010000", "mov cr0, eax"]
    return far, rest


def _prologue(g):
    """The entry code as text (one instruction a line)."""
    far, rest = _prologue_parts(g)
    return "\n".join(far + rest) + "\n"


def _entry(g):
    """The entry code and body, assembled.  Keystone cannot push a label, so
    the far return's target is patched into the bytes of the very assembly
    that is used: it is right by construction, whatever encodings keystone
    chooses, and the rest is assembled at the address it will run at."""
    far_text, rest = _prologue_parts(g)
    far = bytearray(assemble("\n".join(far_text), BASE))
    placeholder = b"\x68" + struct.pack("<I", _FAR_PLACEHOLDER)     # push imm32
    at = far.find(placeholder)
    if at < 0 or far[-1] != 0xCB:                                   # ... retf
        raise ValueError("asmguest: unexpected encoding of the far return")
    target = BASE + len(far)
    far[at + 1:at + 5] = struct.pack("<I", target)
    return bytes(far) + assemble("\n".join(rest) + "\n" + g.body, target)


def _gdt():
    entries = [b"\0" * 8,
               x86.make_segment(0, 0xFFFFF, 0x9A), x86.make_segment(0, 0xFFFFF, 0x92),
               x86.make_segment(0, 0xFFFFF, 0xBA), x86.make_segment(0, 0xFFFFF, 0xB2),
               x86.make_segment(0, 0xFFFFF, 0xFA), x86.make_segment(0, 0xFFFFF, 0xF2),
               x86.make_segment(TSS, 0x67, 0x89, 0x0)]
    return b"".join(entries)


def _tss():
    t = bytearray(0x68)
    struct.pack_into("<II", t, x86.TSS_ESP0, STACK0, KDATA)
    struct.pack_into("<II", t, x86.TSS_ESP1, STACK1, R1DATA)
    struct.pack_into("<H", t, x86.TSS_IOMAP, 0x68)
    return bytes(t)


def _idt(g):
    out = bytearray(256 * 8)
    for vec in g.handlers:
        gtype = x86.GATE_TRAP32 if vec in g.trap_gates else x86.GATE_INTR32
        dpl = 3 if vec in g.user_vectors else 0
        out[vec * 8:vec * 8 + 8] = x86.make_gate(KCODE, HANDLERS + vec * 0x100, gtype, dpl)
    return bytes(out)


_USER_RW = x86.PTE_P | x86.PTE_W | x86.PTE_U
# The identity map of the first MAPPED_MB, every page present, writable and
# user: the page directory and its tables, made once; each guest then clears
# the bits of its unmapped and read-only pages.
_PD = struct.pack(f"<{MAPPED_MB // 4}I", *((PGTAB + t * 0x1000) | 0x7
                                             for t in range(MAPPED_MB // 4))).ljust(0x1000, b"\0")
_PTES = struct.pack(f"<{MAPPED_MB * 256}I", *((page << 12) | _USER_RW
                                              for page in range(MAPPED_MB * 256)))


def _paging(g):
    tables = bytearray(_PTES)
    for la in set(g.unmapped) | set(g.readonly):
        if la & 0xFFF or la >= MAPPED_MB << 20:
            continue                      # not a page of the map: nothing to change
        flags = 0 if la in g.unmapped else _USER_RW & ~x86.PTE_W
        struct.pack_into("<I", tables, (la >> 12) * 4, la | flags)
    return _PD + bytes(tables)


def build(g):
    """The raw image for `g`, ready for --image or Machine.boot."""
    end = max([IMAGE_END] + [addr + len(b) for addr, b in g.data.items()])
    img = bytearray(end - BASE)

    def put(addr, data):
        if addr - BASE + len(data) > len(img):
            raise ValueError(f"guest section at {addr:#x} is too large")
        img[addr - BASE:addr - BASE + len(data)] = data

    entry = _entry(g)
    if BASE + len(entry) > HANDLERS:
        raise ValueError(f"guest body of {len(entry)} bytes runs into the handlers "
                         f"at {HANDLERS:#x}")
    put(BASE, entry)
    for vec, text in g.handlers.items():
        code = assemble(text, HANDLERS + vec * 0x100)
        if len(code) > 0x100:
            raise ValueError(f"handler for vector {vec:#x} exceeds its 256-byte slot")
        put(HANDLERS + vec * 0x100, code)
    if g.ring1:
        put(RING1, assemble(g.ring1, RING1))
    if g.ring3:
        put(RING3, assemble(g.ring3, RING3))
    gdt = _gdt()
    put(GDT, gdt)
    put(GDT + 0xF00, struct.pack("<HI", len(gdt) - 1, GDT))
    put(IDT, _idt(g))
    put(IDT + 0xF00, struct.pack("<HI", 256 * 8 - 1, IDT))
    put(TSS, _tss())
    put(PGDIR, _paging(g))
    for addr, data in g.data.items():
        if addr < IMAGE_END:
            raise ValueError(f"guest data at {addr:#x} overlaps the sections below {IMAGE_END:#x}")
        put(addr, data)
    return bytes(img)


# The platform's end-of-run: write EAX to port 0x500 (then halt for good).
EXIT_WITH_EAX = "mov dx, 0x500\nout dx, eax\ncli\nhlt\n"


def exit_with(status):
    return f"mov eax, {status}\n" + EXIT_WITH_EAX


def putc(ch):
    return f"mov dx, 0x3f8\nmov al, {ord(ch)}\nout dx, al\n"


def timer_setup(reload=1193):
    """Program the 8259 pair (IRQs at vectors 0x20-0x2F, only IRQ 0 unmasked)
    and the 8254's channel 0 in mode 2 with `reload` (1193: a 1 ms period)."""
    return f"""
    mov al, 0x11
    out 0x20, al
    mov al, 0x20
    out 0x21, al
    mov al, 0x04
    out 0x21, al
    mov al, 0x01
    out 0x21, al
    mov al, 0xfe
    out 0x21, al
    mov al, 0x34
    out 0x43, al
    mov al, {reload & 0xFF:#x}
    out 0x40, al
    mov al, {reload >> 8:#x}
    out 0x40, al
"""


def timer_handler(counter):
    """An IRQ 0 handler that counts ticks at `counter` and acknowledges the PIC."""
    return f"""
    push eax
    inc dword ptr [{counter:#x}]
    mov al, 0x20
    out 0x20, al
    pop eax
    iretd
"""
