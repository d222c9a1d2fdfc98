"""The `virtlab` command line (also `python -m virtlab`).

Every user error (an unknown name, a bad option, an unreadable image) is one line
on stderr and exit status 2; a guest that fails makes `run` exit 1.
"""
import argparse
import json
import os
import sys

from . import backend as backends
from .errors import UsageError


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
    r.add_argument("--profile", default=None,
                   help="CPU profile for the modeled cycles (a name or a TOML file)")
    _budget_args(r)

    b = sub.add_parser("bench", help="every workload under every back end, against native")
    b.add_argument("--workloads", default="*", help="comma-separated names or glob patterns")
    b.add_argument("--backends", help="comma-separated back ends (default: all installed)")
    b.add_argument("--scale", type=_positive)
    b.add_argument("--format", choices=("markdown", "csv", "json", "latex"), default="markdown")
    b.add_argument("--out", help="write the table to FILE instead of stdout")
    b.add_argument("--jobs", type=_positive, default=1)
    b.add_argument("--profile", default=None, help="CPU profile (a name or a TOML file)")
    b.add_argument("--plot", help="write the figures to FILE (.png or .svg)")
    b.add_argument("--save", help="save the raw results to FILE (JSON) for 'virtlab report'")
    _budget_args(b)

    t = sub.add_parser("trace", help="every exit of a run: address, instruction, cause, what was done")
    t.add_argument("workload", nargs="?")
    t.add_argument("--backend", default="trap")
    t.add_argument("--image", help="a raw flat binary to boot instead of a workload")
    t.add_argument("--scale", type=_positive, default=3)
    t.add_argument("--limit", type=_positive, default=60, help="exits to show (the run stops there)")
    t.add_argument("--skip", type=int, default=0, help="exits to pass over first")
    t.add_argument("--all", action="store_true",
                   help="trace from boot (default for a workload: its region of interest only)")
    t.add_argument("--format", choices=("text", "json"), default="text")
    _budget_args(t)

    a = sub.add_parser("audit", help="privileged and sensitive instructions a guest executes")
    a.add_argument("workload", nargs="?")
    a.add_argument("--image", help="a raw flat binary to boot instead of a workload")
    a.add_argument("--scale", type=_positive)
    a.add_argument("--format", choices=("text", "json"), default="text")
    _budget_args(a)

    tr = sub.add_parser("translate", help="the translation cache after a run: each unit's guest "
                        "instructions beside the translated code for each",
                        description="Run WORKLOAD under a translating back end with profiling "
                        "on, then list its translation units, most executed first: every guest "
                        "instruction with its kind (IDENT copied unchanged, in-TC sequence, "
                        "callout to the VMM, a branch whose exit is 'chained' to its target's "
                        "translation or still an 'exit', an 'indirect' table lookup), the "
                        "translated code that stands for it, and why.  "
                        "Example: virtlab translate nano.cli --limit 1 (the cli/sti loop)")
    tr.add_argument("workload", nargs="?")
    tr.add_argument("--backend", default="bt", help="a back end with a translation cache "
                    "(default bt)")
    tr.add_argument("--addr", type=_address,
                    help="only the units whose guest range holds this address (hex or decimal)")
    tr.add_argument("--limit", type=_positive, default=20, help="units to show (default 20)")
    tr.add_argument("--scale", type=_positive)
    tr.add_argument("--format", choices=("text", "json"), default="text")
    _budget_args(tr)

    rep = sub.add_parser("report", help="analyse a saved bench under a profile (no guest runs)")
    rep.add_argument("saved", help="a file written by 'virtlab bench --save'")
    rep.add_argument("--profile", default=None)
    rep.add_argument("--out", required=True, help="the markdown report to write")
    rep.add_argument("--sweep", default="exit.priv@hw=0:6000:25",
                     help="sensitivity sweep EVENT[@BACKEND]=LO:HI[:STEPS]")

    sen = sub.add_parser("sensitivity", help="vary one event cost over a saved bench")
    sen.add_argument("saved")
    sen.add_argument("--event", required=True, help="the counter whose cost varies, e.g. exit.priv")
    sen.add_argument("--backend", help="vary only this back end's cost of the event")
    sen.add_argument("--range", required=True, help="LO:HI[:STEPS] in cycles")
    sen.add_argument("--profile", default=None)
    sen.add_argument("--format", choices=("markdown", "csv", "json", "latex"), default="markdown")
    sen.add_argument("--plot", help="write the crossover plot to FILE")
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


def _address(text):
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an address (hex 0x... or decimal), got '{text}'")
    if not 0 <= v <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"expected a 32-bit address, got '{text}'")
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
    from analysis import profile as profiles
    bes = [{"name": n, "summary": backends.load(n).summary} for n in backends.names()]
    profs = [{"name": n, "description": profiles.load(n).description,
              "default": n == profiles.DEFAULT} for n in profiles.names()]
    cat = catalog()
    wls = [{"name": w.name, "family": w.family, "measures": w.measures,
            "mirrors": w.mirrors, "default_scale": w.default_scale}
           for w in cat.CATALOG.values()]
    if args.format == "json":
        json.dump({"backends": bes, "workloads": wls, "profiles": profs}, out, indent=2)
        out.write("\n")
        return 0
    out.write("Back ends:\n")
    for b in bes:
        out.write(f"  {b['name']:<10} {b['summary']}\n")
    out.write("\nWorkloads:\n")
    for w in wls:
        out.write(f"  {w['name']:<18} {w['default_scale']:>7}  {w['measures']}\n")
    out.write("\nProfiles:\n")
    for p in profs:
        out.write(f"  {p['name']:<18} {'(default) ' if p['default'] else ''}{p['description']}\n")
    return 0


def cmd_run(args, out):
    from .api import run
    if not args.workload and not args.image:
        raise UsageError("run needs a WORKLOAD or --image FILE")
    from analysis.profile import DEFAULT
    from .api import load_profile
    load_profile(args.profile or DEFAULT)            # refuse a bad profile before running
    result = run(args.workload, args.backend, scale=args.scale, image=args.image,
                 timeout=args.timeout, max_exits=args.max_exits,
                 profile=args.profile or DEFAULT)
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
    if r.modeled_cycles is not None:
        per = (f", {r.modeled_cycles_per_iteration:,.0f} per iteration"
               if r.modeled_cycles_per_iteration is not None else "")
        lines.append(f"modeled ({r.profile}): {r.modeled_cycles:,.0f} cycles{per}; "
                     f"{r.instructions:,} guest instructions")
    lines.append("console:")
    lines += ["  " + ln for ln in r.console.splitlines()]
    lines.append("counters:" + ("" if r.counters else " none"))
    lines += [f"  {k:<32} {v:>12}" for k, v in r.counters.items()]
    for k, v in r.details.items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines) + "\n"


def cmd_bench(args, out):
    from .api import load_profile
    from .bench import run_matrix, select_backends, select_workloads
    from .result import save_results
    from analysis.table import breakdown, frame, render
    names = args.backends.split(",") if args.backends else None
    prof = load_profile(args.profile)
    for path in (args.out, args.plot, args.save):
        _check_writable(path)
    if args.plot and not args.plot.lower().endswith((".png", ".svg")):
        raise UsageError(f"--plot needs a .png or .svg file name, not '{args.plot}'")
    results = run_matrix(select_workloads(args.workloads), select_backends(names), args.scale,
                         args.jobs, sys.stderr.isatty(), timeout=args.timeout,
                         max_exits=args.max_exits)
    if args.save:
        save_results(args.save, results, {"profile": prof.name, "scale": args.scale})
    df = frame(results, prof)
    if args.plot:
        from analysis.plots import bench_figure
        bench_figure(df, breakdown(results, prof), args.plot)
    _emit(render(df, args.format), args.out, out)
    return 0


def cmd_trace(args, out):
    from dataclasses import asdict
    from .harness import resolve, run_guest
    from .trace import Tracer
    if not args.workload and not args.image:
        raise UsageError("trace needs a WORKLOAD or --image FILE")
    if args.skip < 0:
        raise UsageError("--skip must not be negative")
    if args.backend not in backends.names():
        raise UsageError(f"unknown back end '{args.backend}' (installed: {', '.join(backends.names())})")
    tracers = []
    guest = resolve(args.workload, args.image, args.scale, backends.load(args.backend).image)
    result = run_guest(guest, args.backend, timeout=args.timeout, max_exits=args.max_exits,
                       on_machine=lambda m: tracers.append(
                           Tracer(m, args.limit, args.skip, roi_only=bool(args.workload) and not args.all)))
    events = tracers[0].events
    if args.format == "json":
        json.dump({"workload": result.workload, "backend": result.backend,
                   "events": [asdict(e) for e in events], "ok": result.ok,
                   "reason": result.reason}, out, indent=1)
        out.write("\n")
        return 0
    where = "from boot" if args.all or not args.workload else "in the region of interest"
    if not events:
        out.write(f"{result.workload} under {result.backend}: no exits {where}"
                  + (f" after the first {args.skip}" if args.skip else "") + "\n")
        return 0
    out.write(f"{result.workload} under {result.backend}: exits {events[0].n}..{events[-1].n} {where}\n")
    out.write(f"{'#':>6}  {'guest EIP':<10}  {'instruction':<34} {'cause':<14} what was done\n")
    for e in events:
        out.write(e.text() + "\n")
    if result.reason:
        out.write(f"({result.reason})\n")
    return 0


def cmd_audit(args, out):
    from .audit import Audit
    from .harness import resolve, run_guest
    if not args.workload and not args.image:
        raise UsageError("audit needs a WORKLOAD or --image FILE")
    audits = []
    guest = resolve(args.workload, args.image, args.scale)
    result = run_guest(guest, "native", timeout=args.timeout, max_exits=args.max_exits,
                       on_machine=lambda m: audits.append(Audit(m)))
    rows = audits[0].rows()
    if args.format == "json":
        json.dump({"workload": result.workload, "ok": result.ok, "reason": result.reason,
                   "instructions": rows}, out, indent=1)
        out.write("\n")
        return 0 if result.ok else 1
    out.write(f"{result.workload}: privileged and sensitive instructions executed (native)\n")
    out.write(f"{'class':<26} {'instruction':<28} {'ring':<7} {'executions':>10}\n")
    for r in rows:
        out.write(f"{r['class']:<26} {r['instruction']:<28} {r['ring']:<7} {r['executions']:>10}\n")
    bad = sum(r["executions"] for r in rows if r["class"].startswith("sensitive"))
    out.write(f"\n{bad} executions of sensitive, unprivileged instructions: "
              + ("under classic trap-and-emulate these run without trapping and see the real CPU "
                 "(Popek-Goldberg's condition fails)\n" if bad else
                 "this guest run is classically virtualizable\n"))
    if not result.ok:
        out.write(f"(run failed: {result.reason})\n")
    return 0 if result.ok else 1


def cmd_translate(args, out):
    from .harness import resolve, run_guest
    if not args.workload:
        raise UsageError("translate needs a WORKLOAD")
    if args.backend not in backends.names():
        raise UsageError(f"unknown back end '{args.backend}' (installed: {', '.join(backends.names())})")
    cls = backends.load(args.backend)
    if not callable(getattr(cls, "translation_listing", None)):
        raise UsageError(f"back end '{args.backend}' runs no translated code: it has no "
                         "translation cache to list")
    kept = []

    def configure(be):
        be.profile = True                # set before boot: every unit gets its counter
        kept.append(be)
    guest = resolve(args.workload, None, args.scale, cls.image)
    result = run_guest(guest, args.backend, timeout=args.timeout, max_exits=args.max_exits,
                       configure=configure)
    every = kept[0].translation_listing()
    units = select_units(every, args.addr, args.limit)
    rc = 0 if result.ok else 1
    if args.format == "json":
        json.dump({"workload": result.workload, "backend": result.backend, "scale": result.scale,
                   "ok": result.ok, "reason": result.reason, "iterations": result.iterations,
                   "addr": args.addr, "units_in_cache": len(every), "units": units}, out, indent=1)
        out.write("\n")
        return rc
    which = f" holding {args.addr:#010x}" if args.addr is not None else ""
    out.write(f"{result.workload} under {result.backend} (scale {result.scale}): "
              f"{len(every)} units in the translation cache; {len(units)}{which} shown, "
              f"most executed first\n")
    if not units:
        out.write(f"no unit{which}\n")
    for u in units:
        out.write("\n" + _unit_text(u))
    if not result.ok:
        out.write(f"\n(run failed: {result.reason})\n")
    return rc


def select_units(units, addr=None, limit=None):
    """The units whose guest range holds `addr` (all for None), most
    executed first (uncounted ones last), at most `limit` of them."""
    chosen = [u for u in units if addr is None or u["guest"] <= addr < u["guest_end"]]
    chosen.sort(key=lambda u: (u["executions"] is None, -(u["executions"] or 0),
                               u["guest"], u["tc"]))
    return chosen[:limit]


def _unit_text(u):
    ran = "not counted" if u["executions"] is None else \
        f"ran {u['executions']} time" + ("" if u["executions"] == 1 else "s")
    state = "dead" if u["dead"] else "transient" if u["transient"] else "live"
    lines = [f"unit {u['guest']:#010x}..{u['guest_end']:#010x}  TC {u['tc']:#010x} "
             f"({u['tc_end'] - u['tc']} bytes)  {ran}  {state}"]
    if u["prologue"]:
        lines.append(f"  {'':<10}  {'':<12} {'(execution counter)':<32} | "
                     f"{len(u['prologue'])} instructions at {u['prologue'][0]['address']:#010x}")
    for s in u["sites"]:
        lines += _tc_rows(f"{s['guest']:#010x}", s["mark"], s["text"], s["code"], s["reason"])
    if u["epilogue"]:                    # no branch at the end: an exit to what follows
        start = u["epilogue"][0]["address"]
        state = "/".join(e["state"] for e in u["exits"] if e["at"] >= start)
        lines += _tc_rows("", state, f"(on to {u['guest_end']:#010x})", u["epilogue"],
                          "the unit ends without a branch: an exit to the next instruction")
    return "\n".join(lines) + "\n"


def _tc_rows(guest, mark, text, code, reason):
    """One row per TC instruction; the guest side and the reason on the first."""
    rows = []
    for i, c in enumerate(code or [{"address": 0, "text": "(no code)", "note": ""}]):
        tc = f"{c['address']:#010x} {c['text']}" + (f"  ; {c['note']}" if c["note"] else "")
        left = f"  {guest:<10}  {mark:<12} {text:<32}" if i == 0 else " " * 59
        rows.append(f"{left} | {tc:<56} {reason if i == 0 else ''}".rstrip())
    return rows


def _check_writable(path):
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write '{path}': no such writable directory")


def _emit(text, path, out):
    if path:
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write '{path}': {exc.strerror}")
    else:
        out.write(text)


def _saved(path):
    from .result import SavedResultsError, load_results
    try:
        results = load_results(path)[0]
    except SavedResultsError as exc:
        raise UsageError(str(exc)) from None
    if not any(r.backend == "native" for r in results):
        raise UsageError(f"'{path}' has no native runs to compare with")
    return results


def cmd_report(args, out):
    from .api import load_profile
    from analysis import report
    prof = load_profile(args.profile)
    results = _saved(args.saved)
    _check_writable(args.out)
    event, backend, rng = _parse_sweep(args.sweep)
    from analysis import sensitivity
    try:
        sensitivity.check_target(results, prof, event, backend)
    except ValueError as exc:
        backend = None                     # a sweep over whatever back ends were saved
        if not sensitivity_ok(event):
            raise UsageError(f"--sweep: {exc}") from None
    report.write(results, prof, args.out, (event, backend, rng))
    out.write(f"wrote {args.out}\n")
    return 0


def sensitivity_ok(event):
    from analysis.profile import is_costable
    return is_costable(event)


def _parse_sweep(text):
    from analysis.sensitivity import parse_range
    try:
        target, rng = text.split("=", 1)
        event, _, backend = target.partition("@")
        parse_range(rng)
    except ValueError as exc:
        raise UsageError(f"--sweep must be EVENT[@BACKEND]=LO:HI[:STEPS] ({exc})") from None
    return event, backend or None, rng


def cmd_sensitivity(args, out):
    from .api import load_profile
    from analysis import plots, sensitivity
    from analysis.table import render
    prof = load_profile(args.profile)
    results = _saved(args.saved)
    try:
        costs = sensitivity.parse_range(args.range)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        sensitivity.check_target(results, prof, args.event, args.backend)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    df = sensitivity.sweep(results, prof, args.event, costs, args.backend)
    cross = sensitivity.crossovers(df)
    if args.plot:
        _check_writable(args.plot)
        fig, ax = plots.plt.subplots(figsize=(10, 4.5))
        plots.sensitivity(ax, df, cross, args.event + (f" ({args.backend})" if args.backend else ""))
        plots.save(fig, args.plot)
    out.write(render(df, args.format))
    if args.format in ("markdown", "latex"):
        for c in cross:
            out.write(f"\n{c['faster']} overtakes {c['slower']} at {c['cost']:.0f} cycles")
        out.write("\n" if cross else "\nno crossover in this range\n")
    return 0


def main(argv=None, out=None):
    out = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
        commands = {"list": cmd_list, "run": cmd_run, "bench": cmd_bench, "trace": cmd_trace,
                    "audit": cmd_audit, "translate": cmd_translate,
                    "report": cmd_report, "sensitivity": cmd_sensitivity}
        return commands[args.command](args, out)
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
