"""The assembler: one keystone engine per process, checked before it is used.

keystone reads a number such as `16` in the engine's default radix, which it
takes from a field (MCAsmInfo::Radix) that its constructor never sets; the one
call that sets it, ks_option(), sets it to 16.  So a new engine reads
undecorated decimal literals as hex whenever the heap block its MCAsmInfo is
built in happens to hold the value 16 there: garbage left by an earlier user of
the block.  Closing an engine frees the block and the next engine usually gets
it back, so once it happens it lasts for a run of engines.  (This is what made
asm guests fail at random in the test suite: `mov ax, 16` became `mov ax, 0x16`,
the same length, and the `mov ds, ax` after it raised #GP(0x14) with no IDT
yet, a triple fault at 0x00100014: docs/unicorn.md, item 23.)

The radix is fixed for an engine's life, so an engine is made once per
process and checked on a literal whose two readings differ.  An engine that
reads hex is kept open until a good one is found, so that the next one is not
built in the same block.  Usually the first engine is good; in a heap where
many freed blocks hold 16 there (the tests recreate one) it can take dozens of
engines, and once, in a long-lived test worker, more than 256.  So the search
goes on for up to 4096 engines (about 14 KiB each while held, some 55 MiB at
worst, all freed once a good one is found) and then fails with a clear error:
it never returns an engine that reads hex.  Everything in virtlab that
assembles (asm guests, the state area's calibration, bt's templates) goes
through engine().
"""
import re
import struct
from functools import lru_cache

from keystone import Ks, KS_ARCH_X86, KS_MODE_32

_PROBE, _DECIMAL = "push 16", b"\x6a\x10"       # `push 0x16` would be 6a 16
_TRIES = 4096
_ENGINE = None


class AssemblerError(RuntimeError):
    pass


def checked_engine():
    """A new engine that reads decimal literals as decimal."""
    rejected = []                  # held open: their blocks must not be reused
    while len(rejected) < _TRIES:
        ks = Ks(KS_ARCH_X86, KS_MODE_32)
        if bytes(ks.asm(_PROBE, 0)[0]) == _DECIMAL:
            return ks
        rejected.append(ks)
    raise AssemblerError(f"keystone: {_TRIES} engines in a row read decimal literals as hex")


def engine():
    """The process's checked engine (made on first use)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = checked_engine()
    return _ENGINE


@lru_cache(maxsize=1024)
def assemble(text, base):
    """Machine code for `text`, assembled at address `base`.  (Kept: a test
    or a benchmark builds the same guest once for each back end.)"""
    code, _ = engine().asm(text, base)
    code = bytes(code or b"")
    if _SHORT_ONLY.search(text):
        _check_short_branches(text, base, code)
    return code


# Branches that have only an 8-bit displacement.  keystone does not refuse a
# label beyond its reach: it keeps the displacement's low 8 bits, and the
# branch goes elsewhere (docs/unicorn.md, item 43).
_SHORT_ONLY = re.compile(r"^[ \t]*(jecxz|jcxz|loop|loope|loopz|loopne|loopnz)[ \t]+"
                         r"([A-Za-z_.$][\w.$]*)[ \t]*$", re.MULTILINE | re.IGNORECASE)


def _check_short_branches(text, base, code):
    """Refuse `code` if one of its 8-bit branches misses its label.  The
    text is assembled again with a label of its own on each such branch and,
    after everything, the branches' and their targets' addresses as words;
    the layout before them is the same, so each branch's displacement in
    `code` can be checked against its target's address."""
    names = []

    def mark(m):
        names.append((m.group(1), m.group(2)))
        return f"__short_{len(names)}: {m.group(0).strip()}"
    marked = _SHORT_ONLY.sub(mark, text)
    table = ", ".join(f"__short_{i}, {target}" for i, (_, target) in enumerate(names, 1))
    words, _ = engine().asm(marked + f"\n.int {table}\n", base)
    words = bytes(words)[len(code):]
    for i, (op, target) in enumerate(names):
        at, goal = struct.unpack_from("<II", words, 8 * i)
        n = 3 if code[at - base] == 0x67 else 2              # jcxz: an address-size prefix
        reached = (at + n + struct.unpack_from("<b", code, at - base + n - 1)[0]) & 0xFFFFFFFF
        if reached != goal:
            raise AssemblerError(f"'{op} {target}' at {at:#x}: the label is {goal - at - n:+d} "
                                 f"bytes away, beyond the reach of an 8-bit displacement")
