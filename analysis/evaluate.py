"""From recorded runs to modeled figures.

A RunResult carries what really happened (counters, guest instructions, host
times); this module applies a profile's costs to it.  Nothing here runs a guest,
so a saved bench can be evaluated again under any profile in milliseconds.

Overheads are taken over the region of interest when both runs have one (every
catalog workload marks it) and over the whole run otherwise, so boot and
set-up do not dilute what a workload measures.
"""
from collections import Counter
from dataclasses import dataclass

from .counters import catalog
from .model import microseconds, model


@dataclass(frozen=True)
class Modeled:
    cycles: float                 # whole run
    roi_cycles: float             # the region of interest (None without one)
    per_iteration: float          # ROI cycles (or whole-run) / iterations
    us_per_iteration: float
    breakdown: object             # model.Breakdown of the measured region


def measured_region(result):
    """(counters, instructions) of the ROI when the run has one, else the run."""
    if result.roi_host_seconds is not None and result.roi_instructions is not None:
        return result.roi_counters, result.roi_instructions
    return result.counters, result.instructions


def unpriced(result):
    """Why the model cannot price a run, or None.  A saved bench outlives the
    back ends it ran: one uninstalled since took the declarations of its
    counters, and their costs, with it, so its runs would be priced wrong."""
    if result.instructions is None:
        return "its guest instructions were not counted"
    if result.backend not in catalog().known_backends:
        return (f"back end '{result.backend}' is not installed (its counters and their "
                "costs came with it)")
    return None


def not_priced(results):
    """A sentence per back end and reason for the successful runs that have
    no modeled figures: what the tables show as '-' without a failure."""
    tally = Counter((r.backend, why) for r in results if r.ok and (why := unpriced(r)))
    return [f"{n} run{'' if n == 1 else 's'} under {b} not priced: {why}"
            for (b, why), n in tally.items()]


def evaluate(result, profile):
    """Modeled figures for one run (None if the run failed or cannot be priced)."""
    if not result.ok or unpriced(result):
        return None
    whole = model(result.counters, result.instructions, profile, result.backend)
    counters, instructions = measured_region(result)
    region = model(counters, instructions, profile, result.backend)
    roi = region.total if counters is result.roi_counters else None
    per = region.total / result.iterations if result.iterations else None
    us = microseconds(per, profile) if per is not None else None
    return Modeled(whole.total, roi, per, us, region)


def modeled_fields(result, profile):
    """The modeled fields of a RunResult's record under `profile` (the result
    itself is not touched: results stay what the run recorded)."""
    m = evaluate(result, profile)
    return {"profile": profile.name,
            "modeled_cycles": m.cycles if m else None,
            "modeled_roi_cycles": m.roi_cycles if m else None,
            "modeled_cycles_per_iteration": m.per_iteration if m else None}


def region_host_seconds(result):
    return result.roi_host_seconds if result.roi_host_seconds is not None else result.host_seconds


def overhead(result, native, profile):
    """(modeled overhead, host overhead) of `result` relative to `native`, both
    over the measured region; the host one is the ratio of the two runs'
    median host times there (their repetitions: analysis/hosttime.py)."""
    if not (result.ok and native.ok):
        return None, None
    a, b = evaluate(result, profile), evaluate(native, profile)
    modeled = a.breakdown.total / b.breakdown.total if a and b and b.breakdown.total else None
    h_native = region_host_seconds(native)
    host = region_host_seconds(result) / h_native if h_native else None
    return modeled, host
