"""Translation-time intercepts: making chosen instructions exit without changing
a byte of guest memory.

VT-x decides in hardware which instructions exit; Unicorn has no such controls,
and patching the guest's code would be visible to it.  Instead the VMM watches
Unicorn translate guest code (UC_HOOK_EDGE_GENERATED fires once per new
translation block), decodes each new block, and puts an exact-address
UC_HOOK_CODE hook on every instruction it wants to see.  A hook added while a
block is being generated does not apply to that block's first run, so the VMM
stops the CPU, drops that block from the translation cache and restarts it: the
block has not run yet, so nothing is lost (notes/unicorn-x86.md, item 8).
"""
import ctypes

from capstone import Cs, CS_ARCH_X86, CS_MODE_32
from unicorn import UC_HOOK_CODE, UC_HOOK_EDGE_GENERATED
from unicorn.unicorn_py3.unicorn import uc_tb

from virtlab.memory import GuestMemoryFault

_EDGE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(uc_tb),
                            ctypes.POINTER(uc_tb), ctypes.c_void_p)
_CODE_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32,
                            ctypes.c_void_p)


class Intercepts:
    """`select(insn)` names the instructions to intercept (a kind, or None);
    `on_hit(address, kind)` runs before each intercepted instruction executes."""

    def __init__(self, machine, select, on_hit):
        self.machine = machine
        self.select = select
        self.on_hit = on_hit
        self.kinds = {}                      # address -> kind
        self._cs = Cs(CS_ARCH_X86, CS_MODE_32)
        self._code_cb = _CODE_CB(self._on_code)
        machine.add_hook(UC_HOOK_EDGE_GENERATED, _EDGE_CB(self._on_generated))

    def _on_generated(self, _uc, cur, _prev, _user):
        m = self.machine
        try:
            tb = cur.contents
            try:
                code = m.backend.live_view().read(tb.pc, tb.size)
            except GuestMemoryFault:
                return
            new = []
            for insn in self._cs.disasm(code, tb.pc):
                kind = self.select(insn)
                if kind is not None and insn.address not in self.kinds:
                    new.append((insn.address, kind))
            for address, kind in new:
                self.kinds[address] = kind
                m.add_hook(UC_HOOK_CODE, self._code_cb, begin=address, end=address)
            if new:
                m.request_restart(tb.pc, tb.pc + tb.size)
        except BaseException as exc:
            m.abort(exc)

    def _on_code(self, _uc, address, _size, _user):
        try:
            kind = self.kinds.get(address)
            if kind is not None:
                self.on_hit(address, kind)
        except BaseException as exc:
            self.machine.abort(exc)
