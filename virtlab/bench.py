"""The bench: every selected workload under every selected back end, each run
compared with native on the same workload and scale.

Runs are independent machines, so they can go to worker processes (--jobs);
results come back in a fixed order whatever finishes first.  Each successful run
also gets its exact guest-instruction count (a separate counting pass, cached),
which the cost model needs; the modeled columns come from analysis/.
"""
import concurrent.futures as cf

from . import backend as backends
from .errors import UsageError
from .harness import catalog, compare_with_native, count_instructions, resolve, run_guest


def select_workloads(patterns):
    try:
        return [w.name for w in catalog().select(patterns)]
    except KeyError as exc:
        raise UsageError(f"no workload matches '{exc.args[0]}' (see 'virtlab list')") from None


def select_backends(names):
    installed = backends.names()
    if names is None:
        return ["native"] + [n for n in installed if n != "native"]
    for n in names:
        if n not in installed:
            raise UsageError(f"unknown back end '{n}' (installed: {', '.join(installed)})")
    return list(dict.fromkeys(["native"] + list(names)))


def _one(task):
    guest, backend, opts = task
    result = run_guest(guest, backend, **opts)
    if result.ok:
        result.instructions, result.roi_instructions = count_instructions(
            guest, backend, ram_mb=opts.get("ram_mb", 32))
    return result


def run_matrix(workloads, names, scale=None, jobs=1, progress=False, **opts):
    """RunResults for every (workload, back end), native included, in order."""
    tasks = []
    for w in workloads:
        for b in names:
            guest = resolve(w, None, scale, backends.load(b).image)
            tasks.append((guest, b, opts))
    results = _execute(tasks, jobs, progress)
    by_key = {(r.workload, r.backend): r for r in results}
    for r in results:
        compare_with_native(r, by_key[(r.workload, "native")])
    return results


def _execute(tasks, jobs, progress):
    bar = _Progress(len(tasks)) if progress else None
    results = [None] * len(tasks)
    try:
        if jobs <= 1:
            for i, t in enumerate(tasks):
                results[i] = _one(t)
                bar and bar.advance(f"{t[0].name} / {t[1]}")
        else:
            with cf.ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(_one, t): i for i, t in enumerate(tasks)}
                for fut in cf.as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    bar and bar.advance(f"{tasks[i][0].name} / {tasks[i][1]}")
    finally:
        bar and bar.close()
    return results


class _Progress:
    """A progress bar on stderr (rich), shown only on a terminal."""

    def __init__(self, total):
        from rich.progress import Progress
        self._p = Progress(transient=True)
        self._p.start()
        self._task = self._p.add_task("bench", total=total)

    def advance(self, label):
        self._p.update(self._task, advance=1, description=label)

    def close(self):
        self._p.stop()
