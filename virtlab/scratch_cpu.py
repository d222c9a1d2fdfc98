"""A scratch CPU: the CPU model asked what a VMM cannot tell from a manual.

The guest's machine is one instance of the CPU model; this is another, with
nothing of the guest in it, for questions whose answer is whatever the model
does (which is what native does, and so what every back end must do):

  - how long an instruction is that capstone does not decode (a hint NOP, an
    x87 alias), and whether the model raises #UD for it;
  - what an MSR reads back after a write: the model keeps some, ignores a
    write to one it lacks (a real CPU raises #GP) and keeps its own value of
    a read-only one;
  - what CR4 holds after `mov cr4`: the model drops the bits of features it
    lacks and keeps every other (docs/unicorn.md, item 41).

One per process, made on first use.
"""
from functools import lru_cache

from unicorn import Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_HOOK_CODE, UC_ERR_INSN_INVALID
from unicorn.x86_const import UC_X86_REG_CR4, UC_X86_REG_EAX, UC_X86_REG_ESP

from . import x86

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


    # -- control registers ---------------------------------------------------------------
    def kept_cr4(self, value):
        """What the model's CR4 holds after `mov cr4, eax` with EAX = `value`
        (run at ring 0 with paging off, where no bit of CR4 changes what the
        next instruction does)."""
        self.uc.context_restore(self.reset)
        self.uc.mem_write(_AT, _MOV_CR4_EAX)
        self.uc.ctl_remove_cache(_AT, _AT + 0x1000)
        self.uc.reg_write(UC_X86_REG_EAX, value)
        self.size = None                  # (the code hook stops at a second instruction)
        self.uc.emu_start(_AT, _AT + len(_MOV_CR4_EAX))
        return self.uc.reg_read(UC_X86_REG_CR4)


_MOV_CR4_EAX = b"\x0f\x22\xe0"


@lru_cache(maxsize=64)
def kept_control_register(n, value):
    """What control register `n` holds after the guest's own `mov crN` of
    `value` on the CPU model, which is what a VMM must make of the write
    too (docs/unicorn.md, item 41): CR0 always with ET, CR4 without the bits
    of features the model lacks.  (Writing the register through the
    library's API would keep the value as given.)"""
    if n == 0:
        return value | x86.CR0_ET
    if n == 4:
        return scratch().kept_cr4(value)
    return value


_scratch = None


def scratch():
    global _scratch
    if _scratch is None:
        _scratch = ScratchCpu()
    return _scratch
