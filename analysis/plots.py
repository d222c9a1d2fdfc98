"""Figures, with matplotlib (headless: the Agg backend).

  overhead     modeled overhead per workload and back end, normalized to native
  nano         the nano family as cycles per operation on a log scale, one group
               per operation (the shape of Adams & Agesen's figure 4)
  breakdown    each back end's overhead cycles per iteration by event kind
  sensitivity  modeled overhead against one event's cost, with the crossovers
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt                      # noqa: E402
import numpy as np                                   # noqa: E402

COLORS = {"native": "#4c4c4c", "trap": "#d95f02", "hw": "#1b9e77", "hw-npt": "#7570b3",
          "bt": "#e7298a", "pv": "#66a61e"}


def _legend(ax, **kw):
    if ax.get_legend_handles_labels()[0]:      # nothing drawn: no empty legend
        ax.legend(**kw)


def _color(backend, i):
    return COLORS.get(backend, plt.cm.tab10(i % 10))


def _grouped(ax, groups, series, values, ylabel, log=False):
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        ys = [values.get((g, s), np.nan) for g in groups]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, ys, width, label=s, color=_color(s, i))
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


def breakdown(axes, bd):
    backends = list(dict.fromkeys(bd["backend"]))
    palette = {ev: plt.cm.tab20(i % 20) for i, ev in enumerate(sorted(set(bd["event"])))}
    for ax, backend in zip(axes, backends):
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
    for i, (backend, sub) in enumerate(sweep.groupby("backend", sort=False)):
        ax.plot(sub["cost"], sub["overhead"], marker=".", label=backend, color=_color(backend, i))
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
