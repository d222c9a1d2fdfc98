"""What the benchmark scripts share: timing one assembly guest on a fresh
machine, the CPU model's own floor, and the command line that prints medians
as text or JSON.

The floor.  Absolute host times on a shared machine move by 2x from run to
run, so a path is read against what the CPU model itself costs in the same
run:

  floor_exit_us      a bare `int 0x80` at ring 0 on a bare Unicorn CPU into
                     an empty Python UC_HOOK_INTR callback installed with the
                     binding's own uc.hook_add: Unicorn's exit into Python and
                     back with nothing done there.  This is the floor the
                     targets of issue 12 (item 1b) are stated against (0.71 us
                     on an idle 2-core machine);
  floor_raw_exit_us  the same through a raw ctypes callback, as the machine
                     installs its hooks (virtlab/machine.py): the part of the
                     floor that no Python code can remove, printed for
                     reference (about a third of floor_exit_us);
  raw_mips           the ALU loop of exit_path.guest_mips on a bare Unicorn
                     CPU with no hook at all.

Each repetition measures the floor just before each path, and the ratio
reported is the median of the per-repetition ratios, so that a burst of load
on the host moves numerator and denominator together.  The floor also moves by
itself on some hosts (one process's samples have ranged over 0.40 to 0.82 us on
an idle shared machine), so the ratio of the best samples (fastest path over
fastest floor) is printed beside it: take more repetitions until the two agree.

Times are the CPU time of this process (time.process_time) unless --wall is
given: a run is one thread that never waits, so its CPU time is its cost,
while wall time on a loaded host also counts the time other processes held
the CPU.
"""
import argparse
import ctypes
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, Optional

# The code measured: this checkout's, or (an --instructions child of
# compare_trees.py) the checkout named in GUESTBENCH_CODE.
_CODE = os.environ.get("GUESTBENCH_CODE") or str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _CODE)

from unicorn import Uc, UcError, UC_ARCH_X86, UC_MODE_32, UC_HOOK_INTR, UC_ERR_OK  # noqa: E402
from unicorn import x86_const as X                                              # noqa: E402
from unicorn.unicorn_py3.unicorn import uclib, uc_hook_h                        # noqa: E402

from virtlab import asmguest as A                       # noqa: E402
from virtlab.decode import forget_blocks               # noqa: E402
from virtlab.machine import BootSpec, Machine           # noqa: E402

# The machine's own UC_HOOK_INTR signature (virtlab/machine.py).
_INTR_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)
_FLOOR_AT = 0x1000
ALU_LOOP = "lp:\nadd eax, ecx\nxor ebx, eax\ndec ecx\njnz lp\n"   # 4 instructions
FLOOR_EXITS = 20_000
FLOOR_SAMPLES = 3                    # the floor of a repetition: the median of this many
RAW_LOOP = 10_000_000
clock = time.process_time            # main(--wall) makes it time.perf_counter
# main(--calls): a run is measured in the Python calls made while the machine
# runs, not in host time (counted_run).
count_calls = False
_last_entries = None                 # the VMM entries of the last timed_run (per_exit)
# main(--entries): every timed run also times each exit handler by its cause,
# and appends {cause: [calls, ns]} here (EntryClock).
entry_runs = None


def integer(least):
    """An argparse type for the scripts' counts (--repeat, --jobs, a seed):
    an integer of `least` or more.  The scripts' own, not virtlab.cli's:
    they also run against older checkouts (compare_trees.py)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected an integer of {least} or more, "
                                             f"got '{text}'")
        return value
    return parse


def timed_run(backend, guest, ram_size=32 << 20, touch=False):
    """(host seconds of the run, the machine) for an AsmGuest (or an image
    already built, such as a PV guest's) under a back end.  `touch`: write
    every page of guest RAM and machine memory before the clock starts.  The
    machine maps them as anonymous memory that the host kernel allocates on
    first touch (a host page fault of a few microseconds), so a guest that
    touches a new page per iteration would otherwise time the host kernel as
    much as the exit.  Every run decodes its blocks afresh (the process keeps
    decodings between machines), so that what a run costs once is the same
    for the runs whose difference a Marginal takes."""
    image = guest if isinstance(guest, bytes) else A.build(guest)
    forget_blocks()
    with Machine(backend, ram_size=ram_size) as m:
        m.boot(BootSpec(image))
        if touch:
            for mem in (m.mem, m.vmm):
                for page in range(0, mem.size if mem else 0, 4096):
                    mem.view[page] = mem.view[page]
        clocked = EntryClock(m) if entry_runs is not None else None
        if count_calls:
            out, dt = counted_run(m)
        else:
            with collector_off():
                t0 = clock()
                out = m.run()
                dt = clock() - t0
    if not out.ok:
        raise SystemExit(f"benchmark guest failed: {out.reason}")
    if clocked is not None:
        entry_runs.append(clocked.by_cause)
    global _last_entries
    # Every time the CPU hands control to Python costs at least the floor:
    # an exit, or an observed instruction (the kernel's iret under trap).
    # (A checkout from before observers were counted has no `observed`:
    # compare_trees.py runs these scripts on older code too.)
    _last_entries = m.exits + getattr(m.intercepts, "observed", 0)
    return dt, m


def counted_run(m):
    """(outcome, Python calls made while machine `m` runs, in millions).  The
    count is a property of the code, the same on every host and every time,
    so an A/B of it needs no repetitions; a Marginal of two such runs gives
    calls per exit (in millions, as seconds give microseconds).  The calls
    counted are Python functions entered (the machine's hooks, called from C,
    included), not C functions.  The cyclic garbage collector is off while
    they are counted: when it runs depends on the process's history, and the
    finalizers it may call are no part of the path (collector_off)."""
    calls = 0

    def prof(_frame, event, _arg):
        nonlocal calls
        if event == "call":
            calls += 1
    with collector_off():
        sys.setprofile(prof)
        try:
            out = m.run()
        finally:
            sys.setprofile(None)
    return out, calls / 1e6


class EntryClock:
    """--entries: the host time spent in each exit's handler, by the exit's
    cause as `virtlab trace` names it (int 0x80, callout iret, #PF, ...), so
    that a path of two kinds of VMM entry is read kind by kind.  The
    handlers are wrapped as the tracer wraps them (Machine.observe); what
    lies outside them (the CPU's exit and return, the machine's hook around
    the handler, the guest's own instructions, an observed instruction such
    as trap's kernel iret, which is no exit) is what remains of the path."""

    def __init__(self, machine):
        # (Imported here: an older checkout, measured by compare_trees.py,
        # has no trace.exit_cause, and never runs with --entries.)
        from virtlab.trace import exit_cause
        self.cause = exit_cause
        self.machine = machine
        self.by_cause = {}
        machine.observe(self._wrap)

    def _wrap(self, name, handler):
        if name == "intercept":
            return self._intercepted

        def timed(*args):
            cause = self.cause(self.machine, name, args)
            t0 = time.perf_counter_ns()
            result = handler(*args)
            self._add(cause, time.perf_counter_ns() - t0)
            return result
        return timed

    def _intercepted(self, address, kind, call):
        t0 = time.perf_counter_ns()
        redirected = call()
        self._add(f"intercept {kind}", time.perf_counter_ns() - t0)
        return redirected

    def _add(self, cause, ns):
        seen = self.by_cause.setdefault(cause, [0, 0])
        seen[0] += 1
        seen[1] += ns


@contextmanager
def collector_off():
    """Python's cyclic garbage collector off for a measured run (after a
    collection).  When a full collection falls depends on the process's
    history, every object earlier runs left, not on the path measured; and
    its cost grows with all of them: one inside a run of 5000 shadow fills
    took some 17 ms, 3 us an exit, in one sample of two and not in the
    other.  Reference counting still frees what the run drops."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Marginal(NamedTuple):
    """One sample of what an exit costs: the host seconds of two fresh
    machines' runs whose guests make n and 2n exits.  Their difference over
    n is the exit's cost: what a run costs once (building and booting the
    machine, the guest's set-up, its first translations and shadow fills)
    cancels.  `entries`: the VMM entries one more exit makes, from the
    same two runs (a system call under trap is two: the reflected `int` and
    the intercepted `iret`), so that a compound path is also read per entry."""
    n: int
    once: float
    twice: float
    entries: Optional[float] = None

    def us(self):
        return (self.twice - self.once) / self.n * 1e6


def per_exit(run, n):
    """A Marginal sample from `run(k)`, the host seconds of a run making k exits."""
    global _last_entries
    if _child is not None:               # one run of an --instructions child (below):
        _last_entries = None             # n, its time and the VMM entries it took
        dt = run(_child * n)
        print(n, dt, _last_entries)
        return Marginal(n, 0.0, 0.0)
    _last_entries = None                 # (stays None if run() times no machine)
    once = run(n)
    first = _last_entries
    twice = run(2 * n)
    entries = None if first is None or _last_entries is None else (_last_entries - first) / n
    return Marginal(n, once, twice, entries)


# -- host instructions per exit (--instructions) --------------------------------------
# Host time on a shared machine is noisy beyond what repetitions fix; the
# number of host instructions an exit executes is not.  valgrind's callgrind
# counts them in a child process per run, collecting only inside the CPU
# loop (cpu_exec, from which every hook is called; not the interpreter's
# start, the imports or the machine's boot).  A path's figure is the
# difference of its runs of n and 2n exits over n, as for times, and the
# floor's the same for the bare exit.  Not a time (an instruction of the
# interpreter is not one of the CPU model's), but the same on every run: the
# ratio of two says how much more work an exit is than the floor.

_child = None                        # --child: the multiple of n this run makes


def instructions(script, name, valgrind, code=None):
    """Host instructions per exit of figure `name` of `script` (the floor
    for name "floor"), from two callgrind-counted children, on the code of
    the checkout `code` (None: this one)."""
    return counted(script, name, valgrind, code)[0]


def counted(script, name, valgrind, code=None):
    """(instructions(), the VMM entries one exit makes or None): the
    entries from the same two children, as Marginal.entries from two timed
    runs, so that a compound path is read per entry here too."""
    counts, entries, n = [], [], None
    env = {**os.environ, "PYTHONHASHSEED": "0", "GUESTBENCH_CODE": str(code or _CODE)}
    for multiple in (1, 2):
        out = subprocess.run(
            [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null",
             "--toggle-collect=cpu_exec_x86_64", sys.executable, str(script),
             "--child", f"{name}:{multiple}"],
            capture_output=True, text=True, env=env)
        n, count, entered = _collected(out, name)
        counts.append(count)
        entries.append(entered)
    per_entry = None if None in entries else (entries[1] - entries[0]) / n
    return (counts[1] - counts[0]) / n, per_entry


def find_valgrind():
    """valgrind's path, or SystemExit with what --instructions needs."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--instructions needs valgrind (its callgrind tool) on the PATH")
    return valgrind


def _collected(out, name):
    """(n, instructions collected, VMM entries of the run or None) from a
    child's output, or SystemExit."""
    m = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    words = out.stdout.split()
    if out.returncode != 0 or m is None or not words:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"{name}: the counted run failed: {tail}")
    entries = int(words[2]) if len(words) > 2 and words[2].isdigit() else None
    return int(words[0]), int(m.group(1)), entries


def _run_child(spec, benches):
    """--child NAME:MULTIPLE: make the one run the parent counts."""
    global _child
    name, _, multiple = spec.partition(":")
    _child = int(multiple)
    import virtlab
    if not virtlab.__file__.startswith(_CODE):
        raise SystemExit(f"virtlab came from {virtlab.__file__}, not {_CODE}")
    if name == "floor":
        _bare_run(f"mov ecx, {FLOOR_EXITS * _child}\n" + _INT_LOOP, binding_hook=_empty)
        print(FLOOR_EXITS)
    else:
        benches[name]()


def _print_instructions(benches, as_json):
    """Each path's host instructions per exit, and as a ratio to the floor's."""
    from concurrent.futures import ThreadPoolExecutor
    valgrind = find_valgrind()
    script = Path(sys.argv[0]).resolve()
    names = ["floor", *benches]
    # Two at a time, as compare_trees does: a count does not depend on the load.
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(zip(names, pool.map(lambda n: counted(script, n, valgrind), names)))
    floor = counts.pop("floor")[0]
    figures = {k: v for k, (v, _) in counts.items()}
    entries = {k: e for k, (_, e) in counts.items() if e is not None}
    if as_json:
        print(json.dumps({"floor_exit_instructions": round(floor),
                          **{k.removesuffix("_us") + "_instructions": round(v)
                             for k, v in figures.items()},
                          "ratio_to_floor": {k: round(v / floor, 1) for k, v in figures.items()},
                          "vmm_entries_per_exit": entries}))
        return
    print(f"{'floor_exit_instructions':<28} {floor:>10.0f}   (floor)")
    for k, v in figures.items():
        line = f"{k.removesuffix('_us') + '_instructions':<28} {v:>10.0f}   {v / floor:6.1f}x floor"
        if entries.get(k, 0) >= 1.5:
            line += (f"   {entries[k]:.0f} VMM entries: "
                     f"{v / floor / entries[k]:.1f}x floor per entry (mean)")
        print(line)


def value(sample):
    """A sample as its figure (microseconds, or a rate)."""
    return sample.us() if isinstance(sample, Marginal) else sample


def best(samples):
    """The best estimate from several samples of one path.  Interference on
    the host only ever adds time, so the fastest sample is the closest to the
    cost; for Marginals, the fastest run of each length, then their
    difference (the fastest difference would favour a slowed first run)."""
    if isinstance(samples[0], Marginal):
        return Marginal(samples[0].n, min(s.once for s in samples),
                        min(s.twice for s in samples)).us()
    return min(samples)


def _entries(samples):
    """VMM entries per exit of a path (the same in every sample: the runs
    are deterministic), None for a rate."""
    if not isinstance(samples[0], Marginal) or samples[0].entries is None:
        return None
    return statistics.median(s.entries for s in samples)


def _bare_run(body, hook=None, binding_hook=None):
    """Host seconds of `body` run at ring 0 on a bare Unicorn CPU (flat 32-bit,
    no paging, no virtual PC), with `hook` as its raw UC_HOOK_INTR callback
    or `binding_hook` installed through the binding's uc.hook_add."""
    code = A.assemble(body, _FLOOR_AT)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x100000)
    uc.mem_write(_FLOOR_AT, code)
    uc.reg_write(X.UC_X86_REG_ESP, 0x80000)
    if hook is not None:
        handle = uc_hook_h()
        status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_INTR, hook, None,
                                   ctypes.c_uint64(1), ctypes.c_uint64(0))
        if status != UC_ERR_OK:
            raise UcError(status)
    if binding_hook is not None:
        uc.hook_add(UC_HOOK_INTR, binding_hook)
    t0 = clock()
    uc.emu_start(_FLOOR_AT, _FLOOR_AT + len(code))
    return clock() - t0


def _empty(_uc, _vector, _user):
    pass


_EMPTY_HOOK = _INTR_CB(_empty)


_INT_LOOP = "lp:\nint 0x80\ndec ecx\njnz lp\n"


def floor_exit_us(n=FLOOR_EXITS):
    """Microseconds of one `int 0x80` into an empty Python hook (the
    binding's uc.hook_add) and back."""
    return statistics.median(_bare_run(f"mov ecx, {n}\n" + _INT_LOOP, binding_hook=_empty)
                             for _ in range(FLOOR_SAMPLES)) / n * 1e6


def floor_raw_exit_us(n=FLOOR_EXITS):
    """The same into an empty raw ctypes callback, as the machine's hooks."""
    return statistics.median(_bare_run(f"mov ecx, {n}\n" + _INT_LOOP, hook=_EMPTY_HOOK)
                             for _ in range(FLOOR_SAMPLES)) / n * 1e6


def raw_mips(n=RAW_LOOP):
    """Millions of instructions per second of the ALU loop, no hooks."""
    return 4 * n / _bare_run(f"mov ecx, {n}\n" + ALU_LOOP) / 1e6


def _ratio(name, value, floor, raw):
    """A path against the floor: microseconds per event / the bare exit; a
    rate (`..._mips`) as how many times slower than the raw loop it runs."""
    return raw / value if name.endswith("_mips") else value / floor


def _best_ratio(name, samples, floors, raws):
    """The ratio of the best (fastest) samples (best()), for the floor as for
    the path; a guard against a floor that moves by itself (one process's
    samples of it have ranged over 0.40 to 0.82 us)."""
    if name.endswith("_mips"):
        return max(raws) / max(samples) if raws else None
    return best(samples) / min(floors) if floors else None


def measure(benches, repeat, floor=True):
    """{name: (median value, median ratio, ratio of the best samples, VMM
    entries per exit), the ratios None without `floor`, the entries None for
    a rate} and the floor's medians."""
    samples = {name: [] for name in benches}
    ratios = {name: [] for name in benches}
    floors, raw_floors, raws = [], [], []
    for _ in range(repeat):
        if floor:
            raw_floors.append(floor_raw_exit_us())
        for name, fn in benches.items():
            if floor:
                if name.endswith("_mips"):
                    raws.append(raw_mips())
                else:
                    floors.append(floor_exit_us())
            sample = fn()
            samples[name].append(sample)
            v = value(sample)
            if floor:
                ratios[name].append(_ratio(name, v, floors[-1] if floors else None,
                                           raws[-1] if raws else None))
    med = statistics.median
    figures = {name: (med(map(value, samples[name])), med(ratios[name]) if floor else None,
                      _best_ratio(name, samples[name], floors, raws) if floor else None,
                      _entries(samples[name]))
               for name in benches}
    base = {}
    if floors:
        base["floor_exit_us"] = med(floors)
    if raw_floors:
        base["floor_raw_exit_us"] = med(raw_floors)
    if raws:
        base["raw_mips"] = med(raws)
    return figures, base


def by_entry(benches, repeat):
    """--entries: {path: its figures kind by kind}.  Each repetition takes
    the floor, a sample of the path as it is, and a sample (runs of n and 2n
    exits) with every exit handler timed (EntryClock); per exit is the
    difference of the two runs over n, as for the path's own time, so that
    what a run does once (its boot) cancels.  The path's time is the plain
    sample's: the clock's own wrapping of each handler is no part of it.
    Medians over the repetitions: the path's time, each cause's entries and
    microseconds in its handler, and what lies outside the handlers (the
    path's time less theirs)."""
    global entry_runs
    med = statistics.median
    out = {}
    for name, bench in benches.items():
        totals, floors, outside, causes = [], [], [], {}
        for _ in range(repeat):
            floors.append(floor_exit_us())
            entry_runs = None
            totals.append(bench().us())
            entry_runs = []
            sample = bench()
            once, twice = entry_runs[-2:]
            handled = 0.0
            for cause in dict.fromkeys(list(once) + list(twice)):
                (c1, ns1), (c2, ns2) = once.get(cause, (0, 0)), twice.get(cause, (0, 0))
                per, us = (c2 - c1) / sample.n, (ns2 - ns1) / sample.n / 1e3
                handled += us
                causes.setdefault(cause, []).append((per, us))
            outside.append(totals[-1] - handled)
        entry_runs = None
        out[name] = {"us": med(totals), "floor_us": med(floors), "outside_us": med(outside),
                     "handlers": {cause: {"per_exit": med(p for p, _ in seen),
                                          "us": med(u for _, u in seen)}
                                  for cause, seen in causes.items()
                                  if med(p for p, _ in seen) >= 0.5}}
    return out


def _print_by_entry(figures, as_json):
    if as_json:
        print(json.dumps(figures))
        return
    for name, f in figures.items():
        floor = f["floor_us"]
        print(f"{name}  {f['us']:.2f} us an exit ({f['us'] / floor:.1f}x floor "
              f"{floor:.3f} us); per exit:")
        for cause, h in f["handlers"].items():
            print(f"  {cause:<22} {h['per_exit']:4.1f} x  {h['us']:7.2f} us in its handler "
                  f"{h['us'] / floor:6.1f}x floor")
        print(f"  {'outside the handlers':<22}        {f['outside_us']:7.2f} us"
              f"{'':15}{f['outside_us'] / floor:6.1f}x floor   (the CPU's exits and returns, "
              f"the machine's hook, the guest's own code, observed instructions)")


def differences(figures, base, derived):
    """The figures `derived` names, {name: (whole, part)}: one path less
    another that does all of it but one step, from the same run's medians
    (pv.upcall less pv.set_timer is the upcall alone); as a ratio to the
    same floor.  Only where both were measured."""
    floor = base.get("floor_exit_us")
    out = {}
    for name, (whole, part) in derived.items():
        if whole in figures and part in figures:
            us = figures[whole][0] - figures[part][0]
            out[name] = (us, us / floor if floor else None, None, None)
    return out


def main(doc, benches, argv=None, floor=False, derived=None):
    """Run each benchmark --repeat times and print the medians; with `floor`,
    also the CPU model's floor and each path as a ratio to it; `derived`,
    the differences() of pairs of them."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--repeat", type=integer(1), default=5, metavar="N",
                   help="repetitions; the median is printed (default 5)")
    p.add_argument("--wall", action="store_true", help="time in wall-clock seconds, not CPU time")
    p.add_argument("--only", default="", help="comma-separated names of the figures to measure")
    p.add_argument("--profile", metavar="NAME",
                   help="run one benchmark once under cProfile and print where the time goes")
    p.add_argument("--calls", action="store_true",
                   help="count the Python calls per exit instead of timing (deterministic)")
    p.add_argument("--instructions", action="store_true",
                   help="count the host instructions per exit with valgrind instead of "
                        "timing (deterministic; slow: two counted runs per path)")
    p.add_argument("--entries", action="store_true",
                   help="time each exit handler of a path by its cause (int 0x80, callout "
                        "iret, ...) and print the path kind by kind")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global clock, count_calls
    clock = time.perf_counter if args.wall else time.process_time
    count_calls = args.calls
    if args.only:
        wanted = args.only.split(",")
        unknown = [w for w in wanted if w not in benches]
        if unknown:
            p.error("unknown figure(s): " + ", ".join(unknown))
        benches = {k: v for k, v in benches.items() if k in wanted}
    if args.profile:
        return _profile(benches, args.profile, p)
    if args.child:
        return _run_child(args.child, benches)
    if args.entries and (args.calls or args.instructions):
        p.error("--entries times the handlers: not with --calls or --instructions")
    if args.entries:                     # a rate has no exits to time
        return _print_by_entry(by_entry({k: v for k, v in benches.items()
                                         if not k.endswith("_mips")}, args.repeat), args.json)
    if args.instructions:                # a rate has no instructions per exit
        return _print_instructions({k: v for k, v in benches.items()
                                    if not k.endswith("_mips")}, args.json)
    if args.calls:                       # a rate has no calls per exit; one run says it all
        benches = {k: v for k, v in benches.items() if not k.endswith("_mips")}
        args.repeat, floor = 1, False
    figures, base = measure(benches, args.repeat, floor)
    if args.calls:
        figures = {k.removesuffix("_us") + "_calls": f for k, f in figures.items()}
    else:
        figures.update(differences(figures, base, derived or {}))
    if args.json:
        out = {k: round(v, 2) for k, (v, *_) in figures.items()}
        if floor:
            out.update({k: round(v, 3) for k, v in base.items()})
            out["ratio_to_floor"] = {k: round(r, 1) for k, (_, r, _, _) in figures.items()}
            out["best_ratio_to_floor"] = {k: round(b, 1) for k, (_, _, b, _) in figures.items()
                                          if b is not None}
            out["vmm_entries_per_exit"] = {k: e for k, (*_, e) in figures.items()
                                           if e is not None}
        print(json.dumps(out))
        return
    width = max(map(len, list(figures) + list(base)))
    for k, v in base.items():
        print(f"{k:<{width}} {v:>10.3f}   (floor, this run)")
    for k, (v, r, best, entries) in figures.items():
        line = f"{k:<{width}} {v:>10.2f}"
        if r is not None:
            line += (f"   {r:6.1f}x " + ("slower than raw" if k.endswith("_mips") else "floor")
                     + (f"   (best samples {best:.1f}x)" if best is not None
                        else f"   ({derived[k][0]} less {derived[k][1]})"))
            if entries and entries >= 1.5:
                line += (f"   {entries:.0f} VMM entries: "
                         f"{r / entries:.1f}x floor per entry (mean)")
        print(line)


def _profile(benches, name, parser):
    import cProfile
    import pstats
    if name not in benches:
        parser.error(f"unknown figure {name}")
    prof = cProfile.Profile()
    prof.enable()
    benches[name]()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(30)
