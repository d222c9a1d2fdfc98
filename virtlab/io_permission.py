"""The I/O permission check that Unicorn leaves out.

On IA-32 an `in`/`out` (or `ins`/`outs`) at a privilege level above IOPL is
allowed only if the TSS's I/O permission bitmap clears every byte of the access;
otherwise it raises #GP(0) at the instruction (SDM vol. 1, 18.5).  Unicorn never
checks (docs/unicorn.md, item 5), so a user program could reprogram the
interrupt controller behind its kernel's back.  The machine therefore intercepts
port instructions in code translated for user privilege (translation-time hooks:
kernel code pays nothing) and checks them before they execute; a refused access
is delivered as the #GP the hardware would raise.  The platform ports
0x500-0x50F are instrumentation and are never refused.
"""
from capstone import x86_const as C

from . import x86
from .devices.platform import PORTS as PLATFORM_PORTS
from .intercept import RAISED
from .popek_goldberg import PORT_IDS

# The width of a string port instruction's access; `in` and `out` name theirs
# in the data operand.  (By id: a `rep` prefix changes capstone's mnemonic.)
_STRING_SIZE = {C.X86_INS_INSB: 1, C.X86_INS_OUTSB: 1, C.X86_INS_INSW: 2, C.X86_INS_OUTSW: 2,
                C.X86_INS_INSD: 4, C.X86_INS_OUTSD: 4}


class IoPermission:
    def __init__(self, machine):
        self.machine = machine
        machine.intercepts.watch(self._select, self._hit, exit=True, ids=PORT_IDS)

    def _select(self, insn, cpl):
        if cpl > self.machine.backend.kernel_ring and insn.id in PORT_IDS:
            return "io"
        return None

    def _hit(self, decoded, kind):
        m, st = self.machine, self.machine.state
        port, size = _port_and_size(decoded.insn, st)
        if port in PLATFORM_PORTS or m.backend.io_permitted(port, size):
            return None
        st.set_error_code(0)
        m.backend.exception(x86.GP)
        return RAISED


def _port_and_size(insn, state):
    """The port an I/O instruction addresses and its width in bytes."""
    iid = insn.id
    if iid in _STRING_SIZE:
        return state.reg("edx") & 0xFFFF, _STRING_SIZE[iid]
    ops = insn.operands
    data, port_op = (ops[0], ops[1]) if iid == C.X86_INS_IN else (ops[1], ops[0])
    port = port_op.imm if port_op.type == C.X86_OP_IMM else state.reg("edx")
    return port & 0xFFFF, data.size
