"""Figures, with matplotlib (headless: the Agg backend).

  overhead     modeled overhead per workload and back end, normalized to native
  nano         the nano family as cycles per operation on a log scale, one group
               per operation (the shape of Adams & Agesen's figure 4)
  breakdown    each back end's overhead cycles per iteration by event kind (the
               ``kind`` each counter's declaration gives, analysis/counters.py)
  sensitivity  modeled overhead against one event's cost, with the crossovers
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt                      # noqa: E402
import numpy as np                                   # noqa: E402

from virtlab import backend as backends            # noqa: E402

from .counters import catalog                        # noqa: E402

COLORS = {"native": "#4c4c4c", "trap": "#d95f02", "hw": "#1b9e77", "hw-npt": "#7570b3",
          "bt": "#e7298a", "pv": "#66a61e"}
# For back ends without a colour above, in order of name: fixed, so a back end
# keeps its colour from one figure to the next.
PALETTE = ("#e6ab02", "#a6761d", "#1f78b4", "#b2df8a", "#fb9a99", "#cab2d6",
           "#ff7f00", "#6a3d9a", "#b15928", "#33a02c")

KIND_COLORS = {"instructions": "#999999", "privileged": "#d95f02", "io": "#1b9e77",
               "paging": "#7570b3", "interrupts": "#e7298a", "syscalls": "#66a61e",
               "exceptions": "#e6ab02", "exits": "#a6761d", "other": "#666666"}


def _legend(ax, **kw):
    if ax.get_legend_handles_labels()[0]:      # nothing drawn: no empty legend
        ax.legend(**kw)


def color(backend, present=()):
    """A back end's colour: its own, else the palette's, by its place among the
    installed (and ``present``) back ends that have none."""
    if backend in COLORS:
        return COLORS[backend]
    others = sorted((set(backends.names()) | set(present) | {backend}) - set(COLORS))
    return PALETTE[others.index(backend) % len(PALETTE)]


def kind_color(kind, present=()):
    """An event kind's colour, likewise."""
    if kind in KIND_COLORS:
        return KIND_COLORS[kind]
    others = sorted((set(present) | {kind}) - set(KIND_COLORS))
    free = [c for c in PALETTE if c not in KIND_COLORS.values()]
    return free[others.index(kind) % len(free)]


def _grouped(ax, groups, series, values, ylabel, log=False):
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        ys = [values.get((g, s), np.nan) for g in groups]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, ys, width, label=s,
               color=color(s, series))
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    _legend(ax, fontsize=8)


def overhead(ax, df):
    ok = df[df["ok"] & (df["backend"] != "native")]
    backends = list(dict.fromkeys(ok["backend"]))
    values = {(r.workload, r.backend): r.modeled_overhead for r in ok.itertuples()}
    _grouped(ax, list(dict.fromkeys(ok["workload"])), backends, values,
             "modeled time / native (log)", log=True)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_title(f"Overhead relative to native (modeled, {df['profile'].iloc[0]})")


def nano(ax, df):
    ok = df[df["ok"] & df["workload"].str.startswith("nano.")]
    backends = list(dict.fromkeys(ok["backend"]))
    values = {(r.workload.split(".", 1)[1], r.backend): r.modeled_cycles_per_iteration
              for r in ok.itertuples()}
    ops = list(dict.fromkeys(w.split(".", 1)[1] for w in ok["workload"]))
    _grouped(ax, ops, backends, values, "cycles per operation", log=True)
    ax.set_title("Nanobenchmarks: modeled cycles per operation (cf. Adams & Agesen, Fig. 4)")


def kinds(bd):
    """The breakdown with each event replaced by its declared kind."""
    cat = catalog()
    out = bd.copy()
    out["event"] = [ev if ev == "instructions" else cat.kind(ev) for ev in bd["event"]]
    return out


def breakdown(axes, bd):
    bd = kinds(bd)
    names = list(dict.fromkeys(bd["backend"]))
    present = sorted(set(bd["event"]))
    palette = {k: kind_color(k, present) for k in present}
    for ax, backend in zip(axes, names):
        sub = bd[bd["backend"] == backend]
        workloads = list(dict.fromkeys(sub["workload"]))
        table = (sub.pivot_table(index="workload", columns="event", values="cycles_per_iteration",
                                 aggfunc="sum").reindex(workloads).fillna(0.0))
        x = np.arange(len(workloads))
        bottom_pos = np.zeros(len(workloads))
        bottom_neg = np.zeros(len(workloads))
        for ev in sorted(table.columns):
            ys = table[ev].to_numpy()
            pos, neg = np.clip(ys, 0, None), np.clip(ys, None, 0)
            if pos.any():
                ax.bar(x, pos, bottom=bottom_pos, label=ev, color=palette[ev])
            if neg.any():
                ax.bar(x, neg, bottom=bottom_neg, color=palette[ev],
                       label=None if pos.any() else ev)
            bottom_pos += pos
            bottom_neg += neg
        ax.set_xticks(x)
        ax.set_xticklabels(workloads, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{backend}: overhead cycles per iteration by event kind")
        ax.set_yscale("symlog")
        _legend(ax, fontsize=6, ncol=2)


def sensitivity(ax, sweep, crossovers, event):
    present = list(dict.fromkeys(sweep["backend"]))
    for backend, sub in sweep.groupby("backend", sort=False):
        ax.plot(sub["cost"], sub["overhead"], marker=".", label=backend,
                color=color(backend, present))
    for c in crossovers:
        ax.axvline(c["cost"], color="grey", linestyle=":", linewidth=0.8)
        ax.annotate(f"{c['faster']} overtakes {c['slower']}", (c["cost"], ax.get_ylim()[1]),
                    rotation=90, va="top", fontsize=7)
    ax.set_xlabel(f"cost of {event} (cycles)")
    ax.set_ylabel("geometric-mean modeled overhead")
    ax.set_title(f"Sensitivity to {event}")
    _legend(ax, fontsize=8)


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bench_figure(df, bd, path):
    """One image with the three bench figures stacked."""
    n_bd = max(len(set(bd["backend"])), 1) if len(bd) else 0
    fig, axes = plt.subplots(2 + n_bd, 1, figsize=(11, 4.2 * (2 + n_bd)))
    overhead(axes[0], df)
    nano(axes[1], df)
    if n_bd:
        breakdown(axes[2:], bd)
    save(fig, path)


def single(kind, path, *args):
    fig, ax = plt.subplots(figsize=(11, 4.5))
    {"overhead": overhead, "nano": nano}[kind](ax, *args)
    save(fig, path)
