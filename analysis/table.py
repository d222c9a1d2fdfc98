"""The bench table: one row per workload and back end, as a pandas DataFrame.

The same frame feeds every output (markdown, CSV, JSON, LaTeX, the report), so
every format shows the same numbers.
"""
import json

import pandas as pd

from .evaluate import evaluate, overhead

COLUMNS = ["workload", "backend", "profile", "iterations", "modeled_cycles",
           "modeled_cycles_per_iteration", "modeled_us_per_iteration", "modeled_overhead",
           "host_seconds", "host_overhead", "matches_native", "ok", "reason"]


def natives(results):
    return {(r.workload, r.scale): r for r in results if r.backend == "native"}


def frame(results, profile):
    ref = natives(results)
    rows = []
    for r in results:
        m = evaluate(r, profile)
        native = ref.get((r.workload, r.scale))
        mod_ovh, host_ovh = overhead(r, native, profile) if native else (None, None)
        rows.append({
            "workload": r.workload, "backend": r.backend, "profile": profile.name,
            "iterations": r.iterations,
            "modeled_cycles": m.cycles if m else None,
            "modeled_cycles_per_iteration": m.per_iteration if m else None,
            "modeled_us_per_iteration": m.us_per_iteration if m else None,
            "modeled_overhead": mod_ovh,
            "host_seconds": r.host_seconds, "host_overhead": host_ovh,
            "matches_native": r.matches_native, "ok": r.ok, "reason": r.reason,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def breakdown(results, profile):
    """Each back end's overhead cycles over native, by event kind: the back
    end's charged cycles per event minus native's, plus the difference in
    instruction cycles.  The parts of a row sum to its total overhead."""
    ref = natives(results)
    rows = []
    for r in results:
        native = ref.get((r.workload, r.scale))
        if r.backend == "native" or native is None:
            continue
        a, b = evaluate(r, profile), evaluate(native, profile)
        if a is None or b is None:
            continue
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
    if fmt == "latex":
        return df.to_latex(index=False, float_format="%.3f", na_rep="--")
    return df.to_markdown(index=False, floatfmt=".3f") + "\n"
