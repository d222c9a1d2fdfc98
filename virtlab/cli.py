"""The `virtlab` command line (also `python -m virtlab`).

Every user error (an unknown name, a bad option, an unreadable image) is one line
on stderr and exit status 2; a guest that fails makes `run` exit 1.
"""
import argparse
import json
import sys

from . import backend as backends
from .harness import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _parser():
    p = _Parser(prog="virtlab", description="Compare x86 virtualization techniques "
                "by running one real guest OS under each.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ls = sub.add_parser("list", help="back ends and workloads")
    ls.add_argument("--format", choices=("text", "json"), default="text")

    r = sub.add_parser("run", help="run one workload (or raw image) under one back end")
    r.add_argument("workload", nargs="?")
    r.add_argument("--backend", default="native")
    r.add_argument("--image", help="a raw flat binary to boot (docs/boot-protocol.md)")
    r.add_argument("--scale", type=_positive)
    r.add_argument("--format", choices=("text", "json"), default="text")
    _budget_args(r)

    b = sub.add_parser("bench", help="every workload under every back end, against native")
    b.add_argument("--workloads", default="*", help="comma-separated names or glob patterns")
    b.add_argument("--backends", help="comma-separated back ends (default: all installed)")
    b.add_argument("--scale", type=_positive)
    b.add_argument("--format", choices=("markdown", "csv", "json", "latex"), default="markdown")
    b.add_argument("--out", help="write the table to FILE instead of stdout")
    b.add_argument("--jobs", type=_positive, default=1)
    _budget_args(b)
    return p


def _budget_args(p):
    p.add_argument("--timeout", type=_positive_float, default=120.0,
                   help="host-time budget per run, seconds (default 120)")
    p.add_argument("--max-exits", type=_positive, default=50_000_000,
                   help="exit budget per run (default 50M)")


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return v


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got '{text}'")
    return v


def cmd_list(args, out):
    from .harness import catalog
    bes = [{"name": n, "summary": backends.load(n).summary} for n in backends.names()]
    cat = catalog()
    wls = [{"name": w.name, "family": w.family, "measures": w.measures,
            "mirrors": w.mirrors, "default_scale": w.default_scale}
           for w in cat.CATALOG.values()]
    if args.format == "json":
        json.dump({"backends": bes, "workloads": wls, "profiles": []}, out, indent=2)
        out.write("\n")
        return 0
    out.write("Back ends:\n")
    for b in bes:
        out.write(f"  {b['name']:<10} {b['summary']}\n")
    out.write("\nWorkloads:\n")
    for w in wls:
        out.write(f"  {w['name']:<18} {w['default_scale']:>7}  {w['measures']}\n")
    return 0


def cmd_run(args, out):
    from .harness import run
    if not args.workload and not args.image:
        raise UsageError("run needs a WORKLOAD or --image FILE")
    result = run(args.workload, args.backend, scale=args.scale, image=args.image,
                 timeout=args.timeout, max_exits=args.max_exits)
    if args.format == "json":
        out.write(result.to_json(indent=2) + "\n")
    else:
        out.write(_run_text(result))
    return 0 if result.ok else 1


def _run_text(r):
    lines = [f"{r.workload} under {r.backend} (scale {r.scale}): "
             + ("ok" if r.ok else "FAILED") + f", exit status {r.exit_status}"]
    if r.reason:
        lines.append(f"reason: {r.reason}")
    lines.append(f"matches native: {r.matches_native}   iterations: {r.iterations}   "
                 f"host: {r.host_seconds:.3f} s"
                 + (f" (ROI {r.roi_host_seconds:.3f} s)" if r.roi_host_seconds is not None else ""))
    lines.append("console:")
    lines += ["  " + ln for ln in r.console.splitlines()]
    lines.append("counters:" + ("" if r.counters else " none"))
    lines += [f"  {k:<32} {v:>12}" for k, v in r.counters.items()]
    for k, v in r.details.items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines) + "\n"


def cmd_bench(args, out):
    from .bench import bench, render
    names = args.backends.split(",") if args.backends else None
    df = bench(args.workloads, names, scale=args.scale, jobs=args.jobs,
               timeout=args.timeout, max_exits=args.max_exits,
               progress=sys.stderr.isatty())
    text = render(df, args.format)
    if args.out:
        try:
            with open(args.out, "w") as f:
                f.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write '{args.out}': {exc.strerror}")
    else:
        out.write(text)
    return 0


def main(argv=None, out=None):
    out = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
        return {"list": cmd_list, "run": cmd_run, "bench": cmd_bench}[args.command](args, out)
    except UsageError as exc:
        sys.stderr.write(f"virtlab: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("virtlab: interrupted\n")
        return 130
    except BrokenPipeError:                    # e.g. `virtlab list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
