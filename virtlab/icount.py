"""Counting guest instructions exactly.

The cost model needs how many guest instructions a run executed (the native base
is instructions x CPI).  Unicorn's own counting mode makes execution about 20x
slower; this counter costs a fraction of that.  It works per translation block:

  - when Unicorn generates a block (UC_HOOK_EDGE_GENERATED), decode it once and
    remember its instruction addresses;
  - each time a block starts executing (UC_HOOK_BLOCK), add its instruction count;
  - when execution leaves a block early — an exception, or an intercepted
    instruction that the VMM skips — take back the instructions from the point
    where execution left it (`cut`);
  - an instruction the VMM performs by emulation counts as executed (`add`).

Two different blocks can share an address and size (two programs loaded at the
same address); such keys keep every variant with its bytes and are told apart
by reading the code, which happens rarely.  Counting is a separate pass: the
hooks would distort host time, so timed runs never count.
"""
import ctypes

from unicorn import UC_HOOK_BLOCK, UC_HOOK_EDGE_GENERATED
from unicorn.unicorn_py3.unicorn import uc_tb

from .decode import decoded_block
from .memory import GuestMemoryFault

_BLOCK_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p)
_EDGE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(uc_tb),
                            ctypes.POINTER(uc_tb), ctypes.c_void_p)


class InstructionCounter:
    def __init__(self, machine):
        self.machine = machine
        self.total = 0
        self.blocks = {}              # (pc, size) -> [(code, addresses)]
        self.current = None           # addresses of the block executing now
        self.span = (0, 0)            # and the block's [start, end]
        self.stopped = False
        machine.add_hook(UC_HOOK_EDGE_GENERATED, _EDGE_CB(self._on_generated))
        machine.add_hook(UC_HOOK_BLOCK, _BLOCK_CB(self._on_block))

    def _read(self, pc, size):
        try:
            return self.machine.backend.code_view(pc, live=True).read(pc, size)
        except GuestMemoryFault:
            return None

    def _on_generated(self, _uc, cur, _prev, _user):
        try:
            tb = cur.contents
            self._register(tb.pc, tb.size)
        except BaseException as exc:
            self.machine.abort(exc)

    def _register(self, pc, size):
        code = self._read(pc, size)
        if code is None:
            return
        counts = self.machine.backend.is_guest_instruction
        addrs = tuple(i.address for i in decoded_block(code, pc) if counts(i.address))
        variants = self.blocks.setdefault((pc, size), [])
        if all(v[0] != code for v in variants):
            variants.append((code, addrs))

    def _on_block(self, _uc, pc, size, _user):
        if self.stopped:
            return
        variants = self.blocks.get((pc, size))
        if variants is None:
            # The first block after emu_start is generated with no predecessor,
            # and Unicorn reports no edge for it: decode it now.
            self._register(pc, size)
            variants = self.blocks.get((pc, size))
            if variants is None:
                self.current = None
                return
        if len(variants) == 1:
            addrs = variants[0][1]
        else:
            code = self._read(pc, size)
            addrs = next((a for c, a in variants if c == code), variants[-1][1])
        self.current = addrs
        self.span = (pc, pc + size)
        self.total += len(addrs)

    def executed(self, next_linear):
        """Instructions executed before `next_linear`, from inside the current
        block (a port hook): the block was counted whole when it started."""
        addrs = self.current
        if self.stopped or not addrs or not self.span[0] <= next_linear <= self.span[1]:
            return self.total
        return self.total - sum(1 for a in addrs if a >= next_linear)

    def cut(self, next_linear):
        """Execution left the current block; `next_linear` is the first
        instruction that did not complete (the faulting one, or the one after
        a completed `int`/skipped instruction)."""
        addrs = self.current
        if addrs and self.span[0] <= next_linear <= self.span[1]:
            self.total -= sum(1 for a in addrs if a >= next_linear)
        self.current = None

    def add(self, n=1):
        if not self.stopped:
            self.total += n

    def stop(self, next_linear):
        """The guest ended the run: what the CPU runs after that (the rest of
        the block, until it notices the stop) is not the guest's work."""
        self.cut(next_linear)
        self.stopped = True
