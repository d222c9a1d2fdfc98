"""Random ring-0 instruction sequences, many to one assembly guest: the material
of differential tests, which run one image under two back ends and compare
what every sequence left behind.

Booting a machine costs far more than running a few dozen instructions, so one
image holds up to MAX_SEQUENCES sequences.  Sequence i owns block i of memory
(BLOCKS + i * BLOCK), which holds everything it starts from and everything it
leaves:

    +0x010  its start state: general registers, EFLAGS (any IF and IOPL), DS
            ES FS GS, ESP (popped by `setup`)
    +0x060  its dump (written by `dump`): EDI ESI EBP - EBX EDX ECX EAX as
            pushad stores them, EFLAGS as pushfd stores it, DS ES FS GS, ESP
    +0x098  a fault record, if an exception ended it: vector + 1, EIP, CS,
            error code, CR2
    +0x100  scratch memory (SCRATCH bytes, random at boot); EBP points here
    +0x500  its stack (random at boot), ESP starting at +0x7C0

The guest runs the sequences one after another: each is `mov esp, STATE;
call setup`, its own code, `jmp dump`.  The dump pushes the registers into
the block, EFLAGS by pushfd (so IF is the guest's own, virtual under a VMM,
and is compared like any other flag), then jumps through NEXT to the next
sequence.  An exception the guest did not ask for lands in a handler that
records it in the block and goes on with the next sequence, so a sequence that
faults under one back end does not hide the ones after it.  Two back ends agree
on a sequence iff its block is byte for byte the same after the run (the
registers, the flags, the scratch area, the stack, the fault record); the
console and the GDT are compared for the image as a whole.


The sequences themselves, and the kinds of them (classic ones for trap, user
ones at ring 3), come from seqgen.py.  A classic image's `setup` also sets
the virtual IF with sti, and its handlers read the EFLAGS of their frames;
a user image's `setup` irets to ring 3 with the start state, and its
sequences end with `int DUMP_VECTOR`, whose handler is the dump.
"""
import dataclasses
import struct
from dataclasses import dataclass, field

from . import asmguest as A, x86

MAX_SEQUENCES = 256
GLOBALS = 0x1F0000             # CUR, DUMPTOP, RETSLOT, SAVED_ESP, TSC0, then NEXT
CUR, DUMPTOP, RETSLOT, SAVED_ESP, TSC0 = (GLOBALS + 4 * i for i in range(5))
# User sequences: the kernel's words while it enters and leaves ring 3, and the
# iret frame into it.
SAVED_EAX, USER_ESP, USER_EFLAGS = (GLOBALS + 0x20 + 4 * i for i in range(3))
USER_FRAME = GLOBALS + 0x40
NEXT = GLOBALS + 0x100
BLOCKS, BLOCK = 0x200000, 0x800
STATE, DUMP, FAULT, SCRATCH_OFF, STACK_OFF, ESP0 = 0x10, 0x60, 0x98, 0x100, 0x500, 0x7C0
SCRATCH = STACK_OFF - SCRATCH_OFF
MARK = 0xDD                    # the dump and fault record before anything is written

# The paging images leave one page unmapped and one read-only, for page faults.
UNMAPPED, READONLY = 0x7FF000, 0x7FE000

DUMP_NAMES = ("edi", "esi", "ebp", "esp@pushad", "ebx", "edx", "ecx", "eax", "eflags",
              "ds", "es", "fs", "gs", "esp")
FAULT_NAMES = ("vector+1", "eip", "cs", "error", "cr2")
STATE_NAMES = ("cur", "dumptop", "edi", "esi", "ebp", "-", "ebx", "edx", "ecx", "eax",
               "eflags", "ds", "es", "fs", "gs", "esp")

# Vectors the sequences use on purpose (int n, int3, into), and their handlers:
# each changes registers in a way the dump shows, and returns with iretd.
SOFT_HANDLERS = {
    0x40: "xor eax, 0x5a5a5a5a\npushfd\npop edx\niretd\n",            # interrupt gate
    0x41: "pushfd\npop ebx\nadd ebx, dword ptr [esp]\niretd\n",        # trap gate
    3: "lea esi, [esi + 3]\niretd\n",
    4: "lea edi, [edi + 4]\niretd\n",
}
# In classic sequences the handlers read the EFLAGS of their frame: pushfd in
# the kernel shows the real IF under trap, set whatever the gate did to the
# virtual one or the user's code had.
CLASSIC_HANDLERS = {**SOFT_HANDLERS,
                    0x40: "xor eax, 0x5a5a5a5a\nmov edx, dword ptr [esp + 8]\niretd\n",
                    0x41: "mov ebx, dword ptr [esp + 8]\nadd ebx, dword ptr [esp]\niretd\n"}
TRAP_GATES = (0x41,)
# User sequences end with `int DUMP_VECTOR`, and may use the soft vectors too.
DUMP_VECTOR = 0x81
USER_VECTORS = tuple(SOFT_HANDLERS) + (DUMP_VECTOR,)
FAULT_VECTORS = (0, 1, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19)
_ERROR_CODE = (8, 10, 11, 12, 13, 14, 17)


def block(index):
    return BLOCKS + index * BLOCK


def scratch(index):
    return block(index) + SCRATCH_OFF


# -- the harness ---------------------------------------------------------------------
def _fault_handler(vector):
    """Record the exception in the current sequence's block and go on with
    the next sequence (which loads all of its state anew)."""
    e = 4 if vector in _ERROR_CODE else 0
    err = "mov ecx, dword ptr ss:[esp]\nmov dword ptr ss:[eax + 12], ecx\n" if e else ""
    cr2 = "mov ecx, cr2\nmov dword ptr ss:[eax + 16], ecx\n" if vector == x86.PF else ""
    return (f"mov eax, dword ptr ss:[{DUMPTOP:#x}]\n"
            f"mov dword ptr ss:[eax], {vector + 1}\n"
            f"mov ecx, dword ptr ss:[esp + {e}]\nmov dword ptr ss:[eax + 4], ecx\n"
            f"mov ecx, dword ptr ss:[esp + {e + 4}]\nmov dword ptr ss:[eax + 8], ecx\n"
            + err + cr2 +
            f"mov eax, dword ptr ss:[{CUR:#x}]\njmp dword ptr ss:[{NEXT:#x} + eax*4]\n")


# What every setup does first: take where it returns to (the sequence's
# code), which sequence it is and where its dump goes, and the time it starts.
_SETUP_HEAD = f"""
setup:
    pop dword ptr ss:[{RETSLOT:#x}]
    pop dword ptr ss:[{CUR:#x}]
    pop dword ptr ss:[{DUMPTOP:#x}]
    rdtsc
    mov dword ptr ss:[{TSC0:#x}], eax
    mov dword ptr ss:[{TSC0 + 4:#x}], edx
"""


def _dump_into_block(esp_slot, push_eflags):
    """The registers into the sequence's block: ESP from the word at
    `esp_slot`, the data segments, EFLAGS as `push_eflags` pushes them, the
    general registers; then on to the next sequence."""
    return f"""    mov esp, dword ptr ss:[{DUMPTOP:#x}]
    push dword ptr ss:[{esp_slot:#x}]
    push gs
    push fs
    .byte 0x06
    .byte 0x1e
    {push_eflags}
    pushad
    mov eax, dword ptr ss:[{CUR:#x}]
    jmp dword ptr ss:[{NEXT:#x} + eax*4]
"""


# An MMU sequence may change CR0.WP and CR4.PSE (seqgen.py, i_paging_mode):
# each starts with them as the image set them, WP set and PSE clear, written
# only if they differ (every write of either costs a VMM its shadow tables).
_PAGING_MODE = f"""    mov eax, cr0
    test eax, {x86.CR0_WP:#x}
    jnz setup_wp
    or eax, {x86.CR0_WP:#x}
    mov cr0, eax
setup_wp:
    mov eax, cr4
    test eax, {x86.CR4_PSE:#x}
    jz setup_pse
    and eax, {~x86.CR4_PSE & 0xFFFFFFFF:#x}
    mov cr4, eax
setup_pse:
"""


def _setup(classic, mmu):
    """`setup` loads a sequence's start state from its block, `dump` stores
    what it left there; a classic one's setup also sets IF with sti, an MMU
    one's the paging mode."""
    sti = "    sti\n" if classic else ""
    return _SETUP_HEAD + (_PAGING_MODE if mmu else "") + f"""    popad
    popfd
{sti}    .byte 0x1f
    .byte 0x07
    pop fs
    pop gs
    pop esp
    jmp dword ptr ss:[{RETSLOT:#x}]
dump:
    mov dword ptr ss:[{SAVED_ESP:#x}], esp
""" + _dump_into_block(SAVED_ESP, "pushfd")


def _setup_user():
    """`setup` for a user sequence: the start state's data segments loaded
    and its general registers popped, then an iretd to ring 3 at the
    sequence's code (the return address `call setup` pushed) with its
    EFLAGS and stack."""
    return _SETUP_HEAD + f"""    mov eax, dword ptr ss:[{RETSLOT:#x}]
    mov dword ptr ss:[{USER_FRAME:#x}], eax
    mov dword ptr ss:[{USER_FRAME + 4:#x}], {A.UCODE:#x}
    mov eax, dword ptr ss:[esp + 32]
    mov dword ptr ss:[{USER_FRAME + 8:#x}], eax
    mov eax, dword ptr ss:[esp + 52]
    mov dword ptr ss:[{USER_FRAME + 12:#x}], eax
    mov dword ptr ss:[{USER_FRAME + 16:#x}], {A.UDATA:#x}
    mov ax, word ptr ss:[esp + 36]
    mov ds, ax
    mov ax, word ptr ss:[esp + 40]
    mov es, ax
    mov ax, word ptr ss:[esp + 44]
    mov fs, ax
    mov ax, word ptr ss:[esp + 48]
    mov gs, ax
    popad
    mov esp, {USER_FRAME:#x}
    iretd
"""


# The handler of `int DUMP_VECTOR`, a user sequence's end: the dump, with the
# user's ESP and EFLAGS taken from the frame.  ESP at pushad is the kernel's,
# the same under every back end.
_DUMP_USER = f"""
    mov dword ptr ss:[{SAVED_EAX:#x}], eax
    mov eax, dword ptr ss:[esp + 12]
    mov dword ptr ss:[{USER_ESP:#x}], eax
    mov eax, dword ptr ss:[esp + 8]
    mov dword ptr ss:[{USER_EFLAGS:#x}], eax
    mov eax, dword ptr ss:[{SAVED_EAX:#x}]
""" + _dump_into_block(USER_ESP, f"push dword ptr ss:[{USER_EFLAGS:#x}]")


@dataclass
class Sequence:
    seed: int
    index: int
    paging: bool
    state: list                # STATE_NAMES, as setup pops them
    scratch: bytes
    stack: bytes
    items: list                # [(body lines, out-of-line lines)]
    kinds: list = field(default_factory=list)      # the item kind of each item
    classic: bool = False      # made to run the same under classic trap-and-emulate
    user: bool = False         # runs at ring 3
    mmu: bool = False          # rewrites a page-table entry of its own (seqgen.py)

    def render(self, items=None):
        """The sequence's code: its body, `jmp dump`, then what its items put
        out of line (subroutines, tables, jump targets), labels made unique."""
        items = self.items if items is None else items
        body = [line for b, _ in items for line in b]
        outline = [line for _, o in items for line in o]
        end = f"int {DUMP_VECTOR:#x}" if self.user else "jmp dump"
        text = "\n".join(body + [end] + outline)
        return text.replace("{P}", f"q{self.index}_")

    def lines(self):
        """Every line of its items, in the body and out of line (unrendered)."""
        return [line.strip() for body, outline in self.items for line in body + outline]

    def source(self):
        """What a person needs to reproduce it: the start state and the code."""
        regs = ", ".join(f"{n}={v:#x}" for n, v in zip(STATE_NAMES, self.state) if n not in
                         ("cur", "dumptop", "-"))
        classic = "".join(f" {kind}" for kind, on in (("classic", self.classic),
                                                       ("user", self.user), ("mmu", self.mmu)) if on)
        return (f"; sequence seed={self.seed} index={self.index} paging={self.paging}"
                f"{classic}\n"
                f"; start: {regs}\n; scratch at {scratch(self.index):#x} (EBP)\n"
                + self.render() + "\n")

    def block_bytes(self):
        b = bytearray([0] * BLOCK)
        struct.pack_into(f"<{len(self.state)}I", b, STATE, *self.state)
        b[DUMP:SCRATCH_OFF] = bytes([MARK]) * (SCRATCH_OFF - DUMP)
        b[SCRATCH_OFF:STACK_OFF] = self.scratch
        b[STACK_OFF:BLOCK] = self.stack
        return bytes(b)


def guest(sequences, paging=None):
    """One AsmGuest that runs `sequences` in order (their indices must differ:
    the index is the block)."""
    seqs = sorted(sequences, key=lambda s: s.index)
    if not seqs:
        raise ValueError("no sequences")
    if len({s.index for s in seqs}) != len(seqs) or seqs[-1].index >= MAX_SEQUENCES:
        raise ValueError("sequence indices must be distinct and below MAX_SEQUENCES")
    if paging is None:
        paging = seqs[0].paging
    classic, user, mmu = seqs[0].classic, seqs[0].user, any(s.mmu for s in seqs)
    if any((s.classic, s.user) != (classic, user) for s in seqs):
        raise ValueError("classic and user sequences need an image of their own")
    # NEXT[i]: where sequence i goes on (indexed by the block, not the order)
    following = {s.index: f"q{t.index}_start" for s, t in zip(seqs, seqs[1:])}
    starts = [following.get(i, "done") for i in range(seqs[-1].index + 1)]
    parts = [f"mov esi, next_table\nmov edi, {NEXT:#x}\nmov ecx, {len(starts)}\ncld\n"
             f".byte 0xf3, 0xa5\njmp q{seqs[0].index}_start\n"
             "next_table:\n.int " + ", ".join(starts) + "\n"
             + (_setup_user() if user else _setup(classic, mmu))]
    for s in seqs:
        parts.append(f"q{s.index}_start:\nmov esp, {block(s.index) + STATE:#x}\ncall setup\n"
                     + s.render() + "\n")
    parts.append("done:\n" + A.exit_with(0))
    blocks = bytearray(BLOCK * (seqs[-1].index + 1))
    for s in seqs:
        blocks[s.index * BLOCK:(s.index + 1) * BLOCK] = s.block_bytes()
    handlers = dict(CLASSIC_HANDLERS if classic else SOFT_HANDLERS)
    handlers.update({v: _fault_handler(v) for v in FAULT_VECTORS})
    if user:
        handlers[DUMP_VECTOR] = _DUMP_USER
    return A.AsmGuest(body="".join(parts), handlers=handlers, trap_gates=TRAP_GATES,
                      **({"user_vectors": USER_VECTORS} if user else {}),
                      paging=paging, unmapped=(UNMAPPED,) if paging else (),
                      readonly=(READONLY,) if paging else (),
                      data={GLOBALS: bytes(NEXT - GLOBALS + 4 * MAX_SEQUENCES),
                            BLOCKS: bytes(blocks)})


def image(sequences, paging=None):
    return A.build(guest(sequences, paging))


# -- reading the results --------------------------------------------------------------
@dataclass
class Result:
    """What one back end's run of one sequence left in its block."""
    index: int
    block: bytes

    def words(self, off, n):
        return struct.unpack_from(f"<{n}I", self.block, off)

    @property
    def dump(self):
        return dict(zip(DUMP_NAMES, self.words(DUMP, len(DUMP_NAMES))))

    @property
    def fault(self):
        w = self.words(FAULT, len(FAULT_NAMES))
        return None if w[0] == MARK * 0x01010101 else dict(zip(FAULT_NAMES, w))

    @property
    def dumped(self):
        return self.block[DUMP:DUMP + 4] != bytes([MARK]) * 4


def results(mem, sequences):
    """Each sequence's block, read from guest memory after the run."""
    return [Result(s.index, bytes(mem.view[block(s.index):block(s.index) + BLOCK]))
            for s in sequences]


def differences(a, b):
    """How two results of one sequence differ, in words (empty if they agree)."""
    out = []
    n = len(DUMP_NAMES)
    if a.dumped != b.dumped:
        out.append(f"registers: dumped by {'the first' if a.dumped else 'the second'} only")
    else:
        out += [f"{name}: {x:#010x} vs {y:#010x}"
                for name, x, y in zip(DUMP_NAMES, a.words(DUMP, n), b.words(DUMP, n)) if x != y]
    fa, fb = a.fault, b.fault
    if fa != fb:
        out.append(f"fault: {_fault_text(fa)} vs {_fault_text(fb)}")
    for what, lo, hi in (("scratch", SCRATCH_OFF, STACK_OFF), ("stack", STACK_OFF, BLOCK),
                         ("state", 0, DUMP)):
        diff = [i for i in range(lo, hi) if a.block[i] != b.block[i]]
        if diff:
            shown = ", ".join(f"+{i - lo:#x}: {a.block[i]:02x} vs {b.block[i]:02x}"
                              for i in diff[:8])
            out.append(f"{what} ({len(diff)} bytes): {shown}{' ...' if len(diff) > 8 else ''}")
    return out


def _fault_text(f):
    if f is None:
        return "none"
    return (f"vector {f['vector+1'] - 1} at eip {f['eip']:#x} (cs {f['cs'] & 0xFFFF:#x}, "
            f"error {f['error']:#x}, cr2 {f['cr2']:#x})")


def dump_text(r):
    """A result's registers and fault, one line each, for a failure message."""
    d = r.dump
    regs = " ".join(f"{n}={d[n]:08x}" for n in ("eax", "ebx", "ecx", "edx", "esi", "edi",
                                                    "ebp", "esp"))
    segs = " ".join(f"{n}={d[n] & 0xFFFF:04x}" for n in ("ds", "es", "fs", "gs"))
    status = "" if r.dumped else "  (no dump)"
    return (f"{regs}\n  eflags={d['eflags']:08x} {segs}{status}\n"
            f"  fault: {_fault_text(r.fault)}")


def shrink(seq, fails):
    """The smallest sequence (by items) found for which fails(sequence) is
    still true: items dropped one at a time, from the end, while it fails."""
    changed = True
    while changed:
        changed = False
        for i in range(len(seq.items) - 1, 0, -1):
            trial = dataclasses.replace(seq, items=seq.items[:i] + seq.items[i + 1:],
                                        kinds=seq.kinds[:i] + seq.kinds[i + 1:])
            if fails(trial):
                seq = trial
                changed = True
    return seq


# -- running and comparing -------------------------------------------------------------
@dataclass
class Run:
    """One back end's run of one image."""
    backend: str
    ok: bool
    reason: str
    results: list
    console: bytes
    gdt: bytes
    current: int               # the sequence running when the run ended
    counters: dict             # the machine's counters at the end


def run(backend, sequences, image_bytes=None):
    """Run the image of `sequences` on a fresh machine with the back end
    registered as `backend`."""
    from .backend import create
    from .machine import BootSpec, Machine
    img = image_bytes if image_bytes is not None else image(sequences)
    with Machine(create(backend)) as m:
        m.boot(BootSpec(img))
        out = m.run()
        gdt = bytes(m.mem.view[A.GDT:A.GDT + 8 * 8])
        cur = struct.unpack_from("<I", m.mem.view, CUR)[0]
        return Run(backend, out.ok and out.exit_status == 0, out.reason,
                   results(m.mem, sequences), bytes(m.uart.output), gdt, cur, dict(m.counters))


@dataclass
class Mismatch:
    sequence: Sequence
    a: Result
    b: Result
    names: tuple

    def report(self):
        x, y = self.names
        return (self.sequence.source()
                + f"{x}:\n  {dump_text(self.a)}\n{y}:\n  {dump_text(self.b)}\n"
                + "".join(f"  {line}\n" for line in differences(self.a, self.b)))


def compare(sequences, a, b):
    """The sequences on which two runs of one image disagree."""
    return [Mismatch(s, ra, rb, (a.backend, b.backend))
            for s, ra, rb in zip(sequences, a.results, b.results) if ra.block != rb.block]


def report(sequences, reference, other, shown=8):
    """Why two runs of the image of `sequences` disagree, for a failing test:
    how the runs ended, the console and GDT, and the first `shown`
    mismatching sequences in full (source and both dumps); None if they
    agree."""
    problems = image_differences(reference, other)
    mismatches = compare(sequences, reference, other)
    if not problems and not mismatches:
        return None
    head = (f"{len(mismatches)} of {len(sequences)} sequences differ between "
            f"{reference.backend} and {other.backend}")
    body = [m.report() for m in mismatches[:shown]]
    more = [f"... and {len(mismatches) - shown} more: "
            + ", ".join(str(m.sequence.index) for m in mismatches[shown:])] \
        if len(mismatches) > shown else []
    return "\n".join([head] + problems + body + more)


def image_differences(a, b):
    """What two runs disagree on beyond the sequences' blocks: how the run
    ended, the console, the GDT (accessed bits the CPU sets on loads)."""
    out = []
    if (a.ok, a.reason) != (b.ok, b.reason):
        out.append(f"run: {a.backend} {'ok' if a.ok else a.reason!r} (at sequence {a.current}) "
                   f"vs {b.backend} {'ok' if b.ok else b.reason!r} (at sequence {b.current})")
    if a.console != b.console:
        out.append(f"console: {a.backend} {a.console!r} vs {b.backend} {b.console!r}")
    if a.gdt != b.gdt:
        words = [(i, x, y) for i, (x, y) in enumerate(zip(struct.unpack("<16I", a.gdt),
                                                          struct.unpack("<16I", b.gdt))) if x != y]
        out.append("gdt: " + ", ".join(f"entry {i // 2} {'high' if i & 1 else 'low'} {x:#010x} "
                                       f"vs {y:#010x}" for i, x, y in words))
    return out
