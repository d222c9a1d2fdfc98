"""The tutorial back end of docs/writing-a-backend.md is a real package, and it
conforms.

The page's code blocks marked `<!-- file: PATH -->` are the package (several
blocks for one PATH are its pieces, in order).  This test cuts them out into a
temporary directory, installs the package with pip into a directory of this
session (offline, as tests/test_plugin_backend.py installs its plug-in: not into
the environment, which other tests and checkouts share), and then, as separate
processes with that directory on their path, as a reader who followed the page
would:

  - runs virtlab's conformance suite over the tutorial's back end alone
    (VIRTLAB_CONFORMANCE_BACKENDS), together with the package's own tests;
  - runs `virtlab list` and `virtlab run --format json`, and checks that the
    back end's own counter is reported and charged at its declared cost.

This is how CI builds the tutorial's package from the docs and runs the
conformance suite over it (issue 13, item 5)."""
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import pytest

from isolated_cli import install_offline

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-a-backend.md"
PACKAGE = "virtlab-ptrap"            # the directory the page's files live in
BACKEND = "ptrap"
AUDIT = "ptrap.port"
AUDIT_CYCLES = 60                    # its declared default cost on p4-2006
# The conformance suite has about 45 tests per back end; fewer than this many
# for ptrap means the selection went wrong, not that ptrap conforms.
MIN_CONFORMANCE = 35
OWN_TESTS = 3                        # the page's tests/test_ptrap.py

FILE_BLOCK = re.compile(r"^<!-- file: (\S+) -->\n```[\w-]*\n(.*?)^```[ \t]*$", re.M | re.S)


def doc_files(text):
    """{relative path: content} of the page's marked blocks.  The pieces of one
    file are joined by a blank line, or two before a piece that starts at the
    left margin (a top-level class or function: PEP 8's spacing)."""
    files = {}
    for m in FILE_BLOCK.finditer(text):
        path = PurePosixPath(m.group(1))
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"{DOC.name}: a file block outside the package: {path}")
        piece = m.group(2)
        if path in files:
            piece = files[path] + ("\n" if piece[:1].isspace() else "\n\n") + piece
        files[path] = piece
    return files


def test_blocks_are_cut_as_marked():
    text = ("<!-- file: p/a.py -->\n```python\nx = 1\n```\n\nprose\n```\nnot a file\n```\n"
            "<!-- file: p/a.py -->\n```python\nclass C:\n    y = 2\n```\n"
            "<!-- file: p/a.py -->\n```python\n    z = 3\n```\n")
    assert doc_files(text) == {PurePosixPath("p/a.py"): "x = 1\n\n\nclass C:\n    y = 2\n\n    z = 3\n"}
    with pytest.raises(ValueError):
        doc_files("<!-- file: ../evil.py -->\n```\nx\n```\n")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    files = doc_files(DOC.read_text(encoding="utf-8"))
    top = {p.parts[0] for p in files}
    assert top == {PACKAGE}, top
    dest = tmp_path_factory.mktemp("tutorial")
    for path, content in files.items():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_text(content, encoding="utf-8")
    return dest / PACKAGE


@pytest.fixture(scope="module")
def site(package, tmp_path_factory):
    """A directory with the tutorial's package installed in it, by pip, offline:
    its build back end (flit_core) comes from virtlab's test extra."""
    for module in ("pip", "flit_core"):
        pytest.importorskip(module, reason=f"{module} is needed to build the tutorial's "
                            "package offline: pip install '.[test]'")
    target = tmp_path_factory.mktemp("tutorial-site")
    return install_offline(package, target)


@pytest.fixture(scope="module")
def env(site, tmp_path_factory):
    cache = tmp_path_factory.mktemp("tutorial-cache")
    path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "VIRTLAB_CACHE": str(cache),
            "VIRTLAB_CONFORMANCE_BACKENDS": BACKEND, "COLUMNS": "200"}


def run(env, cwd, *argv, timeout=180):
    proc = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def test_the_package_passes_the_conformance_suite_and_its_own_tests(package, site, env,
                                                                     tmp_path):
    report = tmp_path / "junit.xml"
    run(env, site, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
        f"--junitxml={report}", ROOT / "tests" / "test_conformance.py", package / "tests",
        timeout=600)
    passed, other = {}, []
    for case in ET.parse(report).getroot().iter("testcase"):
        outcome = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        name = f"{case.get('classname')}.{case.get('name')}"
        if outcome:
            other.append((name, outcome[0]))
        else:
            passed.setdefault(case.get("classname").rsplit(".", 1)[-1], []).append(case.get("name"))
    assert not [n for n, o in other if o != "skipped"], other
    # Parametrised over ptrap alone: every parametrised test that ran names it,
    # and there are as many as one back end has.
    params = [n.split("[", 1)[1] for n in passed.get("test_conformance", []) if "[" in n]
    assert len(params) >= MIN_CONFORMANCE, params
    assert all(BACKEND in p for p in params), params
    assert len(passed.get("test_ptrap", [])) == OWN_TESTS, passed


def test_listed(env, site):
    out = run(env, site, "-m", "virtlab", "list")
    backends = out.split("\nWorkloads")[0].split()
    assert BACKEND in backends and "trap" in backends


def test_run_reports_and_charges_its_own_counter(env, site):
    def priced(backend):
        out = run(env, site, "-m", "virtlab", "run", "nano.in", "--backend", backend,
                  "--scale", 5, "--repeat", 1, "--profile", "p4-2006", "--format", "json")
        r = json.loads(out)
        assert r["ok"] and r["matches_native"], r["reason"]
        return r
    trap, ptrap = priced("trap"), priced(BACKEND)
    for part in ("counters", "roi_counters"):
        c = ptrap[part]
        assert c[AUDIT] == c["exit.io"] > 0, c
        assert {k: v for k, v in c.items() if not k.startswith(AUDIT)} == trap[part]
    # The same guest, the same exits, priced as trap's (priced_like): what the
    # model adds is exactly one charged audit per port access.
    assert ptrap["modeled_cycles"] - trap["modeled_cycles"] == \
        ptrap["counters"][AUDIT] * AUDIT_CYCLES
    assert ptrap["modeled_roi_cycles"] - trap["modeled_roi_cycles"] == \
        ptrap["roi_counters"][AUDIT] * AUDIT_CYCLES
