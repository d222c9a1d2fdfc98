"""The terminal view of a bench: workloads down, back ends across, one number a
cell, so that 28 workloads under six back ends fit a terminal (the full table,
16 columns a row, is for files: --format markdown|csv|json|latex).

Each cell is an overhead relative to native on the same workload: the modeled
one (the technique on the profile's CPU), and on request the host one (this
tool on the emulated CPU).  The native column gives the baseline itself, so a
ratio can be read back as a cost.  Marks, explained under the table: `*` the
run's output differs from native's, `<` the model finds the row faster than
native (a result that surprises, so the view says where it comes from),
`failed` it did not complete.
"""
import io
import textwrap

from rich import box
from rich.console import Console
from rich.table import Table

from . import explain, numbers

# The notes under the table wrap to the width the table fits in.
WIDTH = 80
# rich's SIMPLE_HEAD in ASCII: a rule under the header and nothing else, so
# that the view prints on any terminal encoding and pastes anywhere.
RULE_UNDER_HEADER = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def render(df, host=False, faster=()):
    """The view of bench table `df`; `faster`: explain.faster_than_native()
    of its runs, the rows marked `<` and explained under the table."""
    below = {(f.workload, f.backend) for f in faster}
    parts = [_table(df, "modeled_overhead", "native cycles/iter",
                    "modeled_cycles_per_iteration", numbers.cycles,
                    f"Modeled overhead, x native (profile {_profile(df)}, region of interest)",
                    below)]
    if host:
        runs = int(df["repetitions"].max()) if len(df) else 0
        parts.append(_table(df, "host_overhead", "native seconds", "roi_host_seconds",
                            numbers.significant,
                            f"Host overhead (emulator), x native, median of {runs} "
                            f"run{'s' if runs != 1 else ''}"))
    parts.append(_notes(df, host, faster))
    return "\n".join(p for p in parts if p)


def _profile(df):
    return df["profile"].iloc[0] if len(df) else "-"


def _table(df, column, base_label, base_column, base_format, title, below=()):
    others = [b for b in dict.fromkeys(df["backend"]) if b != "native"]
    t = Table(box=RULE_UNDER_HEADER, pad_edge=False)
    t.add_column("workload")
    t.add_column(base_label, justify="right")
    for b in others:
        t.add_column(b, justify="right")
    cells = {(r.workload, r.backend): r for r in df.itertuples(index=False)}
    for w in dict.fromkeys(df["workload"]):
        native = cells.get((w, "native"))
        base = _cell(native, base_column, base_format) if native is not None else numbers.MISSING
        t.add_row(w, base, *(_cell(cells.get((w, b)), column, numbers.ratio)
                             + ("<" if (w, b) in below else "") for b in others))
    return f"{title}\n\n{_text(t)}"


def _cell(row, column, fmt):
    if row is None:
        return numbers.MISSING
    if not row.ok:
        return "failed"
    return fmt(getattr(row, column)) + ("" if row.matches_native is not False else "*")


def _notes(df, host, faster):
    lines = []
    if host:
        lines.append(_wrap("Host overhead (emulator): the time this tool took on the emulated "
                           "CPU, not what the technique costs.", ""))
    if (df["ok"] & (df["matches_native"] == False)).any():            # noqa: E712
        lines.append(_wrap("* output differs from native's (the fidelity.* workloads show "
                           "where a technique is not faithful: README)", "", "  "))
    lines += _below(faster)
    for r in df[~df["ok"]].itertuples(index=False):
        lines.append(f"failed: {r.workload} under {r.backend}: {r.reason}")
    return "\n".join(lines) + "\n" if lines else ""


def _below(faster):
    """The note on the rows marked `<` (explain.in_brief)."""
    if not faster:
        return []
    lines = ["< faster than native by the model, not by measurement:"]
    for (event, cost), backends in explain.in_brief(faster).items():
        lines.append(_wrap(f"native pays for {explain.what_native_pays(event, cost)}; these "
                           f"pay less or nothing for the same work:", "  "))
        lines += [_wrap(f"{b}: {', '.join(ws)}", "    ", "      ") for b, ws in backends.items()]
    lines.append("  (virtlab report itemises each row's bill and the basis of its costs)")
    return lines


def _wrap(text, indent, more=None):
    return textwrap.fill(text, width=WIDTH, initial_indent=indent,
                         subsequent_indent=more or indent, break_on_hyphens=False)


def _text(renderable):
    buf = io.StringIO()
    # Plain text at any width: the same characters on a terminal, in a pipe
    # and in a test; a table narrower than the terminal is never wrapped.
    Console(file=buf, width=400, color_system=None, emoji=False).print(renderable)
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    return "\n".join(lines).strip("\n") + "\n"
