"""Every exit path of exit_path.py and exit_costs.py under two checkouts, side by side.

    python benchmarks/compare_trees.py OLD_CHECKOUT [NEW_CHECKOUT] [--rounds 3] [--runs 5]

The question a change to an exit path must answer is "is it faster than before?",
and on a shared host the answer drowns in noise: the floor itself moves by 2x from
sample to sample.  So the two checkouts run alternately, one process each per round
(a slow spell of the host then hurts both), each path `--runs` times per round,
and the best time of every path over all rounds is kept: interference only ever
adds time, so the minimum is the closest to what the code costs.  A path with no
Python on it (bt.indirect_hit_us) shows how much is noise on this host.
NEW_CHECKOUT defaults to the checkout this script is in.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import exit_costs, exit_path, guestbench
runs = int(sys.argv[2])
paths = {"floor_exit_us": guestbench.floor_exit_us, "gp_exit_us": exit_path.gp_exit_us,
         "idt_syscall_us": exit_path.idt_syscall_us, **exit_costs.BENCHES}
print(json.dumps({name: min(fn() for _ in range(runs)) for name, fn in paths.items()}))
"""


def best_times(checkout, runs):
    p = subprocess.run([sys.executable, "-c", _PROBE, str(checkout), str(runs)],
                       capture_output=True, text=True, cwd=checkout)
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        raise SystemExit(f"{checkout}: {why}")
    return json.loads(p.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path, nargs="?", default=Path(__file__).resolve().parents[1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    best = {"old": {}, "new": {}}
    for _ in range(args.rounds):
        for side in ("old", "new"):
            for name, t in best_times(getattr(args, side).resolve(), args.runs).items():
                best[side][name] = min(t, best[side].get(name, t))
    floor_old, floor_new = best["old"]["floor_exit_us"], best["new"]["floor_exit_us"]
    print(f"{'path':22s} {'old us':>8s} {'x floor':>8s} {'new us':>8s} {'x floor':>8s} {'new/old':>8s}")
    for name, old in best["old"].items():
        new = best["new"].get(name)
        if new is None:
            continue
        print(f"{name:22s} {old:8.2f} {old / floor_old:8.1f} {new:8.2f} {new / floor_new:8.1f} "
              f"{new / old:8.2f}")


if __name__ == "__main__":
    main()
