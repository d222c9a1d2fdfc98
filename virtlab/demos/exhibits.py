"""What a lesson shows beside its claims: trace lines and translations of
its own runs, as text for the reader and as data for the JSON."""
from ..trace import TraceEvent, table as trace_table
from .claims import Exhibit, show


def trace(run, title, first=None):
    """A traced run's events (the first `first` of them), as `virtlab trace`
    prints them."""
    events = run.trace[:first] if first else run.trace
    lines = trace_table([TraceEvent(**e) for e in events])
    if first and len(run.trace) > first:
        lines.append(f"       ... {len(run.trace) - first} more")
    return Exhibit(title, lines, {"run": run.label, "events": events})


def console(runs, title, starts):
    """The lines of each run's console that begin with one of `starts`."""
    lines = [f"{r.label:<8} {ln}" for r in runs for ln in r.result.console.splitlines()
             if ln.startswith(starts)]
    return Exhibit(title, lines, {"runs": [r.label for r in runs], "starts": list(starts)})


def sites(run, test):
    """(unit, site) for every translated guest instruction for which
    test(site) is true, in the order of the translation cache."""
    return [(u, s) for u in run.units for s in u["sites"] if test(s)]


def unit(run, u, title):
    """One translation unit: each guest instruction, its kind, the first
    instruction of the code that stands for it, and why."""
    n = u["executions"]
    ran = "not counted" if n is None else f"ran {show(n)} time" + ("" if n == 1 else "s")
    state = "dead (invalidated)" if u["dead"] else "transient" if u["transient"] else "live"
    lines = [f"unit {u['guest']:#010x}..{u['guest_end']:#010x}, {ran}, {state}"]
    for s in u["sites"]:
        code = s["code"] or [{"text": "(no code)"}]
        more = f" (+{len(code) - 1} more)" if len(code) > 1 else ""
        first = code[0]["text"] + more
        lines.append(f"  {s['guest']:#010x}  {s['mark']:<9} {s['text']:<28.28} | "
                     f"{first:<46} {s['reason']}")
    return Exhibit(title, lines, {"run": run.label, "unit": u})


def table(title, header, rows):
    """Rows of values under a header, in columns wide enough for both."""
    cells = [header] + [[show(v) if not isinstance(v, str) else v for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    return Exhibit(title, lines, {"header": header, "rows": rows})
