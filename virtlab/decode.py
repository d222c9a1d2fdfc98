"""Decoding the instruction at an exit, with a cache.

An exit tells the VMM only where the CPU stopped; what the instruction was (its
mnemonic, operands and length) comes from capstone.  Decoding costs tens of
microseconds, and the same few instructions exit over and over, so decoded
instructions are cached by linear address.  A cached entry is trusted only while
the same physical bytes are still there: the guest may have remapped the page or
rewritten its code, and on real hardware that would change what executes.
"""
from dataclasses import dataclass

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
    i = 0
    while i < len(raw) - 1 and raw[i] in _PREFIXES:
        i += 1
    n = 2 if raw[i] == 0x0F else 1
    op = bytes(raw[i:i + n])
    return op, raw[i + n] if i + n < len(raw) else None


@dataclass(frozen=True)
class Decoded:
    phys: int
    raw: bytes
    insn: object          # capstone CsInsn (with operand details)

    @property
    def size(self):
        return len(self.raw)

    @property
    def mnemonic(self):
        return self.insn.mnemonic

    def text(self):
        return f"{self.insn.mnemonic} {self.insn.op_str}".strip()


class Decoder:
    def __init__(self):
        self._cs = Cs(CS_ARCH_X86, CS_MODE_32)
        self._cs.detail = True
        self._cache = {}
        self.hits = 0
        self.misses = 0

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
        if insn is None:
            return None
        entry = Decoded(phys, bytes(insn.bytes), insn)
        self._cache[linear] = entry
        return entry

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
