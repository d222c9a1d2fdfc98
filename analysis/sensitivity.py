"""Sensitivity: how the comparison changes with one event's cost.

The counters of a bench do not depend on the profile, so varying a cost (say,
the VM exit round trip of a hardware-assisted VMM) needs no guest to run again:
the recorded runs are re-evaluated at each value.  For every back end the sweep
reports the geometric-mean modeled overhead over the workloads; where two back
ends' curves cross, one technique overtakes the other.
"""
import dataclasses
import math

import numpy as np
import pandas as pd

from .counters import catalog
from .evaluate import measured_region, overhead
from .profile import MAX_COST, EventCost
from .table import natives


def with_cost(profile, event, cycles, backend=None):
    """A copy of `profile` with one event's cost replaced: in one back end's
    override table, or (backend None) everywhere, the generic table and every
    back end's own cost of it.  A back end whose profile prices the event
    itself (trap's exit.priv) would otherwise stay flat while the rest move."""
    cost = EventCost(cycles=float(cycles), source=None,
                     assumption=f"varied by a sensitivity sweep to {cycles:g}")
    if backend is None:
        tables = {b: {**t, event: cost} if event in t else t for b, t in profile.backends.items()}
        return dataclasses.replace(profile, events={**profile.events, event: cost},
                                   backends=tables)
    table = {**profile.backends.get(backend, {}), event: cost}
    return dataclasses.replace(profile, backends={**profile.backends, backend: table})


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def check_target(results, profile, event, backend):
    """Refuse an event the model does not charge, or a back end the results do
    not contain: a sweep of either would be silently flat."""
    from .profile import is_costable
    if not is_costable(event):
        raise ValueError(f"'{event}' is not a charged event (see docs/counters.md)")
    present = {r.backend for r in results}
    if backend is not None and backend not in present:
        raise ValueError(f"back end '{backend}' is not in these results "
                         f"({', '.join(sorted(present))})")
    if backend is not None and backend not in catalog().known_backends:
        raise ValueError(f"back end '{backend}' is not installed: its runs cannot be priced")


def flat(results, event, backend=None):
    """Why the sweep of `event` (for `backend`, or everywhere) is flat, or
    None: no run it prices (the native baseline included, for a sweep
    everywhere) counted the event in its measured region.  Not refused:
    a flat line is an answer too (a back end that never exits on it), but
    one to be told."""
    swept = [r for r in results if backend is None or r.backend == backend]
    if any(measured_region(r)[0].get(event) for r in swept):
        return None
    whose = f"no run under {backend}" if backend else "no run"
    return (f"{whose} counted '{event}' in its measured region: "
            f"{'its curve is' if backend else 'every curve is'} flat")


def sweep(results, profile, event, costs, backend=None, workloads=None):
    """DataFrame (cost, backend, overhead): geometric-mean modeled overhead of
    each back end at each cost of `event`."""
    ref = natives(results)
    rows = []
    for c in costs:
        prof = with_cost(profile, event, c, backend)
        per_backend = {}
        for r in results:
            if r.backend == "native" or (workloads and r.workload not in workloads):
                continue
            native = ref.get((r.workload, r.scale))
            if native is None:
                continue
            ovh, _ = overhead(r, native, prof)
            per_backend.setdefault(r.backend, []).append(ovh)
        for b, xs in per_backend.items():
            rows.append({"cost": float(c), "backend": b, "overhead": geomean(xs)})
    return pd.DataFrame(rows, columns=["cost", "backend", "overhead"])


def crossovers(df):
    """Where one back end's overhead curve crosses another's: a list of
    {cost, faster, slower}, `faster` being the one that is cheaper beyond it."""
    out = []
    names = list(dict.fromkeys(df["backend"]))
    curves = {b: df[df["backend"] == b].sort_values("cost") for b in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ca, cb = curves[a], curves[b]
            x = ca["cost"].to_numpy()
            d = ca["overhead"].to_numpy(dtype=float) - cb["overhead"].to_numpy(dtype=float)
            for k in range(len(x) - 1):
                if np.isnan(d[k]) or np.isnan(d[k + 1]) or d[k] == 0 or d[k] * d[k + 1] > 0:
                    continue
                at = x[k] + (x[k + 1] - x[k]) * d[k] / (d[k] - d[k + 1])
                faster, slower = (a, b) if d[k + 1] < 0 else (b, a)
                out.append({"cost": float(at), "faster": faster, "slower": slower})
    return sorted(out, key=lambda c: c["cost"])


# Each step re-prices every saved run, about 0.2 s for a full bench: 200 steps
# draw a smooth curve (crossovers are interpolated between steps) in under a
# minute, where 100,000 ran for hours.
MAX_STEPS = 200


def parse_range(text):
    """'LO:HI[:STEPS]' -> a list of costs."""
    parts = text.split(":")
    try:
        lo, hi = float(parts[0]), float(parts[1])
        steps = int(parts[2]) if len(parts) > 2 else 21
    except (ValueError, IndexError):
        raise ValueError(f"range must be LO:HI[:STEPS], got '{text}'") from None
    if len(parts) > 3 or not 2 <= steps <= MAX_STEPS or not 0 <= lo < hi <= MAX_COST:
        raise ValueError(f"range must be LO:HI[:STEPS] with 0 <= LO < HI <= {MAX_COST:g} and "
                         f"2 <= STEPS <= {MAX_STEPS}, got '{text}'")
    return list(np.linspace(lo, hi, steps))
