"""Host time of the whole workload suite under each back end, beside native.

    python benchmarks/suite.py [--json] [--backends native,trap,...] [--scale N]
    python benchmarks/suite.py --bench [--json] [--no-bundle]

Runs every catalog workload at its default scale (or --scale) under each back
end and prints the total host seconds per back end and the ratio to native.
This is the measured host cost of the implementation, not the modeled cost of
the technique (for that, `virtlab bench`).

With --bench it times what a user runs first instead: the default
`virtlab bench` as a terminal shows it (every workload under every back end,
--jobs 1, the compact table) twice in a
fresh, empty instruction-count cache, cold then warm (`cold_bench_s`,
`warm_bench_s`).  --no-bundle also ignores the counts shipped with the images,
so the cold run counts everything itself.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import virtlab                                          # noqa: E402
from virtlab import backend                             # noqa: E402
from guestbench import integer                        # noqa: E402
from workloads.catalog import CATALOG                   # noqa: E402


def bench_times(no_bundle=False):
    """Wall seconds of a cold and then a warm default `virtlab bench`."""
    import os
    import subprocess
    import tempfile
    env = dict(os.environ)
    env["VIRTLAB_CACHE"] = tempfile.mkdtemp(prefix="virtlab-cache-")
    if no_bundle:
        env["VIRTLAB_NO_BUNDLED_COUNTS"] = "1"
    times = {}
    for label in ("cold_bench_s", "warm_bench_s"):
        t0 = time.perf_counter()
        # What the README's first command shows on a terminal: the compact
        # table (its rows run once: repeating cannot change a modeled figure).
        subprocess.run([sys.executable, "-m", "virtlab", "bench", "--format", "compact"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        times[label] = round(time.perf_counter() - t0, 1)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--bench", action="store_true", help="time a cold and a warm virtlab bench")
    p.add_argument("--no-bundle", action="store_true",
                   help="with --bench: ignore the bundled instruction counts")
    p.add_argument("--backends", default=",".join(backend.names()),
                   help="comma-separated back ends (default: all installed)")
    p.add_argument("--scale", type=integer(1),
                   help="every workload at this scale (default: each its own)")
    args = p.parse_args(argv)
    unknown = [b for b in args.backends.split(",") if b not in backend.names()]
    if unknown:
        p.error(f"unknown back end '{unknown[0]}' (installed: {', '.join(backend.names())})")
    if args.bench:
        times = bench_times(args.no_bundle)
        print(json.dumps(times) if args.json
              else "\n".join(f"{k:<14} {v:>7.1f} s" for k, v in times.items()))
        return
    names = args.backends.split(",")
    # native first: the other back ends compare against its (cached) runs
    names = sorted(names, key=lambda n: n != "native")
    totals, failures = {}, {}
    for b in names:
        t0 = time.perf_counter()
        failed = [w for w in CATALOG if not virtlab.run(w, b, scale=args.scale, model=False).ok]
        totals[b] = round(time.perf_counter() - t0, 2)
        failures[b] = failed
    base = totals.get("native")
    rows = {b: {"host_seconds": t, "vs_native": round(t / base, 2) if base else None,
                "failed": failures[b]} for b, t in totals.items()}
    if args.json:
        print(json.dumps(rows))
        return
    for b, r in rows.items():
        print(f"{b:<8} {r['host_seconds']:>7.2f} s   x{r['vs_native']}"
              + (f"   failed: {', '.join(r['failed'])}" if r["failed"] else ""))


if __name__ == "__main__":
    main()
