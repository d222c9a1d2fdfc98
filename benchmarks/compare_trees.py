"""Every exit path of exit_path.py and exit_costs.py under two checkouts, side by side.

    python benchmarks/compare_trees.py OLD_CHECKOUT [NEW_CHECKOUT] [--rounds 3] [--runs 5]
    python benchmarks/compare_trees.py OLD_CHECKOUT [NEW_CHECKOUT] --calls
    python benchmarks/compare_trees.py OLD_CHECKOUT [NEW_CHECKOUT] --instructions
    (each with --only PATH,PATH,... to compare only those paths)

The question a change to an exit path must answer is "is it faster than before?",
and on a shared host the answer drowns in noise: the floor itself moves by 2x from
sample to sample.  So the two checkouts run alternately, one process each per round
(a slow spell of the host then hurts both), each path `--runs` times per round,
and the best time of every path over all rounds is kept: interference only ever
adds time, so the minimum is the closest to what the code costs (guestbench.best).
A path with no Python on it (bt.indirect_hit_us) shows how much is noise on this
host.  Both sides are measured by this checkout's scripts, so that a change to
how a path is measured does not pass for a change in what it costs; the older
checkout's code must still offer what the scripts use.  NEW_CHECKOUT defaults
to the checkout this script is in.

--calls prints instead the Python calls each exit makes (guestbench.counted_run):
not a time, but the same on every run and every host, so it answers "does this
change remove work from the path?" in one run even where times are too noisy to.
--instructions prints the host instructions of each exit and of the floor,
counted by valgrind (guestbench.instructions), and each as a ratio to the
floor: also the same on every run, and nearer to a time than a count of calls.
"""
import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# One side's probe: the benchmark scripts of this checkout, run on the code of
# the checkout under test (its top-level packages imported first, from it, so
# that the scripts' own path set-up cannot pick this checkout's instead), so
# that both sides are measured the same way.
_PROBE = """
import json, sys
code, scripts, runs, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "calls"
only = sys.argv[5].split(",") if sys.argv[5] else None
sys.path.insert(0, code)
import virtlab, trap_emulate, bt, pv
if not virtlab.__file__.startswith(code):
    raise SystemExit(f"virtlab came from {virtlab.__file__}, not {code}")
sys.path.insert(0, scripts)
import exit_costs, exit_path, guestbench
guestbench.count_calls = calls
paths = {"floor_exit_us": guestbench.floor_exit_us, "gp_exit_us": exit_path.gp_exit_us,
         "idt_syscall_us": exit_path.idt_syscall_us, **exit_costs.BENCHES}
if calls:
    del paths["floor_exit_us"]                   # a bare Unicorn CPU: no machine to count
if only:
    paths = {name: fn for name, fn in paths.items() if name in only or name == "floor_exit_us"}
print(json.dumps({name: [fn() for _ in range(runs)] for name, fn in paths.items()}))
"""
SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from guestbench import Marginal, best, find_valgrind, instructions, integer  # noqa: E402


def samples(checkout, runs, calls=False, only=""):
    """{path: its samples} of one checkout's code, in a process of its own
    (with `calls`, Python calls per exit instead of host time; `only`: the
    comma-separated paths to measure, all if empty)."""
    p = subprocess.run([sys.executable, "-c", _PROBE, str(checkout), str(SCRIPTS), str(runs),
                        "calls" if calls else "time", only],
                       capture_output=True, text=True, cwd=checkout)
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        raise SystemExit(f"{checkout}: {why}")
    return {name: [Marginal(*x) if isinstance(x, list) else x for x in values]
            for name, values in json.loads(p.stdout).items()}


def _checkout(text):
    """An argparse type: a directory holding a virtlab checkout."""
    path = Path(text)
    if not (path / "virtlab" / "machine.py").is_file():
        raise argparse.ArgumentTypeError(f"'{text}' is not a virtlab checkout")
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=_checkout, help="the checkout to compare against")
    ap.add_argument("new", type=_checkout, nargs="?", default=Path(__file__).resolve().parents[1],
                    help="the checkout compared (default: this one)")
    ap.add_argument("--rounds", type=integer(1), default=3,
                    help="times the two checkouts take turns (default 3)")
    ap.add_argument("--runs", type=integer(1), default=5,
                    help="samples of each path per checkout and round (default 5)")
    ap.add_argument("--calls", action="store_true",
                    help="Python calls per exit instead of host time (deterministic: one run)")
    ap.add_argument("--instructions", action="store_true",
                    help="host instructions per exit, counted by valgrind (deterministic; slow)")
    ap.add_argument("--only", default="", help="comma-separated names of the paths to compare")
    args = ap.parse_args(argv)
    if args.only:
        from exit_costs import BENCHES
        unknown = set(args.only.split(",")) - set(BENCHES) - {"gp_exit_us", "idt_syscall_us"}
        if unknown:
            ap.error("unknown path(s): " + ", ".join(sorted(unknown)))
    if args.calls:
        return _calls(args.old.resolve(), args.new.resolve(), args.only)
    if args.instructions:
        return _instructions(args.old.resolve(), args.new.resolve(), args.only)
    seen = {"old": {}, "new": {}}
    for _ in range(args.rounds):
        for side in ("old", "new"):
            for name, values in samples(getattr(args, side).resolve(), args.runs, False,
                                        args.only).items():
                seen[side].setdefault(name, []).extend(values)
    fastest = {side: {name: best(values) for name, values in paths.items()}
               for side, paths in seen.items()}
    floor_old, floor_new = fastest["old"]["floor_exit_us"], fastest["new"]["floor_exit_us"]
    print(f"{'path':22s} {'old us':>8s} {'x floor':>8s} {'new us':>8s} {'x floor':>8s} {'new/old':>8s}")
    for name, old in fastest["old"].items():
        new = fastest["new"].get(name)
        print(f"{name:22s} {old:8.2f} {old / floor_old:8.1f} {new:8.2f} {new / floor_new:8.1f} "
              f"{new / old:8.2f}")


def _calls(old, new, only):
    """The Python calls each exit makes, under each checkout: the same on every
    run and every host, so a change in it is the change's own."""
    counts = {side: {name: best(values)
                     for name, values in samples(tree, 1, True, only).items()}
              for side, tree in (("old", old), ("new", new))}
    print(f"{'path':22s} {'old calls':>10s} {'new calls':>10s} {'new/old':>8s}")
    for name, o in counts["old"].items():
        n = counts["new"][name]
        ratio = f"{n / o:8.2f}" if o > 0.5 else f"{'-':>8s}"      # a path with no call at all
        print(f"{name.removesuffix('_us'):22s} {max(o, 0.0):10.1f} {max(n, 0.0):10.1f} {ratio}")


def _instructions(old, new, only):
    """The host instructions of each exit under each checkout, counted two
    at a time (the counts do not depend on the load)."""
    valgrind = find_valgrind()
    from exit_costs import BENCHES
    names = ["gp_exit_us", "idt_syscall_us", *BENCHES]
    names = [n for n in names if not only or n in only.split(",")]
    script = {n: SCRIPTS / ("exit_path.py" if n in ("gp_exit_us", "idt_syscall_us")
                            else "exit_costs.py") for n in names}
    jobs = [(side, tree, name) for side, tree in (("old", old), ("new", new))
            for name in ["floor", *names]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda j: instructions(script.get(j[2], SCRIPTS / "exit_path.py"),
                                                      j[2], valgrind, j[1]), jobs))
    seen = {(side, name): c for (side, _, name), c in zip(jobs, counts)}
    floor = {side: seen[(side, "floor")] for side in ("old", "new")}
    print(f"{'path':22s} {'old instr':>10s} {'x floor':>8s} {'new instr':>10s} {'x floor':>8s} "
          f"{'new/old':>8s}")
    for name in ["floor", *names]:
        o, n = seen[("old", name)], seen[("new", name)]
        ratio = f"{n / o:8.2f}" if o > 0.5 else f"{'-':>8s}"
        print(f"{name.removesuffix('_us'):22s} {o:10.0f} {o / floor['old']:8.1f} {n:10.0f} "
              f"{n / floor['new']:8.1f} {ratio}")


if __name__ == "__main__":
    main()
