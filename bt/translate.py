"""The translator: guest kernel code into translation units.

A translation unit is a guest basic block: it ends at the first control
transfer, after 12 instructions, or at the end of the guest page (so that a
unit depends on one guest frame, two only for an instruction that straddles
a page boundary).  capstone decodes the guest bytes; each instruction is then
one of

  IDENT     copied byte for byte (docs/unicorn.md, item 16): most of them, and
            port I/O, which reaches the VMM by itself on this CPU through its
            port hook (docs/unicorn.md, item 5);
  in-TC     a short sequence on the vCPU page instead (cli, sti, pushf, popf);
  callout   `int CALLOUT`: the VMM performs it (privileged and sensitive
            instructions, iret, int n, far transfers, hlt, rdtsc, and stores
            that adaptive translation found to hit page tables);
  branch    a direct jump, call or conditional branch: its targets become exit
            stubs, callouts at first, patched into direct jumps (chaining);
  indirect  ret, indirect jmp and call: a lookup in the indirect-branch table.

The translation never shows through: a call pushes the guest's return
address, never a TC address, so `call $+5; pop` yields the guest EIP and
every return goes through the table; data accesses still address guest memory,
so code that reads its own bytes reads the originals.
"""
import struct
from dataclasses import dataclass, field

from capstone import Cs, CS_ARCH_X86, CS_MODE_32

from virtlab.decode import INVALID, MAX_INSN, NEEDS_MORE, cpu_length, opcode_of, prefixes_of
from virtlab.lost_flags import lost_kind

from . import templates as T

MAX_INSNS = 12
MAX_UNIT_BYTES = 2048          # room the cache reserves for one unit

IDENT, IN_TC, CALLOUT, BRANCH, INDIRECT = "ident", "in-TC", "callout", "branch", "indirect"


@dataclass(eq=False)
class Site:
    """One guest instruction and what stands for it in the TC."""
    guest: int
    size: int
    text: str
    kind: str
    reason: str
    tc: int = 0                 # its first TC byte (where its execution begins)
    tc_end: int = 0
    faults: dict = field(default_factory=dict)     # TC address -> parked registers


@dataclass(eq=False)
class Exit:
    """A way out of a unit to a known guest address: a callout until chained."""
    at: int                     # TC address of the 5-byte stub
    target: int                 # guest EIP it leads to
    chained_to: object = None   # the Unit it jumps to once patched


@dataclass(eq=False)
class Callout:
    """A callout site: the CPU stops just past its `int` (`resume`)."""
    resume: int
    kind: str                   # what the VMM does (callouts.py)
    site: Site
    exit: Exit = None           # for kind "chain"
    unit: object = None         # the Unit it lies in (set when installed)
    decoded: object = None      # its guest instruction, decoded at first use (callouts.py)


@dataclass(eq=False)
class Unit:
    guest: int                  # guest EIP of its first instruction
    guest_end: int
    tc: int
    code: bytes
    sites: list
    exits: list
    callouts: list
    frames: tuple               # guest frames its bytes came from
    transient: bool = False     # a one-off unit, never looked up again
    dead: bool = False
    incoming: list = field(default_factory=list)  # Exits chained to this unit
    profile_slot: int = None

    @property
    def tc_end(self):
        return self.tc + len(self.code)


_CS = Cs(CS_ARCH_X86, CS_MODE_32)

# One-byte opcodes by what the translator does with them.
_JCC8 = range(0x70, 0x80)
_CMC_CMC = b"\xf5\xf5"                      # cmc; cmc: the flags made concrete, unchanged
_LOOPS = (0xE0, 0xE1, 0xE2, 0xE3)            # loopne, loope, loop, jecxz
_PORTS = (0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F)
# push cs and push ss show the real RPL (1); the data segment registers hold
# the guest's own selectors (Bt._load_segment), so pushing them is innocuous.
_SEG_PUSH = (b"\x0e", b"\x16")
# Callouts that end the unit: the VMM decides where execution goes next.
# (icebp, F1, is the guest's #UD: the CPU model has no INT1, natively too.)
_TRANSFER_CALLOUTS = {b"\xcf": "iret", b"\xcb": "retf", b"\xca": "retf", b"\xcd": "int",
                      b"\xcc": "int", b"\xce": "int", b"\xf1": "ud", b"\xea": "far",
                      b"\x9a": "far", b"\xf4": "emulate", b"\x0f\x35": "emulate",
                      b"\x0f\x34": "sysenter", b"\x0f\x0b": "ud"}
# Privileged or sensitive two-byte opcodes: 0F 00 (sldt str lldt ltr verr
# verw), 0F 01 (sgdt sidt lgdt lidt smsw lmsw invlpg), lar, lsl, clts, invd,
# wbinvd, moves to and from control and debug registers, wrmsr, rdmsr.  (rdpmc
# is copied: the CPU model has no performance counters and raises #UD for it,
# at any ring, as it does natively.)
_EMULATED_0F = {b"\x0f\x00", b"\x0f\x01", b"\x0f\x02", b"\x0f\x03", b"\x0f\x06",
                b"\x0f\x08", b"\x0f\x09", b"\x0f\x20", b"\x0f\x21", b"\x0f\x22",
                b"\x0f\x23", b"\x0f\x30", b"\x0f\x32"}


class Insn:
    """One decoded guest instruction: what the translator needs of it, taken
    from its raw bytes once (capstone's own objects are slow to query)."""
    __slots__ = ("address", "size", "raw", "text", "op", "modrm", "wide", "cls")

    def __init__(self, address, size, mnemonic, op_str, raw):
        self.address, self.size, self.raw = address, size, raw
        self.text = f"{mnemonic} {op_str}".strip()
        self.op, self.modrm = opcode_of(raw)
        self.wide = 0x66 not in raw[:raw.index(self.op)]


# [tour bt 50] What becomes of each guest instruction.
# IDENT: copied unchanged (most of them).  IN_TC: cli, sti, pushf, popf and mov from
# cs/ss rewritten into short sequences on the vCPU page.  BRANCH and INDIRECT: control
# flow kept inside the cache.  CALLOUT: what only the VMM can do (privileged and
# sensitive instructions, int, iret, far transfers).
def classify(insn, guilty=False):
    """(kind, reason, callout kind or None) for one decoded guest instruction."""
    op, modrm, wide = insn.op, insn.modrm, insn.wide
    b0 = op[0]
    if op in _TRANSFER_CALLOUTS:
        return CALLOUT, _REASONS.get(op, "performed by the VMM"), _TRANSFER_CALLOUTS[op]
    if b0 in (0xFA, 0xFB) or (b0 in (0x9C, 0x9D) and wide):
        return IN_TC, "on the virtual IF in the vCPU page, no exit", None
    if b0 in (0x9C, 0x9D):
        return CALLOUT, "16-bit pushf/popf: the VMM gives the virtual IF", "flags16"
    if op == b"\x17":
        return CALLOUT, "pop ss: the kernel's RPL-0 selector, loaded by the VMM", "pop_ss"
    if op == b"\x0f\xb2":
        return CALLOUT, "lss: the kernel's RPL-0 selector, loaded by the VMM", "lss"
    sreg = (modrm >> 3) & 7 if modrm is not None else None
    if b0 == 0x8C and sreg in (1, 2) and modrm >> 6 == 3 and modrm & 7 != 4:
        return IN_TC, "mov from cs/ss: the real RPL (1) taken off in the TC", None
    if op == b"\x0f\x01" and modrm == 0xD0:
        return IDENT, "xgetbv: reads XCR0, at any ring", None
    if op == b"\x0f\x01" and modrm == 0xF9:
        return CALLOUT, "rdtscp: the virtual time-stamp counter and TSC_AUX", "rdtsc"
    if op == b"\x0f\xc7" and sreg in (6, 7) and modrm >> 6 == 3 and not _rep_prefixed(insn):
        return CALLOUT, "rdrand, rdseed: the machine's deterministic numbers", "rdrand"
    if op in _EMULATED_0F or op in _SEG_PUSH or (b0 in (0x8C, 0x8E) and sreg in (1, 2)):
        return CALLOUT, "privileged or sensitive: the VMM gives the virtual answer", "emulate"
    if op == b"\x0f\x31":
        return CALLOUT, "rdtsc: the virtual time-stamp counter", "rdtsc"
    if b0 in _PORTS:
        return IDENT, "port I/O: the CPU enters the VMM through its port hook", None
    if not wide and _is_near_branch(op, b0, modrm):
        return CALLOUT, "16-bit near branch (EIP truncated to 16 bits): not supported", "o16"
    if b0 in (0xEB, 0xE9) or b0 in _JCC8 or (len(op) == 2 and 0x80 <= op[1] <= 0x8F and b0 == 0x0F) \
            or b0 in _LOOPS:
        return BRANCH, "direct branch: exits chained to the target's translation", None
    if b0 == 0xE8:
        return BRANCH, "call: pushes the guest return address, chained to the callee", None
    if b0 in (0xC3, 0xC2):
        return INDIRECT, "ret: target looked up in the indirect-branch table", None
    if b0 == 0xFF and modrm is not None and (modrm >> 3) & 7 in (2, 4):
        return INDIRECT, "indirect branch: target looked up in the table", None
    if b0 == 0xFF and modrm is not None and (modrm >> 3) & 7 in (3, 5):
        return CALLOUT, "far transfer: performed by the VMM", "far"
    if guilty:
        return CALLOUT, "adaptive: this store kept hitting traced page tables", "ptwrite"
    return IDENT, "innocuous: copied unchanged", None


def _is_near_branch(op, b0, modrm):
    """jmp, jcc, loop, call or ret, direct or through a register or memory:
    the branches whose templates assume a 32-bit operand size.  (With an
    operand-size prefix each truncates EIP to 16 bits and moves 2 bytes of
    stack: code that 32-bit kernels do not contain, and that bt refuses at
    run time rather than translate as if it were 32-bit.)"""
    return (b0 in (0xEB, 0xE9, 0xE8, 0xC3, 0xC2) or b0 in _JCC8 or b0 in _LOOPS
            or (b0 == 0x0F and len(op) == 2 and 0x80 <= op[1] <= 0x8F)
            or (b0 == 0xFF and modrm is not None and (modrm >> 3) & 7 in (2, 4)))


def _rep_prefixed(insn):
    """F2 or F3 among the prefixes: with them 0F C7 /7 is rdpid, not rdseed
    (a CPU without it raises #UD, and so must the copy)."""
    prefixes = prefixes_of(insn.raw)
    return 0xF2 in prefixes or 0xF3 in prefixes


_REASONS = {b"\xcf": "iret: the VMM checks the frame (returns into the kernel are emulated)",
            b"\xcd": "int n: reflected through the guest IDT by the VMM",
            b"\xf4": "hlt: the virtual CPU sleeps until an interrupt"}


class Translator:
    def __init__(self, guilty=()):
        self.guilty = guilty          # guest EIPs retranslated as ptwrite callouts

    def decode(self, read, geip):
        """Up to MAX_INSNS instructions from `geip`, not past the page end
        except for a first instruction that straddles it.  `read(linear, n)`
        raises GuestMemoryFault if the guest cannot fetch there."""
        page_left = 0x1000 - (geip & 0xFFF)
        code = read(geip, min(page_left, MAX_INSNS * 15))
        insns = []
        # (A count for capstone: without one it decodes the whole buffer.)
        for address, size, mnemonic, op_str in _CS.disasm_lite(code, geip, MAX_INSNS):
            off = address - geip
            insn = Insn(address, size, mnemonic, op_str, code[off:off + size])
            insn.cls = classify(insn, address in self.guilty)
            insns.append(insn)
            if _ends_unit(insn):
                break
        if not insns:
            insns = self._first_undecoded(read, geip, code[:15], page_left)
        return insns

    def _first_undecoded(self, read, geip, code, page_left):
        """capstone decodes nothing at `geip` within the page.  The CPU model
        says what the bytes are (decode.cpu_length): an instruction it raises
        #UD for, one that runs on into the next page, whose fetch fault (if
        it has one) is the guest's, or one capstone does not know (a hint
        NOP, an x87 alias), classified by its opcode bytes like any other (so
        copied, for those).  The model raises #UD for some opcodes only after
        the memory access their ModRM names (FF /7), whose fault then comes
        first: such bytes are copied whole, up to an instruction's longest,
        so that the model decides, and nothing after them runs.  Only bytes
        that end within a page's last 15 get the #UD callout ([])."""
        n = cpu_length(code, complete=page_left >= 15)
        if n == NEEDS_MORE:
            code = read(geip, 15)
            first = next(_CS.disasm_lite(code, geip, 1), None)
            if first is not None:
                insn = Insn(*first, code[:first[1]])
                insn.cls = classify(insn, geip in self.guilty)
                return [insn]
            n = cpu_length(code)
        if n == INVALID:
            if page_left < MAX_INSN:
                return []
            insn = Insn(geip, MAX_INSN, ".byte", ", ".join(f"{b:#04x}" for b in code), code)
            insn.cls = (IDENT, "the CPU model raises #UD for it, after any access its "
                               "operand makes: copied, for the model to decide", None)
            return [insn]
        insn = Insn(geip, n, ".byte", ", ".join(f"{b:#04x}" for b in code[:n]), code[:n])
        insn.cls = classify(insn, geip in self.guilty)       # (by its opcode bytes)
        if insn.cls[0] == IDENT:
            insn.cls = (IDENT, "not known to capstone: copied, as the CPU model runs it", None)
        return [insn]

    # [tour bt 60] The translator: guest bytes in, translated code out.
    # capstone decodes the unit; each instruction is emitted by its kind; a unit that
    # does not end in a control transfer ends in an exit to the next guest address.
    # Each site records which TC bytes stand for which guest instruction, for precise
    # exceptions later.
    def translate(self, read, geip, at, profile_slot=None, limit=MAX_INSNS):
        insns = self.decode(read, geip)[:limit]
        out = _Emitter(at)
        if profile_slot is not None:
            out.raw(T.get("profile").emit(imm=profile_slot))
        if not insns:                       # undecodable: #UD at this instruction
            site = Site(geip, 0, "(undecodable)", CALLOUT, "invalid opcode: #UD", out.here)
            out.callout_site(site, "ud")
            insns_end = geip
        else:
            for insn in insns:
                self._one(out, insn)
            last = insns[-1]
            insns_end = last.address + last.size
            if not _ends_unit(last):
                out.exit_to(insns_end)
        return Unit(geip, insns_end, at, bytes(out.code), out.sites, out.exits,
                    out.callouts, (), profile_slot=profile_slot)

    def _one(self, out, insn):
        kind, reason, callout = insn.cls
        site = Site(insn.address, insn.size, insn.text, kind, reason, out.here)
        out.sites.append(site)
        nxt = insn.address + insn.size
        if kind == IDENT:
            if lost_kind(insn.raw) is not None:
                # An rcl, rcr or setcc of memory: were its access to fault,
                # the CPU model would lose the flags it computed before it
                # (virtlab/lost_flags.py).  cmc twice computes them first.
                out.raw(_CMC_CMC)
            site.faults[out.here] = ()
            out.raw(insn.raw)
        elif kind == CALLOUT:
            site.faults[out.here] = ()
            out.callout(site, callout)
            if callout in ("iret", "retf"):
                # Performed by the CPU when it leaves the kernel, and so where
                # a frame the CPU refuses (a bad or absent CS or SS) faults:
                # the guest's fault at its iret, like the callout's own.
                site.faults[out.here] = ()
                out.raw(insn.raw)
        elif kind == IN_TC and insn.op == b"\x8c":
            out.raw(T.movseg(insn.raw, insn.modrm & 7, insn.wide))
            out.template(site, "count_movseg")
        elif kind == IN_TC:
            out.template(site, {0xFA: "cli", 0xFB: "sti", 0x9C: "pushf", 0x9D: "popf"}[insn.op[0]],
                         irq=True)
        elif kind == BRANCH:
            self._branch(out, site, insn, nxt)
        else:
            self._indirect(out, site, insn, nxt)
        site.tc_end = out.here

    def _branch(self, out, site, insn, nxt):
        op = insn.op
        b0 = op[0]
        target = _branch_target(insn)
        if b0 == 0xE8:
            site.faults[out.here] = ()
            out.raw(T.push_imm32(nxt))
            out.exit_to(target)
        elif b0 in (0xEB, 0xE9):
            out.exit_to(target)
        elif b0 in _LOOPS:
            # [loop +2][jmp +5][exit: taken][exit: fall through]
            prefixes = insn.raw[:-2]
            out.raw(prefixes + bytes((b0, 2)) + b"\xeb\x05")
            out.exit_to(target)
            out.exit_to(nxt)
        else:
            cc = (b0 - 0x70) if b0 != 0x0F else op[1] - 0x80
            # [jcc rel32 -> taken][exit: fall through][exit: taken]
            out.raw(bytes((0x0F, 0x80 + cc)) + struct.pack("<i", T.STUB_SIZE))
            out.exit_to(nxt)
            out.exit_to(target)

    # [tour bt 110] Indirect control flow: a lookup in the cache's own table.
    # ret and indirect jmp/call cannot be chained: their target is known only at run
    # time.  The translation looks the target up inline in a table that maps guest
    # EIPs to TC addresses (bt.indirect.hit, no exit); a miss calls out.
    def _indirect(self, out, site, insn, nxt):
        op, modrm = insn.op, insn.modrm
        if op[0] in (0xC3, 0xC2):
            imm = 4 + (struct.unpack_from("<H", insn.raw, insn.size - 2)[0]
                       if op[0] == 0xC2 else 0)
            out.template(site, "ret", imm=imm)
        else:
            out.template(site, "park")
            site.faults[out.here] = ()
            out.raw(_load_eax(insn))
            if (modrm >> 3) & 7 == 2:
                out.template(site, "push_ret", ret=nxt)
        out.template(site, "lookup", kind="miss")


def _ends_unit(insn):
    kind, _, callout = insn.cls
    if kind in (BRANCH, INDIRECT):
        return True
    return kind == CALLOUT and callout not in ("emulate", "rdtsc", "rdrand", "ptwrite",
                                               "flags16", "pop_ss", "lss") \
        or insn.op in (b"\xf4", b"\x0f\x35")


def _branch_target(insn):
    """The target of a relative branch, from its last 1 or 4 bytes."""
    raw, op = insn.raw, insn.op
    if op[0] in (0xE9, 0xE8) or (op[0] == 0x0F):
        rel = struct.unpack_from("<i", raw, len(raw) - 4)[0]
    else:
        rel = struct.unpack_from("<b", raw, len(raw) - 1)[0]
    return (insn.address + insn.size + rel) & 0xFFFFFFFF


def _load_eax(insn):
    """`mov eax, r/m32` with the guest's own operand: FF /2 or FF /4 becomes
    8B /0, prefixes (a segment override), SIB and displacement kept."""
    raw = insn.raw
    i = raw.index(0xFF)
    return raw[:i] + b"\x8b" + bytes((raw[i + 1] & 0xC7,)) + raw[i + 2:]


class _Emitter:
    def __init__(self, at):
        self.at = at
        self.code = bytearray()
        self.sites, self.exits, self.callouts = [], [], []

    @property
    def here(self):
        return self.at + len(self.code)

    def raw(self, data):
        self.code += data

    def template(self, site, name, irq=False, kind="irq", **values):
        t = T.get(name)
        base = self.here
        for off, regs in t.faults.items():
            site.faults[base + off] = regs
        for off in t.callouts:
            self.callouts.append(Callout(base + off, kind, site))
        self.raw(t.emit(**values))

    def callout(self, site, kind):
        self.raw(T.callout())
        self.callouts.append(Callout(self.here, kind, site))

    def callout_site(self, site, kind):
        self.sites.append(site)
        site.faults[self.here] = ()
        self.callout(site, kind)
        site.tc_end = self.here

    def exit_to(self, target):
        ex = Exit(self.here, target)
        self.exits.append(ex)
        self.raw(T.exit_stub())
        self.callouts.append(Callout(ex.at + 2, "chain", self.sites[-1] if self.sites else None, ex))
