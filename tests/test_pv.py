"""The PV hypervisor's mechanisms, one by one, with small assembly guests
(pv/asmkernel.py): the domain builder, page types and the memory hypercalls,
bounces, the direct system-call trap, the iret hypercall, event channels and
upcalls, multicall, the block ring, and what a hostile guest gets back.
Counts are exact: each guest does a known number of each thing."""
import pytest

from pv import abi, asmkernel as K, invariants
from pv.asmguest import hypercall
from pv.backend import Pv
from pv.builder import parse_header
from virtlab import x86
from virtlab.machine import BootSpec, Machine

RAM = 4 << 20
NR = RAM // 4096
SHARED = K.SHARED_INFO
EXIT = "mov dx, 0x500\nout dx, al\n"              # the exit status is AL


def run(kernel, disk=None):
    kernel.nr_pages = NR
    m = Machine(Pv(), ram_size=RAM)
    m.boot(BootSpec(kernel.build(), "t", 0, disk if disk is not None else bytearray(8192)))
    out = m.run()
    m.close()
    return out, m


def hyper(number, *args):
    return hypercall(number, *args)


def counts(m, prefix):
    return {k: v for k, v in m.counters.snapshot().items() if k.startswith(prefix)}


# -- the domain builder ------------------------------------------------------------------
def test_the_domain_gets_scrambled_frames_above_the_hypervisors():
    out, m = run(K.Kernel(body="mov al, 0\n" + EXIT))
    assert out.ok, out.reason
    p2m = m.backend.start.p2m
    assert sorted(p2m) == list(range(NR, 2 * NR))            # one-to-one, all above N
    assert all(abs(b - a) != 1 for a, b in zip(p2m, p2m[1:]))  # never two neighbours
    space = m.backend.space
    assert all(space.m2p_get(mfn) == pfn for pfn, mfn in enumerate(p2m))
    assert space.m2p_get(1) == abi.INVALID_M2P                 # a hypervisor frame
    assert invariants.check(m.backend) == []


def guest_u32(m, va):
    """A word of the guest's direct map, read after the run."""
    return m.mem.u32(m.backend.start.p2m[K.pfn_of(va)] << 12 | va & 0xFFF)


def test_start_info_describes_the_domain():
    # The kernel copies start_info's words into its data area and exits.
    at = K.Kernel.data_address()
    out, m = run(K.Kernel(body=f"mov esi, ebp\nmov edi, {at:#x}\nmov ecx, 20\nrep movs dword ptr es:[edi], dword ptr [esi]\n"
                               "mov al, 0\n" + EXIT))
    assert out.ok, out.reason
    words = [guest_u32(m, at + 4 * i) for i in range(20)]
    magic = b"".join(w.to_bytes(4, "little") for w in words[:8]).rstrip(b"\0")
    assert magic == abi.START_INFO_MAGIC
    _, b = _layout()
    assert words[8] == NR and words[9] == m.backend.space.shared_info << 12
    assert words[15] == K.VIRT_BASE + 4096 * b.pt_base and words[16] == 1 + b.n_l1
    assert words[17] == K.VIRT_BASE + 4096 * b.mfn_list


def test_an_image_without_the_header_is_refused():
    with pytest.raises(ValueError, match="not a PV image"):
        parse_header(b"\x90" * 64, NR)
    with Machine(Pv(), ram_size=RAM) as m, pytest.raises(ValueError, match="PV header"):
        image = bytearray(K.Kernel(body="").build())
        abi.IMAGE_HEADER.pack_into(image, 0, abi.IMAGE_MAGIC, 0xC0000000, 0xC0100020,
                                   0xC0000000, abi.XEN_VERSION_NUMBER)
        m.boot(BootSpec(bytes(image)))


def test_a_domain_too_large_for_its_virt_base_says_how_much_fits():
    image = K.Kernel(body="").build()
    pages = (0xFC000000 - K.VIRT_BASE) >> 12          # up to the hypervisor's range
    assert parse_header(image, pages)
    with pytest.raises(ValueError, match=f"a domain of {(pages + 256) >> 8} MiB .* room for "
                                         f"{pages >> 8} MiB"):
        parse_header(image, pages + 256)


# -- system calls, bounces, returns ------------------------------------------------------------
SYSCALLS = "mov ecx, 3\nagain:\npush ecx\nint 0x80\npop ecx\nloop again\nmov al, 5\n" + EXIT


def test_a_system_call_reaches_the_kernel_without_the_hypervisor():
    k = K.Kernel(body=K.to_user(), user=SYSCALLS, handlers={0x80: (3, "iretd\n")})
    out, m = run(k)
    assert out.ok and out.exit_status == 5, out.reason
    assert m.counters["pv.fast_syscall"] == 3
    assert "pv.bounce" not in m.counters
    assert m.counters["hypercall.total"] == 6                  # the set-up and the iret


def test_a_system_call_gate_that_masks_events_is_bounced_instead():
    """TI_SET_IF asks for a masking entry, which a hardware trap gate cannot
    give: the hypervisor must enter, and bounces it."""
    k = K.Kernel(body=K.to_user(), user=SYSCALLS,
                 handlers={0x80: (3 | abi.TI_SET_IF, f"mov byte ptr [{SHARED + 1:#x}], 0\niretd\n")})
    out, m = run(k)
    assert out.ok, out.reason
    assert m.counters["pv.bounce.syscall"] == 3 and "pv.fast_syscall" not in m.counters


def test_a_page_fault_is_bounced_with_its_address_in_vcpu_info():
    handler = (f"mov eax, [{SHARED + abi.ARCH_CR2:#x}]\nshr eax, 20\n"
               f"add al, [{SHARED + abi.UPCALL_MASK:#x}]\n" + EXIT)
    k = K.Kernel(body=K.to_user(), user="mov eax, [0x00800000]\n",
                 handlers={x86.PF: (abi.TI_SET_IF, handler)})
    out, m = run(k)
    assert out.ok, out.reason
    assert out.exit_status == 0x08 + 1          # cr2 0x00800000 >> 20, plus the mask set on entry
    assert counts(m, "pv.bounce") == {"pv.bounce": 1, "pv.bounce.pf": 1}


def test_a_hypercall_from_user_mode_is_a_gp_for_the_kernel():
    handler = "pop eax\nshr eax, 3\n" + EXIT      # the error code: vector 0x82 * 8 + 2
    k = K.Kernel(body=K.to_user(), user="mov eax, 17\nint 0x82\n",
                 handlers={x86.GP: (abi.TI_SET_IF, handler)})
    out, m = run(k)
    assert out.ok and out.exit_status == 0x82, out.reason
    assert counts(m, "pv.bounce") == {"pv.bounce": 1, "pv.bounce.gp": 1}
    assert "hypercall.xen_version" not in m.counters


def test_an_exception_with_no_handler_ends_the_run_with_a_reason():
    out, _ = run(K.Kernel(body="xor ecx, ecx\ndiv ecx\n"))
    assert not out.ok and "#DE" in out.reason and "no handler" in out.reason


def test_the_iret_hypercall_restores_the_event_mask_from_eflags():
    """Return to user with IF set: events unmasked; user code then traps back
    to a kernel that reports the mask."""
    handler = f"mov al, [{SHARED + abi.UPCALL_MASK:#x}]\n" + EXIT
    k = K.Kernel(body=K.to_user(), user="int 0x80\n", handlers={0x80: (3, handler)})
    out, m = run(k)
    assert out.ok and out.exit_status == 0, out.reason


# -- page tables ---------------------------------------------------------------------------------
def _pt_guest(requests, check):
    """A kernel that issues one mmu_update batch (requests: (ptr, val)) and
    exits with its result in AL and the done count in AH."""
    data = b"".join(abi.MMU_UPDATE_REQ.pack(p, v) for p, v in requests)
    at = K.Kernel.data_address()
    done = at + 0x800
    body = (hyper(abi.MMU_UPDATE, at, len(requests), done, abi.DOMID_SELF)
            + f"mov ah, [{done:#x}]\n" + EXIT)
    k = K.Kernel(body=body, data=data.ljust(0x804, b"\0"))
    out, m = run(k)
    assert out.ok, out.reason
    assert invariants.check(m.backend) == []
    check(out.exit_status & 0xFF, m)


def _layout():
    k = K.Kernel(body="")
    k.nr_pages = NR
    p2m = k.frames()
    from pv.builder import bootstrap, Header
    b = bootstrap(Header(K.VIRT_BASE, K.CODE, K.END, abi.XEN_VERSION_NUMBER), NR)
    return p2m, b


@pytest.mark.parametrize("what, errno", [
    ("map the page directory writable", abi.EINVAL),
    ("map a hypervisor frame", abi.EINVAL),
    ("use a 4 MiB page", abi.EINVAL),
    ("write a hypervisor slot", abi.EPERM),
    ("write a frame the domain does not own", abi.EINVAL),
])
def test_mmu_update_refuses_what_would_break_isolation(what, errno):
    p2m, b = _layout()
    l2, l1 = p2m[b.pt_base], p2m[b.pt_base + 1]
    spare = p2m[K.pfn_of(K.free_page(0, NR))]      # a free page, mapped RW
    req = {
        "map the page directory writable": ((l1 << 12) + 4 * 5, l2 << 12 | 3),
        "map a hypervisor frame": ((l1 << 12) + 4 * 5, 2 << 12 | 1),
        "use a 4 MiB page": ((l2 << 12) + 4 * 2, spare << 12 | x86.PTE_PS | 3),
        "write a hypervisor slot": ((l2 << 12) + 4 * abi.FIRST_HYPERVISOR_SLOT, 0),
        "write a frame the domain does not own": (5 << 12, 0),
    }[what]
    good = ((l1 << 12) + 4 * 6, p2m[6] << 12 | 1)    # map page 6 read-only where it is

    def check(status, m):
        assert status == (-errno) & 0xFF
        assert m.counters["hypercall.mmu_update.items"] == 3 + 1     # the set-up's, one good
    _pt_guest([good, req, good], check)


def test_a_page_becomes_a_table_only_when_no_writable_mapping_is_left():
    """Pin a fresh page as an L1 while the kernel still maps it writable:
    refused; make the mapping read-only, then pinning succeeds; pinning it
    again is refused."""
    p2m, _ = _layout()
    page = K.free_page(0, NR)
    mfn = p2m[K.pfn_of(page)]
    ops = K.Kernel.data_address()
    res = ops + 0x100
    pin = hyper(abi.MMUEXT_OP, ops, 1, 0, abi.DOMID_SELF)
    body = (pin + f"mov [{res:#x}], eax\n"
            + hyper(abi.UPDATE_VA_MAPPING, page, mfn << 12 | 1, abi.UVMF_INVLPG)
            + pin + f"mov [{res + 4:#x}], eax\n" + pin + f"mov [{res + 8:#x}], eax\n"
            + "mov al, 0\n" + EXIT)
    out, m = run(K.Kernel(body=body, data=abi.MMUEXT_REQ.pack(abi.MMUEXT_PIN_L1_TABLE, mfn, 0)))
    assert out.ok, out.reason
    assert [guest_u32(m, res + 4 * i) for i in range(3)] == \
        [(-abi.EINVAL) & 0xFFFFFFFF, 0, (-abi.EINVAL) & 0xFFFFFFFF]
    f = m.backend.frames.frame(mfn)
    assert (f.type, f.count, f.pinned) == ("l1", 1, True)
    assert m.counters["hypercall.mmuext_op.items"] == 1
    assert invariants.check(m.backend) == []


def test_update_va_mapping_needs_a_validated_table():
    body = hyper(abi.UPDATE_VA_MAPPING, 0x20000000, 0, 0) + "neg eax\n" + EXIT
    out, _ = run(K.Kernel(body=body))
    assert out.ok and out.exit_status == abi.EINVAL


# -- events -------------------------------------------------------------------------------------
def test_the_timer_raises_an_upcall_when_events_are_enabled():
    """Bind VIRQ_TIMER, set a deadline 50 us ahead, enable events; hypercalls
    advance the clock until it fires and the callback runs."""
    bind = K.Kernel.data_address()
    body = (hyper(abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_BIND_VIRQ, bind)
            + hyper(abi.SET_TIMER_OP, 50_000, 0)
            + f"mov byte ptr [{SHARED + abi.UPCALL_MASK:#x}], 0\n"
            + "spin:\n" + hyper(abi.XEN_VERSION, 0) + "jmp spin\n")
    callback = (f"mov al, [{SHARED + abi.UPCALL_MASK:#x}]\n"
                f"add al, [{bind + 8:#x}]\n" + EXIT)            # mask 1 + port 2
    out, m = run(K.Kernel(body=body, callback=callback, data=bytes(12)))
    assert out.ok and out.exit_status == 1 + 2, out.reason
    assert m.counters["pv.virq.timer"] == 1 and m.counters["evtchn.upcall"] == 1


def test_block_returns_at_the_next_event():
    bind = K.Kernel.data_address()
    body = (hyper(abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_BIND_VIRQ, bind)
            + hyper(abi.SET_TIMER_OP, 10_000_000, 0)
            + hyper(abi.SCHED_OP, abi.SCHEDOP_BLOCK, 0) + "mov al, 9\n" + EXIT)
    callback = "mov al, 7\n" + EXIT
    out, m = run(K.Kernel(body=body, callback=callback, data=bytes(12)))
    assert out.ok and out.exit_status == 7, out.reason
    assert m.clock.now_ns >= 10_000_000


def test_blocking_with_nothing_armed_ends_the_run():
    out, _ = run(K.Kernel(body=hyper(abi.SCHED_OP, abi.SCHEDOP_BLOCK, 0)))
    assert not out.ok and "nothing to wake it" in out.reason


# -- the block device ------------------------------------------------------------------------------
def test_the_block_ring_reads_and_writes_sectors_named_by_frame():
    """Write sector 3 from one page, read it back into another: two requests,
    two notifications, two sectors each way."""
    p2m, b = _layout()
    src, dst = K.free_page(0, NR), K.free_page(1, NR)
    ring = K.VIRT_BASE + 4096 * b.ring
    slot = ring + abi.RING_HEADER

    def request(op, page, index):
        at = slot + abi.RING_SLOT * index
        return (f"mov byte ptr [{at:#x}], {op}\nmov byte ptr [{at + 1:#x}], 1\n"
                f"mov dword ptr [{at + 4:#x}], {index + 100}\n"
                f"mov dword ptr [{at + 12:#x}], 3\n"
                f"mov dword ptr [{at + 20:#x}], {p2m[K.pfn_of(page)]:#x}\n"
                f"mov byte ptr [{at + 24:#x}], 0\nmov byte ptr [{at + 25:#x}], 0\n"
                f"mov dword ptr [{ring:#x}], {index + 1}\n"
                + hyper(abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_SEND, K.Kernel.data_address()))
    port = K.Kernel.data_address()
    body = (f"mov dword ptr [{src:#x}], 0x12345678\n"
            + f"mov eax, [ebp + 80]\n"                     # (the command line is ASCII)
            + request(abi.BLKIF_OP_WRITE, src, 0) + request(abi.BLKIF_OP_READ, dst, 1)
            + f"mov eax, [{dst:#x}]\ncmp eax, 0x12345678\nsete al\n"
            + f"add al, [{slot + abi.RING_SLOT + 10:#x}]\n" + EXIT)   # status 0 of the read
    disk = bytearray(8192)
    out, m = run(K.Kernel(body=body, data=(1).to_bytes(4, "little")), disk)
    assert out.ok and out.exit_status == 1, out.reason
    assert disk[3 * 512:3 * 512 + 4] == bytes.fromhex("78563412")
    assert counts(m, "pv.blk") == {"pv.blk.requests": 2, "pv.blk.sectors": 2}
    assert m.counters["evtchn.send"] == 2


def test_the_block_back_end_refuses_a_frame_it_would_write_into_a_page_table():
    p2m, b = _layout()
    ring = K.VIRT_BASE + 4096 * b.ring
    at = ring + abi.RING_HEADER
    body = (f"mov byte ptr [{at:#x}], 0\nmov byte ptr [{at + 1:#x}], 1\n"
            f"mov dword ptr [{at + 20:#x}], {p2m[b.pt_base]:#x}\n"
            f"mov dword ptr [{ring:#x}], 1\n"
            + hyper(abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_SEND, K.Kernel.data_address())
            + f"mov al, [{at + 10:#x}]\n" + EXIT)
    out, m = run(K.Kernel(body=body, data=(1).to_bytes(4, "little")))
    assert out.ok and out.exit_status == 0xFF, out.reason           # BLKIF_RSP_ERROR
    assert invariants.check(m.backend) == []


# -- batches and hostile arguments ------------------------------------------------------------------
def test_multicall_runs_each_entry_and_writes_its_result():
    at = K.Kernel.data_address()
    entries = (abi.MULTICALL_ENTRY.pack(abi.XEN_VERSION, 0, 0, 0, 0, 0, 0, 0)
               + abi.MULTICALL_ENTRY.pack(99, 0, 0, 0, 0, 0, 0, 0)
               + abi.MULTICALL_ENTRY.pack(abi.MULTICALL, 0, at, 1, 0, 0, 0, 0))
    body = (hyper(abi.MULTICALL, at, 3) + "mov edi, eax\n"
            f"mov eax, [{at + 4:#x}]\nshr eax, 16\nadd eax, edi\n"            # 3 + 0
            f"sub eax, [{at + 36:#x}]\n"                                      # +38 (-ENOSYS)
            f"sub eax, [{at + 68:#x}]\n" + EXIT)                              # +22 (-EINVAL)
    out, m = run(K.Kernel(body=body, data=entries))
    assert out.ok and out.exit_status == 3 + abi.ENOSYS + abi.EINVAL, out.reason
    assert m.counters["hypercall.multicall"] == 1
    assert m.counters["hypercall.multicall.items"] == 3
    assert counts(m, "multicall.") == {"multicall.xen_version": 1, "multicall.unknown": 1,
                                       "multicall.multicall": 1}


@pytest.mark.parametrize("call, errno", [
    ((abi.CONSOLE_IO, 0, 10, 0xFC000000), abi.EFAULT),             # the hypervisor's range
    ((abi.CONSOLE_IO, 0, 10, 0x30000000), abi.EFAULT),             # unmapped
    ((abi.CONSOLE_IO, 0, 1 << 20, K.CODE), abi.EINVAL),            # too long
    ((abi.SET_TRAP_TABLE, 0xFFFFFFF0), abi.EFAULT),
    ((abi.MMU_UPDATE, K.CODE, 1 << 30, 0, abi.DOMID_SELF), abi.EINVAL),  # a huge count
    ((abi.MMU_UPDATE, K.CODE, 1, 0, 3), abi.ESRCH),                # another domain
    ((abi.STACK_SWITCH, 0x10, 0x1000), abi.EINVAL),                # not the kernel's SS
    ((abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_SEND, 0xFC000000), abi.EFAULT),
    ((200,), abi.ENOSYS), ((0xFFFFFFFF,), abi.ENOSYS),
])
def test_hostile_arguments_get_an_error_and_nothing_else(call, errno):
    body = hypercall(*call) + "neg eax\n" + EXIT
    out, m = run(K.Kernel(body=body))
    assert out.ok and out.exit_status == errno, out.reason
    assert invariants.check(m.backend) == []


def test_a_kernel_port_access_needs_io_privilege():
    out, _ = run(K.Kernel(body="mov dx, 0x3fd\nin al, dx\n"))
    assert not out.ok and "without I/O privilege" in out.reason
    iopl = K.Kernel.data_address()
    body = (hyper(abi.PHYSDEV_OP, abi.PHYSDEVOP_SET_IOPL, iopl)
            + "mov dx, 0x3fd\nin al, dx\nin al, dx\n" + EXIT)
    out, m = run(K.Kernel(body=body, data=(1).to_bytes(4, "little")))
    assert out.ok and out.exit_status == 0x60, out.reason            # the UART's LSR
    assert counts(m, "pv.emulate") == {"pv.emulate": 2, "pv.emulate.io": 2}
    assert not counts(m, "exit.")


# -- what the conformance suite asks of every back end, with PV guests -----------------------
# (tests/test_conformance.py runs its native-protocol assembly guests under the
# back ends that boot the native image; these are the same demands on pv.)
def test_the_roi_counts_exactly_the_instructions_between_its_marks():
    body = ("mov dx, 0x501\nout dx, al\n" + "nop\n" * 10 + "mov dx, 0x502\nout dx, al\n"
            + "nop\n" * 3 + "mov al, 0\n" + EXIT)
    k = K.Kernel(body=body, nr_pages=NR)
    with Machine(Pv(), ram_size=RAM, count_instructions=True) as m:
        m.boot(BootSpec(k.build()))
        assert m.run().ok
    assert m.roi.instructions == 10 + 2


def test_a_crashing_kernel_fails_with_a_reason_naming_its_address():
    body = "nop\nud2\n"
    out, _ = run(K.Kernel(body=body))
    assert not out.ok and "no handler" in out.reason
    image = K.Kernel(body=body, nr_pages=NR).build()
    at = K.IMAGE + image.index(bytes.fromhex("900f0b")) + 1
    assert f"{at:#010x}" in out.reason, out.reason


def test_a_hanging_kernel_fails_on_the_time_budget():
    from virtlab.machine import Budget
    with Machine(Pv(), ram_size=RAM, budget=Budget(0.3, 10**9)) as m:
        m.boot(BootSpec(K.Kernel(body="hang:\njmp hang\n", nr_pages=NR).build()))
        out = m.run()
    assert not out.ok and "host-time budget of 0.3 s exceeded at 0x" in out.reason


def test_a_hypercall_loop_fails_on_the_exit_budget():
    from virtlab.machine import Budget
    body = "spin:\n" + hyper(abi.XEN_VERSION, 0) + "jmp spin\n"
    with Machine(Pv(), ram_size=RAM, budget=Budget(120, 200)) as m:
        m.boot(BootSpec(K.Kernel(body=body, nr_pages=NR).build()))
        out = m.run()
    assert not out.ok and "exit budget of 200 exceeded" in out.reason


@pytest.mark.parametrize("access, status", [
    ("mov dword ptr [0xFC000000], 1", x86.PF),     # the M2P table is read-only
    ("mov eax, [0xFFFFF000]", x86.PF),             # nothing of the hypervisor's is mapped there
    ("mov eax, [0xFC400000]", x86.PF + 1),         # the GDT: readable by the kernel, as on Xen
    ("mov eax, [0xFC000000]", x86.PF + 1),         # the M2P table: readable, that is its point
])
def test_the_hypervisors_range_is_read_only_to_the_kernel(access, status):
    handler = f"mov al, {x86.PF}\n" + EXIT
    out, m = run(K.Kernel(body=access + f"\nmov al, {x86.PF + 1}\n" + EXIT,
                          handlers={x86.PF: (abi.TI_SET_IF, handler)}))
    assert out.ok and out.exit_status == status, out.reason
    assert invariants.check(m.backend) == []


def test_user_code_cannot_read_the_hypervisors_range():
    handler = f"mov al, {x86.PF}\n" + EXIT
    out, _ = run(K.Kernel(body=K.to_user(), user="mov eax, [0xFC000000]\nmov al, 1\n" + EXIT,
                          handlers={x86.PF: (abi.TI_SET_IF, handler)}))
    assert out.ok and out.exit_status == x86.PF, out.reason


def test_rdtsc_reads_the_virtual_clock():
    at = K.Kernel.data_address()
    body = (f"rdtsc\nmov [{at:#x}], eax\n" + hyper(abi.XEN_VERSION, 0)
            + f"rdtsc\nsub eax, [{at:#x}]\ncmp eax, 1001\nsete al\n" + EXIT)
    out, _ = run(K.Kernel(body=body))
    assert out.ok and out.exit_status == 1          # one hypercall: 1 us, plus one read


def test_nothing_after_the_end_of_run_write_is_counted():
    body = "mov al, 0\n" + EXIT + hyper(abi.XEN_VERSION, 0) + "ud2\nint 0x80\n"
    out, m = run(K.Kernel(body=body))
    _, plain = run(K.Kernel(body="mov al, 0\n" + EXIT))
    assert out.ok and m.counters.snapshot() == plain.counters.snapshot()


def test_an_event_due_at_a_system_call_is_delivered_first():
    """3000 system calls with a 100 us timer: at the calls where the timer is
    due, the upcall is made first and the `int 0x80` runs again after it.
    Exactly 3000 system calls and as many upcalls as the callback counted."""
    at = K.Kernel.data_address()
    ticks, deadline = at + 12, at + 16
    callback = (
        f"push eax\npush ebx\npush ecx\ninc dword ptr [{ticks:#x}]\n"
        f"add dword ptr [{deadline:#x}], 100000\nmov ebx, [{deadline:#x}]\nxor ecx, ecx\n"
        f"mov eax, {abi.SET_TIMER_OP}\nint 0x82\n"
        f"mov byte ptr [{SHARED:#x}], 0\nmov dword ptr [{SHARED + abi.PENDING_SEL:#x}], 0\n"
        f"mov dword ptr [{SHARED + abi.EVTCHN_PENDING:#x}], 0\n"
        f"pop ecx\npop ebx\npop eax\nmov byte ptr [{SHARED + abi.UPCALL_MASK:#x}], 0\niretd\n")
    body = (hyper(abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_BIND_VIRQ, at)
            + f"mov dword ptr [{deadline:#x}], 100000\n"
            + hyper(abi.SET_TIMER_OP, 100000, 0) + K.to_user())
    user = "mov ecx, 3000\nlp:\nint 0x80\ndec ecx\njnz lp\nmov al, 0\n" + EXIT
    out, m = run(K.Kernel(body=body, user=user, callback=callback,
                          handlers={0x80: (3, "iretd\n")}, data=bytes(20)))
    assert out.ok, out.reason
    n = guest_u32(m, ticks)
    assert n >= 2
    assert m.counters["pv.fast_syscall"] == 3000
    assert m.counters["evtchn.upcall"] == n == m.counters["pv.virq.timer"]
