"""Command-line defects a new user met (one test or more each): every one is now
one clear line on stderr and exit status 2 (or 1 where a run failed), never a
traceback, and what a failed command keeps or prints is right.

As a user sees them: the exit status, stdout and stderr of the command, run
in-process through isolated_cli.in_process (the same command, working
directory and cache, stderr with the warnings a fresh interpreter would print;
it saves an interpreter start per command), with a failed run's exit status 1
also seen from a separate process; `virtlab.cli.main` directly where a test
must reach inside (Ctrl-C from a patched runner).
"""
import errno
import io
import json
import os
import stat

import pytest

from isolated_cli import cache_dir, in_process, isolated_cache, vl  # noqa: F401

import virtlab.matrix
from virtlab import asmguest as A
from virtlab import outfile
from virtlab.cli import main
from virtlab.machine import Machine
from virtlab.result import load_results

SCALE = 3


def one_line_error(p, status=2, *mentions):
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert p.returncode == status, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtlab: error: "), p.stderr
    for m in mentions:
        assert m in lines[0], (m, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def saved(cache_dir, tmp_path_factory):
    """A small saved bench (native and trap) for report and sensitivity."""
    path = tmp_path_factory.mktemp("saved") / "bench.json"
    p = in_process(cache_dir, "bench", "--workloads", "nano.cli", "--backends", "trap", "--scale",
           SCALE, "--repeat", 1, "--format", "csv", "--save", path)
    assert p.returncode == 0, p.stderr
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    (d / "empty.img").write_bytes(b"")
    (d / "hi.img").write_bytes(A.build(A.AsmGuest(body=A.putc("h") + A.putc("i")
                                                  + A.exit_with(0))))
    (d / "hlt.img").write_bytes(A.build(A.AsmGuest(body="cli\nhlt\n")))
    (d / "ud2.img").write_bytes(A.build(A.AsmGuest(body="ud2\n")))
    return d


# -- tracebacks -----------------------------------------------------------------------------

def test_sensitivity_plot_with_a_wrong_extension(cache_dir, saved, tmp_path):
    p = in_process(cache_dir, "sensitivity", saved, "--event", "exit.priv", "--range", "0:10:3",
           "--plot", tmp_path / "x.txt")
    one_line_error(p, 2, "x.txt")
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("where", ["existing", "slash"])
def test_report_out_names_a_directory(cache_dir, saved, tmp_path, where):
    out = tmp_path if where == "existing" else f"{tmp_path}/new/"
    one_line_error(in_process(cache_dir, "report", saved, "--out", out), 2, "directory")


# -- images ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "trace", "audit"])
def test_an_empty_image_is_refused(cache_dir, images, command):
    one_line_error(in_process(cache_dir, command, "--image", images / "empty.img"), 2,
                   "empty.img", "empty")


def test_an_image_run_with_a_workload_name_is_labelled_as_the_image(cache_dir, images):
    p = in_process(cache_dir, "run", "nano.syscall", "--image", images / "hi.img",
                   "--format", "json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["workload"] == "hi.img:nano.syscall" and d["console"] == "hi"
    assert d["scale"] == 10000                 # the workload's own default, told to the image
    text = in_process(cache_dir, "run", "nano.syscall", "--image", images / "hi.img").stdout
    assert text.startswith("hi.img:nano.syscall under native (scale 10000): ok")


def test_a_failed_run_prints_no_exit_status(cache_dir, images):
    p = vl(cache_dir, "run", "--image", images / "hlt.img")
    assert p.returncode == 1
    first = p.stdout.splitlines()[0]
    assert first == "hlt.img under native (scale 0): FAILED", first
    assert "None" not in p.stdout


def test_audit_of_a_failing_image_gives_no_verdict(cache_dir, images):
    p = in_process(cache_dir, "audit", "--image", images / "hlt.img")
    assert p.returncode == 1
    assert "virtualizable" not in p.stdout
    assert "no verdict" in p.stdout and "run failed" in p.stdout


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_trace_of_a_failing_guest_exits_1(cache_dir, images, fmt):
    # As run, audit and translate do: the trace is shown, and the status says the run failed.
    p = in_process(cache_dir, "trace", "--image", images / "ud2.img", "--backend", "hw",
                   "--format", fmt)
    assert p.returncode == 1, p.stderr
    assert p.stderr == ""
    reason = json.loads(p.stdout)["reason"] if fmt == "json" else p.stdout
    assert "ud2" in reason
    if fmt == "json":
        assert json.loads(p.stdout)["ok"] is False


def test_a_trace_cut_at_its_limit_exits_0(cache_dir, images):
    p = in_process(cache_dir, "trace", "--image", images / "hi.img", "--limit", 1,
                   "--format", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ok"] is True


@pytest.fixture
def no_guest_runs(monkeypatch):
    """A refusal must come before any guest runs: booting one fails the test."""
    def boot(*_args, **_kw):
        raise AssertionError("a guest was booted for a command that should be refused")
    monkeypatch.setattr(Machine, "boot", boot)


# -- bench selections -------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, mention", [
    ("--workloads", "", "no workload"), ("--workloads", " , ", "no workload"),
    ("--backends", "", "no back end"), ("--backends", ",", "no back end"),
])
def test_bench_refuses_an_empty_selection(cache_dir, no_guest_runs, option, value, mention):
    # Refused before anything runs (an empty selection once meant the full bench).
    one_line_error(in_process(cache_dir, "bench", option, value), 2, mention)


def test_a_bench_whose_runs_all_fail_exits_1(cache_dir):
    p = vl(cache_dir, "bench", "--workloads", "nano.cli", "--backends", "trap", "--scale",
           SCALE, "--max-exits", 1, "--repeat", 1, "--format", "csv")
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.splitlines()[-1] == "virtlab: every run of the bench failed"
    assert p.stdout.count(",False,") == 2         # the table still says what happened


# -- budgets ---------------------------------------------------------------------------------

GUEST_COMMANDS = [["run", "nano.cli"], ["trace", "nano.cli"], ["audit", "nano.cli"],
                  ["translate", "nano.cli"], ["bench", "--workloads", "nano.cli"]]


@pytest.mark.parametrize("command", GUEST_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("option, value", [
    ("--timeout", "inf"), ("--timeout", "-inf"), ("--timeout", "nan"), ("--timeout", "1e13"),
    ("--max-exits", "inf"), ("--max-exits", "1e3"),
])
def test_a_budget_the_machine_cannot_keep_is_refused(cache_dir, no_guest_runs, command,
                                                      option, value):
    # inf once reached Unicorn as a count of microseconds: OverflowError after the boot.
    one_line_error(in_process(cache_dir, *command, f"{option}={value}"), 2, option, value)


@pytest.mark.parametrize("command", GUEST_COMMANDS, ids=lambda c: c[0])
def test_a_scale_beyond_the_limit_says_the_limit(cache_dir, no_guest_runs, command):
    one_line_error(in_process(cache_dir, *command, "--scale", 10_000_001), 2,
                   "from 1 to 10,000,000", "10000001")


def test_jobs_never_start_more_workers_than_rows(monkeypatch):
    """Under fork a process pool starts all its workers at once."""
    from concurrent.futures import Future
    started = []

    class Pool:
        def __init__(self, max_workers):
            started.append(max_workers)

        def submit(self, fn, task):
            f = Future()
            f.set_result(task)
            return f

        def shutdown(self, **_kw):
            pass
    monkeypatch.setattr(virtlab.matrix.cf, "ProcessPoolExecutor", Pool)
    assert sorted(r for _, r in virtlab.matrix._parallel(["a", "b"], 100_000)) == ["a", "b"]
    assert started == [2]


def test_the_longest_timeout_is_accepted(cache_dir):
    p = in_process(cache_dir, "run", "nano.cli", "--scale", 1, "--repeat", 1,
                   "--timeout", "1e12", "--format", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ok"] is True


# -- report and sensitivity arguments -------------------------------------------------------

@pytest.mark.parametrize("sweep, mentions", [
    ("exit.priv@vmware=0:10:3", ["vmware"]),
    ("exit.priv", ["EVENT[@BACKEND]=LO:HI", "exit.priv"]),
    ("exit.priv@=0:10", ["EVENT[@BACKEND]=LO:HI"]),
    ("exit.priv@trap=0:10:100000", ["100000"]),
    # once a figure of overheads of inf: "Axis limits cannot be NaN or Inf"
    ("exit.priv@trap=0:1e308:3", ["0:1e308:3", "HI <= 1e+09"]),
])
def test_report_sweep_errors(cache_dir, saved, tmp_path, sweep, mentions):
    line = one_line_error(in_process(cache_dir, "report", saved, "--out", tmp_path / "r.md",
                             "--sweep", sweep), 2, *mentions)
    assert "unpack" not in line
    assert not (tmp_path / "r.md").exists()


def test_report_default_sweep_falls_back_when_hw_was_not_saved(cache_dir, saved, tmp_path):
    p = in_process(cache_dir, "report", saved, "--out", tmp_path / "r.md")
    assert p.returncode == 0, p.stderr


def test_sensitivity_range_has_an_upper_bound(cache_dir, saved, no_guest_runs):
    one_line_error(in_process(cache_dir, "sensitivity", saved, "--event", "exit.priv", "--range",
                      "1:10:100000"), 2, "1:10:100000", "200")


# -- output files ------------------------------------------------------------------------------
# Only files under tmp_path are written: a FIFO stands for a device, a failing
# write for a full disk (test_outfile.py tests the rule itself).

@pytest.fixture
def fake_runs(saved, monkeypatch):
    """`virtlab bench` in this process returns the saved bench instead of
    running guests; the list of its calls."""
    calls = []

    def fake(workloads, names, *_args, **_kw):
        calls.append(names)
        return load_results(saved)[0]
    monkeypatch.setattr(virtlab.matrix, "run_matrix", fake)
    return calls


QUICK = ["bench", "--workloads", "nano.cli", "--backends", "trap", "--repeat", 1]


def _saved_bench(path):
    return [(r.workload, r.backend) for r in load_results(path)[0]]


@pytest.mark.parametrize("writer", ["save", "bench-out", "report-out"])
def test_an_output_through_a_symlink_replaces_its_target_and_keeps_the_link(
        cache_dir, saved, fake_runs, tmp_path, writer):
    real, link = tmp_path / "real.out", tmp_path / "link.out"
    real.write_text("old")
    link.symlink_to(real.name)
    argv = {"save": [*QUICK, "--format", "csv", "--save", link],
            "bench-out": [*QUICK, "--format", "csv", "--out", link],
            "report-out": ["report", saved, "--out", link]}[writer]
    p = in_process(cache_dir, *argv)
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and os.readlink(link) == real.name
    text = real.read_text()
    if writer == "save":
        assert _saved_bench(real) == [("nano.cli", "native"), ("nano.cli", "trap")]
    else:
        assert "nano.cli" in text and text != "old"


def test_save_into_a_fifo_writes_through_it(cache_dir, fake_runs, tmp_path):
    from test_outfile import fifo_reader
    pipe = tmp_path / "pipe"
    read = fifo_reader(pipe)
    p = in_process(cache_dir, *QUICK, "--format", "csv", "--save", pipe)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert json.loads(read())["format"] == "virtlab-bench/1"


@pytest.mark.parametrize("writer", ["save", "bench-out", "report-out", "sensitivity-plot"])
def test_a_failed_write_after_the_work_is_one_line(cache_dir, saved, fake_runs, tmp_path,
                                                   monkeypatch, writer):
    """A full disk (ENOSPC, as /dev/full gives) once the runs are done: the
    same one line and status as an output refused beforehand; what was there
    stays."""
    dest = tmp_path / ("s.png" if writer == "sensitivity-plot" else "dest")
    dest.write_text("old")
    argv = {"save": [*QUICK, "--format", "csv", "--save", dest],
            "bench-out": [*QUICK, "--format", "csv", "--out", dest],
            "report-out": ["report", saved, "--out", dest],
            "sensitivity-plot": ["sensitivity", saved, "--event", "exit.priv",
                                 "--range", "0:10:3", "--plot", dest]}[writer]

    write = outfile.write

    def full(path, data):
        if os.fspath(path) != str(dest):          # a report's figures go beside it
            return write(path, data)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
    monkeypatch.setattr(outfile, "write", full)
    one_line_error(in_process(cache_dir, *argv), 2,
                   f"cannot write '{dest}': No space left on device")
    assert dest.read_text() == "old"


PROC = "/proc/virtlab-test"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("option", ["--save", "--out", "--plot"])
def test_bench_refuses_an_output_where_no_file_can_be_made_before_running(
        cache_dir, fake_runs, option):
    # As root, os.access says /proc is writable: the runs went ahead, then a traceback.
    name = f"{PROC}.png"
    one_line_error(in_process(cache_dir, *QUICK, option, name), 2, "cannot write", PROC)
    assert fake_runs == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", ["report", "sensitivity"])
def test_report_and_sensitivity_refuse_a_figure_where_none_can_be_made(cache_dir, saved,
                                                                       command):
    argv = (["report", saved, "--out", f"{PROC}.md"] if command == "report" else
            ["sensitivity", saved, "--event", "exit.priv", "--range", "0:10:3",
             "--plot", f"{PROC}.png"])
    one_line_error(in_process(cache_dir, *argv), 2, "cannot write", PROC)


@pytest.mark.parametrize("command", ["bench", "report"])
def test_a_figure_name_taken_by_a_directory_is_refused_before_any_work(
        cache_dir, saved, fake_runs, tmp_path, command):
    """bench --plot fig.png and report --out fig.md write fig-overhead.png
    beside: each of those is checked, not only the name given."""
    (tmp_path / "fig-overhead.png").mkdir()
    argv = ([*QUICK, "--format", "csv", "--plot", tmp_path / "fig.png"] if command == "bench"
            else ["report", saved, "--out", tmp_path / "fig.md"])
    one_line_error(in_process(cache_dir, *argv), 2, "fig-overhead.png", "directory")
    assert fake_runs == []
    assert [p.name for p in tmp_path.iterdir()] == ["fig-overhead.png"]


# -- Ctrl-C ----------------------------------------------------------------------------------

BENCH = ["bench", "--workloads", "nano.syscall,nano.cli", "--backends", "trap", "--scale",
         SCALE, "--repeat", 1, "--format", "csv"]


@pytest.fixture
def interrupt_third_row(monkeypatch):
    """The bench's row runner, with Ctrl-C arriving during the third row."""
    real, rows = virtlab.matrix.run_row, []

    def runner(task):
        rows.append(task)
        if len(rows) == 3:
            raise KeyboardInterrupt
        return real(task)
    monkeypatch.setattr(virtlab.matrix, "run_row", runner)
    return rows


def test_ctrl_c_keeps_the_finished_rows_in_save(interrupt_third_row, tmp_path, capsys):
    dest = tmp_path / "partial.json"
    out = io.StringIO()
    status = main([*map(str, BENCH), "--save", str(dest)], out=out)
    err = capsys.readouterr().err
    assert status == 130 and out.getvalue() == ""
    assert f"kept the 2 finished rows in {dest}" in err and "Traceback" not in err
    results, meta = load_results(dest)
    assert [(r.workload, r.backend) for r in results] == [("nano.syscall", "native"),
                                                          ("nano.syscall", "trap")]
    assert all(r.ok and r.instructions for r in results)
    assert results[1].matches_native is True
    assert meta["provenance"]["interrupted"] is True
    # what was kept can be analysed
    status = main(["report", str(dest), "--out", str(tmp_path / "r.md")], out=io.StringIO())
    assert status == 0, capsys.readouterr().err
    assert "interrupted" in (tmp_path / "r.md").read_text()


def test_ctrl_c_without_save_just_stops(interrupt_third_row, capsys):
    status = main(list(map(str, BENCH)), out=io.StringIO())
    assert status == 130
    assert capsys.readouterr().err.splitlines()[-1] == "virtlab: interrupted"


def test_ctrl_c_before_any_row_finished_writes_nothing(monkeypatch, tmp_path, capsys):
    def runner(task):
        raise KeyboardInterrupt
    monkeypatch.setattr(virtlab.matrix, "run_row", runner)
    dest = tmp_path / "none.json"
    assert main([*map(str, BENCH), "--save", str(dest)], out=io.StringIO()) == 130
    assert not dest.exists()
