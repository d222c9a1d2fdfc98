"""IDE (ATA) disk, primary channel, programmed I/O.

A driver writes the sector count and the 28-bit LBA to 0x1F2-0x1F6, a command to
0x1F7, then moves each 512-byte sector through the 16-bit data port 0x1F0 while the
status register shows DRQ.  After each sector the drive raises IRQ 14 unless the
driver set nIEN in the device-control register (0x3F6).  Reads and writes are
instantaneous in virtual time: the disk's cost is the port traffic and interrupts
it causes, which is what the back ends differ on.
"""
import struct
from dataclasses import dataclass, field

SECTOR = 512
BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
CMD_READ, CMD_WRITE, CMD_IDENTIFY, CMD_FLUSH = 0x20, 0x30, 0xEC, 0xE7


@dataclass
class IdeDisk:
    pic: object
    image: bytearray = field(default_factory=bytearray)
    regs: list = field(default_factory=lambda: [0] * 8)
    status: int = DRDY | DSC
    error: int = 0
    nien: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    pos: int = 0
    remaining: int = 0
    lba: int = 0
    writing: bool = False

    ports = tuple(range(0x1F0, 0x1F8)) + (0x3F6,)

    @property
    def sectors(self):
        return len(self.image) // SECTOR

    def io_read(self, port, size):
        if port == 0x1F0:
            return self._data_in(size)
        if port in (0x1F7, 0x3F6):
            return self.status
        if port == 0x1F1:
            return self.error
        return self.regs[port - 0x1F0]

    def io_write(self, port, size, value):
        if port == 0x3F6:
            self.nien = bool(value & 0x02)
            if value & 0x04:                   # software reset
                self.status, self.remaining = DRDY | DSC, 0
            return
        if port == 0x1F0:
            self._data_out(size, value)
        elif port == 0x1F7:
            self._command(value & 0xFF)
        else:
            self.regs[port - 0x1F0] = value & 0xFF

    # -- commands --------------------------------------------------------
    def _command(self, cmd):
        self.error = 0
        if cmd == CMD_IDENTIFY:
            self._start_transfer(self._identify(), 1, writing=False)
        elif cmd in (CMD_READ, CMD_WRITE):
            count = self.regs[2] or 256
            lba = (self.regs[3] | self.regs[4] << 8 | self.regs[5] << 16
                   | (self.regs[6] & 0x0F) << 24)
            if not self.regs[6] & 0x40 or lba + count > self.sectors:
                return self._fail()
            self.lba, self.remaining, self.writing = lba, count, cmd == CMD_WRITE
            if self.writing:
                self.buffer, self.pos, self.status = bytearray(SECTOR), 0, DRDY | DSC | DRQ
            else:
                self._load_sector()
        elif cmd == CMD_FLUSH:
            self._interrupt()
        else:
            self._fail()

    def _fail(self):
        self.status, self.error = DRDY | ERR, 0x04         # ABRT
        self._interrupt()

    def _identify(self):
        words = [0] * 256
        words[0] = 0x0040                                   # fixed disk
        words[49] = 1 << 9                                  # LBA supported
        words[60], words[61] = self.sectors & 0xFFFF, self.sectors >> 16
        model = b"VIRTLAB DISK".ljust(40)
        for i in range(20):
            words[27 + i] = model[2 * i] << 8 | model[2 * i + 1]
        return bytearray(struct.pack("<256H", *words))

    def _start_transfer(self, data, count, writing):
        self.buffer, self.pos, self.remaining, self.writing = data, 0, count, writing
        self.status = DRDY | DSC | DRQ
        self._interrupt()

    def _load_sector(self):
        off = self.lba * SECTOR
        self._start_transfer(bytearray(self.image[off:off + SECTOR]), self.remaining, False)

    # -- the data port ---------------------------------------------------
    def _data_in(self, size):
        if self.writing or not self.status & DRQ:
            return 0
        n = min(size, 4)
        value = int.from_bytes(self.buffer[self.pos:self.pos + n], "little")
        self.pos += n
        if self.pos >= len(self.buffer):
            self.remaining -= 1
            self.lba += 1
            if self.remaining > 0:
                self._load_sector()
            else:
                self.status = DRDY | DSC
        return value

    def _data_out(self, size, value):
        if not self.writing or not self.status & DRQ:
            return
        n = min(size, 4)
        self.buffer[self.pos:self.pos + n] = value.to_bytes(n, "little")
        self.pos += n
        if self.pos >= SECTOR:
            off = self.lba * SECTOR
            self.image[off:off + SECTOR] = self.buffer
            self.lba += 1
            self.remaining -= 1
            self.buffer, self.pos = bytearray(SECTOR), 0
            self.status = DRDY | DSC | (DRQ if self.remaining else 0)
            self._interrupt()

    def _interrupt(self):
        if not self.nien:
            self.pic.raise_irq(14)
