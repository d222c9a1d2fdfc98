"""What the benchmark scripts share: timing one assembly guest on a fresh
machine, and the command line that prints medians as text or JSON."""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from virtlab import asmguest as A                       # noqa: E402
from virtlab.machine import BootSpec, Machine           # noqa: E402


def timed_run(backend, guest, ram_size=32 << 20):
    """(host seconds of the run, the machine) for an AsmGuest (or an image
    already built, such as a PV guest's) under a back end."""
    image = guest if isinstance(guest, bytes) else A.build(guest)
    with Machine(backend, ram_size=ram_size) as m:
        m.boot(BootSpec(image))
        t0 = time.perf_counter()
        out = m.run()
        dt = time.perf_counter() - t0
    if not out.ok:
        raise SystemExit(f"benchmark guest failed: {out.reason}")
    return dt, m


def main(doc, benches, argv=None):
    """Run each benchmark --repeat times and print the medians."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    figures = {name: round(statistics.median(fn() for _ in range(args.repeat)), 2)
               for name, fn in benches.items()}
    if args.json:
        print(json.dumps(figures))
    else:
        width = max(map(len, figures))
        for k, v in figures.items():
            print(f"{k:<{width}} {v:>10}")
