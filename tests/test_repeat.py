"""Host-time repetitions: `--repeat N` runs each row N times; everything but the
host time must repeat exactly (virtlab/repeat.py), and the host columns are the
median, minimum and interquartile range of the measured region's samples
(analysis/hosttime.py), host_overhead the ratio of the medians over the region
of interest, as the README says.  No test asserts a time: only how the figures
are derived from the samples the run recorded."""
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from isolated_cli import cache_dir, in_process, isolated_cache  # noqa: F401

import virtlab.matrix
from analysis import hosttime
from analysis.table import COLUMNS, frame
from analysis import profile as P
from virtlab.cli import main
from virtlab.repeat import NondeterministicRun, repeated
from virtlab.result import RunResult, load_results

ROOT = Path(__file__).resolve().parents[1]
BENCH = ["bench", "--workloads", "nano.syscall,nano.cli", "--backends", "trap", "--scale", "3"]


def run_record(host, roi, **kw):
    fields = dict(workload="nano.cli", backend="trap", scale=3, ok=True, exit_status=0,
                  console="ok", counters={"exit.total": 4}, host_seconds=host,
                  roi_host_seconds=roi, iterations=3)
    return RunResult(**{**fields, **kw})


# -- repeat.py: what must repeat, and what is kept ------------------------------------

def test_repeated_keeps_every_sample_and_reports_the_medians():
    times = iter([(0.9, 0.3), (0.5, 0.1), (0.7, 0.2), (4.0, 3.0)])
    r = repeated(lambda: run_record(*next(times)), 4)
    assert r.host_samples == [0.9, 0.5, 0.7, 4.0]
    assert r.roi_host_samples == [0.3, 0.1, 0.2, 3.0]
    assert r.host_seconds == 0.8 and r.roi_host_seconds == 0.25     # medians of four


@pytest.mark.parametrize("field, value", [("counters", {"exit.total": 5}),
                                          ("console", "ko"), ("iterations", 4),
                                          ("exit_status", 1)])
def test_repetitions_that_differ_in_more_than_time_stop_loudly(field, value):
    runs = iter([run_record(1.0, 0.5), run_record(1.0, 0.5, **{field: value})])
    with pytest.raises(NondeterministicRun, match=f"repetition 2 differs .* in {field}"):
        repeated(lambda: next(runs), 3)


def test_a_failed_run_is_not_repeated():
    calls = []

    def fail():
        calls.append(1)
        return dataclasses.replace(run_record(1.0, None), ok=False, reason="triple fault")
    r = repeated(fail, 5)
    assert len(calls) == 1 and r.host_samples == [1.0] and r.roi_host_samples == []


def test_a_nondeterministic_bench_is_one_line_and_exit_1(monkeypatch, capsys):
    runs = iter(range(100))

    def drifting(guest, backend, **opts):
        return run_record(1.0, 0.5, counters={"exit.total": next(runs)})
    monkeypatch.setattr(virtlab.matrix, "run_guest", drifting)
    status = main([*BENCH, "--format", "csv"], out=io.StringIO())
    err = capsys.readouterr().err
    assert status == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("virtlab: error: ") and "must be deterministic" in last
    assert "Traceback" not in err


# -- analysis/hosttime.py: the host columns from the samples ---------------------------

def test_host_figures_are_median_minimum_and_iqr_of_the_roi_samples():
    r = run_record(9.0, 0.4, roi_host_samples=[0.4, 0.1, 0.3, 0.9])
    h = hosttime.host_time(r)
    assert (h.median, h.minimum, h.samples) == (0.35, 0.1, 4)
    # numpy's linear percentiles: Q1 = 0.25, Q3 = 0.525
    assert h.iqr == pytest.approx(0.275)


def test_one_sample_has_no_spread_and_old_saved_results_have_one_sample():
    h = hosttime.host_time(run_record(2.0, 0.5))        # saved before repetitions
    assert (h.median, h.minimum, h.iqr, h.samples) == (0.5, 0.5, None, 1)
    whole = hosttime.host_time(run_record(2.0, None, host_samples=[2.0, 1.0, 3.0]))
    assert (whole.median, whole.minimum) == (2.0, 1.0)   # no ROI: the whole run


# -- the bench: --repeat, --save, the table, the README --------------------------------

@pytest.fixture(scope="module")
def saved(cache_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("repeat")
    path = work / "bench.json"
    p = in_process(cache_dir, *BENCH, "--repeat", 4, "--format", "json", "--save", path,
                   cwd=work)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), load_results(path)


def test_bench_repeat_saves_the_samples_and_the_table_is_derived_from_them(saved):
    table, (results, meta) = saved
    assert meta["repeat"] == 4
    natives = {r.workload: r for r in results if r.backend == "native"}
    for row, r in zip(table, results):
        assert len(r.host_samples) == len(r.roi_host_samples) == 4
        assert r.host_seconds == np.median(r.host_samples)
        assert r.roi_host_seconds == np.median(r.roi_host_samples)
        q1, q3 = np.percentile(r.roi_host_samples, [25, 75])
        assert row["repetitions"] == 4
        assert row["roi_host_seconds"] == r.roi_host_seconds
        assert row["roi_host_seconds_min"] == min(r.roi_host_samples)
        assert row["roi_host_seconds_iqr"] == pytest.approx(q3 - q1)
        # host_overhead: the ratio of the ROI medians, not of the whole runs
        assert row["host_overhead"] == pytest.approx(
            r.roi_host_seconds / natives[r.workload].roi_host_seconds)


def test_repeat_1_runs_once(cache_dir, tmp_path):
    p = in_process(cache_dir, *BENCH, "--repeat", 1, "--format", "csv", "--save", "b.json",
                   cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    results, meta = load_results(tmp_path / "b.json")
    assert meta["repeat"] == 1
    assert all(len(r.host_samples) == 1 for r in results)
    assert all(line.split(",")[COLUMNS.index("roi_host_seconds_iqr")] == ""
               for line in p.stdout.splitlines()[1:])


def test_run_repeats_three_times_by_default(cache_dir, tmp_path):
    p = in_process(cache_dir, "run", "nano.cli", "--backend", "trap", "--scale", 3,
                   "--format", "json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert len(d["host_samples"]) == len(d["roi_host_samples"]) == 3
    text = in_process(cache_dir, "run", "nano.cli", "--backend", "trap", "--scale", 3,
                      cwd=tmp_path)
    assert "host time (emulator):" in text.stdout and "median of 3 runs" in text.stdout


def test_readme_and_the_table_say_the_same(saved):
    """Every column is documented in the README, and the host ones as the
    code computes them: the emulator's time, over the ROI, medians."""
    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_]+)`.*$", readme, re.M)}
    documented = {name for line in rows.values() for name in re.findall(r"`([a-z_]+)`", line)}
    assert set(COLUMNS) <= documented, set(COLUMNS) - documented
    host = next(line for line in rows.values() if "`host_overhead`" in line)
    for words in ("region of interest", "median", "emulated CPU"):
        assert words in host, (words, host)
    # ... and the frame, re-derived from the saved results, agrees with the run's table
    table, (results, _) = saved
    df = frame(results, P.load("p4-2006"))
    assert list(df["host_overhead"]) == pytest.approx([row["host_overhead"] for row in table])


@pytest.mark.parametrize("args, repeat", [
    (["--format", "compact"], 1),                    # modeled figures only: one run is all
    (["--format", "compact", "--host"], 3), (["--format", "compact", "--save", "s.json"], 3),
    (["--format", "markdown"], 3), (["--format", "csv"], 3),
    (["--format", "compact", "--repeat", "5"], 5), (["--format", "csv", "--repeat", "1"], 1),
])
def test_default_repetitions_serve_the_host_figures(args, repeat, monkeypatch, tmp_path):
    asked = []

    def fake(workloads, names, scale=None, jobs=1, progress=False, repeat=None, **opts):
        asked.append(repeat)
        return [run_record(1.0, 0.5, backend="native", roi_instructions=10, instructions=20)]
    monkeypatch.setattr(virtlab.matrix, "run_matrix", fake)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--workloads", "nano.cli", *args], out=io.StringIO()) == 0
    assert asked == [repeat]
