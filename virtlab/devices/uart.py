"""16550 UART at COM1 (0x3F8): the console.

Only the transmit side matters to a kernel that prints: the transmitter holding
register takes a byte, and the line status register always reports it empty (a
virtual wire never backs up).  The other registers hold what is written to them,
as on the real part, so a driver's initialisation sequence reads back sensibly.
"""
from dataclasses import dataclass, field

COM1 = 0x3F8
LSR_THRE, LSR_TEMT = 0x20, 0x40


@dataclass
class Uart:
    base: int = COM1
    output: bytearray = field(default_factory=bytearray)
    limit: int = 1 << 20                      # a runaway guest cannot fill host memory
    regs: list = field(default_factory=lambda: [0] * 8)
    divisor: list = field(default_factory=lambda: [0, 0])    # DLL, DLM (DLAB = 1)

    @property
    def ports(self):
        return range(self.base, self.base + 8)

    def io_read(self, port, size):
        reg = port - self.base
        if reg == 5:
            return LSR_THRE | LSR_TEMT
        if reg < 2 and self.regs[3] & 0x80:
            return self.divisor[reg]
        if reg == 0:
            return 0                          # receive buffer: nothing typed
        return self.regs[reg]

    def io_write(self, port, size, value):
        reg = port - self.base
        if reg < 2 and self.regs[3] & 0x80:             # DLAB: the divisor latch
            self.divisor[reg] = value & 0xFF
            return
        if reg == 0:                                    # transmitter holding register
            self.emit(bytes((value & 0xFF,)))
            return
        self.regs[reg] = value & 0xFF

    def emit(self, data):
        """Bytes onto the console line (the transmitter, or a hypervisor's
        console that writes a whole buffer at once), up to the limit."""
        room = self.limit - len(self.output)
        if room > 0:
            self.output += data[:room]

    def text(self):
        return self.output.decode("latin-1")
