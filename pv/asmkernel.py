"""A PV kernel in a few lines of assembly, with a user program.

asmguest.py builds bare PV images; this one adds what a test of traps,
system calls and events needs, set up the way a real PV kernel does it, with
hypercalls whose arguments are computed here (the domain builder is
deterministic, so the machine frames are known before the guest runs):

  - one user page table in directory slot 1: user code at 0x00400000
    (read-only) and a user stack page at 0x00401000 (writable), the table
    made read-only in the kernel's map before it is installed;
  - the shared-info page at SHARED_INFO (0x00402000, kernel only), mapped from
    start_info's machine address, as every PV kernel maps it itself;
  - a trap table from `handlers` (vector -> (flags, assembly)), a kernel
    stack (stack_switch) and, if `callback` is given, the event callback;
  - then `body`, at ring 1; `to_user()` enters the user program.

Image layout (virtual; the image is loaded at pseudo-physical 1 MiB):

    0xC0100000  header, set-up, body       0xC0104000  handlers (0x100 each)
    0xC0108000  data (requests, trap table, then `data`)
    0xC010A000  user code   0xC010B000  user page table   0xC010C000  user stack
    0xC010D000  kernel stack page (the stack tops at 0xC010E000)
"""
from dataclasses import dataclass, field

from virtlab import x86

from . import abi, layout
from .asmguest import CODE, DATA, VIRT_BASE
from .builder import Header, bootstrap
from virtlab.asmguest import assemble

IMAGE = VIRT_BASE + abi.IMAGE_LOAD
HANDLERS = IMAGE + 0x4000
USER_CODE_KVA, USER_L1_KVA, USER_STACK_KVA, KSTACK_KVA = (IMAGE + o for o in
                                                           (0xA000, 0xB000, 0xC000, 0xD000))
KSTACK_TOP = KSTACK_KVA + 0x1000
USER_CODE, USER_STACK_TOP, SHARED_INFO = 0x00400000, 0x00402000, 0x00402000
END = IMAGE + 0xE000
USER_SLOT = USER_CODE >> 22
_MMU_OFF, _TRAPS_OFF, _DATA_OFF = 0x0, 0x100, 0x900


def free_page(n=0, nr_pages=1024):
    """The kernel address of the n-th page after the bootstrap region: free,
    zeroed, mapped writable in the kernel's map."""
    b = bootstrap(Header(VIRT_BASE, CODE, END, abi.XEN_VERSION_NUMBER), nr_pages)
    return VIRT_BASE + 4096 * (b.stack + 1 + n)


def pfn_of(kva):
    return (kva - VIRT_BASE) >> 12


@dataclass
class Kernel:
    body: str                                   # ring 1, after set-up
    user: str = ""                              # ring 3, at USER_CODE
    handlers: dict = field(default_factory=dict)  # vector -> (trap flags, asm)
    callback: str = None                        # event callback asm, or None
    data: bytes = b""                           # at data_address()
    nr_pages: int = 1024                        # the domain's size (ram_size / 4 KiB)

    @staticmethod
    def data_address():
        return DATA + _DATA_OFF

    def frames(self):
        """The machine frame of each pseudo-physical page (as the builder
        will choose them)."""
        return layout.scramble(self.nr_pages)

    def build(self):
        p2m = self.frames()
        boot = bootstrap(Header(VIRT_BASE, CODE, END, abi.XEN_VERSION_NUMBER), self.nr_pages)
        l2 = p2m[boot.pt_base]
        mfn = lambda kva: p2m[pfn_of(kva)]                             # noqa: E731
        reqs = [((l2 << 12) + 4 * USER_SLOT, mfn(USER_L1_KVA) << 12 | 7),
                (mfn(USER_L1_KVA) << 12, mfn(USER_CODE_KVA) << 12 | 5),
                ((mfn(USER_L1_KVA) << 12) + 4, mfn(USER_STACK_KVA) << 12 | 7)]
        data = bytearray(_DATA_OFF)
        for i, r in enumerate(reqs):
            abi.MMU_UPDATE_REQ.pack_into(data, _MMU_OFF + 16 * i, *r)
        handler_at = {}
        for i, (vector, (flags, text)) in enumerate(sorted(self.handlers.items())):
            handler_at[vector] = HANDLERS + 0x100 * i
            abi.TRAP_INFO.pack_into(data, _TRAPS_OFF + 8 * i, vector, flags,
                                    abi.FLAT_KERNEL_CS, handler_at[vector])
        image = bytearray(_setup_and_body(self, mfn(USER_L1_KVA), handler_at))
        image = image.ljust(HANDLERS - IMAGE, b"\0")
        for vector, (_flags, text) in self.handlers.items():
            _put(image, handler_at[vector] - IMAGE, assemble(text, handler_at[vector]), 0x100)
        if self.callback is not None:
            _put(image, 0x3F00, assemble(self.callback, IMAGE + 0x3F00), 0x100)
        image = image.ljust(DATA - IMAGE, b"\0") + data + self.data
        image = image.ljust(USER_CODE_KVA - IMAGE, b"\0") + _fit(assemble(self.user, USER_CODE),
                                                                0x1000)
        image = image.ljust(END - IMAGE, b"\0")
        abi.IMAGE_HEADER.pack_into(image, 0, abi.IMAGE_MAGIC, VIRT_BASE, CODE, END,
                                   abi.XEN_VERSION_NUMBER)
        return bytes(image)


def _put(image, off, code, size):
    """`code` at `off` of `image`, which grows to hold it: a slice
    assigned past the end of a bytearray would append, not place."""
    code = _fit(code, size)
    if len(image) < off + len(code):
        image.extend(bytes(off + len(code) - len(image)))
    image[off:off + len(code)] = code


def _fit(code, size):
    if len(code) > size:
        raise ValueError(f"{len(code)} bytes of code do not fit in {size}")
    return code


def _setup_and_body(k, user_l1_mfn, handler_at):
    from .asmguest import hypercall
    text = [
        "mov ebp, esi\n",                      # start_info, kept from the hypercalls
        hypercall(abi.UPDATE_VA_MAPPING, USER_L1_KVA, user_l1_mfn << 12 | x86.PTE_P,
                  abi.UVMF_INVLPG),
        hypercall(abi.MMU_UPDATE, DATA + _MMU_OFF, 3, 0, abi.DOMID_SELF),
        # start_info's shared_info field is the page's machine address.
        f"mov ecx, [ebp + 36]\nor ecx, {x86.PTE_P | x86.PTE_W}\n"
        f"mov ebx, {SHARED_INFO:#x}\nmov edx, {abi.UVMF_INVLPG}\n"
        f"mov eax, {abi.UPDATE_VA_MAPPING}\nint {abi.HYPERCALL_VECTOR:#x}\n",
        hypercall(abi.SET_TRAP_TABLE, DATA + _TRAPS_OFF),
        hypercall(abi.STACK_SWITCH, abi.FLAT_KERNEL_SS, KSTACK_TOP),
    ]
    if k.callback is not None:
        text.append(hypercall(abi.SET_CALLBACKS, abi.FLAT_KERNEL_CS, IMAGE + 0x3F00,
                              abi.FLAT_KERNEL_CS, IMAGE + 0x3F00))
    text.append(f"mov esp, {KSTACK_TOP:#x}\n")
    code = assemble("".join(text) + k.body, CODE)
    if CODE + len(code) > IMAGE + 0x3F00:
        raise ValueError("the kernel body is too long")
    return bytes(abi.IMAGE_HEADER.size) + code


def to_user(eflags=0x202):
    """Enter the user program with the iret hypercall (the frame: EAX, EIP,
    CS, EFLAGS, ESP, SS)."""
    return (f"push {abi.FLAT_USER_DS:#x}\npush {USER_STACK_TOP:#x}\npush {eflags:#x}\n"
            f"push {abi.FLAT_USER_CS:#x}\npush {USER_CODE:#x}\npush 0\n"
            f"mov eax, {abi.IRET}\nint {abi.HYPERCALL_VECTOR:#x}\n")
