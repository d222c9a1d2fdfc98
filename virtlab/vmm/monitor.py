"""What every virtualizing back end here has: a virtual CPU, an emulator of
privileged instructions, a paging component (shadow or nested), and the exits
that all of them share: port I/O and the paging registers.

`trap`, `hw`, `hw-npt` and `bt` differ in where the guest kernel runs and which
instructions exit; each keeps the guest's processor state in the virtual CPU
and asks its paging component what a CR write, an INVLPG or a #PF means.
"""
from virtlab import x86
from virtlab.backend import Backend
from virtlab.counters import Named
from virtlab.delivery import Event
from virtlab.errors import GuestStop

from .emulate import Emulator
from .paging import ShadowPaging
from .vcpu import VirtualCpu


_EXIT_NAMES = Named("exit.")          # kind -> "exit." + kind
_STEP_DEFERRED = frozenset(("mov_ss", "pop_ss", "hlt"))


class Vmm(Backend):
    paging_kind = ShadowPaging         # or paging.NestedPaging
    window = False                     # map the VMM window into every shadow?

    @property
    def machine_memory(self):
        return self.paging_kind.machine_memory

    def attach(self, machine):
        super().attach(machine)
        self.vcpu = self.new_vcpu()
        self.emulator = Emulator(self)
        self.paging = self.paging_kind(machine, self.vcpu, self.window)
        self.paging.step_after = self.step_after     # (a traced store it performs)
        self._bind_paging()

    def _bind_paging(self):
        """guest_view, read_cr and write_cr below only pass the question on to
        the paging component; every exit asks one of them, so unless a back
        end adds to one (bt's guest_view, hw's write_cr) the component's own
        method is bound in its place, and the exit pays one call, not two.
        guest_view becomes the component's shared_view: the callers here only
        read and write through the view they get."""
        cls = type(self)
        for name, own in (("guest_view", "shared_view"), ("read_cr", "read_cr"),
                          ("write_cr", "write_cr")):
            if getattr(cls, name) is getattr(Vmm, name):
                setattr(self, name, getattr(self.paging, own))

    def new_vcpu(self):
        """The virtual CPU; a back end whose translated code reads and writes
        part of it directly keeps that part in memory the CPU can reach."""
        return VirtualCpu()

    def guest_view(self):
        return self.paging.guest_view()

    def guest_msr(self, index):
        """What the guest's last wrmsr of `index` wrote (every guest wrmsr is
        emulated into the vCPU; hw writes some through to the real CPU as
        well), or, for an MSR it never wrote, the CPU model's own value: the
        one it has had since reset (PAT, MTRRcap, the microcode revision),
        which no VMM changes."""
        value = self.vcpu.msrs.get(index)
        return self.machine.read_msr(index) if value is None else value

    def live_view(self):
        return self.paging.live_view()

    def decode_current(self):
        return self.machine.decode_at_eip(self.guest_view())

    # [tour trap 65] The single-step trap the CPU cannot raise.
    # An instruction the VMM performs completes in the VMM, not on the CPU, so
    # the #DB the CPU raises after each instruction of a program single-stepping
    # (EFLAGS.TF) never comes for it: the VMM raises it instead.  That is every
    # emulated privileged instruction, every intercepted sensitive one, and the
    # shadow MMU's store to a guest page table it traces (paging.py).
    def single_step_event(self, eflags_before, name):
        """The #DB to deliver after an instruction the VMM performed (`name`,
        the emulator's) that began with `eflags_before`, or None: with TF set,
        unless the instruction holds the trap back past the next one (mov ss,
        pop ss) or halted.  DR6.BS is set, as the CPU sets it."""
        if not eflags_before & x86.TF or name in _STEP_DEFERRED:
            return None
        m = self.machine
        m.write_debug_register(6, m.read_debug_register(6) | x86.DR6_BS)
        return Event(x86.DB)

    def step_after(self, eflags_before, name):
        """After an instruction the VMM performed: the #DB single_step_event
        owes, delivered as this back end delivers it (deliver_step).  True if
        one was."""
        event = self.single_step_event(eflags_before, name)
        if event is None:
            return False
        self.deliver_step(event)
        return True

    def deliver_step(self, event):
        """Deliver the single-step #DB `event`, each back end its own way
        (RingCompressedVmm reflects it, Hw injects it).  A VMM that has no way
        ends the run saying so, rather than run on without the trap."""
        raise GuestStop(f"{self.name}: a single-step #DB after an instruction the VMM "
                        f"performed, at {self.machine.where()}: this VMM does not deliver it")

    def count_exit(self, kind):
        c = self.machine.counters
        c["exit.total"] += 1
        c[_EXIT_NAMES[kind]] += 1

    def shadow_page_fault(self):
        """A real #PF under shadow paging: the guest's Event to reflect, or None
        if it was a hidden fault."""
        return self.paging.page_fault(self.count_exit)

    # -- port I/O: every access exits -------------------------------------------
    def port_in(self, port, size):
        m = self.machine
        self.count_exit("io")
        m.clock.tick()
        return m.bus.read(port, size)

    def port_out(self, port, size, value):
        m = self.machine
        self.count_exit("io")
        m.clock.tick()
        m.bus.write(port, size, value)

    # -- the paging registers (called by the Emulator) ---------------------------
    def write_cr(self, n, value):
        self.paging.write_cr(n, value)

    def read_cr(self, n):
        return self.paging.read_cr(n)

    def invlpg(self, linear):
        self.paging.invlpg(linear)
