"""Isolation: hostile guests that try to reach machine memory (the VMM's pages
above guest RAM, or the VMM window at linear 0xFC000000) under every trapping
back end.

Each guest tries one way in: a page-table entry, a page-directory entry or a
4 MiB page whose frame is beyond RAM, CR3 beyond RAM, a plain physical load
beyond RAM with paging off, a data access in the VMM window, a GDT descriptor
whose base/limit covers the window, and hardware task switches that would load
CR3 from a guest-written TSS.  Whatever the technique, the run must either end
cleanly (Outcome.ok False with a reason, no Python exception out of
Machine.run) or deliver a fault to the guest's own handler; and the guest must
never complete the hostile access, never see a byte of machine memory (which is
filled with a marker before the run) and never change one.  A normal run in the
same process afterwards must still work.
"""
import struct

import pytest

import runs
import virtlab
from virtlab import asmguest as A, x86
from virtlab.machine import BootSpec, Machine
from virtlab.vmm import rings, memory as vmm_memory
from trap_emulate.hw import Hw, HwNpt
from trap_emulate.trap import Trap

BACKENDS = {"trap": Trap, "hw": Hw, "hw-npt": HwNpt}
RAM = 32 << 20                     # the default guest RAM; machine memory starts here
LOG = 0x5000                       # what the guest saw (identity-mapped, flat ES)
MARK = 0x4D41524B                  # "KRAM": fills every spare byte of machine memory
SENTINEL = 0x5AFE5AFE              # in EAX before a hostile load
FAULTS = (x86.TS, x86.NP, x86.SS, x86.GP, x86.PF)

# Spare machine memory the VMM does not use yet: the tail of the shadow-GDT area
# (inside the VMM window, linear 0xFC009000..) and the whole frame pool (every
# frame is zeroed when the shadow MMU takes it).
WINDOW_SPARE = vmm_memory.GDT_OFF + 0x8000
POOL_FRAME = RAM + vmm_memory.POOL_OFF + 0x100000      # a pool frame nobody takes

# LOG layout: +0 value loaded, +4 1 if the hostile access completed,
# +8 vector seen by a fault handler, +12 error code, +16 CR2.
HANDLERS = {
    vec: (f"mov dword ptr es:[{LOG + 8:#x}], {vec}\n"
          + (f"mov eax, [esp]\nmov es:[{LOG + 12:#x}], eax\n" if vec in x86.ERROR_CODE_VECTORS else "")
          + (f"mov eax, cr2\nmov es:[{LOG + 16:#x}], eax\n" if vec == x86.PF else "")
          + A.exit_with(vec))
    for vec in FAULTS
}


def hostile_load(addr, seg=""):
    """Load from `addr` (through segment override `seg`), record it, exit 0."""
    return (f"mov eax, {SENTINEL:#x}\nmov eax, {seg}[{addr:#x}]\n"
            f"mov es:[{LOG:#x}], eax\nmov dword ptr es:[{LOG + 4:#x}], 1\n" + A.exit_with(0))


def hostile_store(addr, seg=""):
    return (f"mov dword ptr {seg}[{addr:#x}], 0x11223344\n"
            f"mov dword ptr es:[{LOG + 4:#x}], 1\n" + A.exit_with(0))


def pokes(base, pairs):
    return "".join(f"mov dword ptr [{base + off:#x}], {val:#x}\n" for off, val in pairs)


def guest(body, paging=True, extra_handlers=None):
    handlers = dict(HANDLERS)
    handlers.update(extra_handlers or {})
    return A.AsmGuest(body=body, handlers=handlers, paging=paging)


# -- a second GDT: the asmguest one plus extra descriptors from selector 0x40 ----
NEWGDT = 0x6000


def with_gdt(extra_descriptors, then):
    dwords = list(struct.unpack("<16I", A._gdt()))
    for d in extra_descriptors:
        dwords += struct.unpack("<II", d)
    return (pokes(NEWGDT, [(4 * i, w) for i, w in enumerate(dwords)])
            + f"mov word ptr [{NEWGDT + 0x100:#x}], {4 * len(dwords) - 1:#x}\n"
            + f"mov dword ptr [{NEWGDT + 0x102:#x}], {NEWGDT:#x}\n"
            + f"lgdt [{NEWGDT + 0x100:#x}]\n" + then)


# -- hardware task switches: a TSS whose CR3 is a guest page directory that maps
# linear 0x400000 to a machine frame.  If the CPU ever loads that CR3, the code
# at AFTER reads the machine frame.
TSS2, EVIL_PD, EVIL_PT, LDT, FARPTR = 0x7000, 0x8000, 0x9000, 0xA000, 0xB000
AFTER_VEC = 0xF0
AFTER = A.HANDLERS + AFTER_VEC * 0x100
EVIL = (pokes(EVIL_PD, [(0, A.PGTAB | 7), (4, EVIL_PT | 7)])
        + pokes(EVIL_PT, [(0, POOL_FRAME | 7)])
        + pokes(TSS2, [(0x1C, EVIL_PD), (0x20, AFTER), (0x24, 0x2), (0x38, 0x88000),
                       (0x48, A.KDATA), (0x4C, A.KCODE), (0x50, A.KDATA), (0x54, A.KDATA),
                       (0x58, A.KDATA), (0x5C, A.KDATA)])
        + pokes(FARPTR, [(0, 0), (4, 0x40)]))
TSS_DESC = x86.make_segment(TSS2, 0x67, 0x89, 0)
BUSY_TSS_DESC = x86.make_segment(TSS2, 0x67, 0x8B, 0)
TASK_GATE = struct.pack("<II", 0x40 << 16, 0x8500)          # -> TSS selector 0x40
LDT_DESC = x86.make_segment(LDT, 0xF, 0x82, 0)               # selector 0x50
TASK_GATE_IN_LDT = pokes(LDT, [(8, 0x40 << 16), (12, 0x8500)])  # selector 0x0C


def far(opcode, selector):
    """A 32-bit direct far jmp (0xEA) or call (0x9A) to selector:0 (keystone
    would emit the 16-bit form)."""
    return f".byte {opcode:#x}, 0, 0, 0, 0, {selector & 0xFF:#x}, {selector >> 8:#x}\n"


def task_switch_guest(descriptors, transfer, setup=""):
    after = hostile_load(0x400000)
    return guest(EVIL + setup + with_gdt(descriptors, transfer + A.exit_with(1)),
                 extra_handlers={AFTER_VEC: after})


PTE_400000 = A.PGTAB + (0x400000 >> 12) * 4
CASES = {
    # paging structures that point beyond RAM
    "pte-beyond-ram-read": lambda: guest(
        f"mov dword ptr [{PTE_400000:#x}], {POOL_FRAME | 7:#x}\ninvlpg [0x400000]\n"
        + hostile_load(0x400000)),
    "pte-beyond-ram-write": lambda: guest(
        f"mov dword ptr [{PTE_400000:#x}], {RAM + WINDOW_SPARE | 7:#x}\ninvlpg [0x400000]\n"
        + hostile_store(0x400000)),
    "pte-beyond-ram-first-frame": lambda: guest(
        f"mov dword ptr [{PTE_400000:#x}], {RAM | 7:#x}\ninvlpg [0x400000]\n"
        + hostile_load(0x400100)),
    "pde-beyond-ram": lambda: guest(
        f"mov dword ptr [{A.PGDIR + 8:#x}], {POOL_FRAME | 7:#x}\n" + hostile_load(0x800000)),
    "large-page-beyond-ram": lambda: guest(
        "mov eax, cr4\nor eax, 0x10\nmov cr4, eax\n"
        f"mov dword ptr [{A.PGDIR + 8:#x}], {RAM | 0x87:#x}\n" + hostile_load(0x800000 + 0x12000)),
    "cr3-beyond-ram": lambda: guest(
        f"mov eax, {POOL_FRAME:#x}\nmov cr3, eax\n" + hostile_load(0x1000)),
    "cr3-beyond-ram-then-paging-on": lambda: guest(
        f"mov eax, {POOL_FRAME:#x}\nmov cr3, eax\nmov eax, cr0\nor eax, 0x80000000\nmov cr0, eax\n"
        + hostile_load(0x1000), paging=False),
    # physical addresses beyond RAM with paging off
    "flat-load-beyond-ram": lambda: guest(hostile_load(RAM + 0x100), paging=False),
    "flat-load-pool": lambda: guest(hostile_load(POOL_FRAME), paging=False),
    "flat-load-straddling-ram-end": lambda: guest(hostile_load(RAM - 2), paging=False),
    "flat-store-beyond-ram": lambda: guest(hostile_store(RAM + WINDOW_SPARE), paging=False),
    # the VMM window (linear 0xFC000000 and up)
    "window-load": lambda: guest(hostile_load(0xFC000000), paging=False),
    "window-load-paging": lambda: guest(hostile_load(0xFC000000)),
    "window-load-spare": lambda: guest(hostile_load(0xFC000000 + WINDOW_SPARE)),
    "window-store": lambda: guest(hostile_store(0xFC000000 + WINDOW_SPARE)),
    "window-store-window-page-table": lambda: guest(
        hostile_store(0xFC000000 + vmm_memory.WINDOW_PT_OFF + 4 * 0x20)),
    # descriptors that cover the window, loaded into DS
    "gdt-flat-4g-ds": lambda: guest(with_gdt(
        [x86.make_segment(0, 0xFFFFF, 0x92)],
        "mov ax, 0x40\nmov ds, ax\n" + hostile_load(0xFC000000 + WINDOW_SPARE))),
    "gdt-base-in-window-ds": lambda: guest(with_gdt(
        [x86.make_segment(0xFC000000, 0xFFFFF, 0x92)],
        "mov ax, 0x40\nmov ds, ax\n" + hostile_load(WINDOW_SPARE))),
    "gdt-base-in-window-byte-granular-ds": lambda: guest(with_gdt(
        [x86.make_segment(0xFC000000 + WINDOW_SPARE, 0xFFFF, 0x92, 0x4)],
        "mov ax, 0x40\nmov ds, ax\n" + hostile_load(0))),
    "gdt-expand-down-ds": lambda: guest(with_gdt(
        [x86.make_segment(0, 0, 0x96)],
        "mov ax, 0x40\nmov ds, ax\n" + hostile_load(0xFC000000 + WINDOW_SPARE))),
    "gdt-unaligned-base-4k-granular-ds": lambda: guest(with_gdt(
        [x86.make_segment(0x100, 0xFFFFF, 0x92)],
        "mov ax, 0x40\nmov ds, ax\n" + hostile_load(0xFC000000 + WINDOW_SPARE - 0x100))),
    "gdt-flat-4g-ds-store": lambda: guest(with_gdt(
        [x86.make_segment(0, 0xFFFFF, 0x92)],
        "mov ax, 0x40\nmov ds, ax\n" + hostile_store(0xFC000000 + WINDOW_SPARE))),
    # hardware task switches (CR3 from a guest-written TSS)
    "task-switch-jmp-tss": lambda: task_switch_guest([TSS_DESC], far(0xEA, 0x40)),
    "task-switch-call-tss": lambda: task_switch_guest([TSS_DESC], far(0x9A, 0x40)),
    "task-switch-jmp-task-gate": lambda: task_switch_guest([TSS_DESC, TASK_GATE], far(0xEA, 0x48)),
    "task-switch-indirect-jmp": lambda: task_switch_guest([TSS_DESC], f"ljmp [{FARPTR:#x}]\n"),
    "task-switch-indirect-call": lambda: task_switch_guest([TSS_DESC], f"lcall [{FARPTR:#x}]\n"),
    "task-switch-ldt-task-gate": lambda: task_switch_guest(
        [TSS_DESC, TASK_GATE, LDT_DESC], "mov ax, 0x50\nlldt ax\n" + far(0xEA, 0x0C),
        setup=TASK_GATE_IN_LDT),
    "task-switch-iret-nt": lambda: task_switch_guest(
        [BUSY_TSS_DESC], "pushfd\nor dword ptr [esp], 0x4000\npopfd\niretd\n",
        setup=pokes(A.TSS, [(0, 0x40)])),
}


def mark_machine_memory(m):
    """Fill every spare byte of machine memory with MARK."""
    view = m.vmm.view
    for lo, hi in ((WINDOW_SPARE, vmm_memory.WINDOW_PT_OFF), (vmm_memory.POOL_OFF, m.vmm.size)):
        view[lo:hi] = struct.pack("<I", MARK) * ((hi - lo) // 4)


def boot_and_run(cls, g):
    """The machine comes back closed; its memory stays readable."""
    with Machine(cls()) as m:
        if m.vmm is not None:
            mark_machine_memory(m)
        m.boot(BootSpec(A.build(g)))
        out = m.run()               # no exception may escape
    return m, out


def logged(m, n=5):
    return list(struct.unpack_from(f"<{n}I", m.mem.view, LOG))


def assert_normal_run_works(cls):
    body = A.putc("o") + A.putc("k") + f"mov dword ptr [{LOG:#x}], 7\n" + A.exit_with(5)
    with Machine(cls()) as m:
        m.boot(BootSpec(A.build(A.AsmGuest(body=body, paging=True))))
        out = m.run()
    assert out.ok and out.exit_status == 5, out.reason
    assert m.uart.text() == "ok" and logged(m, 1) == [7]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_hostile_guest_cannot_reach_machine_memory(backend, case):
    cls = BACKENDS[backend]
    m, out = boot_and_run(cls, CASES[case]())
    value, completed, vector, _err, _cr2 = logged(m)
    assert isinstance(out.ok, bool)
    if out.ok:
        # the guest saw a fault, in its own handler, and nothing else
        assert out.exit_status in FAULTS, (
            f"the hostile access completed (exit {out.exit_status}, loaded {value:#x})")
        assert vector == out.exit_status
    else:
        assert isinstance(out.reason, str) and out.reason
    assert completed == 0, f"hostile access completed; the guest loaded {value:#x}"
    assert MARK not in struct.unpack_from("<64I", m.mem.view, LOG), "guest read machine memory"
    assert value in (0, SENTINEL)
    # ... and changed none of it (pool frames the shadow MMU took are zeroed
    # by the VMM; the spare window area and POOL_FRAME are never taken)
    if m.vmm is not None:
        spare = bytes(m.vmm.view[WINDOW_SPARE:vmm_memory.WINDOW_PT_OFF])
        assert spare == struct.pack("<I", MARK) * (len(spare) // 4), "guest wrote the VMM window"
        assert m.vmm.u32(POOL_FRAME - RAM) == MARK, "guest wrote a machine frame"
    assert_normal_run_works(cls)


def test_shadow_gdt_is_readable_but_holds_only_the_guests_own_descriptors():
    """A documented limit of `trap` on Unicorn (no segment-limit checks): the
    guest kernel at ring 1 can *read* the shadow GDT the CPU needs, which is its
    own GDT with DPL 0 moved to 1.  It reads nothing else of machine memory and
    can write none of it (the other window cases)."""
    m, out = boot_and_run(Trap, guest(hostile_load(0xFC000000 + vmm_memory.GDT_OFF + 8)))
    value, completed, *_ = logged(m)
    assert out.ok and completed == 1
    boot_gdt_code = x86.split_descriptor(x86.make_segment(0, 0xFFFFF, 0x9A))
    assert value == rings.compress(*boot_gdt_code)[0] & 0xFFFFFFFF
    assert MARK not in struct.unpack_from("<64I", m.mem.view, LOG)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_window_page_table_is_not_guest_writable(backend):
    """If the guest could write the VMM window's page table it could map any
    machine frame; the table's entries must be exactly what the VMM put there."""
    cls = BACKENDS[backend]
    with Machine(cls()) as m:
        m.boot(BootSpec(A.build(CASES["window-store-window-page-table"]())))
        before = bytes(m.vmm.view[vmm_memory.WINDOW_PT_OFF:vmm_memory.WINDOW_PT_OFF + 0x1000]) \
            if m.vmm is not None else None
        out = m.run()
    assert not out.ok or out.exit_status in FAULTS
    if before is not None:
        after = bytes(m.vmm.view[vmm_memory.WINDOW_PT_OFF:vmm_memory.WINDOW_PT_OFF + 0x1000])
        assert after == before


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_next_run_is_unaffected_by_a_hostile_one(backend):
    cls = BACKENDS[backend]
    for case in ("pte-beyond-ram-read", "cr3-beyond-ram", "window-store", "task-switch-jmp-tss"):
        boot_and_run(cls, CASES[case]())
    r = runs.run("nano.syscall", backend, 20)
    assert r.ok, r.reason
    assert_normal_run_works(cls)
