"""Claims that must be earned: a sentence, the values of one run, and the
condition those values must meet for the sentence to be printed.

A lesson that narrates a canned story teaches whatever the story says, even
on the day the code stopped doing it.  So a lesson never prints a sentence of
its own; it builds a Claim:

    Claim("trap-cli-exits",
          "under trap every cli trapped into the VMM: exit.priv.cli = {exits} "
          "for {iterations} iterations",
          {"exits": roi(trap, "exit.priv.cli"), "iterations": field(trap, "iterations")},
          ge("exits", "iterations"))

and check() gives the sentence only when the condition holds on the
evidence.  When it does not, what is printed is the condition and the values
that broke it, each with where it came from: what was observed, not a story.

Conditions are small data (Cmp, All) rather than Python lambdas so that the
condition itself can be printed and carried in the JSON beside its values.
"""
import operator
from math import floor, log10
from dataclasses import dataclass, field as dc_field


@dataclass(frozen=True)
class Evidence:
    """One value of a run, and where it came from.  `ref` says it in a form a
    program can follow (the JSON's runs and exhibits), `source` in words."""
    value: object
    source: str
    ref: dict = dc_field(default_factory=dict)
    fmt: str = ""                    # "hex" for addresses

    def shown(self):
        return show(self.value, self.fmt)


def show(value, fmt=""):
    """A value as a sentence shows it: counts with thousands separators,
    addresses in hex, other numbers with three significant digits."""
    if value is None:
        return "none"                  # the run did not give this value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:#010x}" if fmt == "hex" else f"{value:,}"
    if isinstance(value, float):
        return _significant(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v, fmt) for v in value) + "]"
    return str(value)


def _significant(x, digits=3):
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - floor(log10(abs(x))))
    return f"{x:,.{decimals}f}"


# -- conditions ---------------------------------------------------------------

class Lit:
    """A constant on one side of a comparison (a bare string names evidence)."""

    def __init__(self, value, fmt=""):
        self.value, self.fmt = value, fmt

    def __repr__(self):
        return show(self.value, self.fmt)


def _decreasing(seq):
    return len(seq) >= 2 and all(a > b for a, b in zip(seq, seq[1:]))


_BINARY = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
           "==": operator.eq, "!=": operator.ne}
_UNARY = {"is strictly decreasing": _decreasing}


class Cmp:
    """`left OP right`: each side names an evidence value or is a Lit.  The
    unary form `Cmp(name, "is strictly decreasing")` tests a list."""

    def __init__(self, left, op, right=None):
        if op not in _BINARY and op not in _UNARY:
            raise ValueError(f"unknown comparison {op!r}")
        self.left, self.op, self.right = left, op, right

    def names(self):
        return [s for s in (self.left, self.right) if isinstance(s, str)]

    def holds(self, values):
        a = _side(self.left, values)
        if self.op in _UNARY:
            return _UNARY[self.op](a)
        b = _side(self.right, values)
        if a is None or b is None:
            return False                  # a value the run did not give proves nothing
        return _BINARY[self.op](a, b)

    def text(self):
        if self.op in _UNARY:
            return f"{_name(self.left)} {self.op}"
        return f"{_name(self.left)} {self.op} {_name(self.right)}"

    def as_dict(self):
        return {"left": _json_side(self.left), "op": self.op,
                "right": None if self.op in _UNARY else _json_side(self.right)}


class All:
    """Every one of several conditions."""

    def __init__(self, *conds):
        self.conds = conds

    def names(self):
        return [n for c in self.conds for n in c.names()]

    def holds(self, values):
        return all(c.holds(values) for c in self.conds)

    def text(self):
        return " and ".join(c.text() for c in self.conds)

    def as_dict(self):
        return {"all": [c.as_dict() for c in self.conds]}


def _side(side, values):
    return side.value if isinstance(side, Lit) else values[side]


def _name(side):
    return repr(side) if isinstance(side, Lit) else side


def _json_side(side):
    return {"value": side.value} if isinstance(side, Lit) else {"name": side}


def ge(a, b): return Cmp(a, ">=", b)
def gt(a, b): return Cmp(a, ">", b)
def lt(a, b): return Cmp(a, "<", b)
def eq(a, b): return Cmp(a, "==", b)
def ne(a, b): return Cmp(a, "!=", b)


# -- claims -------------------------------------------------------------------

@dataclass
class Claim:
    id: str                      # stable, for tests and JSON readers
    says: str                    # the sentence: a format string over the evidence names
    evidence: dict               # name -> Evidence
    condition: object            # Cmp or All over the evidence names

    def __post_init__(self):
        missing = set(self.condition.names()) - set(self.evidence)
        if missing:                                 # a lesson's bug, not the run's
            raise ValueError(f"claim {self.id}: condition names no evidence {sorted(missing)}")

    def held(self):
        return self.condition.holds({k: e.value for k, e in self.evidence.items()})

    def text(self):
        """The sentence if the run earned it; else what the run showed."""
        if self.held():
            return self.says.format(**{k: e.shown() for k, e in self.evidence.items()})
        seen = "; ".join(f"{k} = {e.shown()} ({e.source})" for k, e in self.evidence.items())
        return f"not shown: this run does not meet {self.condition.text()}. Observed: {seen}"

    def as_dict(self):
        return {"id": self.id, "held": self.held(), "text": self.text(),
                "claim": self.says, "condition": self.condition.text(),
                "test": self.condition.as_dict(),
                "evidence": {k: {"value": e.value, "shown": e.shown(), "source": e.source,
                                 "ref": e.ref} for k, e in self.evidence.items()}}


@dataclass
class Exhibit:
    """Something of the run to look at: trace lines, a translation.  Its
    `data` is the same in plain values, for JSON and for claims to count."""
    title: str
    lines: list
    data: object = None


@dataclass
class Lesson:
    name: str
    title: str
    question: str                # what the workload does and what to look for
    runs: dict                   # label -> runs.Run
    claims: list
    exhibits: list = dc_field(default_factory=list)

    @property
    def ok(self):
        return all(r.result.ok for r in self.runs.values())
