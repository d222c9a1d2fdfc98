"""Intel 8259A programmable interrupt controller, master and slave.

The kernel's view: an initialisation sequence (ICW1-ICW4) sets each chip's vector
base; the mask register (OCW1) blocks lines; an interrupt goes from request (IRR)
to in-service (ISR) when the CPU acknowledges it, and stays in service until the
kernel's end-of-interrupt (OCW2).  The slave hangs off the master's line 2.
"""
from dataclasses import dataclass, field


@dataclass
class Chip:
    vector_base: int = 0
    imr: int = 0xFF
    irr: int = 0
    isr: int = 0
    init_step: int = 0            # 0: operational; 2..4: expecting ICW2..ICW4
    needs_icw4: bool = False
    single: bool = False
    read_isr: bool = False

    def highest(self, bits):
        if not bits:
            return None
        for i in range(8):
            if bits & (1 << i):
                return i
        return None

    def command(self, value):
        if value & 0x10:                      # ICW1
            self.init_step, self.needs_icw4 = 2, bool(value & 1)
            self.single = bool(value & 0x02)  # single chip: no ICW3 follows
            self.imr, self.isr, self.irr, self.read_isr = 0, 0, 0, False
        elif value & 0x18 == 0x08:            # OCW3
            if value & 0x02:
                self.read_isr = bool(value & 1)
        elif value & 0x20:                    # OCW2: EOI
            if value & 0x40:                  # specific EOI
                self.isr &= ~(1 << (value & 7))
            else:
                line = self.highest(self.isr)
                if line is not None:
                    self.isr &= ~(1 << line)

    def data(self, value):
        if self.init_step == 2:
            self.vector_base = value & 0xF8
            self.init_step = 3 if not self.single else (4 if self.needs_icw4 else 0)
        elif self.init_step == 3:             # ICW3: cascade wiring, nothing to model
            self.init_step = 4 if self.needs_icw4 else 0
        elif self.init_step == 4:
            self.init_step = 0
        else:
            self.imr = value & 0xFF

    def pending(self, extra=0):
        """Highest-priority unmasked request not blocked by one in service;
        `extra` adds request lines driven from outside (the cascade)."""
        irr = self.irr | extra
        if not irr:
            return None
        line = self.highest(irr & ~self.imr)
        if line is None:
            return None
        served = self.highest(self.isr)
        if served is not None and served <= line:
            return None
        return line


@dataclass
class Pic:
    master: Chip = field(default_factory=Chip)
    slave: Chip = field(default_factory=Chip)

    ports = (0x20, 0x21, 0xA0, 0xA1)

    def raise_irq(self, irq):
        if irq < 8:
            self.master.irr |= 1 << irq
        else:
            self.slave.irr |= 1 << (irq - 8)

    def _cascade(self):
        """The slave's INT output drives the master's line 2 while the slave
        has an unmasked request."""
        return 1 << 2 if self.slave.irr & ~self.slave.imr else 0

    def io_read(self, port, size):
        chip = self.master if port < 0xA0 else self.slave
        if port & 1:
            return chip.imr
        if chip.read_isr:
            return chip.isr
        return chip.irr | (self._cascade() if chip is self.master else 0)

    def io_write(self, port, size, value):
        chip = self.master if port < 0xA0 else self.slave
        if port & 1:
            chip.data(value)
        else:
            chip.command(value)

    def state(self):
        """Everything that decides what the PIC will present: two states that
        compare equal present the same interrupts, now and after the same
        requests."""
        return tuple((c.irr, c.isr, c.imr) for c in (self.master, self.slave))

    def pending_vector(self):
        """The vector the CPU would receive now, or None."""
        line = self.master.pending(self._cascade())
        if line is None:
            return None
        if line == 2:
            sline = self.slave.pending()
            if sline is None:
                return None
            return self.slave.vector_base + sline
        return self.master.vector_base + line

    def acknowledge(self):
        """INTA cycle: move the request into service and return its vector."""
        line = self.master.pending(self._cascade())
        if line is None:
            return None
        self.master.isr |= 1 << line
        if line != 2:
            self.master.irr &= ~(1 << line)
            return self.master.vector_base + line
        sline = self.slave.pending()
        if sline is None:                      # the slave's request is in service
            self.master.isr &= ~(1 << 2)
            return None
        self.slave.irr &= ~(1 << sline)
        self.slave.isr |= 1 << sline
        return self.slave.vector_base + sline
