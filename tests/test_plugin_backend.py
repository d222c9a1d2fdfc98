"""A back end from outside virtlab (tests/plugin_backend/, `paranoid`) brings a
counter, its default cost and a plot colour through the entry point alone.

The package is installed with pip into a directory of this session (not into the
environment, which other tests and other checkouts share), and the commands run
as separate processes with that directory on their path, as a user who installed
the plug-in would run them.  The rest of the suite never sees it."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isolated_cli import in_process, install_offline

from analysis import plots

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "plugin_backend"
# The plug-in's declared default cost on p4-2006 (virtlab_paranoid.py).
PORT_CYCLES = 150


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A directory with the plug-in installed in it, by pip, offline."""
    try:
        import pip  # noqa: F401
    except ImportError:
        pytest.skip("pip is not available to install the plug-in")
    target = tmp_path_factory.mktemp("plugin-site")
    return install_offline(PLUGIN, target)


@pytest.fixture(scope="module")
def vl(site, tmp_path_factory):
    cache = tmp_path_factory.mktemp("plugin-cache")
    path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "VIRTLAB_CACHE": str(cache),
           "COLUMNS": "200"}

    def run(*args, code=None):
        argv = ["-c", code] if code else ["-m", "virtlab", *map(str, args)]
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                              timeout=180, env=env, cwd=site)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    return run


@pytest.fixture(scope="module")
def saved(vl, tmp_path_factory):
    path = tmp_path_factory.mktemp("plugin-bench") / "bench.json"
    out = vl("bench", "--backends", "paranoid", "--workloads", "nano.in", "--scale", 5,
             "--format", "csv", "--save", path)
    return path, out


def test_listed(vl):
    out = vl("list")
    assert "paranoid" in out.split("\nWorkloads")[0]


def test_bench_charges_the_plugin_counter(saved, vl):
    _, out = saved
    lines = out.splitlines()
    header = lines[0].split(",")
    rows = {r.split(",")[1]: dict(zip(header, r.split(","))) for r in lines[1:]}
    assert set(rows) == {"native", "paranoid"}
    # paranoid is native plus one charged check per port access: the same guest
    # instructions, so the difference is exactly the checks at their declared cost.
    code = f"""
from virtlab.result import load_results
from analysis import profile
from analysis.model import model
res = {{r.backend: r for r in load_results({str(saved[0])!r})[0]}}
p = profile.load("p4-2006")
r = res["paranoid"]
b = model(r.roi_counters, r.roi_instructions, p, "paranoid")
print(r.roi_counters["paranoid.port"], r.roi_counters["native.io"], b.events["paranoid.port"],
      p.cost("paranoid.port", "paranoid").assumption is not None, b.unknown)
"""
    ports, io, cycles, sourced, unknown = vl(code=code).split(maxsplit=4)
    assert int(ports) == int(io) > 0
    assert float(cycles) == int(ports) * PORT_CYCLES
    assert sourced == "True" and unknown.strip() == "{}"
    native = float(rows["native"]["modeled_cycles_per_iteration"])
    paranoid = float(rows["paranoid"]["modeled_cycles_per_iteration"])
    iterations = int(rows["paranoid"]["iterations"])
    assert paranoid - native == pytest.approx(int(ports) * PORT_CYCLES / iterations)


def test_profile_value_wins_over_the_declared_default(vl, tmp_path):
    text = (ROOT / "analysis" / "profiles" / "p4-2006.toml").read_text()
    mine = tmp_path / "mine.toml"
    mine.write_text(text + '\n[backends.paranoid."paranoid.port"]\ncycles = 7\n'
                           'assumption = "a test override"\n')
    code = f"""
from analysis import profile
p, q = profile.load("p4-2006"), profile.load({str(mine)!r})
c = profile.load("core2-2006").cost("paranoid.port", "paranoid")
print(p.cost("paranoid.port", "paranoid").cycles, q.cost("paranoid.port", "paranoid").cycles,
      c.cycles)
"""
    # p4's own declared default, the profile's override, the all-profiles default
    assert vl(code=code).split() == ["150.0", "7.0", "100.0"]


def test_report_shows_the_plugin(saved, vl, tmp_path):
    out = tmp_path / "report.md"
    vl("report", saved[0], "--out", out)
    text = out.read_text()
    assert "| paranoid" in text
    assert "`paranoid.port` | 150 | paranoid |" in text            # its declared cost
    assert "| `paranoid.port` | a port access checked" in text     # the counter table
    assert (tmp_path / "report-breakdown.png").stat().st_size > 0


def test_a_report_once_the_plugin_is_gone_prices_the_rest(saved, tmp_path):
    """This process never installed it: its saved runs are shown, named as
    not priced, and native's are priced as ever."""
    from virtlab import backend as backends
    assert "paranoid" not in backends.names()
    p = in_process(tmp_path, "report", saved[0], "--out", tmp_path / "r.md")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ("virtlab: 1 run under paranoid not priced: back end 'paranoid' is "
                        "not installed (its counters and their costs came with it)\n")
    assert "- 1 run under paranoid not priced" in (tmp_path / "r.md").read_text()


def test_colour_and_kind(vl):
    code = """
from analysis import plots
from analysis.counters import catalog
print(plots.color("paranoid"), plots.color("trap"), catalog().kind("paranoid.port"),
      plots.kind_color("paranoia") not in plots.KIND_COLORS.values(),
      plots.kind_color("paranoia") == plots.KIND_PALETTE[0])
"""
    colour, trap, kind, fresh, first = vl(code=code).split()
    assert colour in plots.PALETTE
    assert trap == "#d95f02" and kind == "paranoia" and fresh == "True"
    assert first == "True"     # the only installed kind without a colour of its own
