"""How a lesson runs guests and takes its evidence from them.

Every guest a lesson runs goes through one of the four functions below, so
that a test can replace one and watch the lesson report what it then saw:

    run          virtlab.run: counters, console, modeled cycles (the default profile)
    traced       the same guest under `virtlab trace`'s Tracer: each event, with
                 its cause and what was done about it
    translated   bt with its execution counters on, then the units of its
                 translation cache a lesson asks for, as `virtlab translate` lists them
    mask_stores  pv with a watch on the event mask in the shared-info page

The Evidence constructors after them read one value off a Run and say where
it came from, in words (`source`) and as a path into the lesson's JSON (`ref`),
which is how the tests check every printed value against the run.
"""
import re
from dataclasses import asdict, dataclass

from .. import backend as backends
from ..api import load_profile, native_reference, priced, run as api_run
from ..harness import compare_with_native, count_instructions, resolve, run_guest
from .claims import Evidence


@dataclass
class Run:
    label: str                   # how the lesson names it: "trap", "trap (trace)"
    result: object               # the RunResult
    trace: list = None           # traced: the events, as plain dicts
    units: list = None           # translated: the translation units (bt/listing.py) it kept
    units_in_cache: int = None   # translated: how many there were
    stores: list = None          # mask_stores: each value stored into the mask, in the ROI
    tool: str = "virtlab.run"    # which facility made it

    def as_dict(self):
        """The run's whole record (RunResult.to_dict), how it was made, and
        what the facility that made it recorded besides."""
        out = {"tool": self.tool, **self.result.to_dict()}
        for extra in ("trace", "units", "units_in_cache", "stores"):
            if getattr(self, extra) is not None:
                out[extra] = getattr(self, extra)
        return out


def run(workload, backend, scale, label=None):
    """One run through the Python API, priced under the default profile."""
    return Run(label or backend, api_run(workload, backend, scale=scale))


def _guest(workload, backend, scale):
    return resolve(workload, None, scale, backends.load(backend).image)


def traced(workload, backend, scale, limit, label=None):
    """The events of the region of interest, at most `limit` of them: the
    Tracer stops the run there, so a lesson that needs them all asks for
    more than the region has."""
    from ..trace import Tracer
    tracers = []
    result = run_guest(_guest(workload, backend, scale), backend,
                       on_machine=lambda m: tracers.append(Tracer(m, limit, 0, roi_only=True)))
    events = [asdict(e) for e in tracers[0].events]
    return Run(label or f"{backend} (trace)", result, trace=events, tool="virtlab trace")


def translated(workload, scale, keep, label="bt (translations)"):
    """bt with every unit counting its executions (set before boot, as
    `virtlab translate` does), and the units of its translation cache that
    keep(units) selects (holding(test): those with a site test is true of).
    The whole cache is a few hundred units, a megabyte of JSON; a lesson
    looks at a few."""
    kept = []

    def configure(be):
        be.profile = True
        kept.append(be)
    guest = _guest(workload, "bt", scale)
    result = _as_api_would(run_guest(guest, "bt", configure=configure), guest, workload, scale)
    every = kept[0].translation_listing()
    return Run(label, result, units=keep(every), units_in_cache=len(every),
               tool="virtlab translate")


def holding(test):
    """A `keep` for translated(): the units with a site test(site) is true of."""
    return lambda units: [u for u in units if any(test(s) for s in u["sites"])]


def mask_stores(workload, scale, label="pv (event mask)"):
    """pv, watching every store into the virtual CPU's event mask
    (evtchn_upcall_mask, the ported kernel's IF) during the region of
    interest.  Unicorn reports a memory hook's address as the physical one
    the CPU wrote, so the watch is on the shared-info page's machine
    address, where the hypervisor placed it."""
    from unicorn import UC_HOOK_MEM_WRITE
    from pv.abi import UPCALL_MASK
    stores = []

    def watch(machine):
        shared = getattr(machine.backend, "shared", None)
        if shared is None:
            return
        mask = shared.pa + UPCALL_MASK

        def on_write(uc, access, address, size, value, data):
            if machine.roi.begun and not machine.roi.ended:
                stores.append(value & 0xFF)
        machine.uc.hook_add(UC_HOOK_MEM_WRITE, on_write, begin=mask, end=mask)
    guest = _guest(workload, "pv", scale)
    result = _as_api_would(run_guest(guest, "pv", on_machine=watch), guest, workload, scale)
    return Run(label, result, stores=stores, tool="virtlab.run with a memory watch")


def _as_api_would(result, guest, workload, scale):
    """What virtlab.run adds to a run it makes itself: the comparison with
    the native run, the instruction count and the modeled cycles (the
    watches above change neither the counters nor the console)."""
    compare_with_native(result, native_reference(resolve(workload, None, scale),
                                                 **RUN_DEFAULTS))
    if not result.ok:
        return result
    result.instructions, result.roi_instructions = count_instructions(guest, result.backend)
    return priced(result, load_profile())


# virtlab.run's defaults, so that its cached native reference is shared.
RUN_DEFAULTS = dict(timeout=120.0, max_exits=50_000_000, ram_mb=32)


# -- evidence -------------------------------------------------------------------

def roi(run, key):
    """A counter of the region of interest (absent means it never happened)."""
    return Evidence(run.result.roi_counters.get(key, 0),
                    f"{run.label}: {key} in the region of interest",
                    {"run": run.label, "in": "roi_counters", "key": key})


def roi_sum(run, keys, what):
    """The sum of several counters of the region of interest."""
    return Evidence(sum(run.result.roi_counters.get(k, 0) for k in keys),
                    f"{run.label}: {what}, {' + '.join(keys)} in the region of interest",
                    {"run": run.label, "in": "roi_counters", "keys": list(keys)})


def total(run, key):
    """A counter of the whole run, boot included."""
    return Evidence(run.result.counters.get(key, 0), f"{run.label}: {key} over the whole run",
                    {"run": run.label, "in": "counters", "key": key})


def field(run, name, fmt=""):
    """A field of the run's record: iterations, matches_native, ..."""
    return Evidence(getattr(run.result, name), f"{run.label}: {name}",
                    {"run": run.label, "in": name}, fmt)


def console(run, pattern, fmt=""):
    """A number the guest printed: the first group of `pattern` in its
    console, as an integer (0x... read as hex); None if it printed none."""
    m = re.search(pattern, run.result.console)
    value = None if m is None else int(m.group(1), 0)
    return Evidence(value, f"{run.label}: the guest printed it",
                    {"run": run.label, "in": "console", "pattern": pattern}, fmt)


def charged(run, events, profile=None):
    """Modeled cycles per iteration of the region of interest charged to the
    counters named by `events` (prefixes: "exit." is every exit kind), under
    `profile` (the default when None): analysis/model.py's bill, read back."""
    from analysis.evaluate import evaluate
    prof = load_profile(profile)
    m = evaluate(run.result, prof)
    value = None
    if m is not None and run.result.iterations:
        bill = m.breakdown.events
        value = sum(c for e, c in bill.items() if any(e.startswith(p) for p in events))
        value /= run.result.iterations
    return Evidence(value, f"{run.label}: modeled cycles per iteration charged to "
                    f"{', '.join(events)} ({prof.name})",
                    {"run": run.label, "in": "charges", "events": list(events),
                     "profile": prof.name})


def cost(event, backend, profile=None):
    """What one `event` costs under `backend` on a CPU profile."""
    prof = load_profile(profile)
    c = prof.cost(event, backend)
    return Evidence(None if c is None else c.cycles,
                    f"{prof.name}: the cost of one {event} under {backend}",
                    {"in": "cost", "profile": prof.name, "event": event, "backend": backend})


def derived(value, source, ref=None, fmt=""):
    """A value a lesson computed from others (a ratio, a count of events)."""
    return Evidence(value, source, dict(ref or {}, **{"in": "derived"}), fmt)
