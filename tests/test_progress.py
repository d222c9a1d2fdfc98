"""Progress of a bench goes to stderr and never to stdout: a bar when stderr is a
terminal, one line per finished row otherwise (a CI log, `2> log`).

Checked on a real process, since what matters is which file descriptor is a
terminal: stderr a pipe, then a pseudo-terminal, with stdout a pipe both times
(`virtlab bench > out.md` on a terminal).
"""
import io
import os
import pty
import subprocess
import sys

import pytest

from virtlab.progress import progress
from virtlab.result import RunResult

ROWS = [("nano.syscall", "native"), ("nano.syscall", "trap"), ("nano.cli", "native"),
        ("nano.cli", "trap")]
BENCH = ["bench", "--workloads", "nano.syscall,nano.cli", "--backends", "trap",
         "--scale", "3", "--repeat", "1", "--format", "csv"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "VIRTLAB_CACHE": str(tmp_path_factory.mktemp("virtlab-cache"))}


def test_a_line_per_finished_row_when_stderr_is_not_a_terminal(env, tmp_path):
    p = subprocess.run([sys.executable, "-m", "virtlab", *BENCH], capture_output=True,
                       text=True, timeout=600, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [f"[{i}/4] {w} under {b}: ok"
                                     for i, (w, b) in enumerate(ROWS, 1)]
    assert p.stdout.splitlines()[0].startswith("workload,backend,")
    assert len(p.stdout.splitlines()) == 1 + len(ROWS)          # the table and nothing else


def test_a_bar_on_stderr_when_it_is_a_terminal_and_stdout_is_redirected(env, tmp_path):
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "virtlab", *BENCH], stdout=subprocess.PIPE,
                             stderr=slave, env={**env, "TERM": "xterm"}, cwd=tmp_path)
        os.close(slave)
        drawn = _read_all(master)
        stdout = p.stdout.read().decode()
        p.stdout.close()
        p.wait(600)
    finally:
        os.close(master)
    assert p.returncode == 0, drawn
    assert "\x1b[" in drawn and "%" in drawn           # rich drew a bar on the terminal
    assert "[1/4]" not in drawn                          # not the log lines
    assert "\x1b" not in stdout
    assert stdout.splitlines()[0].startswith("workload,backend,")
    assert len(stdout.splitlines()) == 1 + len(ROWS)


def _read_all(fd):
    """Everything written to a pseudo-terminal until its last writer closes it."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:                                  # EIO: no writer left
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def test_progress_lines_name_failed_rows():
    log = io.StringIO()
    shown = progress(2, log)
    shown.advance(RunResult(workload="nano.cli", backend="trap", scale=1, ok=True))
    shown.advance(RunResult(workload="nano.cli", backend="pv", scale=1, ok=False))
    shown.close()
    assert log.getvalue() == "[1/2] nano.cli under trap: ok\n[2/2] nano.cli under pv: FAILED\n"


def test_nothing_when_stderr_is_stdouts_own_file(env, tmp_path):
    """`virtlab bench --format csv 2>&1 | ...`: the lines would land inside
    the CSV, so none are written; the output is the table alone."""
    p = subprocess.run([sys.executable, "-m", "virtlab", *BENCH], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout
    lines = p.stdout.splitlines()
    assert lines[0].startswith("workload,backend,") and len(lines) == 1 + len(ROWS), p.stdout
