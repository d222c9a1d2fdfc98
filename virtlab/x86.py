"""IA-32 architectural constants and descriptor formats.

Everything here is fixed by the Intel SDM (volume 3, chapters 3-6); nothing is
specific to Unicorn.  Kept in one place so that every back end names the same
bits the same way.
"""
import struct

# EFLAGS bits (SDM vol. 1, 3.4.3)
CF, PF_FLAG, AF, ZF, SF = 1 << 0, 1 << 2, 1 << 4, 1 << 6, 1 << 7
TF, IF, DF, OF = 1 << 8, 1 << 9, 1 << 10, 1 << 11
DR6_BS = 1 << 14          # DR6: the #DB was a single-step trap
IOPL_MASK, IOPL_SHIFT = 3 << 12, 12
NT, RF, VM, AC = 1 << 14, 1 << 16, 1 << 17, 1 << 18

# CR0 / CR4 bits
CR0_PE, CR0_MP, CR0_EM, CR0_TS = 1 << 0, 1 << 1, 1 << 2, 1 << 3
CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1 << 4, 1 << 5, 1 << 16, 1 << 31
CR0_AM = 1 << 18
CR4_PSE, CR4_PGE, CR4_TSD, CR4_DE = 1 << 4, 1 << 7, 1 << 2, 1 << 3
CR4_PCE, CR4_OSFXSR, CR4_OSXMMEXCPT, CR4_OSXSAVE = 1 << 8, 1 << 9, 1 << 10, 1 << 18
CR4_PAE = 1 << 5
# XCR0's state components: x87 must always be enabled.  The CPU model's xsetbv
# accepts x87, SSE and AVX (measured: any other bit, MPX's pair included, is #GP).
XCR0_X87, XCR0_SUPPORTED = 1 << 0, 0x7
MSR_EFER, EFER_NXE = 0xC0000080, 1 << 11     # execute-disable in PAE entries

# Page-table entry bits (the low word of a PAE entry has the same)
PTE_P, PTE_W, PTE_U = 1 << 0, 1 << 1, 1 << 2
PTE_A, PTE_D, PTE_PS, PTE_G = 1 << 5, 1 << 6, 1 << 7, 1 << 8
PAGE_SIZE = 4096
PAGE_MASK = ~(PAGE_SIZE - 1) & 0xFFFFFFFF

# #PF error code bits
PF_P, PF_W, PF_U, PF_I = 1 << 0, 1 << 1, 1 << 2, 1 << 4

# Exception vectors
DE, DB, NMI, BP, OF_VEC, BR, UD, NM, DF_VEC = 0, 1, 2, 3, 4, 5, 6, 7, 8
TS, NP, SS, GP, PF = 10, 11, 12, 13, 14
MF, AC_VEC = 16, 17
# Exceptions for which the CPU pushes an error code (SDM vol. 3, table 6-1).
ERROR_CODE_VECTORS = frozenset((DF_VEC, TS, NP, SS, GP, PF, AC_VEC))
# Contributory exceptions: a second one while delivering the first is a #DF.
CONTRIBUTORY = frozenset((DE, TS, NP, SS, GP))

VECTOR_NAMES = {
    0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD",
    7: "#NM", 8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP",
    14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM",
}

# Gate types in an IDT descriptor (type field, bits 8-11 of the high dword)
GATE_INTR32, GATE_TRAP32, GATE_TASK = 0xE, 0xF, 0x5

# Segment descriptor high-dword fields
DESC_P = 1 << 15
DESC_S = 1 << 12          # code/data (1) or system (0)
DESC_CODE = 1 << 11
DESC_CONFORMING = 1 << 10 # code: conforming; data: expand-down
DESC_RW = 1 << 9          # code: readable; data: writable
DESC_DPL_SHIFT = 13
DESC_B = 1 << 22
DESC_G = 1 << 23

# TSS (32-bit) field offsets
TSS_ESP0, TSS_SS0, TSS_ESP1, TSS_SS1 = 4, 8, 12, 16
TSS_ESP2, TSS_SS2 = 20, 24
TSS_IOMAP = 102

_DESC = struct.Struct("<II")


def split_descriptor(raw8):
    """Return (low, high) dwords of an 8-byte descriptor."""
    return _DESC.unpack(raw8)


def seg_base(lo, hi):
    return ((lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)) & 0xFFFFFFFF


def seg_limit(lo, hi):
    limit = (lo & 0xFFFF) | (hi & 0x000F0000)
    if hi & DESC_G:
        limit = (limit << 12) | 0xFFF
    return limit


def seg_dpl(hi):
    return (hi >> DESC_DPL_SHIFT) & 3


def make_segment(base, limit, access, flags=0xC):
    """Encode a segment descriptor: access is the byte at bits 40-47
    (P, DPL, S, type), flags the nibble at bits 52-55 (G, D/B, L, AVL)."""
    lo = (limit & 0xFFFF) | ((base & 0xFFFF) << 16)
    hi = (((base >> 16) & 0xFF) | (access << 8) | (((limit >> 16) & 0xF) << 16)
          | (flags << 20) | (base & 0xFF000000))
    return _DESC.pack(lo, hi)


def make_gate(selector, offset, gate_type, dpl):
    lo = (offset & 0xFFFF) | (selector << 16)
    hi = (offset & 0xFFFF0000) | DESC_P | (dpl << DESC_DPL_SHIFT) | (gate_type << 8)
    return _DESC.pack(lo, hi)


def gate_fields(lo, hi):
    """(selector, offset, type, dpl, present) of an IDT gate."""
    return (lo >> 16, (hi & 0xFFFF0000) | (lo & 0xFFFF),
            (hi >> 8) & 0xF, seg_dpl(hi), bool(hi & DESC_P))
