"""Stand-ins for the machine's state area in unit tests of the emulator: the
registers, EFLAGS, segment selectors and bases, EIP and CPL, as plain data."""


class FakeState:
    def __init__(self, eip=0x100000, cpl=0, eflags=0x2, segs=None, bases=None, **regs):
        self.regs = {r: 0 for r in ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")}
        self.regs.update(regs)
        self.segs = dict(segs or {})
        self.bases = dict.fromkeys(self.segs, 0)
        self.bases.update(bases or {})
        self.eip = eip
        self.cpl = cpl
        self.flags = eflags

    def reg(self, name):
        return self.regs[name]

    def set_reg(self, name, value):
        self.regs[name] = value & 0xFFFFFFFF

    def eflags(self):
        return self.flags

    def set_eflags(self, value):
        self.flags = value

    def seg_selector(self, name):
        return self.segs.get(name, 0)

    def seg_base_of(self, name):
        return self.bases.get(name, 0)
