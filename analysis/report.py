"""A comparison report: one markdown file with the tables, the figures (files
written beside it and linked from it, PNG, SVG or PDF), the profile used with
the source of every cost, host-measured and modeled overheads side by side, and
an explanation of every row the model finds faster than native (explain.py).

Asked for a name ending in .html, the same report becomes one self-contained
page instead (htmlpage.py): the markdown and its figures are made in a
temporary directory and the page is made from them, so both formats always
carry the same content."""
import tempfile
from pathlib import Path

import pandas as pd

from virtlab import outfile

from . import counters, explain, htmlpage, numbers, plots, sensitivity
from .evaluate import not_priced
from .figfmt import BENCH_FIGURES, figure_paths
from .table import breakdown, frame

DEFAULT_SWEEP = ("exit.priv", "hw", "0:6000:25")
HTML = (".html", ".htm")


def is_html(path):
    return Path(path).suffix.lower() in HTML


def check_format(out, figures):
    """Refuse, before any work, figures an HTML page cannot show inline."""
    if is_html(out) and f".{figures}" not in htmlpage.IMAGE_TYPES:
        raise ValueError(f"an HTML report shows its figures inline, as "
                         f"{' or '.join(t[1:] for t in htmlpage.IMAGE_TYPES)}, not {figures}")


def _md(df):
    """A table in markdown, its numbers shown as in every other human-readable
    table (numbers.py): cycle counts whole, the rest to three significant
    digits, a missing one as "-"."""
    if not len(df):
        return "(no rows)"
    # A "|" inside a cell (a failure's reason) would split it in two.
    shown = df.astype(object).copy()
    align = []
    for col in df.columns:
        if df[col].dtype.kind in "fiu":
            fmt = numbers.cycles if "cycles" in col else numbers.significant
            shown[col] = [fmt(v) if df[col].dtype.kind == "f" else f"{v}" for v in df[col]]
            align.append("right")
        else:
            shown[col] = [v.replace("|", "/") if isinstance(v, str) else
                          (numbers.MISSING if numbers.missing(v) else v) for v in df[col]]
            align.append("left")
    return shown.to_markdown(index=False, disable_numparse=True, colalign=align)


def summary(df):
    """Geometric-mean modeled and host overhead per back end and workload family."""
    ok = df[df["ok"] & (df["backend"] != "native")].copy()
    ok["family"] = ok["workload"].str.split(".").str[0]
    rows = []
    for (backend, family), g in ok.groupby(["backend", "family"], sort=False):
        rows.append({"backend": backend, "family": family, "workloads": len(g),
                     "modeled_overhead": sensitivity.geomean(g["modeled_overhead"].tolist()),
                     "host_overhead": sensitivity.geomean(g["host_overhead"].tolist()),
                     "matching_native": int(g["matches_native"].sum())})
    return pd.DataFrame(rows)


def _profile_section(profile):
    lines = [f"## Profile `{profile.name}`", "", profile.description, "",
             f"Clock {profile.clock_ghz:g} GHz; {profile.cpi.cycles:g} cycles per guest "
             f"instruction ({_why(profile.cpi)}).", "",
             "| event | cycles | source or assumption |", "|---|---|---|"]
    for name, cost in sorted(profile.events.items()):
        lines.append(f"| `{name}` | {cost.cycles:g} | {_why(cost)} |")
    for backend, table in sorted(profile.backends.items()):
        for name, cost in sorted(table.items()):
            lines.append(f"| `{name}` ({backend}) | {cost.cycles:g} | {_why(cost)} |")
    for backend, like in sorted((counters.catalog().priced_like or {}).items()):
        if backend not in profile.backends:
            lines += ["", f"`{backend}` has no section of its own: its shared counters take "
                      f"the `{like}` costs above (the back end declares it is priced like "
                      f"`{like}`)."]
    if profile.declared:
        # Kept apart from the profile's own table: these come from the back ends.
        lines += ["", "Default costs declared by installed back ends (the profile "
                  "gives none):", "", "| event | cycles | declared by | source or assumption |",
                  "|---|---|---|---|"]
        who = counters.catalog().declared_by
        for name, cost in sorted(profile.declared.items()):
            lines.append(f"| `{name}` | {cost.cycles:g} | {', '.join(who.get(name, ()))} "
                         f"| {_why(cost)} |")
    return "\n".join(lines)


def _why(cost):
    return cost.basis.replace("|", "/").replace("\n", " ")


def _figure(name, figs):
    """The link to a figure, or nothing when it had no data to show."""
    path = figs.get(name)
    if path is None:
        return ""
    if path.suffix == ".pdf":                # markdown viewers show no PDF inline
        return f"Figure: [{name}]({path.name})"
    return f"![{name}]({path.name})"


def _faster_note(summary):
    """A line under the summary when a family's mean is below native."""
    if not len(summary):
        return ""
    low = summary[pd.to_numeric(summary["modeled_overhead"], errors="coerce") < 1]
    if not len(low):
        return ""
    pairs = ", ".join(f"`{r.backend}` on {r.family}" for r in low.itertuples())
    return (f"Modeled overhead below 1.00 ({pairs}): the model finds some rows faster "
            "than native; *Why some rows are faster than native* below says why.")


def write(results, profile, out, sweep=DEFAULT_SWEEP, figures="png", provenance=None):
    """Write the report to `out`: markdown with its figures beside it, in
    format `figures` (plots.FORMATS), or for a name ending in .html one page
    with the figures inline.  `provenance`, (saved file, lines of text), ends
    it with where the results came from."""
    out = Path(out)
    if not is_html(out):
        outfile.write(out, _markdown(results, profile, out, sweep, figures, provenance))
        return out
    check_format(out, figures)
    with tempfile.TemporaryDirectory(prefix="virtlab-report-") as tmp:
        md = Path(tmp) / out.with_suffix(".md").name
        outfile.write(out, htmlpage.page(_markdown(results, profile, md, sweep, figures,
                                                   provenance), tmp))
    return out


def outputs(out, figures):
    """Every file the report may write for `out` (as given): the page alone
    for HTML, else the markdown and each figure beside it."""
    if is_html(out):
        return [out]
    return [out, *map(str, _figure_paths(out, figures).values())]


def _figure_paths(out, figures):
    return figure_paths(f"{Path(out).with_suffix('')}.{figures}",
                        (*BENCH_FIGURES, "sensitivity"))


def _markdown(results, profile, out, sweep, figures, provenance):
    """The markdown report's text, its figures written beside `out`."""
    df = frame(results, profile)
    bd = breakdown(results, profile)
    figs = plots.bench_figures(df, bd, f"{out.with_suffix('')}.{figures}")
    event, backend, rng = sweep
    sw = sensitivity.sweep(results, profile, event, sensitivity.parse_range(rng), backend)
    cross = sensitivity.crossovers(sw)
    fig = plots.sensitivity_figure(sw, cross, f"{event} ({backend})" if backend else event)
    if fig is not None:
        figs["sensitivity"] = _figure_paths(out, figures)["sensitivity"]
        plots.save(fig, figs["sensitivity"])

    side = df[["workload", "backend", "iterations", "modeled_overhead", "host_overhead",
               "matches_native", "ok"]]
    nano = df[df["workload"].str.startswith("nano.") | df["workload"].str.startswith("micro.")][
        ["workload", "backend", "modeled_cycles_per_iteration", "modeled_us_per_iteration"]]
    per_event = (bd.groupby(["backend", "event"], sort=False)["cycles"].sum().reset_index()
                 if len(bd) else bd)
    failed = df[~df["ok"]][["workload", "backend", "reason"]]
    means = summary(df)
    faster = explain.faster_than_native(results, profile)
    text = [
        f"# virtlab comparison report (profile `{profile.name}`)", "",
        "Modeled overhead: the runs' recorded events priced with the profile below, "
        "relative to native on the same workload and scale (over the region of "
        "interest). Host overhead: measured host time of this implementation on the "
        "emulated CPU, relative to native. They answer different questions: the "
        "first estimates the technique on the reference machine, the second is what "
        "this tool cost here.", "",
        "## Summary: geometric-mean overhead by family", "", _md(means), "",
        _faster_note(means), "",
        "## Overhead relative to native", "",
        "Rows whose modeled overhead is below 1.00 are explained after the table." if faster
        else "", "", _md(side), "", explain.markdown(faster), "",
        _figure("overhead", figs), "",
        "## Nano and micro benchmarks: cost per operation", "", _md(nano), "",
        _figure("nano", figs), "",
        "## Where the overhead comes from (cycles over native, by event)", "",
        _md(per_event), "", _figure("breakdown", figs), "",
        f"## Sensitivity to `{event}`" + (f" ({backend})" if backend else ""), "",
        _md(sw), "",
        ("Crossovers: " + "; ".join(f"{c['faster']} overtakes {c['slower']} at "
                                    f"{c['cost']:.0f} cycles" for c in cross)
         if cross else "No crossover in this range."), "",
        _figure("sensitivity", figs) or f"No figure: {plots.NOTHING_SWEPT}.", "",
    ]
    if len(failed):
        text += ["## Failed runs", "", _md(failed), ""]
    unpriced = not_priced(results)
    if unpriced:
        text += ["## Runs not priced", "", "They ran, and their host figures are shown; "
                 "their modeled ones are not.", "", *(f"- {s}" for s in unpriced), ""]
    text += [_profile_section(profile), "",
             "## Counters", "", "Every counter the core and the installed back ends "
             "declare (docs/counters.md).", "", counters.markdown(), ""]
    return "\n".join(text) + (_provenance(*provenance) if provenance else "")


def _provenance(saved, lines):
    """Where the analysed results came from (the saved file's record, which
    only the command line has read), as the report's last section."""
    return (f"\n## Provenance of the results\n\n`{saved}`:\n\n"
            + "".join(f"- {ln}\n" for ln in lines))
