"""What a run costs before its workload: the boot, first translations and fills.

    python benchmarks/boot.py [--json] [--backends native,trap,...] [--repeat R]
                              [--workload W]

Runs a workload (nano.syscall by default) at scale 1, one iteration, so that
nearly all of the run is the kernel's boot and the start of the program,
R times under each back end in one process.  It prints the median and the
fastest host milliseconds of a run, and the entries into the VMM or the
hypervisor that the whole run took (exit.total + hypercall.total), which are
the same on every run.

Every row of a bench and every run of the test suite pays this once.  Under
shadow paging a kernel that writes to every free page at boot pays a hidden
fault per page here, about 8000 of them in 32 MiB; the bundled kernel hands
out pages it never touched instead (workloads/kernel/kalloc.c).

The first run under each back end is not timed: it pays what a process pays
once (imports, and the block decodings that later machines reuse).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import virtlab                                          # noqa: E402
from virtlab import backend                             # noqa: E402
from guestbench import integer                        # noqa: E402
from virtlab.errors import UsageError                   # noqa: E402


def boot_cost(workload, name, repeat):
    """(median ms, fastest ms, VMM entries) of `repeat` scale-1 runs."""
    virtlab.run(workload, name, scale=1, model=False)
    times, entries = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = virtlab.run(workload, name, scale=1, model=False)
        times.append((time.perf_counter() - t0) * 1e3)
        if not r.ok:
            raise SystemExit(f"{workload} under {name} failed: {r.reason}")
        entries = r.counters.get("exit.total", 0) + r.counters.get("hypercall.total", 0)
    return round(statistics.median(times), 1), round(min(times), 1), entries


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--backends", default=",".join(backend.names()),
                   help="comma-separated back ends (default: all installed)")
    p.add_argument("--repeat", type=integer(1), default=7, metavar="N",
                   help="runs per back end; the median and the best are printed (default 7)")
    p.add_argument("--workload", default="nano.syscall",
                   help="the workload whose run is timed, at scale 1 (default nano.syscall)")
    args = p.parse_args(argv)
    rows = {}
    for name in args.backends.split(","):
        if name not in backend.names():
            p.error(f"unknown back end '{name}'")
        try:
            median, best, entries = boot_cost(args.workload, name, args.repeat)
        except UsageError as exc:
            p.error(str(exc))
        rows[name] = {"median_ms": median, "best_ms": best, "entries": entries}
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'back end':<8} {'median ms':>10} {'best ms':>8} {'entries':>8}")
    for name, r in rows.items():
        print(f"{name:<8} {r['median_ms']:>10.1f} {r['best_ms']:>8.1f} {r['entries']:>8}")


if __name__ == "__main__":
    main()
