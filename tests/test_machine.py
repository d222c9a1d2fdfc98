"""The machine and the native back end, driven by small assembly guests.

Each guest is real IA-32 code assembled with keystone (virtlab.asmguest); the
assertions read what the guest itself recorded in its memory, so they check the
architectural effect (frames, privilege levels, CR2, error codes), not the VMM's
bookkeeping alone.
"""
import struct

import pytest

from virtlab import asmguest as A, x86
from virtlab.machine import BootSpec, Budget, Machine
from virtlab.native import Native

LOG = 0x5000          # guests record what they saw here (identity-mapped)


def run(guest, budget=None):
    """Boot and run `guest`; the machine comes back closed (its memory, console
    and counters stay readable)."""
    with Machine(Native(), budget=budget) as m:
        m.boot(BootSpec(A.build(guest)))
        out = m.run()
    return m, out


def words(m, n, at=LOG):
    return list(struct.unpack_from(f"<{n}I", m.mem.view, at))


def test_boot_protocol_registers():
    body = (f"mov [{LOG:#x}], eax\nmov [{LOG + 4:#x}], ebx\nmov [{LOG + 8:#x}], esp\n"
            + A.exit_with(0))
    # Record before the prologue touches anything: put the stores first.
    g = A.AsmGuest(body="")
    img = bytearray(A.build(g))
    code = A.assemble(body, A.BASE)
    img[:len(code)] = code
    with Machine(Native()) as m:
        m.boot(BootSpec(bytes(img), workload="demo", scale=42))
        assert m.run().ok
    magic, info, esp = words(m, 3)
    assert magic == 0x42414C56 and info == 0x2000 and esp == 0x9F000
    block = m.mem.read(0x2000, 96)
    assert struct.unpack_from("<5I", block) == (0x42414C56, 1, 32 << 20, 42, 0)
    assert block[32:36] == b"demo"


def test_console_and_exit_status():
    m, out = run(A.AsmGuest(body=A.putc("o") + A.putc("k") + A.exit_with(3)))
    assert out.ok and out.exit_status == 3
    assert m.uart.text() == "ok"
    assert m.counters["native.io"] == 2          # one `out` per character; 0x500 is free


SYSCALL_HANDLER = f"""
    mov eax, [esp]
    mov [{LOG:#x}], eax
    mov eax, [esp+4]
    mov [{LOG + 4:#x}], eax
    mov eax, [esp+8]
    mov [{LOG + 8:#x}], eax
    mov eax, [esp+12]
    mov [{LOG + 12:#x}], eax
    mov eax, [esp+16]
    mov [{LOG + 16:#x}], eax
    mov [{LOG + 20:#x}], esp
    mov ax, cs
    movzx eax, ax
    mov [{LOG + 24:#x}], eax
    inc dword ptr [{LOG + 28:#x}]
    iretd
"""


@pytest.mark.parametrize("paging", [False, True])
def test_syscall_from_ring3_through_the_idt(paging):
    ring3 = "mov esi, 0x1234\nint 0x80\nint 0x80\nint 0x80\nint 0x81\n"
    g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3=ring3, paging=paging,
                   handlers={0x80: SYSCALL_HANDLER, 0x81: A.exit_with(0)},
                   user_vectors=(0x80, 0x81))
    m, out = run(g)
    assert out.ok, out.reason
    eip, cs, eflags, esp, ss, kesp, kcs, count = words(m, 8)
    assert count == 3
    assert eip == A.RING3 + 5 + 2 * 3               # after the third `int 0x80`
    assert cs == A.UCODE and ss == A.UDATA          # pushed with RPL 3
    assert esp == A.STACK3                          # the user stack, untouched
    assert eflags & x86.IF and eflags & 2
    assert kesp == A.STACK0 - 20                    # TSS.esp0 minus the 5-word frame
    assert kcs == A.KCODE                           # the handler ran at ring 0
    assert m.counters["native.syscall"] == 4


def test_int_from_ring3_to_a_dpl0_gate_is_a_gp():
    gp = (f"mov eax, [esp]\nmov [{LOG:#x}], eax\nmov eax, [esp+4]\nmov [{LOG + 4:#x}], eax\n"
          + A.exit_with(0))
    g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3="nop\nint 0x40\n",
                   handlers={0x40: "iretd\n", x86.GP: gp}, user_vectors=())
    m, out = run(g)
    assert out.ok
    # error code: IDT entry, IDT bit set; the #GP is a fault of the `int`, so
    # the saved EIP is the `int` instruction itself, not the one after it.
    assert words(m, 2) == [0x40 * 8 + 2, A.RING3 + 1]


def test_same_ring_interrupt_has_no_stack_switch():
    g = A.AsmGuest(body="mov esp, 0x88000\nint 0x80\n" + A.exit_with(0),
                   handlers={0x80: f"mov [{LOG:#x}], esp\nmov eax, [esp+4]\nmov [{LOG + 4:#x}], eax\niretd\n"})
    m, out = run(g)
    assert out.ok
    assert words(m, 2) == [0x88000 - 12, A.KCODE]


def test_repeated_faults_never_become_a_double_fault():
    """Unicorn leaves QEMU's exception-in-flight set after a handled fault; the
    machine must reset it or the second #GP arrives as #DF (notes, item 2)."""
    gp = f"inc dword ptr [{LOG:#x}]\nadd dword ptr [esp+4], 1\nadd esp, 4\niretd\n"  # skip `cli`
    df = A.exit_with(99)
    ring3 = "mov ecx, 50\nlp:\ncli\ndec ecx\njnz lp\nint 0x81\n"
    g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3=ring3,
                   handlers={x86.GP: gp, x86.DF_VEC: df, 0x81: A.exit_with(0)},
                   user_vectors=(0x81,))
    m, out = run(g)
    assert out.ok and out.exit_status == 0
    assert words(m, 1) == [50]
    assert m.counters["native.exception.gp"] == 50


def test_page_fault_reports_cr2_and_error_code_and_retries():
    page = 0x400000
    pte = A.PGTAB + (page >> 12) * 4
    pf = f"""
        mov eax, [esp]
        mov [{LOG:#x}], eax
        mov eax, cr2
        mov [{LOG + 4:#x}], eax
        mov eax, [esp+4]
        mov [{LOG + 8:#x}], eax
        inc dword ptr [{LOG + 12:#x}]
        mov dword ptr [{pte:#x}], {page | 7:#x}
        invlpg [{page:#x}]
        add esp, 4
        iretd
    """
    ring3 = f"mov dword ptr [{page + 0x10:#x}], 0xfeed\nmov eax, [{page + 0x10:#x}]\nint 0x81\n"
    exit_eax = "mov dx, 0x500\nout dx, eax\ncli\nhlt\n"
    g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3=ring3, paging=True,
                   unmapped=(page,), handlers={x86.PF: pf, 0x81: exit_eax},
                   user_vectors=(0x81,))
    m, out = run(g)
    assert out.ok and out.exit_status == 0xFEED        # the store was retried
    err, cr2, eip, count = words(m, 4)
    assert count == 1
    assert cr2 == page + 0x10
    assert err == x86.PF_W | x86.PF_U                   # not present, write, user
    assert eip == A.RING3                               # the faulting instruction
    assert m.counters["native.exception.pf"] == 1


def test_protection_fault_on_a_read_only_page():
    page = 0x401000
    pf = f"mov eax, [esp]\nmov [{LOG:#x}], eax\n" + A.exit_with(0)
    g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), paging=True, readonly=(page,),
                   ring3=f"mov eax, [{page:#x}]\nmov [{page:#x}], eax\n",
                   handlers={x86.PF: pf})
    m, out = run(g)
    assert out.ok
    assert words(m, 1) == [x86.PF_P | x86.PF_W | x86.PF_U]


def test_divide_error_points_at_the_div():
    de = f"mov eax, [esp]\nmov [{LOG:#x}], eax\n" + A.exit_with(0)
    body = "xor ecx, ecx\nmov eax, 1\nxor edx, edx\nnop\ndiv ecx\n"
    g = A.AsmGuest(body=body, handlers={x86.DE: de})
    m, out = run(g)
    assert out.ok
    prologue = A.build(A.AsmGuest(body="")).find(b"\x00" * 64)      # end of the prologue
    assert words(m, 1)[0] == A.BASE + prologue + 2 + 5 + 2 + 1      # xor, mov, xor, nop


def test_invalid_opcode_with_a_handler_is_delivered():
    ud = f"inc dword ptr [{LOG:#x}]\nadd dword ptr [esp], 2\niretd\n"   # skip ud2
    g = A.AsmGuest(body="ud2\nud2\n" + A.exit_with(0), handlers={x86.UD: ud})
    m, out = run(g)
    assert out.ok and words(m, 1) == [2]
    assert m.counters["native.exception.ud"] == 2


def test_invalid_opcode_without_a_handler_fails_the_run():
    # The IDT is loaded but has no #UD gate: as on hardware, #UD -> #NP -> #DF
    # (not present either) -> triple fault; the reason names the first event.
    m, out = run(A.AsmGuest(body="nop\nud2\n"))
    assert not out.ok
    assert "#UD" in out.reason and "ud2" in out.reason and "0x001000" in out.reason


def test_invalid_opcode_without_an_idt_fails_the_run():
    g = A.AsmGuest(body="nop\nud2\n")
    img = bytearray(A.build(g))
    struct.pack_into("<H", img, A.IDT + 0xF00 - A.BASE, 0)       # IDT limit 0
    with Machine(Native()) as m:
        m.boot(BootSpec(bytes(img)))
        out = m.run()
    assert not out.ok
    assert out.reason.startswith("invalid opcode with no handler at 0x001000") and "ud2" in out.reason


def test_triple_fault_ends_the_run_with_a_reason():
    # No gates at all: int -> #NP (gate not present) -> #DF not present -> triple fault.
    m, out = run(A.AsmGuest(body="int 0x30\n"))
    assert not out.ok
    assert out.reason.startswith("triple fault at 0x")
    assert "#NP(0x182)" in out.reason                 # vector 0x30, IDT bit
    assert "GDTR base=0x00140000 limit=0x3f, CPL 0" in out.reason and "EAX=0x" in out.reason


def test_triple_fault_reason_names_error_code_gdtr_cpl_and_eax():
    """The prologue's `mov ds, ax` with AX never loaded (the boot EAX, "VLAB"):
    the shape of a failure once seen in a loaded full run."""
    img = bytearray(A.build(A.AsmGuest(body=A.exit_with(0))))
    assert img[0x10:0x14] == b"\x66\xb8\x10\x00"          # mov ax, 0x10
    img[0x10:0x14] = b"\x90" * 4
    with Machine(Native()) as m:
        m.boot(BootSpec(bytes(img)))
        out = m.run()
    assert not out.ok
    assert out.reason.startswith("triple fault at 0x00100014: mov ds, ax: #GP(0x4c54) -> #DF(0x0)")
    assert "GDTR base=0x00140000 limit=0x3f, CPL 0" in out.reason
    assert "EAX=0x42414c56" in out.reason


def test_halt_with_interrupts_disabled_fails():
    m, out = run(A.AsmGuest(body="nop\ncli\nhlt\n"))
    assert not out.ok
    assert "halted with interrupts disabled" in out.reason and "hlt" in out.reason


def test_halt_with_nothing_armed_fails():
    m, out = run(A.AsmGuest(body="sti\nhlt\n"))
    assert not out.ok
    assert "nothing armed" in out.reason


TIMER_SETUP = A.timer_setup()

TIMER_HANDLER = A.timer_handler(LOG)


def test_timer_interrupts_wake_a_halted_cpu():
    body = TIMER_SETUP + f"""
    idle:
        sti
        hlt
        cmp dword ptr [{LOG:#x}], 5
        jb idle
    """ + A.exit_with(0)
    g = A.AsmGuest(body=body, handlers={0x20: TIMER_HANDLER})
    m, out = run(g)
    assert out.ok, out.reason
    assert words(m, 1) == [5]
    assert m.counters["native.irq"] == 5 and m.counters["native.hlt"] == 5
    assert m.clock.now_ns == 5 * 1193 * 1_000_000_000 // 1_193_182 or m.clock.now_ns > 0


def test_pending_interrupt_is_taken_before_a_software_int():
    """With IF set and IRQ 0 pending, the CPU takes the interrupt at the `int 0x80`
    boundary; the `int` runs again after the handler returns."""
    body = TIMER_SETUP + f"""
        sti
        mov ecx, 2000
    spin:
        int 0x80
        cmp dword ptr [{LOG:#x}], 0
        jne done
        dec ecx
        jnz spin
    done:
    """ + f"mov eax, [{LOG + 4:#x}]\n" + A.EXIT_WITH_EAX
    syscall = f"inc dword ptr [{LOG + 4:#x}]\niretd\n"
    g = A.AsmGuest(body=body, handlers={0x20: TIMER_HANDLER, 0x80: syscall},
                   trap_gates=(0x80,))
    m, out = run(g)
    assert out.ok
    # The PIT is armed by the 10th port write (t = 10 us) with a period of
    # 1193 / 1.193182 MHz = 999.847 us; each delivered syscall is 1 us of virtual
    # time, so the deadline passes at the 1001st `int 0x80`: the IRQ is taken
    # there, then that `int` runs again.  1001 syscalls in all, every run.
    assert m.counters["native.irq"] == 1
    assert out.exit_status == m.counters["native.syscall"] == 1001


def test_exit_budget_stops_a_chatty_guest():
    body = "lp:\nmov dx, 0x80\nout dx, al\njmp lp\n"
    m, out = run(A.AsmGuest(body=body), budget=Budget(max_exits=100))
    assert not out.ok and "exit budget of 100 exceeded" in out.reason


def test_host_time_budget_stops_a_spinning_guest():
    m, out = run(A.AsmGuest(body="lp:\njmp lp\n"), budget=Budget(host_seconds=0.3))
    assert not out.ok and "host-time budget" in out.reason and "jmp" in out.reason


def test_guest_cannot_reach_machine_memory():
    """Physical memory above RAM is the VMM's; with paging off a linear address
    is physical, so a load from there must fail the run, not read VMM pages."""
    m, out = run(A.AsmGuest(body=f"mov eax, [{(32 << 20) + 0x100:#x}]\n" + A.exit_with(0)))
    assert not out.ok


def test_runs_are_deterministic():
    body = TIMER_SETUP + f"""
    idle:
        sti
        hlt
        cmp dword ptr [{LOG:#x}], 3
        jb idle
    """ + A.exit_with(0)
    g = A.AsmGuest(body=body, handlers={0x20: TIMER_HANDLER})
    a, _ = run(g)
    b, _ = run(g)
    assert a.counters == b.counters and a.clock.now_ns == b.clock.now_ns


# -- the machine's lifetime ---------------------------------------------------

def test_close_is_idempotent_and_keeps_the_results():
    with Machine(Native()) as m:
        m.boot(BootSpec(A.build(A.AsmGuest(body=A.putc("k") + A.exit_with(4)))))
        out = m.run()
    assert m.closed and out.ok and out.exit_status == 4
    m.close()
    m.close()
    assert m.uart.text() == "k" and m.mem.read(A.BASE, 1) != b"\0"
    m.where()                                     # reads the detached state copy
    with pytest.raises(RuntimeError, match="closed"):
        m.run()


def test_dead_machines_collected_inside_a_live_machines_hook_do_not_disturb_it():
    """Unclosed machines are freed by the cyclic collector, which may run at
    any allocation: here, on purpose, inside every exit of a live machine."""
    import gc
    guest = A.AsmGuest(body="mov ecx, 20\nlp:\n" + A.putc(".") + "dec ecx\njnz lp\n"
                       + A.exit_with(9))
    image = A.build(guest)
    for _ in range(6):                            # dead, unclosed machines
        dead = Machine(Native(), count_instructions=True)
        dead.boot(BootSpec(image))
        dead.run()
    del dead
    live = Machine(Native())
    backend_out = live.backend.port_out

    def port_out(port, size, value):
        gc.collect()
        return backend_out(port, size, value)
    live.backend.port_out = port_out
    with live:
        live.boot(BootSpec(image))
        out = live.run()
    assert out.ok and out.exit_status == 9, out.reason
    assert live.uart.text() == "." * 20


# -- the state-area calibration -------------------------------------------------

def test_calibration_never_scans_the_uc_context_header():
    """Bytes 16..39 of a saved context's header are uninitialised heap memory:
    a probe value that happens to lie there must not count as a candidate."""
    from unicorn import Uc, UC_ARCH_X86, UC_MODE_32
    from virtlab import state_area as S
    lay = S.layout()
    header = S._header_size(Uc(UC_ARCH_X86, UC_MODE_32))
    assert header == S._Scan.data and 0 < header <= lay.gpr["eax"]
    blob = bytearray(lay.size)
    struct.pack_into("<I", blob, 24, 0x0FF8)            # "garbage" in the header
    struct.pack_into("<I", blob, lay.error_code, 0x0FF8)
    assert S._find_u32(bytes(blob), 0x0FF8) == [lay.error_code]
    other = bytearray(blob)
    struct.pack_into("<I", other, 24, 1)
    assert S._diff_u32(bytes(blob), bytes(other), lambda a, b: a != b) == []
    offsets = [*lay.gpr.values(), lay.eip, *lay.cr.values(), lay.hflags, lay.error_code,
               lay.is_int, lay.old_exception]
    assert min(offsets) >= header and len(set(offsets)) == len(offsets)


# -- a bug in a back end -----------------------------------------------------------
class _Raising(Native):
    """A back end whose exception handler raises what it is given."""

    def __init__(self, exc):
        super().__init__()
        self.exc = exc

    def exception(self, vector):
        raise self.exc


def _run_raising(exc):
    m = Machine(_Raising(exc))
    m.boot(BootSpec(A.build(A.AsmGuest(body="nop\nint 0x80\n" + A.exit_with(0),
                                       handlers={0x80: "iretd\n"}))))
    return m, m.run()


def test_a_back_ends_bug_fails_the_run_naming_it_instead_of_raising():
    """A bug that a guest reaches ends that run, with a reason that names the
    exception, the line that raised it and where the guest was, and the
    exception kept for a debugger; not a traceback that ends the bench."""
    bug = ValueError("no such frame")
    m, out = _run_raising(bug)
    assert not out.ok and m.internal_error is bug
    assert out.reason.startswith("internal error at 0x")
    assert ": ValueError: no such frame (test_machine.py:" in out.reason
    assert out.reason.endswith("a bug in virtlab, not in the guest")


def test_an_interrupt_from_the_keyboard_inside_a_hook_goes_on_up():
    with pytest.raises(KeyboardInterrupt):
        _run_raising(KeyboardInterrupt())
