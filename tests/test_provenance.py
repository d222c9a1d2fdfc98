"""Provenance: `virtlab --version`, what `bench --save` records about where its
results came from, and `virtlab report` showing it."""
import datetime
import io
import json
import os
import platform
import subprocess
import sys
from importlib import metadata

import pytest

import virtlab
from virtlab import provenance
from virtlab.cli import main


def test_version_subprocess():
    p = subprocess.run([sys.executable, "-m", "virtlab", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == ""
    first, libs, host = p.stdout.splitlines()
    assert first.startswith(f"virtlab {virtlab.__version__}")
    assert libs == (f"Python {platform.python_version()}, unicorn {metadata.version('unicorn')}, "
                    f"capstone {metadata.version('capstone')}, "
                    f"keystone {metadata.version('keystone-engine')}")
    assert host.startswith("host: ") and f"{os.cpu_count()} cores" in host


def test_version_in_process_goes_to_out(capsys):
    out = io.StringIO()
    assert main(["--version"], out=out) == 0
    assert out.getvalue().startswith("virtlab ") and capsys.readouterr().out == ""


def test_the_record():
    p = provenance.collect(["bench", "--scale", 3], profile="p4-2006", scale=3, repeat=2)
    assert p["virtlab"] == virtlab.__version__
    assert p["command"] == "virtlab bench --scale 3"
    date = datetime.datetime.fromisoformat(p["date"])
    assert date.utcoffset() == datetime.timedelta(0)                   # UTC
    assert p["host"]["cores"] == os.cpu_count() and p["host"]["cpu"]
    assert p["python"] == platform.python_version()
    assert (p["unicorn"], p["capstone"], p["keystone"]) == (
        metadata.version("unicorn"), metadata.version("capstone"),
        metadata.version("keystone-engine"))
    assert (p["profile"], p["scale"], p["repeat"]) == ("p4-2006", 3, 2)
    json.dumps(p)                                                      # plain data


def test_the_commit_of_this_checkout():
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=provenance.Path(
            provenance.__file__).parent, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert provenance.git_commit().rstrip("+") == head.strip()


def test_no_git_or_no_checkout_is_no_commit_and_no_failure(tmp_path, monkeypatch):
    assert provenance.git_commit(tmp_path) is None                     # not a checkout

    def no_git(*a, **kw):
        raise FileNotFoundError("git")
    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert provenance.git_commit() is None
    assert provenance.collect([])["commit"] is None
    assert "commit" not in provenance.version_text()


def test_report_shows_the_provenance_of_what_it_analyses(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VIRTLAB_CACHE", str(tmp_path / "cache"))
    saved, report = tmp_path / "b.json", tmp_path / "r.md"
    argv = ["bench", "--workloads", "nano.cli", "--backends", "hw", "--scale", "2",
            "--repeat", "1", "--format", "csv", "--save", str(saved)]
    assert main(argv, out=io.StringIO()) == 0
    recorded = json.loads(saved.read_text())["meta"]["provenance"]
    assert recorded["command"] == "virtlab " + " ".join(argv)
    out = io.StringIO()
    assert main(["report", str(saved), "--out", str(report)], out=out) == 0
    shown = out.getvalue()
    text = report.read_text()
    for line in provenance.describe(recorded):
        assert f"  {line}\n" in shown and f"- {line}\n" in text
    assert f"by virtlab {virtlab.__version__}" in shown
    assert recorded["date"] in text and "command: virtlab bench --workloads nano.cli" in text


def test_a_file_saved_before_provenance_says_so():
    assert provenance.describe({}) == ["no provenance recorded (saved by an older virtlab)"]
    assert provenance.describe(None) == provenance.describe({})
