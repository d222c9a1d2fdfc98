"""The counters the model knows: the core's shared declarations and those of
every installed back end (``Backend.counters``, virtlab/counters.py).

Nothing here lists a back end or a counter: the cost model, the profile
validation, the counter table and the plots all read :func:`catalog`, so a back
end installed as a package brings its own counters and default costs.

    python -c "from analysis.counters import markdown; print(markdown())"
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from virtlab import backend as backends
from virtlab.counters import SHARED, CounterSpec


class DeclarationError(ValueError):
    """Two declarations of one counter disagree, or a back end's own charged
    counter has no default cost."""


@dataclass(frozen=True)
class Catalog:
    specs: tuple[CounterSpec, ...]
    declared_by: dict[str, tuple[str, ...]]     # spec name -> back ends listing it
    backends: tuple[str, ...]                   # installed, sorted
    priced_like: dict = None                    # back end -> the one whose costs it shares

    # A catalog never changes once made, and the model asks it about every
    # counter of every row: what it derives from its specs is derived once.
    @functools.cached_property
    def _exact(self) -> dict[str, CounterSpec]:
        out = {}
        for s in self.specs:
            out.setdefault(s.name, s)
        return out

    def spec(self, name: str) -> CounterSpec | None:
        """The declaration of a counter name: exact first, then a glob."""
        exact = self._exact.get(name)
        if exact is not None:
            return exact
        return next((s for s in self.specs if s.is_glob and s.matches(name)), None)

    @functools.cached_property
    def charged(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs if s.charged and not s.is_glob)

    @functools.cached_property
    def families(self) -> tuple[str, ...]:
        """Charged counters whose ``<name>.*`` subsets are declared."""
        globs = {s.name for s in self.specs if s.is_glob}
        return tuple(n for n in self.charged if n + ".*" in globs)

    @functools.cached_property
    def not_charged(self) -> Mapping[str, str]:
        """Name or pattern -> why the model does not charge it (read-only)."""
        return MappingProxyType({s.name: s.reason for s in self.specs if not s.charged})

    def default_cost(self, name: str, profile: str):
        spec = self.spec(name)
        return spec.cost_for(profile) if spec else None

    def kind(self, name: str) -> str:
        spec = self.spec(name)
        return spec.kind if spec else "other"

    @property
    def known_backends(self) -> tuple[str, ...]:
        """The back ends a profile may price and the model may charge: the
        installed ones, whose declarations say what their counters are."""
        return tuple(sorted(self.backends))


def catalog() -> Catalog:
    """The declarations of what is installed (rebuilt when sys.path changes:
    scanning the installed packages costs milliseconds, and the model asks for
    every run it prices)."""
    return _build(_installed(tuple(sys.path)))


@functools.lru_cache(maxsize=8)
def _installed(path: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(backends.names())


@functools.lru_cache(maxsize=8)
def _build(names: tuple[str, ...]) -> Catalog:
    specs: dict[str, CounterSpec] = {s.name: s for s in SHARED}
    by: dict[str, list[str]] = {}
    like = {}
    for name in names:
        priced_like = getattr(backends.load(name), "priced_like", None)
        if priced_like:
            like[name] = priced_like
        for spec in backends.load(name).counters:
            _check(spec, name, specs.get(spec.name))
            specs[spec.name] = spec
            by.setdefault(spec.name, []).append(name)
    return Catalog(tuple(specs.values()), {k: tuple(v) for k, v in by.items()}, names, like)


def _check(spec, backend, earlier):
    if earlier is not None and earlier != spec:
        raise DeclarationError(f"back end {backend}: counter {spec.name} is declared "
                               f"differently elsewhere")
    if earlier is None and spec.charged and not spec.is_glob and not spec.costs():
        raise DeclarationError(f"back end {backend}: counter {spec.name} is charged but "
                               f"has no default cost")


def markdown(cat: Catalog | None = None) -> str:
    """The table of counters (docs/counters.md explains each group)."""
    cat = cat or catalog()
    lines = ["| counter | meaning | charged | kind | default cost | declared by |",
             "|---|---|---|---|---|---|"]
    for s in sorted(cat.specs, key=lambda s: s.name):
        charged = "yes" if s.charged else "no: " + s.reason
        costs = "; ".join(_cost_text(c) for c in s.costs()) or ("profile" if s.charged else "")
        who = ", ".join(cat.declared_by.get(s.name, ())) or "core"
        lines.append(f"| `{s.name}` | {_cell(s.meaning)} | {_cell(charged)} | {s.kind} "
                     f"| {_cell(costs)} | {who} |")
    return "\n".join(lines)


def _cost_text(c):
    basis = "; ".join(x for x in (c.source and "source: " + c.source,
                                  c.assumption and "assumption: " + c.assumption) if x)
    where = f" ({c.profile})" if c.profile else ""
    return f"{c.cycles:g}{where}, {basis}"


def _cell(text):
    return text.replace("|", "/").replace("\n", " ")
