"""The front end's composition of the layers: what `virtlab.run` and
`virtlab.bench` do, and what the command line does with them.

The layers below never look up: a workload becomes a guest (harness.resolve),
a machine and a back end run it (harness.run_guest), the run is recorded as a
RunResult (result.py), and the analysis prices results under a CPU profile
(analysis/).  Only this module and the command line see all of them.
"""
import dataclasses
from functools import lru_cache

from . import backend as backends
from .errors import UsageError
from .harness import compare_with_native, count_instructions, image_digest, resolve, run_guest
from .matrix import run_matrix, select_backends, select_workloads
from .repeat import repeated


def load_profile(name=None):
    """A CPU profile by name or TOML file (the default profile for None)."""
    from analysis import profile as profiles
    try:
        return profiles.load(name or profiles.DEFAULT)
    except profiles.ProfileError as exc:
        raise UsageError(str(exc)) from None


def priced(result, profile):
    """A copy of `result` with the cost model's figures under `profile`."""
    from analysis.evaluate import modeled_fields
    return dataclasses.replace(result, **modeled_fields(result, profile))


@lru_cache(maxsize=64)
def _native_reference(digest, guest, opts):
    # Keyed by the image's content, so a rebuilt image is run again.  Runs are
    # deterministic, so the same key always gives the same result.
    return run_guest(guest, "native", **dict(opts))


def native_reference(guest, **opts):
    """The native run of the same guest (computed once per image, workload,
    scale and budget in this process); a copy, so callers may edit it."""
    ref = _native_reference(image_digest(guest.image_path), guest, tuple(sorted(opts.items())))
    return dataclasses.replace(ref)


def run(workload=None, backend="native", scale=None, image=None, timeout=120.0,
        max_exits=50_000_000, ram_mb=32, profile=None, model=True, repeat=1):
    """Run one workload (or a raw image) under one back end: the Python API.

    Like `virtlab run`, the result is priced under `profile` (a profile name or
    TOML file; None is the default profile, analysis/): the guest's
    instructions are counted in a separate pass (cached) and the modeled
    fields filled in.  `model=False` skips both.  The guest runs `repeat`
    times (once by default: a script wants the record; `virtlab run` repeats
    3 times for its host figures); host_seconds and roi_host_seconds are the
    medians, host_samples and roi_host_samples every sample (repeat.py)."""
    _check_budget(timeout, max_exits, ram_mb)
    prof = load_profile(profile) if model else None
    kind = backends.load(backend).image if backend in backends.names() else "native"
    guest = resolve(workload, image, scale, kind)
    opts = dict(timeout=timeout, max_exits=max_exits, ram_mb=ram_mb)
    result = repeated(lambda: run_guest(guest, backend, **opts), _repetitions(repeat))
    # The reference is the workload's native image under native, even when
    # this back end runs another build of the kernel (pv); a raw image is
    # its own reference.
    reference = guest if kind == "native" or image is not None else resolve(workload, None, scale)
    compare_with_native(result, result if backend == "native"
                        else native_reference(reference, **opts))
    if prof is None or not result.ok:
        return result
    result.instructions, result.roi_instructions = count_instructions(guest, backend, ram_mb)
    return priced(result, prof)


def bench(workloads="*", backend_names=None, scale=None, jobs=1, progress=False,
          profile=None, repeat=3, **opts):
    """The bench as a pandas DataFrame (the Python API).  Workloads and back
    ends are each a list of names or a comma-separated string (workloads
    may be glob patterns); native is always included."""
    from analysis.table import frame
    prof = load_profile(profile)           # a bad profile is refused before any run
    return frame(bench_runs(workloads, backend_names, scale, jobs, progress, repeat, **opts),
                 prof)


def bench_runs(workloads="*", backend_names=None, scale=None, jobs=1, progress=False,
               repeat=3, **opts):
    """The bench's runs themselves, a list of RunResults: what `bench`
    tabulates.  Their counters are what the analysis prices, so a breakdown
    or a sensitivity sweep (analysis/) re-prices them under any profile
    without running a guest again."""
    _check_budget(**opts)
    return run_matrix(select_workloads(workloads), select_backends(backend_names),
                      scale, jobs, progress, repeat=_repetitions(repeat), **opts)


# Guest RAM: at least the 1 MiB below the image and a page of it; at most
# 2 GiB, so that the RAM, and a PV domain's machine frames beside it, leave
# the VMM's own memory room below 4 GiB of physical address space.
RAM_MB = (2, 2048)


def _check_budget(timeout=120.0, max_exits=50_000_000, ram_mb=32, **_other_options):
    """Refuse, before any run, a budget the machine cannot keep, as the
    command line's --timeout and --max-exits do, or guest RAM it cannot
    have."""
    from .machine import MAX_HOST_SECONDS
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not 0 < timeout <= MAX_HOST_SECONDS:           # nan and inf fail this too
        raise UsageError(f"timeout must be a positive number of seconds up to "
                         f"{MAX_HOST_SECONDS:g}, not {timeout!r}")
    if isinstance(max_exits, bool) or not isinstance(max_exits, int) or max_exits < 1:
        raise UsageError(f"max_exits must be a positive integer, not {max_exits!r}")
    if isinstance(ram_mb, bool) or not isinstance(ram_mb, int) \
            or not RAM_MB[0] <= ram_mb <= RAM_MB[1]:
        raise UsageError(f"ram_mb must be a whole number of MiB from {RAM_MB[0]} to "
                         f"{RAM_MB[1]}, not {ram_mb!r}")


def _repetitions(repeat):
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise UsageError(f"repeat must be a positive integer, not {repeat!r}")
    return repeat
