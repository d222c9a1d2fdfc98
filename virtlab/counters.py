"""Event counters: semantic events with stable dotted names.

Back ends count what really happened (an exit, a reflection, a hypercall, a native
event); the cost model turns these counts into modeled cycles, so a name is a
contract: see docs/counters.md for the list and meaning of each.
"""
import math
from dataclasses import dataclass
from fnmatch import fnmatchcase


class Counters(dict):
    """A dict of name -> count that starts every name at zero."""

    def __missing__(self, key):
        return 0

    def add(self, key, n=1):
        self[key] = self.get(key, 0) + n

    def snapshot(self):
        return {k: v for k, v in self.items() if v}

    @staticmethod
    def diff(after, before):
        out = {}
        for k, v in after.items():
            d = v - before.get(k, 0)
            if d:
                out[k] = d
        return dict(sorted(out.items()))


class Named(dict):
    """The counter names under one prefix, each made once:
    Named("exit.priv.")["cli"] is "exit.priv.cli".  A name built afresh on
    every exit is a new string, which each increment then hashes afresh;
    once made, a name is found by a dictionary lookup in C, with no Python
    call (__missing__ runs only the first time)."""
    __slots__ = ("prefix",)

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def __missing__(self, name):
        made = self[name] = self.prefix + name
        return made


# -- declarations: what a counter means and what it costs ---------------------------
#
# A back end lists the counters it may report in its ``counters`` class attribute
# (virtlab/backend.py), as CounterSpec values.  The shared vocabulary below is
# declared once here because the core (virtlab/vmm/) and several back ends produce
# it; a back end names the groups it uses and adds its own.  analysis/ builds the
# cost model, the counter table and the plots from what is installed, so a new
# back end brings its counters and their costs without an edit to the core.


@dataclass(frozen=True)
class Cost:
    """A default cost in cycles per event, with its basis: a ``source`` (a
    citation; see docs/cost-sources.md) or a written ``assumption``, or both.
    ``profile`` names the CPU profile it is for; None means every profile."""
    cycles: float
    source: str = ""
    assumption: str = ""
    profile: str | None = None

    def __post_init__(self):
        ok = isinstance(self.cycles, (int, float)) and not isinstance(self.cycles, bool) \
            and math.isfinite(self.cycles) and self.cycles >= 0
        if not ok:
            raise ValueError(f"cost cycles must be a non-negative number, got {self.cycles!r}")
        if not (self.source.strip() or self.assumption.strip()):
            raise ValueError("a cost needs a source or an assumption")


@dataclass(frozen=True)
class CounterSpec:
    """One counter name (or a glob such as ``exit.priv.*`` for a set of names).

    ``charged``: the cost model charges each occurrence; if not, ``reason`` says
    why.  A glob ``X.*`` declared beside a charged ``X`` names X's subsets (by
    vector or instruction): they are charged through X unless a profile prices
    them (analysis/model.py).  ``kind`` groups counters in the breakdown plot.
    ``cost``: the default cost(s) of a counter the back end introduces, one
    Cost or a tuple of them (one per profile, and optionally one for all); a
    CPU profile's own value wins over it."""
    name: str
    meaning: str
    charged: bool = True
    kind: str = "other"
    cost: Cost | tuple[Cost, ...] | None = None
    reason: str = ""

    def __post_init__(self):
        if not self.charged and not self.reason.strip():
            raise ValueError(f"counter {self.name}: not charged needs a reason")
        if self.cost is not None and not self.charged:
            raise ValueError(f"counter {self.name}: a cost for a counter not charged")

    @property
    def is_glob(self):
        return any(ch in self.name for ch in "*?[")

    def matches(self, name):
        return fnmatchcase(name, self.name)

    def costs(self):
        if self.cost is None:
            return ()
        return self.cost if isinstance(self.cost, tuple) else (self.cost,)

    def cost_for(self, profile):
        """The default cost for CPU profile ``profile``: its own, else the one
        for every profile, else None."""
        general = None
        for c in self.costs():
            if c.profile == profile:
                return c
            if c.profile is None:
                general = c
        return general


def _free(name, meaning, kind, reason):
    return CounterSpec(name, meaning, charged=False, kind=kind, reason=reason)


def _subset(family, by):
    return _free(family + ".*", f"{family} by {by}", KIND_OF_FAMILY[family],
                 f"a subset of {family}, charged there unless the profile gives the "
                 f"{by} its own cost")


# Kinds of the shared counters, for the breakdown plot.
KIND_OF_FAMILY = {"native.exception": "exceptions", "exit.priv": "privileged",
                  "reflect.exception": "exceptions"}

# Priced by every CPU profile (analysis/profiles/*.toml), so no default cost here.
NATIVE = (
    CounterSpec("native.syscall", "a software interrupt (`int n`) delivered through the "
                "guest IDT", kind="syscalls"),
    CounterSpec("native.exception", "a CPU exception delivered through the guest IDT "
                "(all vectors)", kind="exceptions"),
    _subset("native.exception", "vector"),
    CounterSpec("native.irq", "an external interrupt delivered", kind="interrupts"),
    CounterSpec("native.io", "a port access (`in`/`out`) reaching a device", kind="io"),
    CounterSpec("native.hlt", "a `hlt`", kind="privileged"),
    # Priced here rather than in every profile, as a back end prices what it
    # introduces: the fast system call's entry (its sysexit runs in the
    # instruction count).
    CounterSpec("native.sysenter", "a `sysenter` into the guest kernel", kind="syscalls",
                cost=(Cost(242, source="Adams & Agesen 2006, native column: the fast "
                           "system call's round trip, about 242 cycles on the Pentium 4",
                           profile="p4-2006"),
                      Cost(121, assumption="the Pentium 4 figure halved, as native.syscall "
                           "is on the Core-family profiles: no per-CPU figure is published"))),
)

EXITS = (
    _free("exit.total", "every exit of any kind", "exits",
          "the sum of all exits, each charged under its own name"),
    CounterSpec("exit.priv", "a privileged instruction emulated", kind="privileged"),
    _subset("exit.priv", "instruction"),
    CounterSpec("exit.io", "a port access (every port is intercepted)", kind="io"),
    CounterSpec("exit.pf.hidden", "a page fault the guest never sees: a shadow fill or "
                "a traced page-table write", kind="paging"),
    CounterSpec("exit.pf.true", "a page fault that is the guest's own", kind="paging"),
    CounterSpec("exit.np.hidden", "a segment-not-present fault (#NP, or #SS for a stack "
                "segment) the guest never sees: the first load of a descriptor, whose accessed bit the VMM sets in the guest's "
                "GDT, or the first load since the guest wrote its GDT's page, which made the "
                "shadow entry stale (ring compression's shadow GDT)", kind="privileged",
                # Priced here, not in every profile: it happens a few times a run
                # (once per descriptor), and a user's own profile need not know it.
                cost=(Cost(2030, source="Adams & Agesen 2006: a trap-and-emulate round trip "
                           "(rdtsc) 2030 cycles on the P4; the VMM sets one bit",
                           profile="p4-2006"),
                      Cost(1205, assumption="a trap-and-emulate round trip on the Core "
                           "family: the #DE delivery 445 + 760 VMM instructions at CPI 1.0, "
                           "as the profiles price trap's exit.priv"))),
    CounterSpec("exit.hlt", "`hlt`: the virtual CPU sleeps until the next interrupt",
                kind="privileged"),
    CounterSpec("exit.irq", "an external interrupt taken by the VMM for injection",
                kind="interrupts"),
    CounterSpec("exit.cpuid", "`cpuid` (VT-x exits on it unconditionally)",
                kind="privileged"),
)

REFLECTION = (
    _free("reflect.total", "an event the VMM delivered into the guest kernel", "exits",
          "the sum of all reflections, each charged under its own name"),
    CounterSpec("reflect.syscall", "a software interrupt from the guest", kind="syscalls"),
    CounterSpec("reflect.pf", "a true page fault, with the guest's CR2 and error code",
                kind="paging"),
    CounterSpec("reflect.exception", "another exception", kind="exceptions"),
    _subset("reflect.exception", "vector"),
    CounterSpec("inject.irq", "a virtual interrupt injected", kind="interrupts"),
)

SHADOW = (
    _free("shadow.*", "shadow paging: fill, trace, new, unshadow, flush", "paging",
          "the mechanism behind exit.pf.hidden (fill, trace) and exit.priv.mov_cr3 "
          "(new shadow); charged through those exits"),
)

SENSITIVE = (
    _free("sensitive.*", "a sensitive but unprivileged instruction executed", "privileged",
          "sensitive but unprivileged instructions run natively (no exit); their cost "
          "is in the instruction count"),
)

SHARED = NATIVE + EXITS + REFLECTION + SHADOW + SENSITIVE
