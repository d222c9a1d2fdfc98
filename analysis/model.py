"""The cost model: a run's counters and instruction count -> modeled cycles.

    total = instructions x CPI  +  sum over charged counters of count x cost

where each cost comes from the profile (:meth:`Profile.cost`: the back end's own
cost first, else the default in [events]).  Native event costs (``native.*``) are
part of every back end's total whenever those counters occur (``hw`` counts the
system calls and exceptions VT-x lets the guest handle itself as ``native.*``).

Which counters exist, which are charged and which are families comes from the
declarations of the core and the installed back ends (analysis/counters.py).

Charged: each name's count times its cost.  A back end's own counter is priced
by its declared default cost unless the profile gives one.

Families (``families()``): ``native.exception``, ``exit.priv`` and
``reflect.exception`` (and any a back end declares) count every occurrence; ``<family>.<sub>`` (by vector or by
instruction) count a subset.  A ``<family>.<sub>`` is charged only when the profile
gives it a cost (for this back end or by default); those occurrences are then
charged at that cost *instead of* the family's, and the family is charged for the
rest: ``(count(family) - sum of count(sub) with a cost) x cost(family)``.  So each
occurrence is charged exactly once.

Not charged (``NOT_CHARGED``, with the reason, from the declarations): sums of
other counters, the mechanism behind a charged exit, events that run natively or
cost nothing by design.  Counters the model does not know at all are reported in
``Breakdown.unknown`` and not charged.

Idle time is not modeled: ``native.hlt`` and ``exit.hlt`` charge entering and
leaving the halt, not the time asleep.  Nested-paging TLB-miss cost (``hw-npt``) and
cache/TLB pollution by VMM code are not visible in the counters and not modeled.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from analysis.counters import catalog
from analysis.profile import CHARGED, EventCost, Profile, family_of  # noqa: F401


def __getattr__(name):
    # NOT_CHARGED is read from what is installed at the time of asking.
    if name == "NOT_CHARGED":
        return catalog().not_charged
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _not_charged(name: str, not_charged: dict) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in not_charged)


@dataclass(frozen=True)
class Charge:
    """One line of the bill: ``cycles == count * cost.cycles``."""
    event: str
    count: int
    cost: EventCost
    cycles: float
    override: bool          # the cost is the back end's own ([backends.<name>])


@dataclass(frozen=True)
class Breakdown:
    profile: str
    backend: str
    instructions: int
    cpi: float
    base_cycles: float                      # instructions x CPI
    events: dict[str, float]                # charged name -> cycles (count x cost)
    charges: tuple[Charge, ...]             # the same, with counts and costs
    total: float                            # base_cycles + sum(events)
    uncharged: dict[str, int] = field(default_factory=dict)   # known, not charged
    unknown: dict[str, int] = field(default_factory=dict)     # names the model lacks

    @property
    def event_cycles(self) -> float:
        return sum(self.events.values())

    def overhead_by_event(self) -> dict[str, float]:
        """Cycles of the events that exist only because of a VMM (everything
        charged except ``native.*``), largest first."""
        items = [(k, v) for k, v in self.events.items() if not k.startswith("native.")]
        return dict(sorted(items, key=lambda kv: (-kv[1], kv[0])))

    @property
    def overhead_cycles(self) -> float:
        return sum(self.overhead_by_event().values())

    def shares(self) -> dict[str, float]:
        """Each part's fraction of the total ("base" for instructions x CPI)."""
        if not self.total:
            return {}
        out = {"base": self.base_cycles / self.total}
        for k, v in sorted(self.events.items(), key=lambda kv: (-kv[1], kv[0])):
            out[k] = v / self.total
        return out


def model(counters: dict, instructions: int, profile: Profile, backend: str) -> Breakdown:
    """Modeled cycles of a run (or its ROI) under ``backend`` on ``profile``."""
    _check(counters, instructions, backend)
    bill = _Bill(profile, backend)
    taken = bill.counters(counters)
    bill.family_rest(counters, taken)
    charges = sorted(bill.charges, key=lambda c: c.event)
    base = instructions * profile.cpi.cycles
    events = {c.event: c.cycles for c in charges}
    return Breakdown(profile=profile.name, backend=backend, instructions=instructions,
                     cpi=profile.cpi.cycles, base_cycles=base, events=events,
                     charges=tuple(charges), total=base + sum(events.values()),
                     uncharged=bill.uncharged, unknown=bill.unknown)


def _check(counters, instructions, backend):
    """The model's inputs are counts: non-negative integers, of a back end
    it knows.  Anything else is a caller's mistake, said before any pricing."""
    cat = catalog()
    if backend not in cat.known_backends:
        raise ValueError(f"unknown back end {backend!r} "
                         f"(known: {', '.join(cat.known_backends)})")
    if isinstance(instructions, bool) or not isinstance(instructions, int) or instructions < 0:
        raise ValueError(f"instructions must be a non-negative integer, got {instructions!r}")
    for k, v in counters.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"counter {k!r} must be a non-negative integer, got {v!r}")


class _Bill:
    """The charges of one run under one back end and profile, made up
    counter by counter: each occurrence of an event is charged once."""

    def __init__(self, profile, backend):
        self.profile, self.backend = profile, backend
        self.charges: list[Charge] = []
        self.uncharged: dict[str, int] = {}
        self.unknown: dict[str, int] = {}

    def charge(self, event, count, cost):
        if count:
            over = event in self.profile.backends.get(self.backend, {})
            self.charges.append(Charge(event, count, cost, count * cost.cycles, over))

    def need(self, event):
        """The cost of an event the model must charge: a profile without it
        cannot price this run."""
        cost = self.profile.cost(event, self.backend)
        if cost is None:
            raise ValueError(f"profile {self.profile.name} has no cost for {event!r} "
                             f"(back end {self.backend})")
        return cost

    def counters(self, counters):
        """Charge every counter but the families; return, per family, the
        occurrences its priced sub-counters took out of it."""
        cat = catalog()
        families, charged, free = cat.families, set(cat.charged), cat.not_charged
        taken = {fam: 0 for fam in families}
        for name in sorted(counters):
            count = counters[name]
            if not count:
                continue
            fam = family_of(name, families)
            if fam is not None:
                cost = self.profile.cost(name, self.backend)
                if cost is None:
                    self.uncharged[name] = count
                else:
                    self.charge(name, count, cost)
                    taken[fam] += count
            elif name in charged:
                if name not in families:          # those after their subsets
                    self.charge(name, count, self.need(name))
            elif _not_charged(name, free):
                self.uncharged[name] = count
            else:
                self.unknown[name] = count
        return taken

    def family_rest(self, counters, taken):
        """Each family is charged for the occurrences no priced sub-counter
        took (its own cost, once each)."""
        for fam, took in taken.items():
            total = counters.get(fam, 0)
            rest = total - took
            if rest < 0:
                raise ValueError(f"inconsistent counters: {fam} = {total} but its "
                                 f"sub-counters with their own cost sum to {took}")
            if rest:
                self.charge(fam, rest, self.need(fam))


def per_iteration(breakdown: Breakdown, iterations: int) -> float:
    """Modeled cycles per iteration of the workload's loop."""
    if iterations <= 0:
        raise ValueError(f"iterations must be positive, got {iterations!r}")
    return breakdown.total / iterations


def microseconds(cycles: float, profile: Profile) -> float:
    """Cycles as microseconds at the profile's clock."""
    return cycles / (profile.clock_ghz * 1000.0)


def relative_overhead(breakdown: Breakdown, native: Breakdown) -> float:
    """Modeled slowdown against the native run of the same workload and scale:
    ``total / native.total - 1`` (0.25 means 25% slower)."""
    if not native.total:
        raise ValueError("native run has zero modeled cycles")
    return breakdown.total / native.total - 1.0
