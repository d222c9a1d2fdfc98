"""A scratch CPU: the CPU model asked what a VMM cannot tell from a manual.

The guest's machine is one instance of the CPU model; this is another, with
nothing of the guest in it, for questions whose answer is whatever the model
does (which is what native does, and so what every back end must do):

  - how long an instruction is that capstone does not decode (a hint NOP, an
    x87 alias), and whether the model raises #UD for it;
  - what an MSR reads back after a write: the model keeps some, ignores a
    write to one it lacks (a real CPU raises #GP) and keeps its own value of
    a read-only one.

One per process, made on first use.
"""
from unicorn import Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_HOOK_CODE, UC_ERR_INSN_INVALID
from unicorn.x86_const import UC_X86_REG_ESP

_AT = 0x10000                     # two pages: the bytes asked about, then what follows them
MAX_INSN = 15


class ScratchCpu:
    def __init__(self):
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.uc.mem_map(_AT, 0x2000)
        self.uc.reg_write(UC_X86_REG_ESP, _AT + 0x800)
        self.reset = self.uc.context_save()
        self.size = None
        self.uc.hook_add(UC_HOOK_CODE, self._code)

    # -- instruction lengths ---------------------------------------------------------
    # The bytes are placed in memory of their own; a code hook is given the
    # first instruction's size when its block is translated, and the
    # instruction runs (from the same reset state every time), since some are
    # invalid only when they run (rdpkru with CR4.PKE clear); the CPU is
    # stopped at the next one.  Bytes that end where the guest can fetch no
    # more are followed by padding of two kinds in turn: an instruction that
    # needs more than them shows as longer, and one that is invalid whatever
    # follows as invalid both times.  But the byte that follows may pick the
    # instruction: a ModRM byte whose reg field picks the member of a group
    # (0F BA /4 to /7 are bt, bts, btr and btc; /0 to /3 raise #UD), or the
    # third byte of an opcode (0F 3A 0F is palignr, 0F 3A 00 nothing), so
    # padding can make a valid instruction look invalid.  #UD is believed
    # only when every value of that byte, with either padding after it,
    # gives it too (at most 512 probes, 6 ms, for bytes that are cut off
    # by a page end and that capstone does not decode either).
    def _code(self, uc, _address, size, _user):
        if self.size is None:
            self.size = size              # the instruction asked about, about to run
        else:
            uc.emu_stop()                 # the next one

    def length(self, raw, complete):
        """The length of the first instruction of `raw`; None if the model
        raises #UD for it; 0 if it runs past `raw` (`complete` False:
        nothing follows `raw` that could be fetched)."""
        if complete:
            return self._probe(raw, 0x90)
        after = (self._probe(raw, 0x90), self._probe(raw, 0x00))
        if after == (None, None):
            valid = any(self._probe(raw + bytes([b]), pad) is not None
                        for b in range(256) for pad in (0x90, 0x00))
            return 0 if valid else None
        if after[0] != after[1] or after[0] is None or after[0] > len(raw):
            return 0
        return after[0]

    def _probe(self, raw, padding):
        """The size of the first instruction of `raw` followed by `padding`
        bytes, or None if the model raises #UD for it."""
        at = _AT + 0x1000 - len(raw)
        self.uc.context_restore(self.reset)
        self.uc.mem_write(_AT, bytes([padding]) * 0x2000)
        self.uc.mem_write(at, raw)
        # (The code changed behind the CPU: docs/unicorn.md, item 6.)
        self.uc.ctl_remove_cache(_AT, _AT + 0x2000)
        self.size = None
        try:
            self.uc.emu_start(at, _AT + 0x2000)
        except UcError as err:
            if err.errno == UC_ERR_INSN_INVALID:
                return None               # at translation, or when it ran
            # (any other fault of its running is a valid instruction's)
        return self.size if self.size is not None and 0 < self.size <= MAX_INSN else None

    # -- model-specific registers ------------------------------------------------------
    def kept_msr(self, index, value):
        """What the model reads from MSR `index` after a write of `value`."""
        self.uc.context_restore(self.reset)
        self.uc.msr_write(index, value)
        return self.uc.msr_read(index)


_scratch = None


def scratch():
    global _scratch
    if _scratch is None:
        _scratch = ScratchCpu()
    return _scratch
