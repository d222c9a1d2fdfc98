"""CPU profiles: per-event cycle costs of one reference machine, read from TOML.

A profile is a data file (``analysis/profiles/<name>.toml`` for the bundled ones,
or any path a user gives).  Format::

    [profile]
    name = "p4-2006"
    description = "3.8 GHz Pentium 4 672 (Prescott, VT-x), as in Adams & Agesen 2006"
    clock_ghz = 3.8
    cpi = { cycles = 1.5, assumption = "why" }    # cycles per guest instruction

    [events."native.syscall"]                      # the default cost of an event
    cycles = 242
    source = "Adams & Agesen 2006, native column: syscall/sysret round trip ~242"

    [backends.trap."exit.priv"]                    # this back end's own cost
    cycles = 2030
    source = "Adams & Agesen 2006: rdtsc trap-and-emulate 2030 cycles (P4)"

Every cost (``cpi`` and each event) is a table with ``cycles`` (a number >= 0;
``cpi`` at least 0.01) and at least one of ``source`` (a citation into
docs/cost-sources.md) or ``assumption`` (the written reasoning); both may be
given when a sourced number was adjusted.

``[events]`` must give a cost for every name in ``CHARGED`` (the core's charged
counters, virtlab/counters.py): it is the default, used by every back end.
``[backends.<name>]`` (optional, ``<name>`` an installed back end or a planned one,
analysis/counters.py) replaces the default for that back end only, event by event;
:meth:`Profile.cost` looks there first.  The bundled profiles use ``[events]`` for
the native costs and the hardware-assisted (VT-x: ``hw``, ``hw-npt``) technique,
and ``[backends.trap]`` for classic trap-and-emulate, which shares the exit
counter names but not their cost.  A back end that declares ``priced_like``
(virtlab/backend.py; bt names trap) takes that back end's section where it
has none of its own.

A counter an installed back end introduces carries its own default cost
(``CounterSpec.cost``, for this profile by name or for every profile); a profile
need not price it, and a value the profile gives (in ``[events]`` or
``[backends.<name>]``) wins over the declared one.

A family counter (``families()``: ``native.exception``, ``exit.priv``,
``reflect.exception``, and any a back end declares with a ``<name>.*`` glob)
counts every occurrence and its ``<family>.<sub>`` names (by vector or
instruction) count a subset.  A profile may give a cost for a ``<family>.<sub>``
name; that cost then replaces the family's cost for those occurrences (see
analysis/model.py: nothing is charged twice).

Errors are :class:`ProfileError`, one line naming the file, the key and the
problem.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from analysis.counters import catalog
from virtlab.counters import SHARED

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # the same parser, before it joined the stdlib
    import tomli as tomllib

DEFAULT = "p4-2006"

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

# The core's charged counters: no back end declares a default cost for them, so
# every profile's [events] must price them all.
CHARGED = tuple(s.name for s in SHARED if s.charged and not s.is_glob and not s.costs())

_SUB = re.compile(r"[a-z0-9_]+\Z")
_BARE = re.compile(r"[A-Za-z0-9_-]+\Z")


def families() -> tuple[str, ...]:
    """Counters whose <family>.<sub> names count a subset of their occurrences."""
    return catalog().families


def family_of(event: str, fams: tuple[str, ...] | None = None) -> str | None:
    """The family a ``<family>.<sub>`` name belongs to, else None (``fams``: the
    families, when the caller already has them)."""
    for fam in families() if fams is None else fams:
        if event.startswith(fam + ".") and _SUB.match(event[len(fam) + 1:]):
            return fam
    return None


def is_costable(event: str) -> bool:
    """True if a profile may give a cost for this counter name."""
    return event in catalog().charged or family_of(event) is not None


class ProfileError(ValueError):
    """A profile that cannot be found, read or parsed, or whose content is invalid."""


@dataclass(frozen=True)
class EventCost:
    cycles: float
    source: str | None = None
    assumption: str | None = None

    @property
    def basis(self) -> str:
        """The citation or reasoning, for reports."""
        parts = []
        if self.source:
            parts.append("source: " + self.source)
        if self.assumption:
            parts.append("assumption: " + self.assumption)
        return "; ".join(parts)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    clock_ghz: float
    cpi: EventCost
    events: dict[str, EventCost]
    backends: dict[str, dict[str, EventCost]] = field(default_factory=dict)
    path: str | None = None
    # Costs installed back ends declare for counters this profile does not price.
    declared: dict[str, EventCost] = field(default_factory=dict)

    def cost(self, event: str, backend: str) -> EventCost | None:
        """The back end's own cost of ``event`` if the profile gives one, else the
        default from [events], else the declared default, else None."""
        own = self.backends.get(backend, {})
        if event in own:
            return own[event]
        like = (catalog().priced_like or {}).get(backend)
        if like is not None and event in self.backends.get(like, {}):
            return self.backends[like][event]
        return self.events.get(event, self.declared.get(event))


def names() -> list[str]:
    """The bundled profiles, by name."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load(name_or_path) -> Profile:
    """A bundled profile by name, or a user's profile file by path."""
    text_name = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and text_name in names():
        path, label = PROFILE_DIR / (text_name + ".toml"), text_name + ".toml"
    else:
        path, label = Path(text_name), text_name
        looks_like_path = (isinstance(name_or_path, os.PathLike) or os.sep in text_name
                           or (os.altsep and os.altsep in text_name)
                           or text_name.endswith(".toml"))
        if not looks_like_path and not path.exists():
            raise ProfileError(f"unknown profile {text_name!r} (bundled: "
                               f"{', '.join(names())}; or give the path of a .toml file)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{label}: not UTF-8 text: {exc.reason}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{label}: invalid TOML: {exc}") from None
    return parse(data, label, str(path))


# -- validation -------------------------------------------------------------------

def _key(*parts: str) -> str:
    return ".".join(p if _BARE.match(p) else '"' + p.replace('"', '\\"') + '"'
                    for p in parts)


# A second per event on a 1 GHz CPU: dearer than any event ever measured, and
# far enough from a float's limit that count x cost stays finite (a cost of
# 1e308 made overheads of inf, which no table or axis can show).  A profile's
# costs and a sensitivity sweep's both stay below it.
MAX_COST = 1e9

# The fewest cycles per instruction a profile may give: no CPU retires a
# hundred instructions a cycle.  Near 0 (1e-320, which TOML reads as a
# positive number) every run would be priced at almost nothing, and the
# overhead, a ratio of two such numbers, at inf.
MIN_CPI = 0.01


class _Checker:
    def __init__(self, label):
        self.label = label

    def fail(self, key, problem):
        raise ProfileError(f"{self.label}: {key}: {problem}")

    def table(self, value, key):
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, got {_show(value)}")
        return value

    def only(self, table, allowed, *path):
        for k in table:
            if k not in allowed:
                self.fail(_key(*path, k) if path else _key(k),
                          f"unknown key (allowed: {', '.join(allowed)})")

    def require(self, table, key, *path):
        if key not in table:
            self.fail(_key(*path, key) if path else _key(key), "missing required key")
        return table[key]

    def text(self, value, key):
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, got {_show(value)}")
        return value

    def number(self, value, key, positive=False):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value) and (value > 0 if positive else value >= 0)
        if not ok:
            self.fail(key, f"must be a {'positive' if positive else 'non-negative'} "
                           f"number, got {_show(value)}")
        return float(value)

    def cost(self, value, *path, positive=False):
        t = self.table(value, _key(*path))
        self.only(t, ("cycles", "source", "assumption"), *path)
        cycles = self.number(self.require(t, "cycles", *path), _key(*path, "cycles"),
                             positive=positive)
        if cycles > MAX_COST:
            self.fail(_key(*path, "cycles"), f"must be at most {MAX_COST:g}, got {cycles:g}")
        source = t.get("source")
        assumption = t.get("assumption")
        if source is None and assumption is None:
            self.fail(_key(*path), "needs a source or an assumption (neither given)")
        if source is not None:
            self.text(source, _key(*path, "source"))
        if assumption is not None:
            self.text(assumption, _key(*path, "assumption"))
        return EventCost(cycles, source, assumption)

    def events(self, value, *path):
        t = self.table(value, _key(*path))
        out = {}
        for event, cost in t.items():
            if not is_costable(event):
                self.fail(_key(*path, event),
                          "not a chargeable counter name (see docs/counters.md; a back "
                          "end declares its own)")
            out[event] = self.cost(cost, *path, event)
        return out


def _show(value):
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."


def parse(data: dict, label: str = "<profile>", path: str | None = None) -> Profile:
    """Validate parsed TOML and build a Profile; ``label`` names the file in errors."""
    c = _Checker(label)
    c.only(data, ("profile", "events", "backends"))
    head = c.table(c.require(data, "profile"), "profile")
    c.only(head, ("name", "description", "clock_ghz", "cpi"), "profile")
    name = c.text(c.require(head, "name", "profile"), "profile.name")
    description = c.text(c.require(head, "description", "profile"), "profile.description")
    clock = c.number(c.require(head, "clock_ghz", "profile"), "profile.clock_ghz",
                     positive=True)
    cpi = c.cost(c.require(head, "cpi", "profile"), "profile", "cpi", positive=True)
    if cpi.cycles < MIN_CPI:
        c.fail("profile.cpi.cycles", f"must be at least {MIN_CPI:g} (no CPU retires more "
                                     f"than {1 / MIN_CPI:g} instructions a cycle), "
                                     f"got {cpi.cycles:g}")

    events = c.events(c.require(data, "events"), "events")
    for event in CHARGED:
        if event not in events:
            c.fail(_key("events", event), "missing required key (every charged counter "
                                          "needs a default cost)")

    backends = {}
    known = catalog().known_backends
    bt = c.table(data.get("backends", {}), "backends")
    for backend, table in bt.items():
        if backend not in known:
            c.fail(_key("backends", backend),
                   f"unknown back end (known: {', '.join(known)})")
        backends[backend] = c.events(table, "backends", backend)
    return Profile(name, description, clock, cpi, events, backends, path,
                   _declared(name, events))


def _declared(profile: str, events: dict) -> dict[str, EventCost]:
    """The default costs the installed back ends declare, for the counters the
    profile's [events] leaves out."""
    cat = catalog()
    out = {}
    for event in cat.charged:
        cost = cat.default_cost(event, profile)
        if cost is not None and event not in events:
            out[event] = EventCost(float(cost.cycles), cost.source or None,
                                   cost.assumption or None)
    return out
