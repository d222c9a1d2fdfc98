"""The bench table: one row per workload and back end, as a pandas DataFrame.

The same frame feeds every output (markdown, CSV, JSON, LaTeX, the terminal
view, the report), so every format shows the same numbers; CSV and JSON keep
every digit, the others show them as analysis/numbers.py says.

The host columns are this tool's time on the emulated CPU (what the
implementation costs here, not what the technique costs), over the measured
region as the modeled overhead is: the median of the row's repetitions, their
minimum and interquartile range (analysis/hosttime.py).  host_overhead is the
ratio of the row's median to native's on the same workload and scale.
"""
import json

import pandas as pd

from . import latex, numbers
from .evaluate import evaluate, overhead
from .hosttime import host_time

COLUMNS = ["workload", "backend", "profile", "iterations", "modeled_cycles",
           "modeled_cycles_per_iteration", "modeled_us_per_iteration", "modeled_overhead",
           "repetitions", "roi_host_seconds", "roi_host_seconds_min", "roi_host_seconds_iqr",
           "host_overhead", "matches_native", "ok", "reason"]

HOST = ("roi_host_seconds", "roi_host_seconds_min", "roi_host_seconds_iqr", "host_overhead")

# How the human-readable formats show each numeric column.
SHOWN = {"modeled_cycles": numbers.cycles, "modeled_cycles_per_iteration": numbers.cycles,
         "modeled_us_per_iteration": numbers.significant, "modeled_overhead": numbers.ratio,
         "roi_host_seconds": numbers.significant, "roi_host_seconds_min": numbers.significant,
         "roi_host_seconds_iqr": numbers.significant, "host_overhead": numbers.ratio,
         # a sensitivity sweep (analysis/sensitivity.py) renders through here too
         "cost": numbers.significant, "overhead": numbers.ratio}
NUMERIC = ("iterations", "repetitions", *SHOWN)


def natives(results):
    return {(r.workload, r.scale): r for r in results if r.backend == "native"}


def against_native(results, profile):
    """(row, its model, its native run's model) for every row of a
    virtualizing back end whose native run is among `results`, both priced."""
    ref = natives(results)
    for r in results:
        native = ref.get((r.workload, r.scale))
        if r.backend == "native" or native is None:
            continue
        a, b = evaluate(r, profile), evaluate(native, profile)
        if a is not None and b is not None:
            yield r, a, b


def frame(results, profile):
    ref = natives(results)
    rows = []
    for r in results:
        m = evaluate(r, profile)
        native = ref.get((r.workload, r.scale))
        mod_ovh, host_ovh = overhead(r, native, profile) if native else (None, None)
        host = host_time(r)
        rows.append({
            "workload": r.workload, "backend": r.backend, "profile": profile.name,
            "iterations": r.iterations,
            "modeled_cycles": m.cycles if m else None,
            "modeled_cycles_per_iteration": m.per_iteration if m else None,
            "modeled_us_per_iteration": m.us_per_iteration if m else None,
            "modeled_overhead": mod_ovh,
            "repetitions": host.samples, "roi_host_seconds": host.median,
            "roi_host_seconds_min": host.minimum, "roi_host_seconds_iqr": host.iqr,
            "host_overhead": host_ovh,
            "matches_native": r.matches_native, "ok": r.ok, "reason": r.reason,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def breakdown(results, profile):
    """Each back end's overhead cycles over native, by event kind: the back
    end's charged cycles per event minus native's, plus the difference in
    instruction cycles.  The parts of a row sum to its total overhead."""
    rows = []
    for r, a, b in against_native(results, profile):
        parts = {"instructions": a.breakdown.base_cycles - b.breakdown.base_cycles}
        for event in set(a.breakdown.events) | set(b.breakdown.events):
            parts[event] = a.breakdown.events.get(event, 0) - b.breakdown.events.get(event, 0)
        per = r.iterations or 1
        for event, cycles in sorted(parts.items()):
            if cycles:
                rows.append({"workload": r.workload, "backend": r.backend, "event": event,
                             "cycles": cycles, "cycles_per_iteration": cycles / per})
    return pd.DataFrame(rows, columns=["workload", "backend", "event", "cycles",
                                       "cycles_per_iteration"])


def render(df, fmt):
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        records = df.astype(object).where(pd.notna(df), None).to_dict(orient="records")
        return json.dumps(records, indent=2) + "\n"        # full precision, null for none
    header, rows = labels(df), shown(df)
    if fmt == "latex":
        return latex.tabular(header, rows, [c in NUMERIC for c in df.columns])
    return pd.DataFrame(rows, columns=header).to_markdown(
        index=False, disable_numparse=True,
        colalign=["right" if c in NUMERIC else "left" for c in df.columns]) + "\n"


def labels(df):
    """Column headings: a host column says it is the emulator's time."""
    return [f"{c} (emulator)" if c in HOST else c for c in df.columns]


def shown(df):
    """The frame's cells as the human-readable formats show them."""
    return [[SHOWN.get(c, _plain)(v) for c, v in zip(df.columns, row)]
            for row in df.itertuples(index=False)]


def _plain(v):
    return numbers.MISSING if numbers.missing(v) else str(v)
