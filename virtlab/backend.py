"""The back-end interface and the registry of installed back ends.

A back end is a virtualization technique: it decides at which real privilege level
the guest runs, and what each exit means (emulate, reflect, inject, resume).  All
are found through the `virtlab.backends` entry-point group, `native` included, so
that nothing in the core names a back end and a third party can add one by
installing a package.
"""
import functools
import sys
from abc import ABC, abstractmethod
from importlib.metadata import entry_points

from . import x86
from .errors import GuestStop

GROUP = "virtlab.backends"


class UnknownBackend(KeyError):
    pass


class Backend(ABC):
    """Base class.  The machine calls these with the CPU saved in machine.state
    (for exception, invalid_opcode and halted); the machine restores it after."""
    name = "?"
    summary = ""
    image = "native"            # which guest build this back end runs
    machine_memory = 0          # bytes of VMM memory mapped above guest RAM
    kernel_ring = 0             # the real ring the guest kernel runs at
    # The counters this back end may report (virtlab.counters.CounterSpec): the
    # shared groups it uses and its own, each own charged one with a default
    # cost and its source.  analysis/ reads them to price, document and plot.
    counters = ()
    # Workloads (fnmatch patterns) on which the technique is documented to be
    # unfaithful: their output may differ from native, and the run must then
    # say so (matches_native False, and the cause in details).
    unfaithful = ()
    # A back end that shares another's counter names *and* the nature of their
    # cost (bt's exits and reflections are a software VMM's, as trap's are)
    # names it here: a CPU profile's [backends.<that one>] costs then price
    # this one's shared counters too, where the profile gives it none of its own.
    priced_like = None

    @classmethod
    def documented_unfaithful(cls, workload):
        from fnmatch import fnmatchcase
        return any(fnmatchcase(workload, pattern) for pattern in cls.unfaithful)

    def attach(self, machine):
        self.machine = machine

    def physical_memory(self, ram_size):
        """Bytes of physical memory the machine maps from address 0 as one
        range (machine.mem) for a guest of `ram_size` bytes of RAM: the RAM
        itself, unless the back end places the guest's pages among frames of
        its own (a PV domain's machine frames are not its pseudo-physical
        ones)."""
        return ram_size

    def start_state(self, spec):
        """Lay out the guest's memory and registers before its first
        instruction (a machine.BootSpec).  The default is the boot protocol
        of docs/boot-protocol.md; a back end whose guest starts otherwise (a
        PV domain: paging on, start-info page) lays out its own."""
        self.machine.load_boot_protocol(spec)

    def boot(self):
        """The start state is laid out; adjust the real CPU (ring, mode)."""

    def guest_address(self, linear):
        """The guest instruction that the real PC `linear` stands for.  The
        identity, unless the back end runs code that is not the guest's (a
        translation cache), in which case it maps back."""
        return linear

    @abstractmethod
    def exception(self, vector):
        """An exception or `int n` stopped the CPU (vector only, as Unicorn gives it)."""

    def invalid_opcode(self):
        """#UD; return True if handled (the default: the run fails)."""
        return False

    def sysenter(self):
        """SYSENTER stopped the CPU (EIP at it), at any ring; perform it or
        deliver what it raises, and return True if it completed (fastcall.py).
        The default ends the run: a back end that does not say how it runs the
        guest kernel must not let SYSENTER enter it at the real ring 0."""
        raise GuestStop(f"sysenter at {self.machine.where()}: not supported by the "
                        f"{self.name} back end")

    @abstractmethod
    def port_in(self, port, size):
        """An `in` from a device port: return the value."""

    @abstractmethod
    def port_out(self, port, size, value):
        """An `out` to a device port."""

    @abstractmethod
    def halted(self):
        """`hlt` at real ring 0 stopped the CPU (EIP is past it)."""

    def io_permitted(self, port, size):
        """The I/O permission check (SDM vol. 1, 18.5): allowed when CPL <=
        IOPL, else only if the TSS I/O bitmap clears every byte of the access.
        In virtual-8086 code the bitmap alone decides (vol. 3, 20.2.8.1).
        The state area has been saved."""
        st = self.machine.state
        if st.cpl <= st.iopl and not st.system_flags() & x86.VM:
            return True
        tss, limit = st.seg_base_of("tr"), st.seg_limit_of("tr")
        return io_bitmap_allows(self.guest_view(), tss, limit, port, size)

    def read_cr(self, n):
        """Control register n as the guest sees it: the real one, unless the
        back end virtualizes it (a VMM's vCPU)."""
        return self.machine.state.cr(n)

    def guest_msr(self, index):
        """A model-specific register as the guest last wrote it: the real
        one, unless the back end keeps the guest's MSRs itself (a VMM)."""
        return self.machine.read_msr(index)

    def guest_view(self):
        """Guest-virtual memory as the guest sees it (a memory.LinearView).  The
        real CPU's paging unless the back end virtualizes paging."""
        from .delivery import linear_view
        return linear_view(self.machine.state, self.machine.mem)

    def live_view(self):
        """Guest-virtual memory as the guest sees it *now*, from inside a hook
        that did not save the CPU (translation-time hooks): the paging
        registers are read from the live CPU, not the state area."""
        return self.machine.live_view()

    def code_view(self, linear, live=False):
        """The view through which the CPU fetches the code at the real PC
        `linear`: the guest's (live_view from a hook that did not save the
        CPU), unless the back end runs code of its own there (a
        translation cache)."""
        return self.live_view() if live else self.guest_view()

    def is_guest_instruction(self, linear):
        """Whether the instruction at the real PC `linear` begins the
        execution of a guest instruction (instruction counting).  Always,
        unless several real instructions stand for one guest instruction
        (a translation)."""
        return True

    def exit_cause(self, handler, args):
        """How `virtlab trace` names an exit the back end made itself (a
        callout from a translation cache), or None for the machine's own
        name (the vector, the port)."""
        return None

    def fold_counters(self):
        """Bring counts kept outside machine.counters (in guest-visible
        memory, counted by translated code) into it: called before the
        counters are read (the ROI's edges, the end of the run)."""

    def report(self):
        """Back-end specific result fields (merged into the run's JSON)."""
        return {}


def _entry_points():
    # Reading the entry points parses every installed distribution's metadata
    # (tens of milliseconds, more than booting a small run), and a run asks
    # several times.  They change only when the import path does, within a
    # process (installing a package into a directory already on the path shows
    # up in the next process).
    return _scan(tuple(sys.path))


@functools.lru_cache(maxsize=4)
def _scan(_path):
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def names():
    return sorted(_entry_points())


def packages():
    """{name: the top-level package of its module} for each installed back end,
    read from the entry points without importing any of them."""
    return {name: ep.module.split(".")[0] for name, ep in _entry_points().items()}


def bundled():
    """The back ends that come with virtlab itself (not a third party's)."""
    return sorted(name for name, ep in _entry_points().items()
                  if ep.dist is not None and ep.dist.name == "virtlab")


def load(name):
    """The back-end class registered under `name`."""
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise UnknownBackend(f"unknown back end '{name}' (installed: {known})")
    return eps[name].load()


def create(name):
    return load(name)()


def io_bitmap_allows(view, tss_base, tss_limit, port, size):
    """True if the TSS I/O permission bitmap grants every byte of the access;
    a bitmap (or the part of it this access needs) beyond the TSS limit denies."""
    from .memory import GuestMemoryFault
    if tss_limit < 103:
        return False
    try:
        base = int.from_bytes(view.read(tss_base + 102, 2), "little")
        first, last = base + port // 8, base + (port + size - 1) // 8
        if last > tss_limit:
            return False
        bits = int.from_bytes(view.read(tss_base + first, last - first + 1), "little")
    except GuestMemoryFault:
        return False
    return not bits & (((1 << size) - 1) << (port % 8))
