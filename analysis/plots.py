"""Figures, with matplotlib (headless: the Agg backend).

Every figure is a file of its own, in the format its name's extension asks
for (FORMATS).  `virtlab bench --plot out.png` writes out-overhead.png,
out-nano.png and out-breakdown.png, each only when it has something to show.

  overhead     modeled overhead per workload and back end, as bars from the
               native baseline (1) up or down on a log scale, one panel per
               workload family on a shared axis
  nano         the nano family as cycles per operation on a log scale, one
               group per operation, native included (the shape of Adams &
               Agesen's figure 4)
  breakdown    where each back end's modeled cycles differ from native's, by
               event kind (see breakdown_figure)
  sensitivity  modeled overhead against one event's cost, with the crossovers

Colours never depend on what one bench happened to select: a back end and an
event kind keep theirs in every figure (color, kind_color).
"""
import io
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt                      # noqa: E402
import numpy as np                                   # noqa: E402
from matplotlib import ticker                        # noqa: E402
from matplotlib.lines import Line2D                  # noqa: E402
from matplotlib.patches import Patch                 # noqa: E402

from virtlab import backend as backends            # noqa: E402
from virtlab import outfile                          # noqa: E402

from .counters import catalog                        # noqa: E402
from .figfmt import BENCH_FIGURES, FORMATS, figure_format, figure_paths   # noqa: E402,F401

DPI = 120
# The hatch over a segment below zero: dark enough to show on yellow.
HATCH = (0, 0, 0, 0.35)

# The bundled back ends, in the order figures show them.  Fixed colours, so a
# reader can compare figures across machines and versions.
COLORS = {"native": "#4c4c4c", "trap": "#d95f02", "hw": "#1b9e77", "hw-npt": "#7570b3",
          "bt": "#e7298a", "pv": "#66a61e"}
# For back ends without a fixed colour (a plug-in's).
PALETTE = ("#e6ab02", "#a6761d", "#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6",
           "#ff7f00", "#6a3d9a", "#b15928", "#33a02c")

# The kinds the core and the bundled back ends declare (virtlab/counters.py
# and each back end's `counters`), plus the breakdown's own two: the
# instruction difference and counters with no declaration.
KIND_COLORS = {"instructions": "#bdbdbd", "privileged": "#d62728", "io": "#009e73",
               "paging": "#0072b2", "interrupts": "#cc79a7", "syscalls": "#e69f00",
               "exceptions": "#f0e442", "exits": "#56b4e9", "callouts": "#8c564b",
               "hypercalls": "#9467bd", "translation": "#bcbd22", "other": "#595959"}
# For kinds without one: far from every colour above.
KIND_PALETTE = ("#17becf", "#6b8e23", "#000080", "#fb9a99", "#800000", "#a6cee3",
                "#ffff99", "#000000")


# -- files ------------------------------------------------------------------------

def save(fig, path):
    """Write `fig` to `path` as every output file is written (virtlab/outfile.py)."""
    data = io.BytesIO()
    fig.savefig(data, dpi=DPI, format=figure_format(path))
    plt.close(fig)
    outfile.write(path, data.getvalue())


# -- colours ----------------------------------------------------------------------

def color(backend):
    """A back end's colour: its fixed one, else the palette's by its place
    among the installed back ends that have none.  One not installed (read
    from a saved bench) takes its colour from its name alone."""
    if backend in COLORS:
        return COLORS[backend]
    free = PALETTE
    others = [n for n in backends.names() if n not in COLORS]
    i = others.index(backend) if backend in others else zlib.crc32(backend.encode())
    return free[i % len(free)]


def kind_order():
    """Every kind a breakdown can show, in the order it stacks them: from the
    installed declarations, never from the data at hand."""
    declared = sorted({s.kind for s in catalog().specs} - {"instructions", "other"})
    return ("instructions", *declared, "other")


def kind_color(kind):
    """An event kind's colour: its fixed one, else the palette's by its place
    among the installed kinds that have none (stable between a full bench and
    a subset: the data is not consulted)."""
    if kind in KIND_COLORS:
        return KIND_COLORS[kind]
    free = KIND_PALETTE
    others = [k for k in kind_order() if k not in KIND_COLORS]
    i = others.index(kind) if kind in others else zlib.crc32(kind.encode())
    return free[i % len(free)]


def backend_order(names):
    """`names` in the order every figure uses: native, the bundled back ends,
    then the rest by name."""
    fixed = list(COLORS)
    return sorted(set(names), key=lambda n: (fixed.index(n) if n in fixed else len(fixed), n))


# -- helpers ----------------------------------------------------------------------

def families(workloads):
    """Workload names grouped by family (the part before the first dot), in
    the order they come."""
    out = {}
    for w in workloads:
        out.setdefault(w.split(".", 1)[0], []).append(w)
    return out


def _short(workload):
    return workload.split(".", 1)[1] if "." in workload else workload


def _plain(v, _pos=None):
    """Tick labels as plain numbers: 0.01, 2, 1,000 (not 10^-2 or 2x10^0)."""
    if v >= 1000:
        return f"{v:,.0f}"
    return np.format_float_positional(v, precision=6, trim="-")


def _log_axis(ax, lo, hi):
    """A log y axis from lo to hi with plain labels; 1-2-5 ticks when it spans
    few decades, so a short range still has labelled ticks."""
    lo, hi = lo / 1.6, hi * 1.6
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    subs = (1.0,) if np.log10(hi / lo) > 4 else (1.0, 2.0, 5.0)
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(axis="y", which="major", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def _baseline():
    return Line2D([], [], color=COLORS["native"], linewidth=1.2)


def _compact(cycles):
    """A signed cycle count in a few characters: +2.5k, -729, 0."""
    a = abs(cycles)
    sign = "+" if cycles > 0 else "\u2212" if cycles < 0 else ""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{sign}{a / div:.3g}{unit}"
    return f"{sign}{a:.3g}" if a else "0"


def _ok(df):
    return df[df["ok"].astype(bool)]


def _panels(fams, per_row, inch_per_workload, row_height):
    """A figure with a panel per family, families packed into rows of at most
    `per_row` workloads (a panel as wide as its family), every panel on the
    first one's y axis.  (figure, [(axes, family, workloads, first in its row)])."""
    layout = _pack(fams, per_row)
    fig = plt.figure(layout="constrained",
                     figsize=(max(8.0, 1.8 + per_row * inch_per_workload),
                              1.0 + row_height * len(layout)))
    grid = fig.add_gridspec(len(layout), per_row)
    panels, first_ax = [], None
    for row, placed in enumerate(layout):
        for start, fam in placed:
            ws = fams[fam]
            ax = fig.add_subplot(grid[row, start:start + len(ws)], sharey=first_ax)
            first_ax = first_ax or ax
            panels.append((ax, fam, ws, start == 0))
    return fig, panels


def _pack(fams, width):
    """Families into rows of at most `width` workloads, in order: a row per
    big family, small ones side by side.  [[(first column, family)], ...]"""
    rows, used = [], width
    for fam, ws in fams.items():
        if used + len(ws) > width:
            rows.append([])
            used = 0
        rows[-1].append((used, fam))
        used += len(ws)
    return rows


# -- overhead ---------------------------------------------------------------------

def overhead_figure(df):
    """Modeled overhead of each back end against native, per workload; None
    without a non-native row to show."""
    rows = _ok(df)
    rows = rows[(rows["backend"] != "native") & rows["modeled_overhead"].notna()]
    if not len(rows):
        return None
    names = backend_order(rows["backend"])
    fams = families(dict.fromkeys(rows["workload"]))
    value = {(r.workload, r.backend): r.modeled_overhead for r in rows.itertuples()}
    # Rows of up to 13 workloads; a small bench fills one row of its own size
    # rather than the left of an empty one.
    total = sum(len(ws) for ws in fams.values())
    per_row = max(min(13, total), *(len(ws) for ws in fams.values()))
    fig, panels = _panels(fams, per_row, (len(names) + 1) * 0.12, 4.0)
    for ax, fam, ws, first in panels:
        _from_baseline(ax, ws, names, value)
        ax.set_title(fam, fontsize=10, fontweight="bold")
        if first:
            ax.set_ylabel("modeled time / native\n(log scale)")
        else:
            ax.tick_params(axis="y", labelleft=False)
    vals = list(value.values()) + [1.0]
    _log_axis(panels[0][0], min(vals), max(vals))
    handles = [Patch(color=color(b)) for b in names] + [_baseline()]
    fig.legend(handles, names + ["native (= 1)"], loc="outside lower center",
               ncol=len(names) + 1, fontsize=9, frameon=False)
    fig.suptitle(f"Modeled overhead relative to native (profile {df['profile'].iloc[0]}); "
                 "bars start at native: below the line is faster", fontsize=11)
    return fig


def _from_baseline(ax, workloads, names, value):
    """Bars from 1 (native) to each value, one group per workload: a row
    faster than native hangs below the line instead of looking like a cost."""
    x = np.arange(len(workloads))
    w = 0.8 / len(names)
    for i, b in enumerate(names):
        ys = np.array([value.get((wl, b), np.nan) for wl in workloads])
        ax.bar(x + (i - (len(names) - 1) / 2) * w, ys - 1.0, w, bottom=1.0, color=color(b))
    ax.axhline(1.0, color=COLORS["native"], linewidth=1.2)
    ax.set_xticks(x, [_short(wl) for wl in workloads], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(workloads) - 0.4)


# -- nano -------------------------------------------------------------------------

def nano_figure(df):
    """Cycles per operation of each nanobenchmark, native included; None
    without a nano.* row."""
    rows = _ok(df)
    rows = rows[rows["workload"].str.startswith("nano.")
                & rows["modeled_cycles_per_iteration"].notna()]
    if not len(rows):
        return None
    names = backend_order(rows["backend"])
    ops = list(dict.fromkeys(rows["workload"]))
    value = {(r.workload, r.backend): r.modeled_cycles_per_iteration for r in rows.itertuples()}
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 + len(ops) * (len(names) + 1) * 0.14), 5.0),
                           layout="constrained")
    x = np.arange(len(ops))
    w = 0.8 / len(names)
    for i, b in enumerate(names):
        ys = [value.get((op, b), np.nan) for op in ops]
        ax.bar(x + (i - (len(names) - 1) / 2) * w, ys, w, color=color(b))
    ax.set_xticks(x, [_short(op) for op in ops], rotation=45, ha="right", fontsize=9)
    ax.set_xlim(-0.6, len(ops) - 0.4)
    vals = [v for v in value.values() if v > 0]
    _log_axis(ax, min(vals), max(vals))
    ax.set_ylabel("modeled cycles per operation (log scale)")
    labels = [f"{b} (baseline)" if b == "native" else b for b in names]
    fig.legend([Patch(color=color(b)) for b in names], labels, loc="outside lower center",
               ncol=len(names), fontsize=9, frameon=False)
    fig.suptitle(f"Nanobenchmarks: modeled cycles per operation (profile "
                 f"{df['profile'].iloc[0]}; cf. Adams & Agesen 2006, Fig. 4)", fontsize=11,
                 wrap=True)           # a few operations make a figure narrower than this
    return fig


# -- breakdown --------------------------------------------------------------------

def kinds(bd):
    """The breakdown with each event replaced by its declared kind."""
    cat = catalog()
    out = bd.copy()
    out["event"] = [ev if ev == "instructions" else cat.kind(ev) for ev in bd["event"]]
    return out


def split_by_kind(bd):
    """{(workload, backend): (added, saved)}, each {kind: cycles per
    iteration >= 0}: events a back end pays more for than native, and those
    native pays more for, kept apart (netting them inside a kind would hide
    trap's cheap exit.io behind native's dear native.io, both "io")."""
    out = {}
    for r in kinds(bd).itertuples():
        added, saved = out.setdefault((r.workload, r.backend), ({}, {}))
        side = added if r.cycles_per_iteration > 0 else saved
        side[r.event] = side.get(r.event, 0.0) + abs(r.cycles_per_iteration)
    return out


def breakdown_figure(df, bd):
    """Where each back end's modeled cycles differ from native's, by event kind.

    One panel per workload family (small families share a row); in it a
    group per workload and a bar per back end.  A bar is the cycles per
    iteration that differ from native, split by the kind of the event
    (analysis/counters.py), on a linear axis of shares that always adds up:

      above 0  cycles the back end spends that native does not, by kind;
      below 0  (hatched) cycles native spends that the back end does not:
               native's port accesses priced as bus accesses that trap
               emulates for less, page faults pv never takes.  They are
               real: hiding them, or netting them against a kind's costs,
               would make a back end that beats native look merely cheap;
      the two sides together are 100% of the cycles that moved, the black
      diamond is the net share, and the label on each bar the net cycles per
      iteration above native.

    Shares, not absolute cycles: within one family the overheads span four
    orders of magnitude (a few cycles for a translated call, tens of
    thousands for a shadow page fault), so on a shared linear axis of cycles
    most bars would be invisible; on a log axis negative parts cannot be
    drawn and stacked heights do not add up.  The size is in the label and
    in the overhead figure.  A difference under 1% of native's cycles (one
    shadow fill spread over 20,000 iterations) would still fill a whole bar:
    it is written "~ native" instead.  None without a non-native row."""
    rows = _ok(df)
    rows = rows[rows["backend"] != "native"]
    failed = df[~df["ok"].astype(bool) & (df["backend"] != "native")]
    # Without its overhead a run has no breakdown either: not "= native".
    unpriced = rows[rows["modeled_overhead"].isna()]
    rows = rows[rows["modeled_overhead"].notna()]
    if not len(rows):
        return None
    names = backend_order(list(rows["backend"]) + list(unpriced["backend"]))
    fams = families(dict.fromkeys(list(rows["workload"]) + list(failed["workload"])
                                  + list(unpriced["workload"])))
    parts = split_by_kind(bd)
    good = _ok(df)
    native = {r.workload: r.modeled_cycles_per_iteration
              for r in good[good["backend"] == "native"].itertuples()}
    state = {(r.workload, r.backend): "ran" for r in rows.itertuples()}
    state.update({(r.workload, r.backend): "failed" for r in failed.itertuples()})
    state.update({(r.workload, r.backend): "not priced" for r in unpriced.itertuples()})
    slot = len(names) + 1
    per_row = max(len(ws) for ws in fams.values())
    fig, panels = _panels(fams, per_row, slot * 0.2, 3.3)
    shown = set()
    for ax, fam, ws, first in panels:
        bars = _Bars()
        for i, wl in enumerate(ws):
            for j, b in enumerate(names):
                shown |= _share_bar(ax, bars, i * slot + j, state.get((wl, b)),
                                    *parts.get((wl, b), ({}, {})), native.get(wl))
        bars.draw(ax)
        _share_axes(ax, fam, ws, names, first)
    handles, labels = _breakdown_legend(shown)
    # As many columns as the figure is wide: a narrow one (a small bench)
    # would otherwise cut the legend off at its edges.
    ncol = max(2, min(len(labels), int(fig.get_figwidth() / 1.9)))
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=9,
               frameon=False)
    fig.suptitle(f"Where the modeled cycles per iteration differ from native, by event kind "
                 f"(profile {df['profile'].iloc[0]})", fontsize=11)
    return fig


class _Bars:
    """The segments and net markers of one panel's bars, drawn together: a
    call of ax.bar per segment made a big bench's breakdown take longer to
    build than to draw."""

    def __init__(self):
        self.up = ([], [], [], [])        # x, height, bottom, colour: what the back end adds
        self.down = ([], [], [], [])      # ... what it saves (hatched)
        self.net = ([], [])               # x, net share

    def segment(self, x, height, bottom, colour):
        """A segment above 0 (height > 0) or below it, hatched (height < 0)."""
        for column, value in zip(self.up if height > 0 else self.down,
                                 (x, height, bottom, colour)):
            column.append(value)

    def marker(self, x, share):
        self.net[0].append(x)
        self.net[1].append(share)

    def draw(self, ax):
        for side, style in ((self.up, {}), (self.down, {"hatch": "////", "edgecolor": HATCH})):
            if side[0]:
                x, height, bottom, colour = side
                ax.bar(x, height, 0.8, bottom=bottom, color=colour, linewidth=0, **style)
        if self.net[0]:
            ax.plot(*self.net, linestyle="none", marker="D", color="black", markersize=3.5)


def _share_bar(ax, bars, x, state, added, saved, native):
    """One back end's bar, its segments added to `bars`; the kinds it has."""
    gross = sum(added.values()) + sum(saved.values())
    net = sum(added.values()) - sum(saved.values())
    note = {None: None, "failed": "failed", "not priced": "not priced", "ran": None}[state]
    if state == "ran" and not gross:
        note = "= native"
    elif state == "ran" and native and gross < 0.01 * native:
        note = f"\u2248 native ({_compact(net)})"
    if note or state is None:
        if note:
            ax.text(x, 4, note, rotation=90, ha="center", va="bottom", fontsize=6.5,
                    color="#555555")
        return set()
    up = down = 0.0
    for k in kind_order():
        if added.get(k):
            h = 100.0 * added[k] / gross
            bars.segment(x, h, up, kind_color(k))
            up += h
        if saved.get(k):
            h = 100.0 * saved[k] / gross
            bars.segment(x, -h, -down, kind_color(k))
            down += h
    bars.marker(x, 100.0 * net / gross)
    ax.text(x, up + 3, _compact(net), rotation=90, ha="center", va="bottom", fontsize=6.5)
    return set(added) | set(saved)


def _share_axes(ax, family, workloads, names, first):
    slot = len(names) + 1
    xs = [i * slot + j for i in range(len(workloads)) for j in range(len(names))]
    ax.set_xticks(xs, names * len(workloads), rotation=90, fontsize=7)
    ax.tick_params(axis="x", length=0)
    # The workload under its group of bars, below the back end names.
    sec = ax.secondary_xaxis("bottom")
    centres = [i * slot + (len(names) - 1) / 2 for i in range(len(workloads))]
    sec.set_xticks(centres, [_short(w) for w in workloads], fontsize=9)
    sec.tick_params(length=0, pad=8 + 4.5 * max(len(n) for n in names))
    sec.spines["bottom"].set_visible(False)
    for i in range(1, len(workloads)):
        ax.axvline(i * slot - 1, color="#e0e0e0", linewidth=0.8)
    ax.axhline(0, color=COLORS["native"], linewidth=1.2)
    ax.set_xlim(-1, len(workloads) * slot - 1)
    ax.set_ylim(-110, 150)
    ax.set_yticks([-100, -50, 0, 50, 100], ["\u2212100%", "\u221250%", "0", "50%", "100%"])
    if first:
        ax.set_ylabel("share of the cycles\nthat differ from native", fontsize=9)
    else:
        ax.tick_params(axis="y", labelleft=False)
    ax.grid(axis="y", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title(family, loc="left", fontsize=10, fontweight="bold")


def _breakdown_legend(shown):
    kinds_ = [k for k in kind_order() if k in shown]
    handles = [Patch(color=kind_color(k)) for k in kinds_]
    labels = list(kinds_)
    handles += [Patch(facecolor="#bdbdbd", hatch="////", edgecolor=HATCH),
                Line2D([], [], marker="D", color="black", linestyle="", markersize=4),
                _baseline()]
    labels += ["below 0: native's cost the back end avoids", "net", "native (0)"]
    return handles, labels


# -- sensitivity ------------------------------------------------------------------

# Why sensitivity_figure drew nothing, for the report and the command line.
NOTHING_SWEPT = "no back end in the sweep has a successful run that could be priced"


def sensitivity_figure(sweep, crossovers, event):
    """Each back end's geometric-mean overhead against one event's cost;
    None when there is none to draw (NOTHING_SWEPT)."""
    # A back end whose runs all failed has no overhead at any cost.
    drawn = sweep[np.isfinite(sweep["overhead"].astype(float))]
    if not len(drawn):
        return None
    fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    names = backend_order(drawn["backend"])
    for b in names:
        sub = drawn[drawn["backend"] == b].sort_values("cost")
        ax.plot(sub["cost"], sub["overhead"], marker=".", color=color(b), linewidth=1.6)
    ax.axhline(1.0, color=COLORS["native"], linewidth=1.2)
    top = max(float(drawn["overhead"].max()), 1.0)
    ax.set_ylim(0, top * 1.15)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(_plain))
    for c in crossovers:
        ax.axvline(c["cost"], color="grey", linestyle=":", linewidth=0.8)
        ax.annotate(f"{c['faster']} overtakes {c['slower']} at {c['cost']:,.0f}",
                    (c["cost"], top * 1.12), rotation=90, va="top", ha="right", fontsize=8)
    ax.set_xlabel(f"cost of {event}, cycles per event")
    ax.set_ylabel("geometric-mean modeled overhead")
    ax.grid(color="#eeeeee", linewidth=0.6)
    handles = [Line2D([], [], color=color(b), marker=".") for b in names] + [_baseline()]
    fig.legend(handles, names + ["native (= 1)"], loc="outside lower center",
               ncol=len(names) + 1, fontsize=9, frameon=False)
    fig.suptitle(f"Sensitivity to {event}", fontsize=11)
    return fig


# -- sets of figures --------------------------------------------------------------

def bench_figures(df, bd, path):
    """Write each bench figure that has data to its own file beside `path`
    (out.png -> out-overhead.png, ...): {name: path} of those written."""
    paths = figure_paths(path, BENCH_FIGURES)
    draw = {"overhead": lambda: overhead_figure(df), "nano": lambda: nano_figure(df),
            "breakdown": lambda: breakdown_figure(df, bd)}
    written = {}
    for name, make in draw.items():
        fig = make()                # one at a time: a full breakdown is large
        if fig is not None:
            save(fig, paths[name])
            written[name] = paths[name]
    return written
