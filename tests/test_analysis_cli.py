"""The analysis side of the command line: `virtlab bench` (its columns, formats,
plots and saved results), `virtlab report`, `virtlab sensitivity`, the modeled
fields of `virtlab run`, the profiles in `virtlab list`, and the instruction-count
cache.

Guests run at small scales and on few workloads so the file stays fast; the
instruction-count cache lives in a temporary directory (VIRTLAB_CACHE) so no test
reads or writes ~/.cache/virtlab.  The bench everything re-analyses, a second
bench as JSON with a PNG figure and the refusal of a corrupt saved file run as
separate processes (`python -m virtlab ...`, what a user sees); the other
commands run in-process through isolated_cli.in_process (the same command,
working directory, cache and columns; stdout, stderr and exit status as the
process would give them, without an interpreter start each), and a few through
`virtlab.cli.main` directly when the test needs to watch what happens inside
(no guest runs, the same results rendered in every format).
"""
import copy
import csv
import fnmatch
import io
import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from isolated_cli import cache_dir, in_process, isolated_cache  # noqa: F401

import virtlab.harness
import virtlab.machine
import virtlab.matrix
from analysis import model as M
from analysis import numbers as N
from analysis import profile as P
from analysis import table as T
from virtlab.cli import main
from virtlab.result import load_results

ROOT = Path(__file__).resolve().parents[1]
P4_TOML = ROOT / "analysis" / "profiles" / "p4-2006.toml"

# The bench columns, spelled out here (not imported) because they are a contract.
HEADER = ["workload", "backend", "profile", "iterations", "modeled_cycles",
          "modeled_cycles_per_iteration", "modeled_us_per_iteration", "modeled_overhead",
          "repetitions", "roi_host_seconds", "roi_host_seconds_min", "roi_host_seconds_iqr",
          "host_overhead", "matches_native", "ok", "reason"]
FLOAT_COLS = ["modeled_cycles", "modeled_cycles_per_iteration", "modeled_us_per_iteration",
              "modeled_overhead", "roi_host_seconds", "roi_host_seconds_min",
              "roi_host_seconds_iqr", "host_overhead"]
HOST_COLS = ["roi_host_seconds", "roi_host_seconds_min", "roi_host_seconds_iqr",
             "host_overhead"]
# Columns that do not depend on host timing: equal between two runs of the same bench.
DETERMINISTIC = ["workload", "backend", "profile", "iterations", "modeled_cycles",
                 "modeled_cycles_per_iteration", "modeled_us_per_iteration",
                 "modeled_overhead", "matches_native", "ok", "reason"]

WORKLOADS = ["nano.syscall", "nano.cli"]
BACKENDS = ["native", "trap", "hw"]
SCALE = 20
BENCH = ["bench", "--workloads", ",".join(WORKLOADS), "--backends", ",".join(BACKENDS),
         "--scale", str(SCALE)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# `--format json` currently writes 10 decimal places (see test_json_keeps_full_precision);
# the tests that only ask "same numbers as CSV" allow that rounding.
JSON_ABS = 1e-9


# -- helpers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("work")


def vl(cache_dir, *args, cwd=None, timeout=120):
    """`python -m virtlab ARGS` as a separate process, with the test's cache."""
    env = {**os.environ, "VIRTLAB_CACHE": str(cache_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "virtlab", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def here(cache_dir, *args, cwd=None):
    """The same command as vl, in this process (isolated_cli.in_process)."""
    return in_process(cache_dir, *args, cwd=cwd, env={"COLUMNS": "200"})


def call(argv, capsys):
    """virtlab.cli.main in-process: (status, stdout, stderr)."""
    out = io.StringIO()
    status = main([str(a) for a in argv], out=out)
    return status, out.getvalue(), capsys.readouterr().err


def check_usage_error(status, out, err, *mentions):
    assert status == 2, (status, out, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("virtlab: error: "), err
    for m in mentions:
        assert m in lines[0], (m, lines[0])
    assert out == ""


def csv_rows(text):
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    return header, [dict(zip(header, row)) for row in reader]


def typed(row):
    """A CSV row with its numbers and booleans parsed."""
    out = dict(row)
    out["iterations"] = int(row["iterations"])
    out["repetitions"] = int(row["repetitions"])
    for c in FLOAT_COLS:
        out[c] = float(row[c]) if row[c] != "" else None
    for c in ("matches_native", "ok"):
        out[c] = {"True": True, "False": False}[row[c]]
    return out


def md_tables(text):
    """Every markdown table in `text`, as (header, [row cells])."""
    tables, cur = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = (cells, [])
            elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
                cur[1].append(cells)
        elif cur is not None:
            tables.append(cur)
            cur = None
    if cur is not None:
        tables.append(cur)
    return tables


def section(text, title):
    """The text of a markdown section, from its heading to the next heading."""
    start = text.index(title)
    nxt = text.find("\n## ", start + len(title))
    return text[start:nxt if nxt >= 0 else len(text)]


def by_key(rows):
    return {(r["workload"], r["backend"]): r for r in rows}


def check_png(path, min_bytes=5000):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"


def check_svg(path, min_bytes=5000):
    data = Path(path).read_bytes()
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"
    root = ET.fromstring(data)
    assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg"), root.tag
    assert len(list(root.iter())) > 20           # it draws something


# -- the bench everything else re-analyses ---------------------------------------------

@pytest.fixture(scope="module")
def bench(cache_dir, work):
    """`virtlab bench ... --format csv --save` once; the saved results and the CSV."""
    saved = work / "bench.json"
    p = vl(cache_dir, *BENCH, "--format", "csv", "--save", saved, cwd=work)
    assert p.returncode == 0, p.stderr
    results, meta = load_results(saved)
    header, rows = csv_rows(p.stdout)
    return {"stdout": p.stdout, "stderr": p.stderr, "header": header,
            "rows": [typed(r) for r in rows], "saved": saved,
            "results": results, "meta": meta}


@pytest.fixture(scope="module")
def p4():
    return P.load("p4-2006")


@pytest.fixture
def fake_matrix(bench, monkeypatch):
    """Make `virtlab bench` in-process return the saved results instead of running
    guests, so every output format can be compared on the very same results."""
    calls = []

    def fake(workloads, names, scale=None, jobs=1, progress=False, **opts):
        calls.append((list(workloads), list(names), scale))
        return copy.deepcopy(bench["results"])
    monkeypatch.setattr(virtlab.matrix, "run_matrix", fake)
    return calls


# == 1. bench: CSV columns, rows, patterns, errors ======================================

def test_bench_csv_header_is_exact(bench):
    first_line = bench["stdout"].splitlines()[0]
    assert first_line == ",".join(HEADER)
    assert bench["header"] == HEADER


def test_bench_one_row_per_workload_and_backend(bench):
    keys = [(r["workload"], r["backend"]) for r in bench["rows"]]
    assert keys == [(w, b) for w in WORKLOADS for b in BACKENDS]
    for r in bench["rows"]:
        assert r["profile"] == "p4-2006"
        assert r["iterations"] == SCALE            # nano workloads: one iteration per unit
        assert r["ok"] is True and r["matches_native"] is True and r["reason"] == ""
        assert r["modeled_cycles"] > 0 and r["roi_host_seconds"] > 0
        assert r["repetitions"] == 3                 # the default, for the host figures


def test_bench_native_rows_are_the_baseline(bench):
    natives = [r for r in bench["rows"] if r["backend"] == "native"]
    assert len(natives) == len(WORKLOADS)
    for r in natives:
        assert r["modeled_overhead"] == 1.0
        assert r["host_overhead"] == 1.0
    # trap pays for every system call and every cli/sti: strictly dearer than native
    for r in bench["rows"]:
        if r["backend"] == "trap":
            assert r["modeled_overhead"] > 1.0


def test_bench_glob_pattern(cache_dir, work):
    from workloads.catalog import CATALOG
    p = here(cache_dir, "bench", "--workloads", "nano.c*", "--backends", "native",
           "--scale", SCALE, "--format", "csv", cwd=work)
    assert p.returncode == 0, p.stderr
    header, rows = csv_rows(p.stdout)
    assert header == HEADER
    expected = [n for n in CATALOG if fnmatch.fnmatchcase(n, "nano.c*")]
    assert set(expected) == {"nano.crwr", "nano.callret", "nano.cli", "nano.cpuid"}
    assert [(r["workload"], r["backend"]) for r in rows] == [(w, "native") for w in expected]


@pytest.mark.parametrize("args, mention", [
    (["--workloads", "nano.zzz"], "nano.zzz"),
    (["--workloads", "nano.cli,nano.zz*"], "nano.zz*"),
    (["--workloads", "nano.cli", "--backends", "native,bogus"], "bogus"),
    (["--workloads", "nano.cli", "--profile", "no-such-profile"], "no-such-profile"),
    (["--workloads", "nano.cli", "--profile", "missing/own.toml"], "missing/own.toml"),
    (["--workloads", "nano.cli", "--plot", "out.txt"], "out.txt"),
], ids=["unknown-name", "unmatched-glob", "unknown-backend", "unknown-profile",
        "missing-profile-file", "plot-not-an-image"])
def test_bench_usage_errors(cache_dir, tmp_path, args, mention):
    p = here(cache_dir, "bench", "--scale", SCALE, *args, cwd=tmp_path)
    check_usage_error(p.returncode, p.stdout, p.stderr, mention)
    assert not (tmp_path / "out.txt").exists()


# == 2. the modeled numbers trace back to the saved counters ============================

def test_saved_results_are_the_bench(bench):
    meta = bench["meta"]
    assert (meta["profile"], meta["scale"], meta["repeat"]) == ("p4-2006", SCALE, 3)
    assert meta["provenance"]["command"] == "virtlab " + " ".join(
        [*BENCH, "--format", "csv", "--save", str(bench["saved"])])
    assert [(r.workload, r.backend) for r in bench["results"]] == \
        [(w, b) for w in WORKLOADS for b in BACKENDS]
    for r in bench["results"]:
        assert r.ok and r.scale == SCALE and r.iterations == SCALE
        assert r.instructions > 0 and 0 < r.roi_instructions < r.instructions
        assert r.roi_host_seconds is not None and r.roi_counters


def test_modeled_cycles_trace_to_saved_counters(bench, p4):
    rows = by_key(bench["rows"])
    results = {(r.workload, r.backend): r for r in bench["results"]}
    for key, r in results.items():
        row = rows[key]
        whole = M.model(r.counters, r.instructions, p4, r.backend)
        # the bill adds up: instructions x CPI + count x cost of every charge
        assert whole.base_cycles == r.instructions * p4.cpi.cycles
        for c in whole.charges:
            assert c.cycles == c.count * c.cost.cycles
            assert c.count <= r.counters[c.event]
            assert c.cost == p4.cost(c.event, r.backend)
        assert whole.total == whole.base_cycles + sum(c.cycles for c in whole.charges)
        # ... and is exactly what the CSV says (CSV floats round-trip exactly)
        assert row["modeled_cycles"] == whole.total, key
        # per iteration: the region of interest's counters and instructions
        roi = M.model(r.roi_counters, r.roi_instructions, p4, r.backend)
        assert row["modeled_cycles_per_iteration"] == roi.total / r.iterations, key
        assert row["modeled_us_per_iteration"] == \
            (roi.total / r.iterations) / (p4.clock_ghz * 1000), key
        # overhead: ROI cycles relative to native's ROI cycles, same workload
        nat = results[(r.workload, "native")]
        nroi = M.model(nat.roi_counters, nat.roi_instructions, p4, "native")
        assert row["modeled_overhead"] == roi.total / nroi.total, key


def test_one_row_by_hand(bench, p4):
    """nano.cli under trap, priced by hand from its ROI counters: every cli and
    sti is a privileged exit at trap's own cost (p4 gives no per-instruction
    cost), plus whatever else the ROI recorded."""
    r = next(x for x in bench["results"] if (x.workload, x.backend) == ("nano.cli", "trap"))
    roi = r.roi_counters
    assert roi["exit.priv"] >= 2 * SCALE           # a cli and an sti per iteration
    assert roi.get("exit.priv.cli", 0) + roi.get("exit.priv.sti", 0) <= roi["exit.priv"]
    by_hand = r.roi_instructions * 1.5
    for event in P.CHARGED:
        if roi.get(event):
            by_hand += roi[event] * p4.cost(event, "trap").cycles
    assert p4.cost("exit.priv", "trap").cycles == 2030
    row = by_key(bench["rows"])[("nano.cli", "trap")]
    assert row["modeled_cycles_per_iteration"] == pytest.approx(by_hand / r.iterations,
                                                                rel=1e-12)


# == 3. every format shows the same numbers =============================================

def _parse_latex(text):
    lines = text.splitlines()
    head = lines.index(r"\midrule")
    tail = lines.index(r"\bottomrule")
    header = [c.strip() for c in lines[head - 1].rstrip().removesuffix("\\\\").split("&")]
    rows = [[c.strip() for c in ln.rstrip().removesuffix("\\\\").split("&")]
            for ln in lines[head + 1:tail]]
    return header, rows


def _shown(value, col):
    """How markdown and LaTeX show a CSV value: cycles as whole numbers with
    thousands separators, other numbers to three significant digits (spelled
    out here, not imported: it is what a reader sees)."""
    if value is None:
        return "-"
    if col in ("modeled_cycles", "modeled_cycles_per_iteration"):
        return f"{round(value):,}"
    if col in FLOAT_COLS:
        return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}" if value else "0"
    return str(value)


def _label(col):
    return f"{col} (emulator)" if col in HOST_COLS else col


def test_formats_render_the_same_results_identically(bench, fake_matrix, capsys, tmp_path):
    outs = {}
    for fmt in ("csv", "json", "markdown", "latex"):
        status, out, err = call([*BENCH, "--format", fmt], capsys)
        assert status == 0, err
        outs[fmt] = out
    assert len(fake_matrix) == 4 and fake_matrix[0] == (WORKLOADS, BACKENDS, SCALE)
    # the CLI path over the saved results gives the same CSV as the run that saved them
    # (host columns included: they come from the saved results)
    header, rows = csv_rows(outs["csv"])
    assert header == HEADER
    csv_typed = [typed(r) for r in rows]
    assert [{k: r[k] for k in DETERMINISTIC} for r in csv_typed] == \
        [{k: r[k] for k in DETERMINISTIC} for r in bench["rows"]]

    data = json.loads(outs["json"])
    assert [list(d) for d in data] == [HEADER] * len(csv_typed)
    for d, c in zip(data, csv_typed):
        for col in HEADER:
            if col in FLOAT_COLS:
                assert d[col] == pytest.approx(c[col], rel=1e-9, abs=JSON_ABS), col
            else:
                assert d[col] == c[col], col

    for fmt, (hdr, cells) in (("markdown", md_tables(outs["markdown"])[0]),
                              ("latex", _parse_latex(outs["latex"]))):
        assert hdr == [_label(c).replace("_", "\\_" if fmt == "latex" else "_")
                       for c in HEADER], fmt
        assert len(cells) == len(csv_typed), fmt
        for cell_row, c in zip(cells, csv_typed):
            assert cell_row == [_shown(c[col], col) for col in HEADER], fmt

    # --out writes the same table to a file instead of stdout
    dest = tmp_path / "table.csv"
    status, out, err = call([*BENCH, "--format", "csv", "--out", dest], capsys)
    assert status == 0 and out == ""
    assert dest.read_text() == outs["csv"]


def test_json_keeps_full_precision(bench, fake_matrix, capsys):
    """JSON is the machine-readable format: its numbers should be the CSV's numbers,
    not rounded (markdown and LaTeX round on purpose, JSON should not)."""
    status, out, err = call([*BENCH, "--format", "json"], capsys)
    assert status == 0, err
    for d, c in zip(json.loads(out), bench["rows"]):
        for col in FLOAT_COLS:
            assert d[col] == c[col], (d["workload"], d["backend"], col, d[col], c[col])


@pytest.fixture(scope="module")
def bench_json_png(cache_dir, work):
    """A second bench run, as JSON, with a PNG figure."""
    p = vl(cache_dir, *BENCH, "--format", "json", "--plot", "fig.png", cwd=work)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), work


def test_bench_json_subprocess_matches_csv(bench, bench_json_png):
    data, _ = bench_json_png
    assert [(d["workload"], d["backend"]) for d in data] == \
        [(r["workload"], r["backend"]) for r in bench["rows"]]
    for d, c in zip(data, bench["rows"]):
        assert list(d) == HEADER
        # a second run: the modeled columns are deterministic, host times are not
        for col in DETERMINISTIC:
            if col in FLOAT_COLS:
                assert d[col] == pytest.approx(c[col], rel=1e-9, abs=JSON_ABS), col
            else:
                assert d[col] == c[col], col
        assert d["roi_host_seconds"] > 0
        if d["backend"] == "native":
            assert d["host_overhead"] == 1.0 and d["modeled_overhead"] == 1.0


# == 4. plots ============================================================================

# One file per figure beside the name given (tests/test_figures.py tests the
# figures themselves on hand-made results).
BENCH_FIGURES = ("overhead", "nano", "breakdown")


def test_bench_plot_png(bench_json_png):
    _, where = bench_json_png
    for name in BENCH_FIGURES:
        check_png(where / f"fig-{name}.png", min_bytes=20_000)
    assert not (where / "fig.png").exists()


def test_bench_plot_svg(fake_matrix, cache_dir, tmp_path):
    """The same bench drawn as SVG: on the saved results (fake_matrix), as the
    formats above are; test_bench_plot_png draws a bench that ran its guests."""
    p = here(cache_dir, *BENCH, "--format", "csv", "--plot", "fig.svg", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert fake_matrix == [(WORKLOADS, BACKENDS, SCALE)]
    assert p.stdout.splitlines()[0] == ",".join(HEADER)
    for name in BENCH_FIGURES:
        check_svg(tmp_path / f"fig-{name}.svg", min_bytes=20_000)


def test_bench_plot_bad_suffix_runs_no_guest(fake_matrix, capsys, tmp_path):
    status, out, err = call([*BENCH, "--plot", tmp_path / "out.txt"], capsys)
    check_usage_error(status, out, err, "out.txt")
    assert fake_matrix == []                       # refused before any guest ran
    assert not (tmp_path / "out.txt").exists()


# == 5. report: re-analysis of saved results under another profile ======================

@pytest.fixture(scope="module")
def report(cache_dir, bench, work):
    out = work / "rep" / "report.md"
    out.parent.mkdir()
    p = here(cache_dir, "report", bench["saved"], "--profile", "core2-2006", "--out", out,
           cwd=work)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"wrote {out}\n")
    return out, out.read_text()


def test_report_writes_markdown_and_figures(report):
    out, text = report
    for kind in ("overhead", "nano", "breakdown", "sensitivity"):
        fig = out.parent / f"report-{kind}.png"
        check_png(fig)
        assert f"![{kind}]({fig.name})" in text
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["report.md"] + [f"report-{k}.png" for k in ("overhead", "nano", "breakdown",
                                                     "sensitivity")])


def test_report_overhead_table_matches_reanalysis(report, bench):
    _, text = report
    core2 = P.load("core2-2006")
    df = T.frame(load_results(bench["saved"])[0], core2)
    expect = {(r.workload, r.backend): r for r in df.itertuples()}
    hdr, rows = md_tables(section(text, "## Overhead relative to native"))[0]
    assert hdr == ["workload", "backend", "iterations", "modeled_overhead", "host_overhead",
                   "matches_native", "ok"]
    assert [(r[0], r[1]) for r in rows] == [(w, b) for w in WORKLOADS for b in BACKENDS]
    for cells in rows:
        e = expect[(cells[0], cells[1])]
        assert cells[2] == str(e.iterations)
        assert cells[3] == N.ratio(e.modeled_overhead)
        assert cells[4] == N.ratio(e.host_overhead)
        assert cells[5] == str(e.matches_native) and cells[6] == str(e.ok)
    # the nano table: cycles and microseconds per operation under core2
    hdr, rows = md_tables(section(text, "## Nano and micro benchmarks"))[0]
    assert hdr == ["workload", "backend", "modeled_cycles_per_iteration",
                   "modeled_us_per_iteration"]
    for cells in rows:
        e = expect[(cells[0], cells[1])]
        assert cells[2] == N.cycles(e.modeled_cycles_per_iteration)
        assert cells[3] == N.significant(e.modeled_us_per_iteration)
    # core2 is not p4: the re-analysis really used the other profile's costs
    p4_df = T.frame(load_results(bench["saved"])[0], P.load("p4-2006"))
    assert list(df["modeled_cycles"]) != list(p4_df["modeled_cycles"])
    assert set(df["profile"]) == {"core2-2006"}


def test_report_agrees_with_a_fresh_bench_under_that_profile(report, bench, cache_dir, work):
    """What `virtlab bench --profile core2-2006 --format json` prints for the same
    workloads is what the re-analysis of the saved p4 bench computes."""
    p = here(cache_dir, *BENCH, "--profile", "core2-2006", "--format", "json", cwd=work)
    assert p.returncode == 0, p.stderr
    fresh = json.loads(p.stdout)
    df = T.frame(load_results(bench["saved"])[0], P.load("core2-2006"))
    assert len(fresh) == len(df)
    for d, e in zip(fresh, df.to_dict("records")):
        assert (d["workload"], d["backend"], d["profile"]) == \
            (e["workload"], e["backend"], "core2-2006")
        for col in ("modeled_cycles", "modeled_cycles_per_iteration",
                    "modeled_us_per_iteration", "modeled_overhead"):
            assert d[col] == pytest.approx(e[col], rel=1e-9, abs=JSON_ABS), col
    _, text = report
    hdr, rows = md_tables(section(text, "## Overhead relative to native"))[0]
    for cells, d in zip(rows, fresh):
        assert cells[3] == N.ratio(d["modeled_overhead"])


def test_report_names_the_profile_and_every_cost_basis(report):
    _, text = report
    core2 = P.load("core2-2006")
    assert text.startswith("# virtlab comparison report (profile `core2-2006`)")
    prof = section(text, "## Profile `core2-2006`")
    assert core2.description in prof
    assert f"Clock {core2.clock_ghz:g} GHz" in prof
    assert f"{core2.cpi.cycles:g} cycles per guest instruction" in prof
    hdr, rows = md_tables(prof)[0]
    assert hdr == ["event", "cycles", "source or assumption"]
    listed = {r[0]: r for r in rows}
    costs = [(f"`{n}`", c) for n, c in core2.events.items()]
    costs += [(f"`{n}` ({b})", c) for b, t in core2.backends.items() for n, c in t.items()]
    assert len(rows) == len(costs)
    for label, cost in costs:
        assert label in listed, label
        cells = listed[label]
        assert cells[1] == f"{cost.cycles:g}"
        basis = cost.source or cost.assumption
        kind = "source: " if cost.source else "assumption: "
        assert cells[2] == kind + basis.replace("|", "/").replace("\n", " "), label


def test_report_lists_both_source_and_assumption_of_an_adjusted_cost(bench, tmp_path,
                                                                      capsys):
    """A profile may give a cost both a source and an assumption ("when a sourced
    number was adjusted", analysis/profile.py); the report's profile section should
    show both, as EventCost.basis does."""
    text = P4_TOML.read_text()
    marker = '[events."native.syscall"]\ncycles = 242\n'
    assert marker in text
    text = text.replace(marker, marker + 'assumption = "adjusted by ten percent for int 0x80"\n')
    own = tmp_path / "adjusted.toml"
    own.write_text(text)
    out = tmp_path / "r.md"
    status, _, err = call(["report", bench["saved"], "--profile", own, "--out", out], capsys)
    assert status == 0, err
    row = next(ln for ln in out.read_text().splitlines() if ln.startswith("| `native.syscall` |"))
    assert "source: Adams & Agesen 2006, native column" in row
    assert "adjusted by ten percent for int 0x80" in row, row


def test_reanalysis_runs_no_guest(bench, monkeypatch):
    def no_guest(self, *a, **kw):
        raise AssertionError("a guest ran during re-analysis")
    monkeypatch.setattr(virtlab.machine.Machine, "run", no_guest)
    results, _ = load_results(bench["saved"])
    westmere = P.load("westmere-2010")
    df = T.frame(results, westmere)
    assert list(df.columns) == HEADER
    assert set(df["profile"]) == {"westmere-2010"}
    assert df["modeled_cycles"].notna().all()
    r = results[1]
    assert df.iloc[1]["modeled_cycles"] == M.model(r.counters, r.instructions, westmere,
                                                   r.backend).total


def test_report_via_cli_runs_no_guest(bench, monkeypatch, tmp_path, capsys):
    def no_guest(self, *a, **kw):
        raise AssertionError("a guest ran during 'virtlab report'")
    monkeypatch.setattr(virtlab.machine.Machine, "run", no_guest)
    status, out, err = call(["report", bench["saved"], "--profile", "penryn-2008",
                             "--out", tmp_path / "r.md"], capsys)
    assert status == 0, err
    assert "(profile `penryn-2008`)" in (tmp_path / "r.md").read_text()


def _corrupt_cases(bench, d):
    good = json.loads(Path(bench["saved"]).read_text())
    cases = {}

    def put(name, content):
        p = d / f"{name}.json"
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        cases[name] = p
    put("truncated", Path(bench["saved"]).read_text()[:300])
    put("not-json", "this is not json\n")
    put("wrong-format", {**good, "format": "something-else/9"})
    put("no-results", {"format": good["format"], "meta": {}})
    put("results-not-a-list", {**good, "results": 5})
    put("record-not-an-object", {**good, "results": [5]})
    put("record-missing-fields", {**good, "results": [{"workload": "nano.cli"}]})
    bad = copy.deepcopy(good)
    bad["results"][0]["instructions"] = "many"
    put("instructions-not-a-number", bad)
    bad = copy.deepcopy(good)
    bad["results"][1]["counters"] = {"exit.priv": "lots"}
    put("counter-not-a-number", bad)
    # Hand edits that once reached the analysis as a traceback.
    for name, where, key, value in [
            ("matches-native-a-string", "result", "matches_native", "no"),
            ("iterations-negative", "result", "iterations", -5),
            ("instructions-beyond-64-bits", "result", "instructions", 2**64),
            ("host-seconds-inf", "result", "host_seconds", math.inf),
            ("roi-sample-nan", "result", "roi_host_samples", [math.nan]),
            ("meta-a-list", "doc", "meta", [1, 2]),
            ("provenance-a-string", "meta", "provenance", "hello"),
            ("host-a-string", "provenance", "host", "a laptop")]:
        bad = copy.deepcopy(good)
        {"result": bad["results"][1], "doc": bad, "meta": bad["meta"],
         "provenance": bad["meta"]["provenance"]}[where][key] = value
        put(name, bad)
    bad = copy.deepcopy(good)
    bad["results"][1]["counters"]["exit.total"] = 2**64
    put("counter-beyond-64-bits", bad)
    cases["missing"] = d / "does-not-exist.json"
    return cases


CORRUPT = ["truncated", "not-json", "wrong-format", "no-results", "results-not-a-list",
           "record-not-an-object", "record-missing-fields", "instructions-not-a-number",
           "counter-not-a-number", "matches-native-a-string", "iterations-negative",
           "instructions-beyond-64-bits", "host-seconds-inf", "roi-sample-nan", "meta-a-list",
           "provenance-a-string", "host-a-string", "counter-beyond-64-bits", "missing"]


@pytest.mark.parametrize("case", CORRUPT)
@pytest.mark.parametrize("command", ["report", "sensitivity"])
def test_corrupt_or_missing_saved_file(bench, tmp_path, capsys, case, command):
    path = _corrupt_cases(bench, tmp_path)[case]
    if command == "report":
        argv = ["report", path, "--out", tmp_path / "r.md"]
    else:
        argv = ["sensitivity", path, "--event", "exit.priv", "--range", "0:100:3"]
    try:
        status, out, err = call(argv, capsys)
    except Exception as exc:                          # a traceback instead of exit 2
        pytest.fail(f"{command} on a {case} saved file raised {exc!r}")
    check_usage_error(status, out, err, path.name)
    assert not (tmp_path / "r.md").exists()


def test_corrupt_saved_file_subprocess(bench, cache_dir, tmp_path):
    path = _corrupt_cases(bench, tmp_path)["truncated"]
    p = vl(cache_dir, "report", path, "--out", tmp_path / "r.md")
    check_usage_error(p.returncode, p.stdout, p.stderr, path.name)
    p = vl(cache_dir, "report", tmp_path / "nope.json", "--out", tmp_path / "r.md")
    check_usage_error(p.returncode, p.stdout, p.stderr, "nope.json")


# == 6. sensitivity ======================================================================

@pytest.fixture(scope="module")
def crwr(cache_dir, work):
    """nano.crwr (mov to CR0 in the kernel) under trap and hw at its default
    scale (10000 iterations, whose instruction counts ship with the images).

    Why this workload: the sweep prices `exit.priv` for hw only.  In nano.syscall
    and nano.cli hw records *no* exit.priv in the region of interest (VT-x lets
    int 0x80, cli and sti run in the guest: only the one-off shadow fill exits), so
    both curves are flat there and cannot cross (test_sensitivity_flat_without_hw_
    privileged_exits shows it).  A CR0 write exits under both techniques, once per
    iteration: trap's curve is flat (its own 2030-cycle trap-and-emulate cost is
    not varied), hw's is a straight line rising from ~native at cost 0 (nothing
    left but one shadow fill, amortized over the iterations) to far above trap at
    8000 (p4's own hw value, 7055, already is).  So they must cross, near trap's
    cost per exit.
    """
    saved = work / "crwr.json"
    p = here(cache_dir, "bench", "--workloads", "nano.crwr", "--backends", "trap,hw",
             "--repeat", 1, "--format", "csv", "--save", saved, cwd=work)
    assert p.returncode == 0, p.stderr
    return saved


SWEEP = ["--event", "exit.priv", "--backend", "hw", "--range", "0:8000:9"]
COSTS = [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 7000.0, 8000.0]


def test_sensitivity_table_and_crossover(crwr, cache_dir, work, p4):
    p = here(cache_dir, "sensitivity", crwr, *SWEEP, "--plot", "sens.png", cwd=work)
    assert p.returncode == 0, p.stderr
    check_png(work / "sens.png")
    hdr, rows = md_tables(p.stdout)[0]
    assert hdr == ["cost", "backend", "overhead"]
    assert [(float(r[0]), r[1]) for r in rows] == [(c, b) for c in COSTS
                                                   for b in ("trap", "hw")]

    # the expected curves, from the saved counters alone
    results = {r.backend: r for r in load_results(crwr)[0]}
    nat, trap, hw = results["native"], results["trap"], results["hw"]
    native = M.model(nat.roi_counters, nat.roi_instructions, p4, "native").total
    trap_ovh = M.model(trap.roi_counters, trap.roi_instructions, p4, "trap").total / native
    n_priv = hw.roi_counters["exit.priv"]
    assert n_priv >= hw.iterations == 10000          # one CR0 write exit per iteration
    rest = {k: v for k, v in hw.roi_counters.items() if not k.startswith("exit.priv")}
    hw_base = M.model(rest, hw.roi_instructions, p4, "hw").total

    def hw_ovh(cost):
        return (hw_base + n_priv * cost) / native

    c = here(cache_dir, "sensitivity", crwr, *SWEEP, "--format", "csv", cwd=work)
    assert c.returncode == 0, c.stderr
    _, table = csv_rows(c.stdout)
    assert len(table) == 9 * 2
    for r in table:
        want = trap_ovh if r["backend"] == "trap" else hw_ovh(float(r["cost"]))
        assert float(r["overhead"]) == pytest.approx(want, rel=1e-9), r
    # at cost 0 a hw CR0 write is free: hw is native but for its one-off exits
    # (a shadow fill), about a tenth more over 10000 iterations of an 8-cycle loop
    at0 = next(float(r["overhead"]) for r in table
               if r["backend"] == "hw" and float(r["cost"]) == 0)
    assert 1.0 <= at0 < 1.2
    assert hw_ovh(8000) > trap_ovh > at0             # so the curves cross

    # where: hw's line meets trap's level; beyond it trap (2030 per exit) is cheaper
    cross = (trap_ovh - hw_ovh(0)) / ((hw_ovh(8000) - hw_ovh(0)) / 8000)
    assert 1000 < cross < 3000
    found = re.findall(r"^(\S+) overtakes (\S+) at (\d+) cycles$", p.stdout, re.M)
    assert len(found) == 1, p.stdout
    faster, slower, at = found[0]
    assert (faster, slower) == ("trap", "hw")
    assert abs(int(at) - cross) <= 1, (at, cross)
    assert "no crossover" not in p.stdout


def test_sensitivity_flat_without_hw_privileged_exits(bench, cache_dir, work):
    """nano.syscall and nano.cli: hw takes no exit.priv in the measured region, so
    varying hw's exit.priv moves nothing and nothing crosses."""
    for r in load_results(bench["saved"])[0]:
        if r.backend == "hw":
            assert "exit.priv" not in r.roi_counters, r.workload
    p = here(cache_dir, "sensitivity", bench["saved"], *SWEEP, cwd=work)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ("virtlab: no run under hw counted 'exit.priv' in its measured "
                        "region: its curve is flat\n")
    hdr, rows = md_tables(p.stdout)[0]
    assert len(rows) == 9 * 2
    # What the overhead column is, said above the table.
    assert p.stdout.startswith(f"Modeled overhead, x native: the geometric mean over the 2 "
                               f"workloads of {bench['saved']}, as the cost of exit.priv "
                               f"under hw varies (profile p4-2006)\n\n|")
    for backend in ("trap", "hw"):
        assert len({r[2] for r in rows if r[1] == backend}) == 1, backend
    assert p.stdout.rstrip().endswith("no crossover in this range")


def test_a_sweep_without_a_back_end_moves_the_cost_everywhere(bench, cache_dir, work):
    """exit.priv has a trap cost of its own in the profile: a sweep of the
    event for every back end must move it too (it stayed flat at 2030)."""
    p = here(cache_dir, "sensitivity", bench["saved"], "--event", "exit.priv",
             "--range", "0:8000:5", "--format", "csv", cwd=work)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    hdr, rows = csv_rows(p.stdout)
    trap = [float(r["overhead"]) for r in rows if r["backend"] == "trap"]
    assert len(trap) == 5 and trap == sorted(trap) and trap[0] < trap[-1], trap


@pytest.mark.parametrize("rng", ["8000:0", "a:b", "5", "0:10:1", "0:10:2:3", "-1:5",
                                 "0:10:x", "0:nan:3", "0:inf:3", "0:1e308:3", "0:2e9"])
def test_sensitivity_bad_range(bench, capsys, rng):
    status, out, err = call(["sensitivity", bench["saved"], "--event", "exit.priv",
                             f"--range={rng}"], capsys)
    check_usage_error(status, out, err, rng)


@pytest.mark.parametrize("args, mention", [
    (["--event", "exit.bogus"], "exit.bogus"),
    (["--event", "exit.priv", "--backend", "hww"], "hww"),
], ids=["unknown-event", "unknown-backend"])
def test_sensitivity_unknown_names(bench, capsys, args, mention):
    """A misspelt event or back end would sweep nothing (flat curves, "no
    crossover"): a bad name is a usage error (README: exit status 2)."""
    status, out, err = call(["sensitivity", bench["saved"], *args, "--range", "0:10:3"],
                            capsys)
    check_usage_error(status, out, err, mention)


# == 7. run: modeled fields and own profiles =============================================

RUN = ["run", "nano.syscall", "--backend", "trap", "--scale", SCALE, "--format", "json"]


def test_run_json_has_modeled_fields(cache_dir, work, p4):
    p = here(cache_dir, *RUN, cwd=work)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["profile"] == "p4-2006"
    assert d["ok"] is True and d["iterations"] == SCALE
    assert isinstance(d["instructions"], int) and d["instructions"] > 0
    assert 0 < d["roi_instructions"] < d["instructions"]
    assert d["modeled_cycles"] == M.model(d["counters"], d["instructions"], p4,
                                          "trap").total
    roi = M.model(d["roi_counters"], d["roi_instructions"], p4, "trap").total
    assert d["modeled_roi_cycles"] == roi
    assert d["modeled_cycles_per_iteration"] == roi / d["iterations"]


def _own_profile(tmp_path, edit=None):
    text = P4_TOML.read_text().replace('name = "p4-2006"', 'name = "mine"')
    text = text.replace("cpi = { cycles = 1.5,", "cpi = { cycles = 2.5,")
    text = text.replace('[backends.trap."exit.priv"]\ncycles = 2030',
                        '[backends.trap."exit.priv"]\ncycles = 3333')
    if edit:
        text = edit(text)
    path = tmp_path / "own.toml"
    path.write_text(text)
    return path


def test_run_with_own_profile(cache_dir, tmp_path):
    own = _own_profile(tmp_path)
    mine = P.load(own)
    assert mine.name == "mine" and mine.cpi.cycles == 2.5
    assert mine.cost("exit.priv", "trap").cycles == 3333
    p = here(cache_dir, *RUN, "--profile", own, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["profile"] == "mine"
    assert d["modeled_cycles"] == M.model(d["counters"], d["instructions"], mine,
                                          "trap").total
    assert d["modeled_cycles"] != M.model(d["counters"], d["instructions"],
                                          P.load("p4-2006"), "trap").total
    # a relative path works too (it names a .toml file)
    p = here(cache_dir, *RUN, "--profile", "own.toml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["modeled_cycles"] == d["modeled_cycles"]


def _drop_exit_io(text):
    start = text.index('[events."exit.io"]')
    end = text.index("[events.", start + 1)
    return text[:start] + text[end:]


INVALID = {
    "missing-event": (_drop_exit_io, ["events", "exit.io", "missing"]),
    "negative-cycles": (lambda t: t.replace('[events."native.io"]\ncycles = 3209',
                                            '[events."native.io"]\ncycles = -5'),
                        ["native.io", "cycles", "-5"]),
    "misspelt-key": (lambda t: t.replace('[events."native.hlt"]\ncycles = 100',
                                         '[events."native.hlt"]\ncylces = 100'),
                     ["native.hlt", "cylces"]),
    "no-basis": (lambda t: t.replace(
        '[backends.trap."exit.priv"]\ncycles = 3333\nsource = ',
        '[backends.trap."exit.priv"]\ncycles = 3333\nnote = '),
        ["backends.trap", "exit.priv", "note"]),
    "bad-toml": (lambda t: t + "\n[profile\n", ["own.toml", "TOML"]),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_run_with_invalid_own_profile(cache_dir, tmp_path, case):
    edit, mentions = INVALID[case]
    own = _own_profile(tmp_path, edit)
    p = here(cache_dir, *RUN, "--profile", own, cwd=tmp_path)
    check_usage_error(p.returncode, p.stdout, p.stderr, *mentions)


def test_invalid_own_profile_is_refused_before_the_guest_runs(tmp_path, capsys,
                                                              monkeypatch):
    """`bench` checks its profile before running anything; `run` should too (a
    misspelt key in a profile should not cost a whole run first)."""
    def no_guest(self, *a, **kw):
        raise AssertionError("the guest ran before the invalid profile was refused")
    monkeypatch.setattr(virtlab.machine.Machine, "run", no_guest)
    own = _own_profile(tmp_path, _drop_exit_io)
    status, out, err = call([*RUN, "--profile", own], capsys)
    check_usage_error(status, out, err, "exit.io")


# == 8. list =============================================================================

def test_list_json_profiles(cache_dir, work):
    p = here(cache_dir, "list", "--format", "json", cwd=work)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    bundled = sorted(f.stem for f in (ROOT / "analysis" / "profiles").glob("*.toml"))
    assert {"p4-2006", "core2-2006", "penryn-2008", "nehalem-2009", "westmere-2010",
            "sandybridge-2011"} <= set(bundled)
    assert [x["name"] for x in d["profiles"]] == bundled
    assert [x["name"] for x in d["profiles"] if x["default"]] == ["p4-2006"]
    assert all(x["default"] is False for x in d["profiles"] if x["name"] != "p4-2006")
    for x in d["profiles"]:
        assert x["description"] == P.load(x["name"]).description
    assert P.DEFAULT == "p4-2006"


# == the instruction-count cache =========================================================

def test_instruction_count_cache(tmp_path, monkeypatch):
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("VIRTLAB_CACHE", str(cache))
    guest = virtlab.harness.resolve("nano.syscall", None, SCALE)
    first = virtlab.harness.count_instructions(guest, "native")
    entries = list((cache / "instructions").glob("*.json"))
    assert len(entries) == 1                       # one file per key
    assert json.loads(entries[0].read_text())["value"] == list(first)
    assert not list((cache / "instructions").glob("*.tmp"))
    assert first[0] > 0 and 0 < first[1] < first[0]

    class NoMachine:
        def __init__(self, *a, **kw):
            raise AssertionError("counted again despite the cache")
    monkeypatch.setattr(virtlab.harness, "Machine", NoMachine)
    second = virtlab.harness.count_instructions(guest, "native")
    assert second == first
    # another scale is another key: not answered from the cache
    other = virtlab.harness.resolve("nano.syscall", None, SCALE + 1)
    with pytest.raises(AssertionError, match="counted again"):
        virtlab.harness.count_instructions(other, "native")


def test_instruction_count_cache_is_safe_for_concurrent_writers(tmp_path, monkeypatch):
    """Entries are one file per key, each replaced whole: concurrent writers of
    the same or other keys never leave a reader a partial or mixed file."""
    import threading
    monkeypatch.setenv("VIRTLAB_CACHE", str(tmp_path))
    from virtlab import count_cache as H
    keys = [f"img|w|{i}|native|32|v" for i in range(4)]
    seen = []

    def writer(n):
        for i in range(50):
            H.store(keys[i % 4], (n * 1000 + i, i))
            got = H.lookup(keys[(i + 1) % 4])
            seen.append(got)
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(v is None or (len(v) == 2 and v[0] % 1000 == v[1]) for v in seen)
    assert len(list((tmp_path / "instructions").glob("*.json"))) == 4
    assert not list((tmp_path / "instructions").glob("*.tmp"))
    H._key_file(keys[0]).write_text('{"key": "img|w|0|nat')     # torn by hand: a miss
    assert H.lookup(keys[0]) is None
