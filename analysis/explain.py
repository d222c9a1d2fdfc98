"""Explanations of model results that surprise a reader, generated from the data.

A back end cannot really run a guest faster than the bare machine, yet the
model can say so: it charges each recorded event at the profile's cost, and
where a back end replaces one of native's dear events by a cheaper one (a
port access that native pays as a bus access and trap emulates in software,
a disk that pv reaches through a shared ring with no port I/O at all), the
row comes out below 1.  The report names, for every such row, the counters
responsible and the basis of their costs, taken from the row's own bill: no
workload or back end is named here.
"""
from dataclasses import dataclass

from .counters import catalog
from .table import against_native

SHOWN = 3          # counters named on each side of a row; the rest are summed


@dataclass(frozen=True)
class Part:
    """One counter of a row's difference from native, per iteration."""
    event: str
    native: tuple          # (count per iteration, cost per event) under native
    backend: tuple         # the same under the back end
    cycles: float          # back end minus native, per iteration
    basis: dict            # "native"/"backend" -> (cycles, basis) of the cost used


@dataclass(frozen=True)
class Faster:
    """A row whose modeled cycles are below native's on the same workload."""
    workload: str
    backend: str
    overhead: float
    net: float             # cycles per iteration, negative
    saved: list            # Parts native pays more for, largest first
    added: list            # Parts the back end pays more for, largest first


def faster_than_native(results, profile):
    """Every row modeled as faster than its native run, with its reasons."""
    out = []
    for r, a, b in against_native(results, profile):
        if b.breakdown.total and a.breakdown.total < b.breakdown.total:
            out.append(_explain(r, a.breakdown, b.breakdown))
    return out


def _explain(result, mine, native):
    per = result.iterations or 1
    parts = [_part(e, mine, native, per) for e in sorted(set(mine.events) | set(native.events))]
    base = (mine.base_cycles - native.base_cycles) / per
    if base:
        parts.append(Part("instructions", (native.instructions / per, native.cpi),
                          (mine.instructions / per, mine.cpi), base, {}))
    saved = sorted((p for p in parts if p.cycles < 0), key=lambda p: p.cycles)
    added = sorted((p for p in parts if p.cycles > 0), key=lambda p: -p.cycles)
    return Faster(result.workload, result.backend, mine.total / native.total,
                  (mine.total - native.total) / per, saved, added)


def _part(event, mine, native, per):
    def side(bd):
        c = next((c for c in bd.charges if c.event == event), None)
        return (c.count / per, c.cost.cycles) if c else (0.0, None)

    basis = {who: (c.cost.cycles, c.cost.basis)
             for who, bd in (("native", native), ("backend", mine))
             for c in bd.charges if c.event == event}
    return Part(event, side(native), side(mine),
                (mine.events.get(event, 0.0) - native.events.get(event, 0.0)) / per, basis)


# -- in brief, under a bench's table ---------------------------------------------

def in_brief(found):
    """What the rows below native have in common, for the note under a
    bench's table: {(counter, native's cost per event): {back end:
    [workloads]}}, by each row's largest saving (from its own bill)."""
    by = {}
    for f in found:
        top = f.saved[0]
        by.setdefault((top.event, top.native[1]), {}).setdefault(f.backend, []).append(f.workload)
    return by


def what_native_pays(event, cost):
    """'native.io, 3,209 cycles each (a port access ...)'."""
    if event == "instructions":
        return "more guest instructions"
    spec = catalog().spec(event)
    meaning = f" ({spec.meaning})" if spec else ""
    return f"{event}, {cost:,.0f} cycles each{meaning}"


def note(found):
    """The paragraph under a bench's full markdown table ('' without rows
    below native)."""
    if not found:
        return ""
    parts = [f"native pays for {what_native_pays(event, cost)}, where these pay less or "
             "nothing for the same work: "
             + "; ".join(f"{b} on {', '.join(ws)}" for b, ws in backends.items())
             for (event, cost), backends in in_brief(found).items()]
    return ("\nRows whose modeled_overhead is below 1.00 are faster than native by the "
            "model, not by measurement: " + ". Also, ".join(parts) + ". `virtlab report` "
            "itemises each row's bill and the basis of its costs.\n")


# -- markdown -------------------------------------------------------------------

def markdown(found):
    """The report's paragraph for these rows ('' when there are none)."""
    if not found:
        return ""
    lines = ["### Why some rows are faster than native", "",
             "A row below 1.00 is what the cost model computes, not a measurement of a "
             "back end beating the bare machine. The model charges every event a run "
             "records at the profile's cost for it, so a row comes out below 1.00 when "
             "native pays for events the back end avoids, or pays more for them, and the "
             "back end's own costs do not make up the difference. Whether that holds on "
             "real hardware depends on the costs compared: their bases are listed after "
             "the rows. From each row's bill, per iteration of the workload's loop:", ""]
    for f in found:
        lines.append(_row(f))
    lines += ["", "The costs named above and their basis (profile and declarations):", ""]
    lines += _bases(found)
    return "\n".join(lines)


def _row(f):
    text = (f"- **`{f.workload}` under `{f.backend}`: {f.overhead:.2f} x native** "
            f"({_num(f.net)} cycles per iteration). Native pays for "
            + _list(f.saved, f.backend) + ".")
    if f.added:
        text += f" {f.backend} pays instead for " + _list(f.added, f.backend) + "."
    else:
        text += f" {f.backend} pays nothing native does not."
    return text


def named(parts):
    """The parts worth naming (largest first): at most SHOWN, none under 1%
    of the largest (one shadow fill in 10,000 iterations explains nothing)."""
    return [p for p in parts[:SHOWN] if abs(p.cycles) >= 0.01 * abs(parts[0].cycles)]


def _list(parts, backend):
    shown = named(parts)
    text = "; ".join(_side(p, backend) for p in shown)
    rest = parts[len(shown):]
    if rest:
        text += (f"; and {len(rest)} more counter{'s' if len(rest) > 1 else ''} "
                 f"({_num(sum(p.cycles for p in rest))} cycles)")
    return text


def _side(p, backend):
    """`native.io`: native 1 x 3209, trap none (-3,209 cycles)."""
    if p.event == "instructions":
        return (f"guest instructions: native {p.native[0]:,.4g}, {backend} "
                f"{p.backend[0]:,.4g} at CPI {p.native[1]:g} ({_num(p.cycles)} cycles)")
    return (f"`{p.event}`: native {_count(p.native)}, {backend} {_count(p.backend)} "
            f"({_num(p.cycles)} cycles)")


def _count(side):
    n, cost = side
    return "none" if not n else f"{n:,.4g} x {cost:g}"


def _num(x):
    return f"{x:+,.0f}" if abs(x) >= 10 else f"{x:+.3g}"


def _bases(found):
    """One line per (counter, cost) named above, each once."""
    seen = {}
    for f in found:
        for p in named(f.saved) + named(f.added):
            for who, (cycles, basis) in p.basis.items():
                owner = "native" if who == "native" else f.backend
                seen.setdefault((p.event, cycles, basis), []).append(owner)
    lines = []
    cat = catalog()
    for (event, cycles, basis), who in sorted(seen.items()):
        names = ", ".join(dict.fromkeys(who))
        spec = cat.spec(event)
        meaning = f" ({spec.meaning})" if spec else ""
        lines.append(f"- `{event}`{meaning} at {cycles:g} cycles for {names}: "
                     f"{basis.replace('|', '/').replace(chr(10), ' ')}")
    return lines
