"""Decoding the instruction at an exit, and the blocks the CPU translates, with caches.

An exit tells the VMM only where the CPU stopped; what the instruction was (its
mnemonic, operands and length) comes from capstone.  Decoding costs tens of
microseconds, and the same few instructions exit over and over, so decoded
instructions are cached by linear address.  A cached entry is trusted only while
the same physical bytes are still there: the guest may have remapped the page or
rewritten its code, and on real hardware that would change what executes.
"""
from dataclasses import dataclass, field

from capstone import Cs, CS_ARCH_X86, CS_MODE_32

from .memory import GuestMemoryFault

MAX_INSN = 15

# Legacy prefixes (lock/rep, segment overrides, operand and address size).
_PREFIXES = frozenset((0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67))


def opcode(insn):
    """(opcode bytes, ModRM) of a capstone instruction, from its raw bytes:
    the prefixes skipped, one opcode byte or two after 0x0F, then ModRM (None
    if there are no more bytes).  Needs no capstone detail mode, which
    triples the cost of decoding every block at translation time."""
    return opcode_of(insn.bytes)


def opcode_of(raw):
    """opcode() of an instruction's raw bytes."""
    i = len(prefixes_of(raw))
    n = 2 if raw[i] == 0x0F else 1
    op = bytes(raw[i:i + n])
    return op, raw[i + n] if i + n < len(raw) else None


def prefixes_of(raw):
    """The legacy prefix bytes an instruction's raw bytes begin with."""
    i = 0
    while i < len(raw) - 1 and raw[i] in _PREFIXES:
        i += 1
    return bytes(raw[:i])


# Decoding a new translation block with capstone is most of what
# watching translation costs (intercept.py, icount.py), and every machine a
# process makes -- each row of a bench, each test -- translates the same blocks
# again: the kernel's and the workload's.  A block's decoding depends on nothing
# but its bytes and its address, so it is kept, process-wide, until the cache
# is full; then it starts afresh (a bound on memory, not an eviction policy
# worth its bookkeeping).  No detail mode: it triples the cost, and the
# clients need only the instruction id, mnemonic, length and bytes.
_BLOCK_CS = Cs(CS_ARCH_X86, CS_MODE_32)
_blocks = {}                                  # (bytes, address) -> instructions
_BLOCKS_MAX = 4096


def decoded_block(code, pc):
    """The instructions of the bytes `code` at linear address `pc`, decoded
    once per process (for a whole block: the cache keeps all of them)."""
    key = (code, pc)
    insns = _blocks.get(key)
    if insns is None:
        if len(_blocks) >= _BLOCKS_MAX:
            _blocks.clear()
        insns = _blocks[key] = tuple(_BLOCK_CS.disasm(code, pc))
    return insns


def crossing_start(view, linear, boundary):
    """Where the instructions from `linear` reach `boundary` (a page's end):
    `boundary` itself, or the start of the instruction that crosses it."""
    code = view.read(linear, boundary - linear)
    off = 0
    while off < len(code):
        insns = decoded_block(code[off:], linear + off)
        for insn in insns:
            off += insn.size
        if off < len(code):                 # capstone stopped: ask the CPU model
            n = cpu_length(code[off:off + MAX_INSN], complete=len(code) - off >= MAX_INSN)
            if not isinstance(n, int):
                break
            off += n
    return linear + off


# -- the CPU model as the decoder of last resort ---------------------------------
# capstone does not know every encoding the CPU model runs: the hint-NOP space
# (0F 18-1F), the x87 aliases (DC D0-DF, DF D0-DF...), bsf/bsr with F2.  Where
# it gives up, the length is asked of the CPU model itself (scratch_cpu.py).
INVALID = "invalid"               # the CPU raises #UD for it
NEEDS_MORE = "needs more"         # it runs on past the bytes given


def cpu_length(raw, complete=True):
    """The length of the instruction `raw` begins with, as the CPU model
    decodes it; INVALID if it raises #UD; NEEDS_MORE if it runs past `raw`
    (`complete` False: nothing can be fetched after `raw`).  For the bytes
    capstone cannot decode."""
    from .scratch_cpu import scratch
    n = scratch().length(bytes(raw), complete)
    return INVALID if n is None else NEEDS_MORE if n == 0 else n


def forget_blocks():
    """Empty the block cache: for a measurement whose runs must each decode
    their blocks afresh, as the first run of a process does."""
    _blocks.clear()


# capstone's disasm decodes all it is asked for before it yields the first
# instruction: a page's worth of bytes is about a thousand instructions and
# half a millisecond, where the first block is a handful.  So ask in chunks.
_LAZY_CHUNK = 16


def decode_lazily(code, pc):
    """The instructions of `code` at `pc` one at a time, for a caller that
    stops at the end of the first block in a page's worth of bytes."""
    done = 0
    while done < len(code):
        insn = None
        for insn in _BLOCK_CS.disasm(code[done:], pc + done, _LAZY_CHUNK):
            yield insn
        if insn is None:
            return                       # bytes that do not decode end the block
        done = insn.address + insn.size - pc


class Insn:
    """A capstone instruction with what the VMM asks of it read once.

    Every attribute of a capstone instruction is a property that converts
    from C on each access (a mnemonic is decoded from bytes again, a register
    name costs a library call), and the same instruction exits over and over:
    its decoding is cached (Decoder), so its answers are too.  They cannot
    change: they are functions of the instruction's bytes, which the
    decoder's cache checks before it hands the instruction out again.
    Anything not kept here is read from the capstone instruction."""
    __slots__ = ("_insn", "id", "address", "size", "mnemonic", "op_str", "bytes",
                 "operands", "_names", "memo")

    def __init__(self, insn):
        self._insn = insn
        self.id = insn.id
        self.address = insn.address
        self.size = insn.size
        self.mnemonic = insn.mnemonic
        self.op_str = insn.op_str
        self.bytes = bytes(insn.bytes)
        self.operands = insn.operands
        self._names = {}
        self.memo = {}          # what the emulator works out from the operands, once

    def reg_name(self, reg_id, default=None):
        name = self._names.get(reg_id)
        if name is None:
            name = self._insn.reg_name(reg_id)
            if name is None:
                return default
            self._names[reg_id] = name
        return name

    def __getattr__(self, name):
        return getattr(self._insn, name)

    def __repr__(self):
        return repr(self._insn)


@dataclass(frozen=True)
class Decoded:
    phys: int
    raw: bytes
    insn: object          # Insn, or a capstone CsInsn (with operand details)
    # Answers that depend on the instruction alone (intercept clients'
    # select), kept with the decoding they were computed from.
    memo: dict = field(default_factory=dict, compare=False, repr=False)
    # len(raw), as a field: every emulated exit reads it.
    size: int = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "size", len(self.raw))

    @property
    def mnemonic(self):
        return self.insn.mnemonic

    def text(self):
        return f"{self.insn.mnemonic} {self.insn.op_str}".strip()


# The exit decoder's capstone handle, in detail mode (the emulator reads
# operands), one per process: a handle costs more to open than a machine's
# boot decodes, and a decoding depends on nothing but the bytes and address.
_DETAIL_CS = Cs(CS_ARCH_X86, CS_MODE_32)
_DETAIL_CS.detail = True


class Decoder:
    def __init__(self):
        self._cs = _DETAIL_CS
        self._cache = {}
        self.hits = 0
        self.misses = 0

    # [tour trap 50, hw 45] Decoding the instruction that exited.
    # capstone decodes the bytes at the guest's EIP, read through the guest's own
    # paging (a LinearView).  Decodings are cached by address and checked against the
    # bytes, so a loop that exits a million times decodes once and still sees code
    # that changed.
    def at(self, view, linear):
        """The instruction at `linear` as the CPU sees it through `view`
        (a memory.LinearView).  None if the bytes do not decode."""
        phys = view.phys(linear)
        entry = self._cache.get(linear)
        if entry is not None and entry.phys == phys:
            n = len(entry.raw)
            if phys + n <= view.mem.size and view.mem.view[phys:phys + n] == entry.raw:
                self.hits += 1
                return entry
        self.misses += 1
        code = self._fetch(view, linear)
        insn = next(self._cs.disasm(code, linear, 1), None)
        raw = None if insn is None else bytes(insn.bytes)
        if insn is None:
            insn, raw = self._unlocked(code, linear)
            if insn is None:
                return None
        entry = Decoded(phys, raw, Insn(insn))
        self._cache[linear] = entry
        return entry

    def _unlocked(self, code, linear):
        """(instruction, raw bytes) of `code` read as the CPU model reads a
        LOCK prefix on an instruction that cannot be locked: it ignores it
        (docs/unicorn.md, item 31), where capstone refuses the whole.  The
        instruction is decoded without the prefix; its raw bytes, and so its
        size, keep it.  (None, None) if there is no LOCK or still no decoding."""
        lock = prefixes_of(code).find(0xF0)
        if lock < 0:
            return None, None
        insn = next(self._cs.disasm(code[:lock] + code[lock + 1:], linear, 1), None)
        if insn is None:
            return None, None
        return insn, bytes(code[:insn.size + 1])

    def _fetch(self, view, linear):
        """Up to 15 bytes; fewer if the instruction's tail page is unmapped."""
        try:
            return view.read(linear, MAX_INSN)
        except GuestMemoryFault:
            first = 0x1000 - (linear & 0xFFF)
            return view.read(linear, first)



def describe(decoder, view, eip):
    """'0x00100234: mov eax, cr0' for failure reasons; never raises."""
    try:
        d = decoder.at(view, eip)
        text = d.text() if d else "(undecodable bytes)"
    except GuestMemoryFault:
        text = "(not mapped)"
    return f"{eip:#010x}: {text}"
