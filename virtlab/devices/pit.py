"""Intel 8254 programmable interval timer, channel 0 (IRQ 0).

The counter decrements at 1.193182 MHz from the reload value the kernel writes
(low byte then high byte); in modes 2 and 3 it reloads itself and raises IRQ 0 once
per period.  Here the "decrement" is arithmetic on the virtual clock: the count and
the next interrupt time are computed from when the reload value was written.
"""
from dataclasses import dataclass

PIT_HZ = 1_193_182
NS = 1_000_000_000


@dataclass
class Pit:
    clock: object
    pic: object
    reload: int = 0               # 0 means 65536, as on the chip
    mode: int = 0
    access: int = 3               # 1 lobyte, 2 hibyte, 3 lobyte then hibyte
    write_hi: bool = False
    start_ns: int = 0
    armed: bool = False
    next_ns: int = 0
    latched: int = None
    read_hi: bool = False

    ports = (0x40, 0x43)

    def period_ns(self):
        return (self.reload or 0x10000) * NS // PIT_HZ

    def count(self):
        elapsed = (self.clock.now_ns - self.start_ns) * PIT_HZ // NS
        n = self.reload or 0x10000
        return n - elapsed % n

    def io_write(self, port, size, value):
        value &= 0xFF
        if port == 0x43:
            if value >> 6 != 0:
                return                         # only channel 0 is wired
            if (value >> 4) & 3 == 0:          # counter latch command
                self.latched, self.read_hi = self.count(), False
                return
            self.access, self.mode = (value >> 4) & 3, (value >> 1) & 7
            self.write_hi, self.armed = False, False
            return
        if self.access == 3 and not self.write_hi:
            self.reload = (self.reload & 0xFF00) | value
            self.write_hi = True
            return
        if self.write_hi:
            self.reload = (self.reload & 0x00FF) | (value << 8)
        elif self.access == 2:                 # high byte only: the low byte is 0
            self.reload = value << 8
        else:                                  # low byte only: the high byte is 0
            self.reload = value
        self.write_hi = False
        self._arm()

    def _arm(self):
        self.start_ns = self.clock.now_ns
        self.next_ns = self.start_ns + self.period_ns()
        self.armed = True

    def io_read(self, port, size):
        if port != 0x40:
            return 0xFF
        value = self.latched if self.latched is not None else self.count()
        if not self.read_hi:
            self.read_hi = True
            return value & 0xFF
        self.read_hi, self.latched = False, None
        return (value >> 8) & 0xFF

    def next_deadline(self):
        return self.next_ns if self.armed else None

    def poll(self):
        """Raise IRQ 0 if a period has ended.  Periods that passed while the line
        was already raised are lost, as on the chip (the IRR bit is one bit)."""
        if not self.armed or self.clock.now_ns < self.next_ns:
            return
        self.pic.raise_irq(0)
        period = self.period_ns()
        if self.mode in (2, 3):
            missed = (self.clock.now_ns - self.next_ns) // period + 1
            self.next_ns += missed * period
        else:
            self.armed = False                 # mode 0: one shot
