"""Unit tests of the device models against the real parts' behaviour.

Each test drives a device the way a small kernel's driver does (through io_read /
io_write on its real port numbers) and checks exact register values, so that a
model that "works with our kernel" but differs from the 8259A, 8254, ATA drive or
16550 a real kernel was written for is caught here rather than in a workload.
"""
import struct

import pytest

from virtlab.devices import ide as ide_mod
from virtlab.devices.bus import PortBus
from virtlab.devices.clock import EVENT_NS, VirtualClock
from virtlab.devices.ide import IdeDisk
from virtlab.devices.pic import Pic
from virtlab.devices.pit import PIT_HZ, Pit
from virtlab.devices.platform import Platform
from virtlab.devices.uart import Uart

SECTOR = 512


class IrqRecorder:
    """Stands in for the PIC: records every raise_irq call in order."""

    def __init__(self):
        self.raised = []

    def raise_irq(self, irq):
        self.raised.append(irq)


# ---------------------------------------------------------------------------
# 8259A PIC
# ---------------------------------------------------------------------------

def init_pics(pic, master_base=0x20, slave_base=0x28):
    """The classic PC/AT remap: ICW1 (edge, cascade, ICW4), ICW2 base, ICW3 wiring,
    ICW4 8086 mode, on both chips."""
    pic.io_write(0x20, 1, 0x11)
    pic.io_write(0xA0, 1, 0x11)
    pic.io_write(0x21, 1, master_base)
    pic.io_write(0xA1, 1, slave_base)
    pic.io_write(0x21, 1, 0x04)       # master: slave on IR2
    pic.io_write(0xA1, 1, 0x02)       # slave: cascade identity 2
    pic.io_write(0x21, 1, 0x01)
    pic.io_write(0xA1, 1, 0x01)


def read_isr(pic, cmd_port=0x20):
    pic.io_write(cmd_port, 1, 0x0B)   # OCW3: read ISR
    return pic.io_read(cmd_port, 1)


def read_irr(pic, cmd_port=0x20):
    pic.io_write(cmd_port, 1, 0x0A)   # OCW3: read IRR
    return pic.io_read(cmd_port, 1)


def eoi(pic, port=0x20):
    pic.io_write(port, 1, 0x20)       # OCW2: non-specific EOI


@pytest.fixture
def pic():
    p = Pic()
    init_pics(p)
    return p


def test_pic_init_sets_vector_bases_and_clears_masks():
    p = Pic()
    init_pics(p, 0x30, 0x78)
    assert p.master.vector_base == 0x30 and p.slave.vector_base == 0x78
    assert p.master.init_step == 0 and p.slave.init_step == 0
    # ICW1 clears the mask register; after init the data port is OCW1 again.
    assert p.io_read(0x21, 1) == 0x00 and p.io_read(0xA1, 1) == 0x00
    p.raise_irq(1)
    assert p.pending_vector() == 0x31
    p.raise_irq(10)
    assert p.acknowledge() == 0x31
    eoi(p)
    assert p.acknowledge() == 0x78 + 2


def test_pic_icw2_low_bits_are_ignored():
    p = Pic()
    init_pics(p, 0x27, 0x2F)          # x86 mode: ICW2 bits 0-2 are not used
    assert p.master.vector_base == 0x20 and p.slave.vector_base == 0x28


def test_pic_init_without_icw4():
    p = Pic()
    p.io_write(0x20, 1, 0x10)         # ICW1 without IC4, cascade mode: ICW2, ICW3 only
    p.io_write(0x21, 1, 0x40)
    p.io_write(0x21, 1, 0x04)
    p.io_write(0x21, 1, 0xFB)         # now OCW1
    assert p.master.vector_base == 0x40
    assert p.io_read(0x21, 1) == 0xFB


def test_pic_single_mode_skips_icw3():
    """ICW1 with SNGL (bit 1) set: the chip expects no ICW3, so the write after ICW2
    is ICW4 (if IC4) and the one after that is OCW1."""
    p = Pic()
    p.io_write(0x20, 1, 0x13)         # ICW1: single, IC4
    p.io_write(0x21, 1, 0x20)         # ICW2
    p.io_write(0x21, 1, 0x01)         # ICW4 (no ICW3 in single mode)
    p.io_write(0x21, 1, 0xFE)         # OCW1: only IRQ 0 unmasked
    assert p.master.vector_base == 0x20
    assert p.io_read(0x21, 1) == 0xFE


def test_pic_ocw1_masks_block_delivery_but_keep_the_request(pic):
    pic.io_write(0x21, 1, 0xFD)       # mask everything but IRQ 1
    assert pic.io_read(0x21, 1) == 0xFD
    pic.raise_irq(0)
    assert pic.pending_vector() is None
    assert pic.acknowledge() is None
    assert read_irr(pic) == 0x01      # the request is latched, just masked
    pic.raise_irq(1)
    assert pic.pending_vector() == 0x21
    pic.io_write(0x21, 1, 0x00)       # unmask: IRQ 0 has priority over 1
    assert pic.pending_vector() == 0x20
    assert pic.acknowledge() == 0x20


def test_pic_acknowledge_moves_irr_to_isr(pic):
    pic.raise_irq(3)
    assert read_irr(pic) == 0x08 and read_isr(pic) == 0x00
    assert pic.pending_vector() == 0x23
    assert pic.pending_vector() == 0x23          # looking does not acknowledge
    assert pic.acknowledge() == 0x23
    assert read_irr(pic) == 0x00 and read_isr(pic) == 0x08
    assert pic.pending_vector() is None
    assert pic.acknowledge() is None


def test_pic_ocw3_selects_irr_or_isr_and_sticks(pic):
    pic.raise_irq(4)
    pic.raise_irq(5)
    pic.acknowledge()                 # 4 in service, 5 requested
    pic.io_write(0x20, 1, 0x0B)
    assert pic.io_read(0x20, 1) == 0x10
    assert pic.io_read(0x20, 1) == 0x10          # the selection persists
    pic.io_write(0x20, 1, 0x0A)
    assert pic.io_read(0x20, 1) == 0x20
    pic.io_write(0x20, 1, 0x08)                  # OCW3 with RR=0: no change
    assert pic.io_read(0x20, 1) == 0x20


def test_pic_non_specific_eoi_clears_highest_priority_in_service(pic):
    pic.raise_irq(5)
    assert pic.acknowledge() == 0x25
    pic.raise_irq(1)                  # higher priority: nests over 5
    assert pic.acknowledge() == 0x21
    assert read_isr(pic) == 0x22
    eoi(pic)
    assert read_isr(pic) == 0x20
    eoi(pic)
    assert read_isr(pic) == 0x00
    eoi(pic)                          # EOI with nothing in service is harmless
    assert read_isr(pic) == 0x00


def test_pic_specific_eoi_clears_only_that_line(pic):
    pic.raise_irq(6)
    pic.acknowledge()
    pic.raise_irq(1)
    pic.acknowledge()                 # 1 in service
    assert read_isr(pic) == 0x42
    pic.io_write(0x20, 1, 0x60 | 6)   # specific EOI for line 6
    assert read_isr(pic) == 0x02
    pic.io_write(0x20, 1, 0x60 | 1)
    assert read_isr(pic) == 0x00


def test_pic_priority_lower_line_blocked_while_higher_in_service(pic):
    pic.raise_irq(0)
    assert pic.acknowledge() == 0x20
    pic.raise_irq(1)
    assert pic.pending_vector() is None          # 1 waits for 0's EOI
    assert pic.acknowledge() is None
    pic.raise_irq(0)                             # same line again: also blocked
    assert pic.pending_vector() is None
    eoi(pic)
    assert pic.pending_vector() == 0x20          # highest request first
    assert pic.acknowledge() == 0x20
    eoi(pic)
    assert pic.acknowledge() == 0x21


def test_pic_higher_priority_nests_over_lower_in_service(pic):
    pic.raise_irq(7)
    assert pic.acknowledge() == 0x27
    pic.raise_irq(3)
    assert pic.pending_vector() == 0x23
    assert pic.acknowledge() == 0x23
    assert read_isr(pic) == 0x88


def test_pic_lowest_numbered_request_wins(pic):
    for irq in (6, 4, 5):
        pic.raise_irq(irq)
    assert [pic.acknowledge() for _ in range(1)] == [0x24]
    pic.io_write(0x20, 1, 0x60 | 4)
    assert pic.acknowledge() == 0x25
    pic.io_write(0x20, 1, 0x60 | 5)
    assert pic.acknowledge() == 0x26


def test_pic_slave_irq_cascades_through_master_line_2(pic):
    pic.raise_irq(14)
    assert read_irr(pic) == 0x04                 # master sees its line 2
    assert read_irr(pic, 0xA0) == 0x40
    assert pic.pending_vector() == 0x2E
    assert pic.acknowledge() == 0x2E
    assert read_isr(pic) == 0x04
    assert read_isr(pic, 0xA0) == 0x40
    assert read_irr(pic) == 0x00 and read_irr(pic, 0xA0) == 0x00
    # EOI to the slave, then to the master, as every PC kernel does.
    eoi(pic, 0xA0)
    assert read_isr(pic, 0xA0) == 0x00 and read_isr(pic) == 0x04
    eoi(pic)
    assert read_isr(pic) == 0x00


def test_pic_cascade_line_stays_asserted_while_slave_has_more(pic):
    pic.raise_irq(8)
    pic.raise_irq(12)
    assert pic.acknowledge() == 0x28
    # The slave still requests line 4, so master IR2 is still requested...
    assert read_irr(pic) == 0x04
    assert read_irr(pic, 0xA0) == 0x10
    # ...but master line 2 is in service, so nothing is delivered yet.
    assert pic.pending_vector() is None
    eoi(pic, 0xA0)
    eoi(pic)
    assert pic.pending_vector() == 0x2C
    assert pic.acknowledge() == 0x2C
    assert read_irr(pic) == 0x00                 # slave empty: cascade line drops


def test_pic_slave_priority_and_master_lines_above_cascade(pic):
    pic.raise_irq(12)
    assert pic.acknowledge() == 0x2C             # master IR2 in service
    pic.raise_irq(1)                             # higher than IR2: nests
    assert pic.acknowledge() == 0x21
    eoi(pic)                                     # ends IRQ 1
    pic.raise_irq(3)                             # lower than IR2: blocked
    assert pic.pending_vector() is None
    eoi(pic, 0xA0)
    eoi(pic)                                     # ends the cascade
    assert pic.acknowledge() == 0x23


def test_pic_slave_mask(pic):
    pic.io_write(0xA1, 1, 0x10)       # mask IRQ 12 at the slave
    assert pic.io_read(0xA1, 1) == 0x10
    pic.raise_irq(12)
    assert pic.pending_vector() is None
    assert pic.acknowledge() is None             # nothing deliverable: no crash
    pic.io_write(0xA1, 1, 0x00)
    assert pic.pending_vector() == 0x2C
    assert pic.acknowledge() == 0x2C


def test_pic_master_mask_of_line_2_blocks_all_slave_irqs(pic):
    pic.io_write(0x21, 1, 0x04)
    pic.raise_irq(9)
    assert pic.pending_vector() is None
    pic.io_write(0x21, 1, 0x00)
    assert pic.acknowledge() == 0x29


# ---------------------------------------------------------------------------
# 8254 PIT, channel 0
# ---------------------------------------------------------------------------

def make_pit():
    clock = VirtualClock()
    irqs = IrqRecorder()
    pit = Pit(clock, irqs)
    clock.deadlines.append(pit)
    return clock, irqs, pit


def program(pit, mode, reload):
    pit.io_write(0x43, 1, 0x30 | (mode << 1))    # channel 0, lobyte/hibyte
    pit.io_write(0x40, 1, reload & 0xFF)
    pit.io_write(0x40, 1, reload >> 8)


def read_count(pit):
    lo = pit.io_read(0x40, 1)
    hi = pit.io_read(0x40, 1)
    return hi << 8 | lo


def test_pit_input_clock():
    assert PIT_HZ == 1_193_182


def test_pit_lobyte_hibyte_reload_and_period():
    clock, irqs, pit = make_pit()
    clock.now_ns = 7000
    pit.io_write(0x43, 1, 0x34)       # channel 0, lobyte/hibyte, mode 2
    pit.io_write(0x40, 1, 0x9C)
    assert pit.next_deadline() is None           # half a reload arms nothing
    pit.io_write(0x40, 1, 0x2E)
    assert pit.reload == 11932 and pit.mode == 2
    assert pit.period_ns() == 11932 * 10**9 // PIT_HZ == 10_000_150
    assert pit.next_deadline() == 7000 + 10_000_150
    assert clock.next_deadline() == 7000 + 10_000_150


def test_pit_reload_zero_means_65536():
    clock, irqs, pit = make_pit()
    program(pit, 2, 0)
    assert pit.period_ns() == 0x10000 * 10**9 // PIT_HZ == 54_925_401
    assert pit.next_deadline() == 54_925_401
    clock.now_ns = 1000
    assert read_count(pit) == (0x10000 - 1) & 0xFFFF


def test_pit_irq0_only_when_clock_passes_deadline():
    clock, irqs, pit = make_pit()
    program(pit, 2, 100)              # 83_809 ns
    period = 100 * 10**9 // PIT_HZ
    assert period == 83_809
    pit.poll()
    assert irqs.raised == []
    clock.now_ns = period - 1
    pit.poll()
    assert irqs.raised == []
    clock.now_ns = period
    pit.poll()
    assert irqs.raised == [0]
    pit.poll()                                   # same instant: nothing new
    assert irqs.raised == [0]
    assert pit.next_deadline() == 2 * period
    clock.now_ns = 2 * period - 1
    pit.poll()
    assert irqs.raised == [0]
    clock.now_ns = 2 * period
    pit.poll()
    assert irqs.raised == [0, 0]
    assert pit.next_deadline() == 3 * period


def test_pit_irq_via_real_pic():
    clock = VirtualClock()
    pic = Pic()
    init_pics(pic)
    pit = Pit(clock, pic)
    program(pit, 3, 1000)
    clock.now_ns = pit.period_ns()
    pit.poll()
    assert pic.pending_vector() == 0x20


def test_pit_missed_periods_collapse_to_one_irq():
    clock, irqs, pit = make_pit()
    program(pit, 2, 1000)
    period = pit.period_ns()
    assert period == 838_095
    clock.now_ns = 5 * period + period // 2      # five and a half periods late
    pit.poll()
    assert irqs.raised == [0]
    pit.poll()
    assert irqs.raised == [0]
    # The schedule stays on the original grid: next tick at 6 periods.
    assert pit.next_deadline() == 6 * period
    clock.now_ns = 6 * period
    pit.poll()
    assert irqs.raised == [0, 0]


def test_pit_idle_jumps_clock_to_deadline():
    clock, irqs, pit = make_pit()
    program(pit, 2, 11932)
    assert clock.idle_until_next() is True
    assert clock.now_ns == 10_000_150
    pit.poll()
    assert irqs.raised == [0]
    assert clock.idle_until_next() is True
    assert clock.now_ns == 20_000_300


def test_pit_live_count_follows_the_virtual_clock():
    clock, irqs, pit = make_pit()
    program(pit, 2, 11932)
    assert read_count(pit) == 11932
    clock.now_ns = 5_000_000                     # 5965.9 input ticks
    assert read_count(pit) == 11932 - 5965
    clock.now_ns = 10_000_150 + 3_000_000        # one period + 3579.5 ticks
    assert read_count(pit) == 11932 - (13_000_150 * PIT_HZ // 10**9 - 11932)


def test_pit_latch_command_reads_a_consistent_count():
    clock, irqs, pit = make_pit()
    program(pit, 2, 0x3000)
    clock.now_ns = 2_500_000                     # 2982 ticks: count 0x3000-2982
    expected = 0x3000 - 2982
    pit.io_write(0x43, 1, 0x00)                  # counter latch, channel 0
    clock.now_ns = 2_600_000                     # counter moves on ...
    lo = pit.io_read(0x40, 1)
    clock.now_ns = 2_900_000
    hi = pit.io_read(0x40, 1)
    assert hi << 8 | lo == expected              # ... the latched value does not
    # After both bytes are read the latch is released: live count again.
    clock.now_ns = 3_000_000
    assert read_count(pit) == 0x3000 - 3_000_000 * PIT_HZ // 10**9


def test_pit_latch_does_not_disturb_the_counter():
    clock, irqs, pit = make_pit()
    program(pit, 2, 1000)
    deadline = pit.next_deadline()
    clock.now_ns = 100_000
    pit.io_write(0x43, 1, 0x00)
    read_count(pit)
    assert pit.next_deadline() == deadline and pit.reload == 1000 and pit.mode == 2


def test_pit_mode0_one_shot():
    clock, irqs, pit = make_pit()
    program(pit, 0, 1000)
    assert pit.mode == 0
    clock.now_ns = pit.period_ns() - 1
    pit.poll()
    assert irqs.raised == []
    clock.now_ns = pit.period_ns()
    pit.poll()
    assert irqs.raised == [0]
    assert pit.next_deadline() is None
    assert clock.next_deadline() is None
    clock.now_ns = 10 * pit.period_ns()
    pit.poll()
    assert irqs.raised == [0]
    assert clock.idle_until_next() is False
    # Writing a new count re-arms the one shot from now.
    pit.io_write(0x40, 1, 0xE8)
    pit.io_write(0x40, 1, 0x03)
    assert pit.next_deadline() == 10 * 838_095 + 838_095


def test_pit_control_word_disarms_until_count_written():
    clock, irqs, pit = make_pit()
    program(pit, 2, 1000)
    pit.io_write(0x43, 1, 0x34)
    assert pit.next_deadline() is None
    clock.now_ns = 10**9
    pit.poll()
    assert irqs.raised == []


def test_pit_other_channels_are_ignored():
    clock, irqs, pit = make_pit()
    program(pit, 2, 1000)
    pit.io_write(0x43, 1, 0xB6)       # channel 2 (the speaker), mode 3
    assert pit.mode == 2 and pit.next_deadline() == 838_095


def test_pit_lobyte_only_access_zeroes_the_high_byte():
    """RW=01: the count is the one byte written; the MSB is 0 (8254 datasheet;
    QEMU/KVM pit_load_count(s, val))."""
    clock, irqs, pit = make_pit()
    program(pit, 2, 0x1234)
    pit.io_write(0x43, 1, 0x14)       # channel 0, lobyte only, mode 2
    pit.io_write(0x40, 1, 0x80)
    assert pit.reload == 0x0080
    assert pit.next_deadline() == 0x80 * 10**9 // PIT_HZ


def test_pit_hibyte_only_access_zeroes_the_low_byte():
    clock, irqs, pit = make_pit()
    program(pit, 2, 0x1234)
    pit.io_write(0x43, 1, 0x24)       # channel 0, hibyte only, mode 2
    pit.io_write(0x40, 1, 0x02)
    assert pit.reload == 0x0200


# ---------------------------------------------------------------------------
# IDE disk (PIO)
# ---------------------------------------------------------------------------

def make_disk(sectors=64):
    irqs = IrqRecorder()
    # Sector s holds bytes (7s + i) mod 256: a window of a repeated 0..255.
    ramp = bytes(range(256)) * (SECTOR // 256 + 1)
    image = bytearray(b"".join(ramp[s * 7 & 0xFF:(s * 7 & 0xFF) + SECTOR] for s in range(sectors)))
    return irqs, IdeDisk(irqs, image)


def setup_lba(d, lba, count):
    d.io_write(0x1F6, 1, 0xE0 | (lba >> 24) & 0x0F)
    d.io_write(0x1F2, 1, count)
    d.io_write(0x1F3, 1, lba & 0xFF)
    d.io_write(0x1F4, 1, (lba >> 8) & 0xFF)
    d.io_write(0x1F5, 1, (lba >> 16) & 0xFF)


def read_words(d, n):
    return [d.io_read(0x1F0, 2) for _ in range(n)]


def status(d):
    return d.io_read(0x1F7, 1)


def test_ide_status_bits():
    assert (ide_mod.BSY, ide_mod.DRDY, ide_mod.DRQ, ide_mod.ERR) == (0x80, 0x40, 0x08, 0x01)


def test_ide_idle_status():
    irqs, d = make_disk()
    s = status(d)
    assert s & 0x80 == 0 and s & 0x40 and s & 0x08 == 0 and s & 0x01 == 0
    assert d.io_read(0x3F6, 1) == s              # alternate status


def test_ide_identify():
    irqs, d = make_disk(sectors=0x12345)
    d.io_write(0x1F6, 1, 0xA0)
    d.io_write(0x1F7, 1, 0xEC)
    s = status(d)
    assert s & 0x80 == 0 and s & 0x08 and s & 0x01 == 0
    assert irqs.raised == [14]
    words = read_words(d, 256)
    assert words[0] == 0x0040
    assert words[49] & (1 << 9)
    assert words[60] == 0x2345 and words[61] == 0x0001
    model = b"".join(struct.pack(">H", w) for w in words[27:47])
    assert model == b"VIRTLAB DISK".ljust(40)
    assert status(d) & 0x08 == 0                 # all 512 bytes taken: DRQ drops
    assert status(d) & 0x40
    assert irqs.raised == [14]


def test_ide_read_several_sectors_through_16bit_port():
    irqs, d = make_disk()
    setup_lba(d, 5, 3)
    d.io_write(0x1F7, 1, 0x20)
    data = bytearray()
    for n in range(3):
        s = status(d)
        assert s & 0x80 == 0 and s & 0x08 and s & 0x01 == 0, hex(s)
        assert irqs.raised == [14] * (n + 1)     # one IRQ per sector made ready
        for w in read_words(d, 256):
            data += struct.pack("<H", w)
    assert bytes(data) == bytes(d.image[5 * SECTOR:8 * SECTOR])
    s = status(d)
    assert s & 0x08 == 0 and s & 0x80 == 0 and s & 0x01 == 0 and s & 0x40
    assert irqs.raised == [14] * 3


def test_ide_read_lba_uses_all_28_bits():
    sectors = 0x10210
    irqs = IrqRecorder()
    image = bytearray(sectors * SECTOR)
    lba = 0x10203
    image[lba * SECTOR:lba * SECTOR + 4] = b"\xde\xad\xbe\xef"
    d = IdeDisk(irqs, image)
    setup_lba(d, lba, 1)
    d.io_write(0x1F7, 1, 0x20)
    assert read_words(d, 2) == [0xADDE, 0xEFBE]
    # Bits 24-27 come from the drive/head register: LBA 0x1000000 is off this disk.
    setup_lba(d, 0x1000000, 1)
    d.io_write(0x1F7, 1, 0x20)
    assert status(d) & 0x01


def test_ide_count_zero_means_256_sectors():
    irqs, d = make_disk(sectors=300)
    setup_lba(d, 10, 0)
    d.io_write(0x1F7, 1, 0x20)
    for _ in range(256):
        assert status(d) & 0x08
        read_words(d, 256)
    assert status(d) & 0x08 == 0
    assert len(irqs.raised) == 256


def test_ide_write_several_sectors():
    irqs, d = make_disk()
    before = bytes(d.image)
    setup_lba(d, 7, 2)
    d.io_write(0x1F7, 1, 0x30)
    payload = bytes((i * 13 + 1) & 0xFF for i in range(2 * SECTOR))
    s = status(d)
    assert s & 0x08 and s & 0x80 == 0 and s & 0x01 == 0
    assert irqs.raised == []                      # no IRQ before the first sector
    for i in range(0, SECTOR, 2):
        d.io_write(0x1F0, 2, struct.unpack_from("<H", payload, i)[0])
    assert irqs.raised == [14]
    assert status(d) & 0x08                       # ready for the second sector
    assert bytes(d.image[7 * SECTOR:8 * SECTOR]) == payload[:SECTOR]
    for i in range(SECTOR, 2 * SECTOR, 2):
        d.io_write(0x1F0, 2, struct.unpack_from("<H", payload, i)[0])
    assert irqs.raised == [14, 14]
    s = status(d)
    assert s & 0x08 == 0 and s & 0x01 == 0 and s & 0x40
    assert bytes(d.image[7 * SECTOR:9 * SECTOR]) == payload
    # Nothing outside the two sectors changed.
    assert bytes(d.image[:7 * SECTOR]) == before[:7 * SECTOR]
    assert bytes(d.image[9 * SECTOR:]) == before[9 * SECTOR:]
    # And reading them back gives the data written.
    setup_lba(d, 7, 2)
    d.io_write(0x1F7, 1, 0x20)
    back = b"".join(struct.pack("<H", w) for w in read_words(d, 512))
    assert back == payload


def test_ide_out_of_range_lba_sets_err():
    irqs, d = make_disk(sectors=64)
    setup_lba(d, 63, 2)                            # the second sector is past the end
    d.io_write(0x1F7, 1, 0x20)
    s = status(d)
    assert s & 0x01 and s & 0x08 == 0 and s & 0x80 == 0
    assert d.io_read(0x1F1, 1) == 0x04            # ABRT
    assert d.io_read(0x1F0, 2) == 0               # no data phase
    setup_lba(d, 64, 1)
    d.io_write(0x1F7, 1, 0x30)
    assert status(d) & 0x01 and status(d) & 0x08 == 0
    # The last sector itself is fine, and a good command clears ERR.
    setup_lba(d, 63, 1)
    d.io_write(0x1F7, 1, 0x20)
    s = status(d)
    assert s & 0x01 == 0 and s & 0x08
    assert d.io_read(0x1F1, 1) == 0


def test_ide_unknown_command_aborts():
    irqs, d = make_disk()
    d.io_write(0x1F7, 1, 0x99)
    assert status(d) & 0x01 and d.io_read(0x1F1, 1) == 0x04


def test_ide_nien_suppresses_irq14():
    irqs, d = make_disk()
    d.io_write(0x3F6, 1, 0x02)                     # nIEN
    setup_lba(d, 0, 2)
    d.io_write(0x1F7, 1, 0x20)
    read_words(d, 512)
    setup_lba(d, 2, 1)
    d.io_write(0x1F7, 1, 0x30)
    for _ in range(256):
        d.io_write(0x1F0, 2, 0xA5A5)
    assert irqs.raised == []
    assert bytes(d.image[2 * SECTOR:3 * SECTOR]) == b"\xa5" * SECTOR
    d.io_write(0x3F6, 1, 0x00)                     # interrupts back on
    setup_lba(d, 0, 1)
    d.io_write(0x1F7, 1, 0x20)
    assert irqs.raised == [14]


def test_ide_registers_read_back():
    irqs, d = make_disk()
    setup_lba(d, 0x0ABCDEF, 9)
    assert d.io_read(0x1F2, 1) == 9
    assert d.io_read(0x1F3, 1) == 0xEF
    assert d.io_read(0x1F4, 1) == 0xCD
    assert d.io_read(0x1F5, 1) == 0xAB
    assert d.io_read(0x1F6, 1) == 0xE0


# ---------------------------------------------------------------------------
# 16550 UART
# ---------------------------------------------------------------------------

def test_uart_thr_bytes_become_output():
    u = Uart()
    for b in b"ok\n\xff":
        u.io_write(0x3F8, 1, b)
    assert bytes(u.output) == b"ok\n\xff"
    assert u.text() == "ok\n\xff"
    u.io_write(0x3F8, 1, 0x141)                    # only the low byte is a character
    assert bytes(u.output)[-1:] == b"A"


def test_uart_lsr_reports_transmitter_empty():
    u = Uart()
    assert u.io_read(0x3FD, 1) == 0x60
    u.io_write(0x3F8, 1, ord("x"))
    assert u.io_read(0x3FD, 1) == 0x60


def test_uart_rbr_reads_nothing_typed():
    u = Uart()
    u.io_write(0x3F8, 1, ord("x"))
    assert u.io_read(0x3F8, 1) == 0


def test_uart_dlab_divisor_latch_produces_no_output():
    u = Uart()
    u.io_write(0x3F9, 1, 0x00)                     # IER off
    u.io_write(0x3FB, 1, 0x80)                     # DLAB on
    u.io_write(0x3F8, 1, 0x03)                     # DLL: 38400 baud
    u.io_write(0x3F9, 1, 0x00)                     # DLM
    assert bytes(u.output) == b""
    assert u.io_read(0x3F8, 1) == 0x03
    assert u.io_read(0x3F9, 1) == 0x00
    u.io_write(0x3FB, 1, 0x03)                     # 8N1, DLAB off
    assert u.io_read(0x3FB, 1) == 0x03
    u.io_write(0x3F8, 1, ord("Z"))
    assert bytes(u.output) == b"Z"


def test_uart_divisor_latch_is_separate_from_ier():
    """DLM (DLAB=1) and IER (DLAB=0) share offset 1 but are different registers."""
    u = Uart()
    u.io_write(0x3FB, 1, 0x80)
    u.io_write(0x3F8, 1, 0x80)                     # divisor 0x0180 (300 baud)
    u.io_write(0x3F9, 1, 0x01)
    u.io_write(0x3FB, 1, 0x03)
    u.io_write(0x3F9, 1, 0x00)                     # IER = 0
    assert u.io_read(0x3F9, 1) == 0x00
    u.io_write(0x3FB, 1, 0x83)
    assert u.io_read(0x3F8, 1) == 0x80
    assert u.io_read(0x3F9, 1) == 0x01             # the divisor survives


def test_uart_plain_registers_read_back():
    u = Uart()
    u.io_write(0x3FC, 1, 0x0B)                     # MCR
    u.io_write(0x3FF, 1, 0x5A)                     # scratch
    assert u.io_read(0x3FC, 1) == 0x0B
    assert u.io_read(0x3FF, 1) == 0x5A
    assert bytes(u.output) == b""


def test_uart_output_limit():
    u = Uart(limit=4)
    for b in b"abcdefgh":
        u.io_write(0x3F8, 1, b)
    assert bytes(u.output) == b"abcd"
    assert u.io_read(0x3FD, 1) == 0x60             # the wire still never backs up


def test_uart_default_limit_is_one_mib():
    assert Uart().limit == 1 << 20


# ---------------------------------------------------------------------------
# Platform ports
# ---------------------------------------------------------------------------

def make_platform():
    calls = []
    p = Platform(on_exit=lambda v: calls.append(("exit", v)),
                 on_roi=lambda b: calls.append(("roi", b)))
    return calls, p


def test_platform_exit_with_value():
    calls, p = make_platform()
    p.io_write(0x500, 4, 0xDEADBEEF)
    assert calls == [("exit", 0xDEADBEEF)]
    calls2, p2 = make_platform()
    p2.io_write(0x500, 1, 7)
    assert calls2 == [("exit", 7)]


def test_platform_roi_and_iterations():
    calls, p = make_platform()
    p.io_write(0x501, 1, 0)
    for _ in range(3):
        p.io_write(0x503, 2, 123)
    p.io_write(0x502, 4, 0)
    assert calls == [("roi", True), ("roi", False)]
    assert p.iterations == 3


def test_platform_other_ports_do_nothing():
    calls, p = make_platform()
    for port in range(0x504, 0x510):
        p.io_write(port, 1, 0xFF)
        assert p.io_read(port, 1) == 0
    assert calls == [] and p.iterations == 0
    assert p.io_read(0x500, 4) == 0
    assert p.is_platform(0x500) and p.is_platform(0x50F)
    assert not p.is_platform(0x4FF) and not p.is_platform(0x510)


# ---------------------------------------------------------------------------
# Virtual clock
# ---------------------------------------------------------------------------

class Deadline:
    def __init__(self, t):
        self.t = t

    def next_deadline(self):
        return self.t


def test_clock_tick():
    c = VirtualClock()
    assert c.now_ns == 0 and EVENT_NS == 1000
    c.tick()
    assert c.now_ns == 1000
    c.tick(5)
    assert c.now_ns == 6000


def test_clock_idle_until_earliest_deadline():
    c = VirtualClock()
    c.deadlines += [Deadline(None), Deadline(9_000_000), Deadline(3_000_000)]
    assert c.next_deadline() == 3_000_000
    assert c.idle_until_next() is True
    assert c.now_ns == 3_000_000


def test_clock_never_goes_backwards():
    c = VirtualClock(now_ns=5_000_000)
    c.deadlines.append(Deadline(2_000_000))
    assert c.idle_until_next() is True
    assert c.now_ns == 5_000_000


def test_clock_idle_false_when_nothing_armed():
    c = VirtualClock(now_ns=42)
    assert c.next_deadline() is None
    assert c.idle_until_next() is False
    c.deadlines.append(Deadline(None))
    assert c.idle_until_next() is False
    assert c.now_ns == 42


# ---------------------------------------------------------------------------
# Port bus
# ---------------------------------------------------------------------------

def test_bus_unattached_ports_read_all_ones():
    bus = PortBus()
    assert bus.read(0x80, 1) == 0xFF
    assert bus.read(0x80, 2) == 0xFFFF
    assert bus.read(0x80, 4) == 0xFFFFFFFF
    bus.write(0x80, 1, 0x12)                        # goes nowhere, no error


def test_bus_routes_to_attached_devices():
    bus = PortBus()
    u = Uart()
    p = Pic()
    bus.attach(u, u.ports)
    bus.attach(p, p.ports)
    bus.write(0x3F8, 1, ord("q"))
    assert bytes(u.output) == b"q"
    assert bus.read(0x3FD, 1) == 0x60
    bus.write(0x21, 1, 0xAB)
    assert bus.read(0x21, 1) == 0xAB
    assert bus.read(0x3F7, 1) == 0xFF               # the floppy's port: nobody home
    assert bus.read(0x400, 1) == 0xFF
