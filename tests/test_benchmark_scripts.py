"""The exit-path benchmark scripts run and print what the README says they
print (no figure is judged here: speed lives in benchmarks/, not in tests)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _json(script, *args):
    p = subprocess.run([sys.executable, str(BENCHMARKS / script), "--repeat", "1", "--json",
                        *args], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("script, only", [
    ("exit_path.py", "gp_exit_us,idt_syscall_us"),
    ("exit_costs.py", "trap.io_us,trap.pf_fill_us,pv.hypercall_us"),
])
def test_an_exit_benchmark_prints_each_path_against_the_floor(script, only):
    # The figures are host times, so only their shape is asserted: with one
    # sample on a loaded machine a path's marginal time (its run of 2n exits
    # less its run of n) may even come out negative.
    out = _json(script, "--only", only)
    names = only.split(",")
    assert all(_number(out[n]) for n in names)
    assert _number(out["floor_exit_us"]) and _number(out["floor_raw_exit_us"])
    for ratios in ("ratio_to_floor", "best_ratio_to_floor"):
        assert set(out[ratios]) == set(names) and all(map(_number, out[ratios].values()))
    # Not a time: each of these paths enters the platform once per exit, exactly.
    assert out["vmm_entries_per_exit"] == {n: 1.0 for n in names}


def test_a_path_that_enters_the_platform_twice_is_read_per_entry():
    """A system call under trap is the reflected `int` and the kernel's
    observed `iretd`; under bt the reflected `int` and the `iretd` callout:
    two entries each, exactly, and the table prints each path per entry."""
    only = "trap.syscall_us,bt.syscall_us"
    assert _json("exit_costs.py", "--only", only)["vmm_entries_per_exit"] == \
        {n: 2.0 for n in only.split(",")}


def test_the_upcall_is_measured_beside_its_hypercall_alone():
    """pv.upcall is a hypercall and the upcall it causes, in one entry;
    pv.set_timer the same hypercall whose deadline never fires (its runs
    make no upcall, or the script stops), so that the difference of the two
    is the upcall's own cost."""
    out = _json("exit_costs.py", "--only", "pv.upcall_us,pv.set_timer_us")
    assert out["vmm_entries_per_exit"] == {"pv.upcall_us": 1.0, "pv.set_timer_us": 1.0}
    assert _number(out["pv.upcall_us"]) and _number(out["pv.set_timer_us"])
    # ... and the difference is printed, from the same medians, against the same floor.
    alone = out["pv.upcall_alone_us"]
    assert math.isclose(alone, out["pv.upcall_us"] - out["pv.set_timer_us"], abs_tol=0.02)
    assert math.isclose(out["ratio_to_floor"]["pv.upcall_alone_us"],
                        alone / out["floor_exit_us"], rel_tol=0.02, abs_tol=0.1)
    assert "pv.upcall_alone_us" not in _json("exit_costs.py", "--only", "pv.upcall_us")


def test_entries_read_a_compound_path_kind_by_kind():
    """--entries times each exit handler by its cause: an exit of bt.syscall
    is one reflected `int 0x80` and one iret callout, exactly, and pv.upcall
    one hypercall (whose handler makes the upcall on its way out).  The
    times are host times: only their shape is asserted."""
    out = _json("exit_costs.py", "--entries", "--only", "bt.syscall_us,pv.upcall_us")
    per_exit = {name: {c: h["per_exit"] for c, h in f["handlers"].items()}
                for name, f in out.items()}
    assert per_exit == {"bt.syscall_us": {"int 0x80": 1.0, "callout iret": 1.0},
                        "pv.upcall_us": {"hypercall set_timer_op": 1.0}}
    for f in out.values():
        assert all(map(_number, (f["us"], f["floor_us"], f["outside_us"])))
        assert all(_number(h["us"]) for h in f["handlers"].values())


def test_the_store_rate_is_read_against_the_raw_loop():
    """store_mips is a rate, like guest_mips: a ratio to raw_mips, no entries."""
    out = _json("exit_path.py", "--only", "store_mips")
    assert _number(out["store_mips"]) and _number(out["raw_mips"])
    assert set(out["ratio_to_floor"]) == {"store_mips"}
    assert out["vmm_entries_per_exit"] == {}


def _number(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_an_unknown_figure_is_refused():
    p = subprocess.run([sys.executable, str(BENCHMARKS / "exit_costs.py"), "--only", "nope"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "unknown figure(s): nope" in p.stderr


def test_two_checkouts_compared_path_by_path():
    root = BENCHMARKS.parent
    p = subprocess.run([sys.executable, str(BENCHMARKS / "compare_trees.py"), str(root),
                        "--rounds", "1", "--runs", "1", "--only",
                        "idt_syscall_us,trap.syscall_us,pv.upcall_us"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["path", "old", "us", "x", "floor", "new", "us", "x", "floor",
                                "new/old"]
    names = {line.split()[0] for line in lines[1:]}
    assert names == {"floor_exit_us", "idt_syscall_us", "trap.syscall_us", "pv.upcall_us"}


def test_an_unknown_path_to_compare_is_refused():
    p = subprocess.run([sys.executable, str(BENCHMARKS / "compare_trees.py"),
                        str(BENCHMARKS.parent), "--only", "trap.syscall_us,nope"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "unknown path(s): nope" in p.stderr


def test_a_checkout_that_is_not_one_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, str(BENCHMARKS / "compare_trees.py"), str(tmp_path),
                        "--rounds", "1", "--runs", "1"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 2 and f"'{tmp_path}' is not a virtlab checkout" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("script, args", [
    ("exit_costs.py", ["--repeat", "0"]),
    ("exit_path.py", ["--repeat", "-1"]),
    ("translation.py", ["--repeat", "x"]),
    ("boot.py", ["--repeat", "0"]),
    ("suite.py", ["--scale", "0"]),
    ("suite.py", ["--backends", "vmware"]),
    ("bt_differential.py", ["--sequences", "-5"]),
    ("bt_differential.py", ["--per-image", "0"]),
    ("bt_differential.py", ["--per-image", "257"]),
    ("bt_differential.py", ["--jobs", "0"]),
    ("bt_differential.py", ["--show", "-1"]),
    ("compare_trees.py", [str(BENCHMARKS.parent), "--runs", "0"]),
])
def test_a_bad_option_is_one_line_and_exit_2(script, args):
    """As the CLI does: a count that is not a count, a back end that is not
    installed, refused before anything runs (these used to end in a
    traceback: a median of no samples, a division by zero)."""
    p = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"{script}: error: ")


def test_an_exit_costs_the_difference_of_two_runs_and_the_best_takes_each_runs_fastest():
    """per_exit times runs of n and 2n exits, so that a run's fixed cost cancels;
    best() keeps the fastest run of each length before taking the difference
    (the fastest difference would favour a slowed first run)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from guestbench import Marginal, best, per_exit, value
    finally:
        sys.path.remove(str(BENCHMARKS))
    sample = per_exit(lambda k: 0.5 + k * 2e-6, 1000)       # 0.5 s to boot, 2 us an exit
    assert sample == Marginal(1000, 0.5 + 2e-3, 0.5 + 4e-3)
    assert value(sample) == pytest.approx(2.0)
    slowed_first = Marginal(1000, 0.9, 0.504)                # interference in the n run
    slowed_second = Marginal(1000, 0.502, 0.9)
    assert best([slowed_first, slowed_second]) == pytest.approx(2.0)
    assert best([3.0, 2.5, 4.0]) == 2.5 and value(2.5) == 2.5


def test_calls_per_exit_are_the_same_on_every_run():
    """--calls counts Python calls instead of timing: a property of the code,
    so two checkouts that are the same checkout agree exactly on every path."""
    out = _json("exit_costs.py", "--calls", "--only", "trap.syscall_us,pv.hypercall_us")
    assert set(out) == {"trap.syscall_calls", "pv.hypercall_calls"}
    assert all(v >= 1 and v == int(v) for v in out.values()), out
    root = BENCHMARKS.parent
    p = subprocess.run([sys.executable, str(BENCHMARKS / "compare_trees.py"), str(root),
                        "--calls", "--only", "idt_syscall_us,trap.syscall_us,bt.indirect_hit_us"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["path", "old", "calls", "new", "calls", "new/old"]
    rows = [line.split() for line in lines[1:]]
    assert {r[0] for r in rows} == {"idt_syscall", "trap.syscall", "bt.indirect_hit"}
    assert all(r[1] == r[2] and r[3] in ("1.00", "-") for r in rows), p.stdout


FAKE_VALGRIND = """#!{python}
# Stands in for valgrind: the child's own output, then callgrind's count for
# a run of n exits at {per_exit} host instructions each on {fixed} fixed ones.
import subprocess, sys
child = sys.argv[sys.argv.index("--child") + 1]
if child.startswith("broken"):
    sys.stderr.write("==1== the child crashed\\n")
    sys.exit(1)
multiple = int(child.rsplit(":", 1)[1])
n = 5000 if not child.startswith("floor") else 20000
per = {per_exit} if not child.startswith("floor") else 4000
print(n)
sys.stderr.write(f"==1== Events    : Ir\\n==1== Collected : {{{fixed} + multiple * n * per}}\\n")
"""


def _guestbench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import guestbench
    finally:
        sys.path.remove(str(BENCHMARKS))
    return guestbench


def test_instructions_per_exit_are_the_difference_of_two_counted_runs(tmp_path):
    """--instructions: two children under callgrind per path, n and 2n
    exits; their counts' difference over n is the figure (here from a
    stand-in for valgrind with known counts), and a child that fails is a
    clear error."""
    gb = _guestbench()
    fake = tmp_path / "valgrind"
    fake.write_text(FAKE_VALGRIND.format(python=sys.executable, per_exit=42000, fixed=10**9))
    fake.chmod(0o755)
    script = BENCHMARKS / "exit_path.py"
    assert gb.instructions(script, "idt_syscall_us", str(fake)) == 42000
    assert gb.instructions(script, "floor", str(fake)) == 4000
    assert gb.counted(script, "idt_syscall_us", str(fake)) == (42000, None)   # no entries said
    with pytest.raises(SystemExit, match="broken: the counted run failed: ==1== the child crashed"):
        gb.instructions(script, "broken", str(fake))


def test_a_counted_child_makes_one_run_and_says_its_n():
    """What valgrind runs: the script with --child NAME:MULTIPLE makes one
    run of MULTIPLE * n exits and prints n first; a path's child then its
    time and the VMM entries its machine took (the floor has no machine)."""
    for name, n in (("floor", 20000), ("gp_exit_us", None)):
        p = subprocess.run([sys.executable, str(BENCHMARKS / "exit_path.py"), "--child",
                            f"{name}:1"], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr
        words = p.stdout.split()
        first = int(words[0])
        assert first == n if n is not None else first > 0
        if n is None:
            assert int(words[2]) >= first     # one entry per #GP, and the boot's


def test_a_compound_path_is_counted_per_entry(tmp_path):
    """--instructions reads the VMM entries from the counted children as
    the timed runs do: their difference over n (a stand-in for valgrind
    whose child reports two entries an exit and 1000 more for its boot)."""
    gb = _guestbench()
    fake = tmp_path / "valgrind"
    fake.write_text(FAKE_VALGRIND.format(python=sys.executable, per_exit=42000, fixed=10**9)
                    .replace("print(n)", "print(n, 0.5, 1000 + 2 * multiple * n)"))
    fake.chmod(0o755)
    script = BENCHMARKS / "exit_costs.py"
    assert gb.counted(script, "trap.syscall_us", str(fake)) == (42000, 2)
    assert gb.counted(script, "floor", str(fake)) == (4000, 2)


def test_instructions_without_valgrind_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, str(BENCHMARKS / "exit_path.py"), "--instructions"],
                       capture_output=True, text=True, timeout=600,
                       env={"PATH": str(tmp_path), "HOME": str(tmp_path)})
    assert p.returncode == 1 and "needs valgrind" in p.stderr and "Traceback" not in p.stderr


def test_two_checkouts_compared_in_instructions(tmp_path):
    """compare_trees --instructions: every path and the floor counted under
    each checkout (here by the stand-in for valgrind), each against its
    side's floor."""
    fake = tmp_path / "valgrind"
    fake.write_text(FAKE_VALGRIND.format(python=sys.executable, per_exit=42000, fixed=10**9))
    fake.chmod(0o755)
    root = BENCHMARKS.parent
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run([sys.executable, str(BENCHMARKS / "compare_trees.py"), str(root),
                        "--instructions", "--only", "idt_syscall_us,pv.bounce_us"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    rows = [line.split() for line in p.stdout.splitlines()[1:]]
    assert rows == [["floor", "4000", "1.0", "4000", "1.0", "1.00"],
                    ["idt_syscall", "42000", "10.5", "42000", "10.5", "1.00"],
                    ["pv.bounce", "42000", "10.5", "42000", "10.5", "1.00"]]


def test_boot_prints_each_back_ends_run_before_its_workload():
    out = _boot("--repeat", "1", "--backends", "native,trap", "--json")
    assert set(out) == {"native", "trap"}
    for row in out.values():
        assert set(row) == {"median_ms", "best_ms", "entries"}
        assert _number(row["median_ms"]) and _number(row["best_ms"])
    # The entries are counters, not times: the same on every run.
    assert out["native"]["entries"] == 0
    again = _boot("--repeat", "1", "--backends", "trap", "--json")
    assert again["trap"]["entries"] == out["trap"]["entries"] > 0


def test_boot_refuses_an_unknown_back_end_or_workload():
    for args, what in ((["--backends", "vmware"], "unknown back end 'vmware'"),
                       (["--workload", "nope"], "unknown workload 'nope'")):
        p = subprocess.run([sys.executable, str(BENCHMARKS / "boot.py"), *args],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 2 and what in p.stderr, p.stderr


def test_the_differential_refuses_a_back_end_it_cannot_run_and_says_which_differ():
    """An unknown back end, or pv (whose kernel is an image of its own), is
    one line and exit 2; trap, documented to differ, runs with a note."""
    def run(*args):
        return subprocess.run([sys.executable, str(BENCHMARKS / "bt_differential.py"),
                               "--sequences", "10", "--per-image", "10", "--json", *args],
                              capture_output=True, text=True, timeout=600)
    for name, what in (("vmware", "unknown back end 'vmware'"),
                       ("pv", "boots its own kind of image")):
        p = run("--backends", name)
        assert p.returncode == 2 and what in p.stderr.splitlines()[-1], p.stderr
        assert "Traceback" not in p.stderr
    p = run("--backends", "trap")
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith("note: trap is documented to differ from native")
    assert json.loads(p.stdout)["backends"] == ["trap"]


def test_bt_differential_counts_each_back_end_apart():
    """trap's documented mismatches fill the totals; each back end's own
    count says that bt, run beside it, has none.  (The first ten sequences
    of seed 0 use sensitive instructions trap runs unmodified.)"""
    p = subprocess.run([sys.executable, str(BENCHMARKS / "bt_differential.py"),
                        "--sequences", "10", "--per-image", "10", "--json",
                        "--backends", "bt,trap"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    by = summary["by_backend"]
    assert list(by) == ["bt", "trap"]
    assert by["bt"] == {"mismatches": 0, "images_differing": 0}
    assert by["trap"]["mismatches"] > 0
    # With bt clean, the sequences that differ under some back end are trap's.
    assert summary["mismatches"] == by["trap"]["mismatches"]


def _boot(*args):
    p = subprocess.run([sys.executable, str(BENCHMARKS / "boot.py"), *args],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)
