"""The Python API (`virtlab.run`, `virtlab.bench`) as a script meets it: in a
fresh interpreter, each function called twice.

The defects this guards against only show there: a submodule named like a
function replaces the function once anything imports it (so the second call
of `virtlab.bench()` failed with "'module' object is not callable"), and an
in-process test that imported the package's modules first would never see
the first call work.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import virtlab
from virtlab.errors import UsageError

SCALE = 2


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("virtlab-cache")


def fresh(script, cache_dir):
    """Run `script` in a new interpreter; what it prints on its last line, as JSON."""
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "VIRTLAB_CACHE": str(cache_dir)})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.splitlines()[-1])


def test_bench_twice_in_a_fresh_interpreter_with_a_list_and_a_string(cache_dir):
    got = fresh(f"""
        import json, pkgutil, importlib, types
        import virtlab
        first = virtlab.bench("nano.syscall,nano.cli", "trap", scale={SCALE}, repeat=1)
        # Every submodule imported, as any program may: the functions stay functions.
        for m in pkgutil.walk_packages(virtlab.__path__, "virtlab."):
            if not m.name.endswith("__main__"):          # that one runs the command line
                importlib.import_module(m.name)
        second = virtlab.bench(["nano.syscall", "nano.cli"], ["trap"], scale={SCALE}, repeat=1)
        cols = ["workload", "backend", "modeled_cycles", "modeled_overhead", "ok"]
        print(json.dumps({{
            "functions": [not isinstance(f, types.ModuleType) and callable(f)
                          for f in (virtlab.bench, virtlab.run)],
            "first": first[cols].values.tolist(), "second": second[cols].values.tolist()}}))
    """, cache_dir)
    assert got["functions"] == [True, True]
    keys = [(w, b) for w in ("nano.syscall", "nano.cli") for b in ("native", "trap")]
    assert [tuple(r[:2]) for r in got["first"]] == keys
    assert got["second"] == got["first"]             # a list names what the string names
    assert all(r[4] and r[2] > 0 for r in got["first"])


def test_run_twice_models_with_the_default_profile_unless_told_not_to(cache_dir):
    got = fresh(f"""
        import json
        import virtlab
        from analysis import profile
        a = virtlab.run("nano.syscall", "trap", scale={SCALE})
        b = virtlab.run("nano.syscall", "trap", scale={SCALE})
        bare = virtlab.run("nano.syscall", "trap", scale={SCALE}, model=False)
        print(json.dumps({{"default": profile.DEFAULT,
                          "a": [a.profile, a.modeled_cycles, a.instructions],
                          "b": [b.profile, b.modeled_cycles, b.instructions],
                          "bare": [bare.profile, bare.modeled_cycles, bare.instructions],
                          "samples": [len(a.host_samples), len(bare.roi_host_samples)]}}))
    """, cache_dir)
    assert got["a"][0] == got["default"] == "p4-2006"
    assert got["a"][1] > 0 and got["a"][2] > 0
    assert got["b"] == got["a"]                      # deterministic, and callable again
    assert got["bare"] == [None, None, None]
    assert got["samples"] == [1, 1]                  # the API runs once unless asked


def test_run_repeat_keeps_every_sample_and_the_medians():
    r = virtlab.run("nano.cli", "native", scale=SCALE, model=False, repeat=3)
    assert len(r.host_samples) == len(r.roi_host_samples) == 3
    assert r.host_seconds == sorted(r.host_samples)[1]
    assert r.roi_host_seconds == sorted(r.roi_host_samples)[1]


@pytest.mark.parametrize("workloads, backends, mention", [
    ("", None, "no workload"), ([], None, "no workload"), (" , ", None, "no workload"),
    ("nano.cli", "", "no back end"), ("nano.cli", [], "no back end"),
    ("nano.cli", "trap,vmware", "vmware"), ("nano.zzz", None, "nano.zzz"),
])
def test_bench_refuses_an_empty_or_unknown_selection(workloads, backends, mention):
    with pytest.raises(UsageError, match=mention):
        virtlab.bench(workloads, backends, scale=SCALE)


@pytest.mark.parametrize("repeat", [0, -1, 1.5, True, "3"])
def test_repeat_must_be_a_positive_integer(repeat):
    with pytest.raises(UsageError, match="repeat"):
        virtlab.run("nano.cli", "native", scale=SCALE, model=False, repeat=repeat)


@pytest.mark.parametrize("budget", [dict(timeout=float("inf")), dict(timeout=float("nan")),
                                    dict(timeout=0), dict(timeout=1e13), dict(timeout="5"),
                                    dict(max_exits=0), dict(max_exits=float("inf")),
                                    # (0 once reached mmap, 4096 a struct packing the VMM's
                                    # addresses: tracebacks)
                                    dict(ram_mb=0), dict(ram_mb=-1), dict(ram_mb=2.5),
                                    dict(ram_mb=4096)])
def test_a_budget_the_machine_cannot_keep_is_refused_before_a_run(budget, monkeypatch):
    from virtlab.machine import Machine

    def boot(*_args, **_kw):
        raise AssertionError("a guest was booted for a refused budget")
    monkeypatch.setattr(Machine, "boot", boot)
    (name,) = budget
    with pytest.raises(UsageError, match=name):
        virtlab.run("nano.cli", "native", scale=SCALE, model=False, **budget)
    with pytest.raises(UsageError, match=name):
        virtlab.bench("nano.cli", "trap", scale=SCALE, repeat=1, **budget)
