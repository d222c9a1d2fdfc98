"""Every exit path of exit_path.py and exit_costs.py under two checkouts, side by side.

    python benchmarks/compare_trees.py OLD_CHECKOUT [NEW_CHECKOUT] [--rounds 3] [--runs 5]

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
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

# One side's probe: the benchmark scripts of this checkout, run on the code of
# the checkout under test (its top-level packages imported first, from it, so
# that the scripts' own path set-up cannot pick this checkout's instead), so
# that both sides are measured the same way.
_PROBE = """
import json, sys
code, scripts, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, code)
import virtlab, trap_emulate, bt, pv
if not virtlab.__file__.startswith(code):
    raise SystemExit(f"virtlab came from {virtlab.__file__}, not {code}")
sys.path.insert(0, scripts)
import exit_costs, exit_path, guestbench
paths = {"floor_exit_us": guestbench.floor_exit_us, "gp_exit_us": exit_path.gp_exit_us,
         "idt_syscall_us": exit_path.idt_syscall_us, **exit_costs.BENCHES}
print(json.dumps({name: [fn() for _ in range(runs)] for name, fn in paths.items()}))
"""
SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from guestbench import Marginal, best  # noqa: E402


def samples(checkout, runs):
    """{path: its samples} of one checkout's code, in a process of its own."""
    p = subprocess.run([sys.executable, "-c", _PROBE, str(checkout), str(SCRIPTS), str(runs)],
                       capture_output=True, text=True, cwd=checkout)
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        raise SystemExit(f"{checkout}: {why}")
    return {name: [Marginal(*x) if isinstance(x, list) else x for x in values]
            for name, values in json.loads(p.stdout).items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path, nargs="?", default=Path(__file__).resolve().parents[1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    seen = {"old": {}, "new": {}}
    for _ in range(args.rounds):
        for side in ("old", "new"):
            for name, values in samples(getattr(args, side).resolve(), args.runs).items():
                seen[side].setdefault(name, []).extend(values)
    fastest = {side: {name: best(values) for name, values in paths.items()}
               for side, paths in seen.items()}
    floor_old, floor_new = fastest["old"]["floor_exit_us"], fastest["new"]["floor_exit_us"]
    print(f"{'path':22s} {'old us':>8s} {'x floor':>8s} {'new us':>8s} {'x floor':>8s} {'new/old':>8s}")
    for name, old in fastest["old"].items():
        new = fastest["new"].get(name)
        print(f"{name:22s} {old:8.2f} {old / floor_old:8.1f} {new:8.2f} {new / floor_new:8.1f} "
              f"{new / old:8.2f}")


if __name__ == "__main__":
    main()
