"""The `virtlab` command line (also `python -m virtlab`).

Every user error (an unknown name, a bad option, an unreadable image) is one line
on stderr and exit status 2; a guest that fails makes `run`, `trace`, `audit` and
`translate` exit 1.
"""
import argparse
import contextlib
import json
import sys
import textwrap

from . import backend as backends
from .errors import UsageError
from .outfile import STDOUT


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


class _ShowVersion(Exception):
    """--version: main prints it to the command's output, as every other answer."""


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0,
                         help="print the version, commit and libraries, and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        raise _ShowVersion()


def _parser():
    p = _Parser(prog="virtlab", description="Compare x86 virtualization techniques "
                "by running one real guest OS under each.")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in _COMMANDS:
        command(sub)
    return p


def _list_command(sub):
    p = sub.add_parser("list", help="back ends and workloads")
    _format_arg(p, ("text", "json"))


def _run_command(sub):
    p = sub.add_parser("run", help="run one workload (or raw image) under one back end")
    _workload_arg(p)
    p.add_argument("--backend", default="native", help="the back end (default native)")
    _image_arg(p)
    _scale_arg(p)
    _format_arg(p, ("text", "json"))
    _profile_arg(p)
    _repeat_arg(p, "default 3")
    _budget_args(p)


def _bench_command(sub):
    p = sub.add_parser("bench", help="every workload under every back end, against native")
    p.add_argument("--workloads", default="*",
                   help="comma-separated names or glob patterns (default: all)")
    p.add_argument("--backends", help="comma-separated back ends (default: all installed)")
    _scale_arg(p)
    p.add_argument("--format", choices=("compact", "markdown", "csv", "json", "latex"),
                   help="compact: workloads x back ends, one overhead a cell (the default on "
                   "a terminal); the others give the full table (markdown is the default "
                   "otherwise)")
    p.add_argument("--host", action="store_true",
                   help="compact view: add the host overhead (emulator) table")
    _repeat_arg(p, "default 3 when host figures are shown or saved: a full table, --host or "
                "--save; 1 for the compact view alone, whose modeled figures repetitions "
                "cannot change")
    p.add_argument("--out", help="write the table to FILE instead of stdout")
    p.add_argument("--jobs", type=_positive, default=1,
                   help="rows run at once, in as many processes (default 1; the host "
                   "figures are then measured under that load)")
    _profile_arg(p)
    p.add_argument("--plot", metavar="FILE", help="write each figure to its own file beside "
                   "FILE: out.png gives out-overhead.png, out-nano.png, out-breakdown.png "
                   "(those with data); .png, .svg or .pdf")
    p.add_argument("--save", help="save the raw results to FILE (JSON) for 'virtlab report'")
    _budget_args(p)


def _trace_command(sub):
    p = sub.add_parser("trace", help="every event of a run where the platform or the VMM got "
                       "control: address, instruction, cause, what was done",
                       description="Run a guest and list each event that handed control to "
                       "virtlab (the platform, the VMM, the hypervisor): the guest address, "
                       "the instruction, the cause and what was done, read off the counters "
                       "it changed.  Not every event is an exit: under native there is no "
                       "VMM at all, and a system call that pv's direct trap gate or VT-x "
                       "lets through never enters the VMM; the exits are the events that "
                       "changed exit.total.")
    _workload_arg(p)
    p.add_argument("--backend", default="trap", help="the back end (default trap)")
    _image_arg(p)
    p.add_argument("--scale", type=_positive, default=3,
                   help="the workload's scale (default 3: a few iterations show the "
                   "pattern)")
    p.add_argument("--limit", type=_positive, default=60,
                   help="events to show; the run stops there (default 60)")
    p.add_argument("--skip", type=int, default=0, help="events to pass over first (default 0)")
    p.add_argument("--all", action="store_true",
                   help="trace from boot (default for a workload: its region of interest only)")
    _format_arg(p, ("text", "json"))
    _budget_args(p)


def _audit_command(sub):
    p = sub.add_parser("audit", help="privileged and sensitive instructions a guest executes")
    _workload_arg(p)
    _image_arg(p)
    _scale_arg(p)
    _format_arg(p, ("text", "json"))
    _budget_args(p)


def _translate_command(sub):
    p = sub.add_parser("translate", help="the translation cache after a run: each unit's guest "
                       "instructions beside the translated code for each",
                       description="Run WORKLOAD (or --image FILE) under a translating back "
                       "end with profiling on, then list its translation units, most executed "
                       "first: every guest instruction with its kind (IDENT copied unchanged, "
                       "in-TC sequence, callout to the VMM, a branch whose exit is 'chained' "
                       "to its target's translation or still an 'exit', an 'indirect' table "
                       "lookup), the translated code that stands for it, and why.  "
                       "Example: virtlab translate nano.cli --limit 1 (the cli/sti loop)")
    _workload_arg(p)
    p.add_argument("--backend", default="bt", help="a back end with a translation cache "
                   "(default bt)")
    _image_arg(p)
    p.add_argument("--addr", type=_address,
                   help="only the units whose guest range holds this address (hex or decimal)")
    p.add_argument("--limit", type=_positive, default=20, help="units to show (default 20)")
    _scale_arg(p)
    _format_arg(p, ("text", "json"))
    _budget_args(p)


def _report_command(sub):
    p = sub.add_parser("report", help="analyse a saved bench under a profile (no guest runs)")
    _saved_arg(p)
    _profile_arg(p)
    p.add_argument("--out", required=True, help="the report to write, in the format of "
                   "its extension: REPORT.md (markdown, figure files beside it) or "
                   "REPORT.html (one self-contained page, figures inline)")
    p.add_argument("--sweep", help="sensitivity sweep EVENT[@BACKEND]=LO:HI[:STEPS] "
                   f"(default {DEFAULT_SWEEP}, over every saved back end if hw is not saved)")
    from analysis.figfmt import FORMATS
    p.add_argument("--figures", choices=FORMATS, default="png",
                   help="format of the figures, written beside a markdown report or "
                   "inlined in an HTML one (png or svg there; default png)")


def _sensitivity_command(sub):
    p = sub.add_parser("sensitivity", help="vary one event cost over a saved bench")
    _saved_arg(p)
    p.add_argument("--event", required=True, help="the counter whose cost varies, e.g. exit.priv")
    p.add_argument("--backend", help="vary only this back end's cost of the event "
                   "(default: its cost everywhere, back ends' own costs of it included)")
    p.add_argument("--range", required=True, help="LO:HI[:STEPS] in cycles")
    _profile_arg(p)
    _format_arg(p, ("markdown", "csv", "json", "latex"))
    p.add_argument("--plot", metavar="FILE",
                   help="write the crossover plot to FILE (.png, .svg or .pdf)")


def _demo_command(sub):
    p = sub.add_parser("demo", help="a short lesson: real runs, and only what they showed",
                       description="Run a lesson (virtlab/demos/): real guests under the "
                       "back ends that matter for it, then each claim the runs earned, with "
                       "its evidence, and what was observed for any they did not.  Without "
                       "NAME, list the lessons.")
    p.add_argument("name", nargs="?", help="the lesson to run (without it, the list)")
    _format_arg(p, ("text", "json"))


def _tour_command(sub):
    p = sub.add_parser("tour", help="a guided tour of a technique's code: its numbered stops "
                       "in reading order", description="Print the stops of a technique's "
                       "guided tour (the [tour ...] comments in the source), in order, each "
                       "with file:line and its first line; without TECHNIQUE, every tour.")
    p.add_argument("technique", nargs="?", help="a back end's tour (without it, every tour)")
    p.add_argument("--full", action="store_true",
                   help="print each stop's whole comment, not only its first line")
    _format_arg(p, ("text", "json"))


_COMMANDS = (_list_command, _run_command, _bench_command, _trace_command, _audit_command,
             _translate_command, _report_command, _sensitivity_command, _demo_command,
             _tour_command)


def _workload_arg(p):
    p.add_argument("workload", nargs="?", help="a workload's name (see 'virtlab list')")


def _image_arg(p):
    p.add_argument("--image", help="a raw flat binary to boot instead of a workload "
                   "(docs/boot-protocol.md)")


def _saved_arg(p):
    p.add_argument("saved", help="a file written by 'virtlab bench --save'")


def _scale_arg(p):
    p.add_argument("--scale", type=_positive,
                   help="iterations of the workload's loop (default: the workload's own)")


def _format_arg(p, choices):
    p.add_argument("--format", choices=choices, default=choices[0],
                   help=f"output format (default {choices[0]})")


def _profile_arg(p):
    from analysis.profile import DEFAULT
    p.add_argument("--profile", default=None, help="CPU profile that prices the events, a "
                   f"name or a TOML file (default {DEFAULT})")


def _repeat_arg(p, default):
    p.add_argument("--repeat", type=_positive, metavar="N",
                   help="run each guest N times for the host figures: median, minimum, "
                   f"interquartile range ({default})")


def _budget_args(p):
    p.add_argument("--timeout", type=_seconds, default=120.0,
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


def _seconds(text):
    from .machine import MAX_HOST_SECONDS
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got '{text}'")
    if not 0 < v <= MAX_HOST_SECONDS:             # nan and inf fail this too
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds up to "
                                         f"{MAX_HOST_SECONDS:g}, got '{text}'")
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
    out.write("\nWorkloads (name, default scale: iterations of its loop, what it measures):\n")
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
                 profile=args.profile or DEFAULT, repeat=args.repeat or HOST_REPEAT)
    if args.format == "json":
        out.write(result.to_json(indent=2) + "\n")
    else:
        out.write(_run_text(result))
    return 0 if result.ok else 1


def _run_text(r):
    status = f"ok, exit status {r.exit_status}" if r.ok else "FAILED"
    lines = [f"{r.workload} under {r.backend} (scale {r.scale}): {status}"]
    if r.reason:
        lines.append(f"reason: {r.reason}")
    lines.append(f"matches native: {r.matches_native}   iterations: {r.iterations}")
    lines.append(_host_text(r))
    if r.modeled_cycles is not None:
        per = (f", {r.modeled_cycles_per_iteration:,.0f} per iteration"
               if r.modeled_cycles_per_iteration is not None else "")
        lines.append(f"modeled ({r.profile}): {r.modeled_cycles:,.0f} cycles{per}; "
                     f"{r.instructions:,} guest instructions")
    lines.append("console:")
    lines += ["  " + ln for ln in r.console.splitlines()]
    tables = {"counters": r.counters, **{k: v for k, v in r.details.items() if isinstance(v, dict)}}
    width = max([32, *(len(str(k)) for t in tables.values() for k in t)])
    for title, values in tables.items():
        lines.append(f"{title}:" + ("" if values else " none"))
        lines += [f"  {k!s:<{width}} {v!s:>12}" for k, v in values.items()]
    lines += [f"{k}: {v}" for k, v in r.details.items() if k not in tables]
    return "\n".join(lines) + "\n"


def _host_text(r):
    """The host figures of a run: its medians, and the spread of the measured
    region's samples (analysis/hosttime.py)."""
    from analysis.hosttime import host_time
    from analysis.numbers import significant as sig
    h = host_time(r)
    region = "ROI" if r.roi_host_seconds is not None else "run"
    spread = f", {region} min {sig(h.minimum)} s, IQR {sig(h.iqr)} s" if h.samples > 1 else ""
    roi = f", ROI {sig(r.roi_host_seconds)} s" if r.roi_host_seconds is not None else ""
    runs = f"median of {h.samples} runs" if h.samples > 1 else "one run"
    return f"host time (emulator): {sig(r.host_seconds)} s{roi} ({runs}{spread})"


def cmd_bench(args, out):
    from .api import load_profile
    from .matrix import Interrupted, run_matrix, select_backends, select_workloads
    prof = load_profile(args.profile)
    workloads = select_workloads(args.workloads)
    names = select_backends(args.backends)
    for path in (args.out, args.save):
        _check_writable(path)
    if args.save == STDOUT and args.out in (None, STDOUT):
        raise UsageError("--save -: the table goes to standard output; "
                         "give --out FILE for the table, or --save FILE")
    _check_figure(args.plot, several=True)
    fmt = _bench_format(args, out)
    args.repeat = args.repeat or _default_repeat(args, fmt)
    meta = _bench_meta(args, prof)
    try:
        results = run_matrix(workloads, names, args.scale, args.jobs, progress=True,
                             repeat=args.repeat, timeout=args.timeout,
                             max_exits=args.max_exits)
    except Interrupted as stop:
        _keep_interrupted(args.save, stop.results, meta)
        raise
    if args.save:
        _save(args.save, results, meta)
    from analysis.table import breakdown, frame      # (pandas: only once there is a table)
    df = frame(results, prof)
    if args.plot:
        from analysis.plots import bench_figures
        with _writing():
            drawn = bench_figures(df, breakdown(results, prof), args.plot)
        sys.stderr.write("figures: " + (", ".join(map(str, drawn.values())) or
                                        "none (no successful run to draw)") + "\n")
    _emit(_bench_table(df, fmt, args.host, results, prof), args.out, out)
    if not any(r.ok for r in results):
        sys.stderr.write("virtlab: every run of the bench failed\n")
        return 1
    return 0


# Repetitions for host figures: three give a median that one disturbed run
# cannot move, at three times the guest time.
HOST_REPEAT = 3


def _bench_format(args, out):
    """The compact view on a terminal (or when asked for), else the full table."""
    from .progress import isatty
    return args.format or ("compact" if not args.out and isatty(out) else "markdown")


def _default_repeat(args, fmt):
    """Repetitions serve the host figures alone: the modeled ones are the same
    every run.  So a bench that shows or keeps none runs each guest once."""
    shows_host = fmt != "compact" or args.host or args.save
    return HOST_REPEAT if shows_host else 1


def _bench_table(df, fmt, host, results, prof):
    from analysis import compact, explain
    from analysis.table import render
    if fmt in ("csv", "json", "latex"):
        return render(df, fmt)
    faster = explain.faster_than_native(results, prof)
    if fmt == "markdown":
        return render(df, fmt) + explain.note(faster)
    return compact.render(df, host=host, faster=faster)


def _bench_meta(args, prof):
    from .provenance import collect
    return {"profile": prof.name, "scale": args.scale, "repeat": args.repeat,
            "provenance": collect(sys.argv[1:] if args.argv is None else args.argv,
                                  profile=prof.name, scale=args.scale, repeat=args.repeat,
                                  jobs=args.jobs)}


def _save(path, results, meta):
    from .result import save_results
    with _writing():
        save_results(path, results, meta)


def _keep_interrupted(path, results, meta):
    """Ctrl-C: what was measured is kept, marked as a partial bench."""
    if not path or not results:
        return
    _save(path, results, {**meta, "provenance": {**meta["provenance"], "interrupted": True}})
    sys.stderr.write(f"virtlab: kept the {len(results)} finished row"
                     f"{'s' if len(results) != 1 else ''} in {path}\n")


def cmd_trace(args, out):
    from dataclasses import asdict
    from .harness import resolve, run_guest
    from .trace import Tracer, table as trace_table
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
    # A trace cut at --limit is a run that went as asked; a guest that failed is not.
    rc = 0 if result.ok else 1
    if args.format == "json":
        json.dump({"workload": result.workload, "backend": result.backend,
                   "scale": result.scale, "events": [asdict(e) for e in events],
                   "ok": result.ok, "reason": result.reason}, out, indent=1)
        out.write("\n")
        return rc
    where = "from boot" if args.all or not args.workload else "in the region of interest"
    title = f"{result.workload} under {result.backend} (scale {result.scale})"
    if not events:
        out.write(f"{title}: no events {where}"
                  + (f" after the first {args.skip}" if args.skip else "") + "\n")
        if result.reason:
            out.write(f"({result.reason})\n")
        return rc
    out.write(f"{title}: events {events[0].n}..{events[-1].n} {where}\n")
    out.write("".join(line + "\n" for line in trace_table(events)))
    out.write(_exits_text(result.backend, events) + "\n")
    if result.reason:
        out.write(f"({result.reason})\n")
    return rc


def _exits_text(backend, events):
    """Which of the events were exits (virtlab/trace.py says why not all are)."""
    if backend == "native":
        return "(native has no VMM: none of these events is an exit)"
    exits, n = sum(e.exit for e in events), len(events)
    if exits == n:
        return f"(all {n} events are exits, counted in exit.total)"
    if exits == 0:
        return (f"(none of these {n} events is an exit (exit.total): 'what was done' "
                "tells what each was)")
    return (f"({exits} of these {n} events {'is an exit' if exits == 1 else 'are exits'}, "
            "marked (exit) and counted in exit.total; 'what was done' tells what the "
            "others were)")


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
    if bad:
        verdict = ("under classic trap-and-emulate these run without trapping and see the "
                   "real CPU (Popek-Goldberg's condition fails)")
    elif result.ok:
        verdict = "this guest run is classically virtualizable"
    else:
        # A run cut short says nothing about what it would have executed next.
        verdict = "no verdict, the run did not complete"
    out.write("\n" + textwrap.fill(f"{bad} executions of sensitive, unprivileged "
                                   f"instructions: {verdict}", width=80,
                                   break_on_hyphens=False) + "\n")
    if not result.ok:
        out.write(f"(run failed: {result.reason})\n")
    return 0 if result.ok else 1


def cmd_translate(args, out):
    from .harness import resolve, run_guest
    if not args.workload and not args.image:
        raise UsageError("translate needs a WORKLOAD or --image FILE")
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
    guest = resolve(args.workload, args.image, args.scale, cls.image)
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


def _check_figure(path, several=False):
    """A figure file name every drawing command accepts (analysis/figfmt.py),
    checked before any work; and every file it stands for (bench's, one per
    figure beside it) somewhere it can be written."""
    from analysis.figfmt import BENCH_FIGURES, figure_format, figure_paths
    if path is None:
        return
    try:
        figure_format(path)
        paths = figure_paths(path, BENCH_FIGURES).values() if several else [path]
    except ValueError as exc:
        raise UsageError(f"--plot: {exc}") from None
    for p in paths:
        _check_writable(p)


def _check_writable(path):
    """Refuse, before any work, an output that cannot be written
    (virtlab/outfile.py has the rule)."""
    from .outfile import problem
    if path is None:
        return
    why = problem(path)
    if why:
        raise UsageError(f"cannot write '{path}': {why}")


@contextlib.contextmanager
def _writing():
    """An output that fails once the work is done (a full disk, /dev/full)
    is still one line and exit status 2, as when it is refused before."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"cannot write '{exc.filename}': {exc.strerror}") from None


def _emit(text, path, out):
    if path and path != STDOUT:
        from .outfile import write
        with _writing():
            write(path, text)
    else:
        out.write(text)


def _saved(path):
    return _load_saved(path)[0]


def _load_saved(path):
    """(results, meta) of a saved bench, or a UsageError.  Runs the model
    cannot price are analysed as far as they can be, and said so here."""
    from analysis.evaluate import not_priced
    from .result import SavedResultsError, load_results
    try:
        results, meta = load_results(path)
    except SavedResultsError as exc:
        raise UsageError(str(exc)) from None
    if not any(r.backend == "native" for r in results):
        raise UsageError(f"'{path}' has no native runs to compare with")
    for line in not_priced(results):
        sys.stderr.write(f"virtlab: {line}\n")
    return results, meta


DEFAULT_SWEEP = "exit.priv@hw=0:6000:25"


def cmd_report(args, out):
    from .api import load_profile
    from .provenance import describe
    from analysis import report
    if args.out == STDOUT:
        raise UsageError("--out: a report is a file, written with its figures beside "
                         "it; '-' (standard output) cannot hold them")
    try:
        report.check_format(args.out, args.figures)     # .md or .html, by the extension
    except ValueError as exc:
        raise UsageError(f"--figures: {exc}") from None
    prof = load_profile(args.profile)
    results, meta = _load_saved(args.saved)
    for path in report.outputs(args.out, args.figures):
        _check_writable(path)
    sweep = _report_sweep(args.sweep, results, prof)
    # The saved file's provenance, which only the command has read, ends the report.
    provenance = describe(meta.get("provenance"))
    with _writing():
        report.write(results, prof, args.out, sweep, figures=args.figures,
                     provenance=(args.saved, provenance))
    out.write(f"wrote {args.out}\n")
    out.write(f"results analysed ({args.saved}):\n" + "".join(f"  {ln}\n" for ln in provenance))
    return 0


def _report_sweep(text, results, prof):
    """The report's sweep: the one asked for, checked against the results, or
    the default, over every saved back end when these results lack hw."""
    from analysis import sensitivity
    event, backend, rng = _parse_sweep(text or DEFAULT_SWEEP)
    try:
        sensitivity.check_target(results, prof, event, backend)
    except ValueError as exc:
        if text is not None:
            raise UsageError(f"--sweep: {exc}") from None
        backend = None
    return event, backend, rng


def _parse_sweep(text):
    from analysis.sensitivity import parse_range
    target, eq, rng = text.partition("=")
    event, at, backend = target.partition("@")
    if not eq or not event or (at and not backend):
        raise UsageError(f"--sweep must be EVENT[@BACKEND]=LO:HI[:STEPS], got '{text}'")
    try:
        parse_range(rng)
    except ValueError as exc:
        raise UsageError(f"--sweep: {exc}") from None
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
    _check_figure(args.plot)
    why = sensitivity.flat(results, args.event, args.backend)
    if why:
        sys.stderr.write(f"virtlab: {why}\n")
    df = sensitivity.sweep(results, prof, args.event, costs, args.backend)
    cross = sensitivity.crossovers(df)
    if args.plot:
        fig = plots.sensitivity_figure(df, cross, args.event
                                       + (f" ({args.backend})" if args.backend else ""))
        if fig is None:                # as the table's '-' rows: said, and not an error
            sys.stderr.write(f"figure: none ({plots.NOTHING_SWEPT})\n")
        else:
            with _writing():
                plots.save(fig, args.plot)
    if args.format == "markdown":
        out.write(_sweep_caption(results, prof, args) + "\n\n")
    out.write(render(df, args.format))
    if args.format in ("markdown", "latex"):
        for c in cross:
            out.write(f"\n{c['faster']} overtakes {c['slower']} at {c['cost']:.0f} cycles")
        out.write("\n" if cross else "\nno crossover in this range\n")
    return 0


def _sweep_caption(results, prof, args):
    """What the sweep's overhead column is (analysis/sensitivity.py)."""
    n = len({r.workload for r in results if r.ok})
    whose = f"under {args.backend}" if args.backend else "under every back end"
    return (f"Modeled overhead, x native: the geometric mean over the {n} "
            f"workload{'s' if n != 1 else ''} of {args.saved}, as the cost of {args.event} "
            f"{whose} varies (profile {prof.name})")


def cmd_demo(args, out):
    """A lesson by name, or the list of them; 1 if one of its guests failed."""
    from . import demos
    from .demos import render
    if args.name is None:
        for name in demos.names():
            out.write(f"{name:<18} {demos.summary(name)}\n")
        return 0
    if args.name not in demos.names():
        raise UsageError(f"unknown demo '{args.name}' (demos: {', '.join(demos.names())})")
    lesson = demos.lesson(args.name)
    out.write(render.as_json(lesson) if args.format == "json" else render.text(lesson))
    return 0 if lesson.ok else 1


def cmd_tour(args, out):
    """The tour of one technique, or of all, read from the installed source."""
    import textwrap
    from . import tour
    try:
        stops = tour.tour(args.technique)
    except tour.TourError as exc:
        raise UsageError(str(exc)) from None
    if args.format == "json":
        json.dump([{"technique": s.technique, "stop": s.number, "file": s.path,
                    "line": s.line, "title": s.title, "text": list(s.text)} for s in stops],
                  out, indent=1)
        out.write("\n")
        return 0
    if not stops:
        raise UsageError("no tour stops in the installed source")
    width = max(len(s.where()) for s in stops)
    for technique in tour.techniques(stops):
        mine = [s for s in stops if s.technique == technique]
        summary = backends.load(technique).summary if technique in backends.names() else ""
        out.write(f"{technique}{': ' + summary if summary else ''} ({len(mine)} stops)\n")
        for s in mine:
            out.write(f"  {s.number:>4}  {s.where():<{width}}  {s.title}\n")
            if args.full and s.text:
                body = textwrap.fill(" ".join(s.text), 80, initial_indent=" " * 8,
                                     subsequent_indent=" " * 8)
                out.write(body + "\n\n")
        out.write("\n")
    return 0


def main(argv=None, out=None):
    from .repeat import NondeterministicRun
    out = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
        args.argv = argv                       # for the provenance of what --save keeps
        commands = {"list": cmd_list, "run": cmd_run, "bench": cmd_bench, "trace": cmd_trace,
                    "audit": cmd_audit, "translate": cmd_translate,
                    "report": cmd_report, "sensitivity": cmd_sensitivity,
                    "demo": cmd_demo, "tour": cmd_tour}
        return commands[args.command](args, out)
    except _ShowVersion:
        from .provenance import version_text
        out.write(version_text())
        return 0
    except UsageError as exc:
        sys.stderr.write(f"virtlab: error: {exc}\n")
        return 2
    except NondeterministicRun as exc:         # a bug, not the user's: said plainly
        sys.stderr.write(f"virtlab: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("virtlab: interrupted\n")
        return 130
    except BrokenPipeError:                    # e.g. `virtlab list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
