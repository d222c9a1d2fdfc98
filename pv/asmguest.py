"""PV guests in a few lines of assembly: for tests, the fuzzer and lessons.

A PV image (docs/pv-abi.md, section 1) is the 32-byte header followed by the
code, loaded at pseudo-physical 1 MiB and mapped at 0xC0100000.  The code
starts at ring 1 with paging on, ESI pointing at start_info and events
masked; `data` goes at `DATA` in the image (0xC0108000), and the image's
virtual end leaves `bss` zero bytes after it.  The macros below write the
calls a guest needs in one line each.
"""
from virtlab.asmguest import assemble

from . import abi

VIRT_BASE = 0xC0000000
CODE = VIRT_BASE + abi.IMAGE_LOAD + abi.IMAGE_HEADER.size
DATA = VIRT_BASE + abi.IMAGE_LOAD + 0x8000
PORT_EXIT = 0x500


def build(body, data=b"", bss=0x4000):
    code = assemble(body, CODE)
    if not code and body.strip():
        raise ValueError("keystone assembled nothing")
    if abi.IMAGE_HEADER.size + len(code) > DATA - CODE + abi.IMAGE_HEADER.size:
        raise ValueError("the code runs into the data")
    image = bytearray(abi.IMAGE_HEADER.size) + code
    image += bytes(DATA - VIRT_BASE - abi.IMAGE_LOAD - len(image)) + data
    end = VIRT_BASE + abi.IMAGE_LOAD + len(image) + bss
    end = (end + 0xFFF) & ~0xFFF
    abi.IMAGE_HEADER.pack_into(image, 0, abi.IMAGE_MAGIC, VIRT_BASE, CODE, end,
                               abi.XEN_VERSION_NUMBER)
    return bytes(image)


def hypercall(number, *args):
    """Assembly for one hypercall with immediate arguments (EBX, ECX, ...)."""
    regs = ("ebx", "ecx", "edx", "esi", "edi")
    lines = [f"mov {r}, {a:#x}" for r, a in zip(regs, args)]
    return "\n".join(lines + [f"mov eax, {number}", f"int {abi.HYPERCALL_VECTOR:#x}"]) + "\n"


def exit_run(status=0):
    """End the run through the platform port, with `status`."""
    return f"mov al, {status & 0xFF}\nmov dx, {PORT_EXIT:#x}\nout dx, al\n"
