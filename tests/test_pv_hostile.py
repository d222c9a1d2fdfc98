"""What a hostile PV guest kernel tried that a sweep found getting through,
each now refused or survived (pv/): a directory slot in the hypervisor's range
left as the guest wrote it, a block that nothing can wake but a device the
hypervisor never polls, a timer set to the end of time."""
from pv import abi, asmkernel as K, invariants
from pv.asmguest import hypercall
from pv.backend import Pv
from virtlab.machine import BootSpec, Budget, Machine

RAM = 4 << 20
NR = RAM // 4096
EXIT = "mov dx, 0x500\nout dx, al\n"              # the exit status is AL
DATA = K.Kernel.data_address()


def run(kernel):
    kernel.nr_pages = NR
    with Machine(Pv(), ram_size=RAM, budget=Budget(max_exits=100_000)) as m:
        m.boot(BootSpec(kernel.build(), "t", 0, bytearray(8192)))
        out = m.run()
        return out, m, invariants.check(m.backend)


def test_a_directorys_unused_hypervisor_slots_are_emptied_not_left_to_the_guest():
    # The guest writes a directory entry of its own into slot 1010 (above the
    # two the hypervisor uses) of a page it then has validated as its page
    # directory.  It pointed at a page the guest kept writable, which could
    # map the hypervisor's IDT, GDT and TSS writable: a way to ring 0.
    boot = K.bootstrap(K.Header(K.VIRT_BASE, K.CODE, K.END, abi.XEN_VERSION_NUMBER), NR)
    p2m = K.Kernel(body="", nr_pages=NR).frames()
    kernel_l1 = p2m[boot.pt_base + 1]                       # maps the kernel at 0xC0000000
    x, y = K.free_page(0, NR), K.free_page(1, NR)
    mfn = lambda kva: p2m[K.pfn_of(kva)]
    body = (f"mov dword ptr [{x + 4 * 768:#x}], {kernel_l1 << 12 | 3:#x}\n"
            f"mov dword ptr [{x + 4 * 1010:#x}], {mfn(y) << 12 | 3:#x}\n"
            + hypercall(abi.UPDATE_VA_MAPPING, x, mfn(x) << 12 | 1, abi.UVMF_INVLPG)
            + f"mov [{DATA + 0x100:#x}], eax\n"
            + hypercall(abi.MMUEXT_OP, DATA, 1, 0, abi.DOMID_SELF)
            + f"mov [{DATA + 0x104:#x}], eax\n"
            + f"mov eax, [{0xFC000000 + (1010 - 1008) * 0x400000:#x}]\n"
            + "mov al, 0\n" + EXIT)
    k = K.Kernel(body=body, data=abi.MMUEXT_REQ.pack(abi.MMUEXT_NEW_BASEPTR, mfn(x), 0))
    out, m, broken = run(k)
    assert not out.ok and "#PF at" in out.reason, out.reason
    assert [m.mem.u32(mfn(DATA) << 12 | 0x100 + 4 * i) for i in range(2)] == [0, 0]
    assert [m.mem.u32(mfn(x) << 12 | 4 * s) for s in range(1010, 1024)] == [0] * 14
    assert broken == []


def test_blocking_with_only_the_8254_armed_ends_the_run():
    # A kernel with I/O privilege programs the PIT, then blocks with no event
    # channel bound: no event can come, and the block looped for ever on the
    # PIT's deadline, which nothing under pv polls.
    body = (hypercall(abi.PHYSDEV_OP, abi.PHYSDEVOP_SET_IOPL, DATA)
            + "mov al, 0x34\nout 0x43, al\nmov al, 0x9c\nout 0x40, al\nmov al, 0x2e\nout 0x40, al\n"
            + hypercall(abi.SCHED_OP, abi.SCHEDOP_BLOCK, 0) + "mov al, 0\n" + EXIT)
    out, _, broken = run(K.Kernel(body=body, data=(1).to_bytes(4, "little")))
    assert not out.ok and "blocked with nothing to wake it" in out.reason, out.reason
    assert broken == []


def test_a_timer_set_to_the_end_of_time_ends_the_run_when_the_domain_sleeps_until_it():
    body = (hypercall(abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_BIND_VIRQ, DATA)
            + hypercall(abi.SET_TIMER_OP, 0xFFFFFFFF, 0xFFFFFFFF)
            + hypercall(abi.SCHED_OP, abi.SCHEDOP_BLOCK, 0) + "mov al, 0\n" + EXIT)
    out, _, broken = run(K.Kernel(body=body, data=bytes(12)))
    assert not out.ok and "past the end of the virtual clock" in out.reason, out.reason
    assert "internal error" not in out.reason
    assert broken == []


def test_each_handler_of_a_test_kernel_is_where_its_trap_table_entry_points():
    # (pv/asmkernel.py's builder placed every handler but the first right
    # after the one before, not at its slot: a second handler ran zeros.)
    handlers = {0: (0, "mov al, 10\n" + EXIT), 13: (0, "mov al, 13\n" + EXIT)}
    out, _, _ = run(K.Kernel(body="cli\n", handlers=handlers))
    assert out.ok and out.exit_status == 13, out.reason


def test_code_the_hypervisor_stores_over_runs_as_stored():
    # A function the kernel has run is rewritten by a plain mmu_update store
    # (its frame is an ordinary one: Xen lets that through): the CPU ran the
    # old translation, since the store went behind its back.
    at = K.HANDLERS + 0x800                               # mov al, 0x11 / ret
    old, new = bytes.fromhex("b011c3"), bytes.fromhex("b022c3")
    p2m = K.Kernel(body="", nr_pages=NR).frames()
    ptr = p2m[K.pfn_of(at)] << 12 | at & 0xFFF
    body = (f"mov eax, {at:#x}\ncall eax\n"
            + hypercall(abi.MMU_UPDATE, DATA, 1, 0, abi.DOMID_SELF)
            + f"mov eax, {at:#x}\ncall eax\n" + EXIT)
    k = K.Kernel(body=body, data=abi.MMU_UPDATE_REQ.pack(ptr, int.from_bytes(new + b"\x90", "little")))
    k.nr_pages = NR
    image = bytearray(k.build())
    image[at - K.IMAGE:at - K.IMAGE + 3] = old
    with Machine(Pv(), ram_size=RAM, budget=Budget(max_exits=100_000)) as m:
        m.boot(BootSpec(bytes(image), "t", 0, bytearray(8192)))
        out = m.run()
    assert out.ok and out.exit_status == 0x22, (out.exit_status, out.reason)
