"""Host time of the whole workload suite under each back end, beside native.

    python benchmarks/suite.py [--json] [--backends native,trap,hw,hw-npt,bt] [--scale N]

Runs every catalog workload at its default scale (or --scale) under each back
end and prints the total host seconds per back end and the ratio to native.
This is the measured host cost of the implementation, not the modeled cost of
the technique (for that, `virtlab bench`).
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import virtlab                                          # noqa: E402
from virtlab import backend                             # noqa: E402
from workloads.catalog import CATALOG                   # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--backends", default=",".join(["native"] + [n for n in backend.names() if n != "native"]))
    p.add_argument("--scale", type=int)
    args = p.parse_args(argv)
    names = args.backends.split(",")
    # native first: the other back ends compare against its (cached) runs
    names = sorted(names, key=lambda n: n != "native")
    totals, failures = {}, {}
    for b in names:
        t0 = time.perf_counter()
        failed = [w for w in CATALOG if not virtlab.run(w, b, scale=args.scale).ok]
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
