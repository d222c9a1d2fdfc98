"""The bench: every selected workload under every selected back end, with each
run compared with native on the same workload and scale.

Until the cost model exists the only overhead is measured host time, and it is
labelled as such.  Runs are independent machines, so they can go to worker
processes (--jobs); results come back in a fixed order whatever finishes first.
"""
import concurrent.futures as cf
import json

import pandas as pd

from . import backend as backends
from .harness import UsageError, catalog, compare_with_native, resolve, run_guest

COLUMNS = ["workload", "backend", "iterations", "host_seconds", "host_overhead",
           "matches_native", "ok", "exit_status", "reason"]


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
    return run_guest(guest, backend, **opts)


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
    bar = _progress(len(tasks)) if progress else None
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


class _progress:
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


def to_frame(results):
    rows = []
    native = {r.workload: r for r in results if r.backend == "native"}
    for r in results:
        ref = native[r.workload]
        rows.append({
            "workload": r.workload, "backend": r.backend, "iterations": r.iterations,
            "host_seconds": r.host_seconds,
            "host_overhead": _ratio(_host_time(r), _host_time(ref)) if r.ok and ref.ok else None,
            "matches_native": r.matches_native, "ok": r.ok,
            "exit_status": r.exit_status, "reason": r.reason,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def _host_time(r):
    """ROI host time where the workload marks one, else the whole run."""
    return r.roi_host_seconds if r.roi_host_seconds is not None else r.host_seconds


def _ratio(a, b):
    return a / b if b else None


def bench(workloads="*", backend_names=None, scale=None, jobs=1, progress=False, **opts):
    names = select_backends(backend_names)
    results = run_matrix(select_workloads(workloads), names, scale, jobs, progress, **opts)
    return to_frame(results)


def render(df, fmt):
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return json.dumps(df.to_dict(orient="records"), indent=2) + "\n"
    if fmt == "latex":
        return df.to_latex(index=False, float_format="%.3f")
    return df.to_markdown(index=False, floatfmt=".3f") + "\n"
