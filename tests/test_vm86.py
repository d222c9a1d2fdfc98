"""Virtual-8086 mode under every back end: a guest kernel's monitor runs a
real-mode task, as an OS runs a DOS program or calls its BIOS.

The kernel enters the task with `iretd` (EFLAGS.VM set in the frame); the
task computes with real-mode segments, and its `int` and `hlt` (IOPL 0)
raise #GP into the monitor at ring 0, which must find the task's data
segments in the frame and DS..GS null, emulate the `int` by stepping over
it and return to the task, and end the run at the `hlt`.  A second guest
takes timer interrupts inside the task.  Every back end must leave the log
native leaves.
"""
import struct

import pytest

from virtlab import asmguest as A
from virtlab.backend import create
from virtlab.machine import BootSpec, Machine

# The task at 0700:0000 (linear 0x7000), 16-bit code:
#   mov ax, 0x0800; mov ds, ax; mov bx, 0x10; mov word [bx], 0x1234
#   mov cx, COUNT
# lp: int 0x81; inc word [bx+2]; loop lp
#   hlt
def _task(count):
    return bytes([0xB8, 0x00, 0x08, 0x8E, 0xD8, 0xBB, 0x10, 0x00, 0xC7, 0x07, 0x34, 0x12,
                  0xB9, count & 0xFF, count >> 8,
                  0xCD, 0x81, 0xFF, 0x47, 0x02, 0xE2, 0xF9, 0xF4])


def _enter(task, eflags):
    return ("".join(f"mov byte ptr [{0x7000 + i:#x}], {b:#x}\n" for i, b in enumerate(task))
            + "push 0x0100\npush 0x0200\npush 0x0300\npush 0x0400\n"   # GS, FS, DS, ES
            + "push 0x0600\npush 0x0100\n"                            # SS:SP
            + f"push {eflags:#x}\npush 0x0700\npush 0\niretd\n")      # EFLAGS, CS:IP


# The monitor (#GP).  The frame: error code, EIP, CS, EFLAGS, ESP, SS, ES, DS,
# FS, GS (above the three registers the monitor saves).  Logs: 0x5000 ints emulated, 0x5004 the frame's DS and ES, 0x5008
# its EFLAGS, 0x500c DS and GS as the handler found them, then at the hlt its
# IP, the task's two words at 0800:0010, and the frame's ESP and SS.
MONITOR = """
push eax
push ebx
push ecx
mov eax, ds
mov ss:[0x500c], ax
mov eax, gs
mov ss:[0x500e], ax
mov ax, 0x10
mov ds, ax
mov ebx, [esp + 20]
shl ebx, 4
add ebx, [esp + 16]
cmp byte ptr [ebx], 0xcd
jne stop
inc dword ptr [0x5000]
mov ecx, [esp + 40]
mov [0x5004], cx
mov ecx, [esp + 36]
mov [0x5006], cx
mov ecx, [esp + 24]
mov [0x5008], ecx
add dword ptr [esp + 16], 2
pop ecx
pop ebx
pop eax
add esp, 4
iretd
stop:
add esp, 12
mov ecx, [esp + 4]
mov [0x5010], ecx
mov ecx, [0x8010]
mov [0x5014], ecx
mov ecx, [esp + 16]
mov [0x5018], ecx
mov ecx, [esp + 20]
mov [0x501c], ecx
""" + A.exit_with(13)

# The timer's handler: counts in 0x5020 (through SS: DS is null here).
TICK = "push eax\nmov al, 0x20\nout 0x20, al\ninc dword ptr ss:[0x5020]\npop eax\niretd\n"

BACKENDS = ["native", "trap", "hw", "hw-npt", "bt"]


def _run(backend, image):
    with Machine(create(backend)) as m:
        m.boot(BootSpec(image))
        out = m.run()
        assert out.ok, out.reason
        return out.exit_status, struct.unpack("<9I", m.mem.read(0x5000, 36))


def _image(count, eflags=0x20202, timer=False):
    body = (A.timer_setup(200) + "sti\n" if timer else "") + _enter(_task(count), eflags)
    handlers = {13: MONITOR}
    if timer:
        handlers[0x20] = TICK
    return A.build(A.AsmGuest(body=body, handlers=handlers))


def test_native_runs_the_task_under_its_monitor():
    status, log = _run("native", _image(5))
    assert status == 13
    assert log[0] == 5                                   # five ints, each stepped over
    assert log[1] == 0x0400_0800                         # the frame's ES, and DS as the task set it
    assert log[2] == 0x20202                             # EFLAGS in the frame: VM, IF
    assert log[3] == 0                                   # DS and GS null in the handler
    assert log[4] == 0x16                                # IP of the hlt
    assert log[5] == 0x0005_1234                         # the task's stores, through DS = 0x800
    assert (log[6], log[7]) == (0x100, 0x600)            # its SP and SS


@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_every_back_end_runs_it_as_native(backend):
    image = _image(5)
    assert _run(backend, image) == _run("native", image)


@pytest.mark.parametrize("backend", BACKENDS)
def test_timer_interrupts_in_the_task(backend):
    """IRQ 0 taken in the task: its frame is a virtual-8086 one, and the
    handler's iretd returns into the task, which goes on to the end."""
    image = _image(400, timer=True)
    status, log = _run(backend, image)
    assert status == 13 and log[0] == 400 and log[5] == (400 << 16 | 0x1234)
    assert log[8] > 0                                    # ticks taken in the task
    assert (status, log) == _run("native", image)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_handler_above_ring_0_is_a_gp_with_its_selector(backend):
    """`int 0x80` in the task at IOPL 3 goes through the IDT; its gate is made
    to lead to ring-3 code, which an event out of virtual-8086 mode may not
    enter: #GP with that code segment's selector, to the monitor at ring 0."""
    task = bytes([0xCD, 0x80, 0xF4])                     # int 0x80, hlt
    gate_selector = A.IDT + 0x80 * 8 + 2
    gp = "mov ax, 0x10\nmov ds, ax\nmov eax, [esp]\nmov [0x5000], eax\n" + A.exit_with(13)
    body = f"mov word ptr [{gate_selector:#x}], {A.UCODE:#x}\n" + _enter(task, 0x23202)
    guest = A.AsmGuest(body=body, handlers={13: gp, 0x80: A.exit_with(0x80)},
                       user_vectors=(0x80,))
    with Machine(create(backend)) as m:
        m.boot(BootSpec(A.build(guest)))
        out = m.run()
        assert out.ok and out.exit_status == 13, out.reason
        assert m.mem.u32(0x5000) == A.UCODE & ~3


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_task_given_iopl_3_runs_its_sensitive_instructions(backend):
    """At IOPL 3 the task's cli, sti and pushf run without a #GP, and its
    `int 0x81` goes through the IDT (a DPL-3 gate) to the kernel."""
    task = bytes([0xB8, 0x00, 0x08, 0x8E, 0xD8,          # mov ax, 0x800; mov ds, ax
                  0xFA, 0xFB, 0x9C, 0x58,                # cli; sti; pushf; pop ax
                  0xA3, 0x10, 0x00, 0xCD, 0x81, 0xF4])   # mov [0x10], ax; int 0x81; hlt
    gp = "mov bx, 0x10\nmov ds, bx\nmov ebx, [esp + 4]\nmov [0x5000], ebx\n" + A.exit_with(13)
    i81 = ("mov bx, 0x10\nmov ds, bx\nmov ebx, [esp]\nmov [0x5004], ebx\n"
           "mov ebx, [0x8010]\nmov [0x5008], ebx\n" + A.exit_with(0x81))
    guest = A.AsmGuest(body=_enter(task, 0x23202), handlers={13: gp, 0x81: i81},
                       user_vectors=(0x81,))
    with Machine(create(backend)) as m:
        m.boot(BootSpec(A.build(guest)))
        out = m.run()
        assert out.ok and out.exit_status == 0x81, out.reason
        assert (m.mem.u32(0x5004), m.mem.u32(0x5008) & 0xFFFF) == (0xE, 0x3202)


@pytest.mark.parametrize("backend", BACKENDS)
def test_port_io_in_the_task_is_decided_by_the_bitmap_alone(backend):
    """In virtual-8086 code the TSS's I/O bitmap decides, whatever IOPL: at
    IOPL 3, with no bitmap (asmguest's TSS has none), `out` is #GP(0)."""
    task = bytes([0xB0, 0x01, 0xE6, 0x80, 0xF4])         # mov al, 1; out 0x80, al; hlt
    gp = ("mov bx, 0x10\nmov ds, bx\nmov ebx, [esp]\nmov [0x5000], ebx\n"
          "mov ebx, [esp + 4]\nmov [0x5004], ebx\n" + A.exit_with(13))
    guest = A.AsmGuest(body=_enter(task, 0x23202), handlers={13: gp})
    with Machine(create(backend)) as m:
        m.boot(BootSpec(A.build(guest)))
        out = m.run()
        assert out.ok and out.exit_status == 13, out.reason
        assert (m.mem.u32(0x5000), m.mem.u32(0x5004)) == (0, 2)     # #GP(0) at the out
