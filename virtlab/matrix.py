"""The bench matrix: every selected workload under every selected back end, each
run compared with native on the same workload and scale.

(Not `virtlab/bench.py`: a submodule of that name would replace the function
`virtlab.bench` the moment anything imported it.)

Each row runs `repeat` times (virtlab/repeat.py: identical but for host time,
which is kept as samples) and, when it succeeded, gets its exact
guest-instruction count from a separate counting pass, cached, which the cost
model needs; the modeled columns come from analysis/.  Rows are independent
machines, so they can go to worker processes (--jobs); results come back in a
fixed order whatever finishes first.  Ctrl-C keeps the rows already finished
(Interrupted carries them), so that `--save` loses nothing that was measured.
"""
import concurrent.futures as cf

from . import backend as backends
from .errors import UsageError
from .harness import catalog, compare_with_native, count_instructions, resolve, run_guest
from .progress import progress as progress_display
from .repeat import repeated


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a bench; `results` are the rows finished, in bench order."""

    def __init__(self, results):
        super().__init__()
        self.results = results


def names_of(value, what):
    """A list of names from a list or a comma-separated string.  Naming
    nothing is refused: an empty selection is a mistake (a shell variable
    that expanded to nothing), not a request for everything."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    names = [str(p).strip() for p in parts if str(p).strip()]
    if not names:
        raise UsageError(f"no {what} named: give at least one name or pattern")
    return names


def select_workloads(patterns="*"):
    patterns = "*" if patterns is None else patterns
    try:
        return [w.name for w in catalog().select(",".join(names_of(patterns, "workload")))]
    except KeyError as exc:
        raise UsageError(f"no workload matches '{exc.args[0]}' (see 'virtlab list')") from None


def select_backends(names=None):
    installed = backends.names()
    if names is None:
        return ["native"] + [n for n in installed if n != "native"]
    chosen = names_of(names, "back end")
    for n in chosen:
        if n not in installed:
            raise UsageError(f"unknown back end '{n}' (installed: {', '.join(installed)})")
    return list(dict.fromkeys(["native"] + chosen))


def run_row(task):
    """One row: `repeat` runs of one guest under one back end, then its
    instruction count (a worker process runs this for --jobs)."""
    guest, backend, repeat, opts = task
    result = repeated(lambda: run_guest(guest, backend, **opts), repeat)
    if result.ok:
        result.instructions, result.roi_instructions = count_instructions(
            guest, backend, ram_mb=opts.get("ram_mb", 32))
    return result


def run_matrix(workloads, names, scale=None, jobs=1, progress=False, repeat=1, **opts):
    """RunResults for every (workload, back end), native included, in order."""
    tasks = [(resolve(w, None, scale, backends.load(b).image), b, repeat, opts)
             for w in workloads for b in names]
    results = [None] * len(tasks)
    try:
        for i, result in _execute(tasks, jobs, progress):
            results[i] = result
    except KeyboardInterrupt:
        raise Interrupted(_compared([r for r in results if r is not None])) from None
    return _compared(results)


def _compared(results):
    natives = {r.workload: r for r in results if r.backend == "native"}
    for r in results:
        if r.workload in natives:
            compare_with_native(r, natives[r.workload])
    return results


def _execute(tasks, jobs, progress):
    """(index, result) of each row as it finishes."""
    shown = progress_display(len(tasks)) if progress else None
    try:
        for i, result in (_serial(tasks) if jobs <= 1 else _parallel(tasks, jobs)):
            if shown:
                shown.advance(result)
            yield i, result
    finally:
        if shown:
            shown.close()


def _serial(tasks):
    for i, t in enumerate(tasks):
        yield i, run_row(t)


def _parallel(tasks, jobs):
    # Under fork the pool starts every worker at once: --jobs 100000 would
    # fork that many for a bench of a few rows.
    pool = cf.ProcessPoolExecutor(max_workers=min(jobs, len(tasks)))
    try:
        futures = {pool.submit(run_row, t): i for i, t in enumerate(tasks)}
        for fut in cf.as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        # On Ctrl-C the rows not yet started are dropped, not waited for.
        pool.shutdown(wait=True, cancel_futures=True)
