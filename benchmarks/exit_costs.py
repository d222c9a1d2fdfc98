"""Host cost of each exit kind, per back end.

    python benchmarks/exit_costs.py [--json] [--repeat N] [--only NAMES] [--profile NAME]
                                    [--calls | --instructions | --entries]

Each figure is what one more exit costs: a small assembly guest causes one
kind of exit in a loop, run once N times and once 2N times, and the
difference of the two runs' times is divided by N (guestbench.per_exit).  What
a run costs once -- building and booting the machine, the guest's page tables
and first shadow fills, the first translations -- cancels, and only the exit
and its loop (nanoseconds) remain.  The median over --repeat such pairs is
printed, in microseconds of host time per exit and as a ratio to the CPU
model's floor measured in the same run (floor_exit_us, a bare `int` into an
empty Python hook: guestbench.py).  The VMM entries one exit makes are
counted from the same runs (--json: vmm_entries_per_exit): every time the CPU
hands control to the platform, exits and observed instructions alike.  A path
that makes more than one is also printed per entry, the mean of the kinds it
is made of (which may differ: it does not tell them apart): bt.syscall (the
reflected `int` and the `iretd` callout) and
trap.syscall (the reflected `int`, and the kernel's `iretd`, which runs
natively at ring 1 but is observed first: trap_emulate/trap.py, _kernel_iret).

  trap.priv_us        #GP from `cli` in the guest kernel, decoded and emulated
  trap.io_us          `out` to a port (every port access exits)
  trap.syscall_us     `int 0x80` from ring 3 reflected through the guest IDT
  trap.pf_fill_us     hidden page fault: a shadow entry filled on first touch
                      (the host pages behind guest RAM touched beforehand:
                      guestbench.timed_run's `touch`)
  trap.pf_trace_us    hidden page fault: a write to a traced page table emulated
  hw.cr_read_us       `mov eax, cr3` intercepted at translation time (VT-x exit)
  hw.pf_trace_us      hidden page fault under hw
  hw.cpuid_us         `cpuid` (VT-x exits unconditionally)
  bt.callout_us       `mov cr0, eax` in the translated kernel: a callout round trip
                      (int into the VMM, the instruction emulated, back into the TC)
  bt.rdtsc_us         `rdtsc` in the translated kernel: a callout (Adams & Agesen's
                      figure for it is 1254 cycles, against 2030 by trap-and-emulate)
  bt.io_us            `out` from the translated kernel: no callout instruction, the
                      CPU's port hook enters the VMM (counted bt.callout.io)
  bt.syscall_us       `int 0x80` from ring 3 reflected into the translated kernel,
                      whose `iretd` is a callout
  bt.indirect_hit_us  a call/ret pair in the translated kernel, the ret found in
                      the indirect-branch table without leaving the TC (loop included)
  bt.pf_trace_us      a store to a traced page table: after bt.backend.GUILTY_AFTER
                      faults, adaptive translation makes it a callout (ptwrite)
  pv.hypercall_us     `xen_version` from the PV guest kernel: `int 0x82` into the
                      hypervisor, dispatch, back (the floor of every hypercall)
  pv.mmu_update_us    an `mmu_update` of one entry, validated against the page types
  pv.bounce_us        a #DE in the PV guest kernel, bounced to its handler, which
                      returns past the `div` with `iretd`
  pv.upcall_us        `set_timer_op` with a deadline already past, and the upcall
                      it causes on the way out (a hypercall and an event delivered)
  pv.set_timer_us     the same hypercall with a deadline far ahead: no upcall.
                      pv.upcall_us less this is what the upcall itself costs (the
                      timer's event raised and delivered): printed as
                      pv.upcall_alone_us when both are measured
  pv.fast_syscall_us  `int 0x80` from user code through the direct trap gate and
                      back with `iretd`: the CPU's delivery, no hypervisor entry
"""
from guestbench import main as bench_main, per_exit, timed_run

from virtlab import asmguest as A
from bt.backend import Bt
from trap_emulate.hw import Hw
from trap_emulate.trap import Trap

N = 5000
# The exits of about a microsecond are made four times as often, so that the
# difference of a run pair stays well above the noise of the runs' set-up.
N_CHEAP = 20_000
PTE = A.PGTAB + (0x400000 >> 12) * 4           # the PTE of linear 0x400000


def _loop(body, n):
    return f"mov ecx, {n}\nlp:\n{body}\ndec ecx\njnz lp\n" + A.exit_with(0)


def _per(backend_cls, guest, counter, n=N, touch=False, present=0):
    """Microseconds per exit of `guest(k)`, a guest making k exits counted as
    `counter` (`present`: how many of them each run makes beside its loop's).
    `touch`: see guestbench.timed_run."""
    def run(k):
        dt, m = timed_run(backend_cls(), guest(k), touch=touch)
        if m.counters[counter] < k + present:
            raise SystemExit(f"expected {k + present} x {counter}, saw {m.counters[counter]}")
        return dt
    return per_exit(run, n)


def trap_priv():
    return _per(Trap, lambda n: A.AsmGuest(body=_loop("cli", n)), "exit.priv.cli")


def trap_io():
    return _per(Trap, lambda n: A.AsmGuest(body=_loop("out 0x80, al", n)), "exit.io", N_CHEAP)


def _syscall_guest(n):
    return A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), paging=True,
                      ring3=f"mov ecx, {n}\nlp:\nint 0x80\ndec ecx\njnz lp\nint 0x81\n",
                      handlers={0x80: "iretd\n", 0x81: A.exit_with(0)}, user_vectors=(0x80, 0x81))


def trap_syscall():
    return _per(Trap, _syscall_guest, "reflect.syscall")


def _fill_guest(n):
    # Touch one new page per iteration: each first touch is a shadow fill.
    # The guest maps 8 MiB (asmguest.MAPPED_MB); directory slots 2 to 7 are
    # made aliases of its two page tables first, so that linear 8 to 32 MiB
    # are new pages too (of the same frames) and a run can make thousands of
    # fills: enough that their cost stands out from the run's set-up.
    aliases = "".join(f"mov dword ptr [{A.PGDIR + 4 * slot:#x}], "
                      f"{A.PGTAB + 0x1000 * (slot % 2) | 7:#x}\n" for slot in range(2, 8))
    return A.AsmGuest(paging=True, body=aliases + "mov eax, cr3\nmov cr3, eax\n"
                      f"mov esi, 0x200000\nmov ecx, {n}\nlp:\nmov eax, [esi]\n"
                      f"add esi, 0x1000\ndec ecx\njnz lp\n" + A.exit_with(0))


def trap_pf_fill():
    # 2N pages from 2 MiB stay below the 32 MiB that _fill_guest maps.
    return _per(Trap, _fill_guest, "shadow.fill", 3000, touch=True)


def _trace_guest(n):
    # Touch the page once (its page table becomes shadowed and traced), then
    # rewrite its PTE in a loop: every store is a traced write.
    body = ("mov eax, [0x400000]\n"
            + _loop(f"mov dword ptr [{PTE:#x}], 0x400007", n))
    return A.AsmGuest(paging=True, body=body)


def trap_pf_trace():
    return _per(Trap, _trace_guest, "shadow.trace")


def hw_cr_read():
    return _per(Hw, lambda n: A.AsmGuest(paging=True, body=_loop("mov eax, cr3", n)),
                "exit.priv.read_cr3")


def hw_pf_trace():
    return _per(Hw, _trace_guest, "shadow.trace")


def hw_cpuid():
    return _per(Hw, lambda n: A.AsmGuest(body=f"mov esi, {n}\nlp:\nxor eax, eax\ncpuid\n"
                                         f"dec esi\njnz lp\n" + A.exit_with(0)), "exit.cpuid",
                N_CHEAP)


def bt_callout():
    return _per(Bt, lambda n: A.AsmGuest(paging=True, body="mov eax, cr0\n"
                                         + _loop("mov cr0, eax", n)), "bt.callout.mov_cr0")


def bt_rdtsc():
    return _per(Bt, lambda n: A.AsmGuest(paging=True, body=f"mov esi, {n}\nlp:\nrdtsc\n"
                                         f"dec esi\njnz lp\n" + A.exit_with(0)),
                "bt.callout.rdtsc")


def bt_io():
    return _per(Bt, lambda n: A.AsmGuest(paging=True, body=_loop("out 0x80, al", n)),
                "bt.callout.io", N_CHEAP)


def bt_syscall():
    return _per(Bt, _syscall_guest, "reflect.syscall")


def bt_indirect_hit(n=200_000):
    # No exit at all: per call/ret pair, the loop included (the first ret
    # of a run misses the table and fills it).
    def guest(k):
        body = f"mov ecx, {k}\nlp:\ncall f\ndec ecx\njnz lp\n" + A.exit_with(0) + "f:\nret\n"
        return A.AsmGuest(paging=True, body=body)
    return _per(Bt, guest, "bt.indirect.hit", n, present=-1)


def bt_pf_trace():
    return _per(Bt, _trace_guest, "shadow.trace")


PV_RAM = 4 << 20


def _pv(kernel, counter, n=N, absent=None):
    """Microseconds per exit of the PV guest `kernel(k)` (`absent`: a counter
    its runs must leave at 0)."""
    from pv.backend import Pv

    def run(k):
        built = kernel(k)
        built.nr_pages = PV_RAM >> 12
        dt, m = timed_run(Pv(), built.build(), PV_RAM)
        if m.counters[counter] < k:
            raise SystemExit(f"expected {k} x {counter}, saw {m.counters[counter]}")
        if absent and m.counters[absent]:
            raise SystemExit(f"expected no {absent}, saw {m.counters[absent]}")
        return dt
    return per_exit(run, n)


def pv_hypercall():
    from pv import abi, asmkernel as K
    from pv.asmguest import hypercall
    return _pv(lambda n: K.Kernel(body=_loop(hypercall(abi.XEN_VERSION, 0), n)),
               "hypercall.xen_version")


def pv_mmu_update():
    from pv import abi, asmkernel as K
    from pv.asmguest import hypercall

    def kernel(n):
        k = K.Kernel(body="")
        k.nr_pages = PV_RAM >> 12
        p2m, page = k.frames(), K.free_page(0, PV_RAM >> 12)
        table = p2m[K.pfn_of(K.USER_L1_KVA)]                  # the user page table, slot 5
        k.data = abi.MMU_UPDATE_REQ.pack(table << 12 | 20, p2m[K.pfn_of(page)] << 12 | 5)
        k.body = _loop("push ecx\n" + hypercall(abi.MMU_UPDATE, K.Kernel.data_address(), 1, 0,
                                                abi.DOMID_SELF) + "pop ecx", n)
        return k
    return _pv(kernel, "hypercall.mmu_update")


def pv_bounce():
    from pv import abi, asmkernel as K
    return _pv(lambda n: K.Kernel(body=_loop("push ecx\nxor ecx, ecx\ndiv ecx\npop ecx", n),
                                  handlers={0: (abi.TI_SET_IF, "add dword ptr [esp], 2\niretd\n")}),
               "pv.bounce.de")


def _timer_kernel(deadline_high):
    """A PV kernel that binds VIRQ_TIMER, unmasks events and calls
    set_timer_op(deadline_high << 32 | 1) in a loop: a deadline already past
    (0), which fires on the way out and makes an upcall to a callback that
    clears the event and returns; or one far ahead, which never fires."""
    from pv import abi, asmkernel as K
    from pv.asmguest import hypercall
    shared = K.SHARED_INFO
    callback = (f"mov byte ptr [{shared:#x}], 0\nmov dword ptr [{shared + 2048:#x}], 0\n"
                f"mov byte ptr [{shared + 1:#x}], 0\niretd\n")

    def kernel(n):
        body = (hypercall(abi.EVENT_CHANNEL_OP, abi.EVTCHNOP_BIND_VIRQ, K.Kernel.data_address())
                + f"mov byte ptr [{shared + 1:#x}], 0\n"
                + _loop("push ecx\n" + hypercall(abi.SET_TIMER_OP, 1, deadline_high)
                        + "pop ecx", n))
        return K.Kernel(body=body, callback=callback, data=bytes(12))
    return kernel


def pv_upcall():
    return _pv(_timer_kernel(0), "evtchn.upcall")


def pv_set_timer():
    return _pv(_timer_kernel(0x7FFF), "hypercall.set_timer_op", absent="evtchn.upcall")


def pv_fast_syscall():
    from pv import asmkernel as K
    return _pv(lambda n: K.Kernel(body=K.to_user(), user=_loop("int 0x80", n),
                                  handlers={0x80: (3, "iretd\n")}), "pv.fast_syscall")


BENCHES = {
    "trap.priv_us": trap_priv, "trap.io_us": trap_io, "trap.syscall_us": trap_syscall,
    "trap.pf_fill_us": trap_pf_fill, "trap.pf_trace_us": trap_pf_trace,
    "hw.cr_read_us": hw_cr_read, "hw.pf_trace_us": hw_pf_trace, "hw.cpuid_us": hw_cpuid,
    "bt.callout_us": bt_callout, "bt.rdtsc_us": bt_rdtsc, "bt.io_us": bt_io,
    "bt.syscall_us": bt_syscall, "bt.indirect_hit_us": bt_indirect_hit,
    "bt.pf_trace_us": bt_pf_trace,
    "pv.hypercall_us": pv_hypercall, "pv.mmu_update_us": pv_mmu_update,
    "pv.bounce_us": pv_bounce, "pv.upcall_us": pv_upcall, "pv.set_timer_us": pv_set_timer,
    "pv.fast_syscall_us": pv_fast_syscall,
}


# An upcall is made on the way out of an entry into the hypervisor, never by
# itself: pv.upcall_us is two kinds of work in one entry, a hypercall and an
# event delivered, and this is the second alone.
DERIVED = {"pv.upcall_alone_us": ("pv.upcall_us", "pv.set_timer_us")}


if __name__ == "__main__":
    bench_main(__doc__, BENCHES, floor=True, derived=DERIVED)
