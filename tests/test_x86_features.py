"""IA-32 features a bring-your-own guest may use: SYSENTER/SYSEXIT, far calls
through call gates, and port I/O from user code given IOPL 3.  Each guest runs
under native, trap, hw and hw-npt and must give the same observable result;
under trap the guest kernel runs at real ring 1, which its `mov eax, cs`
exposes (RPL 1 where native shows 0: the documented ring-compression hole),
and no guest code may ever run at the real ring 0.

What Unicorn does by itself (measured, unicorn 2.1.4): SYSENTER only calls the
UC_HOOK_INSN hooks and adds its length to EIP (no privilege change; with no
hook EIP is not even synchronised first); SYSEXIT and far calls through call
gates (stack switch, frame, `retf` to ring 3) are QEMU's own and correct at
real ring 0; guest wrmsr of the SYSENTER MSRs reaches the CPU (uc.msr_read).
"""
import struct

import pytest
from unicorn import UC_HOOK_BLOCK

from virtlab import asmguest as A, x86
from virtlab.machine import BootSpec, Machine
from virtlab.native import Native
from virtlab.state_area import StateArea, layout
from trap_emulate.hw import Hw, HwNpt
from trap_emulate.trap import Trap

BACKENDS = {"native": Native, "trap": Trap, "hw": Hw, "hw-npt": HwNpt}
ALL = tuple(BACKENDS)
LOG = 0x5000
# Descriptors for a Linux-style SYSENTER layout, appended to asmguest's GDT:
# kernel code/data, user code/data at SYSENTER_CS + 0, 8, 16, 24.
SYS_CS = 0x40
EXIT_FROM_ANY_RING = "mov dx, 0x500\nout dx, eax\nspin:\njmp spin\n"


def cpl_of_ring0_code(status_base):
    """Handler code: exit status = status_base + (CS & 3), the RPL the CPU
    shows (0 natively, 1 under trap)."""
    return f"mov eax, cs\nand eax, 3\nadd eax, {status_base}\n"


def grow_gdt(extra):
    """Ring-0 code appending 8-byte descriptors to asmguest's GDT (entry 8 on)
    and reloading GDTR with the longer limit."""
    lines = []
    for i, raw in enumerate(extra):
        lo, hi = struct.unpack("<II", raw)
        at = A.GDT + 0x40 + 8 * i
        lines += [f"mov dword ptr [{at:#x}], {lo:#x}", f"mov dword ptr [{at + 4:#x}], {hi:#x}"]
    lines += [f"mov word ptr [{A.GDT + 0xF00:#x}], {0x40 + 8 * len(extra) - 1:#x}",
              f"lgdt [{A.GDT + 0xF00:#x}]"]
    return "\n".join(lines) + "\n"


def wrmsr(index, value):
    return f"mov ecx, {index:#x}\nmov eax, {value:#x}\nxor edx, edx\nwrmsr\n"


def run(guest, backend, patch=()):
    """Run under `backend`, recording the lowest real CPL any guest block ran at."""
    img = bytearray(A.build(guest))
    for addr, text in patch:
        code = A.assemble(text, addr)
        img[addr - A.BASE:addr - A.BASE + len(code)] = code
    m = Machine(BACKENDS[backend]())
    probe = StateArea(m.uc, layout())
    cpls = set()

    def on_block(_uc, _addr, _size, _user):
        probe.save()
        cpls.add(probe.cpl)
    m.uc.hook_add(UC_HOOK_BLOCK, on_block)
    m.boot(BootSpec(bytes(img)))
    out = m.run()
    return m, out, cpls


def words(m, n):
    return list(struct.unpack_from(f"<{n}I", m.mem.view, LOG))


def ring_shown(backend):
    return 1 if backend == "trap" else 0


def check_rings(backend, cpls):
    """The guest kernel runs at real ring 0 except under trap, where nothing
    guest runs at real ring 0."""
    if backend == "trap":
        assert min(cpls) == 1, cpls
    else:
        assert min(cpls) == 0, cpls
    assert 3 in cpls


# -- SYSENTER / SYSEXIT ---------------------------------------------------------
SYSENTER_GDT = [x86.make_segment(0, 0xFFFFF, 0x9A), x86.make_segment(0, 0xFFFFF, 0x92),
                x86.make_segment(0, 0xFFFFF, 0xFA), x86.make_segment(0, 0xFFFFF, 0xF2)]
SYSENTER_ENTRY = A.HANDLERS                    # slot 0 (no IDT gate uses it)
AFTER_SYSEXIT = A.RING3 + 0x100


def sysenter_guest():
    body = (grow_gdt(SYSENTER_GDT) + wrmsr(0x174, SYS_CS) + wrmsr(0x175, 0x88000)
            + wrmsr(0x176, SYSENTER_ENTRY) + A.iret_to(3, A.RING3, A.STACK3))
    # ZF set and CF clear going in: SYSENTER must not touch the arithmetic flags.
    ring3 = "mov esi, 0x1234\nmov eax, 5\ncmp eax, 5\nsysenter\n"
    entry = ("pushfd\npop ebx\nand ebx, 0x241\n"           # ZF, CF, IF as the kernel finds them
             f"mov [{LOG:#x}], ebx\nmov [{LOG + 4:#x}], esp\n"
             f"mov ebx, ss\nmov [{LOG + 8:#x}], ebx\nmov [{LOG + 12:#x}], esi\n"
             + cpl_of_ring0_code(40) + f"mov [{LOG + 16:#x}], eax\n"
             f"mov edx, {AFTER_SYSEXIT:#x}\nmov ecx, 0x6f000\nsysexit\n")
    after = (f"mov eax, cs\nmov [{LOG + 20:#x}], eax\nmov eax, ss\nmov [{LOG + 24:#x}], eax\n"
             f"mov [{LOG + 28:#x}], esp\npushfd\npop eax\nand eax, 0x3200\n"
             f"mov [{LOG + 32:#x}], eax\nmov eax, [{LOG + 16:#x}]\n" + EXIT_FROM_ANY_RING)
    return A.AsmGuest(body=body, ring3=ring3, handlers={0: entry}), [(AFTER_SYSEXIT, after)]


@pytest.mark.parametrize("backend", ALL)
def test_sysenter_enters_the_kernel_and_sysexit_returns(backend):
    guest, patch = sysenter_guest()
    m, out, cpls = run(guest, backend, patch)
    assert out.ok, out.reason
    assert out.exit_status == 40 + ring_shown(backend)
    flags, esp, ss, esi, _, cs3, ss3, esp3, user_flags = words(m, 9)
    # The kernel's IF is clear natively; under trap its pushf shows the real IF
    # (set: the VMM never masks real interrupts), the known pushf hole.
    assert flags == (x86.ZF | (x86.IF if backend == "trap" else 0))
    assert (esp, esi) == (0x88000, 0x1234)
    assert ss == (SYS_CS + 8) | ring_shown(backend)
    assert (cs3, ss3, esp3) == ((SYS_CS + 16) | 3, (SYS_CS + 24) | 3, 0x6f000)
    # SYSEXIT keeps EFLAGS: the user runs with the kernel's IF (clear: no sti
    # since SYSENTER cleared it) and IOPL 0, on the real CPU under trap too.
    assert user_flags == 0
    check_rings(backend, cpls)
    if backend == "trap":
        assert m.counters["reflect.syscall"] == 1 and m.counters["exit.priv.sysexit"] == 1
    else:
        assert m.counters["native.sysenter"] == 1 and "exit.priv.sysexit" not in m.counters


def gp_handler(status_base):
    """#GP handler: log error code and faulting EIP, exit with base + RPL."""
    return (f"pop ebx\nmov [{LOG:#x}], ebx\nmov ebx, [esp]\nmov [{LOG + 4:#x}], ebx\n"
            + cpl_of_ring0_code(status_base) + EXIT_FROM_ANY_RING)


@pytest.mark.parametrize("backend", ALL)
def test_sysenter_with_a_null_sysenter_cs_is_gp0(backend):
    g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3="nop\nsysenter\n",
                   handlers={x86.GP: gp_handler(50)})
    m, out, cpls = run(g, backend)
    assert out.ok, out.reason
    assert out.exit_status == 50 + ring_shown(backend)
    assert words(m, 2) == [0, A.RING3 + 1]            # #GP(0) at the sysenter
    check_rings(backend, cpls)


@pytest.mark.parametrize("backend", ALL)
def test_sysexit_from_ring3_is_gp0(backend):
    g = A.AsmGuest(body=wrmsr(0x174, SYS_CS) + A.iret_to(3, A.RING3, A.STACK3),
                   ring3="nop\nsysexit\n", handlers={x86.GP: gp_handler(60)})
    m, out, cpls = run(g, backend)
    assert out.ok, out.reason
    assert out.exit_status == 60 + ring_shown(backend)
    assert words(m, 2) == [0, A.RING3 + 1]
    check_rings(backend, cpls)


# -- call gates -----------------------------------------------------------------
GATE_SEL = 0x40 | 3
GATE_ENTRY = A.HANDLERS + 0x100                 # slot 1 (no IDT gate uses it)


def call_gate_guest(params=0):
    gate = x86.make_gate(A.KCODE, GATE_ENTRY, 0xC, 3)
    lo, hi = struct.unpack("<II", gate)
    gate = struct.pack("<II", lo, hi | params)
    body = grow_gdt([gate]) + A.iret_to(3, A.RING3, A.STACK3)
    pushes = "".join(f"push {0x100 + i}\n" for i in range(params))
    ring3 = (pushes + f"lcall {GATE_SEL:#x}:0\n"
             f"mov eax, cs\nmov [{LOG + 40:#x}], eax\nmov [{LOG + 44:#x}], esp\n"
             f"mov eax, [{LOG:#x}]\n" + EXIT_FROM_ANY_RING)
    n = 4 + params
    saves = "".join(f"mov ebx, [esp + {4 * i}]\nmov [{LOG + 8 + 4 * i:#x}], ebx\n" for i in range(n))
    entry = (cpl_of_ring0_code(40) + f"mov [{LOG:#x}], eax\nmov [{LOG + 4:#x}], esp\n" + saves
             + f"mov ebx, cr0\nmov [{LOG + 36:#x}], ebx\nretf {4 * params}\n")
    return A.AsmGuest(body=body, ring3=ring3, handlers={1: entry})


@pytest.mark.parametrize("params", (0, 2))
@pytest.mark.parametrize("backend", ALL)
def test_far_call_through_a_call_gate_into_ring0(backend, params):
    m, out, cpls = run(call_gate_guest(params), backend)
    assert out.ok, out.reason
    assert out.exit_status == 40 + ring_shown(backend)
    log = words(m, 12)
    ret = A.RING3 + len(A.assemble("".join(f"push {0x100 + i}\n" for i in range(params))
                               + f"lcall {GATE_SEL:#x}:0\n", A.RING3))
    old_esp = A.STACK3 - 4 * params
    frame = [ret, A.UCODE] + [0x100 + params - 1 - i for i in range(params)] + [old_esp, A.UDATA]
    assert log[1] == A.STACK0 - 4 * len(frame)          # the stack from the guest's TSS
    assert log[2:2 + len(frame)] == frame
    assert log[9] & x86.CR0_PE                          # mov from CR0 worked at its ring 0
    assert log[10:12] == [A.UCODE, A.STACK3]            # retf went back to ring 3
    check_rings(backend, cpls)
    if backend == "trap":
        assert m.counters["reflect.syscall"] == 1


def call_gate16_guest():
    """A 286 call gate (type 4) with two word parameters: the CPU pushes the
    return IP, CS, the parameters, SP and SS as words.  The entry logs its
    ESP and the 12 bytes of that frame, and ends the run."""
    gate = x86.make_gate(A.KCODE, GATE_ENTRY, 0x4, 3)
    lo, hi = struct.unpack("<II", gate)
    body = grow_gdt([struct.pack("<II", lo, hi | 2)]) + A.iret_to(3, A.RING3, A.STACK3)
    ring3 = f"push 0x11112222\npush 0x33334444\nlcall {GATE_SEL:#x}:0\n"
    entry = (f"mov [{LOG:#x}], esp\n"
             + "".join(f"mov ebx, [esp + {4 * i}]\nmov [{LOG + 4 + 4 * i:#x}], ebx\n"
                       for i in range(3))
             + "mov eax, 50\n" + EXIT_FROM_ANY_RING)
    return A.AsmGuest(body=body, ring3=ring3, handlers={1: entry})


@pytest.mark.parametrize("backend", ALL)
def test_far_call_through_a_16_bit_call_gate(backend):
    # trap and bt perform the call for their kernel at ring 1; they took only
    # 32-bit gates, and a 16-bit one was the guest's #GP.
    m, out, cpls = run(call_gate16_guest(), backend)
    assert out.ok and out.exit_status == 50, out.reason
    ret = A.RING3 + len(A.assemble("push 0x11112222\npush 0x33334444\n"
                                   f"lcall {GATE_SEL:#x}:0\n", A.RING3))
    frame = struct.pack("<6H", ret & 0xFFFF, A.UCODE, 0x4444, 0x3333,
                        (A.STACK3 - 8) & 0xFFFF, A.UDATA)
    assert words(m, 4) == [A.STACK0 - 12, *struct.unpack("<3I", frame)]
    check_rings(backend, cpls)


@pytest.mark.parametrize("backend", ALL)
def test_call_gate_with_dpl0_from_ring3_is_gp(backend):
    gate = x86.make_gate(A.KCODE, GATE_ENTRY, 0xC, 0)
    g = A.AsmGuest(body=grow_gdt([gate]) + A.iret_to(3, A.RING3, A.STACK3),
                   ring3=f"nop\nlcall {GATE_SEL:#x}:0\n", handlers={x86.GP: gp_handler(70)})
    m, out, cpls = run(g, backend)
    assert out.ok, out.reason
    assert out.exit_status == 70 + ring_shown(backend)
    assert words(m, 2) == [0x40, A.RING3 + 1]           # #GP(gate selector) at the lcall
    check_rings(backend, cpls)


# -- user port I/O under IOPL 3 ----------------------------------------------------
def iopl_guest(eflags):
    ring3 = ("mov dx, 0x3f8\nmov al, 0x41\nout dx, al\nin al, dx\n"
             "mov eax, 7\n" + EXIT_FROM_ANY_RING)
    return A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3, eflags=eflags), ring3=ring3,
                      handlers={x86.GP: gp_handler(13)})


@pytest.mark.parametrize("backend", ALL)
def test_user_port_io_with_iopl3_is_allowed(backend):
    m, out, cpls = run(iopl_guest(0x3202), backend)
    assert out.ok, out.reason
    assert out.exit_status == 7
    assert bytes(m.uart.output) == b"A"
    check_rings(backend, cpls)


@pytest.mark.parametrize("backend", ALL)
def test_user_port_io_with_iopl0_is_gp(backend):
    m, out, cpls = run(iopl_guest(0x202), backend)
    assert out.ok, out.reason
    assert out.exit_status == 13 + ring_shown(backend)
    assert bytes(m.uart.output) == b""
    check_rings(backend, cpls)


def rep_outs_guest(eflags):
    """User code writing one byte to the UART with `rep outsb`: capstone names
    it "rep outsb", and the check must not depend on that name."""
    ring3 = ("push 0x43\nmov esi, esp\nmov ecx, 1\nmov dx, 0x3f8\nrep outsb\n"
             "mov eax, 7\n" + EXIT_FROM_ANY_RING)
    return A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3, eflags=eflags), ring3=ring3,
                      handlers={x86.GP: gp_handler(13)})


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("iopl", [0, 3])
def test_user_rep_outs_is_checked_like_out(backend, iopl):
    m, out, cpls = run(rep_outs_guest(0x202 | iopl << x86.IOPL_SHIFT), backend)
    assert out.ok, out.reason
    if iopl == 3:
        assert (out.exit_status, bytes(m.uart.output)) == (7, b"C")
    else:
        assert (out.exit_status, bytes(m.uart.output)) == (13 + ring_shown(backend), b"")
    check_rings(backend, cpls)


# -- privileged instructions in user code ------------------------------------------
def check_user_gp0(backend, kernel, insn):
    """User code runs `insn` after the kernel ran `kernel`: #GP(0) at it, with
    the frame native shows."""
    g = A.AsmGuest(body=kernel + A.iret_to(3, A.RING3, A.STACK3),
                   ring3=f"mov ecx, 0x10\nnop\n{insn}\nmov eax, 9\n" + EXIT_FROM_ANY_RING,
                   handlers={x86.GP: gp_handler(20)})
    m, out, cpls = run(g, backend)
    assert out.ok, out.reason
    assert out.exit_status == 20 + ring_shown(backend)
    native_m, _, _ = run(g, "native")
    assert words(m, 2) == words(native_m, 2) and words(m, 1) == [0]   # #GP(0), EIP at it
    check_rings(backend, cpls)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("insn", ["rdmsr", "wrmsr", "clts", "lmsw ax", "invlpg [0x5000]",
                                  "mov eax, cr0", "mov cr3, eax"])
def test_a_privileged_instruction_in_user_code_is_gp0_at_it(backend, insn):
    """Above ring 0 the CPU's #GP comes before any VM exit: hw must not
    emulate what the user program may not do."""
    check_user_gp0(backend, "", insn)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("insn", ["rdtsc", "rdtscp"])
def test_user_time_stamp_reads_are_gp0_when_the_kernel_set_cr4_tsd(backend, insn):
    """CR4.TSD is the guest's: under shadow paging it is in the vCPU only, and
    the kernel's own reads (real ring 1 under trap) stay allowed."""
    check_user_gp0(backend, "mov eax, cr4\nor eax, 4\nmov cr4, eax\nrdtsc\n", insn)


def test_iopl_survives_a_system_call_and_its_return():
    """IOPL 3 given to user code is in the frame of its next system call, and
    the kernel's iret back (natively at ring 1 under trap) keeps it."""
    ring3 = ("int 0x80\nmov dx, 0x3f8\nmov al, 0x42\nout dx, al\nmov eax, 8\n"
             + EXIT_FROM_ANY_RING)
    syscall = f"mov ebx, [esp + 8]\nmov [{LOG + 8:#x}], ebx\niretd\n"
    g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3, eflags=0x3202), ring3=ring3,
                   handlers={x86.GP: gp_handler(13), 0x80: syscall})
    results = {}
    for backend in ALL:
        m, out, cpls = run(g, backend)
        assert out.ok, out.reason
        check_rings(backend, cpls)
        results[backend] = (out.exit_status, bytes(m.uart.output), words(m, 3)[2] & x86.IOPL_MASK)
    assert set(results.values()) == {(8, b"B", x86.IOPL_MASK)}, results
