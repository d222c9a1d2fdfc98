"""The figures (analysis/plots.py) and the report's explanations of surprising
model results (analysis/explain.py).

No guest runs here: the results are made by hand, with counters chosen so the
model's answer is known (trap's emulated port access costs less than native's
bus access, so nano.in under trap comes out below 1), and the figures are
drawn from them with matplotlib's Agg backend.  Nothing here looks at host
times.
"""
import importlib
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from analysis import explain, plots, report          # noqa: E402
from analysis import profile as P                    # noqa: E402
from analysis.table import breakdown, frame          # noqa: E402
from virtlab.cli import main                          # noqa: E402
from virtlab.result import RunResult, save_results    # noqa: E402

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}
BENCH_FIGURES = ("overhead", "nano", "breakdown")


def run(workload, backend, roi, instructions=1000, iterations=10):
    """A finished run with these region-of-interest counters."""
    return RunResult(workload=workload, backend=backend, scale=1, ok=True, exit_status=0,
                     matches_native=True, counters=dict(roi), roi_counters=dict(roi),
                     host_seconds=0.2, roi_host_seconds=0.1, iterations=iterations,
                     instructions=instructions + 500, roi_instructions=instructions)


# Per workload: native's counters and each back end's.  trap pays 2480 for an
# emulated port access where native pays 3209 for the bus access (p4-2006);
# hw pays 7505 for the same exit.  nano.rdtsc is the same everywhere.
ROWS = {
    "nano.in": {"native": {"native.io": 10}, "trap": {"exit.io": 10}, "hw": {"exit.io": 10}},
    "nano.cli": {"native": {}, "trap": {"exit.priv": 20}, "hw": {}},
    "nano.rdtsc": {"native": {}, "trap": {}, "hw": {}},
    "micro.null_call": {"native": {"native.syscall": 10}, "trap": {"reflect.syscall": 10},
                        "hw": {"native.syscall": 10}},
    "macro.compute": {"native": {"native.exception": 3},
                      "trap": {"reflect.exception": 3, "exit.pf.hidden": 2},
                      "hw": {"native.exception": 3, "exit.pf.hidden": 2}},
}


def results(workloads=None, backends=None):
    out = []
    for w, per in ROWS.items():
        if workloads and w not in workloads:
            continue
        for b, roi in per.items():
            if b == "native" or not backends or b in backends:
                out.append(run(w, b, roi))
    return out


@pytest.fixture(scope="module")
def p4():
    return P.load("p4-2006")


def tables(res, prof):
    return frame(res, prof), breakdown(res, prof)


def check_file(path, fmt):
    data = Path(path).read_bytes()
    assert len(data) > 5000, f"{path}: only {len(data)} bytes"
    if fmt == "svg":
        root = ET.fromstring(data)
        assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg"), root.tag
    else:
        assert data.startswith(MAGIC[fmt]), f"{path} is not a {fmt.upper()}"


def check_drawn(fig):
    """No empty panel: every axes with data holds bars, lines or notes."""
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>" or not ax.get_visible():
            continue
        if type(ax).__name__ == "SecondaryAxis":
            continue
        assert ax.patches or ax.lines[1:] or ax.texts, f"empty panel {ax.get_title()!r}"


def legend_colours(fig):
    """Legend label -> its handle's colour, over the figure's legends."""
    out = {}
    for leg in fig.legends:
        for handle, text in zip(leg.legend_handles, leg.get_texts()):
            get = getattr(handle, "get_facecolor", None) or handle.get_color
            out[text.get_text()] = matplotlib.colors.to_hex(get())
    return out


# -- file names and formats ------------------------------------------------------

@pytest.mark.parametrize("fmt", plots.FORMATS)
def test_bench_figures_one_file_each_in_the_format_of_the_extension(tmp_path, p4, fmt):
    df, bd = tables(results(), p4)
    written = plots.bench_figures(df, bd, tmp_path / f"out.{fmt}")
    assert list(written) == list(BENCH_FIGURES)
    for name in BENCH_FIGURES:
        assert written[name] == tmp_path / f"out-{name}.{fmt}"
        check_file(written[name], fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        sorted(f"out-{n}.{fmt}" for n in BENCH_FIGURES)          # no out.png itself


def test_no_nano_figure_without_nano_rows(tmp_path, p4):
    df, bd = tables(results(workloads={"micro.null_call", "macro.compute"}), p4)
    written = plots.bench_figures(df, bd, tmp_path / "out.png")
    assert sorted(written) == ["breakdown", "overhead"]
    assert not (tmp_path / "out-nano.png").exists()


def test_only_native_gives_only_the_nano_figure(tmp_path, p4):
    df, bd = tables(results(workloads={"nano.in", "micro.null_call"}, backends={"none"}), p4)
    assert set(df["backend"]) == {"native"}
    written = plots.bench_figures(df, bd, tmp_path / "out.svg")
    assert list(written) == ["nano"]


@pytest.mark.parametrize("name", ["out.txt", "out", "out.png.bak", "out.jpeg"])
def test_figure_format_refuses_other_extensions(name):
    with pytest.raises(ValueError, match=re.escape(name)):
        plots.figure_format(name)


def test_figure_format_ignores_case():
    assert plots.figure_format("Fig.PDF") == "pdf"


def test_no_empty_panels(p4):
    df, bd = tables(results(), p4)
    for make in (lambda: plots.overhead_figure(df), lambda: plots.nano_figure(df),
                 lambda: plots.breakdown_figure(df, bd)):
        fig = make()
        check_drawn(fig)
        plots.plt.close(fig)


# -- colours -------------------------------------------------------------------

def test_kind_colours_come_from_the_declarations_not_the_data():
    order = plots.kind_order()
    assert order[0] == "instructions" and order[-1] == "other"
    from analysis.counters import catalog
    assert {s.kind for s in catalog().specs} <= set(order)
    colours = [plots.kind_color(k) for k in order]
    assert len(set(colours)) == len(colours)                     # each kind its own
    assert colours == [plots.kind_color(k) for k in order]       # and always the same


def test_backend_colours_are_fixed_and_distinct():
    from virtlab import backend as backends
    names = backends.names()
    colours = [plots.color(b) for b in names]
    assert len(set(colours)) == len(colours)
    assert plots.color("trap") == plots.COLORS["trap"]
    # a back end not installed (from a saved file) still gets one, from its name
    assert plots.color("elsewhere") == plots.color("elsewhere") in plots.PALETTE


def test_colours_stable_between_a_full_run_and_a_subset(p4):
    full_df, full_bd = tables(results(), p4)
    sub_df, sub_bd = tables(results(workloads={"macro.compute"}, backends={"hw"}), p4)
    seen = []
    for df, bd in ((full_df, full_bd), (sub_df, sub_bd)):
        figs = [plots.breakdown_figure(df, bd), plots.overhead_figure(df)]
        seen.append({k: v for f in figs for k, v in legend_colours(f).items()})
        for f in figs:
            plots.plt.close(f)
    full, sub = seen
    common = set(full) & set(sub)
    assert {"paging", "hw"} <= common
    assert set(sub) < set(full)                                  # the subset shows less
    for label in common:
        assert full[label] == sub[label], label
    for kind in plots.kind_order():
        if kind in full:
            assert full[kind] == plots.kind_color(kind)
    assert full["trap"] == plots.color("trap")


# -- what the figures show ----------------------------------------------------------

def test_breakdown_keeps_what_native_saves_apart_from_what_it_adds(p4):
    _, bd = tables(results(workloads={"nano.in"}), p4)
    added, saved = plots.split_by_kind(bd)[("nano.in", "trap")]
    # both "io": trap's exit.io above zero, native's dearer native.io below
    assert added["io"] == pytest.approx(2480.0)
    assert saved["io"] == pytest.approx(3209.0)


def test_breakdown_bars_add_up_to_the_whole(p4):
    """Linear shares: the segments of a bar, above and below zero, cover
    exactly 100% of the cycles that moved; nothing is drawn on a log axis."""
    df, bd = tables(results(), p4)
    fig = plots.breakdown_figure(df, bd)
    for ax in fig.axes:
        if type(ax).__name__ == "SecondaryAxis":
            continue
        assert ax.get_yscale() == "linear"
        spans = {}
        for bar in ax.patches:
            x = round(bar.get_x() + bar.get_width() / 2, 6)
            spans[x] = spans.get(x, 0.0) + abs(bar.get_height())
        for x, total in spans.items():
            assert total == pytest.approx(100.0), (ax.get_title(), x)
    plots.plt.close(fig)


def test_log_axes_have_plain_tick_labels(p4):
    """'1', '10', '0.5', '1,000', not mathtext like 10^1 or 6x10^0."""
    df, _ = tables(results(), p4)
    for fig in (plots.overhead_figure(df), plots.nano_figure(df)):
        fig.canvas.draw()
        ax = fig.axes[0]
        assert ax.get_yscale() == "log"
        labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)]
        shown = [t for t in labels if t]
        assert shown, labels
        for t in shown:
            assert re.fullmatch(r"[0-9][0-9,]*(\.[0-9]+)?", t), t
        plots.plt.close(fig)


def test_native_baseline_is_in_the_legends(p4):
    df, bd = tables(results(), p4)
    for fig in (plots.overhead_figure(df), plots.nano_figure(df),
                plots.breakdown_figure(df, bd)):
        assert any("native" in label for label in legend_colours(fig)), fig
        plots.plt.close(fig)


def test_sensitivity_figure_has_the_baseline():
    import pandas as pd
    sweep = pd.DataFrame({"cost": [0.0, 1.0, 0.0, 1.0], "backend": ["trap", "trap", "hw", "hw"],
                          "overhead": [2.0, 2.0, 1.0, 3.0]})
    fig = plots.sensitivity_figure(sweep, [{"cost": 0.5, "faster": "trap", "slower": "hw"}],
                                   "exit.priv")
    assert "native (= 1)" in legend_colours(fig)
    plots.plt.close(fig)
    assert plots.sensitivity_figure(sweep.iloc[0:0], [], "exit.priv") is None


def test_sensitivity_figure_draws_only_the_back_ends_with_an_overhead():
    import pandas as pd
    sweep = pd.DataFrame({"cost": [0.0, 1.0, 0.0, 1.0], "backend": ["trap", "trap", "hw", "hw"],
                          "overhead": [2.0, 2.0, None, None]})
    fig = plots.sensitivity_figure(sweep, [], "exit.priv")
    assert list(legend_colours(fig)) == ["trap", "native (= 1)"]
    plots.plt.close(fig)
    # every swept run failed: the table's rows are all '-', and there is no figure
    assert plots.sensitivity_figure(sweep[sweep["backend"] == "hw"], [], "exit.priv") is None


def failed_beside_native(which):
    """The hand-made bench with the runs of `which` back ends failed."""
    out = []
    for r in results(["nano.in", "nano.cli"]):
        if r.backend in which:
            r = RunResult(r.workload, r.backend, r.scale, ok=False,
                          reason="exit budget of 150 exceeded at 0xc0100d90: cli",
                          counters=r.counters, iterations=0)
        out.append(r)
    return out


@pytest.mark.parametrize("which", [("trap", "hw"), ("native", "trap", "hw")],
                         ids=["swept-failed", "all-failed"])
@pytest.mark.parametrize("out", ["r.md", "r.html"])
def test_report_of_a_bench_whose_swept_runs_failed_says_there_is_no_figure(
        tmp_path, capsys, which, out):
    saved = tmp_path / "saved.json"
    save_results(saved, failed_beside_native(which), {"profile": "p4-2006"})
    status, _, err = call(["report", saved, "--out", tmp_path / out], capsys)
    assert status == 0, err
    assert f"No figure: {plots.NOTHING_SWEPT}." in (tmp_path / out).read_text()
    assert not list(tmp_path.glob("r-sensitivity.*"))


@pytest.mark.parametrize("which", [("trap", "hw"), ("native", "trap", "hw")],
                         ids=["swept-failed", "all-failed"])
def test_sensitivity_plot_of_failed_runs_says_why_there_is_no_figure(tmp_path, capsys, which):
    saved = tmp_path / "saved.json"
    save_results(saved, failed_beside_native(which), {"profile": "p4-2006"})
    status, out, err = call(["sensitivity", saved, "--event", "exit.priv", "--range",
                             "0:3000:4", "--plot", tmp_path / "s.png", "--format", "csv"],
                            capsys)
    assert status == 0, err                                  # as the table of '-' rows
    assert err == f"figure: none ({plots.NOTHING_SWEPT})\n"
    assert out.splitlines()[0] == "cost,backend,overhead" and len(out.splitlines()) == 9
    assert not (tmp_path / "s.png").exists()


# -- runs the model cannot price -------------------------------------------------------

def with_uninstalled_backend():
    """The hand-made bench with hw's runs as a back end uninstalled since."""
    return [RunResult(**{**r.to_dict(), "backend": "gone"}) if r.backend == "hw" else r
            for r in results(["nano.in", "nano.cli"])]


GONE = ("2 runs under gone not priced: back end 'gone' is not installed (its counters "
        "and their costs came with it)")


def test_report_prices_what_it_can_and_names_the_uninstalled_back_end(tmp_path, capsys):
    saved = tmp_path / "saved.json"
    save_results(saved, with_uninstalled_backend(), {"profile": "p4-2006"})
    status, _, err = call(["report", saved, "--out", tmp_path / "r.md"], capsys)
    assert status == 0, err
    assert err == f"virtlab: {GONE}\n"
    text = (tmp_path / "r.md").read_text()
    assert f"## Runs not priced\n\nThey ran, and their host figures are shown; their modeled " \
        f"ones are not.\n\n- {GONE}\n" in text


def test_an_uninstalled_back_end_keeps_its_host_figures_and_leaves_the_others_alone(p4):
    df = frame(with_uninstalled_backend(), p4).set_index(["workload", "backend"])
    alone = frame(results(["nano.in", "nano.cli"], ["trap"]), p4).set_index(
        ["workload", "backend"])
    gone = df.xs("gone", level="backend")
    assert gone["modeled_overhead"].isna().all() and gone["modeled_cycles"].isna().all()
    assert (gone["host_overhead"] == 1.0).all()              # the hand-made host times
    assert df.loc[alone.index, "modeled_overhead"].tolist() == \
        alone["modeled_overhead"].tolist()


def test_sensitivity_shows_an_uninstalled_back_end_unpriced(tmp_path, capsys):
    saved = tmp_path / "saved.json"
    save_results(saved, with_uninstalled_backend(), {"profile": "p4-2006"})
    argv = ["sensitivity", saved, "--event", "exit.priv", "--range", "0:10:2", "--format", "csv"]
    status, out, err = call(argv, capsys)
    assert status == 0 and err == f"virtlab: {GONE}\n"
    assert [ln for ln in out.splitlines() if "gone" in ln] == ["0.0,gone,", "10.0,gone,"]
    status, out, err = call([*argv, "--backend", "gone"], capsys)
    assert status == 2 and out == ""
    assert err.splitlines()[-1] == ("virtlab: error: back end 'gone' is not installed: its "
                                    "runs cannot be priced")


def test_runs_saved_without_their_instruction_count_are_not_priced(tmp_path, capsys):
    saved = tmp_path / "saved.json"
    uncounted = [RunResult(**{**r.to_dict(), "instructions": None, "roi_instructions": None})
                 for r in results(["nano.in"])]
    save_results(saved, uncounted, {"profile": "p4-2006"})
    status, _, err = call(["report", saved, "--out", tmp_path / "r.md"], capsys)
    assert status == 0, err
    assert "1 run under trap not priced: its guest instructions were not counted" in err
    assert "- 1 run under native not priced: its guest instructions were not counted" in \
        (tmp_path / "r.md").read_text()


def test_breakdown_says_not_priced_rather_than_equal_to_native(p4):
    df, bd = tables(with_uninstalled_backend(), p4)
    fig = plots.breakdown_figure(df, bd)
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    plots.plt.close(fig)
    assert notes.count("not priced") == 2 and "= native" not in notes


# -- the command line: every drawing command takes the same extensions -------------

def call(argv, capsys):
    out = io.StringIO()
    status = main([str(a) for a in argv], out=out)
    return status, out.getvalue(), capsys.readouterr().err


def usage_error(status, out, err, mention):
    assert status == 2, (status, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtlab: error: "), err
    assert mention in lines[0] and "Traceback" not in err
    assert out == ""


def _matrix_module():
    """The module `virtlab bench` takes run_matrix from (virtlab.bench was
    renamed so that it no longer hides the function virtlab.bench)."""
    for name in ("virtlab.matrix", "virtlab.bench"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "run_matrix"):
            return mod
    raise AssertionError("no module with run_matrix")


@pytest.fixture
def fake_bench(monkeypatch):
    """`virtlab bench` in-process, returning the hand-made results."""
    calls = []

    def fake(workloads, names, scale=None, jobs=1, progress=False, **opts):
        calls.append(list(workloads))
        return [r for r in results() if r.workload in workloads]
    monkeypatch.setattr(_matrix_module(), "run_matrix", fake)
    return calls


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "saved.json"
    save_results(path, results(), {"profile": "p4-2006"})
    return path


BENCH = ["bench", "--workloads", "nano.in,nano.cli,micro.null_call",
         "--backends", "native,trap,hw", "--format", "csv"]


@pytest.mark.parametrize("fmt", plots.FORMATS)
def test_bench_plot_writes_a_file_per_figure(fake_bench, tmp_path, capsys, fmt):
    status, out, err = call([*BENCH, "--plot", tmp_path / f"fig.{fmt}"], capsys)
    assert status == 0, err
    for name in BENCH_FIGURES:
        check_file(tmp_path / f"fig-{name}.{fmt}", fmt)
        assert f"fig-{name}.{fmt}" in err                    # says what it wrote
    assert not (tmp_path / f"fig.{fmt}").exists()


def test_bench_plot_without_nano_writes_no_nano_file(fake_bench, tmp_path, capsys):
    status, _, err = call(["bench", "--workloads", "micro.null_call", "--backends",
                           "native,trap", "--plot", tmp_path / "fig.png"], capsys)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig-breakdown.png",
                                                          "fig-overhead.png"]


@pytest.mark.parametrize("name", ["fig.txt", "fig.jpg", "fig"])
def test_bench_refuses_a_bad_extension_before_running(fake_bench, tmp_path, capsys, name):
    status, out, err = call([*BENCH, "--plot", tmp_path / name], capsys)
    usage_error(status, out, err, name)
    assert fake_bench == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["sens.txt", "sens.jpg", "sens"])
def test_sensitivity_refuses_a_bad_extension(saved, tmp_path, capsys, name):
    status, out, err = call(["sensitivity", saved, "--event", "exit.priv", "--range",
                             "0:100:3", "--plot", tmp_path / name], capsys)
    usage_error(status, out, err, name)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("fmt", plots.FORMATS)
def test_sensitivity_plot_in_every_format(saved, tmp_path, capsys, fmt):
    status, _, err = call(["sensitivity", saved, "--event", "exit.priv", "--range",
                           "0:3000:4", "--plot", tmp_path / f"sens.{fmt}"], capsys)
    assert status == 0, err
    check_file(tmp_path / f"sens.{fmt}", fmt)


def test_report_refuses_a_bad_figure_format(saved, tmp_path, capsys):
    status, out, err = call(["report", saved, "--out", tmp_path / "r.md",
                             "--figures", "txt"], capsys)
    usage_error(status, out, err, "txt")
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("fmt", plots.FORMATS)
def test_report_figures_in_every_format(saved, tmp_path, capsys, fmt):
    out = tmp_path / "r.md"
    status, _, err = call(["report", saved, "--out", out, "--figures", fmt], capsys)
    assert status == 0, err
    text = out.read_text()
    for name in (*BENCH_FIGURES, "sensitivity"):
        fig = tmp_path / f"r-{name}.{fmt}"
        check_file(fig, fmt)
        assert f"({fig.name})" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["saved.json", "r.md"] + [f"r-{n}.{fmt}" for n in (*BENCH_FIGURES, "sensitivity")])


# -- explanations of rows faster than native ----------------------------------------

def test_rows_faster_than_native_are_found_with_their_counters(p4):
    found = explain.faster_than_native(results(), p4)
    df, _ = tables(results(), p4)
    below = {(r.workload, r.backend) for r in df.itertuples() if r.modeled_overhead < 1}
    assert {(f.workload, f.backend) for f in found} == below == {("nano.in", "trap")}
    f = found[0]
    assert f.overhead == pytest.approx((1000 * 1.5 + 10 * 2480) / (1000 * 1.5 + 10 * 3209))
    assert f.net == pytest.approx((2480 - 3209) * 10 / 10)
    assert [p.event for p in f.saved] == ["native.io"]
    assert f.saved[0].native == (1.0, 3209.0) and f.saved[0].backend == (0.0, None)
    assert [p.event for p in f.added] == ["exit.io"]
    assert f.added[0].backend == (1.0, 2480.0)


def test_report_explains_a_row_below_native(tmp_path, p4):
    out = report.write(results(), p4, tmp_path / "r.md")
    text = out.read_text()
    table = text.index("## Overhead relative to native")
    why = text.index("### Why some rows are faster than native")
    nxt = text.index("\n## ", why)
    assert table < why                                    # right after the table
    part = text[why:nxt]
    ratio = (1000 * 1.5 + 10 * 2480) / (1000 * 1.5 + 10 * 3209)
    assert f"`nano.in` under `trap`: {ratio:.2f} x native" in part
    assert "`native.io`: native 1 x 3209, trap none" in part
    assert "`exit.io`: native none, trap 1 x 2480" in part
    # the basis of each cost named, from the profile
    assert p4.cost("native.io", "native").basis in part
    assert p4.cost("exit.io", "trap").basis in part
    # only the rows below 1: hw pays 7505 for the same exit, nano.cli costs trap more
    assert "under `hw`" not in part and "`nano.cli`" not in part


def test_report_says_nothing_when_no_row_is_below_native(tmp_path, p4):
    res = [r for r in results() if (r.workload, r.backend) != ("nano.in", "trap")]
    assert not explain.faster_than_native(res, p4)
    text = report.write(res, p4, tmp_path / "r.md").read_text()
    assert "faster than native" not in text
    assert "below 1.00" not in text


def test_explanation_follows_the_profile_not_a_list_of_names(p4):
    """Price trap's port exit above native's and the row is no longer explained:
    the text comes from the bill, not from workload names."""
    import dataclasses
    dear = dataclasses.replace(p4.backends["trap"]["exit.io"], cycles=4000.0)
    prof = dataclasses.replace(p4, backends={**p4.backends,
                                             "trap": {**p4.backends["trap"], "exit.io": dear}})
    assert not explain.faster_than_native(results(), prof)
    assert explain.markdown(explain.faster_than_native(results(), prof)) == ""
